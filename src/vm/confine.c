/*
 * confine.c - the owner's side of a VMM's confinement, whatever the
 * driver: the seccomp policy (loaded when the VM is created, so a bad one
 * stops it early), the BPF program handed to the launch trampoline in a
 * sealed memfd, the jail's uid, root directory and cgroups (recorded in
 * the state record before they exist), the trampoline's launch options,
 * the control socket on which the trampoline reports the jailed VMM's pid
 * and hands over the seccomp notification descriptor, the listener that
 * fills the VM's audit, and <vm dir>/audit.json, rewritten at most once a
 * second while something new was recorded.
 */
#include "vm/confine.h"
#include "vm/control.h"
#include "vm/jail.h"

#include "ironclaw/audit.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"
#include "ironclaw/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define AUDIT_WRITE_MS 1000
#define MAX_ARGS 96

struct ic_confine {
    ic_seccomp_policy *policy;
    ic_audit *audit;
    uint64_t max_violations;
    bool own_audit;
    bool no_jail;
    uint32_t uid_base, uid_count;
    char cg_parent[64];

    struct ic_jail_path paths[IC_JAIL_MAX_PATHS];
    size_t n_paths;

    /* the trampoline's extra arguments (strings owned here) */
    char *args[MAX_ARGS];
    size_t n_args;
    int child_fds[2];           /* control socket, BPF memfd: the trampoline's fds 4 and 5 */
    int control_fd;             /* our end */

    ic_vm *vm;
    uv_poll_t control;
    bool control_open;
    ic_sc_listener *listener;
    uv_timer_t timer;
    bool timer_open;
    uint64_t written_total;
    uv_work_t work;
    char *pending_text;
    bool written_stop;
    bool writing;
    char audit_path[IC_PATH_MAX];
};

/* ---- creation --------------------------------------------------------------- */

int ic_confine_new(const struct ic_vm_config *cfg, const char *default_level, ic_confine **out,
                   ic_err *err)
{
    ic_confine *c = calloc(1, sizeof(*c));
    if (!c)
        return ic_err_set(err, ENOMEM, "out of memory");
    c->child_fds[0] = c->child_fds[1] = c->control_fd = -1;
    c->max_violations = cfg->max_violations;
    c->no_jail = cfg->no_jail;
    c->uid_base = cfg->jail_uid_base ? cfg->jail_uid_base : IC_JAIL_UID_BASE;
    c->uid_count = cfg->jail_uid_count ? cfg->jail_uid_count : IC_JAIL_UID_COUNT;
    snprintf(c->cg_parent, sizeof(c->cg_parent), "%s",
             cfg->cgroup_parent ? cfg->cgroup_parent : IC_CG_PARENT_DEFAULT);
    const char *spec = cfg->seccomp && cfg->seccomp[0] ? cfg->seccomp : default_level;
    int r = ic_seccomp_policy_load(spec, &c->policy, err);
    if (r == 0 && cfg->audit) {
        c->audit = cfg->audit;
    } else if (r == 0) {
        r = ic_audit_new(IC_AUDIT_RING_DEFAULT, &c->audit, err);
        c->own_audit = r == 0;
    }
    if (r < 0) {
        ic_confine_free(c);
        return ic_err_wrap(err, "seccomp policy");
    }
    ic_audit_set_policy(c->audit, ic_seccomp_policy_name(c->policy));
    if (ic_seccomp_policy_denies_nothing(c->policy))
        ic_log_warn("seccomp policy '%s' denies nothing: the VMM may make any system call "
                    "(they are only recorded)", ic_seccomp_policy_name(c->policy));
    if (c->no_jail)
        ic_log_warn("--no-jail: the VMM runs as root in the host's mount, pid, ipc and uts "
                    "namespaces, without cgroup limits; only its seccomp filter, rlimits and "
                    "empty network namespace confine it");
    *out = c;
    return 0;
}

void ic_confine_free(ic_confine *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_args; i++)
        free(c->args[i]);
    for (int i = 0; i < 2; i++)
        if (c->child_fds[i] >= 0)
            close(c->child_fds[i]);
    if (c->control_fd >= 0)
        close(c->control_fd);
    if (c->own_audit)
        ic_audit_free(c->audit);
    ic_seccomp_policy_free(c->policy);
    free(c->pending_text);
    free(c);
}

