/*
 * cmd_exec.c - `ironclaw exec`: boot a fresh microVM, copy files in, run
 * one command with the caller's stdin/stdout/stderr, copy files out,
 * destroy the VM, and exit with the command's status.
 *
 * The job is a chain of steps on one libuv loop:
 *   start sandbox -> put files -> exec (stdin pumped in, output pumped out)
 *   -> get files -> shutdown -> flush output -> report.
 * Any failure jumps to shutdown with the exit code that names it.
 */
#include "cli/cli.h"

#include "ironclaw/audit.h"
#include "ironclaw/buf.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/id.h"
#include "ironclaw/log.h"
#include "ironclaw/net.h"
#include "ironclaw/sandbox.h"
#include "ironclaw/stream.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_XFERS 64
#define MAX_ENV 4096
#define CAPTURE_MAX (16u << 20)   /* --json keeps this much of each output */
#define TIMEOUT_SLACK_MS 10000    /* host backstop after the guest's own timeout */

struct xfer {
    char *local;
    char *guest;
    uint64_t bytes;
};

struct capture {
    ic_buf buf;
    bool truncated;
};

struct job {
    uv_loop_t loop;
    struct ic_vm_config cfg;
    struct ic_net_spec net;
    json_t *net_report;           /* --json "network", captured while the VM lives */
    uint32_t boot_timeout_ms;
    uint32_t timeout_ms;
    size_t audit_ring;
    bool json;
    bool forward_stdin;
    const char *cwd;
    char **argv;
    const char *env[MAX_ENV + 1];
    size_t n_env;
    struct xfer puts[MAX_XFERS], gets[MAX_XFERS];
    size_t n_puts, n_gets, next_xfer;

    ic_sandbox *sb;
    ic_exec *ex;
    ic_source *stdin_src;
    ic_sink *out[3];              /* [1] stdout, [2] stderr when streaming */
    struct capture cap[3];        /* --json */
    int sinks_open;
    uv_signal_t sigs[3];
    uv_timer_t backstop;
    int signals_seen;

    bool ran;                     /* the command ran to its end */
    struct ic_exec_status status;
    uint64_t exec_start_ns, exec_end_ns;
    struct ic_sandbox_timings timings;
    ic_audit *audit;              /* the VMM's blocked and logged system calls */
    int exit_code;                /* ironclaw's own failure, 0 if none */
    ic_err err;
    bool finishing;
};

