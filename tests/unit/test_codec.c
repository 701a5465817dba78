/*
 * test_codec.c - the frame layer (src/proto/codec.c): streams of frames of
 * every kind must decode identically however the bytes are cut into reads,
 * and malformed input must fail early, cheaply and for good.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ironclaw/proto.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct want {
    uint8_t kind;
    uint8_t channel;
    uint32_t stream;
    uint8_t *data;
    size_t len;
} want;

typedef struct corpus {
    ic_buf wire;     /* encoded stream */
    want *frames;
    size_t n;
} corpus;

/* Deterministic PRNG so that failures reproduce. */
static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s ? s : 0x9e3779b97f4a7c15ull; }
static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void fill(uint8_t *p, size_t n, uint8_t salt)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + salt);
}

static void add_json(corpus *c, uint8_t kind, size_t len)
{
    uint8_t *text = malloc(len + 1);
    assert_non_null(text);
    /* Not valid JSON for the longer ones: the frame layer must not care. */
    for (size_t i = 0; i < len; i++)
        text[i] = (uint8_t)('a' + (i + c->n) % 26);
    if (len >= 2) {
        text[0] = '{';
        text[len - 1] = '}';
    }
    ic_err err;
    assert_int_equal(ic_frame_put_json(&c->wire, kind, (char *)text, len, &err), 0);
    c->frames = realloc(c->frames, (c->n + 1) * sizeof(want));
    assert_non_null(c->frames);
    c->frames[c->n++] = (want){.kind = kind, .data = text, .len = len};
}

static void add_data(corpus *c, uint32_t stream, uint8_t channel, size_t len)
{
    uint8_t *p = malloc(len + 1);
    assert_non_null(p);
    fill(p, len, (uint8_t)c->n);
    ic_err err;
    assert_int_equal(ic_frame_put_data(&c->wire, stream, channel, p, len, &err), 0);
    c->frames = realloc(c->frames, (c->n + 1) * sizeof(want));
    assert_non_null(c->frames);
    c->frames[c->n++] = (want){.kind = IC_FRAME_DATA, .channel = channel, .stream = stream,
                               .data = p, .len = len};
}

static void corpus_free(corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->frames[i].data);
    free(c->frames);
    ic_buf_free(&c->wire);
    memset(c, 0, sizeof(*c));
}

/* A few KiB mixing every kind, empty payloads and frames of 1 byte. */
static void small_corpus(corpus *c)
{
    memset(c, 0, sizeof(*c));
    add_json(c, IC_FRAME_HELLO, 60);
    add_json(c, IC_FRAME_MSG, 2);
    add_json(c, IC_FRAME_MSG, 1);
    add_json(c, IC_FRAME_MSG, 0);   /* L = 1: legal for the frame layer */
    add_data(c, 1, IC_CHAN_STDIN, 0);
    add_data(c, 1, IC_CHAN_STDOUT, 1);
    add_data(c, 0xffffffffu, IC_CHAN_STDERR, 7);
    add_json(c, IC_FRAME_MSG, 300);
    add_data(c, 42, IC_CHAN_FILE, 1000);
    add_data(c, 42, IC_CHAN_FILE, 0);
    add_json(c, IC_FRAME_MSG, 17);
    add_data(c, 3, 200, 5);         /* channels are not the codec's business */
    add_json(c, IC_FRAME_HELLO, 3);
}

/* A few hundred KiB with frames larger than one 64 KiB read. */
static void big_corpus(corpus *c)
{
    memset(c, 0, sizeof(*c));
    small_corpus(c);
    add_data(c, 9, IC_CHAN_STDOUT, IC_DATA_CHUNK);
    add_json(c, IC_FRAME_MSG, 70000);
    for (int i = 0; i < 200; i++)
        add_data(c, (uint32_t)i, IC_CHAN_STDOUT, (size_t)(rng() % 700));
    add_data(c, 9, IC_CHAN_STDERR, 150000);
    add_json(c, IC_FRAME_MSG, 5);
}

static void check_frame(const want *w, const ic_frame *f)
{
    assert_int_equal(f->kind, w->kind);
    assert_int_equal(f->channel, w->channel);
    assert_int_equal(f->stream, w->stream);
    assert_int_equal(f->len, w->len);
    if (w->len)
        assert_memory_equal(f->data, w->data, w->len);
}

