/*
 * buf.c - growable byte buffer. Consumed space at the front is reclaimed
 * by compaction before the buffer grows, but only once the consumed part
 * is at least as big as what has to move, so a long-lived queue copies
 * each byte at most once more and stays within four times its largest
 * backlog.
 */
#include "ironclaw/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ic_buf_free(ic_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

/* Moves the unconsumed bytes to the front. */
static void buf_compact(ic_buf *b)
{
    size_t live = b->len - b->off;
    if (live)
        memmove(b->data, b->data + b->off, live);
    b->off = 0;
    b->len = live;
}

int ic_buf_reserve(ic_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    /* Compacting moves the unconsumed bytes; doing it only once at least
     * as many have been consumed keeps the cost amortized O(1) per byte,
     * where compacting a big backlog on every append would be quadratic. */
    if (b->off > 0 && b->off >= b->len - b->off) {
        buf_compact(b);
        if (b->cap - b->len >= n)
            return 0;
    }
    /* Otherwise grow, keeping any consumed prefix until it is worth
     * moving: then off < unconsumed, so the buffer stays within four
     * times its largest backlog (plus the request). */
    if (n > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t want = b->len + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

uint8_t *ic_buf_tail(ic_buf *b, size_t *room)
{
    *room = b->cap - b->len;
    return b->data + b->len;
}

void ic_buf_commit(ic_buf *b, size_t n) { b->len += n; }

int ic_buf_append(ic_buf *b, const void *data, size_t n)
{
    int r = ic_buf_reserve(b, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

int ic_buf_append_u8(ic_buf *b, uint8_t v) { return ic_buf_append(b, &v, 1); }

int ic_buf_append_be32(ic_buf *b, uint32_t v)
{
    uint8_t p[4];
    ic_be32_write(p, v);
    return ic_buf_append(b, p, 4);
}

void ic_buf_consume(ic_buf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

void ic_buf_reset(ic_buf *b) { b->off = b->len = 0; }
