/*
 * bench_rtt.c - round trips and stream throughput inside running VMs,
 * measured through libironclaw's public API (bench/run.sh drives it).
 *
 *   bench_rtt [--runs N] [--pings N] [--mib M] [--chunk BYTES] [--cmd PROGRAM]
 *             [--boot-timeout SECS]
 *
 * Phase 1, one sandbox (sandbox.h): `true` (or --cmd, e.g. /bin/true to
 * skip the PATH search) is exec'd N times in a row,
 * each timed from the request to its exit notification, after one warm-up
 * (the guest's first exec runs code TCG has not translated yet; its time
 * is reported apart as "first", as is the first ping's); then M MiB are
 * pushed through `cat` (stdin in, stdout back, every byte checked), timed
 * from the first byte written to the last byte read back. --chunk sets the
 * size of each stdin write (default and maximum: one 64 KiB DATA frame),
 * to see what smaller frames cost.
 * Phase 2, one bare VM with its RPC channel (vm.h + rpc.h, no sandbox):
 * N `ping` requests, each timed from the request to its answer. This is the
 * channel's own round trip, without process creation in the guest.
 *
 * Prints one JSON object on stdout; progress and errors go to stderr.
 * Exits 0 when every phase ran, 1 otherwise.
 */
#include "ironclaw/log.h"
#include "ironclaw/proto.h"
#include "ironclaw/rpc.h"
#include "ironclaw/sandbox.h"
#include "ironclaw/vm.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK IC_DATA_CHUNK
#define PING_TIMEOUT_MS 10000
#define POWEROFF_ANSWER_MS 2000
#define POWEROFF_GRACE_MS 5000
#define MAX_RUNS 100000

struct bench {
    uv_loop_t loop;
    unsigned runs, pings;
    unsigned mib;
    size_t chunk;                /* bytes per ic_exec_write_stdin */
    const char *cmd;             /* exec'd for the round trips */
    uint32_t ready_timeout_ms;   /* guest agent's HELLO, per VM */
    uint8_t pattern[CHUNK];      /* byte i of the stream is pattern[i % CHUNK] */
    bool failed;
    ic_err err;                  /* first failure */

    /* phase 1: sandbox */
    ic_sandbox *sb;
    double guest_ready_ms;
    uint64_t t_sent;
    uint64_t *exec_ns;           /* request -> exit notification */
    uint64_t *started_ns;        /* request -> "started" answer */
    unsigned execs_done;
    ic_exec *ex;
    uint64_t total, sent, got;
    uint64_t out_frames;         /* stdout DATA frames that carried bytes */
    bool eof_sent, bad_bytes;
    uint64_t t_first, t_last, t_exit;

    /* phase 2: bare VM + rpc */
    ic_vm *vm;
    ic_rpc *rpc;
    uv_timer_t vm_timer;         /* readiness deadline; closed before destroy */
    bool vm_stopping, vm_destroying;
    double vm_ready_ms;
    uint64_t t_vm0;
    uint64_t *ping_ns;
    unsigned pings_done;
};

static void fail(struct bench *b, const ic_err *err, const char *what)
{
    fprintf(stderr, "bench_rtt: %s: %s\n", what, err ? err->msg : "failed");
    if (!b->failed) {
        b->failed = true;
        if (err)
            b->err = *err;
    }
}

static double ms_since(uint64_t t0) { return (double)(uv_hrtime() - t0) / 1e6; }

static void ping_begin(struct bench *b);

/* ---- phase 1: exec round trips ------------------------------------------- */

static void on_sandbox_done(const struct ic_sandbox_timings *t, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    b->sb = NULL;
    if (err)
        fail(b, err, "sandbox teardown");
    if (!b->failed && b->pings > 0)
        ping_begin(b);
}

static void sandbox_end(struct bench *b, bool polite)
{
    if (!b->sb)
        return;
    if (polite)
        ic_sandbox_shutdown(b->sb, on_sandbox_done, b);
    else
        ic_sandbox_kill(b->sb, on_sandbox_done, b);
}

static void stream_begin(struct bench *b);
static void exec_next(struct bench *b);

static void rtt_started(ic_exec *ex, int pid, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    if (err) {
        fail(b, err, "exec");
        sandbox_end(b, false);
        return;
    }
    b->started_ns[b->execs_done] = uv_hrtime() - b->t_sent;
}

