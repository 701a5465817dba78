# suite_net.sh - network isolation, sourced by run.sh (docs/network.md).
#
# Real packets, real rules. Each test builds its own test hosts: network
# namespaces "ictest-<role>-<pid>" joined to the host by veth pairs
# "ict<r><pid>" / "ict<r><pid>p" with addresses from 10.214.0.0/16, running
# small TCP servers. A VM boots with --net allow=<allowed server>:PORT/tcp
# and its guest tries the allowed server, the same host on another port, a
# denied server, and services of the host itself (its test veth address,
# which the allow-list even names, and the VM's own host veth). Every
# address touched belongs to the test's own hosts or the VM's own link.
# Both firewall backends run the same tests. Tests that need root or a tool
# say so and skip.

NET_POOL=10.213.240.0/22          # the suite's own pool (not the default's block 0)
export IRONCLAW_NET_POOL=$NET_POOL
NET_STEPS="pool netns tap veth addresses uplinks firewall verify forwarding"

need_root() { [ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veth pairs, firewall rules)"; }
need_tool() { command -v "$1" >/dev/null || skip "needs $1${2:+ (Debian package $2)}"; }
need_backend() {
  case $1 in
    nft) nft list tables >/dev/null 2>&1 || skip "nf_tables does not answer here (nft list tables failed)" ;;
    iptables) need_tool iptables-restore iptables; need_tool iptables-save iptables ;;
  esac
}
need_net() { need_root; need_vm; need_py; need_tool ip iproute2; need_tool nsenter util-linux; need_backend "$1"; }

# The nf_tables tables of the iptables backend (iptables-nft creates "ip
# filter" and "ip nat" on first use and leaves them, empty): a test that
# found them absent removes them again if they hold no rule.
snapshot_ipt_tables() {
  NET_HAD_FILTER=0 NET_HAD_NAT=0
  nft list table ip filter >/dev/null 2>&1 && NET_HAD_FILTER=1
  nft list table ip nat >/dev/null 2>&1 && NET_HAD_NAT=1
  on_exit "drop_empty_ipt_tables $NET_HAD_FILTER $NET_HAD_NAT"
}
drop_empty_ipt_tables() {
  local had t
  for t in filter nat; do
    if [ "$t" = filter ]; then had=$1; else had=$2; fi
    [ "$had" = 1 ] && continue
    nft list table ip "$t" 2>/dev/null | grep -qE '^\s+(iifname|oifname|ip |counter|jump|accept|drop|meta|ct )' && continue
    nft delete table ip "$t" 2>/dev/null
  done
}

# A TCP server in a namespace (or on the host with ns "-"): answers every
# connection with TOKEN and logs the peer's address to LOG.
serve() {
  local ns=$1 addr=$2 port=$3 token=$4 log=$5
  local run=(); [ "$ns" = - ] || run=(ip netns exec "$ns")
  "${run[@]}" "$PY" - "$addr" "$port" "$token" "$log" >/dev/null 2>&1 <<'EOF' &
import socket, sys
addr, port, token, log = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(16)
while True:
    c, peer = s.accept()
    with open(log, "a") as f:
        f.write(peer[0] + "\n")
    try:
        c.sendall(token + b"\n")
    finally:
        c.close()
EOF
  on_exit "kill $! 2>/dev/null"
}

# A UDP sink in a namespace: logs the source of every datagram to LOG.
udp_sink() {
  local ns=$1 addr=$2 port=$3 log=$4
  ip netns exec "$ns" "$PY" - "$addr" "$port" "$log" >/dev/null 2>&1 <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    with open(sys.argv[3], "a") as f:
        f.write(peer[0] + "\n")
EOF
  on_exit "kill $! 2>/dev/null"
}

# udp_probe NS ADDR PORT: one datagram from a test host.
udp_probe() {
  ip netns exec "$1" "$PY" -c 'import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"probe", (sys.argv[1], int(sys.argv[2])))' "$2" "$3" 2>/dev/null
}

