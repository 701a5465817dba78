#!/usr/bin/env bash
# bench/run.sh - ironclaw's benchmarks: `make bench` runs `bench/run.sh BUILD`.
#
# Every figure is a ratio measured side by side in this one run against a
# baseline without ironclaw on the same host, never a pass/fail threshold:
#
#   1. cold start   `ironclaw exec -n -- true`, end to end, against a bare
#                   `qemu-system-x86_64 -M microvm` boot of the same kernel
#                   whose initramfs holds only an init that powers off.
#                   The two alternate, BENCH_RUNS times each.
#   2. round trips  bench_rtt: `true` exec'd BENCH_EXECS times in one VM
#                   (request -> exit notification), and `ping` over a bare
#                   VM's RPC channel (request -> answer).
#   3. throughput   BENCH_MIB MiB host -> guest -> host through `cat`:
#                   bench_rtt (library API), the CLI's timings_ms.command
#                   (stdin from a file),
#                   and the raw transport: the same QEMU virtio-serial port
#                   and socket with an init that echoes bytes back and the
#                   host tool bench_echo; and that echo relayed through
#                   cat by the same init (port -> pipe -> cat -> pipe ->
#                   port), to tell cat's share of the gap from ironclaw's.
#                   The four alternate, each in a fresh VM,
#                   BENCH_STREAM_ROUNDS times; medians compared.
#   4. firewall     bench_fw, nftables against iptables in the same run:
#                   add and remove one VM's rules, add BENCH_FW_VMS (1000)
#                   VMs' worth, and a 1 ms timer's lateness on the loop
#                   while BENCH_FW_CONCURRENT (100) VMs' rules go in at once
#                   (rules only, no VMs; needs root; everything is removed).
#
# Prints a table at the end; with BENCH_JSON=FILE also writes the results
# as JSON there. Exits 0 unless a benchmark could not produce its figure.
# Settings: BENCH_RUNS (5), BENCH_EXECS (50), BENCH_MIB (256),
# BENCH_STREAM_ROUNDS (5).
set -uo pipefail

BUILD=${1:-build}
RUNS=${BENCH_RUNS:-5}
EXECS=${BENCH_EXECS:-50}
MIB=${BENCH_MIB:-256}
STREAM_ROUNDS=${BENCH_STREAM_ROUNDS:-5}
SRC=$(cd "$(dirname "$0")/.." && pwd)
IRONCLAW=$BUILD/ironclaw
BENCH_BIN=$BUILD/bench
BOOT_TIMEOUT=${BENCH_BOOT_TIMEOUT:-20}  # seconds before a hung boot is given up (normal: ~4)
FAILED=0

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
broke() { say "FAILED: $*"; FAILED=1; }

for n in "$RUNS" "$EXECS" "$MIB" "$STREAM_ROUNDS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS, BENCH_EXECS, BENCH_MIB and BENCH_STREAM_ROUNDS must be positive integers"
done

# ---- programs ------------------------------------------------------------

# The bench programs are part of the normal build (IC_BENCH=ON); build them
# here too in case the build directory predates them.
if [ ! -x "$BENCH_BIN/bench_rtt" ] || [ ! -x "$BENCH_BIN/bench_echo" ] || [ ! -x "$BENCH_BIN/bench_fw" ] ||
   [ ! -x "$BENCH_BIN/bench_init_poweroff" ] || [ ! -x "$BENCH_BIN/bench_init_echo" ]; then
  say "building the bench programs in $BUILD"
  cmake -S "$SRC" -B "$BUILD" -DIC_BENCH=ON >/dev/null &&
    cmake --build "$BUILD" -j2 --target bench_rtt bench_echo bench_fw bench_init_poweroff bench_init_echo \
      >/dev/null || die "cannot build the bench programs"
fi
[ -x "$IRONCLAW" ] || die "$IRONCLAW is missing (make build)"
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 is not installed"
command -v cpio >/dev/null || die "cpio is not installed (make setup)"

