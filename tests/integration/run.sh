#!/usr/bin/env bash
# run.sh - ironclaw's integration suite: boots real microVMs through the
# `ironclaw` binary and checks what a user sees (output, exit codes, files,
# timeouts, crash clean-up, JSON reports, usage errors).
#
#   tests/integration/run.sh BUILD_DIR [TEST...]
#
# BUILD_DIR holds ironclaw (and ironclaw-guest); the guest image must have
# been built (`make image`). Naming tests runs only those. Each test runs
# in its own bash process under `timeout`, so a hang costs one test, not
# the suite; a test's EXIT trap undoes what it started. VMs live under a
# private runtime directory, so the leak checks see only the suite's VMs.
# Output: one line per test (PASS/FAIL/SKIP and why), then a summary line;
# the exit status is 1 if any test failed.
set -u -o pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")

# ---- helpers available to every test ---------------------------------------

now_ms() { date +%s%3N; }

# Marks the running test failed and goes on (so one bug does not hide the
# next check); `fail` also stops the test.
bad() { FAILS+=("$*"); }
fail() { FAILS+=("$*"); exit 1; }
skip() { SKIP_REASON="$*"; exit 77; }
# Registers a command run (last first) when the test ends, however it ends.
on_exit() { CLEANUP=("$*" "${CLEANUP[@]}"); }

# ic OUT ERR LIMIT ARGS...: runs ironclaw bounded by LIMIT seconds with
# stdin from $IN (default /dev/null); sets RC and MS (wall time).
ic() {
  local out=$1 err=$2 limit=$3; shift 3
  local t0; t0=$(now_ms)
  timeout -k 5 "$limit" "$IC" "$@" <"${IN:-/dev/null}" >"$out" 2>"$err"
  RC=$?
  MS=$(( $(now_ms) - t0 ))
}

# A short view of a file for failure messages.
peek() { [ -s "$1" ] && head -c 400 "$1" | tr '\n' '|' || echo "(empty)"; }

# await_line FILE LINE OWNER TRIES ERR [WHAT]: waits up to TRIES quarter
# seconds for the line LINE in FILE, written by the background ironclaw
# OWNER whose stderr is ERR. Fails the test (messages start with WHAT) if
# ironclaw exits first or the line never comes.
await_line() {
  local file=$1 line=$2 owner=$3 tries=$4 err=$5 what=${6:+$6: } i
  for i in $(seq "$tries"); do
    grep -qx -- "$line" "$file" && return 0
    kill -0 "$owner" 2>/dev/null || fail "${what}ironclaw exited early: $(peek "$err")"
    sleep 0.25
  done
  grep -qx -- "$line" "$file" ||
    fail "${what}no line '$line' in $file within $((tries / 4)) s: $(peek "$file") $(peek "$err")"
}

# Pids of live processes whose command line contains $1. Only builtins and
# `tr` (whose argv lacks the pattern) run, so the scan never finds itself.
procs_with() {
  local p c
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    c=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
    [[ $c == *"$1"* ]] && echo "$p"
  done
}

# True when pid $1 is gone or only a zombie waiting for its parent.
pid_dead() {
  local st
  st=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null)
  [ -z "$st" ] || [ "$st" = Z ]
}

# Asserts that no VM of the suite is left: no state record, no process
# with the runtime directory on its command line, `ps --json` empty.
assert_no_vm_left() {
  local what=${1:-}
  local left; left=$(ls -A "$RT/vms" 2>/dev/null | tr '\n' ' ')
  [ -z "$left" ] || bad "${what}VM directories left in $RT/vms: $left"
  local pids; pids=$(procs_with "$RT/" | tr '\n' ' ')
  [ -z "$pids" ] || bad "${what}processes left that use $RT: $pids"
  local ps; ps=$(timeout 10 "$IC" ps --json 2>&1 | tr -d ' \n')
  [ "$ps" = "[]" ] || bad "${what}'ironclaw ps --json' is not empty: $ps"
}