# testhost ROLE N: namespace ictest-ROLE-$$ with 10.214.N.2/30, the host
# side 10.214.N.1/30 on veth ict<R>$$ (R: ROLE's first letter).
testhost() {
  local role=$1 n=$2 ns=ictest-$1-$$ h=ict${1:0:1}$$
  ip netns add "$ns" || fail "cannot create namespace $ns"
  on_exit "ip netns del $ns 2>/dev/null"
  ip link add "$h" type veth peer name "${h}p" netns "$ns" || fail "cannot create veth $h"
  on_exit "ip link del $h 2>/dev/null"
  ip addr add "10.214.$n.1/30" dev "$h" && ip link set "$h" up &&
    ip -n "$ns" addr add "10.214.$n.2/30" dev "${h}p" && ip -n "$ns" link set "${h}p" up &&
    ip -n "$ns" link set lo up && ip -n "$ns" route add default via "10.214.$n.1" ||
    fail "cannot configure test host $ns"
}

# Nothing of VM id $1 is left: chain (both backends), veth, namespace
# mount, pool block.
assert_net_gone() {
  local id=$1 what=${2:-} chain veth
  chain=$("$PY" -c 'import hashlib,sys; print("IRONCLAW_" + hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])' "$id")
  veth=ic${chain:9:13}
  nft list tables 2>/dev/null | grep -q "$chain" && bad "${what}nft table $chain left"
  if command -v iptables-save >/dev/null; then
    iptables-save 2>/dev/null | grep -q "$chain" && bad "${what}iptables chain $chain left"
  fi
  ip link show "$veth" >/dev/null 2>&1 && bad "${what}link $veth left"
  grep -q "$RT/vms/$id" /proc/self/mountinfo && bad "${what}namespace mount of $id left"
  [ -f "$RT/net/hosts.json" ] && grep -q "$id" "$RT/net/hosts.json" && bad "${what}$RT/net/hosts.json still names $id"
  true
}

# Every interface, chain and mount ironclaw could have made for this suite.
assert_no_net_left() {
  local what=${1:-} links
  links=$(ip -br link 2>/dev/null | awk '{print $1}' | grep -E '^ic[0-9a-f]{13}(@|$)' | tr '\n' ' ')
  [ -z "$links" ] || bad "${what}ironclaw links left: $links"
  grep -q "$RT/vms/" /proc/self/mountinfo && bad "${what}namespace mounts left under $RT"
  local chains; chains=$(timeout 20 "$IC" fw list --json 2>/dev/null | "$PY" -c '
import json, sys
print(" ".join(c["chain"] for c in json.load(sys.stdin) if c["status"] != "orphan"))' 2>/dev/null)
  [ -z "$chains" ] || bad "${what}chains of this suite's VMs left: $chains"
  true
}

# The guest's checks: each line NAME=ok (the server answered) or NAME=fail.
GUEST_CHECKS='
try() { out=$(busybox nc -w 3 "$2" "$3" </dev/null 2>/dev/null); case $out in *srv-*) echo "$1=ok";; *) echo "$1=fail";; esac; }
gw=$(sed -n "s/.*ironclaw.net=[^,]*,\([0-9.]*\).*/\1/p" /proc/cmdline)
hostveth=$(echo "$gw" | awk -F. "{print \$1\".\"\$2\".\"\$3\".\"\$4-2}")
echo "gw=$gw hostveth=$hostveth"
try allowed 10.214.1.2 8080
try allowed_other_port 10.214.1.2 8081
try denied 10.214.2.2 8080
try host_test_veth 10.214.1.1 18080
try host_vm_veth "$hostveth" 18080
try guest_loopback 127.0.0.1 18080
echo checks-done
'

want_check() { # file name ok|fail
  grep -qx "$2=$3" "$1" || bad "$BACKEND: guest check $2: want $3, got '$(grep "^$2=" "$1" | head -1)' (stdout: $(peek "$1"))"
}

# ---- tests --------------------------------------------------------------------

