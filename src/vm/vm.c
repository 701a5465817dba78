/*
 * vm.c - the VM lifecycle shared by every driver: identity, runtime
 * directory, state record, the VMM process, the grace-then-kill stop, and
 * teardown that leaves nothing behind. Drivers (qemu.c, ...) supply only
 * what differs: how to start the VMM and connect the channel.
 */
#include "vm/confine.h"
#include "vm/driver.h"
#include "vm/jail.h"
#include "vm/launch.h"

#include "ironclaw/audit.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/host.h"
#include "ironclaw/id.h"
#include "ironclaw/log.h"
#include "ironclaw/net.h"
#include "ironclaw/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHANNEL_TIMEOUT_DEFAULT_MS 15000

struct ic_vm { // NOLINT(clang-analyzer-optin.performance.Padding): one per VM, grouped by meaning
    uv_loop_t *loop;
    struct ic_vm_config cfg;
    char name[IC_NAME_MAX + 1];
    char image_name[IC_NAME_MAX + 1];
    char netns[IC_PATH_MAX];
    struct ic_net_spec net_spec;
    ic_net *net;           /* NULL with --net none */
    char tap[IC_NET_IFNAME_SIZE], mac[IC_NET_MAC_SIZE], net_cmdline[64];
    char id[IC_ID_SIZE];
    ic_state *state;
    const struct ic_vm_driver *driver;
    void *priv;
    bool use_kvm;
    struct ic_host host;
    struct ic_image_paths image;
    ic_vm_event_fn cb;
    void *ud;

    uv_process_t proc;
    bool proc_spawned;     /* proc handle initialised */
    bool proc_running;
    /* The trampoline's status pipe: EOF with no message = the VMM was
     * exec'd; a message = the launch step that failed (see launch.c). */
    uv_pipe_t status_pipe;
    bool status_open;
    char launch_msg[512];
    size_t launch_len;
    bool exit_seen;        /* the process ended while the pipe was still open */
    int64_t exit_status;
    int exit_sig;
    uv_timer_t grace;
    bool grace_init;
    uint32_t grace_ms;
    bool tap_owned;
    char tap_owner[32];    /* "UID:GID" for the trampoline's --tap-owner */
    uv_stream_t *channel;
    ic_confine *confine;   /* seccomp, audit, jail (confine.c) */
    char violation[256];   /* why the VMM was killed for its system calls */

    bool failed;
    bool stop_requested;
    bool destroying;
    int open_handles;
    uv_work_t reap_work;
    ic_err reap_err;
    ic_vm_done_fn done;
    void *done_ud;
};

/* ---- helpers lent to drivers ------------------------------------------- */

uv_loop_t *ic_vm__loop(ic_vm *vm) { return vm->loop; }
ic_state *ic_vm__state(ic_vm *vm) { return vm->state; }
const struct ic_vm_config *ic_vm__config(ic_vm *vm) { return &vm->cfg; }
const struct ic_image_paths *ic_vm__image(ic_vm *vm) { return &vm->image; }
bool ic_vm__use_kvm(ic_vm *vm) { return vm->use_kvm; }
const struct ic_host *ic_vm__host(ic_vm *vm) { return &vm->host; }
void *ic_vm__priv(ic_vm *vm) { return vm->priv; }
void ic_vm__set_priv(ic_vm *vm, void *priv) { vm->priv = priv; }

void ic_vm__set_tap_owner(ic_vm *vm, uid_t uid, gid_t gid)
{
    snprintf(vm->tap_owner, sizeof(vm->tap_owner), "%u:%u", (unsigned)uid, (unsigned)gid);
    vm->tap_owned = true;
}

int ic_vm__path(ic_vm *vm, const char *name, char *out, ic_err *err)
{
    return ic_path_join(out, IC_PATH_MAX, err, "%s/%s", ic_state_dir(vm->state), name);
}

int ic_vm__jail_path(ic_vm *vm, int kind, const char *path, ic_err *err)
{
    return ic_confine_add_path(vm->confine, kind, path, err);
}

