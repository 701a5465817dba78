/*
 * sandbox.c - a VM plus its guest channel: start and readiness deadline,
 * routing of guest streams to commands and file copies, clean shutdown.
 *
 * Every request that owns a DATA stream (exec, file.get) registers a route
 * keyed by its request id; DATA frames and notifications find their owner
 * through it. File copies live in files.c; this file owns the lifecycle
 * and commands.
 */
#include "sandbox/internal.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define POWEROFF_ANSWER_MS 2000
#define POWEROFF_GRACE_MS 5000
#define EXEC_ANSWER_MS 30000

struct ic_exec {
    ic_sandbox *sb;
    uint32_t id;
    bool started;
    int eof_seen;                 /* stdout/stderr ends received */
    const struct ic_exec_events *ev;
    void *ud;
};

static double since_start(const ic_sandbox *sb)
{
    return (double)(uv_hrtime() - sb->t0) / 1e6;
}

/* ---- routes ------------------------------------------------------------ */

int ic_sandbox__route_add(ic_sandbox *sb, uint32_t stream, const struct ic_route_ops *ops, void *obj)
{
    struct ic_route *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->stream = stream;
    r->ops = ops;
    r->obj = obj;
    r->next = sb->routes;
    sb->routes = r;
    return 0;
}

void ic_sandbox__route_del(ic_sandbox *sb, uint32_t stream)
{
    for (struct ic_route **pp = &sb->routes; *pp; pp = &(*pp)->next) {
        if ((*pp)->stream == stream) {
            struct ic_route *r = *pp;
            *pp = r->next;
            free(r);
            return;
        }
    }
}

static struct ic_route *route_find(ic_sandbox *sb, uint32_t stream)
{
    for (struct ic_route *r = sb->routes; r; r = r->next)
        if (r->stream == stream)
            return r;
    return NULL;
}

/* Tells every route's owner that the sandbox is gone, then drops them. */
static void routes_abort(ic_sandbox *sb, const ic_err *err)
{
    while (sb->routes) {
        struct ic_route *r = sb->routes;
        sb->routes = r->next;
        if (r->ops->abort)
            r->ops->abort(r->obj, err);
        free(r);
    }
}

/* ---- channel events ------------------------------------------------------ */

static void lost(ic_sandbox *sb, const ic_err *err)
{
    if (sb->phase == IC_SB_READY) {
        sb->phase = IC_SB_LOST;
        routes_abort(sb, err);
        if (sb->lost)
            sb->lost(sb, err, sb->ud);
    } else if (sb->phase == IC_SB_STARTING) {
        sb->phase = IC_SB_LOST;
        uv_timer_stop(&sb->ready_timer);
        sb->ready(sb, err, sb->ud);
    }
}

static void on_rpc_ready(ic_rpc *rpc, const char *agent, void *ud)
{
    ic_sandbox *sb = ud;
    if (sb->phase != IC_SB_STARTING)
        return;
    sb->timings.guest_ready = since_start(sb);
    sb->phase = IC_SB_READY;
    uv_timer_stop(&sb->ready_timer);
    ic_log_info("vm %s: guest agent ready after %.0f ms (%s)", ic_vm_id(sb->vm),
                sb->timings.guest_ready, agent);
    sb->ready(sb, NULL, sb->ud);
}

static void on_rpc_data(ic_rpc *rpc, uint32_t stream, uint8_t channel, const uint8_t *p, size_t n,
                        void *ud)
{
    ic_sandbox *sb = ud;
    struct ic_route *r = route_find(sb, stream);
    if (!r) {
        ic_log_debug("guest data for unknown stream %u dropped", stream);
        return;
    }
    r->ops->data(r->obj, channel, p, n);
}

static void on_rpc_notify(ic_rpc *rpc, const ic_msg *m, void *ud)
{
    ic_sandbox *sb = ud;
    json_t *id = json_object_get(m->params, "id");
    if (strcmp(m->method, IC_N_LOG) == 0) {
        ic_log_info("guest: %s", json_string_value(json_object_get(m->params, "message")) ?: "");
        return;
    }
    struct ic_route *r = json_is_integer(id) ? route_find(sb, (uint32_t)json_integer_value(id)) : NULL;
    if (!r || !r->ops->notify) {
        ic_log_debug("guest notification %s for no known request dropped", m->method);
        return;
    }
    r->ops->notify(r->obj, m);
}