# Usage errors of the network options, and a name over 255 characters: 64,
# one clear line, nothing booted, no chain made.
t_net_usage() {
  local args want
  while IFS='|' read -r want args; do
    [ -n "$want" ] || continue
    eval "set -- $args"
    ic "$W/o" "$W/e" 20 "$@"
    [ "$RC" = "$want" ] || bad "'ironclaw $args': status $RC, want $want (stderr: $(peek "$W/e"))"
    grep -q '^ironclaw: ' "$W/e" || bad "'ironclaw $args': no 'ironclaw: ...' line on stderr"
  done <<'EOF'
64|exec --net bogus -- true
64|exec --net allow= -- true
64|exec --net allow=example.com -- true
64|exec --net allow=10.0.0.1/8 -- true
64|exec --net allow=10.0.0.1:99999 -- true
64|exec --net allow=10.0.0.1/icmp -- true
64|exec --firewall pf -- true
64|fw
64|fw bogus
64|fw verify
64|fw list extra
65|fw verify no-such-vm
EOF
  grep -q 'host bits' <("$IC" exec --net allow=10.0.0.1/8 -- true 2>&1) || bad "--net allow=10.0.0.1/8 does not explain the host bits"
  local long; long=$(printf 'x%.0s' $(seq 256))
  ic "$W/o" "$W/e" 20 exec --name "$long" --net allow=10.214.1.2 -- true
  [ "$RC" = 64 ] || bad "a 256-character --name: status $RC, want 64"
  local left; left=$(ls -A "$RT/vms" 2>/dev/null)
  [ -z "$left" ] || bad "usage errors left VM directories: $left"
  for args in "fw --help" "fw list --help" "exec --help"; do
    eval "set -- $args"
    ic "$W/o" "$W/e" 20 "$@"
    [ "$RC" = 0 ] && grep -q '^Usage: ironclaw' "$W/o" || bad "'ironclaw $args' gives no usage (status $RC)"
  done
  grep -q -- '--net none|allow=' "$W/o" || bad "exec --help does not document --net"
}

# --net none (the default): the guest has no NIC, and the VMM sits in a
# network namespace of its own with nothing but loopback.
t_net_none() { need_vm; need_py; need_root; need_tool nsenter util-linux
  "$IC" "${EXEC[@]}" --name it-net-none --json -n -- sh -c 'ls /sys/class/net; sleep 6' >"$W/o" 2>"$W/e" &
  local owner=$! i vmm=""
  on_exit "kill -9 $owner 2>/dev/null"
  for i in $(seq 120); do
    timeout 10 "$IC" ps --json >"$W/ps.json" 2>/dev/null
    vmm=$(json_get "$W/ps.json" 0.vmm_pid 2>/dev/null)
    [ "${vmm:-0}" -gt 0 ] 2>/dev/null && break
    sleep 0.25
  done
  [ "${vmm:-0}" -gt 0 ] 2>/dev/null || fail "no VMM pid in ps --json: $(peek "$W/ps.json")"
  local host_ns vmm_ns
  host_ns=$(readlink /proc/self/ns/net); vmm_ns=$(readlink "/proc/$vmm/ns/net")
  [ -n "$vmm_ns" ] && [ "$vmm_ns" != "$host_ns" ] || bad "the VMM ($vmm) is in the host's network namespace ($vmm_ns)"
  local links; links=$(nsenter --net="/proc/$vmm/ns/net" ip -br link 2>&1 | awk '{print $1}' | tr '\n' ' ')
  [ "$links" = "lo " ] || bad "the VMM's namespace has links other than lo: '$links'"
  wait "$owner"
  local rc=$?
  [ "$rc" = 0 ] || bad "exec status $rc (stderr: $(peek "$W/e"))"
  "$PY" - "$W/o" <<'EOF' || bad "report: $(peek "$W/o")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["stdout"].split() == ["lo"], "guest links: %r" % r["stdout"]
assert r["network"] == {"mode": "none"}, "network: %r" % r["network"]
EOF
  assert_no_vm_left
}