static void maybe_finish(ic_vm *vm);

void ic_vm__hold(ic_vm *vm) { vm->open_handles++; }

void ic_vm__unhold(ic_vm *vm)
{
    vm->open_handles--;
    maybe_finish(vm);
}

void ic_vm__violation(ic_vm *vm, const char *reason)
{
    if (!vm->violation[0])
        snprintf(vm->violation, sizeof(vm->violation), "%s", reason);
    ic_log_info("vm %s: %s; stopping the VM", vm->id, reason);
    if (vm->proc_running)
        uv_process_kill(&vm->proc, SIGKILL);
}

static void emit(ic_vm *vm, enum ic_vm_event ev, const ic_err *err)
{
    if (vm->cb)
        vm->cb(vm, ev, err, vm->ud);
}

void ic_vm__fail(ic_vm *vm, const ic_err *err)
{
    if (vm->failed || vm->destroying)
        return;
    vm->failed = true;
    ic_state_set_phase(vm->state, "failed", NULL);
    emit(vm, IC_VM_EV_FAILED, err);
}

void ic_vm__channel_up(ic_vm *vm, uv_stream_t *channel)
{
    vm->channel = channel;
    ic_state_set_phase(vm->state, "running", NULL);
    emit(vm, IC_VM_EV_CHANNEL, NULL);
}

static void on_handle_closed(uv_handle_t *h)
{
    ic_vm *vm = h->data;
    vm->open_handles--;
    maybe_finish(vm);
}

static void on_channel_closed(uv_handle_t *h)
{
    ic_vm *vm = h->data;
    free(h);
    vm->open_handles--;
    maybe_finish(vm);
}

void ic_vm__close(ic_vm *vm, uv_handle_t *h)
{
    if (!h || uv_is_closing(h))
        return;
    h->data = vm;
    vm->open_handles++;
    uv_close(h, on_handle_closed);
}

/* ---- the VMM process --------------------------------------------------- */

static void describe_exit(ic_vm *vm, int64_t status, int sig, ic_err *err)
{
    const char *stop = ic_audit_stop_reason(ic_confine_audit(vm->confine));
    if (vm->violation[0] || stop[0]) {
        ic_err_set(err, EPERM, "the %s process was stopped: %s", vm->driver->name,
                   vm->violation[0] ? vm->violation : stop);
        return;
    }
    if (vm->launch_len > 0) {
        ic_err_set(err, ECHILD, "the %s process could not be launched: %.*s", vm->driver->name,
                   (int)vm->launch_len, vm->launch_msg);
        return;
    }
    char tail[512] = "";
    ic_vm_console_tail(vm, tail, sizeof(tail));
    const char *how = sig ? strsignal(sig) : "exited";
    if (sig)
        ic_err_set(err, ECHILD, "the %s process was killed (%s)%s%s", vm->driver->name, how,
                   tail[0] ? "; console ends with: " : "", tail);
    else
        ic_err_set(err, ECHILD, "the %s process exited with status %lld%s%s", vm->driver->name,
                   (long long)status, tail[0] ? "; console ends with: " : "", tail);
}

/* Runs once both the process has ended and its status pipe is closed, so
 * that a launch failure is always reported with its reason. */
static void vmm_ended(ic_vm *vm)
{
    int64_t status = vm->exit_status;
    int sig = vm->exit_sig;
    if (vm->destroying) {
        maybe_finish(vm);
        return;
    }
    ic_err err = {0};
    describe_exit(vm, status, sig, &err);
    if (!vm->channel && !vm->failed) {
        ic_err_wrap(&err, "the VM did not start");
        ic_vm__fail(vm, &err);
    }
    ic_state_set_phase(vm->state, "exited", NULL);
    emit(vm, IC_VM_EV_EXITED, vm->stop_requested ? NULL : &err);
}

