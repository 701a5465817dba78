/*
 * rpc.c - host end of a guest channel: handshake, request/response
 * matching, request timeouts, DATA dispatch, and a write queue.
 *
 * Reading is zero-copy: libuv reads straight into the decoder's buffer
 * (ic_decoder_space/commit), so no byte is ever copied out and dropped.
 * Writing uses two buffers: `queue` collects frames while `inflight` is
 * with the kernel; when a write completes they swap. At most one uv_write
 * is outstanding, so frames leave in the order they were queued.
 */
#include "ironclaw/rpc.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define READ_HINT ((size_t)256 * 1024)

struct pending {
    struct pending *next;
    uint32_t id;
    uint64_t deadline_ms;        /* 0 = none */
    ic_rpc_reply_fn fn;
    void *ud;
};

struct ic_rpc {
    uv_stream_t *stream;
    uv_timer_t timer;            /* request deadlines */
    uv_idle_t resume;            /* re-dispatches buffered frames after a pause */
    uv_write_t write_req;
    ic_decoder *dec;
    ic_buf queue;
    size_t queue_data;           /* where the queue's last DATA frame starts, or SIZE_MAX */
    ic_buf inflight;
    bool writing;
    bool greeted;                /* guest HELLO seen */
    bool paused;
    bool closing;
    bool dispatching;
    int open_handles;
    uint32_t next_id;
    struct pending *pending;
    const struct ic_rpc_events *ev;
    void *ud;
};

static void rpc_fail(ic_rpc *rpc, const ic_err *err);
static void dispatch(ic_rpc *rpc);
static void on_timer(uv_timer_t *t);

/* ---- pending requests -------------------------------------------------- */