/* Pulls every complete frame, checking each against the corpus. */
static void drain(ic_decoder *d, const corpus *c, size_t *next)
{
    ic_frame f;
    ic_err err;
    int r;
    while ((r = ic_decoder_next(d, &f, &err)) == 1) {
        assert_true(*next < c->n);
        check_frame(&c->frames[*next], &f);
        (*next)++;
    }
    assert_int_equal(r, 0);
}

/* Wire size of the first `count` frames of an encoded stream. */
static size_t frames_bytes(const uint8_t *w, size_t count)
{
    size_t off = 0;
    while (count--)
        off += 4 + (size_t)ic_be32_read(w + off);
    return off;
}

static void feed(ic_decoder *d, const uint8_t *p, size_t n)
{
    ic_err err;
    assert_int_equal(ic_decoder_feed(d, p, n, &err), 0);
}

/* Same bytes through the zero-copy path, in pieces no larger than the
 * room offered. */
static void feed_space(ic_decoder *d, const uint8_t *p, size_t n, size_t hint)
{
    while (n > 0) {
        uint8_t *dst;
        size_t room;
        assert_int_equal(ic_decoder_space(d, hint, &dst, &room), 0);
        assert_true(room >= (hint ? hint : 1));
        size_t k = n < room ? n : room;
        memcpy(dst, p, k);
        ic_decoder_commit(d, k);
        p += k;
        n -= k;
    }
}

static void finish_clean(ic_decoder *d, const corpus *c, size_t got)
{
    ic_err err;
    assert_int_equal(got, c->n);
    assert_int_equal(ic_decoder_pending(d), 0);
    assert_int_equal(ic_decoder_finish(d, &err), 0);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_whole_stream(void **state)
{
    corpus c;
    small_corpus(&c);
    ic_decoder *d = ic_decoder_new(0);
    size_t got = 0;
    feed(d, ic_buf_head(&c.wire), ic_buf_size(&c.wire));
    drain(d, &c, &got);
    finish_clean(d, &c, got);
    ic_decoder_free(d);
    corpus_free(&c);
}

/* For every k: bytes [0,k) in one read, [k,n) in the next. */
static void split_everywhere(int zero_copy)
{
    corpus c;
    small_corpus(&c);
    const uint8_t *w = ic_buf_head(&c.wire);
    size_t n = ic_buf_size(&c.wire);
    for (size_t k = 0; k <= n; k++) {
        ic_decoder *d = ic_decoder_new(0);
        assert_non_null(d);
        size_t got = 0;
        if (zero_copy)
            feed_space(d, w, k, 0);
        else
            feed(d, w, k);
        drain(d, &c, &got);
        if (zero_copy)
            feed_space(d, w + k, n - k, 0);
        else
            feed(d, w + k, n - k);
        drain(d, &c, &got);
        finish_clean(d, &c, got);
        ic_decoder_free(d);
    }
    corpus_free(&c);
}

static void test_split_every_byte(void **state) { split_everywhere(0); }
static void test_split_every_byte_zero_copy(void **state) { split_everywhere(1); }

static void byte_at_a_time(int big)
{
    corpus c;
    rng_seed(7);
    if (big)
        big_corpus(&c);
    else
        small_corpus(&c);
    const uint8_t *w = ic_buf_head(&c.wire);
    size_t n = ic_buf_size(&c.wire);
    ic_decoder *d = ic_decoder_new(0);
    size_t got = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 2)
            feed(d, w + i, 1);
        else
            feed_space(d, w + i, 1, 1);
        drain(d, &c, &got);
        /* What was fed is either in a returned frame or still pending. */
        assert_int_equal(ic_decoder_pending(d), i + 1 - frames_bytes(w, got));
    }
    finish_clean(d, &c, got);
    ic_decoder_free(d);
    corpus_free(&c);
}

static void test_byte_at_a_time(void **state) { byte_at_a_time(0); }
static void test_byte_at_a_time_big(void **state) { byte_at_a_time(1); }

/* Random chunk sizes, sometimes draining after each read and sometimes
 * letting many frames pile up before draining. */
