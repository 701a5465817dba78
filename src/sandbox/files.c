/*
 * files.c - copying files into and out of a sandbox (file.put, file.get).
 *
 * Uploads read the local file through an ic_source and stop reading while
 * the channel's write queue is above its high-water mark. Downloads write
 * through an ic_sink into a temporary file beside the target, pausing the
 * channel while the disk lags, and rename it into place only once the
 * guest's end-of-stream frame has arrived. An operation is freed only when
 * both its request has been answered (or failed) and its local I/O has
 * finished, whichever comes last.
 */
#include "sandbox/internal.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"
#include "ironclaw/paths.h"
#include "ironclaw/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_ANSWER_MS 30000

struct ic_file_op {
    struct ic_file_op *next;      /* in sb->puts while uploading */
    ic_sandbox *sb;
    uint32_t id;
    bool answered;                /* the request's answer (or failure) came */
    bool io_done;                 /* local source/sink finished */
    bool reported;                /* done() called */
    ic_err err;                   /* first failure */
    uint64_t bytes;
    ic_sandbox_file_fn done;
    void *ud;
    /* upload */
    ic_source *src;
    bool paused;
    /* download */
    ic_sink *sink;
    uint64_t expected;
    mode_t mode;
    bool routed;
    char tmp[IC_PATH_MAX];
    char local[IC_PATH_MAX];
};

static void op_fail(struct ic_file_op *op, const ic_err *err)
{
    if (!op->err.code && err)
        op->err = *err;
}

static void puts_unlink(ic_sandbox *sb, struct ic_file_op *op)
{
    for (struct ic_file_op **pp = &sb->puts; *pp; pp = &(*pp)->next)
        if (*pp == op) {
            *pp = op->next;
            return;
        }
}

/* Reports once, frees when nothing refers to the op any more. */
static void op_settle(struct ic_file_op *op)
{
    if (!op->answered || !op->io_done)
        return;
    if (op->routed)
        ic_sandbox__route_del(op->sb, op->id);
    puts_unlink(op->sb, op);
    if (!op->reported && op->done) {
        op->reported = true;
        op->done(op->err.code ? &op->err : NULL, op->bytes, op->ud);
    }
    free(op);
}

/* ---- upload -------------------------------------------------------------- */

static void put_end_stream(struct ic_file_op *op)
{
    if (op->src) {
        ic_source_close(op->src);
        op->src = NULL;
    }
    ic_rpc *rpc = NULL;
    ic_err err = {0};
    if (ic_sandbox__ready_rpc(op->sb, &rpc, &err) == 0)
        ic_rpc_send_data(rpc, op->id, IC_CHAN_FILE, NULL, 0, &err);
    op->io_done = true;
}

static void on_put_chunk(ic_source *src, const void *p, size_t n, const ic_err *err, void *ud)
{
    struct ic_file_op *op = ud;
    ic_rpc *rpc = NULL;
    ic_err e = {0};
    if (err) {
        op_fail(op, err);
        put_end_stream(op);
        op_settle(op);
        return;
    }
    if (n == 0) {
        put_end_stream(op);
        op_settle(op);
        return;
    }
    if (ic_sandbox__ready_rpc(op->sb, &rpc, &e) < 0 ||
        ic_rpc_send_data(rpc, op->id, IC_CHAN_FILE, p, n, &e) < 0) {
        op_fail(op, &e);
        put_end_stream(op);
        op_settle(op);
        return;
    }
    op->bytes += n;
    if (ic_rpc_queued(rpc) > IC_RPC_HIGH_WATER) {
        op->paused = true;
        ic_source_pause(op->src, true);
    }
}

static void on_put_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    struct ic_file_op *op = ud;
    op->answered = true;
    if (err) {
        op_fail(op, err);
        /* The guest discards the rest; we still end the stream. */
        if (!op->io_done)
            put_end_stream(op);
    } else {
        uint64_t size = (uint64_t)json_integer_value(json_object_get(reply->result, "size"));
        if (size != op->bytes) {
            ic_err e = {0};
            ic_err_set(&e, EIO, "the guest stored %llu bytes of %llu", (unsigned long long)size,
                       (unsigned long long)op->bytes);
            op_fail(op, &e);
        }
    }
    op_settle(op);
}

