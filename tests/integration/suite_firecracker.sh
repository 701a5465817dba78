# suite_firecracker.sh - the Firecracker driver through the CLI, sourced by
# run.sh. Firecracker cannot run on hosts without hardware virtualisation,
# so these tests run `ironclaw exec --vmm firecracker` against the test
# doubles of tests/fcserver (a fake firecracker speaking Firecracker's
# documented API and hybrid vsock, a fake jailer, a fake seccompiler-bin),
# which come with the unit-test build (`make unit`). They check what a user
# sees (output, exit codes, Firecracker's fault_message), the exact command
# lines given to firecracker and jailer, the custom seccomp filter flow,
# and that nothing is left: no process, socket, VM directory or chroot.

# Finds the doubles and the image's vmlinux, installs the doubles under
# their real names in $W/bin and points ironclaw at them.
need_fc() {
  local d fakes=""
  for d in "$(dirname "$IC")/tests/fcserver" "$SUITE_DIR/../../build-test/tests/fcserver"; do
    [ -x "$d/fake_firecracker" ] && [ -x "$d/fake_jailer" ] && [ -x "$d/fake_seccompiler" ] && { fakes=$d; break; }
  done
  [ -n "$fakes" ] || skip "the Firecracker test doubles are not built (they come with the unit-test build: make unit)"
  timeout 10 "$IC" image show --json >"$W/img.json" 2>/dev/null || skip "no guest image (run 'make image')"
  grep -q '"vmlinux": {' "$W/img.json" || skip "the guest image has no vmlinux (rebuild it: ironclaw image build --force)"
  mkdir -p "$W/bin" "$W/rec"
  cp "$fakes/fake_firecracker" "$W/bin/firecracker"
  cp "$fakes/fake_jailer" "$W/bin/jailer"
  cp "$fakes/fake_seccompiler" "$W/bin/seccompiler-bin"
  export IRONCLAW_FIRECRACKER=$W/bin/firecracker IRONCLAW_JAILER=$W/bin/jailer \
    IRONCLAW_SECCOMPILER=$W/bin/seccompiler-bin FAKE_FC_GUEST=$(dirname "$IC")/ironclaw-guest \
    FAKE_FC_ARGV_FILE=$W/rec/fc.argv FAKE_JAILER_ARGV_FILE=$W/rec/jailer.argv \
    FAKE_SECCOMPILER_ARGV_FILE=$W/rec/seccompiler.argv FAKE_FC_REQUEST_LOG=$W/rec/requests
  [ -x "$FAKE_FC_GUEST" ] || skip "no ironclaw-guest next to $IC"
}

FCX=(exec --vmm firecracker --boot-timeout 30)

# Nothing of a Firecracker VM left: the generic checks, and no chroot.
assert_no_fc_left() {
  assert_no_vm_left "${1:-}"
  local jails; jails=$(ls -A "$RT/jail/firecracker" 2>/dev/null | tr '\n' ' ')
  [ -z "$jails" ] || bad "${1:-}chroots left in $RT/jail/firecracker: $jails"
  local socks; socks=$(find "$RT" -type s 2>/dev/null | tr '\n' ' ')
  [ -z "$socks" ] || bad "${1:-}sockets left under $RT: $socks"
}

# want_argv FILE LINE...: the recorded argv is exactly these lines.
want_argv() {
  local file=$1; shift
  local want; want=$(printf '%s\n' "$@")
  [ "$(cat "$file" 2>/dev/null)" = "$want" ] \
    || bad "argv in $(basename "$file") is '$(tr '\n' ' ' <"$file" 2>/dev/null)', want '$(echo "$want" | tr '\n' ' ')'"
}

# The VM id in a recorded argv ("--id ID" or "--id=ID").
vm_id_from() { sed -n -e 's/^--id=\([0-9a-f]\{32\}\)$/\1/p' -e '/^--id$/{n;p}' "$1" | head -1; }