const ic_audit *ic_confine_audit(const ic_confine *c) { return c->audit; }

int ic_confine_add_path(ic_confine *c, int kind, const char *path, ic_err *err)
{
    if (c->n_paths >= IC_JAIL_MAX_PATHS)
        return ic_err_set(err, E2BIG, "too many paths for the VMM's jail");
    if (path[0] != '/')
        return ic_err_set(err, EINVAL, "jail paths must be absolute: %s", path);
    struct ic_jail_path *p = &c->paths[c->n_paths];
    p->kind = (enum ic_jail_kind)kind;
    if (ic_path_join(p->path, sizeof(p->path), err, "%s", path) < 0)
        return -ENAMETOOLONG;
    c->n_paths++;
    return 0;
}

/* ---- launch arguments ---------------------------------------------------------- */

static int arg(ic_confine *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int arg(ic_confine *c, const char *fmt, ...)
{
    if (c->n_args >= MAX_ARGS)
        return -E2BIG;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&c->args[c->n_args], fmt, ap);
    va_end(ap);
    if (r < 0)
        return -ENOMEM;
    c->n_args++;
    return 0;
}

static int jail_args(ic_confine *c, const struct ic_confine_spawn *s, ic_err *err)
{
    ic_state *st = s->state;
    char root[IC_PATH_MAX];
    int r = ic_path_join(root, sizeof(root), err, "%s/root", ic_state_dir(st));
    if (r < 0)
        return r;
    uint32_t uid;
    char runtime[IC_PATH_MAX];
    if ((r = ic_paths_runtime_dir(runtime, sizeof(runtime), err)) < 0 ||
        (r = ic_jail_pick_uid(runtime, ic_state_id(st), c->uid_base, c->uid_count, &uid, err)) < 0 ||
        (r = ic_state_set_num(st, "jail_uid", uid, err)) < 0 ||
        (r = ic_state_add(st, IC_RES_DIR, "jail-root", root, err)) < 0 ||
        (r = ic_state_add(st, IC_RES_PROCESS, "vmm-jailed", NULL, err)) < 0)
        return r;
    if (mkdir(root, 0755) < 0)
        return ic_err_sys(err, errno, "cannot create the jail root %s", root);
    struct ic_cg_plan plan;
    struct ic_cg_limits lim = {
        .mem_bytes = ((uint64_t)s->mem_mib + IC_JAIL_MEM_OVERHEAD_MIB) << 20,
        .cpus = s->cpus + IC_JAIL_CPU_OVERHEAD,
        .pids = IC_JAIL_PIDS_MAX,
    };
    char name[48];
    snprintf(name, sizeof(name), "vm-%s", ic_state_id(st));
    if (ic_cg_plan("/proc/self/mountinfo", c->cg_parent, name, &plan, err) < 0 ||
        ic_jail_cgroups(st, &plan, &lim, err) < 0)
        return ic_err_wrap(err, "cgroup");
    if (arg(c, "--jail-root") || arg(c, "%s", root) || arg(c, "--jail-uid") ||
        arg(c, "%u", uid) || arg(c, "--jail-gid") || arg(c, "%u", uid))
        return ic_err_set(err, E2BIG, "too many launch arguments");
    for (size_t i = 0; i < plan.n; i++)
        if (arg(c, "--cgroup") || arg(c, "%s", plan.dir[i].path))
            return ic_err_set(err, E2BIG, "too many launch arguments");
    static const char *const kinds[] = {"", "ro", "rw", "dev", "exe"};
    struct stat kvm;
    for (size_t i = 0; i < c->n_paths; i++) {
        if (arg(c, "--jail-path") || arg(c, "%s:%s", kinds[c->paths[i].kind], c->paths[i].path))
            return ic_err_set(err, E2BIG, "too many launch arguments");
        /* A device the VMM opens comes with its group (kvm for /dev/kvm). */
        if (c->paths[i].kind == IC_JAIL_DEV && stat(c->paths[i].path, &kvm) == 0 && kvm.st_gid &&
            (arg(c, "--jail-group") || arg(c, "%u", (unsigned)kvm.st_gid)))
            return ic_err_set(err, E2BIG, "too many launch arguments");
    }
    if (arg(c, "--rlimit") || arg(c, "nproc=%u:%u", IC_JAIL_PIDS_MAX, IC_JAIL_PIDS_MAX))
        return ic_err_set(err, E2BIG, "too many launch arguments");
    ic_log_debug("vm %s: jail root %s, uid %u, %zu cgroup(s)", ic_state_id(st), root, uid, plan.n);
    return 0;
}