static void on_vmm_exit(uv_process_t *p, int64_t status, int sig)
{
    ic_vm *vm = p->data;
    vm->proc_running = false;
    vm->exit_status = status;
    vm->exit_sig = sig;
    ic_log_debug("vm %s: %s exited (status %lld, signal %d)", vm->id, vm->driver->name,
                 (long long)status, sig);
    ic_vm__close(vm, (uv_handle_t *)&vm->proc);
    if (vm->grace_init)
        uv_timer_stop(&vm->grace);
    if (vm->status_open) {
        vm->exit_seen = true; /* the pipe's EOF finishes the job */
        return;
    }
    vmm_ended(vm);
}

static void close_status_pipe(ic_vm *vm)
{
    if (!vm->status_open)
        return;
    vm->status_open = false;
    ic_vm__close(vm, (uv_handle_t *)&vm->status_pipe);
    if (vm->exit_seen) {
        vm->exit_seen = false;
        vmm_ended(vm);
    }
}

static void on_status_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    ic_vm *vm = h->data;
    size_t room = sizeof(vm->launch_msg) - vm->launch_len;
    *buf = uv_buf_init(vm->launch_msg + vm->launch_len, (unsigned)room);
}

static void on_status_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    ic_vm *vm = s->data;
    if (n > 0) {
        vm->launch_len += (size_t)n;
        if (vm->launch_len < sizeof(vm->launch_msg))
            return;
    } else if (n == 0) {
        return;
    }
    if (vm->launch_len == 0 && vm->proc_running)
        ic_log_debug("vm %s: %s launched", vm->id, vm->driver->name);
    close_status_pipe(vm);
}

static int self_exe(char *out, size_t size, ic_err *err)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n < 0)
        return ic_err_sys(err, errno, "cannot find my own executable");
    if ((size_t)n >= size - 1)
        return ic_err_set(err, ENAMETOOLONG, "my own executable's path is too long");
    out[n] = '\0';
    return 0;
}

int ic_vm__spawn_vmm(ic_vm *vm, char *const argv[], const char *log_path, ic_err *err)
{
    return ic_vm__spawn_vmm_flags(vm, argv, log_path, 0, err);
}