# json_get FILE PATH: a scalar from a JSON file, PATH like a.b.0.c. Uses
# python3; without it, a regex on "key": value lines (jansson's indented
# output puts one key per line) for the last key of PATH.
json_get() {
  if [ -n "$PY" ]; then
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split('.'):
    v = v[int(k)] if isinstance(v, list) else v[k]
print('' if v is None else (str(v).lower() if isinstance(v, bool) else v))
EOF
  else
    sed -n "s/^ *\"${2##*.}\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" | head -1
  fi
}

need_vm() { [ -z "$VM_SKIP" ] || skip "$VM_SKIP"; }
need_py() { [ -n "$PY" ] || skip "no python3 to parse JSON (scripts/setup.sh installs no jq)"; }

EXEC=(exec --boot-timeout 30)   # a hung boot costs 30 s, not 60

# ---- the tests ------------------------------------------------------------
# Limits (seconds) are upper bounds for one test on a slow 2-core host.

# 1. stdout/stderr kept apart, the command's status, 128+N for a signal,
#    127 and one clear line for a missing program.
t_exit_codes_and_streams() { need_vm
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-status -- sh -c 'echo out; echo err >&2; exit 3'
  [ "$RC" = 3 ] || bad "exit 3: status $RC, want 3 (stderr: $(peek "$W/e"))"
  [ "$(cat "$W/o"; echo x)" = "$(printf 'out\nx')" ] || bad "exit 3: stdout is '$(peek "$W/o")', want exactly 'out'"
  [ "$(cat "$W/e"; echo x)" = "$(printf 'err\nx')" ] || bad "exit 3: stderr is '$(peek "$W/e")', want exactly 'err' (ironclaw must add nothing)"

  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-signal -- sh -c 'kill -KILL $$'
  [ "$RC" = 137 ] || bad "kill -KILL: status $RC, want 137 (stderr: $(peek "$W/e"))"
  [ ! -s "$W/o" ] && [ ! -s "$W/e" ] || bad "kill -KILL: output not empty: stdout '$(peek "$W/o")' stderr '$(peek "$W/e")'"

  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-missing -- /no/such/program
  [ "$RC" = 127 ] || bad "missing program: status $RC, want 127 (stderr: $(peek "$W/e"))"
  grep -q '/no/such/program' "$W/e" && grep -qi 'no such file' "$W/e" \
    || bad "missing program: stderr does not name the program and 'No such file': $(peek "$W/e")"
  [ "$(wc -l <"$W/e")" -le 1 ] || bad "missing program: want one error line on stderr, got: $(peek "$W/e")"
  assert_no_vm_left
}

# 2. 10 MiB of random bytes through `cat` in the guest come back unchanged.
t_stdin_10mib() { need_vm
  head -c $((10 << 20)) /dev/urandom >"$W/in"
  IN="$W/in" ic "$W/o" "$W/e" 90 "${EXEC[@]}" --name it-stdin -- cat
  [ "$RC" = 0 ] || bad "status $RC, want 0 (stderr: $(peek "$W/e"))"
  cmp -s "$W/in" "$W/o" || bad "output differs from input: $(cmp "$W/in" "$W/o" 2>&1 | head -1) (sizes $(stat -c %s "$W/in") vs $(stat -c %s "$W/o"))"
  [ ! -s "$W/e" ] || bad "stderr not empty: $(peek "$W/e")"
  assert_no_vm_left
}