static void finish(struct job *j, int code, const ic_err *err);
static void run_command(struct job *j);
static void next_get(struct job *j);

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw exec [OPTIONS] -- CMD [ARG...]\n"
            "\n"
            "Boots a fresh microVM, runs CMD inside with this process's stdin, streams its\n"
            "stdout and stderr back as they come, destroys the VM, and exits with CMD's\n"
            "status (128+N when CMD was killed by signal N).\n"
            "\n"
            "Options:\n"
            "  -c, --cpus N            vCPUs (default %d)\n"
            "  -m, --mem MIB           memory in MiB (default %d)\n"
            "  -t, --timeout SECONDS   kill CMD (and the VM) after this long\n"
            "  -e, --env K=V           set an environment variable (repeatable)\n"
            "  -w, --workdir DIR       working directory in the guest (default /)\n"
            "      --put LOCAL:GUEST   copy a file into the VM before CMD (repeatable)\n"
            "      --get GUEST:LOCAL   copy a file out of the VM after CMD (repeatable)\n"
            "  -n, --no-stdin          give CMD /dev/null as stdin\n"
            "      --name NAME         label for ps: 1-255 of [A-Za-z0-9._-], not starting\n"
            "                          with '.' or '-'; never used in a path\n"
            "      --vmm DRIVER        auto (default), qemu or firecracker\n"
            "      --drive PATH        attach a disk image read-only as the guest's /dev/vda\n"
            "      --drive-copy PATH   attach a private writable copy of it instead\n"
            "                          (firecracker only, for now)\n"
            "      --firecracker-filter FILE\n"
            "                          a custom seccomp filter for Firecracker in seccompiler's\n"
            "                          JSON format, compiled with the matching seccompiler-bin\n"
            "      --no-jailer         run Firecracker without its jailer (weaker isolation)\n"
            "      --image NAME        guest image (default: default)\n"
            "      --boot-timeout SECS how long to wait for the guest agent (default 60)\n"
            "      --net none|allow=HOST[:PORT][/tcp|/udp],...\n"
            "                          none (default): no network device at all; allow=:\n"
            "                          egress to these IPv4 hosts/networks only, through a\n"
            "                          per-VM firewall (see ironclaw(1), NETWORK)\n"
            "      --firewall nft|iptables|auto\n"
            "                          the firewall backend for --net allow (default auto)\n"
            "      --json              print a JSON report (output captured into it)\n"
            "      --seccomp POLICY    the VMM's seccomp policy: strict, default (default),\n"
            "                          permissive, learn, or a JSON policy file\n"
            "      --audit-ring N      keep the last N blocked/logged system calls (10000)\n"
            "      --max-violations N  stop the VM after N blocked system calls (0: never)\n"
            "      --no-jail           WEAKER: run the VMM without its jail (namespaces,\n"
            "                          minimal root, unprivileged uid, cgroups)\n"
            "      --jail-uids FIRST:COUNT  the range the jailed VMM's uid comes from\n"
            "  -h, --help              this help\n"
            "\n"
            "Exit status: CMD's own, or one of ironclaw's (see ironclaw(1)):\n"
            "  64 usage, 65 setup (no image...), 66 the VM could not boot, 67 the guest\n"
            "  agent never answered, 68 --timeout expired, 69 the VM died during CMD,\n"
            "  70 a --put/--get failed, 71 internal error, 72 the VMM was stopped by its\n"
            "  seccomp policy; 127 when CMD could not be started in the guest (not\n"
            "  found, not executable, bad --workdir).\n",
            IC_VM_DEFAULT_CPUS, IC_VM_DEFAULT_MEM_MIB);
}

/* ---- option parsing -------------------------------------------------- */

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, uint32_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 86400.0 * 7)
        return -1;
    *ms = (uint32_t)(v * 1000.0 + 0.5);
    return 0;
}

static int parse_xfer(const char *arg, struct xfer *x)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg || !colon[1])
        return -1;
    x->local = strndup(arg, (size_t)(colon - arg));
    x->guest = strdup(colon + 1);
    return x->local && x->guest ? 0 : -1;
}

enum { OPT_PUT = 256, OPT_GET, OPT_NAME, OPT_VMM, OPT_IMAGE, OPT_BOOT_TIMEOUT, OPT_JSON,
       OPT_DRIVE, OPT_DRIVE_COPY, OPT_FC_FILTER, OPT_NO_JAILER,
       OPT_SECCOMP, OPT_AUDIT_RING, OPT_MAX_VIOLATIONS, OPT_NO_JAIL, OPT_JAIL_UIDS,
       OPT_NET, OPT_FIREWALL };

static int parse_uid_range(const char *s, uint32_t *base, uint32_t *count)
{
    char *end;
    errno = 0;
    unsigned long b = strtoul(s, &end, 10);
    if (errno || end == s || *end != ':' || s[0] == '-' || b == 0 || b > 0xfffffff0ul)
        return -1;
    const char *c = end + 1;
    unsigned long n = strtoul(c, &end, 10);
    if (errno || end == c || *end || c[0] == '-' || n == 0 || b + n > 0xfffffffeul)
        return -1;
    *base = (uint32_t)b;
    *count = (uint32_t)n;
    return 0;
}

