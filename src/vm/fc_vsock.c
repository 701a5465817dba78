/*
 * fc_vsock.c - the host end of Firecracker's hybrid vsock.
 *
 * Firecracker listens on the Unix socket uds_path. A host program connects,
 * sends "CONNECT <port>\n" (in one write) and, when something in the guest
 * listens on that vsock port, reads "OK <host port>\n"; from then on the
 * socket is a byte stream to the guest. While the guest agent is not yet
 * listening, Firecracker closes the connection instead, so the connector
 * retries with a bounded backoff until its deadline.
 *
 * Everything runs on the event loop: a non-blocking socket watched with a
 * uv_poll_t per attempt, and one timer for both the backoff and the wait
 * for the answer. The answer is read one byte at a time up to its '\n', so
 * bytes the guest sends right after it (its HELLO) stay in the socket for
 * whoever reads the channel next.
 */
#include "vm/fc.h"

#include "ironclaw/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define BACKOFF_FIRST_MS 10u
#define BACKOFF_MAX_MS 250u
#define OK_LINE_MAX 32u          /* "OK 4294967295\n" is 14 bytes */

struct ic_fc_vsock {
    uv_loop_t *loop;
    struct sockaddr_un sa;
    uint32_t port, deadline_ms, handshake_ms;
    ic_fc_vsock_fn cb;
    void *ud;

    uv_timer_t timer;
    uv_poll_t *poll;         /* this attempt's watcher, NULL between attempts */
    int fd;
    char line[OK_LINE_MAX];
    size_t got;
    uint64_t start_ms;
    uint32_t backoff_ms;
    unsigned attempts;
    ic_err last;             /* why the last attempt failed */
    int handles;             /* open libuv handles; freed at zero once finished */
    bool finished;           /* callback called or cancelled */
};

static void attempt(ic_fc_vsock *c);

/* ---- parsing ---------------------------------------------------------------- */

int ic_fc_vsock_parse_ok(const char *buf, size_t n, size_t *line_len, uint32_t *hostport,
                         ic_err *err)
{
    const char *nl = memchr(buf, '\n', n);
    size_t len = nl ? (size_t)(nl - buf) : n;
    /* Every prefix must still be able to become "OK <digits>\n". */
    static const char ok[] = "OK ";
    for (size_t i = 0; i < len && i < 3; i++)
        if (buf[i] != ok[i])
            goto bad;
    uint64_t v = 0;
    for (size_t i = 3; i < len; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            goto bad;
        v = v * 10 + (uint64_t)(buf[i] - '0');
        if (v > UINT32_MAX || i > 3 + 10)
            goto bad;
    }
    if (!nl)
        return len >= OK_LINE_MAX ? ic_err_set(err, EPROTO, "Firecracker's answer to CONNECT "
                                               "has no end of line within %u bytes", OK_LINE_MAX)
                                  : -EAGAIN;
    if (len <= 3)
        goto bad;
    *line_len = len + 1;
    *hostport = (uint32_t)v;
    return 0;
bad: {
        char shown[OK_LINE_MAX * 4 + 1];
        size_t o = 0;
        for (size_t i = 0; i < len && i < OK_LINE_MAX; i++) {
            unsigned char ch = (unsigned char)buf[i];
            if (ch >= 0x20 && ch < 0x7f)
                shown[o++] = (char)ch;
            else
                o += (size_t)snprintf(shown + o, sizeof(shown) - o, "\\x%02x", ch);
        }
        shown[o] = '\0';
        return ic_err_set(err, EPROTO, "Firecracker answered CONNECT with \"%s\", not \"OK <port>\"",
                          shown);
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void maybe_free(ic_fc_vsock *c)
{
    if (c->finished && c->handles == 0)
        free(c);
}

static void on_closed(uv_handle_t *h)
{
    ic_fc_vsock *c = h->data;
    if ((void *)h != (void *)&c->timer)
        free(h);
    c->handles--;
    maybe_free(c);
}

/* Ends this attempt's watcher; the fd is closed unless keep_fd. The poll
 * handle is closed before the fd changes hands: closing it drops the fd
 * from epoll at once, so a later watcher on the same fd is not disturbed. */
static void end_attempt(ic_fc_vsock *c, bool keep_fd)
{
    uv_timer_stop(&c->timer);
    if (c->poll) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, on_closed);
        c->poll = NULL;
    }
    if (c->fd >= 0 && !keep_fd)
        close(c->fd);
    c->fd = -1;
    c->got = 0;
}