TMP=$(mktemp -d /tmp/ironclaw-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# ---- the image and the baselines' initramfs -------------------------------

# Copies, so that an image rebuilt meanwhile cannot pull files from under
# the baselines. ironclaw itself uses the image as published.
img_path() { "$IRONCLAW" image show 2>/dev/null | awk -v k="$1" '$1 == k { print $2; exit }'; }
KERNEL_SRC=$(img_path vmlinuz)
INITRD_SRC=$(img_path initrd)
[ -f "$KERNEL_SRC" ] && [ -f "$INITRD_SRC" ] || die "no guest image; run 'make image'"
cp "$KERNEL_SRC" "$TMP/vmlinuz" && cp "$INITRD_SRC" "$TMP/image.cpio" || die "cannot copy the image"

pack() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$2"; }

# Bare baseline: nothing but an init that powers off.
mkdir -p "$TMP/bare"
cp "$BENCH_BIN/bench_init_poweroff" "$TMP/bare/init"
pack "$TMP/bare" "$TMP/bare.cpio" || die "cannot pack the bare initramfs"

# Echo baseline: the image's kernel modules and their load order, with an
# init that echoes the virtio-serial port instead of the guest agent.
mkdir -p "$TMP/image" "$TMP/echo/etc/ironclaw"
(cd "$TMP/image" && cpio -idm --quiet < "$TMP/image.cpio") || die "cannot unpack the image's initrd"
ORDER=$TMP/image/etc/ironclaw/modules.order
[ -f "$ORDER" ] || die "the image has no /etc/ironclaw/modules.order"
cp "$ORDER" "$TMP/echo/etc/ironclaw/"
while read -r mod; do
  case $mod in ''|'#'*) continue ;; esac
  mkdir -p "$TMP/echo$(dirname "$mod")"
  cp "$TMP/image$mod" "$TMP/echo$mod" || die "module $mod is listed but not in the image"
done < "$ORDER"
cp "$BENCH_BIN/bench_init_echo" "$TMP/echo/init"
pack "$TMP/echo" "$TMP/echo.cpio" || die "cannot pack the echo initramfs"
# The same with the image's busybox, for the echo through cat.
mkdir -p "$TMP/echo/bin"
cp "$TMP/image/bin/busybox" "$TMP/echo/bin/busybox" && ln -s busybox "$TMP/echo/bin/cat" ||
  die "the image has no /bin/busybox"
pack "$TMP/echo" "$TMP/echocat.cpio" || die "cannot pack the echo-through-cat initramfs"

# ---- helpers ---------------------------------------------------------------

now_ms() { local t=$EPOCHREALTIME; echo "${t/./}" | awk '{ printf "%.1f", $1 / 1000 }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", b - a }'; }
# A JSON number out of one-line or indented JSON: json_num KEY < file
json_num() { grep -o "\"$1\": *[-0-9.e+]*" | head -1 | sed 's/.*: *//'; }
# Statistics of numbers, one a line: stats min|median < file
stats() {
  sort -g | awk -v what="$1" '{ v[NR] = $1 } END {
    if (NR == 0) { print "null"; exit }
    if (what == "min") printf "%.1f", v[1]
    else if (NR % 2) printf "%.1f", v[(NR + 1) / 2]
    else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || b == "null" || b == 0) print "null"; else printf "%.3f", a / b }'; }

# The QEMU command line of src/vm/qemu.c, minus the channel and the
# ironclaw.* kernel parameters. ACCEL comes from ironclaw's own report.
ACCEL=tcg
# ironclaw hands a TCG guest the host's TSC rate (see host.h); the bare
# boot gets the same, so both kernels skip the same calibration.
TSC_ARG=$("$IRONCLAW" doctor --json 2>/dev/null | grep -A2 '"item": "TSC frequency"' |
  sed -n 's/.*"value": "\([0-9]*\) kHz".*/ tsc_early_khz=\1/p')
qemu_base() {
  # CPU model and kernel arguments as ironclaw's (src/vm/qemu.c)
  local cpu=max,-erms,-fsrm kargs=" clearcpuid=rep_good"; [ "$ACCEL" = kvm ] && cpu=host kargs=""
  printf '%s\n' "$QEMU" -M microvm,x-option-roms=off,isa-serial=on,rtc=off -accel "$ACCEL" \
    -cpu "$cpu" -smp 1 -m 256M -nodefaults -no-user-config -nographic -no-reboot \
    -serial "file:$1" -kernel "$TMP/vmlinuz" -initrd "$2" \
    -append "console=ttyS0 quiet panic=-1 reboot=t$kargs$TSC_ARG${3:+ $3}"
}