static int parse_args(struct job *j, int argc, char **argv)
{
    static const struct option opts[] = {
        {"cpus", required_argument, NULL, 'c'},
        {"mem", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"no-stdin", no_argument, NULL, 'n'},
        {"put", required_argument, NULL, OPT_PUT},
        {"get", required_argument, NULL, OPT_GET},
        {"name", required_argument, NULL, OPT_NAME},
        {"vmm", required_argument, NULL, OPT_VMM},
        {"image", required_argument, NULL, OPT_IMAGE},
        {"boot-timeout", required_argument, NULL, OPT_BOOT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"drive", required_argument, NULL, OPT_DRIVE},
        {"drive-copy", required_argument, NULL, OPT_DRIVE_COPY},
        {"firecracker-filter", required_argument, NULL, OPT_FC_FILTER},
        {"no-jailer", no_argument, NULL, OPT_NO_JAILER},
        {"seccomp", required_argument, NULL, OPT_SECCOMP},
        {"audit-ring", required_argument, NULL, OPT_AUDIT_RING},
        {"max-violations", required_argument, NULL, OPT_MAX_VIOLATIONS},
        {"no-jail", no_argument, NULL, OPT_NO_JAIL},
        {"jail-uids", required_argument, NULL, OPT_JAIL_UIDS},
        {"net", required_argument, NULL, OPT_NET},
        {"firewall", required_argument, NULL, OPT_FIREWALL},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    unsigned long v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+c:m:t:e:w:nh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (parse_uint(optarg, 32, &v) < 0 || v < 1)
                return ic_cli_error("--cpus wants a number from 1 to 32"), -1;
            j->cfg.cpus = (unsigned)v;
            break;
        case 'm':
            if (parse_uint(optarg, 65536, &v) < 0 || v < 64)
                return ic_cli_error("--mem wants MiB from 64 to 65536"), -1;
            j->cfg.mem_mib = (unsigned)v;
            break;
        case 't':
            if (parse_seconds(optarg, &j->timeout_ms) < 0)
                return ic_cli_error("--timeout wants a positive number of seconds"), -1;
            break;
        case 'e':
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return ic_cli_error("--env wants KEY=VALUE, got '%s'", optarg), -1;
            if (j->n_env >= MAX_ENV)
                return ic_cli_error("too many --env options"), -1;
            j->env[j->n_env++] = optarg;
            break;
        case 'w':
            if (optarg[0] != '/')
                return ic_cli_error("--workdir must be an absolute path"), -1;
            j->cwd = optarg;
            break;
        case 'n':
            j->forward_stdin = false;
            break;
        case OPT_PUT:
        case OPT_GET: {
            size_t *n = c == OPT_PUT ? &j->n_puts : &j->n_gets;
            struct xfer *x = c == OPT_PUT ? &j->puts[*n] : &j->gets[*n];
            if (*n >= MAX_XFERS)
                return ic_cli_error("too many --put/--get options"), -1;
            if (parse_xfer(optarg, x) < 0)
                return ic_cli_error("--%s wants %s, got '%s'", c == OPT_PUT ? "put" : "get",
                                    c == OPT_PUT ? "LOCAL:GUEST" : "GUEST:LOCAL", optarg), -1;
            if (c == OPT_GET) { /* stored as local=first field: swap */
                char *t = x->local;
                x->local = x->guest;
                x->guest = t;
            }
            if (x->guest[0] != '/')
                return ic_cli_error("guest paths must be absolute: '%s'", x->guest), -1;
            (*n)++;
            break;
        }
        case OPT_NAME:
        case OPT_IMAGE: {
            ic_err err = {0};
            if (ic_name_validate(optarg, &err) < 0)
                return ic_cli_error("--%s: %s", c == OPT_NAME ? "name" : "image", err.msg), -1;
            if (c == OPT_NAME)
                j->cfg.name = optarg;
            else
                j->cfg.image = optarg;
            break;
        }
        case OPT_VMM:
            if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "qemu") != 0 &&
                strcmp(optarg, "firecracker") != 0)
                return ic_cli_error("--vmm wants auto, qemu or firecracker"), -1;
            j->cfg.vmm = optarg;
            break;
        case OPT_BOOT_TIMEOUT:
            if (parse_seconds(optarg, &j->boot_timeout_ms) < 0)
                return ic_cli_error("--boot-timeout wants a positive number of seconds"), -1;
            break;
        case OPT_JSON:
            j->json = true;
            break;
        case OPT_DRIVE:
        case OPT_DRIVE_COPY:
            if (j->cfg.drive)
                return ic_cli_error("only one --drive or --drive-copy"), -1;
            if (!optarg[0])
                return ic_cli_error("--%s wants a path", c == OPT_DRIVE ? "drive" : "drive-copy"), -1;
            j->cfg.drive = optarg;
            j->cfg.drive_copy = c == OPT_DRIVE_COPY;
            break;
        case OPT_FC_FILTER:
            if (!optarg[0])
                return ic_cli_error("--firecracker-filter wants a file"), -1;
            j->cfg.fc_filter = optarg;
            break;
        case OPT_NO_JAILER:
            j->cfg.no_jailer = true;
            break;
        case OPT_SECCOMP:
            j->cfg.seccomp = optarg;
            break;
        case OPT_AUDIT_RING:
            if (parse_uint(optarg, IC_AUDIT_RING_MAX, &v) < 0 || v < 1)
                return ic_cli_error("--audit-ring wants a number from 1 to %d", IC_AUDIT_RING_MAX), -1;
            j->audit_ring = v;
            break;
        case OPT_MAX_VIOLATIONS:
            if (parse_uint(optarg, 1ul << 40, &v) < 0)
                return ic_cli_error("--max-violations wants a number (0: no limit)"), -1;
            j->cfg.max_violations = v;
            break;
        case OPT_NO_JAIL:
            j->cfg.no_jail = true;
            break;
        case OPT_JAIL_UIDS:
            if (parse_uid_range(optarg, &j->cfg.jail_uid_base, &j->cfg.jail_uid_count) < 0)
                return ic_cli_error("--jail-uids wants FIRST:COUNT, both positive"), -1;
            break;
        case OPT_NET:
        case OPT_FIREWALL: {
            ic_err err = {0};
            if ((c == OPT_NET ? ic_net_spec_parse(optarg, &j->net, &err)
                              : ic_fw_backend_parse(optarg, &j->net.backend, &err)) < 0)
                return ic_cli_error("%s", err.msg), -1;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            return ic_cli_error("see 'ironclaw exec --help'"), -1;
        }
    }
    if (optind >= argc)
        return ic_cli_error("no command given: ironclaw exec [OPTIONS] -- CMD [ARG...]"), -1;
    j->argv = argv + optind;
    return 0;
}

