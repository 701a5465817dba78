/*
 * firecracker.c - the Firecracker driver.
 *
 * Start is a chain of steps, each either on the event loop or (when it
 * blocks: file copies, libcurl) in libuv's thread pool:
 *
 *   [custom filter]  firecracker --version, seccompiler-bin --version
 *                    (same release, or refuse), validate the JSON (pool),
 *                    seccompiler-bin --input-file F --output-file seccomp.bpf
 *   prepare (pool)   log files; with the jailer, the chroot's contents
 *   spawn            firecracker --api-sock ... --id ... [--seccomp-filter]
 *                    or jailer ... -- ..., through the launch trampoline
 *                    (supervised for the jailer); stdout/stderr (and so the
 *                    guest's serial console) to console.log
 *   wait             the API socket, with a bounded backoff; a VMM that
 *                    dies is reported by vm.c with the tail of console.log
 *   pid (pool)       with the jailer: the real Firecracker pid, recorded
 *   configure (pool) PUT /logger /metrics /machine-config /boot-source
 *                    [/drives/drive0] /vsock [/network-interfaces/eth0],
 *                    then /actions InstanceStart; any refusal ends the start
 *                    with Firecracker's fault_message
 *   connect          hybrid vsock CONNECT to the guest agent (fc_vsock.c)
 *
 * Pool jobs must not touch memory that vm.c frees, so everything they
 * read or write lives in a reference-counted core: the VM holds one
 * reference until release, each job one until its completion. The VM's
 * private block holds only the libuv handles, which vm.c frees after their
 * close callbacks.
 */
#include "vm/driver.h"
#include "vm/fc.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define VERSION_TIMEOUT_MS 10000
#define COMPILE_TIMEOUT_MS 60000
#define HANDSHAKE_MS 1000
#define WAIT_FIRST_MS 5u
#define WAIT_MAX_STEP_MS 100u
/* After the guest was asked to power off, how long before Ctrl+Alt+Del. */
#define CAD_DELAY_MS 1000

struct fc_core {
    int refs;
    ic_vm *vm;                       /* NULL once the VM is released */
    bool stopped;                    /* failed or released: no further steps */
    bool started;                    /* InstanceStart accepted */
    bool jailed;
    struct ic_fc_jail jail;
    char id[IC_ID_SIZE];
    unsigned vcpus, mem_mib;
    char boot_args[1024];
    char tap[64], mac[24];
    bool drive_rw;
    /* programs */
    char fc_bin[IC_PATH_MAX], jailer_bin[IC_PATH_MAX], seccompiler_bin[IC_PATH_MAX];
    /* inputs on the host */
    char kernel[IC_PATH_MAX], initrd[IC_PATH_MAX], drive[IC_PATH_MAX], filter[IC_PATH_MAX];
    /* files on the host */
    char api[IC_PATH_MAX], vsock[IC_PATH_MAX], console[IC_PATH_MAX], log[IC_PATH_MAX],
        metrics[IC_PATH_MAX], bpf[IC_PATH_MAX], drive_copy[IC_PATH_MAX];
    /* the same as Firecracker sees them (inside the jail: relative to its root) */
    char fc_api[IC_PATH_MAX], fc_vsock[IC_PATH_MAX], fc_kernel[IC_PATH_MAX],
        fc_initrd[IC_PATH_MAX], fc_drive[IC_PATH_MAX], fc_log[IC_PATH_MAX],
        fc_metrics[IC_PATH_MAX], fc_bpf[IC_PATH_MAX];
    char fc_version[256];            /* `firecracker --version`, for the filter check */
};

struct fc {                          /* the VM's private block: handles only */
    struct fc_core *core;
    uv_timer_t wait;
    bool wait_init;
    uint32_t waited_ms, step_ms;
    uv_timer_t cad;                  /* the delayed SendCtrlAltDel */
    bool cad_init;
    ic_fc_vsock *vsock;
    ic_fc_runner *run;
};

static struct fc *fc_of(ic_vm *vm) { return ic_vm__priv(vm); }

static void core_unref(struct fc_core *c)
{
    if (c && --c->refs == 0)
        free(c);
}

/* Ends the start with err (once), quoting the end of the console log
 * when asked: it holds Firecracker's own complaints. */