static void rtt_output(ic_exec *ex, int channel, const uint8_t *p, size_t n, void *ud) {}

static void rtt_exited(ic_exec *ex, const struct ic_exec_status *st, void *ud)
{
    struct bench *b = ud;
    b->exec_ns[b->execs_done++] = uv_hrtime() - b->t_sent;
    if (st->code != 0 || st->signal != 0) {
        ic_err e = {0};
        ic_err_set(&e, EIO, "`%s` ended with code %d, signal %d", b->cmd, st->code, st->signal);
        fail(b, &e, "exec");
        sandbox_end(b, false);
        return;
    }
    if (b->execs_done < b->runs + 1) /* + the warm-up */
        exec_next(b);
    else
        stream_begin(b);
}

static const struct ic_exec_events rtt_events = {
    .started = rtt_started,
    .output = rtt_output,
    .exited = rtt_exited,
};

static void exec_next(struct bench *b)
{
    const char *const argv[] = {b->cmd, NULL};
    struct ic_exec_spec spec = {.argv = argv};
    ic_exec *ex;
    ic_err err = {0};
    b->t_sent = uv_hrtime();
    if (ic_sandbox_exec(b->sb, &spec, &rtt_events, b, &ex, &err) < 0) {
        fail(b, &err, "exec");
        sandbox_end(b, false);
    }
}

/* ---- phase 1: stream through cat ----------------------------------------- */

static bool bytes_ok(const struct bench *b, const uint8_t *p, size_t n, uint64_t pos)
{
    while (n > 0) {
        size_t off = (size_t)(pos % CHUNK), len = CHUNK - off;
        if (len > n)
            len = n;
        if (memcmp(p, b->pattern + off, len) != 0)
            return false;
        p += len, n -= len, pos += len;
    }
    return true;
}

/* Writes while the channel's queue is below its high water; the sandbox's
 * drain callback calls again. */
static void pump(struct bench *b)
{
    ic_err err = {0};
    if (!b->ex || b->eof_sent)
        return;
    while (b->sent < b->total && ic_sandbox_queued(b->sb) < IC_SANDBOX_HIGH_WATER) {
        size_t off = (size_t)(b->sent % CHUNK), len = b->chunk;
        if (len > CHUNK - off)
            len = CHUNK - off;
        if (len > b->total - b->sent)
            len = (size_t)(b->total - b->sent);
        if (ic_exec_write_stdin(b->ex, b->pattern + off, len, &err) < 0) {
            fail(b, &err, "writing cat's stdin");
            sandbox_end(b, false);
            return;
        }
        b->sent += len;
    }
    if (b->sent == b->total) {
        b->eof_sent = true;
        if (ic_exec_write_stdin(b->ex, NULL, 0, &err) < 0) {
            fail(b, &err, "ending cat's stdin");
            sandbox_end(b, false);
        }
    }
}

static void on_drain(ic_sandbox *sb, void *ud)
{
    pump(ud);
}

static void cat_started(ic_exec *ex, int pid, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    if (err) {
        b->ex = NULL;
        fail(b, err, "exec cat");
        sandbox_end(b, false);
        return;
    }
    b->t_first = uv_hrtime();
    pump(b);
}

static void cat_output(ic_exec *ex, int channel, const uint8_t *p, size_t n, void *ud)
{
    struct bench *b = ud;
    if (channel != 1 || n == 0)
        return;
    if (!b->bad_bytes && !bytes_ok(b, p, n, b->got))
        b->bad_bytes = true;
    b->got += n;
    b->out_frames++;
    if (b->got == b->total)
        b->t_last = uv_hrtime();
}

static void cat_exited(ic_exec *ex, const struct ic_exec_status *st, void *ud)
{
    struct bench *b = ud;
    b->ex = NULL;
    b->t_exit = uv_hrtime();
    ic_err e = {0};
    if (st->code != 0 || st->signal != 0)
        ic_err_set(&e, EIO, "cat ended with code %d, signal %d", st->code, st->signal);
    else if (b->got != b->total)
        ic_err_set(&e, EIO, "cat returned %llu of %llu bytes", (unsigned long long)b->got,
                   (unsigned long long)b->total);
    else if (b->bad_bytes)
        ic_err_set(&e, EILSEQ, "cat returned bytes that differ from those sent");
    if (e.code)
        fail(b, &e, "stream");
    sandbox_end(b, true);
}