/* ---- output ---------------------------------------------------------- */

static void on_sink_drain(ic_sink *sink, void *ud)
{
    struct job *j = ud;
    if (j->sb)
        ic_sandbox_pause_output(j->sb, false);
}

static void deliver_output(struct job *j, int chan, const uint8_t *p, size_t n)
{
    if (j->json) {
        struct capture *c = &j->cap[chan];
        size_t room = CAPTURE_MAX - ic_buf_size(&c->buf);
        if (n > room) {
            c->truncated = true;
            n = room;
        }
        ic_buf_append(&c->buf, p, n);
        return;
    }
    ic_err err = {0};
    if (ic_sink_write(j->out[chan], p, n, &err) < 0)
        return; /* reported when the sink closes */
    if (ic_sink_queued(j->out[chan]) > IC_SINK_HIGH_WATER)
        ic_sandbox_pause_output(j->sb, true);
}

/* ---- stdin ----------------------------------------------------------- */

static void on_sandbox_drain(ic_sandbox *sb, void *ud)
{
    struct job *j = ud;
    if (j->stdin_src)
        ic_source_pause(j->stdin_src, false);
}

static void on_stdin(ic_source *src, const void *p, size_t n, const ic_err *err, void *ud)
{
    struct job *j = ud;
    ic_err e = {0};
    if (err)
        ic_log_warn("stdin: %s; ending the command's input", err->msg);
    if (!j->ex)
        return;
    if (ic_exec_write_stdin(j->ex, p, err ? 0 : n, &e) < 0) {
        ic_log_debug("stdin: %s", e.msg);
        n = 0;
    }
    if (n == 0 || err) {
        ic_source_close(j->stdin_src);
        j->stdin_src = NULL;
        return;
    }
    if (ic_sandbox_queued(j->sb) > IC_SANDBOX_HIGH_WATER)
        ic_source_pause(j->stdin_src, true);
}

/* ---- the command ----------------------------------------------------- */