# ---- 1. cold start -----------------------------------------------------------

say "cold start: warming up (one ironclaw exec, one bare boot)"
"$IRONCLAW" exec --json -n --boot-timeout "$BOOT_TIMEOUT" -- true > "$TMP/warm.json" 2> "$TMP/warm.err" ||
  say "warm-up ironclaw exec failed: $(tail -1 "$TMP/warm.err")"
a=$(grep -o '"accel": *"[a-z]*"' "$TMP/warm.json" | sed 's/.*"\([a-z]*\)"$/\1/')
[ -n "$a" ] && ACCEL=$a
mapfile -t BARE_CMD < <(qemu_base "$TMP/bare-console.log" "$TMP/bare.cpio")
timeout "$BOOT_TIMEOUT" "${BARE_CMD[@]}" >/dev/null 2>&1 || say "warm-up bare boot failed"

# Each round runs ironclaw then bare, as long as either side still needs
# samples; a run that fails (e.g. a boot that hangs) is counted and made
# up for, up to RUNS extra rounds.
: > "$TMP/ic_total"; : > "$TMP/bare_total"; : > "$TMP/ic_ready"; : > "$TMP/ic_teardown"
IC_FAILS=0; BARE_FAILS=0
for ((i = 1; i <= 2 * RUNS; i++)); do
  ic_n=$(wc -l < "$TMP/ic_total"); bare_n=$(wc -l < "$TMP/bare_total")
  [ "$ic_n" -ge "$RUNS" ] && [ "$bare_n" -ge "$RUNS" ] && break
  ic_ms=-; bare_ms=-
  if [ "$ic_n" -lt "$RUNS" ]; then
    t0=$(now_ms)
    if "$IRONCLAW" exec --json -n --boot-timeout "$BOOT_TIMEOUT" -- true > "$TMP/ic.json" 2> "$TMP/ic.err"; then
      ic_ms=$(elapsed "$t0" "$(now_ms)")
      echo "$ic_ms" >> "$TMP/ic_total"
      json_num guest_ready < "$TMP/ic.json" >> "$TMP/ic_ready"
      json_num teardown < "$TMP/ic.json" >> "$TMP/ic_teardown"
    else
      IC_FAILS=$((IC_FAILS + 1)); ic_ms=failed
      say "ironclaw exec failed: $(grep -v warning "$TMP/ic.err" | tail -1)"
    fi
  fi
  if [ "$bare_n" -lt "$RUNS" ]; then
    t0=$(now_ms)
    if timeout "$BOOT_TIMEOUT" "${BARE_CMD[@]}" >/dev/null 2>"$TMP/bare.err"; then
      bare_ms=$(elapsed "$t0" "$(now_ms)")
      echo "$bare_ms" >> "$TMP/bare_total"
    else
      BARE_FAILS=$((BARE_FAILS + 1)); bare_ms=failed
      say "bare boot failed; console ends: $(tail -c 200 "$TMP/bare-console.log" | tr '\n' ' ')"
    fi
  fi
  say "cold start round $i: ironclaw $ic_ms ms, bare $bare_ms ms"
done
IC_MED=$(stats median < "$TMP/ic_total"); IC_MIN=$(stats min < "$TMP/ic_total")
BARE_MED=$(stats median < "$TMP/bare_total"); BARE_MIN=$(stats min < "$TMP/bare_total")
IC_READY_MED=$(stats median < "$TMP/ic_ready"); IC_TEAR_MED=$(stats median < "$TMP/ic_teardown")
COLD_RATIO=$(ratio "$IC_MED" "$BARE_MED")
[ "$COLD_RATIO" = null ] && broke "cold start: no successful run of one side"

# ---- 2. round trips --------------------------------------------------------------

say "round trips: $EXECS x exec true, $EXECS x ping (bench_rtt)"
rtt_run() {
  "$BENCH_BIN/bench_rtt" --runs "$EXECS" --pings "$EXECS" --mib 0 \
    --boot-timeout "$BOOT_TIMEOUT" > "$TMP/rtt.json" 2> "$TMP/rtt.err"
}
rtt_error() { grep '^bench_rtt: .*:' "$TMP/rtt.err" | grep -v 'ready after' | tail -1; }
if ! rtt_run; then
  say "bench_rtt failed ($(rtt_error)); once more"
  rtt_run || broke "bench_rtt: $(rtt_error)"