# 1. A command through Firecracker (jailed, as root): output kept apart,
#    the command's status, the jailer's and Firecracker's exact argv.
t_fc_happy() { need_fc
  ic "$W/o" "$W/e" 60 "${FCX[@]}" --name it-fc -- sh -c 'echo out; echo err >&2; exit 3'
  [ "$RC" = 3 ] || bad "status $RC, want 3 (stderr: $(peek "$W/e"))"
  [ "$(cat "$W/o"; echo x)" = "$(printf 'out\nx')" ] || bad "stdout is '$(peek "$W/o")', want 'out'"
  grep -qx 'err' "$W/e" || bad "stderr lacks 'err': $(peek "$W/e")"
  if [ "$(id -u)" = 0 ]; then
    local id; id=$(sed -n '3p' "$W/rec/jailer.argv")
    [[ $id =~ ^[0-9a-f]{32}$ ]] || fail "no VM id in the jailer's argv: $(peek "$W/rec/jailer.argv")"
    local uid; uid=$(sed -n '7p' "$W/rec/jailer.argv")
    [ "${uid:-0}" -gt 0 ] 2>/dev/null || bad "the jail uid '$uid' is not an unprivileged number"
    local cg=(); [ -e /sys/fs/cgroup/cgroup.controllers ] && cg=(--cgroup-version 2)
    want_argv "$W/rec/jailer.argv" "$W/bin/jailer" --id "$id" --exec-file "$W/bin/firecracker" \
      --uid "$uid" --gid "$uid" --chroot-base-dir "$RT/jail" "${cg[@]}" --new-pid-ns -- --api-sock /api.sock
    local fcargs; fcargs=$(tr '\n' ' ' <"$W/rec/fc.argv")
    [[ $fcargs == "firecracker --id=$id --start-time-us="*" --start-time-cpu-us="*" --api-sock /api.sock " ]] \
      || bad "the jailed Firecracker's argv is '$fcargs'"
    grep -q 'kernel_image_path":"/vmlinux"' "$W/rec/requests" || bad "boot-source does not use the jail's /vmlinux: $(peek "$W/rec/requests")"
  fi
  grep -q -- '--no-seccomp' "$W/rec/fc.argv" && bad "--no-seccomp was passed to Firecracker"
  # The API calls, in order, pre-boot then InstanceStart.
  local calls; calls=$(cut -d' ' -f1,2 "$W/rec/requests" | tr '\n' ',')
  [ "$calls" = "PUT /logger,PUT /metrics,PUT /machine-config,PUT /boot-source,PUT /vsock,PUT /actions," ] \
    || bad "API calls were '$calls'"
  assert_no_fc_left
}

# 2. --no-jailer: a warning, and Firecracker started directly, exactly so.
t_fc_no_jailer() { need_fc
  ic "$W/o" "$W/e" 60 "${FCX[@]}" --no-jailer -- echo direct
  [ "$RC" = 0 ] || bad "status $RC (stderr: $(peek "$W/e"))"
  grep -qx direct "$W/o" || bad "stdout: $(peek "$W/o")"
  grep -q 'warning: --no-jailer' "$W/e" || bad "no warning that the jailer is off: $(peek "$W/e")"
  local id; id=$(vm_id_from "$W/rec/fc.argv")
  want_argv "$W/rec/fc.argv" "$W/bin/firecracker" --api-sock "$RT/vms/$id/api.sock" --id "$id"
  [ -e "$W/rec/jailer.argv" ] && bad "the jailer ran although --no-jailer was given"
  assert_no_fc_left
}

# 3. Firecracker refuses a request: its fault_message, verbatim; 66.
t_fc_fault_message() { need_fc
  FAKE_FC_FAULT="PUT /machine-config" FAKE_FC_FAULT_MESSAGE="Invalid machine config: 'vcpu_count' out of range [1, 32]." \
    ic "$W/o" "$W/e" 60 "${FCX[@]}" -- true
  [ "$RC" = 66 ] || bad "status $RC, want 66 (stderr: $(peek "$W/e"))"
  grep -qF "Firecracker refused PUT /machine-config (HTTP 400): Invalid machine config: 'vcpu_count' out of range [1, 32]." "$W/e" \
    || bad "the fault_message is not shown verbatim: $(peek "$W/e")"
  assert_no_fc_left
}