# 3. --put into nested guest dirs keeps bytes and mode, --get brings them
#    back, /proc files (stat size 0) included; a --get of a missing file
#    fails with 70 and leaves no file.
t_files_put_get() { need_vm
  mkdir -p "$W/in" "$W/back"
  head -c $((3 << 20)) /dev/urandom >"$W/in/big"
  chmod 0644 "$W/in/big"
  printf '#!/bin/sh\necho small-ran\n' >"$W/in/small.sh"
  chmod 0755 "$W/in/small.sh"
  local sb ss
  sb=$(sha256sum <"$W/in/big" | cut -d' ' -f1)
  ss=$(sha256sum <"$W/in/small.sh" | cut -d' ' -f1)
  # The guest checks hashes and modes itself and says "guest-ok".
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-files \
    --put "$W/in/big:/it/a/b/big" --put "$W/in/small.sh:/it/c/d/e/small.sh" \
    --get "/it/a/b/big:$W/back/big" --get "/it/c/d/e/small.sh:$W/back/small.sh" \
    --get "/proc/cmdline:$W/back/cmdline" \
    -- sh -c "set -e
      test \"\$(sha256sum </it/a/b/big | cut -d' ' -f1)\" = $sb
      test \"\$(sha256sum </it/c/d/e/small.sh | cut -d' ' -f1)\" = $ss
      test -x /it/c/d/e/small.sh
      test \"\$(stat -c %a /it/c/d/e/small.sh)\" = 755
      /it/c/d/e/small.sh
      echo guest-ok"
  [ "$RC" = 0 ] || bad "put/get: status $RC, want 0 (stdout: $(peek "$W/o") stderr: $(peek "$W/e"))"
  grep -q '^small-ran$' "$W/o" && grep -q '^guest-ok$' "$W/o" \
    || bad "the guest's checks of the put files failed: $(peek "$W/o") $(peek "$W/e")"
  cmp -s "$W/in/big" "$W/back/big" || bad "--get of the 3 MiB file differs from the original"
  cmp -s "$W/in/small.sh" "$W/back/small.sh" || bad "--get of the small file differs from the original"
  grep -q 'ironclaw.transport=' "$W/back/cmdline" 2>/dev/null \
    || bad "--get of /proc/cmdline (stat size 0) did not bring the kernel command line: $(peek "$W/back/cmdline")"
  [ "$(stat -c %a "$W/back/small.sh" 2>/dev/null)" = 755 ] \
    || bad "small file came back with mode $(stat -c %a "$W/back/small.sh" 2>&1), want 755"
  [ "$(stat -c %a "$W/back/big" 2>/dev/null)" = 644 ] \
    || bad "big file came back with mode $(stat -c %a "$W/back/big" 2>&1), want 644"

  mkdir -p "$W/miss"
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-getmiss --get "/it/nope/missing:$W/miss/got" -- true
  [ "$RC" = 70 ] || bad "--get of a missing file: status $RC, want 70 (stderr: $(peek "$W/e"))"
  grep -q '/it/nope/missing' "$W/e" || bad "--get of a missing file: stderr does not name it: $(peek "$W/e")"
  local left; left=$(ls -A "$W/miss")
  [ -z "$left" ] || bad "--get of a missing file left local files behind: $left"
  assert_no_vm_left
}

# 4. --timeout kills the command and its VM: 68, a clear message, quickly.
t_timeout() { need_vm
  ic "$W/o" "$W/e" 90 "${EXEC[@]}" --name it-timeout --timeout 2 -- sleep 600
  [ "$RC" = 68 ] || bad "status $RC, want 68 (stderr: $(peek "$W/e"))"
  grep -qi 'timed out' "$W/e" || bad "no 'timed out' message on stderr: $(peek "$W/e")"
  [ "$MS" -lt 30000 ] || bad "took ${MS} ms, want well under 60 s"
  assert_no_vm_left
}

