/*
 * codec.c - the frame layer of the wire protocol (docs/protocol.md, 1):
 * the per-connection decoder and the two frame encoders.
 *
 * The decoder keeps one ic_buf for the connection's life. ic_decoder_next
 * hands out frames that point into that buffer and only advances the read
 * offset; consumed space is reclaimed when the buffer needs room (ic_buf
 * compacts before it grows), so decoding a stream costs O(bytes), not
 * O(frames * buffer). A frame's length is validated as soon as its four
 * length bytes are present, and nothing is ever allocated from an
 * unvalidated length: the buffer only grows as bytes actually arrive.
 *
 * No libuv, no OpenSSL here: this file is linked into the static guest.
 */
#include "ironclaw/proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Default room offered by ic_decoder_space(0). */
#define DEC_DEFAULT_SPACE 4096u
/* A buffer that grew past this for one big frame shrinks again once what
 * it holds is small, so one 16 MiB message does not pin 32 MiB for the rest
 * of the connection. */
#define DEC_KEEP_CAP ((size_t)1024 * 1024)

struct ic_decoder {
    ic_buf buf;
    size_t max_frame;   /* largest L accepted */
    int failed;         /* sticky: negative errno once input was malformed */
    char why[IC_ERR_MSG_MAX];
};

ic_decoder *ic_decoder_new(size_t max_frame)
{
    ic_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->max_frame = max_frame ? max_frame : IC_FRAME_MAX;
    return d;
}

void ic_decoder_free(ic_decoder *d)
{
    if (!d)
        return;
    ic_buf_free(&d->buf);
    free(d);
}

/* Repeats the recorded failure into the caller's err. */
static int dec_failed(const ic_decoder *d, ic_err *err)
{
    return ic_err_set(err, -d->failed, "%s", d->why);
}

/* Records a failure; every later call reports it again. */
static int dec_fail(ic_decoder *d, ic_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int dec_fail(ic_decoder *d, ic_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->why, sizeof(d->why), fmt, ap);
    va_end(ap);
    d->failed = -code;
    return dec_failed(d, err);
}

/* Called on entry to every call that may write into the buffer: the frame
 * handed out by the previous ic_decoder_next is dead by now, so an
 * oversized buffer holding little can be swapped for a small one. The copy
 * is at most DEC_KEEP_CAP/4 and only follows a frame of at least half
 * DEC_KEEP_CAP, so it stays amortized O(1) per byte. */
static void dec_settle(ic_decoder *d)
{
    size_t live = ic_buf_size(&d->buf);
    if (d->buf.cap <= DEC_KEEP_CAP || live > DEC_KEEP_CAP / 4)
        return;
    ic_buf small = IC_BUF_INIT;
    if (live && ic_buf_append(&small, ic_buf_head(&d->buf), live) < 0)
        return;   /* keep the big one; shrinking is only an optimisation */
    ic_buf_free(&d->buf);
    d->buf = small;
}

int ic_decoder_feed(ic_decoder *d, const void *data, size_t len, ic_err *err)
{
    if (d->failed)
        return dec_failed(d, err);
    dec_settle(d);
    if (ic_buf_append(&d->buf, data, len) < 0)
        return ic_err_set(err, ENOMEM, "out of memory buffering %zu received bytes", len);
    return 0;
}

int ic_decoder_space(ic_decoder *d, size_t hint, uint8_t **ptr, size_t *room)
{
    if (d->failed)
        return d->failed;
    dec_settle(d);
    if (hint == 0)
        hint = DEC_DEFAULT_SPACE;
    int r = ic_buf_reserve(&d->buf, hint);
    if (r < 0)
        return r;
    *ptr = ic_buf_tail(&d->buf, room);
    return 0;
}

void ic_decoder_commit(ic_decoder *d, size_t n)
{
    if (d->failed)
        return;
    /* Never trust n beyond the room we offered. */
    size_t room = d->buf.cap - d->buf.len;
    ic_buf_commit(&d->buf, n < room ? n : room);
}