fi
RTT_JSON=$(head -1 "$TMP/rtt.json"); [ -n "$RTT_JSON" ] || RTT_JSON=null
# "key":{...} of bench_rtt's one-line JSON
rtt_part() { grep -o "\"$1\":{[^}]*}" <<< "$RTT_JSON" | sed 's/^[^{]*//'; }
rtt_val() { rtt_part "$1" | json_num "$2"; }
# round DIGITS: rounds the number on stdin, passes anything else through
round() { awk -v d="$1" '{ if ($1 ~ /^-?[0-9.e+]+$/) printf "%.*f\n", d, $1; else print }'; }

# ---- 3. stream throughput ---------------------------------------------------------
# Three ways through the same QEMU virtio-serial transport, alternating
# round by round so that load from elsewhere hits them alike; medians are
# compared. Each boots its own VM; only the stream itself is timed.

lib_stream() {
  "$BENCH_BIN/bench_rtt" --runs 0 --pings 0 --mib "$MIB" --boot-timeout "$BOOT_TIMEOUT" \
    > "$TMP/lib.json" 2> "$TMP/lib.err" || return 1
  grep -o '"stream":{[^}]*}' "$TMP/lib.json" | sed 's/^[^{]*//' | json_num mib_s
}
# Printable bytes: --json captures the output into its report. A file, so
# that no generator competes with QEMU for the CPUs while the CLI streams
# (yes | head, for one, takes a sixth of a core here). (yes ends on
# SIGPIPE: the group's `true` keeps pipefail quiet about it.)
{ yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c "${MIB}M"; true; } > "$TMP/stream.in" ||
  die "cannot write the $MIB MiB input file in $TMP"
cli_stream() {
  "$IRONCLAW" exec --json --boot-timeout "$BOOT_TIMEOUT" -- cat < "$TMP/stream.in" > "$TMP/cli.json" 2> "$TMP/cli.err" || return 1
  local ms; ms=$(grep -o '"command": *[0-9.]*' "$TMP/cli.json" | tail -1 | sed 's/.*: *//')
  awk -v m="$MIB" -v ms="$ms" 'BEGIN { if (ms > 0) printf "%.2f\n", m / (ms / 1000); else exit 1 }'
}
mapfile -t ECHO_CMD < <(qemu_base "$TMP/echo-console.log" "$TMP/echo.cpio")
mapfile -t ECHOCAT_CMD < <(qemu_base "$TMP/echocat-console.log" "$TMP/echocat.cpio" bench.via=cat)
# echo_stream NAME QEMU-ARGV...: bench_echo through that VM's port
echo_stream() {
  local name=$1; shift
  timeout $((BOOT_TIMEOUT + 120)) "$BENCH_BIN/bench_echo" "$TMP/$name.sock" "$MIB" "$BOOT_TIMEOUT" -- "$@" \
    -device virtio-serial-device -chardev "socket,id=ironclaw,path=$TMP/$name.sock" \
    -device virtserialport,chardev=ironclaw,name=ironclaw > "$TMP/$name.json" 2> "$TMP/$name.err" || return 1
  json_num mib_s < "$TMP/$name.json"
}
raw_stream() { echo_stream raw "${ECHO_CMD[@]}"; }
rawcat_stream() { echo_stream rawcat "${ECHOCAT_CMD[@]}"; }
: > "$TMP/lib.mibs"; : > "$TMP/cli.mibs"; : > "$TMP/raw.mibs"; : > "$TMP/rawcat.mibs"
for round in $(seq "$STREAM_ROUNDS"); do
  say "throughput round $round of $STREAM_ROUNDS: $MIB MiB each through the library, 'ironclaw exec -- cat', the raw port, and the raw port through cat"
  for way in lib cli raw rawcat; do
    v=$(${way}_stream) || v=$(${way}_stream) || { say "$way stream failed twice: $(tail -1 "$TMP/$way.err" 2>/dev/null)"; continue; }
    echo "$v" >> "$TMP/$way.mibs"
  done