# 5. kill -9 of ironclaw while its command runs; `gc` then removes the
#    VMM process, socket and directory.
t_kill9_then_gc() { need_vm
  "$IC" "${EXEC[@]}" --name it-kill9 -n -- sh -c 'echo started; exec sleep 600' \
    >"$W/o" 2>"$W/e" </dev/null &
  local owner=$!
  on_exit "kill -9 $owner 2>/dev/null; wait $owner 2>/dev/null"
  # Wait until ps shows the VM and the command has started in the guest.
  local i seen=0
  for i in $(seq 240); do
    if [ "$seen" = 0 ]; then
      timeout 10 "$IC" ps --json >"$W/ps.json" 2>/dev/null
      grep -q '"it-kill9"' "$W/ps.json" && seen=1
    fi
    [ "$seen" = 1 ] && grep -q '^started$' "$W/o" && break
    kill -0 "$owner" 2>/dev/null || fail "ironclaw exited early (status $(wait $owner; echo $?)): $(peek "$W/e")"
    sleep 0.25
  done
  [ "$seen" = 1 ] || fail "ps --json never showed the VM within 60 s"
  grep -q '^started$' "$W/o" || fail "the command did not start within 60 s: $(peek "$W/e")"
  timeout 10 "$IC" ps --json >"$W/ps.json" 2>"$W/ps.err"
  local vmm dir id
  vmm=$(json_get "$W/ps.json" 0.vmm_pid)
  dir=$(json_get "$W/ps.json" 0.dir)
  id=$(json_get "$W/ps.json" 0.id)
  [ -n "$dir" ] && [ -d "$dir" ] || fail "ps --json gave no usable dir: $(peek "$W/ps.json")"
  [ "${vmm:-0}" -gt 0 ] || bad "ps --json gave no vmm_pid: $(peek "$W/ps.json")"
  [ "$(json_get "$W/ps.json" 0.owner_pid)" = "$owner" ] || bad "ps --json owner_pid is not ironclaw's pid $owner"

  kill -9 "$owner"
  wait "$owner" 2>/dev/null
  timeout 10 "$IC" ps --json >"$W/ps.json" 2>/dev/null
  [ "$(json_get "$W/ps.json" 0.owner_alive)" = false ] \
    || bad "after kill -9, ps --json does not say owner_alive false: $(peek "$W/ps.json")"

  ic "$W/gc.out" "$W/gc.err" 60 gc
  [ "$RC" = 0 ] || bad "gc: status $RC (stderr: $(peek "$W/gc.err"))"
  grep -q "$id" "$W/gc.out" || bad "gc does not say it removed $id: $(peek "$W/gc.out")"
  # qemu may be a zombie for a moment until its new parent reaps it.
  for i in $(seq 20); do
    { [ "${vmm:-0}" -le 0 ] || pid_dead "$vmm"; } && [ -z "$(procs_with "$dir")" ] && break
    sleep 0.25
  done
  [ "${vmm:-0}" -le 0 ] || pid_dead "$vmm" || bad "VMM pid $vmm still alive after gc: $(tr '\0' ' ' </proc/"$vmm"/cmdline 2>/dev/null | head -c 200)"
  local pids; pids=$(procs_with "$dir" | tr '\n' ' ')
  [ -z "$pids" ] || bad "processes still use $dir after gc: $pids"
  [ ! -e "$dir" ] || bad "$dir still exists after gc: $(ls -A "$dir" | tr '\n' ' ')"
  local socks; socks=$(find "$RT" -type s 2>/dev/null | tr '\n' ' ')
  [ -z "$socks" ] || bad "sockets left under $RT after gc: $socks"
  assert_no_vm_left "after gc: "
}

# 6. A guest whose /init never speaks the protocol: 67 within the boot
#    timeout, a message naming it, nothing left behind.
t_guest_never_answers() { need_vm
  local guest=""
  local bb; bb=$(command -v busybox || true)
  if [ -n "$bb" ] && LC_ALL=C ldd "$bb" 2>&1 | grep -q 'not a dynamic'; then
    guest=$bb
  elif command -v cc >/dev/null; then
    printf '#include <unistd.h>\nint main(void){for(;;)pause();}\n' >"$W/mute.c"
    cc -static -O1 -o "$W/mute" "$W/mute.c" 2>"$W/cc.err" && guest="$W/mute"
  fi
  [ -n "$guest" ] || skip "no static program for a mute guest (no static busybox, cc -static failed)"
  local kernel=""
  timeout 10 "$IC" image show --json >"$W/img.json" 2>/dev/null && kernel=$(json_get "$W/img.json" inputs.kernel.path)
  [ -f "$kernel" ] || fail "cannot find the guest kernel via 'ironclaw image show --json': '$kernel'"
  local data=/tmp/ic-it-data.$$
  on_exit "rm -rf '$data'"
  IRONCLAW_DATA_DIR=$data ic "$W/b.out" "$W/b.err" 60 -q image build --kernel "$kernel" --guest "$guest"
  [ "$RC" = 0 ] || fail "image build with a mute guest failed ($RC): $(peek "$W/b.err")"
  IRONCLAW_DATA_DIR=$data ic "$W/o" "$W/e" 60 exec --name it-mute --boot-timeout 15 -- true
  [ "$RC" = 67 ] || bad "status $RC, want 67 (stderr: $(peek "$W/e"))"
  grep -qiE 'did not answer|no answer|timed? ?out' "$W/e" && grep -q '15' "$W/e" \
    || bad "the message does not name the 15 s boot timeout: $(peek "$W/e")"
  [ "$MS" -lt 30000 ] || bad "took ${MS} ms, want about 15 s (under 30 s)"
  assert_no_vm_left
}