static const char *kind_name(uint8_t kind)
{
    switch (kind) {
    case IC_FRAME_HELLO: return "HELLO";
    case IC_FRAME_MSG: return "MSG";
    case IC_FRAME_DATA: return "DATA";
    default: return "unknown";
    }
}

int ic_decoder_next(ic_decoder *d, ic_frame *out, ic_err *err)
{
    if (d->failed)
        return dec_failed(d, err);
    dec_settle(d);

    size_t have = ic_buf_size(&d->buf);
    if (have < 4)
        return 0;
    const uint8_t *p = ic_buf_head(&d->buf);
    uint32_t L = ic_be32_read(p);
    if (L == 0)
        return dec_fail(d, err, EPROTO, "protocol error: frame with length 0");
    if (L > d->max_frame)
        return dec_fail(d, err, EMSGSIZE,
                        "protocol error: frame length %" PRIu32 " exceeds the limit of %zu bytes",
                        L, d->max_frame);
    if (have < 5)
        return 0;
    uint8_t kind = p[4];
    if (kind != IC_FRAME_HELLO && kind != IC_FRAME_MSG && kind != IC_FRAME_DATA)
        return dec_fail(d, err, EPROTO, "protocol error: unknown frame kind %u", (unsigned)kind);
    if (kind == IC_FRAME_DATA && L < 1 + IC_DATA_HEADER)
        return dec_fail(d, err, EPROTO,
                        "protocol error: DATA frame of length %" PRIu32 " is shorter than its %u-byte header",
                        L, 1 + IC_DATA_HEADER);
    if (have - 4 < L)
        return 0;

    const uint8_t *body = p + IC_FRAME_HEADER;
    size_t blen = L - 1;
    memset(out, 0, sizeof(*out));
    out->kind = kind;
    if (kind == IC_FRAME_DATA) {
        out->stream = ic_be32_read(body);
        out->channel = body[4];
        body += IC_DATA_HEADER;
        blen -= IC_DATA_HEADER;
    }
    out->data = body;
    out->len = blen;
    /* Only the offset moves; the bytes stay put until the next call. */
    ic_buf_consume(&d->buf, 4 + (size_t)L);
    return 1;
}

size_t ic_decoder_pending(const ic_decoder *d) { return ic_buf_size(&d->buf); }

int ic_decoder_finish(const ic_decoder *d, ic_err *err)
{
    if (d->failed)
        return dec_failed(d, err);
    size_t left = ic_buf_size(&d->buf);
    if (left == 0)
        return 0;
    if (left < 4)
        return ic_err_set(err, EPROTO,
                          "protocol error: stream truncated inside a frame header (%zu bytes left over)",
                          left);
    uint32_t L = ic_be32_read(ic_buf_head(&d->buf));
    return ic_err_set(err, EPROTO,
                      "protocol error: stream truncated inside a %s frame (%zu of %zu bytes present)",
                      left > 4 ? kind_name(ic_buf_head(&d->buf)[4]) : "new", left, 4 + (size_t)L);
}

/* ---- encoders --------------------------------------------------------- */

/* Reserves the whole frame first so that a failure leaves `out` as it was. */
static int put_header(ic_buf *out, uint32_t L, uint8_t kind, size_t total, ic_err *err)
{
    if (ic_buf_reserve(out, total) < 0)
        return ic_err_set(err, ENOMEM, "out of memory encoding a %zu-byte frame", total);
    ic_buf_append_be32(out, L);   /* cannot fail after the reserve */
    ic_buf_append_u8(out, kind);
    return 0;
}