static void test_random_chunks(void **state)
{
    corpus c;
    rng_seed(12345);
    big_corpus(&c);
    const uint8_t *w = ic_buf_head(&c.wire);
    size_t n = ic_buf_size(&c.wire);
    for (int iter = 0; iter < 300; iter++) {
        ic_decoder *d = ic_decoder_new(0);
        size_t got = 0, off = 0;
        size_t maxchunk = (size_t[]){3, 64, 1000, 70000, 400000}[iter % 5];
        while (off < n) {
            size_t k = 1 + (size_t)(rng() % maxchunk);
            if (k > n - off)
                k = n - off;
            switch (rng() % 3) {
            case 0: feed(d, w + off, k); break;
            case 1: feed_space(d, w + off, k, k); break;
            default: feed_space(d, w + off, k, (size_t)(rng() % 70000)); break;
            }
            off += k;
            if (rng() % 4)
                drain(d, &c, &got);
        }
        drain(d, &c, &got);
        finish_clean(d, &c, got);
        ic_decoder_free(d);
    }
    corpus_free(&c);
}

/* A long stream read in 64 KiB chunks must not make the buffer grow
 * without bound (consumed space is reused) nor lose a byte. */
static void test_long_stream_bounded(void **state)
{
    ic_buf wire = IC_BUF_INIT;
    ic_err err;
    uint8_t payload[1500];
    ic_decoder *d = ic_decoder_new(0);
    size_t frames = 0, decoded = 0, max_room = 0;
    uint64_t sum_in = 0, sum_out = 0;
    for (int round = 0; round < 200; round++) {
        ic_buf_reset(&wire);
        for (int i = 0; i < 50; i++) {
            size_t len = (size_t)((round * 50 + i) % (int)sizeof(payload));
            fill(payload, len, (uint8_t)i);
            for (size_t j = 0; j < len; j++)
                sum_in += payload[j];
            assert_int_equal(ic_frame_put_data(&wire, (uint32_t)frames++, 1, payload, len, &err), 0);
        }
        const uint8_t *p = ic_buf_head(&wire);
        size_t n = ic_buf_size(&wire);
        while (n > 0) {
            uint8_t *dst;
            size_t room;
            assert_int_equal(ic_decoder_space(d, 65536, &dst, &room), 0);
            if (room > max_room)
                max_room = room;
            size_t k = n < 65536 ? n : 65536;
            memcpy(dst, p, k);
            ic_decoder_commit(d, k);
            p += k;
            n -= k;
            ic_frame f;
            int r;
            while ((r = ic_decoder_next(d, &f, &err)) == 1) {
                assert_int_equal(f.stream, decoded);
                decoded++;
                for (size_t j = 0; j < f.len; j++)
                    sum_out += f.data[j];
            }
            assert_int_equal(r, 0);
        }
    }
    assert_int_equal(decoded, frames);
    assert_true(sum_in == sum_out);
    assert_int_equal(ic_decoder_pending(d), 0);
    /* The pending part of a frame is < 1.6 KiB: room never needs to pass
     * a small multiple of the 64 KiB read size. */
    assert_true(max_room <= (size_t)4 * 65536);
    ic_decoder_free(d);
    ic_buf_free(&wire);
}

/* After one big frame the buffer shrinks back, keeping a pending partial
 * frame intact. */
static void test_buffer_shrinks(void **state)
{
    const size_t big = 2u << 20;
    uint8_t *payload = calloc(1, big);
    assert_non_null(payload);
    fill(payload, big, 5);
    ic_buf wire = IC_BUF_INIT;
    ic_err err;
    assert_int_equal(ic_frame_put_data(&wire, 1, 1, payload, big, &err), 0);
    assert_int_equal(ic_frame_put_json(&wire, IC_FRAME_MSG, "{\"id\":1,\"result\":{}}", 20, &err), 0);
    size_t n = ic_buf_size(&wire);
    ic_decoder *d = ic_decoder_new(0);
    feed_space(d, ic_buf_head(&wire), n - 8, 65536);
    ic_frame f;
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.len, big);
    assert_memory_equal(f.data, payload, big);
    assert_int_equal(ic_decoder_next(d, &f, &err), 0);
    assert_int_equal(ic_decoder_pending(d), 25 - 8);
    uint8_t *dst;
    size_t room;
    assert_int_equal(ic_decoder_space(d, 65536, &dst, &room), 0);
    assert_true(room >= 65536 && room < (1u << 20));
    feed(d, ic_buf_head(&wire) + n - 8, 8);
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.kind, IC_FRAME_MSG);
    assert_int_equal(f.len, 20);
    assert_memory_equal(f.data, "{\"id\":1,\"result\":{}}", 20);
    assert_int_equal(ic_decoder_pending(d), 0);
    ic_decoder_free(d);
    ic_buf_free(&wire);
    free(payload);
}

