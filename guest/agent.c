/*
 * agent.c - one host connection: handshake, the poll() loop, dispatch of
 * frames to the method handlers, and the write queue (docs/protocol.md).
 *
 * The loop owns every file descriptor the connection uses: the channel,
 * the signalfd that reports exited children, and the pipes of running
 * processes. Each turn it (1) decodes buffered frames unless some process's
 * stdin is full, (2) streams file.get bytes, (3) flushes the write queue,
 * (4) polls, (5) handles events, timers and finished processes. Nothing in
 * it blocks except poll() itself.
 */
#include "guest.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ironclaw/cleanup.h"

/* ---- process-wide state ------------------------------------------------ */

int ic_agent_init(ic_agent *a, bool vm, ic_err *err)
{
    memset(a, 0, sizeof(*a));
    a->vm = vm;
    a->sigfd = -1;
    /* Writes to a closed pipe or socket must come back as EPIPE, not kill
     * the agent; children get the default back before exec. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return ic_err_sys(err, errno, "blocking SIGCHLD");
    a->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a->sigfd < 0)
        return ic_err_sys(err, errno, "signalfd");
    /* Without its filter the agent still serves files, but runs nothing. */
    ic_err ferr = {0};
    if (ic_guest_filter_build(&a->tools, &ferr) < 0)
        glog_error("%s; commands will be refused", ferr.msg);
    return 0;
}

void ic_agent_free(ic_agent *a)
{
    if (a->sigfd >= 0)
        close(a->sigfd);
    a->sigfd = -1;
    ic_guest_filter_free(&a->tools);
}

void ic_agent_reap(ic_agent *a, ic_conn *c)
{
    struct signalfd_siginfo si;
    while (read(a->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    /* SIGCHLDs coalesce, so reap until nothing is left. */
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        if (!c || !ic_proc_reaped(c, pid, status))
            glog_debug("reaped orphan %d (status 0x%x)", (int)pid, (unsigned)status);
    }
}

/* ---- poll set ------------------------------------------------------------ */

int ic_pollset_add(ic_pollset *ps, int fd, short events, void *owner, uint8_t tag)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        struct pollfd *pfd = realloc(ps->pfd, cap * sizeof(*pfd));
        if (!pfd)
            return -ENOMEM;
        ps->pfd = pfd;
        void **owner_arr = realloc(ps->owner, cap * sizeof(*owner_arr));
        if (!owner_arr)
            return -ENOMEM;
        ps->owner = owner_arr;
        uint8_t *tags = realloc(ps->tag, cap);
        if (!tags)
            return -ENOMEM;
        ps->tag = tags;
        ps->cap = cap;
    }
    ps->pfd[ps->n] = (struct pollfd){.fd = fd, .events = events};
    ps->owner[ps->n] = owner;
    ps->tag[ps->n] = tag;
    ps->n++;
    return 0;
}

void ic_pollset_free(ic_pollset *ps)
{
    free(ps->pfd);
    free(ps->owner);
    free(ps->tag);
    memset(ps, 0, sizeof(*ps));
}

/* ---- replies ------------------------------------------------------------- */

void ic_conn_fail(ic_conn *c, int code, const char *fmt, ...)
{
    if (c->error < 0)
        return;
    if (code <= 0)
        code = EPROTO;
    c->error = -code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
    va_end(ap);
    c->err.code = code;
}

void ic_conn_reply(ic_conn *c, uint32_t id, json_t *result)
{
    ic_err e;
    int r = ic_msg_put_response(&c->out, id, result, &e);
    json_decref(result);
    if (r == -EMSGSIZE)
        ic_conn_error(c, id, EMSGSIZE, "the result does not fit in one frame");
    else if (r < 0)
        ic_conn_fail(c, -r, "answering request %u: %s", id, e.msg);
}