static void on_started(ic_exec *ex, int pid, const ic_err *err, void *ud)
{
    struct job *j = ud;
    if (err) {
        j->ex = NULL;
        ic_err e = *err;
        ic_err_wrap(&e, "cannot run '%s' in the VM", j->argv[0]);
        bool lost = err->code == ECANCELED || err->code == EPIPE;
        finish(j, lost ? IC_EXIT_GUEST_LOST : IC_EXIT_NOT_RUN, &e);
        return;
    }
    ic_log_debug("command started as guest pid %d", pid);
    if (!j->forward_stdin)
        return;
    ic_err e = {0};
    if (ic_source_open(&j->loop, STDIN_FILENO, false, on_stdin, j, &j->stdin_src, &e) < 0) {
        ic_log_warn("stdin: %s; the command gets no input", e.msg);
        ic_exec_write_stdin(ex, NULL, 0, &e);
    }
}

static void on_output(ic_exec *ex, int chan, const uint8_t *p, size_t n, void *ud)
{
    struct job *j = ud;
    if (n > 0)
        deliver_output(j, chan, p, n);
}

static void on_exited(ic_exec *ex, const struct ic_exec_status *st, void *ud)
{
    struct job *j = ud;
    j->ex = NULL;
    j->ran = true;
    j->status = *st;
    j->exec_end_ns = uv_hrtime();
    uv_timer_stop(&j->backstop);
    if (j->stdin_src) {
        ic_source_close(j->stdin_src);
        j->stdin_src = NULL;
    }
    if (st->timed_out) {
        ic_err e = {0};
        ic_err_set(&e, ETIMEDOUT, "'%s' timed out after %.1f s; it and its VM were killed",
                   j->argv[0], j->timeout_ms / 1000.0);
        finish(j, IC_EXIT_TIMEOUT, &e);
        return;
    }
    j->next_xfer = 0;
    next_get(j);
}

static const struct ic_exec_events exec_events = {
    .started = on_started,
    .output = on_output,
    .exited = on_exited,
};

static void on_backstop(uv_timer_t *t)
{
    struct job *j = t->data;
    ic_err e = {0};
    ic_err_set(&e, ETIMEDOUT, "'%s' did not end within %.1f s (the guest did not enforce the "
               "timeout); the VM was killed", j->argv[0], j->timeout_ms / 1000.0);
    finish(j, IC_EXIT_TIMEOUT, &e);
}

static void run_command(struct job *j)
{
    struct ic_exec_spec spec = {
        .argv = (const char *const *)j->argv,
        .env = j->env,
        .cwd = j->cwd,
        .stdin_stream = j->forward_stdin,
        .timeout_ms = j->timeout_ms,
    };
    ic_err err = {0};
    j->exec_start_ns = uv_hrtime();
    if (ic_sandbox_exec(j->sb, &spec, &exec_events, j, &j->ex, &err) < 0) {
        finish(j, IC_EXIT_INTERNAL, &err);
        return;
    }
    if (j->timeout_ms)
        uv_timer_start(&j->backstop, on_backstop, (uint64_t)j->timeout_ms + TIMEOUT_SLACK_MS, 0);
}

/* ---- files ----------------------------------------------------------- */

static void next_put(struct job *j);

static void on_put_done(const ic_err *err, uint64_t bytes, void *ud)
{
    struct job *j = ud;
    struct xfer *x = &j->puts[j->next_xfer - 1];
    if (err) {
        ic_err e = *err;
        ic_err_wrap(&e, "--put %s:%s", x->local, x->guest);
        finish(j, IC_EXIT_FILE, &e);
        return;
    }
    x->bytes = bytes;
    next_put(j);
}

static void next_put(struct job *j)
{
    if (j->finishing)
        return;
    if (j->next_xfer >= j->n_puts) {
        run_command(j);
        return;
    }
    struct xfer *x = &j->puts[j->next_xfer++];
    ic_err err = {0};
    if (ic_sandbox_put_file(j->sb, x->local, x->guest, on_put_done, j, &err) < 0) {
        ic_err_wrap(&err, "--put %s:%s", x->local, x->guest);
        finish(j, IC_EXIT_FILE, &err);
    }
}