# Egress: allowed server yes; its other port, the denied server, the host
# itself (even where the allow-list names it) no. Replies come back through
# masquerading (the server sees the host's address). fw list/verify see the
# chain while the VM runs; nothing is left afterwards.
net_egress() { BACKEND=$1; need_net "$1"
  [ "$1" = iptables ] && snapshot_ipt_tables
  testhost allow 1; testhost deny 2
  serve ictest-allow-$$ 10.214.1.2 8080 srv-allow "$W/allow.log"
  serve ictest-allow-$$ 10.214.1.2 8081 srv-allow-other "$W/allow2.log"
  serve ictest-deny-$$ 10.214.2.2 8080 srv-deny "$W/deny.log"
  serve - 0.0.0.0 18080 srv-host "$W/host.log"
  udp_sink ictest-deny-$$ 10.214.2.2 9999 "$W/sink.log"
  local fwd_before; fwd_before=$(cat "/proc/sys/net/ipv4/conf/icta$$/forwarding")
  sleep 0.3
  "$IC" "${EXEC[@]}" --name "it-egress-$1" -n --firewall "$1" \
    --net "allow=10.214.1.2:8080/tcp,10.214.1.0/30:18080/tcp" \
    -- sh -c "${GUEST_CHECKS}sleep 600" >"$W/checks" 2>"$W/e" &
  local owner=$! i
  on_exit "kill -9 $owner 2>/dev/null"
  await_line "$W/checks" checks-done "$owner" 360 "$W/e" "$1"
  # ironclaw switched forwarding on for the uplink (it was off): its guard
  # must keep the host from forwarding anything else that arrives there,
  # such as a datagram from one test host to the other.
  # (The host's own datagram shows the sink works.)
  "$PY" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"control", ("10.214.2.2", 9999))'
  udp_probe ictest-allow-$$ 10.214.2.2 9999
  sleep 0.5
  grep -qx 10.214.2.1 "$W/sink.log" 2>/dev/null || bad "$1: the UDP sink did not see the host's control datagram"
  grep -qx 10.214.1.2 "$W/sink.log" 2>/dev/null &&
    bad "$1: the host forwarded a datagram from the uplink to another test host (guard missing)"
  [ "$fwd_before" = 1 ] || [ "$(cat "/proc/sys/net/ipv4/conf/icta$$/forwarding")" = 1 ] ||
    bad "$1: forwarding on the uplink icta$$ is not on while the VM runs"
  ic "$W/verify" "$W/verify.err" 20 fw verify "it-egress-$1"
  [ "$RC" = 0 ] || bad "$1: fw verify: status $RC: $(peek "$W/verify.err")"
  ic "$W/list.json" "$W/list.err" 20 fw list --json
  "$PY" - "$W/list.json" "$1" <<'EOF' || bad "$1: fw list --json: $(peek "$W/list.json")"
import json, sys
l = [c for c in json.load(open(sys.argv[1])) if c["name"] == "it-egress-" + sys.argv[2]]
assert len(l) == 1 and l[0]["status"] == "live" and l[0]["backend"] == sys.argv[2], l
assert len(l[0]["chain"]) == 25 and l[0]["chain"].startswith("IRONCLAW_"), l
EOF
  # The VM's guest checks ran before its sleep; stop it (SIGTERM reaches the command).
  local id; id=$(ls -A "$RT/vms" | head -1)
  [ -n "$id" ] || fail "$1: no VM directory while the VM runs"
  kill -TERM "$owner"
  for i in $(seq 120); do kill -0 "$owner" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$owner" 2>/dev/null && fail "$1: ironclaw did not end after SIGTERM"
  wait "$owner" 2>/dev/null
  want_check "$W/checks" allowed ok
  want_check "$W/checks" allowed_other_port fail
  want_check "$W/checks" denied fail
  want_check "$W/checks" host_test_veth fail
  want_check "$W/checks" host_vm_veth fail
  want_check "$W/checks" guest_loopback fail
  [ ! -s "$W/deny.log" ] || bad "$1: the denied server saw connections from $(sort -u "$W/deny.log" | tr '\n' ' ')"
  [ ! -s "$W/allow2.log" ] || bad "$1: the allowed host's other port saw connections"
  [ ! -s "$W/host.log" ] || bad "$1: the host's own service saw connections from $(sort -u "$W/host.log" | tr '\n' ' ')"
  [ "$(sort -u "$W/allow.log" 2>/dev/null)" = 10.214.1.1 ] ||
    bad "$1: the allowed server saw '$(sort -u "$W/allow.log" 2>/dev/null | tr '\n' ' ')', want the host's masqueraded 10.214.1.1"
  [ "$(cat "/proc/sys/net/ipv4/conf/icta$$/forwarding")" = "$fwd_before" ] ||
    bad "$1: forwarding on the uplink icta$$ was not restored to $fwd_before"
  assert_net_gone "$id" "$1: "
  assert_no_vm_left "$1: "
}
t_net_egress_nft() { net_egress nft; }
t_net_egress_iptables() { net_egress iptables; }

