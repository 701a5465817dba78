#!/usr/bin/env bash
# lint.sh - the static checks `make lint` runs: cppcheck on every C file,
# clang-tidy (checks in .clang-tidy) on the files named, or on all of them.
#   scripts/lint.sh [BUILD_DIR] [FILE...]
# BUILD_DIR needs compile_commands.json (any cmake build here writes one).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}; shift || true
FILES=("$@")
[ ${#FILES[@]} -gt 0 ] || mapfile -t FILES < <(git ls-files '*.c')
status=0

echo "lint: cppcheck (${#FILES[@]} files)"
# cppcheck does not expand jansson's iteration macros by itself.
cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
  --inline-suppr -D_GNU_SOURCE -Iinclude -Isrc -Iguest \
  '-Djson_array_foreach(a,i,v)=for(i=0;(v=json_array_get(a,i));i++)' \
  '-Djson_object_foreach(o,k,v)=for(k=0;(v=0);)' \
  "${FILES[@]}" || status=1

if command -v clang-tidy >/dev/null && [ -f "$BUILD/compile_commands.json" ]; then
  echo "lint: clang-tidy"
  clang-tidy -quiet -p "$BUILD" "${FILES[@]}" 2>/dev/null | grep -E 'warning:|error:' && status=1
else
  echo "lint: clang-tidy skipped (not installed, or no $BUILD/compile_commands.json)"
fi
exit $status