/* ---- limits --------------------------------------------------------------- */

static void test_exact_limit_custom(void **state)
{
    const size_t max = 1000;
    ic_buf wire = IC_BUF_INIT;
    ic_err err;
    uint8_t payload[1000];
    fill(payload, sizeof(payload), 3);
    /* DATA with L == max, MSG with L == max, both accepted. */
    assert_int_equal(ic_frame_put_data(&wire, 5, 1, payload, max - 6, &err), 0);
    assert_int_equal(ic_frame_put_json(&wire, IC_FRAME_MSG, (char *)payload, max - 1, &err), 0);
    ic_decoder *d = ic_decoder_new(max);
    feed_space(d, ic_buf_head(&wire), ic_buf_size(&wire), 100);
    ic_frame f;
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.kind, IC_FRAME_DATA);
    assert_int_equal(f.len, max - 6);
    assert_memory_equal(f.data, payload, max - 6);
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.kind, IC_FRAME_MSG);
    assert_int_equal(f.len, max - 1);
    assert_memory_equal(f.data, payload, max - 1);
    assert_int_equal(ic_decoder_next(d, &f, &err), 0);

    /* One byte more is refused as soon as the length is in. */
    ic_buf_reset(&wire);
    assert_int_equal(ic_frame_put_data(&wire, 5, 1, payload, max - 5, &err), 0);
    feed(d, ic_buf_head(&wire), 4);
    assert_int_equal(ic_decoder_next(d, &f, &err), -EMSGSIZE);
    assert_non_null(strstr(err.msg, "1001"));
    assert_non_null(strstr(err.msg, "1000"));
    ic_decoder_free(d);
    ic_buf_free(&wire);
}

/* One real 16 MiB DATA frame through the default decoder. */
static void test_full_size_frame(void **state)
{
    const size_t plen = IC_FRAME_MAX - 1 - IC_DATA_HEADER;
    uint8_t *payload = malloc(IC_FRAME_MAX);
    assert_non_null(payload);
    fill(payload, IC_FRAME_MAX, 77);
    ic_buf wire = IC_BUF_INIT;
    ic_err err;
    assert_int_equal(ic_frame_put_data(&wire, 1, IC_CHAN_FILE, payload, plen + 1, &err), -EMSGSIZE);
    assert_int_equal(ic_buf_size(&wire), 0);
    assert_int_equal(ic_frame_put_data(&wire, 1, IC_CHAN_FILE, payload, plen, &err), 0);
    assert_int_equal(ic_buf_size(&wire), 4 + (size_t)IC_FRAME_MAX);
    assert_int_equal(ic_be32_read(ic_buf_head(&wire)), IC_FRAME_MAX);

    ic_decoder *d = ic_decoder_new(0);
    const uint8_t *p = ic_buf_head(&wire);
    size_t n = ic_buf_size(&wire);
    ic_frame f = {0};
    for (size_t off = 0; off < n; off += IC_DATA_CHUNK) {
        size_t k = n - off < IC_DATA_CHUNK ? n - off : IC_DATA_CHUNK;
        feed_space(d, p + off, k, IC_DATA_CHUNK);
        int r = ic_decoder_next(d, &f, &err);
        assert_int_equal(r, off + k == n ? 1 : 0);
    }
    assert_int_equal(f.kind, IC_FRAME_DATA);
    assert_int_equal(f.stream, 1);
    assert_int_equal(f.channel, IC_CHAN_FILE);
    assert_int_equal(f.len, plen);
    assert_memory_equal(f.data, payload, plen);
    assert_int_equal(ic_decoder_pending(d), 0);

    /* JSON frames have the same ceiling. */
    ic_buf_reset(&wire);
    assert_int_equal(ic_frame_put_json(&wire, IC_FRAME_MSG, (char *)payload, IC_FRAME_MAX, &err),
                     -EMSGSIZE);
    assert_int_equal(ic_buf_size(&wire), 0);
    assert_int_equal(ic_frame_put_json(&wire, IC_FRAME_MSG, (char *)payload, IC_FRAME_MAX - 1, &err),
                     0);
    assert_int_equal(ic_be32_read(ic_buf_head(&wire)), IC_FRAME_MAX);
    ic_decoder_free(d);
    ic_buf_free(&wire);
    free(payload);
}