static const struct ic_exec_events cat_events = {
    .started = cat_started,
    .output = cat_output,
    .exited = cat_exited,
};

static void stream_begin(struct bench *b)
{
    if (b->mib == 0) {
        sandbox_end(b, true);
        return;
    }
    static const char *const argv[] = {"cat", NULL};
    struct ic_exec_spec spec = {.argv = argv, .stdin_stream = true};
    ic_err err = {0};
    b->total = (uint64_t)b->mib << 20;
    ic_sandbox_on_drain(b->sb, on_drain, b);
    if (ic_sandbox_exec(b->sb, &spec, &cat_events, b, &b->ex, &err) < 0) {
        b->ex = NULL;
        fail(b, &err, "exec cat");
        sandbox_end(b, false);
    }
}

/* ---- phase 1: the sandbox itself ----------------------------------------- */

static void on_ready(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    if (err) {
        fail(b, err, "sandbox start");
        sandbox_end(b, false);
        return;
    }
    b->guest_ready_ms = ic_sandbox_timings(sb)->guest_ready;
    fprintf(stderr, "bench_rtt: sandbox ready after %.0f ms; %u x exec %s\n",
            b->guest_ready_ms, b->runs, b->cmd);
    if (b->runs > 0)
        exec_next(b);
    else
        stream_begin(b);
}

static void on_lost(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    b->ex = NULL; /* freed by the sandbox */
    fail(b, err, "the VM was lost");
    sandbox_end(b, false);
}

static void sandbox_begin(struct bench *b)
{
    struct ic_vm_config cfg = {
        .name = "bench-rtt",
        .vmm = "auto",
        .cpus = IC_VM_DEFAULT_CPUS,
        .mem_mib = IC_VM_DEFAULT_MEM_MIB,
    };
    ic_err err = {0};
    if (ic_sandbox_start(&b->loop, &cfg, b->ready_timeout_ms, on_ready, on_lost, b, &b->sb, &err) < 0) {
        b->sb = NULL;
        fail(b, &err, "sandbox start");
    }
}

/* ---- phase 2: ping over a bare VM's channel ------------------------------ */

static void on_vm_destroyed(const ic_err *err, void *ud)
{
    struct bench *b = ud;
    b->vm = NULL;
    if (err)
        fail(b, err, "VM teardown");
}

static void on_vm_timer_closed(uv_handle_t *h)
{
    struct bench *b = h->data;
    ic_vm_destroy(b->vm, on_vm_destroyed, b);
}

/* Runs from the VM's callbacks too, so the destroy itself is deferred to
 * the timer's close callback. */
static void vm_end(struct bench *b)
{
    if (b->vm_destroying)
        return;
    b->vm_destroying = true;
    if (b->rpc) {
        ic_rpc_close(b->rpc);
        b->rpc = NULL;
    }
    uv_close((uv_handle_t *)&b->vm_timer, on_vm_timer_closed);
}

static void on_poweroff_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud) {}

/* Polite stop: poweroff request, then the VM layer's grace-then-kill. */
static void vm_stop(struct bench *b, bool polite)
{
    if (b->vm_stopping)
        return;
    b->vm_stopping = true;
    uv_timer_stop(&b->vm_timer);
    ic_err err = {0};
    if (polite && b->rpc &&
        ic_rpc_call(b->rpc, IC_M_POWEROFF, NULL, POWEROFF_ANSWER_MS, on_poweroff_answer, b, NULL,
                    &err) < 0)
        polite = false;
    ic_vm_stop(b->vm, polite ? POWEROFF_GRACE_MS : 0);
    if (!ic_vm_running(b->vm))
        vm_end(b);
}

static void ping_next(struct bench *b);

static void on_pong(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    if (err) {
        if (!b->vm_stopping) {
            fail(b, err, "ping");
            vm_stop(b, false);
        }
        return;
    }
    b->ping_ns[b->pings_done++] = uv_hrtime() - b->t_sent;
    if (b->pings_done < b->pings + 1) /* + the warm-up */
        ping_next(b);
    else
        vm_stop(b, true);
}

