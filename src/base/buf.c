/*
 * buf.c - growable byte buffer. Compacts before it grows so that a
 * long-lived parser buffer stays the size of its largest pending frame.
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

int ic_buf_reserve(ic_buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    if (b->off > 0) {
        size_t live = b->len - b->off;
        memmove(b->data, b->data + b->off, live);
        b->off = 0;
        b->len = live;
        if (b->cap - b->len >= n)
            return 0;
    }
    if (n > SIZE_MAX / 2 - b->len)
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
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return ic_buf_append(b, p, 4);
}

void ic_buf_consume(ic_buf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

void ic_buf_reset(ic_buf *b) { b->off = b->len = 0; }