done
LIB_MIBS=$(stats median < "$TMP/lib.mibs" | round 2)
CLI_MIBS=$(stats median < "$TMP/cli.mibs" | round 2)
RAW_MIBS=$(stats median < "$TMP/raw.mibs" | round 2)
RAWCAT_MIBS=$(stats median < "$TMP/rawcat.mibs" | round 2)
for way in LIB CLI RAW RAWCAT; do
  v=${way}_MIBS; [ "${!v}" = null ] && broke "stream: no successful ${way,,} run"
done
LIB_RATIO=$(ratio "$LIB_MIBS" "$RAW_MIBS")
CLI_RATIO=$(ratio "$CLI_MIBS" "$RAW_MIBS")
LIB_CAT_RATIO=$(ratio "$LIB_MIBS" "$RAWCAT_MIBS")
CLI_CAT_RATIO=$(ratio "$CLI_MIBS" "$RAWCAT_MIBS")

# ---- 4. firewall -----------------------------------------------------------------

FW_VMS=${BENCH_FW_VMS:-1000}
FW_CONC=${BENCH_FW_CONCURRENT:-100}
FW_JSON=null
if [ "$(id -u)" != 0 ]; then
  say "firewall: skipped (bench_fw adds firewall rules: needs root)"
else
  say "firewall: one VM's rules, $FW_VMS VMs' worth, timer lateness under $FW_CONC concurrent adds (bench_fw)"
  "$BENCH_BIN/bench_fw" --vms "$FW_VMS" --concurrent "$FW_CONC" > "$TMP/fw.json" 2> "$TMP/fw.err" ||
    broke "bench_fw: $(grep -v 'rules added' "$TMP/fw.err" | tail -1)"
  FW_JSON=$(head -1 "$TMP/fw.json"); [ -n "$FW_JSON" ] || FW_JSON=null