# 7. --json: one parseable report on stdout with the command's results.
t_json_report() { need_vm; need_py
  local want_vmm=""
  timeout 20 "$IC" doctor --json >"$W/doctor.json" 2>/dev/null && want_vmm=$(json_get "$W/doctor.json" auto.driver)
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-json --json -- sh -c 'echo out; echo err >&2; exit 3'
  [ "$RC" = 3 ] || bad "status $RC, want the command's 3 (stderr: $(peek "$W/e"))"
  [ ! -s "$W/e" ] || bad "stderr not empty with --json: $(peek "$W/e")"
  local msg
  msg=$("$PY" - "$W/o" "$want_vmm" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("stdout is not one JSON document: %s" % e); sys.exit(1)
errs = []
def want(cond, what):
    if not cond: errs.append(what)
want(r.get("exit_code") == 3, "exit_code=%r, want 3" % r.get("exit_code"))
want(r.get("stdout") == "out\n", "stdout=%r, want 'out\\n'" % r.get("stdout"))
want(r.get("stderr") == "err\n", "stderr=%r, want 'err\\n'" % r.get("stderr"))
want(r.get("ran") is True, "ran=%r, want true" % r.get("ran"))
want(r.get("name") == "it-json", "name=%r" % r.get("name"))
t = r.get("timings_ms") or {}
for k in ("boot", "guest_ready", "command", "teardown"):
    v = t.get(k)
    want(isinstance(v, (int, float)) and v > 0, "timings_ms.%s=%r, want > 0" % (k, v))
if sys.argv[2]:
    want(r.get("vmm") == sys.argv[2], "vmm=%r but doctor says auto picks %r" % (r.get("vmm"), sys.argv[2]))
if errs:
    print("; ".join(errs)); sys.exit(1)
EOF
  ) || bad "report: $msg"
  assert_no_vm_left
}

# 8. --env and --workdir reach the command.
t_env_workdir() { need_vm
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-env --env FOO=bar --env EMPTY= --workdir /tmp \
    -- sh -c 'echo "$FOO"; pwd; echo "[${EMPTY-unset}]"'
  [ "$RC" = 0 ] || bad "status $RC, want 0 (stderr: $(peek "$W/e"))"
  [ "$(cat "$W/o"; echo x)" = "$(printf 'bar\n/tmp\n[]\nx')" ] \
    || bad "stdout is '$(peek "$W/o")', want 'bar|/tmp|[]|'"
  assert_no_vm_left
}

# 9. Usage errors are 64 and boot nothing; --help works everywhere.
t_usage_errors() {
  local case args want
  while IFS='|' read -r want args; do
    [ -n "$want" ] || continue
    eval "set -- $args"
    ic "$W/o" "$W/e" 20 "$@"
    case " $want " in *" $RC "*) ;; *) bad "'ironclaw $args': status $RC, want $want";; esac
    grep -q '^ironclaw: ' "$W/e" || bad "'ironclaw $args': no 'ironclaw: ...' message on stderr: $(peek "$W/e")"
    [ "$MS" -lt 5000 ] || bad "'ironclaw $args' took ${MS} ms: did it boot something?"
  done <<'EOF'
64|exec
64|exec --
64|exec --cpus 0 -- true
64|exec --cpus 33 -- true
64|exec --mem 1 -- true
64|exec --timeout 0 -- true
64|exec --timeout abc -- true
64|exec --env NOEQUALS -- true
64|exec --workdir relative -- true
64|exec --put nocolon -- true
64|exec --get relative:x -- true
64|exec --vmm bogus -- true
64 65|exec --name ../x -- true
64 65|exec --name "a/b" -- true
64|exec --no-such-option -- true
64|bogus-command
64|ps extra-arg
64|gc extra-arg
EOF
  grep -qi 'name' "$W/e" 2>/dev/null || true
  ic "$W/o" "$W/e" 20 exec --name ../x -- true
  grep -qi 'name' "$W/e" || bad "'exec --name ../x' message does not say what is wrong with the name: $(peek "$W/e")"
  local left; left=$(ls -A "$RT/vms" 2>/dev/null)
  [ -z "$left" ] || bad "a usage error left VM directories: $left"

  while read -r args; do
    eval "set -- $args"
    ic "$W/o" "$W/e" 20 "$@"
    [ "$RC" = 0 ] || bad "'ironclaw $args': status $RC, want 0"
    grep -q '^Usage: ironclaw' "$W/o" || bad "'ironclaw $args' prints no 'Usage: ironclaw' on stdout"
  done <<'EOF'