int ic_vm__spawn_vmm_flags(ic_vm *vm, char *const argv[], const char *log_path, unsigned flags,
                           ic_err *err)
{
    char exe[IC_PATH_MAX], parent[24];
    if (!ic_vm__launch_ready())
        return ic_err_set(err, EPROTO, "internal error: this program does not call "
                          "ic_vm_launch_main() first thing in main(), so it cannot launch a VMM");
    int r = self_exe(exe, sizeof(exe), err);
    if (r < 0)
        return r;
    snprintf(parent, sizeof(parent), "%d", (int)getpid());

    size_t n = 0;
    while (argv[n])
        n++;
    /* The seccomp program, the control socket and, for a jailed VMM, its
     * uid, root and cgroups are made (and recorded) here. */
    if ((vm->driver->jail && !vm->cfg.no_jail &&
         ((r = ic_confine_add_path(vm->confine, IC_JAIL_RO, vm->image.kernel, err)) < 0 ||
          (r = ic_confine_add_path(vm->confine, IC_JAIL_RO, vm->image.initrd, err)) < 0)))
        return r;
    struct ic_confine_spawn cs = {vm->state, vm->cfg.mem_mib, vm->cfg.cpus, vm->driver->jail};
    r = ic_confine_prepare(vm->confine, &cs, err);
    if (r < 0)
        return ic_err_wrap(err, "confining the %s process", vm->driver->name);
    char *extra[96];
    size_t n_extra = ic_confine_args(vm->confine, extra, sizeof(extra) / sizeof(extra[0]));
    int conf_fds[2];
    ic_confine_child_fds(vm->confine, conf_fds);
    _cleanup_free_ char **full = calloc(n + n_extra + 18, sizeof(char *)) /* our options, argv, NULL */;
    if (!full)
        return ic_err_set(err, ENOMEM, "out of memory");
    size_t k = 0;
    full[k++] = exe;
    full[k++] = (char *)IC_LAUNCH_MARKER;
    full[k++] = (char *)"--status-fd";
    full[k++] = (char *)"3";
    full[k++] = (char *)"--parent";
    full[k++] = parent;
    /* Without a network of its own the VMM gets an empty namespace. */
    if (vm->cfg.netns) {
        full[k++] = (char *)"--netns";
        full[k++] = (char *)vm->cfg.netns;
    } else {
        full[k++] = (char *)"--new-netns";
    }
    if (flags & IC_VM_SPAWN_SUPERVISE)
        full[k++] = (char *)"--supervise";
    if ((flags & IC_VM_SPAWN_TAP_FD) && vm->cfg.tap_name) {
        full[k++] = (char *)"--tap";
        full[k++] = (char *)vm->cfg.tap_name;
        if (vm->tap_owned) {
            full[k++] = (char *)"--tap-owner";
            full[k++] = vm->tap_owner;
        }
    }
    memcpy(full + k, extra, n_extra * sizeof(char *));
    k += n_extra;
    full[k++] = (char *)"--";
    memcpy(full + k, argv, n * sizeof(char *));

    r = ic_state_add(vm->state, IC_RES_PROCESS, "vmm", NULL, err);
    if (r < 0)
        return r; // NOLINT(clang-analyzer-unix.Malloc): full is freed by _cleanup_free_
    _cleanup_close_ int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (log_fd < 0)
        return ic_err_sys(err, errno, "cannot create %s", log_path);

    uv_pipe_init(vm->loop, &vm->status_pipe, 0);
    vm->status_pipe.data = vm;
    vm->status_open = true;
    uv_stdio_container_t stdio[6] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = log_fd},
        {.flags = UV_INHERIT_FD, .data.fd = log_fd},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&vm->status_pipe},
        {.flags = UV_INHERIT_FD, .data.fd = conf_fds[0]},   /* launch control socket */
        {.flags = UV_INHERIT_FD, .data.fd = conf_fds[1]},   /* seccomp BPF memfd */
    };
    uv_process_options_t opts = {
        .exit_cb = on_vmm_exit,
        .file = exe,
        .args = full,
        .flags = UV_PROCESS_DETACHED, /* own session: the terminal's ^C is ours to forward */
        .stdio_count = 6,
        .stdio = stdio,
    };
    vm->proc.data = vm;
    r = uv_spawn(vm->loop, &vm->proc, &opts);
    vm->proc_spawned = true;
    if (r < 0) {
        ic_vm__close(vm, (uv_handle_t *)&vm->proc);
        vm->status_open = false;
        ic_vm__close(vm, (uv_handle_t *)&vm->status_pipe);
        return ic_err_set(err, -r, "cannot start %s: %s", argv[0], uv_strerror(r));
    }
    vm->proc_running = true;
    r = uv_read_start((uv_stream_t *)&vm->status_pipe, on_status_alloc, on_status_read);
    if (r < 0)
        close_status_pipe(vm);
    ic_err cerr = {0};
    if (ic_confine_spawned(vm->confine, vm, &cerr) < 0)
        ic_vm__violation(vm, cerr.msg);
    ic_log_debug("vm %s: %s started as pid %d", vm->id, argv[0], vm->proc.pid);
    return ic_state_set_pid(vm->state, "vmm", vm->proc.pid, err);
}

/* The VMM runs in its own session and process group (UV_PROCESS_DETACHED);
 * what it started there (the jailed Firecracker behind a supervisor) goes
 * down with it. The pid is still our unreaped child, so the group id
 * cannot have been reused. */
static void kill_vmm(ic_vm *vm)
{
    uv_kill(-vm->proc.pid, SIGKILL);
    uv_process_kill(&vm->proc, SIGKILL);
}

/* ---- public lifecycle -------------------------------------------------- */

