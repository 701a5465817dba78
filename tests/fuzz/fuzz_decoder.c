/*
 * fuzz_decoder.c - libFuzzer target for the wire codec (src/proto).
 *
 * Input layout: byte 0 picks the decoder's limit and the feeding style,
 * bytes 1..3 seed the generator of read sizes, the rest is the byte stream.
 * The stream is decoded twice, once in input-derived chunks and once in a
 * single read; both runs must see exactly the same frames and end the same
 * way (the decoder's one promise). Every MSG frame goes through the message
 * parser and, when accepted, through encode -> decode -> parse again, which
 * must give the same message. HELLO frames go through the handshake check.
 * Any disagreement aborts, which libFuzzer reports as a crash.
 */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ironclaw/proto.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* FNV-1a over everything a frame carries, chained frame after frame. */
static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_frame(uint64_t h, const ic_frame *f)
{
    uint8_t head[6] = {f->kind, f->channel, (uint8_t)(f->stream >> 24), (uint8_t)(f->stream >> 16),
                       (uint8_t)(f->stream >> 8), (uint8_t)f->stream};
    uint64_t len = f->len;
    h = mix(h, head, sizeof(head));
    h = mix(h, &len, sizeof(len));
    return mix(h, f->data, f->len);
}

static void check_msg(const ic_frame *f)
{
    ic_msg m;
    ic_err err;
    if (ic_msg_parse(f->data, f->len, &m, &err) < 0) {
        CHECK(m.root == NULL);
        CHECK(err.code == EPROTO);
        return;
    }
    CHECK(m.root != NULL);
    CHECK(m.type == IC_MSG_NOTIFY ? m.id == 0 : m.id != 0);
    if (m.type == IC_MSG_REQUEST || m.type == IC_MSG_NOTIFY)
        CHECK(m.method && *m.method && json_is_object(m.params));
    if (m.type == IC_MSG_ERROR)
        CHECK(m.error_code > 0 && m.error_message);

    /* Encode it again: it must come back through the decoder and the
     * parser as the same message. */
    ic_buf b = IC_BUF_INIT;
    int r = 0;
    switch (m.type) {
    case IC_MSG_REQUEST: r = ic_msg_put_request(&b, m.id, m.method, m.params, &err); break;
    case IC_MSG_RESPONSE: r = ic_msg_put_response(&b, m.id, m.result, &err); break;
    case IC_MSG_ERROR: r = ic_msg_put_error(&b, m.id, m.error_code, m.error_message, &err); break;
    case IC_MSG_NOTIFY: r = ic_msg_put_notify(&b, m.method, m.params, &err); break;
    }
    CHECK(r == 0);
    ic_decoder *d = ic_decoder_new(0);
    CHECK(d);
    ic_frame f2;
    CHECK(ic_decoder_feed(d, ic_buf_head(&b), ic_buf_size(&b), &err) == 0);
    CHECK(ic_decoder_next(d, &f2, &err) == 1 && f2.kind == IC_FRAME_MSG);
    CHECK(ic_decoder_pending(d) == 0);
    ic_msg m2;
    CHECK(ic_msg_parse(f2.data, f2.len, &m2, &err) == 0);
    CHECK(m2.type == m.type && m2.id == m.id);
    if (m.method)
        CHECK(m2.method && strcmp(m.method, m2.method) == 0);
    if (m.params)
        CHECK(json_equal(m.params, m2.params));
    if (m.result)
        CHECK(json_equal(m.result, m2.result));
    if (m.type == IC_MSG_ERROR)
        CHECK(m2.error_code == m.error_code && strcmp(m2.error_message, m.error_message) == 0);
    ic_msg_release(&m2);
    ic_decoder_free(d);
    ic_buf_free(&b);
    ic_msg_release(&m);
}

static void check_hello(const ic_frame *f)
{
    char agent[32];
    ic_err err;
    int a = ic_hello_check(f->data, f->len, "guest", agent, sizeof(agent), &err);
    if (a == 0)
        CHECK(strlen(agent) < sizeof(agent));
    int b = ic_hello_check(f->data, f->len, "host", NULL, 0, &err);
    CHECK(a < 0 || b < 0);   /* one role at most */
}

typedef struct outcome {
    uint64_t hash;
    size_t frames;
    int result;      /* last return of next(): 0 or the error */
    size_t pending;
} outcome;

/* Pulls frames until 0 or an error, folding them into o. */
static int pull(ic_decoder *d, size_t limit, outcome *o, int deep)
{
    ic_frame f;
    ic_err err;
    int r;
    while ((r = ic_decoder_next(d, &f, &err)) == 1) {
        CHECK(f.kind >= IC_FRAME_HELLO && f.kind <= IC_FRAME_DATA);
        CHECK(f.len + 1 + (f.kind == IC_FRAME_DATA ? IC_DATA_HEADER : 0) <= limit);
        if (f.kind != IC_FRAME_DATA)
            CHECK(f.stream == 0 && f.channel == 0);
        o->hash = hash_frame(o->hash, &f);
        o->frames++;
        if (deep && f.kind == IC_FRAME_MSG)
            check_msg(&f);
        if (deep && f.kind == IC_FRAME_HELLO)
            check_hello(&f);
    }
    if (r < 0) {
        CHECK(err.code == -r && err.msg[0]);
        /* Sticky. */
        ic_err again;
        CHECK(ic_decoder_next(d, &f, &again) == r && strcmp(again.msg, err.msg) == 0);
    }
    o->result = r;
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static const size_t limits[4] = {0, 16, 300, 4096};
    size_t limit = limits[data[0] & 3];
    int zero_copy = (data[0] >> 2) & 1;
    uint32_t seed = ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3] | 1;
    size_t maxchunk = (size_t)1 << (data[0] >> 4 & 7);   /* 1..128 */
    const uint8_t *s = data + 4;
    size_t n = size - 4;

    /* Run 1: chunked, with checks of every frame. */
    outcome one = {.hash = 14695981039346656037ull};
    ic_decoder *d = ic_decoder_new(limit);
    CHECK(d);
    size_t real_limit = limit ? limit : IC_FRAME_MAX;
    size_t off = 0;
    ic_err err;
    while (off < n) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        size_t k = 1 + seed % maxchunk;
        if (k > n - off)
            k = n - off;
        if (zero_copy) {
            uint8_t *dst;
            size_t room;
            if (ic_decoder_space(d, seed % 3 ? k : 0, &dst, &room) < 0)
                break;
            if (k > room)
                k = room;
            memcpy(dst, s + off, k);
            ic_decoder_commit(d, k);
        } else if (ic_decoder_feed(d, s + off, k, &err) < 0) {
            break;
        }
        off += k;
        if (pull(d, real_limit, &one, 1) < 0)
            break;
    }
    if (one.result == 0) {
        one.pending = ic_decoder_pending(d);
        CHECK((ic_decoder_finish(d, &err) == 0) == (one.pending == 0));
    }
    ic_decoder_free(d);

    /* Run 2: all at once. Same frames, same ending. */
    outcome two = {.hash = 14695981039346656037ull};
    d = ic_decoder_new(limit);
    CHECK(d);
    CHECK(ic_decoder_feed(d, s, n, &err) == 0);
    pull(d, real_limit, &two, 0);
    if (two.result == 0)
        two.pending = ic_decoder_pending(d);
    ic_decoder_free(d);

    CHECK(one.result == two.result);
    CHECK(one.frames == two.frames);
    CHECK(one.hash == two.hash);
    CHECK(one.pending == two.pending);
    return 0;
}
