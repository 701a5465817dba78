# suite_seccomp.sh - the VMM's confinement, seen from outside (sourced by
# run.sh): seccomp filter and no_new_privs in /proc, the jail (uid,
# namespaces, root, cgroup limits), policies that stop the VMM and the
# audit that names the system call, the violation limit, the live audit,
# refused system calls inside the guest, a jail step that fails, the
# seccomp command, kill -9 of the owner. Needs root for the jail; the VM
# tests skip like run.sh's.

SEC_NEED_ROOT="the VMM's jail needs root (namespaces, cgroups, another uid)"
need_root() { [ "$(id -u)" = 0 ] || skip "$SEC_NEED_ROOT"; }

# sec_state_get DIR EXPR: a value from DIR/state.json, EXPR a python
# expression over the record `s` (needs python3).
sec_state_get() {
  "$PY" - "$1/state.json" "$2" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
def res(kind=None, role=None):
    return [r for r in s["resources"] if (kind is None or r["kind"] == kind) and (role is None or r["role"] == role)]
v = eval(sys.argv[2])
print("\n".join(str(x) for x in v) if isinstance(v, list) else v)
EOF
}

# sec_start_vm NAME [OPTIONS...]: an exec in the background whose command
# says "started" and sleeps; sets OWNER, DIR, ID once it runs.
sec_start_vm() {
  local name=$1; shift
  "$IC" "${EXEC[@]}" --name "$name" -n "$@" -- sh -c 'echo started; exec sleep 600' \
    >"$W/bg.out" 2>"$W/bg.err" </dev/null &
  OWNER=$!
  on_exit "kill -9 $OWNER 2>/dev/null; wait $OWNER 2>/dev/null; '$IC' gc >/dev/null 2>&1"
  await_line "$W/bg.out" started "$OWNER" 240 "$W/bg.err"
  timeout 10 "$IC" ps --json >"$W/ps.json" 2>/dev/null
  DIR=$(json_get "$W/ps.json" 0.dir)
  ID=$(json_get "$W/ps.json" 0.id)
  [ -d "$DIR" ] || fail "ps --json gave no VM directory: $(peek "$W/ps.json")"
}