static void on_rpc_drained(ic_rpc *rpc, void *ud)
{
    ic_sandbox *sb = ud;
    if (sb->drain_fn)
        sb->drain_fn(sb, sb->drain_ud);
    ic_sandbox__files_drained(sb);
}

static void on_rpc_closed(ic_rpc *rpc, const ic_err *err, void *ud)
{
    ic_sandbox *sb = ud;
    sb->rpc = NULL;
    if (sb->phase == IC_SB_STOPPING)
        return; /* expected: the guest powered off */
    lost(sb, err);
}

static const struct ic_rpc_events rpc_events = {
    .ready = on_rpc_ready,
    .notify = on_rpc_notify,
    .data = on_rpc_data,
    .drained = on_rpc_drained,
    .closed = on_rpc_closed,
};

/* ---- VM events and teardown ---------------------------------------------- */

static void finish_teardown(ic_sandbox *sb);

static void on_vm_event(ic_vm *vm, enum ic_vm_event ev, const ic_err *err, void *ud)
{
    ic_sandbox *sb = ud;
    ic_err e = {0};
    switch (ev) {
    case IC_VM_EV_CHANNEL:
        sb->timings.channel_up = since_start(sb);
        if (ic_rpc_open(ic_vm_take_channel(vm), &rpc_events, sb, &sb->rpc, &e) < 0)
            lost(sb, &e);
        break;
    case IC_VM_EV_FAILED:
        lost(sb, err);
        break;
    case IC_VM_EV_EXITED:
        if (sb->phase == IC_SB_STOPPING) {
            finish_teardown(sb);
            return;
        }
        if (!err) {
            ic_err_set(&e, ECHILD, "the VM stopped");
            err = &e;
        }
        lost(sb, err);
        break;
    }
}

static void on_ready_timeout(uv_timer_t *t)
{
    ic_sandbox *sb = t->data;
    ic_err err = {0};
    char tail[300];
    ic_vm_console_tail(sb->vm, tail, sizeof(tail));
    ic_err_set(&err, ETIMEDOUT, "the guest agent did not answer within %.1f s%s%s",
               sb->ready_timeout_ms / 1000.0, tail[0] ? "; console ends with: " : "", tail);
    lost(sb, &err);
}

static void on_vm_destroyed(const ic_err *err, void *ud)
{
    ic_sandbox *sb = ud;
    sb->timings.destroyed = since_start(sb);
    if (err)
        ic_log_warn("cleanup: %s", err->msg);
    ic_sandbox_done_fn done = sb->done;
    void *done_ud = sb->done_ud;
    struct ic_sandbox_timings t = sb->timings;
    ic_err e = {0};
    if (err)
        e = *err;
    free(sb);
    if (done)
        done(&t, e.code ? &e : NULL, done_ud);
}

static void on_timer_closed(uv_handle_t *h)
{
    ic_sandbox *sb = h->data;
    ic_vm_destroy(sb->vm, on_vm_destroyed, sb);
}

static void finish_teardown(ic_sandbox *sb)
{
    if (sb->phase == IC_SB_GONE)
        return;
    sb->phase = IC_SB_GONE;
    ic_err err = {0};
    ic_err_set(&err, ECANCELED, "the VM was shut down");
    routes_abort(sb, &err);
    ic_sandbox__files_abort(sb, &err);
    if (sb->rpc)
        ic_rpc_close(sb->rpc);
    sb->rpc = NULL;
    uv_close((uv_handle_t *)&sb->ready_timer, on_timer_closed);
}

static void on_poweroff_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    ic_sandbox *sb = ud;
    if (err && sb->phase == IC_SB_STOPPING && sb->vm)
        ic_log_debug("poweroff request: %s", err->msg);
}