# 4. The VMM dies before its API socket exists: 66 and the tail of its log.
t_fc_dies_early() { need_fc
  FAKE_FC_DIE_BEFORE_SOCKET=1 ic "$W/o" "$W/e" 60 "${FCX[@]}" -- true
  [ "$RC" = 66 ] || bad "status $RC, want 66 (stderr: $(peek "$W/e"))"
  grep -q 'exited with status 1' "$W/e" && grep -q 'simulated crash before the API socket' "$W/e" \
    || bad "the message lacks the exit status or the log tail: $(peek "$W/e")"
  assert_no_fc_left
}

# 5. The API socket never appears: a bounded wait, then 66.
t_fc_no_socket() { need_fc
  FAKE_FC_NO_SOCKET=1 ic "$W/o" "$W/e" 60 "${FCX[@]}" -- true
  [ "$RC" = 66 ] || bad "status $RC, want 66 (stderr: $(peek "$W/e"))"
  grep -q "API socket .* did not appear within 5.0 s" "$W/e" || bad "no clear message: $(peek "$W/e")"
  [ "$MS" -lt 20000 ] || bad "took ${MS} ms; the wait should be about 5 s"
  assert_no_fc_left
}

# 6. The guest never listens on vsock: retried, then 67 with a reason.
t_fc_guest_never_listens() { need_fc
  FAKE_FC_NO_GUEST=1 ic "$W/o" "$W/e" 90 "${FCX[@]}" -- true
  [ "$RC" = 67 ] || bad "status $RC, want 67 (stderr: $(peek "$W/e"))"
  grep -q 'did not accept a vsock connection on port 1024' "$W/e" \
    && grep -q 'closed the connection after CONNECT' "$W/e" || bad "no clear message: $(peek "$W/e")"
  assert_no_fc_left
}

FILTER_JSON='{"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [{"syscall": "read"}]},
 "api": {"default_action": "trap", "filter_action": "allow", "filter": [{"syscall": "accept4",
   "args": [{"index": 3, "type": "dword", "op": "eq", "val": 524288}]}]},
 "vcpu": {"default_action": {"errno": 1}, "filter_action": "allow", "filter": [{"syscall": "ioctl"}]}}'

# 7. A custom seccomp filter: validated, compiled by the matching
#    seccompiler-bin, passed with --seccomp-filter (inside the jail).
t_fc_filter() { need_fc
  printf '%s\n' "$FILTER_JSON" >"$W/filter.json"
  ic "$W/o" "$W/e" 60 "${FCX[@]}" --firecracker-filter "$W/filter.json" -- echo filtered
  [ "$RC" = 0 ] || bad "status $RC (stderr: $(peek "$W/e"))"
  grep -qx filtered "$W/o" || bad "stdout: $(peek "$W/o")"
  local want=/seccomp.bpf; [ "$(id -u)" = 0 ] || want=seccomp.bpf
  grep -q -- "--seccomp-filter" "$W/rec/fc.argv" && grep -q "$want\$" "$W/rec/fc.argv" \
    || bad "Firecracker did not get --seccomp-filter: $(peek "$W/rec/fc.argv")"
  local sc; sc=$(tr '\n' ' ' <"$W/rec/seccompiler.argv")
  [[ $sc == "$W/bin/seccompiler-bin --target-arch x86_64 --input-file $W/filter.json --output-file $RT/vms/"*"/seccomp.bpf " ]] \
    || bad "seccompiler-bin's argv is '$sc'"
  assert_no_fc_left
}