static int pick_driver(ic_vm *vm, const char *requested, ic_err *err)
{
    int r = ic_host_probe(NULL, &vm->host, err);
    if (r < 0)
        return r;
    const char *driver = NULL;
    char why[256];
    r = ic_host_pick_vmm(&vm->host, requested, &driver, &vm->use_kvm, why, sizeof(why), err);
    if (r < 0)
        return r;
    vm->driver = strcmp(driver, "firecracker") == 0 ? &ic_vm_driver_firecracker : &ic_vm_driver_qemu;
    if (vm->driver == &ic_vm_driver_firecracker && !vm->host.kvm_usable)
        ic_log_warn("%s", why);
    ic_log_debug("vmm: %s (%s)", driver, why);
    return 0;
}

static int validate_config(const struct ic_vm_config *cfg, ic_err *err)
{
    if (cfg->cpus < 1 || cfg->cpus > 32)
        return ic_err_set(err, EINVAL, "--cpus must be between 1 and 32 (got %u)", cfg->cpus);
    if (cfg->mem_mib < 64 || cfg->mem_mib > 65536)
        return ic_err_set(err, EINVAL, "--mem must be between 64 and 65536 MiB (got %u)", cfg->mem_mib);
    if (cfg->name && cfg->name[0]) {
        int r = ic_name_validate(cfg->name, err);
        if (r < 0)
            return r;
    }
    if (cfg->netns && strlen(cfg->netns) >= IC_PATH_MAX)
        return ic_err_set(err, ENAMETOOLONG, "network namespace path is too long");
    if (cfg->image) {
        int r = ic_name_validate(cfg->image, err);
        if (r < 0)
            return ic_err_wrap(err, "image name");
    }
    if (cfg->net && cfg->net->mode == IC_NET_ALLOW && cfg->netns)
        return ic_err_set(err, EINVAL, "a VM with an allow-list gets a network namespace of "
                          "its own; do not pass one");
    return 0;
}

static int create_rest(ic_vm *vm, const struct ic_vm_config *cfg, ic_err *err)
{
    int r = ic_image_locate(vm->image_name, &vm->image, err);
    if (r < 0)
        return r;
    r = ic_id_new(vm->id, err);
    if (r < 0)
        return r;
    char runtime[IC_PATH_MAX];
    r = ic_paths_runtime_dir(runtime, sizeof(runtime), err);
    if (r < 0)
        return r;
    r = ic_state_create(runtime, vm->id, vm->name, vm->driver->name, &vm->state, err);
    if (r < 0)
        return ic_err_wrap(err, "creating the VM's state record");
    if (vm->cfg.net && (r = ic_net_new(vm->loop, vm->cfg.net, vm->state, &vm->net, err)) < 0) {
        ic_vm_reap_record(vm->state, NULL);
        ic_state_free(vm->state);
        vm->state = NULL;
        return r;
    }
    return 0;
}

int ic_vm_create(uv_loop_t *loop, const struct ic_vm_config *cfg, ic_vm_event_fn cb, void *ud,
                 ic_vm **out, ic_err *err)
{
    int r = validate_config(cfg, err);
    if (r < 0)
        return r;
    _cleanup_free_ ic_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return ic_err_set(err, ENOMEM, "out of memory");
    vm->loop = loop;
    vm->cfg = *cfg;
    snprintf(vm->name, sizeof(vm->name), "%s", cfg->name ? cfg->name : "");
    snprintf(vm->image_name, sizeof(vm->image_name), "%s", cfg->image ? cfg->image : "default");
    vm->cfg.name = vm->name;
    vm->cfg.image = vm->image_name;
    if (cfg->netns) {
        snprintf(vm->netns, sizeof(vm->netns), "%s", cfg->netns);
        vm->cfg.netns = vm->netns;
    }
    vm->cfg.vmm = NULL; /* only needed here */
    vm->cfg.net = NULL;
    vm->cfg.tap_name = vm->cfg.mac = vm->cfg.net_cmdline = NULL;
    if (cfg->net && cfg->net->mode == IC_NET_ALLOW) {
        vm->net_spec = *cfg->net;
        vm->cfg.net = &vm->net_spec;
    }
    if (!vm->cfg.channel_timeout_ms)
        vm->cfg.channel_timeout_ms = CHANNEL_TIMEOUT_DEFAULT_MS;
    vm->cb = cb;
    vm->ud = ud;
    vm->cfg.seccomp = NULL;       /* loaded now, not needed later */
    vm->cfg.cgroup_parent = NULL; /* copied by the confinement */

    /* The driver first (it names the default seccomp level), then the
     * policy, so that a bad one stops us before anything is created. */
    r = pick_driver(vm, cfg->vmm ? cfg->vmm : "auto", err);
    if (r < 0)
        return r;
    r = ic_confine_new(cfg, vm->driver->seccomp_level, &vm->confine, err);
    if (r < 0)
        return r;
    r = create_rest(vm, cfg, err);
    if (r < 0) {
        ic_confine_free(vm->confine);
        return r;
    }
    *out = TAKE_PTR(vm);
    return 0;
}