static void finish(ic_fc_vsock *c, uv_stream_t *channel, const ic_err *err)
{
    c->finished = true;
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, on_closed);
    c->cb(channel, err, c->ud);
    maybe_free(c);
}

void ic_fc_vsock_cancel(ic_fc_vsock *c)
{
    if (!c || c->finished)
        return;
    end_attempt(c, false);
    c->finished = true;
    uv_close((uv_handle_t *)&c->timer, on_closed);
    maybe_free(c);
}

static void fail_now(ic_fc_vsock *c, const ic_err *err)
{
    end_attempt(c, false);
    finish(c, NULL, err);
}

static void on_timer(uv_timer_t *t);

/* The attempt failed in a way that a later attempt may not: try again
 * after the backoff, unless the deadline has passed. */
static void retry(ic_fc_vsock *c)
{
    end_attempt(c, false);
    uint64_t spent = uv_now(c->loop) - c->start_ms;
    if (spent >= c->deadline_ms) {
        ic_err err = {0};
        ic_err_set(&err, ETIMEDOUT, "the guest agent did not accept a vsock connection on port %u "
                   "within %.1f s (%u attempts; the last one: %s)", c->port,
                   c->deadline_ms / 1000.0, c->attempts, c->last.msg);
        finish(c, NULL, &err);
        return;
    }
    uint32_t wait = c->backoff_ms;
    if (spent + wait > c->deadline_ms)
        wait = (uint32_t)(c->deadline_ms - spent);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    uv_timer_start(&c->timer, on_timer, wait, 0);
}

/* ---- one attempt ------------------------------------------------------------- */

static void succeed(ic_fc_vsock *c, uint32_t hostport)
{
    int fd = c->fd;
    end_attempt(c, true);
    uv_pipe_t *p = malloc(sizeof(*p));
    ic_err err = {0};
    int r = p ? uv_pipe_init(c->loop, p, 0) : UV_ENOMEM;
    if (r == 0 && (r = uv_pipe_open(p, fd)) < 0)
        uv_close((uv_handle_t *)p, (uv_close_cb)free);
    else if (r < 0)
        free(p);
    if (r < 0) {
        close(fd);
        ic_err_set(&err, -r, "cannot use the vsock connection: %s", uv_strerror(r));
        finish(c, NULL, &err);
        return;
    }
    ic_log_debug("vsock: connected to guest port %u (host port %u) after %u attempts", c->port,
                 hostport, c->attempts);
    finish(c, (uv_stream_t *)p, NULL);
}