int ic_confine_prepare(ic_confine *c, const struct ic_confine_spawn *s, ic_err *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return ic_err_sys(err, errno, "cannot create the launch control socket");
    c->control_fd = sv[0];
    c->child_fds[0] = sv[1];
    struct ic_sc_compile_opts o = {.flags = IC_SC_NOTIFY, .handoff_fd = IC_SC_HANDOFF_FD};
    size_t insns = 0;
    int r = ic_seccomp_compile_memfd(c->policy, &o, &c->child_fds[1], &insns, err);
    if (r < 0)
        return ic_err_wrap(err, "seccomp policy '%s'", ic_seccomp_policy_name(c->policy));
    ic_log_debug("vm %s: seccomp policy '%s': %zu BPF instructions", ic_state_id(s->state),
                 ic_seccomp_policy_name(c->policy), insns);
    if (arg(c, "--control-fd") || arg(c, "4") || arg(c, "--seccomp-fd") || arg(c, "5") ||
        arg(c, "--rlimit") || arg(c, "nofile=%u:%u", IC_SC_VMM_NOFILE, IC_SC_VMM_NOFILE) ||
        arg(c, "--rlimit") || arg(c, "core=0:0") || arg(c, "--rlimit") ||
        arg(c, "fsize=%llu:%llu", IC_JAIL_FSIZE_MAX, IC_JAIL_FSIZE_MAX))
        return ic_err_set(err, E2BIG, "too many launch arguments");
    if (s->jail && !c->no_jail && (r = jail_args(c, s, err)) < 0)
        return r;
    r = ic_path_join(c->audit_path, sizeof(c->audit_path), err, "%s/audit.json",
                     ic_state_dir(s->state));
    if (r == 0) {
        json_t *j = ic_audit_to_json(c->audit, true);
        _cleanup_free_ char *text = j ? json_dumps(j, 0) : NULL;
        json_decref(j);
        r = text ? ic_file_write_atomic(c->audit_path, text, strlen(text), 0600, err) : 0;
    }
    return r;
}

size_t ic_confine_args(const ic_confine *c, char **out, size_t max)
{
    size_t n = c->n_args < max ? c->n_args : max;
    memcpy(out, c->args, n * sizeof(char *));
    return n;
}

void ic_confine_child_fds(const ic_confine *c, int fds[2])
{
    fds[0] = c->child_fds[0];
    fds[1] = c->child_fds[1];
}

/* ---- after the spawn: control messages, listener, audit file ---------------- */

static void on_limit(void *ud, const struct ic_audit_entry *last)
{
    ic_confine *c = ud;
    char name[64], reason[256];
    snprintf(reason, sizeof(reason), "the VMM made %llu forbidden system calls (limit "
             "--max-violations %llu); the last: %s",
             (unsigned long long)ic_audit_violations(c->audit),
             (unsigned long long)c->max_violations,
             ic_seccomp_syscall_name(last->nr, name, sizeof(name)));
    ic_audit_set_stop(c->audit, reason);
    ic_vm__violation(c->vm, reason);
}

static void on_listener_fail(void *ud, const char *why)
{
    ic_confine *c = ud;
    ic_audit_set_stop(c->audit, why);
    ic_vm__violation(c->vm, why);
}

static void start_listener(ic_confine *c, int fd)
{
    if (c->listener) {
        close(fd);
        return;
    }
    struct ic_sc_listener_opts o = {
        .policy = c->policy,
        .audit = c->audit,
        .max_violations = c->max_violations,
        .on_limit = on_limit,
        .on_fail = on_listener_fail,
        .ud = c,
    };
    ic_err err = {0};
    if (ic_sc_listener_start(ic_vm__loop(c->vm), fd, &o, &c->listener, &err) < 0) {
        /* The VMM's filtered calls would hang or fail unseen: stop it. */
        ic_audit_set_stop(c->audit, err.msg);
        ic_vm__violation(c->vm, err.msg);
    }
}

static void close_control(ic_confine *c)
{
    if (!c->control_open)
        return;
    c->control_open = false;
    ic_vm__close(c->vm, (uv_handle_t *)&c->control);
}

