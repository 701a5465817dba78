#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS
#
# Runs every libFuzzer target (BUILD_DIR/fuzz_*) for SECONDS each, from a
# seed corpus written into a fresh temporary directory. Prints one summary
# line per target. Exits non-zero if a target crashed (or leaked, or timed
# out); its crash artifacts and log then stay in the temporary directory,
# whose path is printed. Nothing is ever written to the source tree.
set -uo pipefail
export LC_ALL=C

usage() { echo "usage: $0 BUILD_DIR SECONDS" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
build=$1
secs=$2
[[ -d $build ]] || { echo "$0: no such build directory: $build" >&2; exit 2; }
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || usage

work=$(mktemp -d "${TMPDIR:-/tmp}/ironclaw-fuzz.XXXXXX") || exit 2

# ---- seed writers ---------------------------------------------------------
# byte N: one raw byte; be32 N: big-endian u32.
byte() { printf "\\$(printf %03o "$1")"; }
be32() { byte $(($1 >> 24 & 255)); byte $(($1 >> 16 & 255)); byte $(($1 >> 8 & 255)); byte $(($1 & 255)); }
# json_frame KIND TEXT / data_frame STREAM CHANNEL TEXT (ASCII text only)
json_frame() { be32 $((${#2} + 1)); byte "$1"; printf %s "$2"; }
data_frame() { be32 $((${#3} + 6)); byte 3; be32 "$1"; byte "$2"; printf %s "$3"; }

# fuzz_decoder input: 4 bytes of settings (see fuzz_decoder.c), then a stream.
seeds_fuzz_decoder() {
    local c=$1/corpus
    local hello='{"protocol":1,"role":"guest","agent":"ironclaw-guest 0.1.0"}'
    local req='{"id":7,"method":"exec","params":{"argv":["ls","-l"],"stdin":true,"timeout_ms":500}}'
    { byte 0; byte 1; byte 2; byte 3
      json_frame 1 "$hello"; json_frame 2 "$req"
      data_frame 7 1 "hello world"; data_frame 7 1 ""; data_frame 7 2 ""
      json_frame 2 '{"method":"exit","params":{"id":7,"code":0,"signal":0,"timed_out":false}}'
    } >"$c/session"
    { byte $((0x32)); byte 9; byte 9; byte 9
      json_frame 2 '{"id":1,"result":{"pid":123}}'
      json_frame 2 '{"id":2,"error":{"code":2,"message":"no such file"}}'
      json_frame 2 '{"id":4294967295,"method":"ping"}'
      data_frame 4294967295 3 "file bytes"
    } >"$c/replies"
    { byte $((0x76)); byte 0; byte 0; byte 1
      json_frame 1 '{"protocol":2,"role":"host"}'
      json_frame 2 '{"id":1,"result":1.5e300,"x":[null,true,"\u00e9\n"]}'
    } >"$c/zerocopy"
    { byte 1; byte 1; byte 1; byte 1; be32 $((0x01000001)); byte 3; } >"$c/oversized"
    { byte 2; byte 5; byte 5; byte 5; json_frame 2 '{}'; be32 3; byte 3; printf xy; } >"$c/shortdata"
    printf '%s\n' '"\"id\""' '"\"method\""' '"\"params\""' '"\"result\""' '"\"error\""' \
        '"\"code\""' '"\"message\""' '"\"protocol\""' '"\"role\""' '"\"agent\""' \
        '"\"guest\""' '"\"host\""' '"4294967295"' '"\x00\x00\x00"' >"$1/dict"
}

# ---- run ------------------------------------------------------------------
status=0
ran=0
for bin in "$build"/fuzz_*; do
    [[ -f $bin && -x $bin ]] || continue
    name=$(basename "$bin")
    abs=$(cd "$(dirname "$bin")" && pwd)/$name
    dir=$work/$name
    mkdir -p "$dir/corpus" "$dir/artifacts"
    dict=()
    if declare -F "seeds_$name" >/dev/null; then
        "seeds_$name" "$dir"
    else
        printf x >"$dir/corpus/seed"
    fi
    [[ -f $dir/dict ]] && dict=(-dict="$dir/dict")
    ran=$((ran + 1))
    # cwd is the temporary directory so that libFuzzer's own files
    # (fuzz-*.log, crash-*) can never land in the source tree.
    (cd "$dir" && "$abs" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "${dict[@]}" corpus) \
        >"$dir/log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
    units=$(find "$dir/corpus" -type f | wc -l)
    if [[ $rc -ne 0 || -n $(ls -A "$dir/artifacts") ]]; then
        echo "$name: FAILED (exit $rc) after ${runs:-?} runs; artifacts and log in $dir"
        grep -m1 -E 'ERROR: |==[0-9]+==|deadly signal' "$dir/log" || tail -5 "$dir/log"
        status=1
    else
        echo "$name: ok, ${runs:-?} runs in ${secs}s (${rate:-?}/s), corpus $units inputs, no crash"
    fi
done

if [[ $ran -eq 0 ]]; then
    echo "$0: no fuzz_* targets in $build (configure with CC=clang -DIC_FUZZ=ON)" >&2
    status=2
fi
if [[ $status -eq 0 ]]; then
    rm -rf "$work"
else
    echo "kept: $work"
fi
exit $status
