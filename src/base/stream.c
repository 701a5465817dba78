/*
 * stream.c - ordered, non-blocking local I/O for the event loop: ic_sink
 * (writes through the thread pool) and ic_source (reads through libuv
 * handles or the thread pool). See include/ironclaw/stream.h.
 */
#include "ironclaw/stream.h"

#include "ironclaw/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (256u * 1024u)

/* ---- sink ---------------------------------------------------------------- */

struct ic_sink {
    uv_loop_t *loop;
    int fd;
    bool owns_fd;
    bool sync;
    ic_buf queue;
    ic_buf inflight;
    uv_work_t work;
    bool busy;                 /* a pool job is running */
    bool closing;
    int work_errno;            /* from the pool thread */
    ic_err err;                /* first failure, sticky */
    ic_sink_drain_fn drain;
    void *drain_ud;
    ic_sink_done_fn done;
    void *done_ud;
};

/* Runs in a pool thread: blocking is fine here, and an fd someone made
 * non-blocking is waited on with poll() instead of spinning. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, -1);
        } else if (w < 0 && errno != EINTR) {
            return errno;
        }
    }
    return 0;
}

static void sink_work(uv_work_t *w)
{
    ic_sink *s = w->data;
    s->work_errno = 0;
    if (ic_buf_size(&s->inflight) > 0)
        s->work_errno = write_all(s->fd, ic_buf_head(&s->inflight), ic_buf_size(&s->inflight));
    if (s->closing && ic_buf_size(&s->queue) == 0 && s->owns_fd) {
        /* Only reached for the last batch: nothing else touches the fd. */
        if (s->sync && !s->work_errno && fsync(s->fd) < 0 && errno != EINVAL)
            s->work_errno = errno;
        if (close(s->fd) < 0 && !s->work_errno && errno != EINTR)
            s->work_errno = errno;
        s->fd = -1;
    }
}

static void sink_kick(ic_sink *s);

static void sink_finish(ic_sink *s)
{
    ic_sink_done_fn done = s->done;
    void *ud = s->done_ud;
    ic_err err = s->err;
    ic_buf_free(&s->queue);
    ic_buf_free(&s->inflight);
    free(s);
    if (done)
        done(err.code ? &err : NULL, ud);
}

static void sink_after(uv_work_t *w, int status)
{
    ic_sink *s = w->data;
    s->busy = false;
    ic_buf_reset(&s->inflight);
    if (s->work_errno && !s->err.code)
        ic_err_sys(&s->err, s->work_errno, "writing output failed");
    if (s->closing && s->fd < 0) {
        sink_finish(s);
        return;
    }
    if (s->closing) {
        sink_kick(s); /* may finish and free s */
        return;
    }
    sink_kick(s);
    if (s->drain && ic_sink_queued(s) < IC_SINK_HIGH_WATER / 4)
        s->drain(s, s->drain_ud);
}

static void sink_kick(ic_sink *s)
{
    if (s->busy)
        return;
    bool last = s->closing && s->owns_fd && s->fd >= 0;
    if (ic_buf_size(&s->queue) == 0 && !last) {
        if (s->closing)
            sink_finish(s);
        return;
    }
    ic_buf tmp = s->inflight;
    s->inflight = s->queue;
    s->queue = tmp;
    if (s->err.code)
        ic_buf_reset(&s->inflight); /* after a failure, drain without writing */
    s->busy = true;
    s->work.data = s;
    if (uv_queue_work(s->loop, &s->work, sink_work, sink_after) < 0) {
        sink_work(&s->work);
        sink_after(&s->work, 0);
    }
}

int ic_sink_open(uv_loop_t *loop, int fd, bool owns_fd, bool sync, ic_sink **out, ic_err *err)
{
    ic_sink *s = calloc(1, sizeof(*s));
    if (!s)
        return ic_err_set(err, ENOMEM, "out of memory");
    s->loop = loop;
    s->fd = fd;
    s->owns_fd = owns_fd;
    s->sync = sync;
    *out = s;
    return 0;
}

int ic_sink_write(ic_sink *s, const void *p, size_t n, ic_err *err)
{
    if (s->err.code) {
        *err = s->err;
        return -s->err.code;
    }
    if (n == 0)
        return 0;
    if (ic_buf_append(&s->queue, p, n) < 0)
        return ic_err_set(err, ENOMEM, "out of memory queueing output");
    sink_kick(s);
    return 0;
}

size_t ic_sink_queued(const ic_sink *s)
{
    return ic_buf_size(&s->queue) + ic_buf_size(&s->inflight);
}

void ic_sink_on_drain(ic_sink *s, ic_sink_drain_fn fn, void *ud)
{
    s->drain = fn;
    s->drain_ud = ud;
}

void ic_sink_close(ic_sink *s, ic_sink_done_fn done, void *ud)
{
    if (!s) {
        if (done)
            done(NULL, ud);
        return;
    }
    s->closing = true;
    s->done = done;
    s->done_ud = ud;
    if (!s->owns_fd)
        s->fd = -1;
    sink_kick(s);
}

/* ---- source -------------------------------------------------------------- */