# Under a host FORWARD policy of DROP (iptables), the iptables backend's
# jumps still let allowed flows through, and auto picks iptables. Runs
# only where the test can own the policy: no "ip filter" table before.
t_net_forward_drop_policy() { BACKEND=iptables; need_net iptables
  nft list table ip filter >/dev/null 2>&1 && skip "the host has an iptables filter table; the test changes no policy it did not create"
  snapshot_ipt_tables
  on_exit "iptables -P FORWARD ACCEPT 2>/dev/null"
  iptables -P FORWARD DROP || fail "cannot set the test's FORWARD policy"
  testhost allow 1
  serve ictest-allow-$$ 10.214.1.2 8080 srv-allow "$W/allow.log"
  sleep 0.3
  local fw
  for fw in iptables auto; do
    ic "$W/o" "$W/e" 90 "${EXEC[@]}" --name "it-drop-$fw" --json -n --firewall "$fw" \
      --net allow=10.214.1.2:8080/tcp -- sh -c 'busybox nc -w 3 10.214.1.2 8080 </dev/null'
    [ "$RC" = 0 ] || bad "--firewall $fw under FORWARD DROP: status $RC (stderr: $(peek "$W/e"))"
    "$PY" - "$W/o" <<'EOF' || bad "--firewall $fw under FORWARD DROP: $(peek "$W/o")"
import json, sys
r = json.load(open(sys.argv[1]))
assert "srv-allow" in r["stdout"], r["stdout"]
assert r["network"]["backend"] == "iptables", r["network"]
EOF
  done
  iptables -S FORWARD | grep -q -- '-P FORWARD DROP' || bad "the FORWARD policy is no longer DROP"
  assert_no_vm_left
}

# Four VMs at once, named vm-1, vm_1 and two 200-character names that differ
# only in their last character: distinct chains (<= 28 chars, from the
# internal ids) and distinct addresses from the pool.
t_net_names_concurrent() { need_net nft
  local n i=0 long; long=$(printf 'x%.0s' $(seq 199))
  for n in vm-1 vm_1 "${long}a" "${long}b"; do
    i=$((i + 1))
    "$IC" "${EXEC[@]}" --name "$n" --json -n --net allow=10.214.1.2:8080/tcp -- sh -c 'sleep 3' \
      >"$W/$i.json" 2>"$W/$i.err" &
    on_exit "kill -9 $! 2>/dev/null"
  done
  wait
  "$PY" - "$W"/[1-4].json <<'EOF' || bad "$(peek "$W/1.json") $(peek "$W/1.err") $(peek "$W/3.err")"
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
for r in runs:
    assert r["status"] == 0, r["error"]
nets = [r["network"] for r in runs]
chains = [n["chain"] for n in nets]
assert len(set(chains)) == 4, chains
assert all(len(c) <= 28 for c in chains), chains
assert len({n["guest_addr"] for n in nets}) == 4 and len({n["host_if"] for n in nets}) == 4, nets
for c in chains:
    for n in ("vm-1", "vm_1", "vm", "xxxx"):
        assert n not in c, (n, c)
for n in nets:
    assert n["mode"] == "allow" and n["backend"] == "nft" and n["allow"] == ["10.214.1.2:8080/tcp"], n
    assert n["chain"].startswith("IRONCLAW_") and len(n["chain"]) == 25, n
    assert n["guest_addr"].startswith("10.213.24") and n["tap"] == "tap0", n
EOF
  assert_no_net_left
  assert_no_vm_left
}