/* Lengths that must be refused with only the length bytes buffered:
 * the decoder must not wait (and buffer) for a frame it will never take. */
static void oversized(uint32_t L, int zero_copy)
{
    uint8_t hdr[4] = {(uint8_t)(L >> 24), (uint8_t)(L >> 16), (uint8_t)(L >> 8), (uint8_t)L};
    ic_decoder *d = ic_decoder_new(0);
    ic_err err;
    ic_frame f;
    if (zero_copy)
        feed_space(d, hdr, 3, 4);
    else
        feed(d, hdr, 3);
    assert_int_equal(ic_decoder_next(d, &f, &err), 0);
    if (zero_copy)
        feed_space(d, hdr + 3, 1, 4);
    else
        feed(d, hdr + 3, 1);
    assert_int_equal(ic_decoder_next(d, &f, &err), -EMSGSIZE);
    assert_int_equal(err.code, EMSGSIZE);
    assert_non_null(strstr(err.msg, "exceeds"));
    assert_int_equal(ic_decoder_pending(d), 4);
    /* More bytes of the would-be frame go nowhere. */
    uint8_t junk[4096] = {IC_FRAME_DATA};
    assert_int_equal(ic_decoder_feed(d, junk, sizeof(junk), &err), -EMSGSIZE);
    uint8_t *dst;
    size_t room;
    assert_int_equal(ic_decoder_space(d, 1 << 20, &dst, &room), -EMSGSIZE);
    assert_int_equal(ic_decoder_pending(d), 4);
    ic_decoder_free(d);
}

static void test_oversized(void **state)
{
    oversized(IC_FRAME_MAX + 1, 0);
    oversized(IC_FRAME_MAX + 1, 1);
    oversized(0xffffffffu, 0);
    oversized(0xffffffffu, 1);
    oversized(0x80000000u, 0);
}

/* ---- malformed input ------------------------------------------------------ */

/* Feeds `bytes` and expects next() to fail with `code` and a message
 * containing `needle`, and to keep failing identically. */
static void expect_bad(const uint8_t *bytes, size_t n, int code, const char *needle)
{
    ic_decoder *d = ic_decoder_new(0);
    ic_err err, again;
    ic_frame f;
    feed(d, bytes, n);
    int r;
    while ((r = ic_decoder_next(d, &f, &err)) == 1)
        ;
    assert_int_equal(r, -code);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, needle));
    /* Sticky: the same error from every entry point, forever. */
    for (int i = 0; i < 3; i++) {
        memset(&again, 0, sizeof(again));
        assert_int_equal(ic_decoder_next(d, &f, &again), -code);
        assert_string_equal(again.msg, err.msg);
        memset(&again, 0, sizeof(again));
        assert_int_equal(ic_decoder_feed(d, "\0\0\0\2\2{}", 7, &again), -code);
        assert_string_equal(again.msg, err.msg);
        assert_int_equal(ic_decoder_finish(d, &again), -code);
    }
    uint8_t *dst;
    size_t room;
    assert_int_equal(ic_decoder_space(d, 16, &dst, &room), -code);
    ic_decoder_commit(d, 16);   /* ignored after a failure */
    assert_int_equal(ic_decoder_next(d, &f, NULL), -code);
    ic_decoder_free(d);
}

static void test_zero_length(void **state)
{
    expect_bad((const uint8_t *)"\0\0\0\0", 4, EPROTO, "length 0");
    /* After a good frame too. */
    expect_bad((const uint8_t *)"\0\0\0\3\2{}\0\0\0\0\2", 12, EPROTO, "length 0");
}

static void test_unknown_kind(void **state)
{
    expect_bad((const uint8_t *)"\0\0\0\3\0{}", 7, EPROTO, "unknown frame kind 0");
    expect_bad((const uint8_t *)"\0\0\0\3\4{}", 7, EPROTO, "unknown frame kind 4");
    expect_bad((const uint8_t *)"\0\0\0\1\377", 5, EPROTO, "unknown frame kind 255");
    /* Refused on the kind byte alone, before the body arrives. */
    expect_bad((const uint8_t *)"\0\0\1\0\7", 5, EPROTO, "unknown frame kind 7");
}