struct ic_source {
    uv_loop_t *loop;
    int fd;
    bool owns_fd;
    bool paused;
    bool closed;
    bool ended;
    bool reading;              /* pool read in flight */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tty_t tty;
    } h;
    bool use_handle;
    uv_fs_t req;
    ic_source_read_fn fn;
    void *ud;
    char buf[CHUNK];
};

static void source_free(ic_source *src)
{
    if (src->owns_fd && src->fd >= 0 && !src->use_handle)
        close(src->fd);
    free(src);
}

static void source_end(ic_source *src, const ic_err *err)
{
    src->ended = true;
    src->fn(src, NULL, 0, err, src->ud);
}

/* Regular files and anything libuv cannot poll: thread-pool reads. */
static void pool_read_next(ic_source *src);

static void on_pool_read(uv_fs_t *req)
{
    ic_source *src = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    /* `reading` stays set through the callbacks so that an
     * ic_source_close() from inside them leaves the freeing to us. */
    if (!src->closed) {
        if (n > 0) {
            src->fn(src, src->buf, (size_t)n, NULL, src->ud);
        } else if (n == 0) {
            source_end(src, NULL);
        } else {
            ic_err err = {0};
            ic_err_set(&err, (int)-n, "reading input failed: %s", uv_strerror((int)n));
            source_end(src, &err);
        }
    }
    src->reading = false;
    if (src->closed) {
        source_free(src);
        return;
    }
    pool_read_next(src);
}

static void pool_read_next(ic_source *src)
{
    if (src->reading || src->paused || src->ended || src->closed)
        return;
    uv_buf_t b = uv_buf_init(src->buf, sizeof(src->buf));
    src->req.data = src;
    int r = uv_fs_read(src->loop, &src->req, src->fd, &b, 1, -1, on_pool_read);
    if (r < 0) {
        ic_err err = {0};
        ic_err_set(&err, -r, "reading input failed: %s", uv_strerror(r));
        source_end(src, &err);
        return;
    }
    src->reading = true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    ic_source *src = h->data;
    *out = uv_buf_init(src->buf, sizeof(src->buf));
}

static void on_stream_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    ic_source *src = s->data;
    if (src->closed || src->ended)
        return;
    if (n > 0) {
        src->fn(src, b->base, (size_t)n, NULL, src->ud);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(s);
    if (n == UV_EOF) {
        source_end(src, NULL);
        return;
    }
    ic_err err = {0};
    ic_err_set(&err, (int)-n, "reading input failed: %s", uv_strerror((int)n));
    source_end(src, &err);
}

static int open_handle(ic_source *src, ic_err *err)
{
    uv_handle_type t = uv_guess_handle(src->fd);
    int r;
    if (t == UV_TTY) {
        r = uv_tty_init(src->loop, &src->h.tty, src->fd, 1);
    } else if (t == UV_NAMED_PIPE) {
        /* libuv closes a pipe's fd with the handle: give it its own. */
        int pfd = src->owns_fd ? src->fd : fcntl(src->fd, F_DUPFD_CLOEXEC, 3);
        if (pfd < 0)
            return ic_err_sys(err, errno, "cannot read input");
        r = uv_pipe_init(src->loop, &src->h.pipe, 0);
        if (r == 0) {
            r = uv_pipe_open(&src->h.pipe, pfd);
            if (r < 0)
                uv_close(&src->h.handle, NULL);
        }
        if (r < 0 && pfd != src->fd)
            close(pfd);
    } else {
        return 0; /* files, /dev/null, ...: thread pool */
    }
    if (r < 0)
        return ic_err_set(err, -r, "cannot read input: %s", uv_strerror(r));
    src->use_handle = true;
    src->h.handle.data = src;
    return 0;
}

int ic_source_open(uv_loop_t *loop, int fd, bool owns_fd, ic_source_read_fn fn, void *ud,
                   ic_source **out, ic_err *err)
{
    ic_source *src = calloc(1, sizeof(*src));
    if (!src)
        return ic_err_set(err, ENOMEM, "out of memory");
    src->loop = loop;
    src->fd = fd;
    src->owns_fd = owns_fd;
    src->fn = fn;
    src->ud = ud;
    int r = open_handle(src, err);
    if (r < 0) {
        free(src);
        return r;
    }
    *out = src;
    if (src->use_handle)
        uv_read_start(&src->h.stream, on_alloc, on_stream_read);
    else
        pool_read_next(src);
    return 0;
}

void ic_source_pause(ic_source *src, bool paused)
{
    if (src->closed || src->ended || src->paused == paused)
        return;
    src->paused = paused;
    if (src->use_handle) {
        if (paused)
            uv_read_stop(&src->h.stream);
        else
            uv_read_start(&src->h.stream, on_alloc, on_stream_read);
    } else if (!paused) {
        pool_read_next(src);
    }
}

static void on_source_closed(uv_handle_t *h)
{
    ic_source *src = h->data;
    /* libuv closed the fd for pipes; ttys keep the caller's fd. */
    if (src->owns_fd && uv_guess_handle(src->fd) == UV_TTY)
        close(src->fd);
    free(src);
}

void ic_source_close(ic_source *src)
{
    if (!src || src->closed)
        return;
    src->closed = true;
    if (src->use_handle) {
        uv_close(&src->h.handle, on_source_closed);
    } else if (!src->reading) {
        source_free(src);
    }
}