static void begin_shutdown(ic_sandbox *sb, bool polite, ic_sandbox_done_fn done, void *ud)
{
    if (sb->phase == IC_SB_STOPPING || sb->phase == IC_SB_GONE)
        return;
    sb->done = done;
    sb->done_ud = ud;
    sb->timings.shutdown_begun = since_start(sb);
    uv_timer_stop(&sb->ready_timer);
    bool ask = polite && sb->rpc && sb->phase == IC_SB_READY;
    sb->phase = IC_SB_STOPPING;
    if (!ic_vm_running(sb->vm)) {
        finish_teardown(sb);
        return;
    }
    if (ask) {
        ic_err err = {0};
        if (ic_rpc_call(sb->rpc, IC_M_POWEROFF, NULL, POWEROFF_ANSWER_MS, on_poweroff_answer, sb,
                        NULL, &err) < 0)
            ask = false;
    }
    ic_vm_stop(sb->vm, ask ? POWEROFF_GRACE_MS : 0);
}

void ic_sandbox_shutdown(ic_sandbox *sb, ic_sandbox_done_fn done, void *ud)
{
    begin_shutdown(sb, true, done, ud);
}

void ic_sandbox_kill(ic_sandbox *sb, ic_sandbox_done_fn done, void *ud)
{
    begin_shutdown(sb, false, done, ud);
}

int ic_sandbox_start(uv_loop_t *loop, const struct ic_vm_config *cfg, uint32_t ready_timeout_ms,
                     ic_sandbox_ready_fn ready, ic_sandbox_lost_fn lostfn, void *ud,
                     ic_sandbox **out, ic_err *err)
{
    _cleanup_free_ ic_sandbox *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return ic_err_set(err, ENOMEM, "out of memory");
    sb->loop = loop;
    sb->t0 = uv_hrtime();
    sb->ready = ready;
    sb->lost = lostfn;
    sb->ud = ud;
    sb->ready_timeout_ms = ready_timeout_ms;
    sb->phase = IC_SB_STARTING;
    int r = ic_vm_create(loop, cfg, on_vm_event, sb, &sb->vm, err);
    if (r < 0)
        return r;
    uv_timer_init(loop, &sb->ready_timer);
    sb->ready_timer.data = sb;
    r = ic_vm_start(sb->vm, err);
    if (r < 0) {
        /* Caller gets the error now; teardown still runs on the loop. */
        ic_sandbox *doomed = TAKE_PTR(sb);
        doomed->phase = IC_SB_STOPPING;
        finish_teardown(doomed);
        return r;
    }
    sb->timings.vmm_started = since_start(sb);
    uv_timer_start(&sb->ready_timer, on_ready_timeout, ready_timeout_ms, 0);
    *out = TAKE_PTR(sb);
    return 0;
}

const ic_vm *ic_sandbox_vm(const ic_sandbox *sb) { return sb->vm; }
const struct ic_sandbox_timings *ic_sandbox_timings(const ic_sandbox *sb) { return &sb->timings; }

size_t ic_sandbox_queued(const ic_sandbox *sb)
{
    return sb->rpc ? ic_rpc_queued(sb->rpc) : 0;
}

void ic_sandbox_on_drain(ic_sandbox *sb, void (*fn)(ic_sandbox *sb, void *ud), void *ud)
{
    sb->drain_fn = fn;
    sb->drain_ud = ud;
}

void ic_sandbox_pause_output(ic_sandbox *sb, bool paused)
{
    if (sb->rpc)
        ic_rpc_pause(sb->rpc, paused);
}

int ic_sandbox__ready_rpc(ic_sandbox *sb, ic_rpc **out, ic_err *err)
{
    if (sb->phase != IC_SB_READY || !sb->rpc)
        return ic_err_set(err, ENOTCONN, "the sandbox is not running");
    *out = sb->rpc;
    return 0;
}

/* ---- commands ------------------------------------------------------------ */

static void exec_free(ic_exec *ex)
{
    ic_sandbox__route_del(ex->sb, ex->id);
    free(ex);
}

static void exec_data(void *obj, uint8_t channel, const uint8_t *p, size_t n)
{
    ic_exec *ex = obj;
    if (channel != 1 && channel != 2) {
        ic_log_warn("guest sent command %u data on channel %u; ignored", ex->id, channel);
        return;
    }
    if (n == 0)
        ex->eof_seen++;
    ex->ev->output(ex, channel, p, n, ex->ud);
}