static void on_get_done(const ic_err *err, uint64_t bytes, void *ud)
{
    struct job *j = ud;
    struct xfer *x = &j->gets[j->next_xfer - 1];
    if (err) {
        ic_err e = *err;
        ic_err_wrap(&e, "--get %s:%s", x->guest, x->local);
        finish(j, IC_EXIT_FILE, &e);
        return;
    }
    x->bytes = bytes;
    next_get(j);
}

static void next_get(struct job *j)
{
    if (j->finishing)
        return;
    if (j->next_xfer >= j->n_gets) {
        finish(j, 0, NULL);
        return;
    }
    struct xfer *x = &j->gets[j->next_xfer++];
    ic_err err = {0};
    if (ic_sandbox_get_file(j->sb, x->guest, x->local, on_get_done, j, &err) < 0) {
        ic_err_wrap(&err, "--get %s:%s", x->guest, x->local);
        finish(j, IC_EXIT_FILE, &err);
    }
}

/* ---- sandbox events and the end -------------------------------------- */

/* The VMM was stopped for its system calls (killed by its policy, or
 * past --max-violations): that has an exit code of its own. */
static bool stopped_by_seccomp(const struct job *j)
{
    return ic_audit_stop_reason(j->audit)[0] != '\0';
}

/* The "network" object of the --json report, taken while the VM exists. */
static json_t *network_json(const struct job *j, const ic_net *net)
{
    if (j->net.mode != IC_NET_ALLOW)
        return json_pack("{s:s}", "mode", "none");
    json_t *allow = json_array();
    for (size_t i = 0; i < j->net.n_allow; i++) {
        char text[48];
        ic_net_allow_format(&j->net.allow[i], text, sizeof(text));
        json_array_append_new(allow, json_string(text));
    }
    struct ic_net_info in = {0};
    if (net)
        ic_net_info(net, &in);
    return json_pack("{s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "mode", "allow",
                     "allow", allow, "backend",
                     in.backend && in.backend[0] ? in.backend : ic_fw_backend_name(j->net.backend),
                     "chain", in.chain ? in.chain : "", "host_if", in.host_if ? in.host_if : "",
                     "host_addr", in.host_addr, "guest_addr", in.guest_addr, "gateway", in.gateway,
                     "tap", in.tap ? in.tap : "", "mac", in.mac ? in.mac : "");
}

static void on_ready(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct job *j = ud;
    if (j->json && !j->net_report)
        j->net_report = network_json(j, ic_vm_net(ic_sandbox_vm(sb)));
    if (err) {
        bool timeout = err->code == ETIMEDOUT;
        ic_err e = *err;
        if (!timeout)
            ic_err_wrap(&e, "the VM could not boot");
        finish(j, stopped_by_seccomp(j) ? IC_EXIT_SECCOMP : timeout ? IC_EXIT_NO_GUEST : IC_EXIT_BOOT,
               &e);
        return;
    }
    j->next_xfer = 0;
    next_put(j);
}

static void on_lost(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct job *j = ud;
    j->ex = NULL; /* freed by the sandbox */
    ic_err e = *err;
    ic_err_wrap(&e, "the VM was lost while the command ran");
    finish(j, stopped_by_seccomp(j) ? IC_EXIT_SECCOMP : IC_EXIT_GUEST_LOST, &e);
}

static void on_sink_closed(const ic_err *err, void *ud)
{
    struct job *j = ud;
    if (err && err->code != EPIPE)
        ic_log_warn("%s", err->msg);
    j->sinks_open--;
}

static void close_handles(struct job *j)
{
    for (int i = 0; i < 3; i++)
        if (!uv_is_closing((uv_handle_t *)&j->sigs[i]))
            uv_close((uv_handle_t *)&j->sigs[i], NULL);
    if (!uv_is_closing((uv_handle_t *)&j->backstop))
        uv_close((uv_handle_t *)&j->backstop, NULL);
    for (int c = 1; c <= 2; c++)
        if (j->out[c]) {
            ic_sink_close(j->out[c], on_sink_closed, j);
            j->out[c] = NULL;
        }
}