# 8. Fail closed: a filter without seccompiler-bin, with one of another
#    release, or malformed, and Firecracker never starts.
t_fc_filter_refused() { need_fc
  printf '%s\n' "$FILTER_JSON" >"$W/filter.json"
  printf '{"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [{"sycall": "read"}]}}\n' >"$W/typo.json"
  IRONCLAW_SECCOMPILER=$W/bin/none ic "$W/o" "$W/e" 60 "${FCX[@]}" --firecracker-filter "$W/filter.json" -- true
  [ "$RC" = 65 ] || bad "without seccompiler-bin: status $RC, want 65 (stderr: $(peek "$W/e"))"
  grep -q 'needs seccompiler-bin' "$W/e" || bad "without seccompiler-bin: $(peek "$W/e")"
  FAKE_SECCOMPILER_VERSION=1.6.0 ic "$W/o" "$W/e" 60 "${FCX[@]}" --firecracker-filter "$W/filter.json" -- true
  [ "$RC" = 66 ] || bad "mismatched seccompiler-bin: status $RC, want 66 (stderr: $(peek "$W/e"))"
  grep -q 'seccompiler-bin is version 1.6.0 but Firecracker is 1.7.0' "$W/e" || bad "mismatch: $(peek "$W/e")"
  ic "$W/o" "$W/e" 60 "${FCX[@]}" --firecracker-filter "$W/typo.json" -- true
  [ "$RC" = 66 ] || bad "malformed filter: status $RC, want 66 (stderr: $(peek "$W/e"))"
  grep -q 'unknown key "sycall"' "$W/e" || bad "malformed filter: $(peek "$W/e")"
  ic "$W/o" "$W/e" 60 "${FCX[@]}" --firecracker-filter "$W/none.json" -- true
  [ "$RC" != 0 ] && grep -q 'none.json' "$W/e" || bad "missing filter file: status $RC: $(peek "$W/e")"
  # `firecracker --version` may have run; the VMM itself never did.
  [ -s "$W/rec/requests" ] && bad "Firecracker was started although the filter was refused: $(peek "$W/rec/requests")"
  grep -q -- --api-sock "$W/rec/fc.argv" 2>/dev/null && bad "Firecracker was started: $(peek "$W/rec/fc.argv")"
  assert_no_fc_left
}