/* The network is up (or failed, and was rolled back): start the VMM in it. */
static void on_net_ready(ic_net *net, const ic_err *err, void *ud)
{
    ic_vm *vm = ud;
    if (vm->destroying) {
        maybe_finish(vm);
        return;
    }
    if (err) {
        ic_vm__fail(vm, err);
        return;
    }
    struct ic_net_info info;
    ic_net_info(net, &info);
    snprintf(vm->netns, sizeof(vm->netns), "%s", info.netns);
    snprintf(vm->tap, sizeof(vm->tap), "%s", info.tap);
    snprintf(vm->mac, sizeof(vm->mac), "%s", info.mac);
    snprintf(vm->net_cmdline, sizeof(vm->net_cmdline), "%s", info.cmdline);
    vm->cfg.netns = vm->netns;
    vm->cfg.tap_name = vm->tap;
    vm->cfg.mac = vm->mac;
    vm->cfg.net_cmdline = vm->net_cmdline;
    ic_err e = {0};
    if (vm->driver->start(vm, &e) < 0)
        ic_vm__fail(vm, &e);
}

int ic_vm_start(ic_vm *vm, ic_err *err)
{
    ic_state_set_phase(vm->state, "starting", NULL);
    /* Isolation first: the VMM starts only inside a verified network. */
    int r = vm->net ? ic_net_setup(vm->net, on_net_ready, vm, err) : vm->driver->start(vm, err);
    if (r < 0) {
        vm->failed = true;
        ic_state_set_phase(vm->state, "failed", NULL);
    }
    return r;
}

uv_stream_t *ic_vm_take_channel(ic_vm *vm)
{
    uv_stream_t *s = vm->channel;
    vm->channel = NULL;
    return s;
}

static void on_grace_expired(uv_timer_t *t)
{
    ic_vm *vm = t->data;
    if (!vm->proc_running)
        return;
    /* A zero grace is a deliberate kill, not a VMM that ignored us. */
    if (vm->grace_ms > 0)
        ic_log_warn("vm %s: %s did not end within its grace period; killing it", vm->id,
                    vm->driver->name);
    kill_vmm(vm);
}

void ic_vm_stop(ic_vm *vm, uint32_t grace_ms)
{
    vm->stop_requested = true;
    if (!vm->proc_running)
        return;
    ic_state_set_phase(vm->state, "stopping", NULL);
    if (vm->driver->stop)
        vm->driver->stop(vm);
    if (!vm->grace_init) {
        uv_timer_init(vm->loop, &vm->grace);
        vm->grace.data = vm;
        vm->grace_init = true;
    }
    vm->grace_ms = grace_ms;
    uv_timer_start(&vm->grace, on_grace_expired, grace_ms, 0);
}

/* The one place that knows every kind of resource a VM record can list.
 * Runs in the thread pool (destroy) or in `ironclaw gc`. The processes go
 * first: nothing may still use a resource when it is removed. */
