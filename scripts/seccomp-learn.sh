#!/usr/bin/env bash
# seccomp-learn.sh - measures the system calls the VMM makes, the way the
# built-in seccomp levels were derived (docs/seccomp.md): boots a VM under
# the "learn" level (every system call is allowed and recorded through the
# notification listener), runs a workload that exercises the channel,
# stdin/stdout, file copies, guest memory and idle time, and prints every
# distinct system call with its count, then those a level does not allow.
#
#   scripts/seccomp-learn.sh [BUILD_DIR] [LEVEL] [-- extra exec options]
#
# Needs python3 to read the JSON report. Slow by design: every system call
# of the VMM is a round trip to ironclaw.
set -euo pipefail

BUILD=${1:-build}
LEVEL=${2:-strict}
shift $(( $# > 2 ? 2 : $# )) || true
[ "${1:-}" = -- ] && shift
IC=$BUILD/ironclaw
WORK=$(mktemp -d /tmp/ic-learn.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

head -c $((3 << 20)) /dev/urandom >"$WORK/in.bin"
head -c $((2 << 20)) /dev/urandom |
  "$IC" -q exec --seccomp learn --audit-ring 1000000 --json --boot-timeout 300 "$@" \
    --put "$WORK/in.bin:/tmp/in.bin" --get "/tmp/in.bin:$WORK/out.bin" -- sh -c '
      cat > /tmp/stdin.bin; sha256sum /tmp/stdin.bin /tmp/in.bin
      dd if=/dev/zero of=/tmp/x bs=1M count=100 2>/dev/null
      dd if=/dev/urandom bs=1M count=4 2>/dev/null | od | tail -1
      for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1; done
      echo done' >"$WORK/report.json"

"$IC" seccomp show --json "$LEVEL" >"$WORK/level.json"
python3 - "$WORK/report.json" "$WORK/level.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["audit"]
level = json.load(open(sys.argv[2]))
print("workload exit %s; %d system calls recorded, %d kept in the ring" %
      (r["exit_code"], a["total"], a["ring"]["kept"]))
counts = sorted(a["counts"], key=lambda c: -c["count"])
for c in counts:
    print("%10d  %s" % (c["count"], c["syscall"]))
names = sorted(c["syscall"] for c in counts)
print("\n%d distinct: %s" % (len(names), " ".join(names)))
allowed = set()
for rule in level["rules"]:
    if rule["action"] == "allow":
        allowed.update(rule.get("syscalls", [rule.get("syscall")]))
missing = [n for n in names if n not in allowed]
print("not allowed by %s: %s" % (level["name"], " ".join(missing) if missing else "(none)"))
EOF
