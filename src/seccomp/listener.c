/*
 * listener.c - the owner's end of a VMM's seccomp filter: a user
 * notification descriptor polled on the libuv loop. Every notification is
 * a system call the policy does not simply allow; it is evaluated against
 * the policy in user space, recorded in the VM's audit and answered with
 * the policy's action (see include/ironclaw/seccomp.h).
 *
 * The notification names the calling thread by its id in our own pid
 * namespace, so the record is exact even for a VMM in a pid namespace of
 * its own. SECCOMP_IOCTL_NOTIF_RECV is only issued when poll says a
 * notification is waiting; if its caller died in between, the kernel
 * answers ENOENT instead of blocking.
 */
#include "seccomp/internal.h"

#include "ironclaw/audit.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <seccomp.h>

/* Notifications answered per poll callback before the loop gets a turn. */
#define BATCH 256

struct ic_sc_listener {
    uv_poll_t poll;
    int fd;
    struct ic_sc_listener_opts o;
    struct seccomp_notif *req;
    struct seccomp_notif_resp *resp;
    bool limit_fired;
    void (*closed)(void *ud);
    void *closed_ud;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool pending(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void stop_reason(ic_sc_listener *l, int nr, pid_t tid)
{
    char name[64], reason[160];
    snprintf(reason, sizeof(reason), "the seccomp policy killed it on the forbidden system call "
             "%s (thread %d)", ic_seccomp_syscall_name(nr, name, sizeof(name)), (int)tid);
    ic_audit_set_stop(l->o.audit, reason);
}

static void answer(ic_sc_listener *l, struct ic_sc_action act)
{
    struct seccomp_notif *req = l->req;
    struct seccomp_notif_resp *resp = l->resp;
    memset(resp, 0, sizeof(*resp));
    resp->id = req->id;
    pid_t tid = (pid_t)req->pid;
    switch (act.kind) {
    case IC_SC_LOG:
        resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        break;
    case IC_SC_ERRNO:
        resp->error = -act.err;
        break;
    case IC_SC_KILL:
        /* Still waiting for us means the thread id still names it; the
         * call never runs: the process dies first. kill() on a thread id
         * ends its whole thread group. */
        if (seccomp_notify_id_valid(l->fd, req->id) == 0)
            kill(tid, SIGKILL);
        resp->error = -EPERM;
        stop_reason(l, req->data.nr, tid);
        break;
    case IC_SC_TRAP:
    default:
        resp->error = -ENOSYS;
        break;
    }
    bool valid = act.kind == IC_SC_TRAP && seccomp_notify_id_valid(l->fd, req->id) == 0;
    int r = seccomp_notify_respond(l->fd, resp);
    if (r < 0 && r != -ENOENT)
        ic_log_debug("seccomp: answering notification %llu: %s", (unsigned long long)req->id,
                     strerror(-r));
    if (valid)
        kill(tid, SIGSYS);
}

static void handle(ic_sc_listener *l)
{
    const struct seccomp_data *d = &l->req->data;
    struct ic_sc_action act = ic_seccomp_policy_eval(l->o.policy, d->nr, (const uint64_t *)d->args);
    if (act.kind == IC_SC_ALLOW) {
        /* The kernel filter and the policy disagree: refuse, say so. */
        ic_log_debug("seccomp: notified of allowed system call %d; refusing it", d->nr);
        act = (struct ic_sc_action){IC_SC_ERRNO, EPERM};
    }
    struct ic_audit_entry e = {
        .time_ms = now_ms(),
        .pid = (int32_t)l->req->pid,
        .nr = d->nr,
        .action = act,
    };
    memcpy(e.args, d->args, sizeof(e.args));
    ic_audit_record(l->o.audit, &e);
    answer(l, act);
    if (act.kind != IC_SC_LOG && l->o.max_violations && !l->limit_fired &&
        ic_audit_violations(l->o.audit) >= l->o.max_violations) {
        l->limit_fired = true;
        if (l->o.on_limit)
            l->o.on_limit(l->o.ud, &e);
    }
}

/* The ioctl itself rather than seccomp_notify_receive(): libseccomp 2.5
 * reports every failure as ECANCELED, and ENOENT (the caller was killed,
 * or a signal interrupted its call, after poll() said readable) is routine
 * for a VMM whose threads take signals; it must not end the listener. */
static int receive(ic_sc_listener *l)
{
    memset(l->req, 0, sizeof(*l->req));
    return ioctl(l->fd, SECCOMP_IOCTL_NOTIF_RECV, l->req) < 0 ? -errno : 0;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    ic_sc_listener *l = h->data;
    if (status < 0 || (events & UV_DISCONNECT)) {
        uv_poll_stop(h);   /* no process uses the filter any more */
        return;
    }
    for (int i = 0; i < BATCH; i++) {
        if (i > 0 && !pending(l->fd))
            return;
        int r = receive(l);
        if (r == -ENOENT || r == -EINTR)
            continue;       /* the caller died or was interrupted */
        if (r < 0) {
            char why[128];
            snprintf(why, sizeof(why), "reading seccomp notifications failed: %s", strerror(-r));
            uv_poll_stop(h);
            if (l->o.on_fail)
                l->o.on_fail(l->o.ud, why);
            return;
        }
        handle(l);
    }
}

static void on_closed(uv_handle_t *h);

int ic_sc_listener_start(uv_loop_t *loop, int notify_fd, const struct ic_sc_listener_opts *o,
                         ic_sc_listener **out, ic_err *err)
{
    ic_sc_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(notify_fd);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    l->fd = notify_fd;
    l->o = *o;
    int r = seccomp_notify_alloc(&l->req, &l->resp);
    if (r < 0) {
        close(notify_fd);
        free(l);
        return ic_err_set(err, -r, "seccomp notifications are not available: %s", strerror(-r));
    }
    r = uv_poll_init(loop, &l->poll, notify_fd);
    if (r < 0) {
        seccomp_notify_free(l->req, l->resp);
        close(notify_fd);
        free(l);
        return ic_err_set(err, -r, "cannot poll the seccomp descriptor: %s", uv_strerror(r));
    }
    l->poll.data = l;
    r = uv_poll_start(&l->poll, UV_READABLE | UV_DISCONNECT, on_poll);
    if (r < 0) {
        ic_sc_listener_close(l, NULL, NULL);
        return ic_err_set(err, -r, "cannot poll the seccomp descriptor: %s", uv_strerror(r));
    }
    *out = l;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    ic_sc_listener *l = h->data;
    void (*cb)(void *) = l->closed;
    void *ud = l->closed_ud;
    close(l->fd);
    seccomp_notify_free(l->req, l->resp);
    free(l);
    if (cb)
        cb(ud);
}

void ic_sc_listener_close(ic_sc_listener *l, void (*closed)(void *ud), void *ud)
{
    l->closed = closed;
    l->closed_ud = ud;
    uv_close((uv_handle_t *)&l->poll, on_closed);
}