# Cgroup directories a VM record lists that still exist.
sec_cgroups_left() {
  local d
  for d in /sys/fs/cgroup/*/ironclaw/vm-"$1" /sys/fs/cgroup/ironclaw/vm-"$1"; do
    [ -d "$d" ] && echo "$d"
  done
}

# 1. The running VMM: Seccomp 2, NoNewPrivs 1, a jail uid, its own mount,
#    pid, ipc, uts and network namespaces, cgroup limits, a minimal root,
#    QEMU's own -sandbox; and nothing left after it ends.
t_sec_vmm_confined() { need_vm; need_py; need_root
  sec_start_vm it-confined --mem 256 --cpus 1
  local vmm
  vmm=$(sec_state_get "$DIR" 'res("process", "vmm-jailed")[0]["pid"]')
  [ -n "$vmm" ] && [ -r "/proc/$vmm/status" ] || fail "no jailed VMM process in the record: $(peek "$DIR/state.json")"
  local st=/proc/$vmm/status
  grep -q '^Seccomp:[[:space:]]*2$' "$st" || bad "VMM: $(grep '^Seccomp:' "$st"), want 2"
  grep -q '^NoNewPrivs:[[:space:]]*1$' "$st" || bad "VMM: $(grep '^NoNewPrivs:' "$st"), want 1"
  local uid; uid=$(awk '/^Uid:/{print $2}' "$st")
  [ "${uid:-0}" != 0 ] || bad "the VMM runs as uid 0"
  [ "$(awk '/^Uid:/{print $2$3$4$5}' "$st")" = "$uid$uid$uid$uid" ] || bad "VMM uids differ: $(grep '^Uid:' "$st")"
  [ "$(sec_state_get "$DIR" 's["jail_uid"]')" = "$uid" ] || bad "the record's jail_uid is not the VMM's uid $uid"
  local ns
  for ns in mnt pid ipc uts net; do
    [ "$(readlink "/proc/$vmm/ns/$ns")" != "$(readlink /proc/self/ns/$ns)" ] \
      || bad "the VMM shares our $ns namespace"
  done
  grep -q '^NSpid:.*[[:space:]]1$' "$st" || bad "the VMM is not pid 1 of its namespace: $(grep NSpid "$st")"
  tr '\0' ' ' <"/proc/$vmm/cmdline" | grep -q -- '-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny' \
    || bad "QEMU has no -sandbox with every option denied"
  # Its root: the binary's tree, /dev, /proc, the VM's files, no more.
  local top; top=$(ls /proc/$vmm/root/ | tr '\n' ' ')
  local w
  for w in $top; do
    case $w in bin|dev|etc|lib|lib32|lib64|libx32|proc|run|usr|var) ;; *) bad "the jail's root holds /$w ($top)";; esac
  done
  [ ! -e "/proc/$vmm/root/etc/passwd" ] || bad "the jail shows /etc/passwd"
  [ ! -e "/proc/$vmm/root/$DIR/state.json" ] || bad "the jail shows the VM's state record"
  [ -e "/proc/$vmm/root/$DIR/console.log" ] || bad "the jail lacks the console log"
  # cgroup limits: guest memory plus the overhead, the vCPU plus one CPU
  # for QEMU's own threads, pids
  local cg found=0
  while read -r cg; do
    [ -n "$cg" ] || continue
    found=$((found + 1))
    grep -qx "$vmm" "$cg/cgroup.procs" || bad "the VMM is not in $cg"
    if [ -e "$cg/memory.limit_in_bytes" ]; then
      [ "$(cat "$cg/memory.limit_in_bytes")" = $(( (256 + 256) << 20 )) ] || bad "$cg/memory.limit_in_bytes = $(cat "$cg/memory.limit_in_bytes")"
    fi
    if [ -e "$cg/memory.max" ]; then
      [ "$(cat "$cg/memory.max")" = $(( (256 + 256) << 20 )) ] || bad "$cg/memory.max = $(cat "$cg/memory.max")"
    fi
    [ ! -e "$cg/pids.max" ] || [ "$(cat "$cg/pids.max")" = 128 ] || bad "$cg/pids.max = $(cat "$cg/pids.max")"
    [ ! -e "$cg/cpu.cfs_quota_us" ] || [ "$(cat "$cg/cpu.cfs_quota_us")" = 200000 ] || bad "$cg/cpu.cfs_quota_us = $(cat "$cg/cpu.cfs_quota_us")"
    [ ! -e "$cg/cpu.max" ] || [ "$(cat "$cg/cpu.max")" = "200000 100000" ] || bad "$cg/cpu.max = $(cat "$cg/cpu.max")"
  done < <(sec_state_get "$DIR" '[r["path"] for r in res("cgroup")]')
  [ "$found" -ge 1 ] || bad "the record lists no cgroup"
  grep -q '^Max open files *4096 *4096' "/proc/$vmm/limits" || bad "VMM RLIMIT_NOFILE: $(grep 'open files' "/proc/$vmm/limits")"
  grep -q '^Max core file size *0 *0' "/proc/$vmm/limits" || bad "VMM RLIMIT_CORE: $(grep 'core file' "/proc/$vmm/limits")"
  kill -TERM "$OWNER"
  wait "$OWNER" 2>/dev/null
  local left; left=$(sec_cgroups_left "$ID")
  [ -z "$left" ] || bad "cgroups left after the VM ended: $left"
  pid_dead "$vmm" || bad "the jailed VMM $vmm outlived its VM"
  assert_no_vm_left
}

# 2. A policy that kills on a call QEMU makes at start: the VM does not
#    start, exit 72, and the audit names the call.
t_sec_policy_kills_vmm() { need_vm; need_py
  cat >"$W/kill.json" <<'EOF'
{"name": "kill-io-uring", "default_action": "allow",
 "rules": [{"syscall": "io_uring_setup", "action": "kill"}]}
EOF
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-kill --json --seccomp "$W/kill.json" -- true
  [ "$RC" = 72 ] || bad "status $RC, want 72 (stderr: $(peek "$W/e"))"
  local msg
  msg=$("$PY" - "$W/o" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
a = r.get("audit") or {}
errs = []
if "io_uring_setup" not in (r.get("error") or ""): errs.append("error does not name io_uring_setup: %r" % r.get("error"))
c = [x for x in a.get("counts", []) if x["syscall"] == "io_uring_setup" and x["action"] == "kill"]
if not c or c[0]["count"] != 1: errs.append("counts: %r" % a.get("counts"))
if not a.get("entries") or a["entries"][-1]["syscall"] != "io_uring_setup": errs.append("last entry: %r" % (a.get("entries") or [None])[-1])
if a.get("policy") != "kill-io-uring": errs.append("policy %r" % a.get("policy"))
if errs: print("; ".join(errs)); sys.exit(1)
EOF
  ) || bad "report: $msg"
  assert_no_vm_left
}

# 3. Blocked calls that QEMU survives: exact counts in the report; with
#    --max-violations the VM is stopped, exit 72, the limit named.
t_sec_violation_limit() { need_vm; need_py
  cat >"$W/p.json" <<'EOF'
{"default_action": "allow", "rules": [{"syscall": "madvise", "action": "errno(EINVAL)"}]}
EOF
  ic "$W/o" "$W/e" 90 "${EXEC[@]}" --name it-madvise --json --seccomp "$W/p.json" -- echo booted
  [ "$RC" = 0 ] || bad "without a limit: status $RC, want 0 (stderr: $(peek "$W/e"))"
  local n
  n=$("$PY" -c 'import json,sys; a=json.load(open(sys.argv[1]))["audit"]; c=[x["count"] for x in a["counts"] if x["syscall"]=="madvise"]; print(c[0] if c and a["violations"]==c[0]==a["total"] else "bad %r" % a["counts"])' "$W/o")
  [ "${n:-0}" -gt 10 ] 2>/dev/null || bad "madvise was not counted exactly: $n"
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-limit --seccomp "$W/p.json" --max-violations 5 -- echo booted
  [ "$RC" = 72 ] || bad "with --max-violations 5: status $RC, want 72"
  grep -q 'max-violations 5' "$W/e" && grep -q madvise "$W/e" || bad "the message does not name the limit and the call: $(peek "$W/e")"
  assert_no_vm_left
}

# 4. `ironclaw audit` on a running VM, and after its owner died (kill -9):
#    the VMM died with it, the audit stays readable until gc removes all.
t_sec_audit_live_and_kill9() { need_vm; need_py
  cat >"$W/p.json" <<'EOF'
{"default_action": "allow", "rules": [{"syscall": "madvise", "action": "errno(EINVAL)"}]}
EOF
  sec_start_vm it-audit --seccomp "$W/p.json"
  sleep 1.5   # audit.json is rewritten at most once a second
  ic "$W/a.json" "$W/a.err" 20 audit --json it-audit
  [ "$RC" = 0 ] || bad "audit --json it-audit: status $RC: $(peek "$W/a.err")"
  "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); assert any(c["syscall"]=="madvise" for c in a["counts"]), a' "$W/a.json" 2>/dev/null \
    || bad "the live audit has no madvise: $(peek "$W/a.json")"
  ic "$W/a.txt" "$W/a.err" 20 audit "$ID"
  grep -q 'madvise' "$W/a.txt" || bad "'ironclaw audit ID' shows no madvise: $(peek "$W/a.txt")"
  local jailed; jailed=$(sec_state_get "$DIR" 'res("process", "vmm-jailed")[0]["pid"]')
  kill -9 "$OWNER"
  wait "$OWNER" 2>/dev/null
  local i
  for i in $(seq 40); do pid_dead "$jailed" && break; sleep 0.25; done
  pid_dead "$jailed" || bad "the jailed VMM $jailed outlived kill -9 of its owner"
  ic "$W/a2.json" "$W/a.err" 20 audit --json it-audit
  [ "$RC" = 0 ] && grep -q madvise "$W/a2.json" || bad "the audit of the dead owner's VM is gone before gc: $(peek "$W/a.err")"
  ic "$W/gc.out" "$W/gc.err" 60 gc
  grep -q "$ID" "$W/gc.out" || bad "gc did not remove $ID: $(peek "$W/gc.out") $(peek "$W/gc.err")"
  local left; left=$(sec_cgroups_left "$ID")
  [ -z "$left" ] || bad "cgroups left after gc: $left"
  assert_no_vm_left "after gc: "
}

# 5. Inside the guest, a tool's forbidden calls fail with EPERM and the
#    VM goes on.
t_sec_guest_denied() { need_vm
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-guest -- sh -c 'mkdir -p /mnt; mount -t tmpfs x /mnt'
  [ "$RC" != 0 ] || bad "mount in the guest succeeded"
  grep -qiE 'permission denied|operation not permitted' "$W/e" || bad "mount: no EPERM message: $(peek "$W/e")"
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-guest2 -- sh -c \
    'unshare -m true; echo "unshare=$?"; reboot -f; echo "reboot=$?"; swapoff -a; echo "swapoff=$?"; grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status; echo alive'
  [ "$RC" = 0 ] || bad "status $RC (stderr: $(peek "$W/e"))"
  grep -q '^unshare=1$' "$W/o" && grep -q '^reboot=1$' "$W/o" && grep -q '^alive$' "$W/o" \
    || bad "unshare/reboot were not refused: $(peek "$W/o")"
  grep -q 'Operation not permitted' "$W/e" || bad "no 'Operation not permitted': $(peek "$W/e")"
  grep -qE '^Seccomp:[[:space:]]+2' "$W/o" && grep -qE '^NoNewPrivs:[[:space:]]+1' "$W/o" \
    || bad "the tool runs without its filter: $(peek "$W/o")"
  assert_no_vm_left
}

# 6. A jail step that fails: no VM starts, the message names the step,
#    nothing is left (directories, processes, cgroups).
t_sec_jail_step_fails() { need_vm; need_root
  local step
  for step in cgroup namespaces root pivot_root uid seccomp; do
    IRONCLAW_TEST_FAIL_JAIL_STEP=$step ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-fail -- true
    [ "$RC" = 66 ] || bad "$step: status $RC, want 66"
    grep -q "$step: injected failure" "$W/e" || bad "$step: the message does not name the step: $(peek "$W/e")"
    local left; left=$(ls -d /sys/fs/cgroup/*/ironclaw/vm-* /sys/fs/cgroup/ironclaw/vm-* 2>/dev/null | tr '\n' ' ')
    [ -z "$left" ] || bad "$step: cgroups left: $left"
    assert_no_vm_left "$step: "
  done
}