void ic_conn_error(ic_conn *c, uint32_t id, int code, const char *fmt, ...)
{
    char msg[IC_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    glog_debug("request %u: error %d: %s", id, code, msg);
    ic_err e;
    int r = ic_msg_put_error(&c->out, id, code, msg, &e);
    if (r < 0)
        ic_conn_fail(c, -r, "answering request %u: %s", id, e.msg);
}

void ic_conn_notify(ic_conn *c, const char *method, json_t *params)
{
    ic_err e;
    int r = ic_msg_put_notify(&c->out, method, params, &e);
    json_decref(params);
    if (r < 0)
        ic_conn_fail(c, -r, "sending %s: %s", method, e.msg);
}

void ic_conn_data(ic_conn *c, uint32_t stream, uint8_t channel, const void *data, size_t len)
{
    ic_err e;
    int r = ic_frame_put_data(&c->out, stream, channel, data, len, &e);
    if (r < 0)
        ic_conn_fail(c, -r, "sending data: %s", e.msg);
}

ssize_t ic_conn_data_read(ic_conn *c, uint32_t stream, uint8_t channel, int fd)
{
    uint8_t *payload;
    ic_err e;
    if (ic_frame_data_open(&c->out, IC_DATA_CHUNK, &payload, &e) < 0) {
        ic_conn_fail(c, ENOMEM, "sending data: %s", e.msg);
        errno = EAGAIN;
        return -1;
    }
    ssize_t n = read(fd, payload, IC_DATA_CHUNK);
    if (n > 0)
        ic_frame_data_close(&c->out, stream, channel, (size_t)n);
    return n;
}

bool ic_conn_id_busy(const ic_conn *c, uint32_t id)
{
    return ic_proc_has(c, id) || ic_files_has(c, id);
}

/* ---- parameters -------------------------------------------------------- */

static int param_bad(ic_conn *c, uint32_t id, const char *key, const char *what)
{
    ic_conn_error(c, id, EINVAL, "\"%s\" %s", key, what);
    return -EINVAL;
}

int ic_param_string(ic_conn *c, uint32_t id, json_t *params, const char *key, bool required,
                    const char **out)
{
    json_t *v = json_object_get(params, key);
    if (!v)
        return required ? param_bad(c, id, key, "is required") : 0;
    if (!json_is_string(v))
        return param_bad(c, id, key, "must be a string");
    /* C strings end at the first NUL; one inside would change meaning. */
    if (strlen(json_string_value(v)) != json_string_length(v))
        return param_bad(c, id, key, "must not contain NUL");
    *out = json_string_value(v);
    return 0;
}

int ic_param_path(ic_conn *c, uint32_t id, json_t *params, const char *key, const char **out)
{
    const char *p = NULL;
    int r = ic_param_string(c, id, params, key, true, &p);
    if (r < 0)
        return r;
    if (p[0] != '/')
        return param_bad(c, id, key, "must be an absolute path");
    if (strlen(p) >= IC_GUEST_PATH_MAX)
        return param_bad(c, id, key, "is longer than 4095 bytes");
    *out = p;
    return 0;
}

int ic_param_int(ic_conn *c, uint32_t id, json_t *params, const char *key, bool required,
                 long long min, long long max, long long *out)
{
    json_t *v = json_object_get(params, key);
    if (!v)
        return required ? param_bad(c, id, key, "is required") : 0;
    if (!json_is_integer(v))
        return param_bad(c, id, key, "must be an integer");
    long long n = json_integer_value(v);
    if (n < min || n > max) {
        ic_conn_error(c, id, EINVAL, "\"%s\" must be in %lld..%lld", key, min, max);
        return -EINVAL;
    }
    *out = n;
    return 0;
}

int ic_param_bool(ic_conn *c, uint32_t id, json_t *params, const char *key, bool *out)
{
    json_t *v = json_object_get(params, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return param_bad(c, id, key, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

/* ---- small methods and dispatch ------------------------------------------ */

static void method_ping(ic_conn *c, uint32_t id, json_t *params)
{
    ic_conn_reply(c, id, json_pack("{s:I}", "uptime_ms", (json_int_t)ic_uptime_ms()));
}

static void method_poweroff(ic_conn *c, uint32_t id, json_t *params)
{
    ic_conn_reply(c, id, NULL);
    /* No further frames are read; the loop ends once the answer is out. */
    c->poweroff = true;
}

static const struct method {
    const char *name;
    void (*run)(ic_conn *c, uint32_t id, json_t *params);
} methods[] = {
    {IC_M_EXEC, ic_proc_exec},
    {IC_M_SIGNAL, ic_proc_signal},
    {IC_M_FILE_PUT, ic_files_put},
    {IC_M_FILE_GET, ic_files_get},
    {IC_M_FILE_LIST, ic_files_list},
    {IC_M_PING, method_ping},
    {IC_M_POWEROFF, method_poweroff},
};

static void dispatch_msg(ic_conn *c, const ic_frame *f)
{
    ic_msg m;
    ic_err e;
    if (ic_msg_parse(f->data, f->len, &m, &e) < 0) {
        ic_conn_fail(c, EPROTO, "%s", e.msg);
        return;
    }
    if (m.type != IC_MSG_REQUEST) {
        /* The host only sends requests; anything else is ignored, the
         * same leniency as for unknown members. */
        glog_debug("ignoring a non-request message from the host");
        ic_msg_release(&m);
        return;
    }
    const struct method *found = NULL;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, m.method) == 0)
            found = &methods[i];
    glog_debug("request %u: %s", m.id, m.method);
    if (found)
        found->run(c, m.id, m.params);
    else
        ic_conn_error(c, m.id, ENOSYS, "unknown method \"%s\"", m.method);
    ic_msg_release(&m);
}

static void dispatch_data(ic_conn *c, const ic_frame *f)
{
    switch (f->channel) {
    case IC_CHAN_STDIN:
        ic_proc_stdin(c, f->stream, f->data, f->len);
        break;
    case IC_CHAN_FILE:
        ic_files_data(c, f->stream, f->data, f->len);
        break;
    default:
        glog_debug("ignoring DATA for stream %u on channel %u", f->stream, f->channel);
        break;
    }
}

static void dispatch_frame(ic_conn *c, const ic_frame *f)
{
    if (!c->got_hello) {
        if (f->kind != IC_FRAME_HELLO) {
            ic_conn_fail(c, EPROTO, "protocol error: the host's first frame is not a HELLO");
            return;
        }
        char peer[128];
        ic_err e;
        int r = ic_hello_check(f->data, f->len, "host", peer, sizeof(peer), &e);
        if (r < 0) {
            ic_conn_fail(c, -r, "%s", e.msg);
            return;
        }
        c->got_hello = true;
        glog_info("host connected: %s", peer);
        return;
    }
    if (f->kind == IC_FRAME_HELLO)
        ic_conn_fail(c, EPROTO, "protocol error: a second HELLO from the host");
    else if (f->kind == IC_FRAME_MSG)
        dispatch_msg(c, f);
    else
        dispatch_data(c, f);
}

/* Hands buffered frames to their handlers, pausing while a process's
 * stdin is full (the bytes wait in the decoder, none is dropped). */
static void conn_decode(ic_conn *c)
{
    while (c->error == 0 && !c->poweroff && !ic_proc_stdin_full(c)) {
        ic_frame f;
        ic_err e;
        int r = ic_decoder_next(c->dec, &f, &e);
        if (r == 0)
            return;
        if (r < 0) {
            ic_conn_fail(c, -r, "%s", e.msg);
            return;
        }
        dispatch_frame(c, &f);
    }
}

/* ---- channel I/O ------------------------------------------------------- */

static void conn_on_eof(ic_conn *c)
{
    ic_err e;
    ic_frame f;
    /* Whole frames still buffered (the loop may have been waiting on a
     * full stdin) are not a truncation; the host that sent them is gone,
     * so they are dropped unanswered. */
    while (ic_decoder_next(c->dec, &f, &e) == 1)
        ;
    if (ic_decoder_finish(c->dec, &e) < 0)
        ic_conn_fail(c, e.code, "%s", e.msg);
    c->eof = true;
}

/* One read(); returns the bytes read, 0 when there is nothing (more) to
 * read now, -1 once the channel has ended or failed. */
static ssize_t conn_read_once(ic_conn *c)
{
    uint8_t *p;
    size_t room;
    int r = ic_decoder_space(c->dec, (size_t)IC_GUEST_READ_CHUNK, &p, &room);
    if (r < 0) {
        ic_conn_fail(c, -r, "cannot buffer input: %s", strerror(-r));
        return -1;
    }
    ssize_t n = read(c->fd, p, room);
    if (n > 0) {
        ic_decoder_commit(c->dec, (size_t)n);
        c->await_host = false;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        /* virtio-serial: EAGAIN means the host end is connected. */
        c->await_host = false;
        return 0;
    }
    if (c->await_host) {
        /* A virtio-serial port reads EOF until the host end is open. */
        if (ic_now_ms() >= c->await_until)
            ic_conn_fail(c, ETIMEDOUT, "the host did not open its end of the channel in time");
        return 0;
    }
    if (n < 0 && errno != ECONNRESET && errno != EPIPE) {
        ic_conn_fail(c, errno, "reading the channel: %s", strerror(errno));
        return -1;
    }
    conn_on_eof(c);
    return -1;
}

/* A virtio-serial port hands out at most a page per read(), so a turn of
 * the loop reads until the channel is dry (up to IC_GUEST_READ_TURN
 * bytes): a poll() per page would cost the guest more than the bytes. */
static void conn_read(ic_conn *c)
{
    size_t got = 0;
    while (got < IC_GUEST_READ_TURN) {
        ssize_t n = conn_read_once(c);
        if (n <= 0)
            return;
        got += (size_t)n;
    }
}

/* Writes as much of the queue as the channel takes now. */
static void conn_flush(ic_conn *c)
{
    while (ic_buf_size(&c->out) > 0) {
        ssize_t n = write(c->fd, ic_buf_head(&c->out), ic_buf_size(&c->out));
        if (n > 0) {
            ic_buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            /* The host is gone: that is an end, not a protocol error. */
            glog_info("the host closed the channel");
            c->eof = true;
        } else {
            ic_conn_fail(c, errno, "writing the channel: %s", strerror(errno));
        }
        ic_buf_reset(&c->out);
        return;
    }
}

/* ---- the loop ------------------------------------------------------------ */

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* Builds this turn's poll set; returns the poll timeout in ms. */
static int conn_poll_setup(ic_conn *c, ic_pollset *ps, bool files_pending)
{
    ps->n = 0;
    int timeout = ic_proc_timers(c);
    if (ic_pollset_add(ps, c->agent->sigfd, POLLIN, NULL, IC_POLL_SIGNAL) < 0)
        goto nomem;
    size_t queued = ic_buf_size(&c->out);
    bool can_read = !c->poweroff && queued < IC_GUEST_OUT_MAX && !ic_proc_stdin_full(c);
    short ev = (can_read ? POLLIN : 0) | (queued ? POLLOUT : 0);
    if (c->await_host) {
        /* poll() reports HUP until the host end opens: retry by timer. */
        timeout = min_timeout(timeout, 20);
    } else if (ev && ic_pollset_add(ps, c->fd, ev, NULL, IC_POLL_CONN) < 0) {
        goto nomem;
    }
    if (ic_proc_poll_add(c, ps, queued < IC_GUEST_OUT_HIGH) < 0)
        goto nomem;
    if (files_pending && queued < IC_GUEST_OUT_HIGH)
        timeout = 0;
    return timeout;
nomem:
    ic_conn_fail(c, ENOMEM, "out of memory");
    return 0;
}

static void conn_poll_events(ic_conn *c, ic_pollset *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        short re = ps->pfd[i].revents;
        if (!re)
            continue;
        switch (ps->tag[i]) {
        case IC_POLL_SIGNAL:
            ic_agent_reap(c->agent, c);
            break;
        case IC_POLL_CONN:
            if (re & POLLOUT)
                conn_flush(c);
            if ((re & (POLLIN | POLLHUP | POLLERR)) && !c->eof && c->error == 0)
                conn_read(c);
            break;
        default:
            ic_proc_poll_event(c, ps->owner[i], ps->tag[i], re);
            break;
        }
    }
}

static int conn_loop(ic_conn *c)
{
    ic_pollset ps = {0};
    int end = IC_END_CLOSED;
    for (;;) {
        conn_decode(c);
        bool files_pending = ic_files_pump(c);
        conn_flush(c);
        if (c->error < 0) {
            end = c->error;
            break;
        }
        if (c->eof)
            break;
        if (c->poweroff && ic_buf_size(&c->out) == 0) {
            end = IC_END_POWEROFF;
            break;
        }
        int timeout = conn_poll_setup(c, &ps, files_pending);
        if (c->error < 0)
            continue;
        if (poll(ps.pfd, ps.n, timeout) < 0 && errno != EINTR) {
            ic_conn_fail(c, errno, "poll: %s", strerror(errno));
            continue;
        }
        if (c->await_host)
            conn_read(c);
        conn_poll_events(c, &ps);
        ic_proc_timers(c);
        ic_proc_sweep(c);
    }
    ic_pollset_free(&ps);
    return end;
}

int ic_conn_serve(ic_agent *a, int fd, bool await_host, ic_err *err)
{
    ic_conn c = {.agent = a, .fd = fd, .await_host = await_host};
    c.await_until = ic_now_ms() + 10000;
    c.dec = ic_decoder_new(0);
    if (!c.dec)
        return ic_err_set(err, ENOMEM, "out of memory");
    int r = ic_hello_put(&c.out, "guest", IC_GUEST_AGENT, err);
    if (r == 0)
        r = conn_loop(&c);
    else
        ic_err_wrap(err, "sending HELLO");
    if (c.error < 0 && err)
        *err = c.err;
    ic_proc_close_all(&c);
    ic_files_close_all(&c);
    ic_decoder_free(c.dec);
    ic_buf_free(&c.out);
    return r;
}