fi
# fw_val BACKEND PART KEY: a number from bench_fw's one-line JSON
fw_val() {
  local rest=${FW_JSON#*\"$1\": \{}
  [ "$rest" = "$FW_JSON" ] && return
  grep -o "\"$2\": {[^}]*}" <<< "$rest" | head -1 | json_num "$3"
}

# ---- report -------------------------------------------------------------------

pct() { awk -v r="$1" 'BEGIN { if (r == "null") print "n/a"; else printf "%.0f %%", r * 100 }'; }
fmt() { [ "$1" = null ] || [ -z "$1" ] && echo "n/a" || echo "$1"; }
{
  echo
  echo "ironclaw benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ), accel $ACCEL, $(nproc) CPUs, QEMU $("$QEMU" --version | awk 'NR == 1 { print $4 }'))"
  echo
  printf '%-44s %12s %12s %10s\n' "cold start (ms, $RUNS runs each)" "ironclaw" "bare qemu" "ratio"
  printf '%-44s %12s %12s %10s\n' "  median end to end" "$(fmt "$IC_MED")" "$(fmt "$BARE_MED")" "$(fmt "$COLD_RATIO")"
  printf '%-44s %12s %12s %10s\n' "  min end to end" "$(fmt "$IC_MIN")" "$(fmt "$BARE_MIN")" "$(fmt "$(ratio "$IC_MIN" "$BARE_MIN")")"
  printf '%-44s %12s\n' "  ironclaw median guest_ready" "$(fmt "$IC_READY_MED")"
  printf '%-44s %12s\n' "  ironclaw median teardown" "$(fmt "$IC_TEAR_MED")"
  printf '%-44s %12s %12s\n' "  failed runs" "$IC_FAILS" "$BARE_FAILS"
  echo "  (target: ratio <= 1.25)"
  echo
  printf '%-44s %9s %9s %9s %9s %5s %9s\n' "round trips in one VM (us)" "p50" "p90" "p99" "max" "n" "first"
  for k in exec_rtt_us exec_started_us ping_rtt_us; do
    case $k in
      exec_rtt_us) label="  exec true: request -> exit notification" ;;
      exec_started_us) label="  exec true: request -> started answer" ;;
      ping_rtt_us) label="  ping: request -> answer" ;;
    esac
    printf '%-44s %9s %9s %9s %9s %5s %9s\n' "$label" \
      "$(fmt "$(rtt_val $k p50 | round 0)")" "$(fmt "$(rtt_val $k p90 | round 0)")" \
      "$(fmt "$(rtt_val $k p99 | round 0)")" "$(fmt "$(rtt_val $k max | round 0)")" \
      "$(fmt "$(rtt_val $k n)")" "$(fmt "$(rtt_val $k first | round 0)")"
  done
  echo
  printf '%-52s %12s %12s %12s\n' "throughput host->guest->host, $MIB MiB (median of $STREAM_ROUNDS)" "MiB/s" "vs raw" "vs raw+cat"
  printf '%-52s %12s %12s %12s\n' "  ironclaw library, cat in a running VM" "$(fmt "$LIB_MIBS")" "$(pct "$LIB_RATIO")" "$(pct "$LIB_CAT_RATIO")"
  printf '%-52s %12s %12s %12s\n' "  ironclaw exec -- cat < file (timings_ms.command)" "$(fmt "$CLI_MIBS")" "$(pct "$CLI_RATIO")" "$(pct "$CLI_CAT_RATIO")"
  printf '%-52s %12s\n' "  raw virtio-serial echo, no ironclaw" "$(fmt "$RAW_MIBS")"
  printf '%-52s %12s\n' "  raw port -> pipe -> cat -> pipe -> port" "$(fmt "$RAWCAT_MIBS")"
  echo "  (target: ironclaw >= 80 % of raw; raw+cat: the same bytes through cat"
  echo "   with no ironclaw, so the last column is what ironclaw itself adds)"
  echo
  printf '%-52s %10s %10s\n' "firewall, rules only (ms unless said)" "nft" "iptables"
  fwrow() { printf '%-52s %10s %10s\n' "$1" "$(fmt "$(fw_val nft "$2" "$3" | round "$4")")" \
    "$(fmt "$(fw_val iptables "$2" "$3" | round "$4")")"; }
  fwrow "  one VM: add (one transaction + read-back), median" one_vm add_ms_median 1
  fwrow "  one VM: remove, median" one_vm remove_ms_median 1
  fwrow "  $FW_VMS VMs: add one after another, total" many add_total_ms 0
  fwrow "  $FW_VMS VMs: add, per VM over the last 10 %" many add_last10pct_per_vm_ms 1
  fwrow "  $FW_VMS VMs (+ the concurrent ones): remove all, total" many remove_all_ms 0
  fwrow "  $FW_CONC concurrent adds: wall time" lateness total_ms 0
  fwrow "  ... 1 ms loop timer lateness p50" lateness timer_late_p50_ms 3
  fwrow "  ... 1 ms loop timer lateness p99" lateness timer_late_p99_ms 3
  fwrow "  ... 1 ms loop timer lateness max" lateness timer_late_max_ms 3
  echo "  (target: p99 lateness < 5 ms)"
} | tee "$TMP/table.txt"

if [ -n "${BENCH_JSON:-}" ]; then
  cat > "$BENCH_JSON" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "accel": "$ACCEL",
  "cpus": $(nproc),
  "settings": {"runs": $RUNS, "execs": $EXECS, "mib": $MIB},
  "cold_start_ms": {
    "ironclaw": {"median": $IC_MED, "min": $IC_MIN, "guest_ready_median": $IC_READY_MED,
                 "teardown_median": $IC_TEAR_MED, "failed": $IC_FAILS,
                 "runs": [$(paste -sd, "$TMP/ic_total")]},
    "bare_qemu": {"median": $BARE_MED, "min": $BARE_MIN, "failed": $BARE_FAILS,
                  "runs": [$(paste -sd, "$TMP/bare_total")]},
    "ratio_median": $COLD_RATIO
  },
  "in_vm": $RTT_JSON,
  "throughput_mib_s": {
    "ironclaw_library": ${LIB_MIBS:-null},
    "ironclaw_cli": $CLI_MIBS,
    "raw_echo": ${RAW_MIBS:-null},
    "raw_echo_through_cat": ${RAWCAT_MIBS:-null},
    "rounds": $STREAM_ROUNDS,
    "ratio_library_vs_raw": $LIB_RATIO,
    "ratio_cli_vs_raw": $CLI_RATIO,
    "ratio_library_vs_raw_through_cat": $LIB_CAT_RATIO,
    "ratio_cli_vs_raw_through_cat": $CLI_CAT_RATIO
  },
  "firewall": $FW_JSON
}
EOF
  say "results written to $BENCH_JSON"
fi
exit "$FAILED"