# 9. kill -9 of ironclaw: the (jailed) Firecracker goes down with it, and
#    gc removes the record, sockets and chroot.
t_fc_kill9_then_gc() { need_fc; need_py
  "$IC" "${FCX[@]}" --name it-fc-kill9 -n -- sh -c 'echo started; exec sleep 600' >"$W/o" 2>"$W/e" </dev/null &
  local owner=$!
  on_exit "kill -9 $owner 2>/dev/null; wait $owner 2>/dev/null"
  local i
  await_line "$W/o" started "$owner" 120 "$W/e"
  local dir; dir=$(ls -d "$RT"/vms/*/ | head -1); dir=${dir%/}
  local fcpid; fcpid=$("$PY" - "$dir/state.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["resources"]
pids = [r.get("pid", 0) for r in res if r.get("kind") == "process" and r.get("role") in ("firecracker", "vmm")]
print(pids[-1] if pids else 0)
EOF
  )
  [ "${fcpid:-0}" -gt 1 ] || fail "no Firecracker pid in the state record"
  kill -9 "$owner"
  wait "$owner" 2>/dev/null
  for i in $(seq 40); do pid_dead "$fcpid" && break; sleep 0.25; done
  pid_dead "$fcpid" || bad "Firecracker (pid $fcpid) outlived ironclaw's kill -9"
  ic "$W/gc.out" "$W/gc.err" 60 gc
  [ "$RC" = 0 ] || bad "gc: status $RC (stderr: $(peek "$W/gc.err"))"
  [ ! -e "$dir" ] || bad "$dir still exists after gc"
  assert_no_fc_left "after gc: "
}

# 10. auto never picks Firecracker without hardware virtualisation, even
#     when one is configured; doctor names it and checks the kernel.
t_fc_doctor_auto() { need_fc; need_py
  ic "$W/d.json" "$W/e" 30 doctor --json
  "$PY" - "$W/d.json" "$W/bin/firecracker" <<'EOF' || bad "doctor: $(peek "$W/d.json")"
import json, sys
d = json.load(open(sys.argv[1]))
hw = d["host"]["kvm"]["usable"]
items = {i["item"]: i for i in d["items"]}
assert items["firecracker"]["value"] == sys.argv[2], items["firecracker"]
assert "firecracker kernel" in items, sorted(items)
if not hw:
    assert d["auto"].get("driver") != "firecracker", d["auto"]
EOF
}

# 11. Usage: Firecracker's limits and options are checked before anything runs.
t_fc_usage() { need_fc
  ic "$W/o" "$W/e" 30 "${FCX[@]}" --cpus 3 -- true
  [ "$RC" = 65 ] || [ "$RC" = 64 ] || bad "--cpus 3: status $RC, want 64/65 (stderr: $(peek "$W/e"))"
  grep -q 'even number' "$W/e" || bad "--cpus 3: $(peek "$W/e")"
  ic "$W/o" "$W/e" 30 "${FCX[@]}" --drive "$W/none.img" -- true
  [ "$RC" != 0 ] && grep -q 'none.img' "$W/e" || bad "--drive of a missing file: status $RC: $(peek "$W/e")"
  ic "$W/o" "$W/e" 30 exec --drive a --drive-copy b -- true
  [ "$RC" = 64 ] || bad "two drives: status $RC, want 64"
  [ -e "$W/rec/fc.argv" ] && bad "Firecracker was started for a bad configuration"
  assert_no_fc_left
}

# 12. image build takes a user's ELF vmlinux as the kernel (its release from
#     the banner), and Firecracker boots the resulting image.
t_fc_image_elf_kernel() { need_fc; need_py
  local vmlinux kdir
  vmlinux=$(json_get "$W/img.json" image.vmlinux.path)
  kdir=$(dirname "$(json_get "$W/img.json" inputs.kernel.path)")
  [ -f "$vmlinux" ] && [ -d "$kdir/modules" ] || skip "the image's kernel directory has no modules/ to reuse"
  mkdir -p "$W/k"
  cp "$vmlinux" "$W/k/vmlinux"
  ln -s "$kdir/modules" "$W/k/modules"
  [ -f "$kdir/config" ] && cp "$kdir/config" "$W/k/config"
  IRONCLAW_DATA_DIR=$W/data ic "$W/b.out" "$W/b.err" 90 image build --kernel "$W/k/vmlinux"
  [ "$RC" = 0 ] || fail "image build --kernel <vmlinux>: status $RC: $(peek "$W/b.err")"
  IRONCLAW_DATA_DIR=$W/data timeout 10 "$IC" image show --json >"$W/show.json" 2>/dev/null
  [ "$(json_get "$W/show.json" kernel_release)" = "$(json_get "$W/img.json" kernel_release)" ] \
    || bad "release from the ELF banner: '$(json_get "$W/show.json" kernel_release)', want '$(json_get "$W/img.json" kernel_release)'"
  [[ $(json_get "$W/show.json" vmlinux_from) == "copy of $W/k/vmlinux" ]] \
    || bad "vmlinux_from is '$(json_get "$W/show.json" vmlinux_from)'"
  IRONCLAW_DATA_DIR=$W/data ic "$W/o" "$W/e" 60 "${FCX[@]}" -- echo elf-kernel
  [ "$RC" = 0 ] && grep -qx elf-kernel "$W/o" || bad "exec on that image: status $RC: $(peek "$W/e")"
  grep -q "\"kernel_image_path\":\"[^\"]*vmlinux\"" "$W/rec/requests" || bad "boot-source: $(peek "$W/rec/requests")"
  assert_no_fc_left
}

TESTS+=(
  t_fc_happy:60
  t_fc_no_jailer:60
  t_fc_fault_message:60
  t_fc_dies_early:60
  t_fc_no_socket:60
  t_fc_guest_never_listens:90
  t_fc_filter:60
  t_fc_filter_refused:90
  t_fc_kill9_then_gc:90
  t_fc_doctor_auto:40
  t_fc_usage:60
  t_fc_image_elf_kernel:120
)