int ic_frame_put_json(ic_buf *out, uint8_t kind, const char *json, size_t len, ic_err *err)
{
    if (kind != IC_FRAME_HELLO && kind != IC_FRAME_MSG)
        return ic_err_set(err, EINVAL, "cannot encode a JSON frame of kind %u", (unsigned)kind);
    if (len > IC_FRAME_MAX - 1)
        return ic_err_set(err, EMSGSIZE, "%s of %zu bytes exceeds the %zu-byte frame limit",
                          kind_name(kind), len, IC_FRAME_MAX);
    int r = put_header(out, (uint32_t)(1 + len), kind, IC_FRAME_HEADER + len, err);
    if (r < 0)
        return r;
    ic_buf_append(out, json, len);
    return 0;
}

/* The 10 bytes before a DATA payload of n bytes: length, kind, stream,
 * channel. */
static void data_header(uint8_t *p, uint32_t stream, uint8_t channel, size_t n)
{
    ic_be32_write(p, (uint32_t)(1 + IC_DATA_HEADER + n));
    p[4] = IC_FRAME_DATA;
    ic_be32_write(p + 5, stream);
    p[9] = channel;
}

int ic_frame_put_data(ic_buf *out, uint32_t stream, uint8_t channel,
                      const void *data, size_t len, ic_err *err)
{
    if (len > IC_FRAME_MAX - 1 - IC_DATA_HEADER)
        return ic_err_set(err, EMSGSIZE, "DATA payload of %zu bytes exceeds the %zu-byte frame limit",
                          len, IC_FRAME_MAX);
    size_t total = IC_FRAME_HEADER + IC_DATA_HEADER + len;
    if (ic_buf_reserve(out, total) < 0)
        return ic_err_set(err, ENOMEM, "out of memory encoding a %zu-byte frame", total);
    size_t room;
    uint8_t *p = ic_buf_tail(out, &room);
    data_header(p, stream, channel, len);
    if (len)
        memcpy(p + IC_FRAME_HEADER + IC_DATA_HEADER, data, len);
    ic_buf_commit(out, total);
    return 0;
}

int ic_frame_data_open(ic_buf *out, size_t max, uint8_t **payload, ic_err *err)
{
    if (max == 0 || max > IC_FRAME_MAX - 1 - IC_DATA_HEADER)
        return ic_err_set(err, EMSGSIZE, "DATA payload of %zu bytes is out of range", max);
    size_t total = IC_FRAME_HEADER + IC_DATA_HEADER + max;
    if (ic_buf_reserve(out, total) < 0)
        return ic_err_set(err, ENOMEM, "out of memory encoding a %zu-byte frame", total);
    size_t room;
    *payload = ic_buf_tail(out, &room) + IC_FRAME_HEADER + IC_DATA_HEADER;
    return 0;
}

void ic_frame_data_close(ic_buf *out, uint32_t stream, uint8_t channel, size_t n)
{
    size_t room;
    data_header(ic_buf_tail(out, &room), stream, channel, n);
    ic_buf_commit(out, IC_FRAME_HEADER + IC_DATA_HEADER + n);
}

ssize_t ic_frame_data_extend(ic_buf *out, size_t at, uint32_t stream, uint8_t channel,
                             const void *data, size_t len, size_t max)
{
    size_t size = ic_buf_size(out);
    const size_t head = IC_FRAME_HEADER + IC_DATA_HEADER;
    if (len == 0 || at > size || size - at <= head)
        return 0;
    const uint8_t *f = ic_buf_head(out) + at;
    uint32_t L = ic_be32_read(f);
    size_t payload = (size_t)L - 1 - IC_DATA_HEADER;
    if (f[4] != IC_FRAME_DATA || 4 + (size_t)L != size - at || ic_be32_read(f + 5) != stream ||
        f[9] != channel || payload == 0 || payload >= max ||
        max > IC_FRAME_MAX - 1 - IC_DATA_HEADER)
        return 0;
    size_t take = max - payload < len ? max - payload : len;
    if (ic_buf_append(out, data, take) < 0)
        return -ENOMEM;
    /* The append may have moved the bytes: find the frame again. */
    ic_be32_write((uint8_t *)ic_buf_head(out) + at, L + (uint32_t)take);
    return (ssize_t)take;
}