static void on_shut_down(const struct ic_sandbox_timings *t, const ic_err *err, void *ud)
{
    struct job *j = ud;
    j->sb = NULL;
    j->timings = *t;
    if (err)
        ic_log_warn("cleanup: %s", err->msg);
    close_handles(j);
}

static void finish(struct job *j, int code, const ic_err *err)
{
    if (j->finishing)
        return;
    j->finishing = true;
    j->exit_code = code;
    if (err)
        j->err = *err;
    uv_timer_stop(&j->backstop);
    if (j->stdin_src) {
        ic_source_close(j->stdin_src);
        j->stdin_src = NULL;
    }
    if (!j->sb) {
        close_handles(j);
        return;
    }
    ic_sandbox_pause_output(j->sb, false);
    /* A healthy guest powers off cleanly; after a timeout or loss, kill.
     * A command that could not start (127) leaves the guest healthy. */
    if (code == 0 || code == IC_EXIT_FILE || code == IC_EXIT_NOT_RUN)
        ic_sandbox_shutdown(j->sb, on_shut_down, j);
    else
        ic_sandbox_kill(j->sb, on_shut_down, j);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct job *j = s->data;
    ic_err err = {0};
    if (j->ex && j->signals_seen++ == 0) {
        ic_log_info("forwarding %s to the command (again to tear the VM down)", strsignal(signum));
        if (ic_exec_signal(j->ex, signum, &err) == 0)
            return;
    }
    ic_err_set(&err, EINTR, "interrupted by %s; the VM was destroyed", strsignal(signum));
    finish(j, 128 + signum, &err);
}

/* ---- report ------------------------------------------------------------ */

static json_t *capture_json(const struct capture *c)
{
    if (ic_buf_size(&c->buf) == 0)
        return json_string("");
    json_t *s = json_stringn((const char *)ic_buf_head(&c->buf), ic_buf_size(&c->buf));
    return s ? s : json_string("(not valid UTF-8; run without --json to get the raw bytes)");
}

static json_t *xfers_json(const struct xfer *x, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:s, s:I}", "local", x[i].local, "guest",
                                           x[i].guest, "bytes", (json_int_t)x[i].bytes));
    return a;
}

static void print_report(struct job *j, const char *id, const char *name, const char *driver,
                         const char *accel)
{
    const struct ic_sandbox_timings *t = &j->timings;
    json_t *argv = json_array();
    for (char **a = j->argv; *a; a++)
        json_array_append_new(argv, json_string(*a));
    double cmd_ms = j->exec_end_ns ? (double)(j->exec_end_ns - j->exec_start_ns) / 1e6 : 0;
    json_t *r = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:b, s:i, s:i, s:b, s:i, s:s?, s:o, s:o, s:b, s:b, s:o, s:o,"
        " s:{s:f, s:f, s:f, s:f, s:f}}",
        "id", id, "name", name, "vmm", driver, "accel", accel, "command", argv, "ran", j->ran,
        "exit_code", j->ran ? j->status.code : -1, "signal", j->ran ? j->status.signal : 0,
        "timed_out", j->ran && j->status.timed_out, "status", j->exit_code,
        "error", j->err.code ? j->err.msg : NULL, "stdout", capture_json(&j->cap[1]), "stderr",
        capture_json(&j->cap[2]), "stdout_truncated", j->cap[1].truncated, "stderr_truncated",
        j->cap[2].truncated, "put", xfers_json(j->puts, j->n_puts), "get",
        xfers_json(j->gets, j->n_gets), "timings_ms", "boot", t->channel_up, "guest_ready",
        t->guest_ready, "command", cmd_ms, "teardown",
        t->destroyed > t->shutdown_begun ? t->destroyed - t->shutdown_begun : 0.0, "total",
        t->destroyed);
    if (r) {
        json_object_set_new(r, "audit", ic_audit_to_json(j->audit, true));
        json_object_set_new(r, "network", j->net_report ? json_incref(j->net_report)
                                                        : network_json(j, NULL));
        json_dumpf(r, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(r);
    }
}