static void test_short_data(void **state)
{
    uint8_t b[16] = {0};
    for (uint8_t L = 1; L < 6; L++) {
        b[3] = L;
        b[4] = IC_FRAME_DATA;
        expect_bad(b, 4 + L, EPROTO, "DATA");
    }
    /* L == 6 is an end-of-stream frame, legal. */
    b[3] = 6;
    ic_decoder *d = ic_decoder_new(0);
    ic_err err;
    ic_frame f;
    b[5] = 0xde, b[6] = 0xad, b[7] = 0xbe, b[8] = 0xef, b[9] = 2;
    feed(d, b, 10);
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.stream, 0xdeadbeefu);
    assert_int_equal(f.channel, 2);
    assert_int_equal(f.len, 0);
    ic_decoder_free(d);
}

static void test_truncated(void **state)
{
    corpus c;
    small_corpus(&c);
    const uint8_t *w = ic_buf_head(&c.wire);
    size_t n = ic_buf_size(&c.wire);
    /* Cut the stream at every point that is not a frame boundary. */
    size_t boundary = 0, frame = 0;
    for (size_t k = 1; k < n; k++) {
        if (k == boundary + 4 + ic_be32_read(w + boundary)) {
            boundary = k;
            frame++;
            continue;
        }
        ic_decoder *d = ic_decoder_new(0);
        size_t got = 0;
        ic_err err;
        feed(d, w, k);
        drain(d, &c, &got);
        assert_int_equal(got, frame);
        assert_int_equal(ic_decoder_pending(d), k - boundary);
        assert_int_equal(ic_decoder_finish(d, &err), -EPROTO);
        assert_non_null(strstr(err.msg, "truncated"));
        ic_decoder_free(d);
    }
    corpus_free(&c);
}

static void test_garbage(void **state)
{
    uint8_t buf[2048];
    rng_seed(99);
    int failed = 0, frames = 0;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = (size_t)(rng() % sizeof(buf));
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rng();
        /* Small plausible lengths half the time, so that some frames
         * decode and the decoder walks further. */
        if (iter % 2 && n >= 5) {
            buf[0] = buf[1] = 0;
            buf[2] &= 1;
            buf[4] = (uint8_t)(1 + rng() % 3);
        }
        ic_decoder *d = ic_decoder_new(iter % 3 ? 0 : 64);
        ic_err err;
        ic_frame f;
        size_t off = 0;
        int r = 0;
        while (off < n && r >= 0) {
            size_t k = 1 + (size_t)(rng() % 300);
            if (k > n - off)
                k = n - off;
            if (ic_decoder_feed(d, buf + off, k, &err) < 0)
                break;
            off += k;
            while ((r = ic_decoder_next(d, &f, &err)) == 1) {
                frames++;
                assert_true(f.kind >= IC_FRAME_HELLO && f.kind <= IC_FRAME_DATA);
                assert_true(f.len <= n);
                if (f.len)
                    (void)f.data[f.len - 1];   /* ASan checks it is in bounds */
            }
        }
        if (r < 0) {
            failed++;
            assert_int_equal(ic_decoder_next(d, &f, &err), r);
        }
        ic_decoder_free(d);
    }
    /* Both outcomes were exercised. */
    assert_true(failed > 100);
    assert_true(frames > 100);
}

/* ---- encoders ----------------------------------------------------------- */

static void test_encoding_bytes(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    assert_int_equal(ic_frame_put_data(&b, 0x01020304u, IC_CHAN_STDERR, "ab", 2, &err), 0);
    static const uint8_t want_data[] = {0, 0, 0, 8, 3, 1, 2, 3, 4, 2, 'a', 'b'};
    assert_int_equal(ic_buf_size(&b), sizeof(want_data));
    assert_memory_equal(ic_buf_head(&b), want_data, sizeof(want_data));

    ic_buf_reset(&b);
    assert_int_equal(ic_frame_put_json(&b, IC_FRAME_MSG, "{}", 2, &err), 0);
    assert_int_equal(ic_frame_put_json(&b, IC_FRAME_HELLO, "{}", 2, &err), 0);
    static const uint8_t want_json[] = {0, 0, 0, 3, 2, '{', '}', 0, 0, 0, 3, 1, '{', '}'};
    assert_int_equal(ic_buf_size(&b), sizeof(want_json));
    assert_memory_equal(ic_buf_head(&b), want_json, sizeof(want_json));

    /* DATA is not a JSON kind, and neither is garbage; `out` is untouched. */
    assert_int_equal(ic_frame_put_json(&b, IC_FRAME_DATA, "{}", 2, &err), -EINVAL);
    assert_int_equal(ic_frame_put_json(&b, 9, "{}", 2, &err), -EINVAL);
    assert_int_equal(ic_buf_size(&b), sizeof(want_json));
    ic_buf_free(&b);
}