# 7. --no-jail says loudly what it gives up, and the VMM then runs as root
#    (still filtered).
t_sec_no_jail_warns() { need_vm
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-nojail --no-jail -- echo ran
  [ "$RC" = 0 ] || bad "status $RC (stderr: $(peek "$W/e"))"
  grep -q 'warning: --no-jail' "$W/e" || bad "no warning for --no-jail: $(peek "$W/e")"
  ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name it-learn --seccomp learn -- echo ran
  grep -q "warning: seccomp policy 'learn' denies nothing" "$W/e" || bad "no warning for the learn level: $(peek "$W/e")"
  assert_no_vm_left
}

# 8. `ironclaw seccomp`: show, check (clear errors with file and line),
#    export as BPF and as Firecracker JSON.
t_sec_seccomp_cli() { need_py
  ic "$W/o" "$W/e" 20 seccomp show default
  [ "$RC" = 0 ] && grep -q '^default action: errno(EPERM)' "$W/o" || bad "show default: $RC $(peek "$W/o")"
  ic "$W/o" "$W/e" 20 seccomp show --json strict
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["default_action"]=="kill" and d["rules"]' "$W/o" 2>/dev/null \
    || bad "show --json strict: $(peek "$W/o")"
  cp "$W/o" "$W/strict.json"
  ic "$W/o" "$W/e" 20 seccomp check strict default permissive learn "$W/strict.json"
  [ "$RC" = 0 ] || bad "check of the levels and a shown policy: $RC $(peek "$W/e")"
  printf '{"default_action": "allow",\n "rules": [\n  {"syscall": "mout", "action": "kill"}]}\n' >"$W/bad.json"
  ic "$W/o" "$W/e" 20 seccomp check "$W/bad.json"
  [ "$RC" = 65 ] || bad "check of a bad policy: status $RC, want 65"
  grep -q "$W/bad.json:3: rules\[0\].syscall: unknown system call 'mout'" "$W/e" || bad "check: unclear error: $(peek "$W/e")"
  ic "$W/o" "$W/e" 20 seccomp export -o "$W/f.bpf" default
  local size; size=$(stat -c %s "$W/f.bpf" 2>/dev/null || echo 0)
  [ "$RC" = 0 ] && [ "$size" -gt 0 ] && [ $((size % 8)) = 0 ] || bad "export bpf: status $RC, $size bytes"
  ic "$W/o" "$W/e" 20 seccomp export --format firecracker strict
  "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert set(d)=={"vmm","api","vcpu"} and d["vmm"]["filter"]' "$W/o" 2>/dev/null \
    || bad "export --format firecracker: $(peek "$W/o")"
  ic "$W/o" "$W/e" 20 seccomp export default </dev/null
  ic "$W/o" "$W/e" 20 seccomp frobnicate default
  [ "$RC" = 64 ] || bad "seccomp frobnicate: status $RC, want 64"
  ic "$W/o" "$W/e" 20 exec --seccomp nosuchlevel -- true
  [ "$RC" = 65 ] && grep -q "no seccomp level 'nosuchlevel'" "$W/e" || bad "exec --seccomp nosuchlevel: $RC $(peek "$W/e")"
  ic "$W/o" "$W/e" 20 exec --audit-ring 0 -- true
  [ "$RC" = 64 ] || bad "exec --audit-ring 0: status $RC, want 64"
  ic "$W/o" "$W/e" 20 audit --help
  [ "$RC" = 0 ] && grep -q '^Usage: ironclaw audit' "$W/o" || bad "audit --help: $RC"
  ic "$W/o" "$W/e" 20 audit no-such-vm
  [ "$RC" = 64 ] || bad "audit no-such-vm: status $RC, want 64"
}

TESTS+=(
  t_sec_seccomp_cli:60
  t_sec_vmm_confined:200
  t_sec_policy_kills_vmm:100
  t_sec_violation_limit:200
  t_sec_audit_live_and_kill9:200
  t_sec_guest_denied:150
  t_sec_jail_step_fails:120
  t_sec_no_jail_warns:150
)
