/*
 * buf.h - a growable byte buffer with a read offset.
 *
 * Bytes are appended at the end and consumed from the front; consumed space
 * is reclaimed lazily (compaction happens only when appending needs room,
 * and only once the consumed part is at least as big as what must move),
 * so a stream parser or a write queue can keep one buffer for a
 * connection's whole life and copies each byte at most once more.
 */
#ifndef IRONCLAW_BUF_H
#define IRONCLAW_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct ic_buf {
    uint8_t *data;
    size_t off;   /* first unconsumed byte */
    size_t len;   /* end of valid bytes; unconsumed = len - off */
    size_t cap;
} ic_buf;

#define IC_BUF_INIT {0}

void ic_buf_free(ic_buf *b);

/* Unconsumed bytes and their count. */
static inline const uint8_t *ic_buf_head(const ic_buf *b) { return b->data + b->off; }
static inline size_t ic_buf_size(const ic_buf *b) { return b->len - b->off; }

/* Makes room for n more bytes at the tail; returns 0 or -ENOMEM. */
int ic_buf_reserve(ic_buf *b, size_t n);
/* Pointer to the writable tail after ic_buf_reserve, and how much fits. */
uint8_t *ic_buf_tail(ic_buf *b, size_t *room);
/* Declares n bytes written at the tail. */
void ic_buf_commit(ic_buf *b, size_t n);

int ic_buf_append(ic_buf *b, const void *data, size_t n);
int ic_buf_append_u8(ic_buf *b, uint8_t v);
int ic_buf_append_be32(ic_buf *b, uint32_t v);

/* Drops n bytes from the front (n <= ic_buf_size). */
void ic_buf_consume(ic_buf *b, size_t n);
void ic_buf_reset(ic_buf *b);

static inline uint32_t ic_be32_read(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void ic_be32_write(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

#endif