/* Reads the answer byte by byte: never past its '\n'. */
static void read_answer(ic_fc_vsock *c)
{
    for (;;) {
        char ch = 0;
        ssize_t n = recv(c->fd, &ch, 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (n == 0 || errno == ECONNRESET || errno == EPIPE)
                ic_err_set(&c->last, ECONNRESET, "Firecracker closed the connection after CONNECT "
                           "(nothing listens on guest port %u yet)", c->port);
            else
                ic_err_sys(&c->last, errno, "reading Firecracker's answer to CONNECT");
            retry(c);
            return;
        }
        size_t got = c->got;
        c->line[got++] = ch;
        c->got = got;
        size_t len = 0;
        uint32_t hostport = 0;
        ic_err err = {0};
        int r = ic_fc_vsock_parse_ok(c->line, got, &len, &hostport, &err);
        if (r == 0) {
            succeed(c, hostport);
            return;
        }
        if (r != -EAGAIN) {
            /* Show the whole line in the error, not just its first byte. */
            while (c->got < OK_LINE_MAX && ch != '\n' && recv(c->fd, &ch, 1, 0) == 1)
                c->line[c->got++] = ch;
            ic_fc_vsock_parse_ok(c->line, c->got, &len, &hostport, &err);
            fail_now(c, &err);
            return;
        }
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    ic_fc_vsock *c = p->data;
    if (status < 0) {
        ic_err_set(&c->last, -status, "waiting for Firecracker's answer: %s", uv_strerror(status));
        retry(c);
        return;
    }
    read_answer(c);
}

static int send_connect(ic_fc_vsock *c)
{
    char cmd[32];
    int n = snprintf(cmd, sizeof(cmd), "CONNECT %u\n", c->port);
    /* One write: Firecracker reads the command from the first segment. */
    ssize_t w = send(c->fd, cmd, (size_t)n, MSG_NOSIGNAL);
    if (w == n)
        return 0;
    if (w < 0)
        return ic_err_sys(&c->last, errno, "sending CONNECT to Firecracker");
    return ic_err_set(&c->last, EPROTO, "sending CONNECT to Firecracker: short write");
}

static void attempt(ic_fc_vsock *c)
{
    c->attempts++;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        ic_err e = {0};
        ic_err_sys(&e, errno, "socket");
        fail_now(c, &e);
        return;
    }
    if (connect(c->fd, (struct sockaddr *)&c->sa, sizeof(c->sa)) < 0) {
        /* ENOENT/ECONNREFUSED: Firecracker is not listening (yet);
         * EAGAIN: its backlog is full. All worth another try. */
        ic_err_sys(&c->last, errno, "connecting to %s", c->sa.sun_path);
        retry(c);
        return;
    }
    if (send_connect(c) < 0) {
        retry(c);
        return;
    }
    c->poll = malloc(sizeof(*c->poll));
    if (!c->poll || uv_poll_init(c->loop, c->poll, c->fd) < 0) {
        free(c->poll);
        c->poll = NULL;
        ic_err e = {0};
        ic_err_set(&e, ENOMEM, "cannot watch the vsock connection");
        fail_now(c, &e);
        return;
    }
    c->poll->data = c;
    c->handles++;
    uv_poll_start(c->poll, UV_READABLE | UV_DISCONNECT, on_poll);
    uv_timer_start(&c->timer, on_timer, c->handshake_ms, 0);
}

static void on_timer(uv_timer_t *t)
{
    ic_fc_vsock *c = t->data;
    if (c->fd >= 0) {
        /* The answer did not come in time: this attempt is over. */
        ic_err_set(&c->last, ETIMEDOUT, "no answer to CONNECT within %u ms", c->handshake_ms);
        retry(c);
        return;
    }
    attempt(c);
}

int ic_fc_vsock_connect(uv_loop_t *loop, const struct ic_fc_vsock_opts *o, ic_fc_vsock_fn cb,
                        void *ud, ic_fc_vsock **out, ic_err *err)
{
    ic_fc_vsock *c = calloc(1, sizeof(*c));
    if (!c)
        return ic_err_set(err, ENOMEM, "out of memory");
    c->sa.sun_family = AF_UNIX;
    if (strlen(o->uds_path) >= sizeof(c->sa.sun_path)) {
        free(c);
        return ic_err_set(err, ENAMETOOLONG, "vsock socket path %s is too long for a Unix socket",
                          o->uds_path);
    }
    memcpy(c->sa.sun_path, o->uds_path, strlen(o->uds_path) + 1);
    c->loop = loop;
    c->port = o->port;
    c->deadline_ms = o->deadline_ms;
    c->handshake_ms = o->handshake_ms ? o->handshake_ms : 1000;
    c->cb = cb;
    c->ud = ud;
    c->fd = -1;
    c->backoff_ms = BACKOFF_FIRST_MS;
    c->start_ms = uv_now(loop);
    snprintf(c->last.msg, sizeof(c->last.msg), "none finished");
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->handles = 1;
    *out = c;
    uv_timer_start(&c->timer, on_timer, 0, 0);
    return 0;
}