static void fail(ic_vm *vm, const ic_err *err, bool with_tail)
{
    struct fc_core *c = fc_of(vm)->core;
    if (c->stopped)
        return;
    c->stopped = true;
    ic_err e = *err;
    char tail[300];
    if (with_tail && ic_vm_console_tail(vm, tail, sizeof(tail)) == 0 && tail[0])
        ic_err_set(&e, err->code, "%s; its output ends with: %s", err->msg, tail);
    ic_vm__fail(vm, &e);
}

static void failf(ic_vm *vm, int code, bool with_tail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void failf(ic_vm *vm, int code, bool with_tail, const char *fmt, ...)
{
    ic_err e = {.code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    fail(vm, &e, with_tail);
}

/* ---- pool jobs ----------------------------------------------------------------- */

/* A job holds the VM (ic_vm__hold) until it is back on the loop: the
 * reaper, itself a pool job, must not remove the VM's files while a job
 * still writes them. */
struct job {
    uv_work_t w;
    ic_vm *vm;
    struct fc_core *core;
    int (*run)(struct job *j);       /* in the pool */
    void (*done)(ic_vm *vm, struct job *j); /* on the loop, only while the VM lives */
    int r;
    ic_err err;
    pid_t pid;
};

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    j->r = j->run(j);
}

static void job_after(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct fc_core *c = j->core;
    if (c->vm && !c->stopped && j->done) {
        if (status == UV_ECANCELED && j->r == 0)
            j->r = ic_err_set(&j->err, ECANCELED, "cancelled");
        j->done(c->vm, j);
    }
    ic_vm *vm = j->vm;
    core_unref(c);
    free(j);
    ic_vm__unhold(vm);   /* may finish a teardown that waited for this job */
}

/* pid: handed to the job in j->pid (0 when it needs none). */
static int queue_job_pid(ic_vm *vm, int (*run)(struct job *), void (*done)(ic_vm *, struct job *),
                         pid_t pid, ic_err *err)
{
    struct fc_core *c = fc_of(vm)->core;
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return ic_err_set(err, ENOMEM, "out of memory");
    j->vm = vm;
    j->core = c;
    j->run = run;
    j->done = done;
    j->pid = pid;
    j->w.data = j;
    c->refs++;
    int r = uv_queue_work(ic_vm__loop(vm), &j->w, job_work, job_after);
    if (r < 0) {
        c->refs--;
        free(j);
        return ic_err_set(err, -r, "cannot queue work: %s", uv_strerror(r));
    }
    ic_vm__hold(vm);
    return 0;
}

static int queue_job(ic_vm *vm, int (*run)(struct job *), void (*done)(ic_vm *, struct job *),
                     ic_err *err)
{
    return queue_job_pid(vm, run, done, 0, err);
}

/* A step that failed to queue ends the start. */
static void queue_or_fail(ic_vm *vm, int (*run)(struct job *), void (*done)(ic_vm *, struct job *))
{
    ic_err err = {0};
    if (queue_job(vm, run, done, &err) < 0)
        fail(vm, &err, false);
}

/* ---- configure and connect -------------------------------------------------------- */

static void on_vsock(uv_stream_t *channel, const ic_err *err, void *ud)
{
    ic_vm *vm = ud;
    struct fc *f = fc_of(vm);
    f->vsock = NULL;
    if (err) {
        fail(vm, err, true);
        return;
    }
    ic_vm__channel_up(vm, channel);
}

static void step_connect(ic_vm *vm)
{
    struct fc *f = fc_of(vm);
    struct ic_fc_vsock_opts o = {
        .uds_path = f->core->vsock,
        .port = IC_FC_VSOCK_PORT,
        .deadline_ms = ic_vm__config(vm)->channel_timeout_ms,
        .handshake_ms = HANDSHAKE_MS,
    };
    ic_err err = {0};
    if (ic_fc_vsock_connect(ic_vm__loop(vm), &o, on_vsock, vm, &f->vsock, &err) < 0)
        fail(vm, &err, false);
}

static int put(struct job *j, const char *path, char *body)
{
    if (!body)
        return ic_err_set(&j->err, ENOMEM, "out of memory");
    int r = ic_fc_api_put(j->core->api, path, body, IC_FC_API_TIMEOUT_MS, &j->err);
    ic_log_debug("firecracker: PUT %s %s -> %s", path, body, r == 0 ? "ok" : j->err.msg);
    free(body);
    return r;
}

/* The whole pre-boot configuration, in Firecracker's documented order. */
static int run_configure(struct job *j)
{
    struct fc_core *c = j->core;
    int r = put(j, "/logger", ic_fc_body_logger(c->fc_log));
    if (r == 0)
        r = put(j, "/metrics", ic_fc_body_metrics(c->fc_metrics));
    if (r == 0)
        r = put(j, "/machine-config", ic_fc_body_machine(c->vcpus, c->mem_mib));
    if (r == 0)
        r = put(j, "/boot-source", ic_fc_body_boot_source(c->fc_kernel, c->fc_initrd, c->boot_args));
    if (r == 0 && c->drive[0])
        r = put(j, "/drives/drive0", ic_fc_body_drive("drive0", c->fc_drive, !c->drive_rw));
    if (r == 0)
        r = put(j, "/vsock", ic_fc_body_vsock(IC_FC_GUEST_CID, c->fc_vsock));
    if (r == 0 && c->tap[0])
        r = put(j, "/network-interfaces/eth0", ic_fc_body_net("eth0", c->tap, c->mac));
    if (r == 0)
        r = put(j, "/actions", ic_fc_body_action("InstanceStart"));
    return r;
}

static void after_configure(ic_vm *vm, struct job *j)
{
    if (j->r < 0) {
        /* The fault_message is the story; a transport failure may also
         * have left words in the log. */
        fail(vm, &j->err, j->err.code != EINVAL);
        return;
    }
    fc_of(vm)->core->started = true;
    ic_log_debug("vm %s: Firecracker started the guest", ic_vm_id(vm));
    step_connect(vm);
}

/* ---- the real pid behind the jailer ------------------------------------------------- */

static int run_read_pid(struct job *j)
{
    /* The jailer writes the file right after forking; allow it a moment. */
    int r = 0;
    for (int i = 0; i < 50; i++) {
        ic_err_clear(&j->err);
        r = ic_fc_jail_read_pid(&j->core->jail, j->pid, &j->pid, &j->err);
        if (r == 0 || (r != -ENOENT && r != -EAGAIN && r != -EINVAL && r != -EPERM))
            return r;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return r;
}

static void after_read_pid(ic_vm *vm, struct job *j)
{
    if (j->r < 0) {
        fail(vm, &j->err, true);
        return;
    }
    ic_err err = {0};
    if (ic_state_set_pid(ic_vm__state(vm), "firecracker", j->pid, &err) < 0) {
        fail(vm, &err, false);
        return;
    }
    ic_log_debug("vm %s: the jailed Firecracker is pid %d", ic_vm_id(vm), (int)j->pid);
    queue_or_fail(vm, run_configure, after_configure);
}

static void step_read_pid(ic_vm *vm)
{
    /* The supervisor's pid travels in j->pid (see run_read_pid). */
    ic_err err = {0};
    if (queue_job_pid(vm, run_read_pid, after_read_pid, (pid_t)ic_vm_pid(vm), &err) < 0)
        fail(vm, &err, false);
}

/* ---- waiting for the API socket ------------------------------------------------------ */

/* Firecracker binds its socket and only then listens: the file alone
 * can be there a moment before a connection is taken (ECONNREFUSED), so
 * the socket counts as up once a connection to it succeeds. Unix sockets
 * connect at once; the probe is closed unused. */
static bool api_listening(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return false;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    /* EAGAIN: listening, with a full backlog. */
    return connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN;
}

static void on_wait(uv_timer_t *t)
{
    ic_vm *vm = t->data;
    struct fc *f = fc_of(vm);
    struct fc_core *c = f->core;
    if (c->stopped || !ic_vm_running(vm))
        return; /* vm.c reports a VMM that died, with its log */
    if (api_listening(c->api)) {
        ic_log_debug("vm %s: API socket up after %u ms", ic_vm_id(vm), f->waited_ms);
        if (c->jailed)
            step_read_pid(vm);
        else
            queue_or_fail(vm, run_configure, after_configure);
        return;
    }
    if (f->waited_ms >= IC_FC_SOCKET_WAIT_MS) {
        /* ETIME, not ETIMEDOUT: the VMM failed, not the guest agent. */
        failf(vm, ETIME, true, "Firecracker's API socket %s did not appear within %.1f s "
              "(the process is still running)", c->api, IC_FC_SOCKET_WAIT_MS / 1000.0);
        return;
    }
    f->waited_ms += f->step_ms;
    uv_timer_start(&f->wait, on_wait, f->step_ms, 0);
    f->step_ms = f->step_ms * 2 > WAIT_MAX_STEP_MS ? WAIT_MAX_STEP_MS : f->step_ms * 2;
}

/* ---- spawning -------------------------------------------------------------------------- */

static int fc_args(struct fc_core *c, const char **v, size_t max)
{
    size_t n = 0;
    if (!c->jailed)
        v[n++] = c->fc_bin;
    v[n++] = "--api-sock";
    v[n++] = c->fc_api;
    /* The jailer passes --id itself. */
    if (!c->jailed) {
        v[n++] = "--id";
        v[n++] = c->id;
    }
    if (c->filter[0]) {
        v[n++] = "--seccomp-filter";
        v[n++] = c->fc_bpf;
    }
    v[n] = NULL;
    return n < max ? 0 : -E2BIG;
}

static void step_spawn(ic_vm *vm)
{
    struct fc *f = fc_of(vm);
    struct fc_core *c = f->core;
    const struct ic_vm_config *cfg = ic_vm__config(vm);
    const char *args[12];
    ic_err err = {0};
    fc_args(c, args, sizeof(args) / sizeof(args[0]));
    char **argv = NULL;
    int r = 0;
    if (c->jailed)
        r = ic_fc_jail_argv(&c->jail, c->jailer_bin, c->fc_bin, c->id, c->jail.cgroup[0] != '\0',
                            cfg->netns, (char *const *)args, &argv, &err);
    if (r == 0 && ic_log_get_level() >= IC_LOG_DEBUG) {
        char *const *v = argv ? argv : (char *const *)args;
        for (size_t i = 0; v[i]; i++)
            ic_log_debug("firecracker argv[%zu] = %s", i, v[i]);
    }
    /* Firecracker opens its tap by name; under the jailer it is no longer
     * root, so the tap becomes the jail user's first. */
    unsigned flags = c->jailed ? IC_VM_SPAWN_SUPERVISE : 0;
    if (c->tap[0] && c->jailed) {
        flags |= IC_VM_SPAWN_TAP_FD;
        ic_vm__set_tap_owner(vm, c->jail.uid, c->jail.gid);
    }
    if (r == 0)
        r = ic_vm__spawn_vmm_flags(vm, argv ? argv : (char *const *)args, c->console, flags,
                                   &err);
    ic_fc_argv_free(argv);
    if (r < 0) {
        fail(vm, &err, false);
        return;
    }
    uv_timer_init(ic_vm__loop(vm), &f->wait);
    f->wait.data = vm;
    f->wait_init = true;
    f->step_ms = WAIT_FIRST_MS;
    uv_timer_start(&f->wait, on_wait, 0, 0);
}

/* ---- preparing files ------------------------------------------------------------------- */

static int create_private(const char *path, ic_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot create %s", path);
    close(fd);
    return 0;
}

static int run_prepare(struct job *j)
{
    struct fc_core *c = j->core;
    ic_err *err = &j->err;
    /* Firecracker will not bind over an old socket file. */
    unlink(c->api);
    unlink(c->vsock);
    int r = 0;
    if (!c->jailed) {
        r = create_private(c->log, err);
        if (r == 0)
            r = create_private(c->metrics, err);
        if (r == 0 && c->drive_rw)
            r = ic_file_copy(c->drive, c->drive_copy, 0600, err);
        return r;
    }
    r = ic_fc_jail_install(&c->jail, c->kernel, "vmlinux", false, err);
    if (r == 0)
        r = ic_fc_jail_install(&c->jail, c->initrd, "initrd.cpio", false, err);
    if (r == 0 && c->drive[0])
        r = ic_fc_jail_install(&c->jail, c->drive, "drive0.img", c->drive_rw, err);
    if (r == 0 && c->filter[0])
        r = ic_fc_jail_install(&c->jail, c->bpf, "seccomp.bpf", false, err);
    if (r == 0)
        r = ic_fc_jail_touch(&c->jail, "firecracker.log", err);
    if (r == 0)
        r = ic_fc_jail_touch(&c->jail, "metrics.json", err);
    return r < 0 ? ic_err_wrap(err, "preparing the jail") : 0;
}

static void after_prepare(ic_vm *vm, struct job *j)
{
    if (j->r < 0) {
        fail(vm, &j->err, false);
        return;
    }
    step_spawn(vm);
}

/* ---- the custom seccomp filter ---------------------------------------------------------- */

static void on_compiled(int64_t status, int sig, const char *out, size_t len, const ic_err *err,
                        void *ud)
{
    ic_vm *vm = ud;
    struct fc *f = fc_of(vm);
    f->run = NULL;
    if (err) {
        fail(vm, err, false);
        return;
    }
    struct stat st;
    if (status != 0 || sig != 0 || stat(f->core->bpf, &st) < 0 || st.st_size == 0) {
        char shown[300];
        snprintf(shown, sizeof(shown), "%.*s", (int)(len > 280 ? 280 : len), out);
        for (char *p = shown; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        failf(vm, EINVAL, false, "seccompiler-bin could not compile the seccomp filter %s "
              "(status %lld)%s%s", f->core->filter, (long long)(sig ? 128 + sig : status),
              shown[0] ? ": " : "", shown);
        return;
    }
    ic_log_debug("vm %s: seccomp filter compiled to %s", ic_vm_id(vm), f->core->bpf);
    queue_or_fail(vm, run_prepare, after_prepare);
}

static void after_validate(ic_vm *vm, struct job *j)
{
    struct fc *f = fc_of(vm);
    struct fc_core *c = f->core;
    if (j->r < 0) {
        fail(vm, &j->err, false);
        return;
    }
    char *argv[] = {c->seccompiler_bin, "--target-arch", "x86_64", "--input-file", c->filter,
                    "--output-file", c->bpf, NULL};
    ic_err err = {0};
    if (ic_fc_run(ic_vm__loop(vm), argv, COMPILE_TIMEOUT_MS, on_compiled, vm, &f->run, &err) < 0)
        fail(vm, &err, false);
}

static int run_validate(struct job *j)
{
    return ic_fc_filter_validate_file(j->core->filter, &j->err);
}

static void on_seccompiler_version(int64_t status, int sig, const char *out, size_t len,
                                   const ic_err *err, void *ud)
{
    ic_vm *vm = ud;
    struct fc *f = fc_of(vm);
    f->run = NULL;
    ic_err e = {0};
    if (err) {
        fail(vm, err, false);
        return;
    }
    if (status != 0 || sig != 0) {
        failf(vm, EINVAL, false, "`%s --version` failed (status %lld): a custom seccomp filter "
              "needs a working seccompiler-bin", f->core->seccompiler_bin, (long long)status);
        return;
    }
    if (ic_fc_versions_match(f->core->fc_version, out, &e) < 0) {
        fail(vm, &e, false);
        return;
    }
    queue_or_fail(vm, run_validate, after_validate);
}

static void on_fc_version(int64_t status, int sig, const char *out, size_t len, const ic_err *err,
                          void *ud)
{
    ic_vm *vm = ud;
    struct fc *f = fc_of(vm);
    struct fc_core *c = f->core;
    f->run = NULL;
    if (err) {
        fail(vm, err, false);
        return;
    }
    if (status != 0 || sig != 0) {
        failf(vm, EINVAL, false, "`%s --version` failed (status %lld)", c->fc_bin,
              (long long)status);
        return;
    }
    snprintf(c->fc_version, sizeof(c->fc_version), "%s", out);
    char *argv[] = {c->seccompiler_bin, "--version", NULL};
    ic_err e = {0};
    if (ic_fc_run(ic_vm__loop(vm), argv, VERSION_TIMEOUT_MS, on_seccompiler_version, vm, &f->run,
                  &e) < 0)
        fail(vm, &e, false);
}

/* ---- planning --------------------------------------------------------------------------- */

static int plan_paths(ic_vm *vm, struct fc_core *c, ic_err *err)
{
    const struct ic_image_paths *img = ic_vm__image(vm);
    int r;
    snprintf(c->kernel, sizeof(c->kernel), "%s", img->vmlinux);
    snprintf(c->initrd, sizeof(c->initrd), "%s", img->initrd);
    if ((r = ic_vm__path(vm, "console.log", c->console, err)) < 0 ||
        (r = ic_vm__path(vm, "seccomp.bpf", c->bpf, err)) < 0)
        return r;
    if (!c->jailed) {
        if ((r = ic_vm__path(vm, "api.sock", c->api, err)) < 0 ||
            (r = ic_vm__path(vm, "vsock.sock", c->vsock, err)) < 0 ||
            (r = ic_vm__path(vm, "firecracker.log", c->log, err)) < 0 ||
            (r = ic_vm__path(vm, "metrics.json", c->metrics, err)) < 0 ||
            (c->drive_rw && (r = ic_vm__path(vm, "drive0.img", c->drive_copy, err)) < 0))
            return r;
        snprintf(c->fc_api, sizeof(c->fc_api), "%s", c->api);
        snprintf(c->fc_vsock, sizeof(c->fc_vsock), "%s", c->vsock);
        snprintf(c->fc_kernel, sizeof(c->fc_kernel), "%s", c->kernel);
        snprintf(c->fc_initrd, sizeof(c->fc_initrd), "%s", c->initrd);
        snprintf(c->fc_drive, sizeof(c->fc_drive), "%s", c->drive_rw ? c->drive_copy : c->drive);
        snprintf(c->fc_log, sizeof(c->fc_log), "%s", c->log);
        snprintf(c->fc_metrics, sizeof(c->fc_metrics), "%s", c->metrics);
        snprintf(c->fc_bpf, sizeof(c->fc_bpf), "%s", c->bpf);
    } else {
        const char *root = c->jail.root;
        if ((r = ic_path_join(c->api, sizeof(c->api), err, "%s/api.sock", root)) < 0 ||
            (r = ic_path_join(c->vsock, sizeof(c->vsock), err, "%s/vsock.sock", root)) < 0 ||
            (r = ic_path_join(c->log, sizeof(c->log), err, "%s/firecracker.log", root)) < 0 ||
            (r = ic_path_join(c->metrics, sizeof(c->metrics), err, "%s/metrics.json", root)) < 0)
            return r;
        snprintf(c->fc_api, sizeof(c->fc_api), "/api.sock");
        snprintf(c->fc_vsock, sizeof(c->fc_vsock), "/vsock.sock");
        snprintf(c->fc_kernel, sizeof(c->fc_kernel), "/vmlinux");
        snprintf(c->fc_initrd, sizeof(c->fc_initrd), "/initrd.cpio");
        snprintf(c->fc_drive, sizeof(c->fc_drive), "/drive0.img");
        snprintf(c->fc_log, sizeof(c->fc_log), "/firecracker.log");
        snprintf(c->fc_metrics, sizeof(c->fc_metrics), "/metrics.json");
        snprintf(c->fc_bpf, sizeof(c->fc_bpf), "/seccomp.bpf");
    }
    /* sun_path holds 107 bytes. */
    const char *socks[] = {c->api, c->vsock};
    for (size_t i = 0; i < 2; i++)
        if (strlen(socks[i]) >= 108)
            return ic_err_set(err, ENAMETOOLONG, "socket path %s is too long for a Unix socket "
                              "(set IRONCLAW_RUNTIME_DIR to a shorter directory)", socks[i]);
    return 0;
}

/* Jailer on by default where it can run (installed, and we are root);
 * going without it is said out loud, because isolation is weaker. */
static int plan_jail(ic_vm *vm, struct fc_core *c, ic_err *err)
{
    const struct ic_host *h = ic_vm__host(vm);
    const struct ic_vm_config *cfg = ic_vm__config(vm);
    if (cfg->no_jailer)
        ic_log_warn("--no-jailer: Firecracker runs without the jailer's chroot, pid namespace and "
                    "privilege drop; isolation is weaker");
    else if (!h->jailer[0])
        ic_log_warn("jailer is not installed: Firecracker runs without its chroot, pid namespace "
                    "and privilege drop (install Firecracker's jailer next to it)");
    else if (!h->is_root)
        ic_log_warn("the jailer needs root: Firecracker runs unjailed as this user");
    c->jailed = !cfg->no_jailer && h->jailer[0] && h->is_root;
    if (!c->jailed)
        return 0;
    snprintf(c->jailer_bin, sizeof(c->jailer_bin), "%s", h->jailer);
    return ic_fc_jail_plan(ic_state_dir(ic_vm__state(vm)), c->id, c->fc_bin, h, &c->jail, err);
}

static int plan_inputs(ic_vm *vm, struct fc_core *c, ic_err *err)
{
    const struct ic_vm_config *cfg = ic_vm__config(vm);
    const struct ic_image_paths *img = ic_vm__image(vm);
    int r = ic_fc_check_machine(cfg->cpus, cfg->mem_mib, err);
    if (r < 0)
        return r;
    if (!img->vmlinux[0])
        return ic_err_set(err, ENOENT, "image '%s' has no vmlinux, which Firecracker needs (`ironclaw "
                          "image show` says why); rebuild it with `ironclaw image build --force`",
                          cfg->image ? cfg->image : "default");
    c->vcpus = cfg->cpus;
    c->mem_mib = cfg->mem_mib;
    if (cfg->drive) {
        struct stat st;
        if (!realpath(cfg->drive, c->drive))
            return ic_err_sys(err, errno, "--drive %s", cfg->drive);
        if (stat(c->drive, &st) < 0 || !S_ISREG(st.st_mode))
            return ic_err_set(err, EINVAL, "--drive %s is not a regular file", cfg->drive);
        c->drive_rw = cfg->drive_copy;
    }
    if (cfg->fc_filter) {
        if (!realpath(cfg->fc_filter, c->filter))
            return ic_err_sys(err, errno, "--firecracker-filter %s", cfg->fc_filter);
        const struct ic_host *h = ic_vm__host(vm);
        /* Fail closed: a filter that cannot be compiled is no filter. */
        if (!h->seccompiler[0])
            return ic_err_set(err, ENOENT, "a custom seccomp filter needs seccompiler-bin (of "
                              "the same release as Firecracker), which is not installed; "
                              "refusing to start Firecracker without the filter");
        snprintf(c->seccompiler_bin, sizeof(c->seccompiler_bin), "%s", h->seccompiler);
    }
    if (cfg->tap_name) {
        if (!ic_fc_id_ok(cfg->tap_name) || strlen(cfg->tap_name) >= 16)
            return ic_err_set(err, EINVAL, "bad tap device name '%s'", cfg->tap_name);
        snprintf(c->tap, sizeof(c->tap), "%s", cfg->tap_name);
        if (cfg->mac)
            snprintf(c->mac, sizeof(c->mac), "%s", cfg->mac);
        else /* locally administered, derived from the VM id */
            snprintf(c->mac, sizeof(c->mac), "06:00:%.2s:%.2s:%.2s:%.2s", c->id, c->id + 2,
                     c->id + 4, c->id + 6);
    }
    snprintf(c->boot_args, sizeof(c->boot_args),
             "console=ttyS0 reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.nopnp "
             "i8042.dumbkbd ironclaw.transport=vsock ironclaw.vsock_port=%u "
             "ironclaw.poweroff=reset%s%s%s", IC_FC_VSOCK_PORT,
             cfg->debug_guest ? " ironclaw.debug=1" : "", cfg->net_cmdline ? " " : "",
             cfg->net_cmdline ? cfg->net_cmdline : "");
    return 0;
}

/* Everything the VM will own goes into its record before it exists. */
static int record(ic_vm *vm, struct fc_core *c, ic_err *err)
{
    ic_state *st = ic_vm__state(vm);
    int r = ic_state_add(st, IC_RES_SOCKET, "fc-api", c->api, err);
    if (r == 0)
        r = ic_state_add(st, IC_RES_SOCKET, "fc-vsock", c->vsock, err);
    if (r == 0 && c->jailed)
        r = ic_state_add(st, IC_RES_TREE, "fc-jail", c->jail.dir, err);
    if (r == 0 && c->jailed && c->jail.cgroup[0])
        r = ic_state_add(st, IC_RES_CGROUP, "fc-cgroup", c->jail.cgroup, err);
    if (r == 0 && c->jailed)
        r = ic_state_add(st, IC_RES_PROCESS, "firecracker", NULL, err);
    return r;
}

static int fc_start(ic_vm *vm, ic_err *err)
{
    const struct ic_host *h = ic_vm__host(vm);
    if (!h->firecracker[0])
        return ic_err_set(err, ENOENT, "firecracker is not installed (put it on PATH or set "
                          "IRONCLAW_FIRECRACKER)");
    struct fc *f = calloc(1, sizeof(*f));
    struct fc_core *c = calloc(1, sizeof(*c));
    if (!f || !c) {
        free(f);
        free(c);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    ic_vm__set_priv(vm, f);
    f->core = c;
    c->refs = 1;
    c->vm = vm;
    snprintf(c->id, sizeof(c->id), "%s", ic_vm_id(vm));
    snprintf(c->fc_bin, sizeof(c->fc_bin), "%s", h->firecracker);
    int r = plan_inputs(vm, c, err);
    if (r == 0)
        r = plan_jail(vm, c, err);
    if (r == 0)
        r = plan_paths(vm, c, err);
    if (r == 0)
        r = record(vm, c, err);
    if (r < 0)
        return r;
    curl_global_init(CURL_GLOBAL_NOTHING);
    if (!c->filter[0])
        return queue_job(vm, run_prepare, after_prepare, err);
    char *argv[] = {c->fc_bin, "--version", NULL};
    return ic_fc_run(ic_vm__loop(vm), argv, VERSION_TIMEOUT_MS, on_fc_version, vm, &f->run, err);
}

/* ---- stop and release ------------------------------------------------------------------- */

static int run_ctrl_alt_del(struct job *j)
{
    char *body = ic_fc_body_action("SendCtrlAltDel");
    int r = body ? ic_fc_api_put(j->core->api, "/actions", body, 2000, &j->err) : -ENOMEM;
    free(body);
    if (r < 0)
        ic_log_debug("SendCtrlAltDel: %s", j->err.msg);
    return r;
}

static void on_cad(uv_timer_t *t)
{
    ic_vm *vm = t->data;
    if (!ic_vm_running(vm))
        return;
    ic_err err = {0};
    if (queue_job(vm, run_ctrl_alt_del, NULL, &err) < 0)
        ic_log_debug("SendCtrlAltDel: %s", err.msg);
}

/* The guest has normally been asked to power off just now: give it a
 * moment, then press Ctrl+Alt+Del (the kernel resets, Firecracker exits);
 * vm.c kills after its grace period if even that does not work. */
static void fc_stop(ic_vm *vm)
{
    struct fc *f = fc_of(vm);
    if (!f || !f->core->started || f->cad_init)
        return; /* before InstanceStart there is no guest to ask */
    uv_timer_init(ic_vm__loop(vm), &f->cad);
    f->cad.data = vm;
    f->cad_init = true;
    uv_timer_start(&f->cad, on_cad, CAD_DELAY_MS, 0);
}

static void fc_release(ic_vm *vm)
{
    struct fc *f = fc_of(vm);
    if (!f)
        return;
    if (f->wait_init)
        ic_vm__close(vm, (uv_handle_t *)&f->wait);
    if (f->cad_init)
        ic_vm__close(vm, (uv_handle_t *)&f->cad);
    ic_fc_vsock_cancel(f->vsock);
    f->vsock = NULL;
    ic_fc_run_cancel(f->run);
    f->run = NULL;
    if (f->core) {
        f->core->vm = NULL;
        f->core->stopped = true;
        core_unref(f->core);
        f->core = NULL;
    }
    /* f itself is freed by vm.c after the close callbacks. */
}

const struct ic_vm_driver ic_vm_driver_firecracker = {
    .name = "firecracker",
    .start = fc_start,
    .stop = fc_stop,
    .release = fc_release,
    .seccomp_level = "firecracker", /* its jailer mounts, pivots and drops privileges */
};