# A firewall failure starts no VM and leaves nothing: capabilities dropped,
# and a forced failure at each step (IRONCLAW_TEST_FAIL_NET_STEP, test only).
net_fail_closed() { BACKEND=$1; need_net "$1"
  [ "$1" = iptables ] && snapshot_ipt_tables
  local step
  for step in $NET_STEPS; do
    IRONCLAW_TEST_FAIL_NET_STEP=$step ic "$W/o" "$W/e" 60 "${EXEC[@]}" --name "it-fail-$step" \
      --firewall "$1" --net allow=10.214.1.2:8080/tcp -- echo ran
    [ "$RC" = 66 ] || bad "$1: fault at $step: status $RC, want 66 (stderr: $(peek "$W/e"))"
    grep -q "network: $step: " "$W/e" || bad "$1: fault at $step: the error does not name the step: $(peek "$W/e")"
    grep -q '^ran$' "$W/o" && bad "$1: fault at $step: the command ran"
    assert_no_net_left "$1: fault at $step: "
    assert_no_vm_left "$1: fault at $step: "
  done
  if command -v capsh >/dev/null; then
    timeout 60 capsh --drop=cap_net_admin -- -c "exec '$IC' ${EXEC[*]} --name it-nocap --firewall $1 --net allow=10.214.1.2:8080/tcp -- echo ran" \
      >"$W/o" 2>"$W/e" </dev/null
    RC=$?
    [ "$RC" = 66 ] || bad "$1: without CAP_NET_ADMIN: status $RC, want 66 (stderr: $(peek "$W/e"))"
    grep -qE 'network: [a-z]+: ' "$W/e" || bad "$1: without CAP_NET_ADMIN: the error names no step: $(peek "$W/e")"
    grep -q '^ran$' "$W/o" && bad "$1: without CAP_NET_ADMIN: the command ran"
    assert_no_net_left "$1: without CAP_NET_ADMIN: "
    assert_no_vm_left "$1: without CAP_NET_ADMIN: "
  else
    bad "$1: capsh is missing (Debian package libcap2-bin): the capability test did not run"
  fi
}
t_net_fail_closed_nft() { net_fail_closed nft; }
t_net_fail_closed_iptables() { net_fail_closed iptables; }

# kill -9 of ironclaw while its networked VM runs: the rules stay (fail
# closed), fw list says "dead", gc removes everything.
net_kill9() { BACKEND=$1; need_net "$1"
  [ "$1" = iptables ] && snapshot_ipt_tables
  testhost allow 1
  local fwd_before; fwd_before=$(cat "/proc/sys/net/ipv4/conf/icta$$/forwarding")
  "$IC" "${EXEC[@]}" --name "it-k9-$1" -n --firewall "$1" --net allow=10.214.1.2:8080/tcp \
    -- sh -c 'echo started; exec sleep 600' >"$W/o" 2>"$W/e" &
  local owner=$! i
  on_exit "kill -9 $owner 2>/dev/null"
  await_line "$W/o" started "$owner" 240 "$W/e" "$1"
  local id; id=$(ls -A "$RT/vms" | head -1)
  [ -n "$id" ] || fail "$1: no VM directory while the VM runs"
  kill -9 "$owner"; wait "$owner" 2>/dev/null
  ic "$W/list.json" "$W/e" 20 fw list --json
  grep -q '"status": "dead"' "$W/list.json" || bad "$1: after kill -9, fw list does not show the chain as dead: $(peek "$W/list.json")"
  ic "$W/gc.out" "$W/gc.err" 60 gc
  [ "$RC" = 0 ] || bad "$1: gc: status $RC: $(peek "$W/gc.err")"
  grep -q "$id" "$W/gc.out" || bad "$1: gc does not say it removed $id: $(peek "$W/gc.out")"
  for i in $(seq 20); do [ -z "$(procs_with "$RT/")" ] && break; sleep 0.25; done
  assert_net_gone "$id" "$1: after gc: "
  [ "$(cat "/proc/sys/net/ipv4/conf/icta$$/forwarding")" = "$fwd_before" ] ||
    bad "$1: after gc, forwarding on the uplink icta$$ is not back to $fwd_before"
  assert_no_net_left "$1: after gc: "
  assert_no_vm_left "$1: after gc: "
}
t_net_kill9_gc_nft() { net_kill9 nft; }
t_net_kill9_gc_iptables() { net_kill9 iptables; }

TESTS+=(
  t_net_usage:60
  t_net_none:120
  t_net_egress_nft:240
  t_net_egress_iptables:240
  t_net_forward_drop_policy:240
  t_net_names_concurrent:180
  t_net_fail_closed_nft:180
  t_net_fail_closed_iptables:180
  t_net_kill9_gc_nft:180
  t_net_kill9_gc_iptables:180
)