int ic_vm_reap_record(ic_state *st, ic_err *err)
{
    ic_err local = {0};
    /* The cgroups first: killing what is in them takes the jailed VMM
     * down. Then every recorded process, then the network. */
    int first = ic_jail_reap(st, &local);
    if (first < 0 && err)
        *err = local;
    ic_state_kill_processes(st);
    int r = ic_net_reap_record(st, &local);
    if (r < 0 && first == 0) {
        first = r;
        if (err)
            *err = local;
    }
    /* A cgroup or network that cannot be removed keeps the record, so
     * that `ironclaw gc` can try again; the rest goes once they are gone. */
    if (first < 0)
        return first;
    return ic_state_reap(st, err);
}

static void reap_in_pool(uv_work_t *w)
{
    ic_vm *vm = w->data;
    ic_vm_reap_record(vm->state, &vm->reap_err);
}

static void after_reap(uv_work_t *w, int status)
{
    ic_vm *vm = w->data;
    ic_vm_done_fn done = vm->done;
    void *done_ud = vm->done_ud;
    ic_err err = vm->reap_err;
    ic_state_free(vm->state);
    ic_confine_free(vm->confine);
    ic_net_free(vm->net);
    free(vm->priv);
    free(vm);
    if (done)
        done(err.code ? &err : NULL, done_ud);
}

/* Teardown's last step, once the VMM is gone and every handle closed. */
static void maybe_finish(ic_vm *vm)
{
    if (!vm->destroying || vm->proc_running || vm->open_handles > 0 || vm->reap_work.data ||
        ic_net_busy(vm->net))
        return;
    vm->reap_work.data = vm;
    int r = uv_queue_work(vm->loop, &vm->reap_work, reap_in_pool, after_reap);
    if (r < 0) {
        reap_in_pool(&vm->reap_work);
        after_reap(&vm->reap_work, 0);
    }
}

void ic_vm_destroy(ic_vm *vm, ic_vm_done_fn done, void *ud)
{
    if (!vm) {
        if (done)
            done(NULL, ud);
        return;
    }
    vm->destroying = true;
    vm->done = done;
    vm->done_ud = ud;
    vm->cb = NULL;
    ic_net_cancel(vm->net);
    if (vm->proc_running)
        kill_vmm(vm);
    if (vm->driver->release)
        vm->driver->release(vm);
    ic_confine_release(vm->confine);
    if (vm->channel) {
        /* Heap-allocated by the driver and never handed on: free it here. */
        vm->channel->data = vm;
        vm->open_handles++;
        uv_close((uv_handle_t *)vm->channel, on_channel_closed);
        vm->channel = NULL;
    }
    if (vm->grace_init)
        ic_vm__close(vm, (uv_handle_t *)&vm->grace);
    close_status_pipe(vm);
    ic_state_set_phase(vm->state, "destroying", NULL);
    /* The process handle closes in on_vmm_exit once libuv has reaped it. */
    maybe_finish(vm);
}

const char *ic_vm_id(const ic_vm *vm) { return vm->id; }
const char *ic_vm_name(const ic_vm *vm) { return vm->name; }
const char *ic_vm_driver(const ic_vm *vm) { return vm->driver->name; }
const char *ic_vm_dir(const ic_vm *vm) { return ic_state_dir(vm->state); }
const char *ic_vm_accel(const ic_vm *vm) { return vm->use_kvm ? "kvm" : "tcg"; }
int ic_vm_pid(const ic_vm *vm) { return vm->proc_running ? vm->proc.pid : 0; }
bool ic_vm_running(const ic_vm *vm) { return vm->proc_running; }
const struct ic_audit *ic_vm_audit(const ic_vm *vm) { return ic_confine_audit(vm->confine); }
const struct ic_net *ic_vm_net(const ic_vm *vm) { return vm->net; }

int ic_vm_console_tail(const ic_vm *vm, char *out, size_t max)
{
    out[0] = '\0';
    char path[IC_PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/console.log", ic_state_dir(vm->state)) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)(max - 1) ? end - (off_t)(max - 1) : 0;
    ssize_t n = pread(fd, out, max - 1, start);
    if (n < 0)
        return -errno;
    out[n] = '\0';
    /* One line for an error message: printable characters only. */
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            out[i] = ' ';
    return 0;
}