static void ping_next(struct bench *b)
{
    ic_err err = {0};
    b->t_sent = uv_hrtime();
    if (ic_rpc_call(b->rpc, IC_M_PING, NULL, PING_TIMEOUT_MS, on_pong, b, NULL, &err) < 0) {
        fail(b, &err, "ping");
        vm_stop(b, false);
    }
}

static void on_rpc_ready(ic_rpc *rpc, const char *agent, void *ud)
{
    struct bench *b = ud;
    b->vm_ready_ms = ms_since(b->t_vm0);
    uv_timer_stop(&b->vm_timer);
    fprintf(stderr, "bench_rtt: bare VM ready after %.0f ms; %u x ping\n", b->vm_ready_ms,
            b->pings);
    ping_next(b);
}

static void on_rpc_closed(ic_rpc *rpc, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    b->rpc = NULL; /* the rpc closes itself after this call */
    if (!b->vm_stopping) {
        fail(b, err, "the channel closed");
        vm_stop(b, false);
    }
}

static const struct ic_rpc_events ping_rpc_events = {
    .ready = on_rpc_ready,
    .closed = on_rpc_closed,
};

static void on_vm_event(ic_vm *vm, enum ic_vm_event ev, const ic_err *err, void *ud)
{
    struct bench *b = ud;
    ic_err e = {0};
    switch (ev) {
    case IC_VM_EV_CHANNEL:
        if (ic_rpc_open(ic_vm_take_channel(vm), &ping_rpc_events, b, &b->rpc, &e) < 0) {
            b->rpc = NULL;
            fail(b, &e, "opening the channel");
            vm_stop(b, false);
        }
        break;
    case IC_VM_EV_FAILED:
        /* vm.c also reports a VM whose channel was taken and which then
         * powered off as "did not start": expected while stopping. */
        if (!b->vm_stopping)
            fail(b, err, "bare VM start");
        vm_stop(b, false);
        vm_end(b);
        break;
    case IC_VM_EV_EXITED:
        if (err && !b->vm_stopping)
            fail(b, err, "the bare VM exited");
        vm_end(b);
        break;
    }
}

static void on_vm_timeout(uv_timer_t *t)
{
    struct bench *b = t->data;
    ic_err err = {0};
    ic_err_set(&err, ETIMEDOUT, "the guest agent did not answer within %u ms",
               b->ready_timeout_ms);
    fail(b, &err, "bare VM start");
    vm_stop(b, false);
}

static void ping_begin(struct bench *b)
{
    struct ic_vm_config cfg = {
        .name = "bench-ping",
        .vmm = "auto",
        .cpus = IC_VM_DEFAULT_CPUS,
        .mem_mib = IC_VM_DEFAULT_MEM_MIB,
    };
    ic_err err = {0};
    uv_timer_init(&b->loop, &b->vm_timer);
    b->vm_timer.data = b;
    b->t_vm0 = uv_hrtime();
    if (ic_vm_create(&b->loop, &cfg, on_vm_event, b, &b->vm, &err) < 0) {
        b->vm = NULL;
        fail(b, &err, "bare VM create");
        uv_close((uv_handle_t *)&b->vm_timer, NULL);
        return;
    }
    if (ic_vm_start(b->vm, &err) < 0) {
        fail(b, &err, "bare VM start");
        b->vm_stopping = true;
        vm_end(b);
        return;
    }
    uv_timer_start(&b->vm_timer, on_vm_timeout, b->ready_timeout_ms, 0);
}

/* ---- report --------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n), in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)v[rank - 1] / 1e3;
}

/* v[0] is the warm-up: reported as "first", left out of the rest. */
static json_t *latency_json(uint64_t *v, size_t n)
{
    if (n < 2)
        return json_null();
    double first = (double)v[0] / 1e3;
    v++, n--;
    qsort(v, n, sizeof(*v), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i] / 1e3;
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)n, "min",
                     (double)v[0] / 1e3, "p50", pct_us(v, n, 50), "p90", pct_us(v, n, 90), "p99",
                     pct_us(v, n, 99), "max", (double)v[n - 1] / 1e3, "mean", sum / (double)n,
                     "first", first);
}