--help
exec --help
ps --help
gc --help
doctor --help
image --help
image build --help
image show --help
EOF
}

# 10. doctor/ps/gc speak JSON; doctor says which driver auto picks.
t_doctor_ps_gc_json() { need_py
  ic "$W/doctor.json" "$W/e" 30 doctor --json
  case $RC in 0|65) ;; *) bad "doctor --json: status $RC, want 0 or 65";; esac
  local msg
  msg=$("$PY" - "$W/doctor.json" "$RC" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print("not JSON: %s" % e); sys.exit(1)
a = d.get("auto") or {}
errs = []
if not isinstance(a.get("ok"), bool): errs.append("auto.ok missing")
if a.get("ok") and a.get("driver") not in ("qemu", "firecracker"):
    errs.append("auto.driver=%r, want qemu or firecracker" % a.get("driver"))
if not a.get("why"): errs.append("auto.why is empty")
if (sys.argv[2] == "0") != bool(a.get("ok")): errs.append("exit status %s but auto.ok=%r" % (sys.argv[2], a.get("ok")))
if not isinstance(d.get("items"), list) or not d["items"]: errs.append("no items")
if errs: print("; ".join(errs)); sys.exit(1)
EOF
  ) || bad "doctor --json: $msg"
  local cmd
  for cmd in "ps --json" "gc --json" "gc --dry-run --json"; do
    eval "set -- $cmd"
    ic "$W/o" "$W/e" 20 "$@"
    [ "$RC" = 0 ] || bad "$cmd: status $RC (stderr: $(peek "$W/e"))"
    "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1])); sys.exit(0 if v == [] else 1)' "$W/o" \
      || bad "$cmd: want an empty JSON list with no VMs, got: $(peek "$W/o")"
  done
}

# Last: nothing of the suite's is left anywhere.
t_nothing_left() {
  assert_no_vm_left
  local d; d=$(ls -d /tmp/ic-it-data.* 2>/dev/null | grep -E "/ic-it-data\\.$PPID\$")
  [ -z "$d" ] || bad "private data dir left: $d"
}

TESTS=(
  t_usage_errors:60
  t_doctor_ps_gc_json:60
  t_exit_codes_and_streams:200
  t_stdin_10mib:120
  t_files_put_get:150
  t_timeout:100
  t_kill9_then_gc:150
  t_guest_never_answers:120
  t_json_report:100
  t_env_workdir:80
)

# Each area's tests live in a file of their own beside this one
# (suite_<area>.sh): it defines t_* functions with the helpers above and
# appends "name:limit" entries to TESTS.
SUITE_DIR=$(dirname "$SELF")
for suite in "$SUITE_DIR"/suite_*.sh; do
  [ -e "$suite" ] || continue
  # shellcheck source=/dev/null
  . "$suite"
done
TESTS+=(t_nothing_left:30)   # always last: the whole suite left nothing

# ---- one test, in its own process ------------------------------------------