/* A frame filled in place encodes exactly like ic_frame_put_data, and
 * one opened but not closed leaves the queue as it was. */
static void test_encoding_in_place(void **state)
{
    ic_buf a = IC_BUF_INIT, b = IC_BUF_INIT;
    ic_err err;
    uint8_t *dst;
    assert_int_equal(ic_frame_put_data(&a, 7, IC_CHAN_STDOUT, "hello", 5, &err), 0);
    assert_int_equal(ic_frame_put_data(&b, 7, IC_CHAN_STDOUT, "hello", 5, &err), 0);
    static const uint8_t abc[3] = {'a', 'b', 'c'};
    assert_int_equal(ic_frame_data_open(&a, 64, &dst, &err), 0);
    memcpy(dst, abc, sizeof(abc));
    ic_frame_data_close(&a, 0x01020304u, IC_CHAN_STDERR, 3);
    assert_int_equal(ic_frame_put_data(&b, 0x01020304u, IC_CHAN_STDERR, "abc", 3, &err), 0);
    assert_int_equal(ic_buf_size(&a), ic_buf_size(&b));
    assert_memory_equal(ic_buf_head(&a), ic_buf_head(&b), ic_buf_size(&b));

    size_t before = ic_buf_size(&a);
    assert_int_equal(ic_frame_data_open(&a, IC_DATA_CHUNK, &dst, &err), 0);
    assert_int_equal(ic_buf_size(&a), before);
    assert_int_equal(ic_frame_data_open(&a, 0, &dst, &err), -EMSGSIZE);
    assert_int_equal(ic_frame_data_open(&a, IC_FRAME_MAX, &dst, &err), -EMSGSIZE);
    assert_int_equal(ic_buf_size(&a), before);

    ic_decoder *d = ic_decoder_new(0);
    feed(d, ic_buf_head(&a), ic_buf_size(&a));
    ic_frame f;
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_int_equal(f.kind, IC_FRAME_DATA);
    assert_int_equal(f.stream, 0x01020304u);
    assert_int_equal(f.channel, IC_CHAN_STDERR);
    assert_int_equal(f.len, 3);
    assert_memory_equal(f.data, "abc", 3);
    ic_decoder_free(d);
    ic_buf_free(&a);
    ic_buf_free(&b);
}

/* A write queue with a standing backlog (64 KiB frames in, 32 KiB taken
 * out at a time, as the guest's queue to a virtio-serial port) keeps its
 * bytes in order, stays within a small multiple of the backlog, and moves
 * its backlog only once at least as much has been consumed: compacting
 * on every append would copy the whole backlog per frame (the backlog
 * here is sized so that backlog + frame fills a power of two exactly). */
static void test_queue_backlog(void **state)
{
    enum { IN = 64 * 1024, OUT = 32 * 1024, BACKLOG = 1024 * 1024 - IN };
    ic_buf q = IC_BUF_INIT;
    static uint8_t chunk[IN];
    uint64_t put = 0, took = 0, moved = 0;
    size_t max_cap = 0;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < IN; i++)
            chunk[i] = (uint8_t)((put + i) * 31 / 7);
        size_t off = q.off, live = ic_buf_size(&q);
        bool must_grow = q.cap - q.len < IN;
        assert_int_equal(ic_buf_append(&q, chunk, IN), 0);
        if (must_grow && off > 0 && q.off == 0)
            moved += live;
        put += IN;
        if (q.cap > max_cap)
            max_cap = q.cap;
        while (ic_buf_size(&q) > BACKLOG) {
            const uint8_t *h = ic_buf_head(&q);
            for (size_t i = 0; i < OUT; i += 4093)
                assert_int_equal(h[i], (uint8_t)((took + i) * 31 / 7));
            ic_buf_consume(&q, OUT);
            took += OUT;
        }
    }
    /* Compacting on every append moves about 15 times what went in. */
    assert_true(moved <= put);
    assert_true(max_cap <= (size_t)4 * (BACKLOG + IN));
    ic_buf_free(&q);
}