static int job_setup(struct job *j, ic_err *err)
{
    int r = uv_loop_init(&j->loop);
    if (r < 0)
        return ic_err_set(err, -r, "cannot create the event loop: %s", uv_strerror(r));
    static const int signums[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(&j->loop, &j->sigs[i]);
        j->sigs[i].data = j;
        uv_signal_start(&j->sigs[i], on_signal, signums[i]);
    }
    uv_timer_init(&j->loop, &j->backstop);
    j->backstop.data = j;
    if (!j->json) {
        for (int c = 1; c <= 2; c++) {
            r = ic_sink_open(&j->loop, c, false, false, &j->out[c], err);
            if (r < 0)
                return r;
            ic_sink_on_drain(j->out[c], on_sink_drain, j);
            j->sinks_open++;
        }
    }
    return 0;
}

static void job_free(struct job *j)
{
    for (size_t i = 0; i < MAX_XFERS; i++) {
        free(j->puts[i].local), free(j->puts[i].guest);
        free(j->gets[i].local), free(j->gets[i].guest);
    }
    for (int c = 0; c < 3; c++)
        ic_buf_free(&j->cap[c].buf);
    ic_audit_free(j->audit);
    json_decref(j->net_report);
    free(j);
}

int ic_cmd_exec(int argc, char **argv)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return IC_EXIT_INTERNAL;
    j->cfg.cpus = IC_VM_DEFAULT_CPUS;
    j->cfg.mem_mib = IC_VM_DEFAULT_MEM_MIB;
    j->cfg.vmm = "auto";
    j->boot_timeout_ms = 60000;
    j->forward_stdin = true;
    int r = parse_args(j, argc, argv);
    if (r != 0) {
        job_free(j);
        return r > 0 ? 0 : IC_EXIT_USAGE;
    }
    j->cfg.debug_guest = ic_log_get_level() >= IC_LOG_DEBUG;
    j->cfg.net = &j->net;
    signal(SIGPIPE, SIG_IGN);

    ic_err err = {0};
    if (ic_audit_new(j->audit_ring ? j->audit_ring : IC_AUDIT_RING_DEFAULT, &j->audit, &err) < 0) {
        job_free(j);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    j->cfg.audit = j->audit;
    if (job_setup(j, &err) < 0) {
        job_free(j);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    r = ic_sandbox_start(&j->loop, &j->cfg, j->boot_timeout_ms, on_ready, on_lost, j, &j->sb, &err);
    if (r < 0) {
        j->sb = NULL;
        finish(j, r == -ENOENT || r == -EINVAL ? IC_EXIT_SETUP : IC_EXIT_BOOT, &err);
    } else {
        ic_sandbox_on_drain(j->sb, on_sandbox_drain, j);
    }
    /* The id outlives the VM only in the report. */
    char id[40] = "", name[80] = "", driver[16] = "", accel[8] = "";
    if (j->sb) {
        const ic_vm *vm = ic_sandbox_vm(j->sb);
        snprintf(id, sizeof(id), "%s", ic_vm_id(vm));
        snprintf(name, sizeof(name), "%s", ic_vm_name(vm));
        snprintf(driver, sizeof(driver), "%s", ic_vm_driver(vm));
        snprintf(accel, sizeof(accel), "%s", ic_vm_accel(vm));
    }
    uv_run(&j->loop, UV_RUN_DEFAULT);
    uv_loop_close(&j->loop);

    int code = j->exit_code;
    if (j->err.code && code != 0)
        ic_cli_error("%s", j->err.msg);
    if (code == 0)
        code = j->status.signal ? 128 + j->status.signal : j->status.code;
    uint64_t blocked = ic_audit_violations(j->audit);
    if (blocked && !j->json && !stopped_by_seccomp(j))
        ic_log_warn("the VMM's seccomp policy blocked %llu system call%s (see --json for the "
                    "audit)", (unsigned long long)blocked, blocked == 1 ? "" : "s");
    if (j->json)
        print_report(j, id, name, driver, accel);
    job_free(j);
    return code;
}