end_one() {
  local rc=$1 c
  trap - EXIT
  for c in "${CLEANUP[@]}"; do eval "$c" >/dev/null 2>&1; done
  if [ -n "$SKIP_REASON" ]; then echo "$SKIP_REASON" >"$RESULT"; exit 77; fi
  [ "$rc" = 0 ] || [ ${#FAILS[@]} -gt 0 ] || FAILS+=("aborted with status $rc")
  if [ ${#FAILS[@]} -gt 0 ]; then
    local IFS=$'\n'
    echo "${FAILS[*]}" >"$RESULT"
    exit 1
  fi
  exit 0
}

if [ "${1:-}" = --one ]; then
  FAILS=() CLEANUP=() SKIP_REASON=""
  W=$WORK/$2
  mkdir -p "$W"
  CLEANUP=("rm -rf '$W'")
  trap 'exit 143' TERM INT HUP
  trap 'end_one $?' EXIT
  "$2"
  exit 0
fi

# ---- the runner ------------------------------------------------------------

usage() { echo "usage: $0 BUILD_DIR [TEST...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
BUILD=$(readlink -f "$1") || usage
shift
IC=$BUILD/ironclaw
[ -x "$IC" ] || { echo "run.sh: $IC not found; build first" >&2; exit 2; }
export IC

unset IRONCLAW_LOG
if [ "$(id -u)" = 0 ]; then RT=/run/ic-it.$$; else RT=${XDG_RUNTIME_DIR:-/tmp}/ic-it.$$; fi
WORK=$(mktemp -d /tmp/ic-it-work.XXXXXX)
export IRONCLAW_RUNTIME_DIR=$RT RT WORK

PY=""
if command -v python3 >/dev/null && python3 -c 'import json' 2>/dev/null; then PY=$(command -v python3); fi
export PY

# Whether VMs can run here at all; if not, VM tests skip and say why.
VM_SKIP=""
if ! timeout 20 "$IC" doctor >"$WORK/doctor.txt" 2>&1; then
  VM_SKIP="'ironclaw doctor' finds no VMM that can run here: $(grep -m1 -iE 'auto|no vmm' "$WORK/doctor.txt")"
elif ! timeout 20 "$IC" image show >"$WORK/image.txt" 2>&1; then
  VM_SKIP="no guest image: $(tail -1 "$WORK/image.txt") (run 'make image')"
fi
export VM_SKIP

# Whatever happens, take down what the suite started: processes using the
# private runtime directory (found by pid), leftover state, temp files.
cleanup_suite() {
  local p
  for p in $(procs_with "$RT/"); do kill -9 "$p" 2>/dev/null; done
  [ -d "$RT" ] && timeout 20 "$IC" gc >/dev/null 2>&1
  rm -rf "$RT" "$WORK" "/tmp/ic-it-data.$$"
}
trap cleanup_suite EXIT
trap 'exit 130' INT TERM HUP

selected=("$@")
pass=0 failed=0 skipped=0
t_start=$(now_ms)
echo "ironclaw integration suite: $IC (runtime dir $RT)"
for entry in "${TESTS[@]}"; do
  name=${entry%%:*} limit=${entry##*:}
  if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]] && [ "$name" != t_nothing_left ]; then
    continue
  fi
  export RESULT=$WORK/$name.result
  : >"$RESULT"
  t0=$(now_ms)
  timeout -k 10 "$limit" bash "$SELF" --one "$name" >"$WORK/$name.log" 2>&1
  rc=$?
  secs=$(awk -v ms=$(( $(now_ms) - t0 )) 'BEGIN{printf "%.1f", ms/1000}')
  case $rc in
    0) pass=$((pass + 1)); printf 'PASS  %-26s %6ss\n' "$name" "$secs" ;;
    77) skipped=$((skipped + 1)); printf 'SKIP  %-26s %6ss  %s\n' "$name" "$secs" "$(head -1 "$RESULT")" ;;
    *)
      failed=$((failed + 1))
      [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "exceeded its ${limit} s limit" >>"$RESULT"
      [ -s "$RESULT" ] || echo "status $rc, no reason recorded" >"$RESULT"
      printf 'FAIL  %-26s %6ss  %s\n' "$name" "$secs" "$(head -1 "$RESULT")"
      tail -n +2 "$RESULT" | sed 's/^/        also: /'
      [ -s "$WORK/$name.log" ] && tail -5 "$WORK/$name.log" | sed 's/^/        log: /'
      ;;
  esac
done
total=$(awk -v ms=$(( $(now_ms) - t_start )) 'BEGIN{printf "%.0f", ms/1000}')
echo "$pass passed, $failed failed, $skipped skipped (${total} s)"
[ "$failed" = 0 ]