/* Small pieces join the last DATA frame of their stream, up to `max`;
 * anything else (another stream or channel, a frame that is not the last,
 * an end of stream) starts a new frame. */
static void test_encoding_extend(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    assert_int_equal(ic_frame_put_json(&b, IC_FRAME_MSG, "{}", 2, &err), 0);
    size_t at = ic_buf_size(&b);
    assert_int_equal(ic_frame_put_data(&b, 9, IC_CHAN_STDIN, "ab", 2, &err), 0);
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_STDIN, "cdef", 4, 6), 4);
    /* Full at max = 6: nothing more fits. */
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_STDIN, "g", 1, 6), 0);
    /* With more room only what fits is taken. */
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_STDIN, "ghij", 4, 8), 2);
    assert_int_equal(ic_frame_data_extend(&b, at, 8, IC_CHAN_STDIN, "x", 1, 64), 0);
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_FILE, "x", 1, 64), 0);
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_STDIN, "x", 0, 64), 0);
    assert_int_equal(ic_frame_data_extend(&b, at + 1, 9, IC_CHAN_STDIN, "x", 1, 64), 0);
    assert_int_equal(ic_frame_data_extend(&b, ic_buf_size(&b) + 1, 9, IC_CHAN_STDIN, "x", 1, 64), 0);

    ic_buf want = IC_BUF_INIT;
    assert_int_equal(ic_frame_put_json(&want, IC_FRAME_MSG, "{}", 2, &err), 0);
    assert_int_equal(ic_frame_put_data(&want, 9, IC_CHAN_STDIN, "abcdefgh", 8, &err), 0);
    assert_int_equal(ic_buf_size(&b), ic_buf_size(&want));
    assert_memory_equal(ic_buf_head(&b), ic_buf_head(&want), ic_buf_size(&want));

    /* Not the last frame any more, or an end of stream: no. */
    size_t eof_at = ic_buf_size(&b);
    assert_int_equal(ic_frame_put_data(&b, 9, IC_CHAN_STDIN, NULL, 0, &err), 0);
    assert_int_equal(ic_frame_data_extend(&b, at, 9, IC_CHAN_STDIN, "x", 1, 64), 0);
    assert_int_equal(ic_frame_data_extend(&b, eof_at, 9, IC_CHAN_STDIN, "x", 1, 64), 0);
    ic_buf_free(&b);
    ic_buf_free(&want);
}

static void test_new_free(void **state)
{
    ic_decoder_free(NULL);
    ic_decoder *d = ic_decoder_new(0);
    assert_non_null(d);
    ic_err err;
    ic_frame f;
    assert_int_equal(ic_decoder_pending(d), 0);
    assert_int_equal(ic_decoder_next(d, &f, &err), 0);
    assert_int_equal(ic_decoder_finish(d, &err), 0);
    assert_int_equal(ic_decoder_feed(d, NULL, 0, &err), 0);
    /* Partial header at EOF is truncation too. */
    feed(d, (const uint8_t *)"\0\0", 2);
    assert_int_equal(ic_decoder_next(d, &f, &err), 0);
    assert_int_equal(ic_decoder_finish(d, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "2 bytes"));
    ic_decoder_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_encoding_bytes),
        cmocka_unit_test(test_encoding_in_place),
        cmocka_unit_test(test_encoding_extend),
        cmocka_unit_test(test_queue_backlog),
        cmocka_unit_test(test_whole_stream),
        cmocka_unit_test(test_split_every_byte),
        cmocka_unit_test(test_split_every_byte_zero_copy),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_byte_at_a_time_big),
        cmocka_unit_test(test_random_chunks),
        cmocka_unit_test(test_long_stream_bounded),
        cmocka_unit_test(test_buffer_shrinks),
        cmocka_unit_test(test_exact_limit_custom),
        cmocka_unit_test(test_full_size_frame),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_zero_length),
        cmocka_unit_test(test_unknown_kind),
        cmocka_unit_test(test_short_data),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