static struct pending *take_pending(ic_rpc *rpc, uint32_t id)
{
    for (struct pending **pp = &rpc->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct pending *p = *pp;
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void arm_timer(ic_rpc *rpc)
{
    uint64_t first = 0;
    for (struct pending *p = rpc->pending; p; p = p->next)
        if (p->deadline_ms && (!first || p->deadline_ms < first))
            first = p->deadline_ms;
    if (!first) {
        uv_timer_stop(&rpc->timer);
        return;
    }
    uint64_t now = uv_now(rpc->stream->loop);
    uv_timer_start(&rpc->timer, on_timer, first > now ? first - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    ic_rpc *rpc = t->data;
    uint64_t now = uv_now(t->loop);
    for (;;) {
        struct pending *late = NULL;
        for (struct pending *p = rpc->pending; p; p = p->next)
            if (p->deadline_ms && p->deadline_ms <= now) {
                late = p;
                break;
            }
        if (!late)
            break;
        take_pending(rpc, late->id);
        ic_err err = {0};
        ic_err_set(&err, ETIMEDOUT, "the guest did not answer request %u in time", late->id);
        late->fn(rpc, NULL, &err, late->ud);
        free(late);
        if (rpc->closing)
            return;
    }
    arm_timer(rpc);
}

static void fail_all_pending(ic_rpc *rpc, const ic_err *err)
{
    while (rpc->pending) {
        struct pending *p = rpc->pending;
        rpc->pending = p->next;
        p->fn(rpc, NULL, err, p->ud);
        free(p);
    }
}

/* ---- writing ----------------------------------------------------------- */

static void start_write(ic_rpc *rpc);

static void on_written(uv_write_t *req, int status)
{
    ic_rpc *rpc = req->data;
    rpc->writing = false;
    ic_buf_reset(&rpc->inflight);
    if (rpc->closing)
        return;
    if (status < 0) {
        ic_err err = {0};
        ic_err_set(&err, -status, "writing to the guest channel failed: %s", uv_strerror(status));
        rpc_fail(rpc, &err);
        return;
    }
    start_write(rpc);
    if (ic_rpc_queued(rpc) < IC_RPC_HIGH_WATER / 4 && rpc->ev->drained)
        rpc->ev->drained(rpc, rpc->ud);
}

static void start_write(ic_rpc *rpc)
{
    if (rpc->writing || rpc->closing || ic_buf_size(&rpc->queue) == 0)
        return;
    ic_buf tmp = rpc->inflight;
    rpc->inflight = rpc->queue;
    rpc->queue = tmp;
    rpc->queue_data = SIZE_MAX;
    uv_buf_t b = uv_buf_init((char *)ic_buf_head(&rpc->inflight), (unsigned)ic_buf_size(&rpc->inflight));
    rpc->write_req.data = rpc;
    int r = uv_write(&rpc->write_req, rpc->stream, &b, 1, on_written);
    if (r < 0) {
        ic_err err = {0};
        ic_err_set(&err, -r, "writing to the guest channel failed: %s", uv_strerror(r));
        rpc_fail(rpc, &err);
        return;
    }
    rpc->writing = true;
}

size_t ic_rpc_queued(const ic_rpc *rpc)
{
    return ic_buf_size(&rpc->queue) + ic_buf_size(&rpc->inflight);
}

/* ---- reading ----------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    ic_rpc *rpc = h->data;
    uint8_t *p = NULL;
    size_t room = 0;
    if (ic_decoder_space(rpc->dec, READ_HINT, &p, &room) < 0) {
        *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *out = uv_buf_init((char *)p, (unsigned)(room > (1u << 30) ? (1u << 30) : room));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    ic_rpc *rpc = s->data;
    if (rpc->closing)
        return;
    ic_err err = {0};
    if (n > 0) {
        ic_decoder_commit(rpc->dec, (size_t)n);
        dispatch(rpc);
        return;
    }
    if (n == 0)
        return;
    if (n == UV_EOF) {
        if (ic_decoder_finish(rpc->dec, &err) == 0)
            ic_err_set(&err, EPIPE, "the guest closed the channel");
        else
            ic_err_wrap(&err, "the guest closed the channel mid-frame");
    } else {
        ic_err_set(&err, (int)-n, "reading the guest channel failed: %s", uv_strerror((int)n));
    }
    rpc_fail(rpc, &err);
}

static void handle_hello(ic_rpc *rpc, const ic_frame *f)
{
    ic_err err = {0};
    char agent[128] = "";
    if (ic_hello_check(f->data, f->len, "guest", agent, sizeof(agent), &err) < 0) {
        ic_err_wrap(&err, "handshake with the guest agent failed");
        rpc_fail(rpc, &err);
        return;
    }
    rpc->greeted = true;
    ic_log_debug("guest agent ready: %s", agent);
    if (rpc->ev->ready)
        rpc->ev->ready(rpc, agent, rpc->ud);
}

static void handle_msg(ic_rpc *rpc, const ic_frame *f)
{
    ic_err err = {0};
    ic_msg m;
    if (ic_msg_parse(f->data, f->len, &m, &err) < 0) {
        ic_err_wrap(&err, "bad message from the guest");
        rpc_fail(rpc, &err);
        return;
    }
    if (m.type == IC_MSG_NOTIFY) {
        if (rpc->ev->notify)
            rpc->ev->notify(rpc, &m, rpc->ud);
    } else if (m.type == IC_MSG_RESPONSE || m.type == IC_MSG_ERROR) {
        struct pending *p = take_pending(rpc, m.id);
        if (!p) {
            ic_log_warn("guest answered unknown request %u; ignored", m.id);
        } else {
            if (m.type == IC_MSG_ERROR)
                ic_err_set(&err, m.error_code, "%s", m.error_message);
            p->fn(rpc, &m, m.type == IC_MSG_ERROR ? &err : NULL, p->ud);
            free(p);
            if (!rpc->closing)
                arm_timer(rpc);
        }
    } else {
        ic_err_set(&err, EPROTO, "the guest sent a request (%s); only the host may", m.method);
        rpc_fail(rpc, &err);
    }
    ic_msg_release(&m);
}

static void handle_frame(ic_rpc *rpc, const ic_frame *f)
{
    ic_err err = {0};
    if (!rpc->greeted) {
        if (f->kind == IC_FRAME_HELLO) {
            handle_hello(rpc, f);
            return;
        }
        ic_err_set(&err, EPROTO, "the guest sent a frame of kind %u before its HELLO", f->kind);
        rpc_fail(rpc, &err);
        return;
    }
    switch (f->kind) {
    case IC_FRAME_MSG:
        handle_msg(rpc, f);
        break;
    case IC_FRAME_DATA:
        if (rpc->ev->data)
            rpc->ev->data(rpc, f->stream, f->channel, f->data, f->len, rpc->ud);
        break;
    default:
        ic_err_set(&err, EPROTO, "the guest sent a second HELLO");
        rpc_fail(rpc, &err);
    }
}

/* Hands every complete buffered frame to the owner, unless paused. */
static void dispatch(ic_rpc *rpc)
{
    if (rpc->dispatching)
        return; /* a callback resumed us; the outer loop carries on */
    rpc->dispatching = true;
    while (!rpc->paused && !rpc->closing) {
        ic_frame f;
        ic_err err = {0};
        int r = ic_decoder_next(rpc->dec, &f, &err);
        if (r == 0)
            break;
        if (r < 0) {
            ic_err_wrap(&err, "malformed data from the guest");
            rpc->dispatching = false;
            rpc_fail(rpc, &err);
            return;
        }
        handle_frame(rpc, &f);
    }
    rpc->dispatching = false;
}

static void on_resume(uv_idle_t *idle)
{
    ic_rpc *rpc = idle->data;
    uv_idle_stop(idle);
    dispatch(rpc);
}

void ic_rpc_pause(ic_rpc *rpc, bool paused)
{
    if (rpc->closing || rpc->paused == paused)
        return;
    rpc->paused = paused;
    if (paused) {
        uv_read_stop(rpc->stream);
        return;
    }
    uv_read_start(rpc->stream, on_alloc, on_read);
    /* Frames already buffered would otherwise wait for the next read. */
    uv_idle_start(&rpc->resume, on_resume);
}

/* ---- open / call / close ----------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    ic_rpc *rpc = h->data;
    if ((uv_handle_t *)rpc->stream == h)
        free(h);
    if (--rpc->open_handles > 0)
        return;
    ic_decoder_free(rpc->dec);
    ic_buf_free(&rpc->queue);
    ic_buf_free(&rpc->inflight);
    free(rpc);
}

void ic_rpc_close(ic_rpc *rpc)
{
    if (!rpc || rpc->closing)
        return;
    rpc->closing = true;
    ic_err err = {0};
    ic_err_set(&err, ECANCELED, "the channel was closed");
    fail_all_pending(rpc, &err);
    rpc->open_handles = 3;
    uv_close((uv_handle_t *)rpc->stream, on_handle_closed);
    uv_close((uv_handle_t *)&rpc->timer, on_handle_closed);
    uv_close((uv_handle_t *)&rpc->resume, on_handle_closed);
}

/* A fatal channel error: tell the owner once, then close. */
static void rpc_fail(ic_rpc *rpc, const ic_err *err)
{
    if (rpc->closing)
        return;
    ic_log_debug("channel: %s", err->msg);
    uv_read_stop(rpc->stream);
    fail_all_pending(rpc, err);
    const struct ic_rpc_events *ev = rpc->ev;
    void *ud = rpc->ud;
    ic_rpc_close(rpc);
    if (ev->closed)
        ev->closed(rpc, err, ud);
}

int ic_rpc_open(uv_stream_t *stream, const struct ic_rpc_events *ev, void *ud, ic_rpc **out,
                ic_err *err)
{
    ic_rpc *rpc = calloc(1, sizeof(*rpc));
    if (!rpc)
        return ic_err_set(err, ENOMEM, "out of memory");
    rpc->queue_data = SIZE_MAX;
    rpc->dec = ic_decoder_new(0);
    if (!rpc->dec) {
        free(rpc);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    rpc->stream = stream;
    rpc->ev = ev;
    rpc->ud = ud;
    rpc->next_id = 1;
    stream->data = rpc;
    uv_timer_init(stream->loop, &rpc->timer);
    rpc->timer.data = rpc;
    uv_idle_init(stream->loop, &rpc->resume);
    rpc->resume.data = rpc;
    *out = rpc;

    int r = ic_hello_put(&rpc->queue, "host", "ironclaw " IC_VERSION, err);
    if (r < 0)
        goto fail;
    r = uv_read_start(stream, on_alloc, on_read);
    if (r < 0) {
        r = ic_err_set(err, -r, "cannot read the guest channel: %s", uv_strerror(r));
        goto fail;
    }
    start_write(rpc);
    return 0;
fail:
    ic_rpc_close(rpc);
    *out = NULL;
    return r;
}

int ic_rpc_call(ic_rpc *rpc, const char *method, json_t *params, uint32_t timeout_ms,
                ic_rpc_reply_fn fn, void *ud, uint32_t *id_out, ic_err *err)
{
    if (rpc->closing)
        return ic_err_set(err, EPIPE, "the guest channel is closed");
    struct pending *p = calloc(1, sizeof(*p));
    if (!p)
        return ic_err_set(err, ENOMEM, "out of memory");
    uint32_t id = rpc->next_id++;
    if (rpc->next_id == 0)
        rpc->next_id = 1;
    int r = ic_msg_put_request(&rpc->queue, id, method, params, err);
    if (r < 0) {
        free(p);
        return r;
    }
    p->id = id;
    p->fn = fn;
    p->ud = ud;
    p->deadline_ms = timeout_ms ? uv_now(rpc->stream->loop) + timeout_ms : 0;
    p->next = rpc->pending;
    rpc->pending = p;
    if (timeout_ms)
        arm_timer(rpc);
    if (id_out)
        *id_out = id;
    start_write(rpc);
    return 0;
}

int ic_rpc_send_data(ic_rpc *rpc, uint32_t stream, uint8_t channel, const void *p, size_t n,
                     ic_err *err)
{
    if (rpc->closing)
        return ic_err_set(err, EPIPE, "the guest channel is closed");
    const uint8_t *bytes = p;
    /* Pieces that arrive while a write is out (a pipe gives 4 KiB at a
     * time) join the frame still waiting in the queue: fewer, fuller
     * frames cost the guest fewer writes and wake-ups. */
    if (n > 0 && rpc->queue_data != SIZE_MAX) {
        ssize_t took = ic_frame_data_extend(&rpc->queue, rpc->queue_data, stream, channel, bytes,
                                            n, IC_DATA_CHUNK);
        if (took < 0)
            return ic_err_set(err, ENOMEM, "out of memory queueing %zu bytes", n);
        bytes += took;
        n -= (size_t)took;
        if (n == 0) {
            start_write(rpc);
            return 0;
        }
    }
    do {
        size_t chunk = n > IC_DATA_CHUNK ? IC_DATA_CHUNK : n;
        size_t at = ic_buf_size(&rpc->queue);
        int r = ic_frame_put_data(&rpc->queue, stream, channel, bytes, chunk, err);
        if (r < 0)
            return r;
        rpc->queue_data = at;
        if (chunk) {
            bytes += chunk;
            n -= chunk;
        }
    } while (n > 0);
    start_write(rpc);
    return 0;
}