/* The trampoline's messages (control.h): the jailed VMM's pid, and the
 * seccomp notification descriptor. */
static void read_control(ic_confine *c)
{
    for (;;) {
        struct ic_control_msg m;
        ssize_t n = ic_control_recv(c->control_fd, MSG_DONTWAIT, &m);
        if (n == -EAGAIN || n == -EINTR)
            return;
        if (n <= 0) {
            close_control(c);   /* end of file: the VMM was exec'd, or the launch failed */
            return;
        }
        if (m.tag == IC_CONTROL_NOTIFY && m.fd >= 0) {
            start_listener(c, m.fd);
            continue;
        }
        if (m.fd >= 0)
            close(m.fd);
        int32_t pid = m.value;
        if (m.tag == IC_CONTROL_PID && n == IC_CONTROL_MSG_SIZE && pid > 1) {
            ic_err err = {0};
            if (ic_state_set_pid(ic_vm__state(c->vm), "vmm-jailed", (pid_t)pid, &err) < 0)
                ic_log_warn("vm %s: %s", ic_state_id(ic_vm__state(c->vm)), err.msg);
            ic_log_debug("vm %s: the jailed VMM is pid %d", ic_state_id(ic_vm__state(c->vm)), (int)pid);
        }
    }
}

static void on_control(uv_poll_t *h, int status, int events)
{
    ic_confine *c = h->data;
    if (status < 0) {
        close_control(c);
        return;
    }
    read_control(c);
}

static void write_in_pool(uv_work_t *w)
{
    ic_confine *c = w->data;
    ic_err err = {0};
    if (ic_file_write_atomic(c->audit_path, c->pending_text, strlen(c->pending_text), 0600, &err) < 0)
        ic_log_debug("audit: %s", err.msg);
}

static void after_write(uv_work_t *w, int status)
{
    ic_confine *c = w->data;
    free(c->pending_text);
    c->pending_text = NULL;
    c->writing = false;
    ic_vm__unhold(c->vm);
}

/* Rewrites audit.json when something was recorded since the last time. */
static void on_timer(uv_timer_t *t)
{
    ic_confine *c = t->data;
    bool stopped = ic_audit_stop_reason(c->audit)[0] != '\0';
    if (c->writing || (ic_audit_total(c->audit) == c->written_total && stopped == c->written_stop))
        return;
    json_t *doc = ic_audit_to_json(c->audit, true);
    c->pending_text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!c->pending_text)
        return;
    c->written_total = ic_audit_total(c->audit);
    c->written_stop = stopped;
    c->writing = true;
    c->work.data = c;
    ic_vm__hold(c->vm);
    if (uv_queue_work(ic_vm__loop(c->vm), &c->work, write_in_pool, after_write) < 0) {
        write_in_pool(&c->work);
        after_write(&c->work, 0);
    }
}

int ic_confine_spawned(ic_confine *c, ic_vm *vm, ic_err *err)
{
    c->vm = vm;
    for (int i = 0; i < 2; i++) {
        if (c->child_fds[i] >= 0)
            close(c->child_fds[i]);
        c->child_fds[i] = -1;
    }
    uv_loop_t *loop = ic_vm__loop(vm);
    int r = uv_poll_init(loop, &c->control, c->control_fd);
    if (r < 0)
        return ic_err_set(err, -r, "cannot watch the launch control socket: %s", uv_strerror(r));
    c->control.data = c;
    c->control_open = true;
    r = uv_poll_start(&c->control, UV_READABLE, on_control);
    if (r < 0) {
        close_control(c);
        return ic_err_set(err, -r, "cannot watch the launch control socket: %s", uv_strerror(r));
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    uv_timer_start(&c->timer, on_timer, AUDIT_WRITE_MS, AUDIT_WRITE_MS);
    return 0;
}

static void on_listener_closed(void *ud)
{
    ic_vm__unhold(ud);
}

void ic_confine_release(ic_confine *c)
{
    if (!c->vm)
        return;
    close_control(c);
    if (c->timer_open) {
        c->timer_open = false;
        ic_vm__close(c->vm, (uv_handle_t *)&c->timer);
    }
    if (c->listener) {
        ic_vm__hold(c->vm);
        ic_sc_listener_close(c->listener, on_listener_closed, c->vm);
        c->listener = NULL;
    }
}
