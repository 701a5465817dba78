/*
 * fc_run.c - runs a short helper program (firecracker --version,
 * seccompiler-bin) on the event loop with uv_spawn, keeps the first 16 KiB
 * of its stdout and stderr, and kills it when it overstays its timeout.
 */
#include "vm/fc.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_OUT_MAX ((size_t)16 * 1024)

struct ic_fc_runner {
    uv_process_t proc;
    uv_pipe_t out;
    uv_timer_t timer;
    ic_fc_run_fn cb;
    void *ud;
    char buf[RUN_OUT_MAX + 1];
    size_t len;
    char scratch[4096];
    bool exited, eof, timed_out, cancelled, reported;
    int64_t status;
    int sig;
    int handles;
    char name[128];
    uint32_t timeout_ms;
};

static void on_closed(uv_handle_t *h)
{
    ic_fc_runner *r = h->data;
    if (--r->handles == 0)
        free(r);
}

static void close_all(ic_fc_runner *r)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&r->out, (uv_handle_t *)&r->timer};
    for (size_t i = 0; i < 2; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], on_closed);
    /* The process handle closes once libuv has reaped the child. */
    if (r->exited && !uv_is_closing((uv_handle_t *)&r->proc))
        uv_close((uv_handle_t *)&r->proc, on_closed);
}

static void maybe_report(ic_fc_runner *r)
{
    if (!r->exited || !r->eof || r->reported)
        return;
    r->reported = true;
    r->buf[r->len] = '\0';
    if (!r->cancelled) {
        ic_err err = {0};
        if (r->timed_out)
            ic_err_set(&err, ETIMEDOUT, "%s did not finish within %.1f s", r->name,
                       r->timeout_ms / 1000.0);
        r->cb(r->status, r->sig, r->buf, r->len, r->timed_out ? &err : NULL, r->ud);
    }
    close_all(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    ic_fc_runner *r = h->data;
    *b = uv_buf_init(r->scratch, sizeof(r->scratch));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    ic_fc_runner *r = s->data;
    if (n > 0) {
        size_t take = (size_t)n;
        if (take > RUN_OUT_MAX - r->len)
            take = RUN_OUT_MAX - r->len;
        memcpy(r->buf + r->len, b->base, take);
        r->len += take;
        return;
    }
    if (n < 0) {
        uv_read_stop(s);
        r->eof = true;
        maybe_report(r);
    }
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig)
{
    ic_fc_runner *r = p->data;
    r->exited = true;
    r->status = status;
    r->sig = sig;
    uv_timer_stop(&r->timer);
    if (r->reported || r->cancelled) {
        if (!uv_is_closing((uv_handle_t *)&r->proc))
            uv_close((uv_handle_t *)&r->proc, on_closed);
        if (!r->reported)
            close_all(r);
        return;
    }
    maybe_report(r);
}

static void on_timeout(uv_timer_t *t)
{
    ic_fc_runner *r = t->data;
    r->timed_out = true;
    uv_process_kill(&r->proc, SIGKILL);
}

int ic_fc_run(uv_loop_t *loop, char *const argv[], uint32_t timeout_ms, ic_fc_run_fn cb,
              void *ud, ic_fc_runner **out, ic_err *err)
{
    ic_fc_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return ic_err_set(err, ENOMEM, "out of memory");
    const char *slash = strrchr(argv[0], '/');
    snprintf(r->name, sizeof(r->name), "%s", slash ? slash + 1 : argv[0]);
    r->cb = cb;
    r->ud = ud;
    r->timeout_ms = timeout_ms;
    /* One pipe for both stdout and stderr: errors read best in order. */
    uv_file fds[2];
    int rc = uv_pipe(fds, 0, 0);
    if (rc < 0) {
        free(r);
        return ic_err_set(err, -rc, "cannot create a pipe: %s", uv_strerror(rc));
    }
    uv_pipe_init(loop, &r->out, 0);
    uv_pipe_open(&r->out, fds[0]);
    uv_timer_init(loop, &r->timer);
    r->out.data = r->timer.data = r->proc.data = r;
    r->handles = 2;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
        {.flags = UV_INHERIT_FD, .data.fd = fds[1]},
    };
    uv_process_options_t opts = {
        .exit_cb = on_proc_exit,
        .file = argv[0],
        .args = (char **)argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    rc = uv_spawn(loop, &r->proc, &opts);
    close(fds[1]);
    if (rc < 0) {
        /* A failed uv_spawn still initialised the handle: close it too. */
        r->handles++;
        r->exited = true;
        r->cancelled = true;
        close_all(r);
        return ic_err_set(err, -rc, "cannot run %s: %s", argv[0], uv_strerror(rc));
    }
    r->handles++;
    uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
    uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
    *out = r;
    return 0;
}

void ic_fc_run_cancel(ic_fc_runner *r)
{
    if (!r || r->cancelled || r->reported)
        return;
    r->cancelled = true;
    uv_timer_stop(&r->timer);
    if (!r->exited)
        uv_process_kill(&r->proc, SIGKILL);
    uv_read_stop((uv_stream_t *)&r->out);
    r->eof = true;
    if (r->exited)
        close_all(r);
    /* Otherwise on_proc_exit closes everything once the child is reaped. */
}