static void exec_notify(void *obj, const ic_msg *m)
{
    ic_exec *ex = obj;
    if (strcmp(m->method, IC_N_EXIT) != 0)
        return;
    struct ic_exec_status st = {
        .code = (int)json_integer_value(json_object_get(m->params, "code")),
        .signal = (int)json_integer_value(json_object_get(m->params, "signal")),
        .timed_out = json_is_true(json_object_get(m->params, "timed_out")),
        .duration_ms = (uint64_t)json_integer_value(json_object_get(m->params, "duration_ms")),
    };
    ex->ev->exited(ex, &st, ex->ud);
    exec_free(ex);
}

static void exec_abort(void *obj, const ic_err *err)
{
    ic_exec *ex = obj;
    /* The route list is being emptied by the caller: just free. */
    if (!ex->started && ex->ev->started)
        ex->ev->started(ex, 0, err, ex->ud);
    free(ex);
}

static const struct ic_route_ops exec_route = {
    .data = exec_data,
    .notify = exec_notify,
    .abort = exec_abort,
};

static void on_exec_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    ic_exec *ex = ud;
    if (err) {
        ic_sandbox *sb = ex->sb;
        if (ex->ev->started)
            ex->ev->started(ex, 0, err, ex->ud);
        /* On channel loss routes_abort frees ex; otherwise free here. */
        if (route_find(sb, ex->id))
            exec_free(ex);
        return;
    }
    ex->started = true;
    int pid = (int)json_integer_value(json_object_get(reply->result, "pid"));
    if (ex->ev->started)
        ex->ev->started(ex, pid, NULL, ex->ud);
}

static json_t *string_array(const char *const *v)
{
    json_t *a = json_array();
    for (size_t i = 0; v && v[i]; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

int ic_sandbox_exec(ic_sandbox *sb, const struct ic_exec_spec *spec,
                    const struct ic_exec_events *ev, void *ud, ic_exec **out, ic_err *err)
{
    ic_rpc *rpc = NULL;
    int r = ic_sandbox__ready_rpc(sb, &rpc, err);
    if (r < 0)
        return r;
    if (!spec->argv || !spec->argv[0])
        return ic_err_set(err, EINVAL, "no command given");
    json_t *params = json_pack("{s:o, s:o, s:s, s:b, s:I}", "argv", string_array(spec->argv),
                               "env", string_array(spec->env), "cwd", spec->cwd ? spec->cwd : "/",
                               "stdin", spec->stdin_stream, "timeout_ms",
                               (json_int_t)spec->timeout_ms);
    if (!params)
        return ic_err_set(err, EINVAL, "the command line is not valid UTF-8");
    ic_exec *ex = calloc(1, sizeof(*ex));
    if (!ex) {
        json_decref(params);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    ex->sb = sb;
    ex->ev = ev;
    ex->ud = ud;
    r = ic_rpc_call(rpc, IC_M_EXEC, params, EXEC_ANSWER_MS, on_exec_answer, ex, &ex->id, err);
    json_decref(params);
    if (r < 0 || ic_sandbox__route_add(sb, ex->id, &exec_route, ex) < 0) {
        /* A queued request whose route failed is answered into the void. */
        free(ex);
        return r < 0 ? r : ic_err_set(err, ENOMEM, "out of memory");
    }
    *out = ex;
    return 0;
}

int ic_exec_write_stdin(ic_exec *ex, const void *p, size_t n, ic_err *err)
{
    ic_rpc *rpc = NULL;
    int r = ic_sandbox__ready_rpc(ex->sb, &rpc, err);
    if (r < 0)
        return r;
    return ic_rpc_send_data(rpc, ex->id, IC_CHAN_STDIN, p, n, err);
}

static void on_signal_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    if (err && err->code != ESRCH)
        ic_log_warn("forwarding a signal failed: %s", err->msg);
}

int ic_exec_signal(ic_exec *ex, int sig, ic_err *err)
{
    ic_rpc *rpc = NULL;
    int r = ic_sandbox__ready_rpc(ex->sb, &rpc, err);
    if (r < 0)
        return r;
    json_t *params = json_pack("{s:I, s:i}", "id", (json_int_t)ex->id, "signal", sig);
    r = ic_rpc_call(rpc, IC_M_SIGNAL, params, EXEC_ANSWER_MS, on_signal_answer, NULL, NULL, err);
    json_decref(params);
    return r;
}