void ic_sandbox__files_drained(ic_sandbox *sb)
{
    for (struct ic_file_op *op = sb->puts; op; op = op->next)
        if (op->paused && op->src) {
            op->paused = false;
            ic_source_pause(op->src, false);
        }
}

int ic_sandbox_put_file(ic_sandbox *sb, const char *local, const char *guest_path,
                        ic_sandbox_file_fn done, void *ud, ic_err *err)
{
    ic_rpc *rpc = NULL;
    int r = ic_sandbox__ready_rpc(sb, &rpc, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(local, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", local);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ic_err_sys(err, errno, "cannot stat %s", local);
    if (!S_ISREG(st.st_mode))
        return ic_err_set(err, EINVAL, "%s is not a regular file", local);
    struct ic_file_op *op = calloc(1, sizeof(*op));
    if (!op)
        return ic_err_set(err, ENOMEM, "out of memory");
    op->sb = sb;
    op->done = done;
    op->ud = ud;
    json_t *params = json_pack("{s:s, s:i}", "path", guest_path, "mode", (int)(st.st_mode & 07777));
    r = params ? ic_rpc_call(rpc, IC_M_FILE_PUT, params, 0, on_put_answer, op, &op->id, err)
               : ic_err_set(err, EINVAL, "guest path is not valid UTF-8");
    json_decref(params);
    if (r < 0) {
        free(op);
        return r;
    }
    /* From here the answer callback owns a reference to op. */
    r = ic_source_open(sb->loop, fd, true, on_put_chunk, op, &op->src, err);
    if (r < 0) {
        op_fail(op, err);
        put_end_stream(op);
        return 0; /* reported through done() with the error */
    }
    TAKE_FD(fd);
    op->next = sb->puts;
    sb->puts = op;
    return 0;
}

/* ---- download ------------------------------------------------------------ */

static void on_sink_closed(const ic_err *err, void *ud)
{
    struct ic_file_op *op = ud;
    op->sink = NULL;
    op_fail(op, err);
    /* The end-of-stream frame is what proves the copy complete; the size
     * is what stat() said at open, and files in /proc or /sys (size 0 or
     * 4096) and files that change while read differ from it. */
    if (!op->err.code && op->bytes != op->expected)
        ic_log_debug("%s: received %llu bytes; the guest's stat() said %llu", op->local,
                     (unsigned long long)op->bytes, (unsigned long long)op->expected);
    if (!op->err.code && rename(op->tmp, op->local) < 0) {
        ic_err e = {0};
        ic_err_sys(&e, errno, "cannot rename %s to %s", op->tmp, op->local);
        op_fail(op, &e);
    }
    if (op->err.code)
        unlink(op->tmp);
    op->io_done = true;
    op_settle(op);
}

static void get_finish_io(struct ic_file_op *op)
{
    if (op->io_done)
        return;
    if (op->sink) {
        ic_sandbox_pause_output(op->sb, false);
        ic_sink *s = op->sink;
        ic_sink_close(s, on_sink_closed, op);
        return;
    }
    op->io_done = true;
}

static void on_sink_drain(ic_sink *sink, void *ud)
{
    struct ic_file_op *op = ud;
    ic_sandbox_pause_output(op->sb, false);
}

static void get_data(void *obj, uint8_t channel, const uint8_t *p, size_t n)
{
    struct ic_file_op *op = obj;
    ic_err err = {0};
    if (channel != IC_CHAN_FILE || op->io_done)
        return;
    if (n == 0) {
        op->routed = false;
        ic_sandbox__route_del(op->sb, op->id);
        get_finish_io(op);
        op_settle(op);
        return;
    }
    if (!op->sink)
        return; /* already failed: swallow the rest of the stream */
    op->bytes += n;
    if (ic_sink_write(op->sink, p, n, &err) < 0) {
        op_fail(op, &err);
        return;
    }
    if (ic_sink_queued(op->sink) > IC_SINK_HIGH_WATER)
        ic_sandbox_pause_output(op->sb, true);
}

static void get_notify(void *obj, const ic_msg *m)
{
    struct ic_file_op *op = obj;
    if (strcmp(m->method, IC_N_STREAM_ERROR) != 0)
        return;
    ic_err err = {0};
    ic_err_set(&err, (int)json_integer_value(json_object_get(m->params, "code")) ?: EIO,
               "reading the file in the guest failed: %s",
               json_string_value(json_object_get(m->params, "message")) ?: "unknown error");
    op_fail(op, &err);
    op->routed = false;
    ic_sandbox__route_del(op->sb, op->id);
    get_finish_io(op);
    op_settle(op);
}

static void get_abort(void *obj, const ic_err *err)
{
    struct ic_file_op *op = obj;
    op_fail(op, err);
    op->routed = false; /* the caller is removing the route */
    get_finish_io(op);
    op_settle(op);
}

static const struct ic_route_ops get_route = {
    .data = get_data,
    .notify = get_notify,
    .abort = get_abort,
};

static int open_download(struct ic_file_op *op, ic_err *err)
{
    int r = ic_path_join(op->tmp, sizeof(op->tmp), err, "%s.ironclaw-XXXXXX", op->local);
    if (r < 0)
        return r;
    int fd = mkostemp(op->tmp, O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot create a file beside %s", op->local);
    if (fchmod(fd, op->mode & 0777) < 0) {
        r = ic_err_sys(err, errno, "cannot set the mode of %s", op->tmp);
        close(fd);
        unlink(op->tmp);
        return r;
    }
    r = ic_sink_open(op->sb->loop, fd, true, true, &op->sink, err);
    if (r < 0) {
        close(fd);
        unlink(op->tmp);
        return r;
    }
    ic_sink_on_drain(op->sink, on_sink_drain, op);
    return 0;
}

static void on_get_answer(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    struct ic_file_op *op = ud;
    op->answered = true;
    if (err) {
        op_fail(op, err);
        if (op->routed) {
            op->routed = false;
            ic_sandbox__route_del(op->sb, op->id);
        }
        get_finish_io(op);
        op_settle(op);
        return;
    }
    json_t *size = json_object_get(reply->result, "size");
    op->expected = (uint64_t)json_integer_value(size);
    op->mode = (mode_t)json_integer_value(json_object_get(reply->result, "mode"));
    if (!op->mode)
        op->mode = 0644;
    ic_err e = {0};
    if (!json_is_integer(size) || json_integer_value(size) < 0) {
        ic_err_set(&e, EPROTO, "the guest's file.get answer has no valid size");
        op_fail(op, &e);
    } else if (open_download(op, &e) < 0) {
        op_fail(op, &e);
    }
    if (op->err.code) {
        /* Keep the route so the stream's bytes are swallowed, then settle
         * when it ends. */
        return;
    }
}

int ic_sandbox_get_file(ic_sandbox *sb, const char *guest_path, const char *local,
                        ic_sandbox_file_fn done, void *ud, ic_err *err)
{
    ic_rpc *rpc = NULL;
    int r = ic_sandbox__ready_rpc(sb, &rpc, err);
    if (r < 0)
        return r;
    struct ic_file_op *op = calloc(1, sizeof(*op));
    if (!op)
        return ic_err_set(err, ENOMEM, "out of memory");
    op->sb = sb;
    op->done = done;
    op->ud = ud;
    r = ic_path_join(op->local, sizeof(op->local), err, "%s", local);
    json_t *params = json_pack("{s:s}", "path", guest_path);
    if (r == 0)
        r = params ? ic_rpc_call(rpc, IC_M_FILE_GET, params, FILE_ANSWER_MS, on_get_answer, op,
                                 &op->id, err)
                   : ic_err_set(err, EINVAL, "guest path is not valid UTF-8");
    json_decref(params);
    if (r < 0) {
        free(op);
        return r;
    }
    if (ic_sandbox__route_add(sb, op->id, &get_route, op) == 0)
        op->routed = true;
    return 0;
}

void ic_sandbox__files_abort(ic_sandbox *sb, const ic_err *err)
{
    while (sb->puts) {
        struct ic_file_op *op = sb->puts;
        sb->puts = op->next;
        op->next = NULL;
        op_fail(op, err);
        if (op->src) {
            ic_source_close(op->src);
            op->src = NULL;
        }
        op->io_done = true;
        op_settle(op);
    }
}