static void report(struct bench *b)
{
    json_t *stream = json_null();
    if (b->total && b->t_last) {
        double secs = (double)(b->t_last - b->t_first) / 1e9;
        stream = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f}", "bytes", (json_int_t)b->got, "chunk",
                           (json_int_t)b->chunk, "seconds", secs, "mib_s",
                           (double)b->got / (1024.0 * 1024.0) / secs, "exit_ms",
                           (double)(b->t_exit - b->t_first) / 1e6, "out_frame_avg",
                           b->out_frames ? (double)b->got / (double)b->out_frames : 0.0);
    }
    json_t *r = json_pack("{s:b, s:s?, s:s, s:f, s:f, s:o, s:o, s:o, s:o}", "ok", !b->failed,
                          "error", b->failed ? b->err.msg : NULL, "exec_cmd", b->cmd,
                          "sandbox_ready_ms", b->guest_ready_ms,
                          "bare_vm_ready_ms", b->vm_ready_ms, "exec_rtt_us",
                          latency_json(b->exec_ns, b->execs_done), "exec_started_us",
                          latency_json(b->started_ns, b->execs_done), "ping_rtt_us",
                          latency_json(b->ping_ns, b->pings_done), "stream", stream);
    if (r) {
        json_dumpf(r, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(r);
    }
}

/* ---- main ----------------------------------------------------------------- */

static int parse_args(struct bench *b, int argc, char **argv)
{
    static const struct option opts[] = {
        {"runs", required_argument, NULL, 'r'},
        {"pings", required_argument, NULL, 'p'},
        {"mib", required_argument, NULL, 'm'},
        {"boot-timeout", required_argument, NULL, 't'},
        {"chunk", required_argument, NULL, 'c'},
        {"cmd", required_argument, NULL, 'x'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "r:p:m:t:c:x:", opts, NULL)) != -1) {
        if (c == 'x' && optarg && optarg[0]) {
            b->cmd = optarg;
            continue;
        }
        char *end;
        unsigned long v = strtoul(optarg ? optarg : "", &end, 10);
        if (c == '?' || !optarg || *end || end == optarg)
            goto usage;
        if (c == 'c' && v >= 1 && v <= CHUNK) {
            b->chunk = v;
            continue;
        }
        if (c == 'c' || v > MAX_RUNS)
            goto usage;
        if (c == 'r')
            b->runs = (unsigned)v;
        else if (c == 'p')
            b->pings = (unsigned)v;
        else if (c == 't' && v > 0 && v <= 3600)
            b->ready_timeout_ms = (uint32_t)v * 1000;
        else if (c == 't')
            goto usage;
        else
            b->mib = (unsigned)v;
    }
    if (optind == argc)
        return 0;
usage:
    fprintf(stderr, "usage: bench_rtt [--runs N] [--pings N] [--mib M] [--chunk BYTES] "
                    "[--cmd PROGRAM] [--boot-timeout SECS]\n");
    return -1;
}

int main(int argc, char **argv)
{
    /* The library re-executes this program as its VMM launch trampoline. */
    ic_vm_launch_main(argc, argv);

    struct bench *b = calloc(1, sizeof(*b));
    if (!b)
        return 1;
    b->runs = 50;
    b->pings = 50;
    b->mib = 128;
    b->ready_timeout_ms = 60000;
    b->chunk = CHUNK;
    b->cmd = "true";
    if (parse_args(b, argc, argv) < 0) {
        free(b);
        return 2;
    }
    b->exec_ns = calloc(b->runs + 1, sizeof(uint64_t)); /* [0]: warm-up */
    b->started_ns = calloc(b->runs + 1, sizeof(uint64_t));
    b->ping_ns = calloc(b->pings + 1, sizeof(uint64_t));
    for (size_t i = 0; i < CHUNK; i++)
        b->pattern[i] = (uint8_t)(i * 7 + i / 251);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    if (b->exec_ns && b->started_ns && b->ping_ns && uv_loop_init(&b->loop) == 0) {
        sandbox_begin(b);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        report(b);
        rc = b->failed ? 1 : 0;
    }
    free(b->exec_ns);
    free(b->started_ns);
    free(b->ping_ns);
    free(b);
    return rc;
}
