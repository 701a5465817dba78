/*
 * stream.h - moving bytes between local file descriptors and the loop.
 *
 * ic_sink writes to an fd in order without blocking the loop (the writes
 * run in libuv's thread pool, so a slow terminal, a full pipe or a slow disk
 * holds only a pool thread). ic_source reads an fd in chunks: terminals,
 * pipes and sockets through libuv handles (so a pending read can be
 * cancelled), regular files and anything else through the thread pool.
 * Both let the owner apply back-pressure: a sink reports its queue size and
 * calls back when it drains; a source can be paused.
 */
#ifndef IRONCLAW_STREAM_H
#define IRONCLAW_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "ironclaw/err.h"

typedef struct ic_sink ic_sink;
typedef struct ic_source ic_source;

/* Called once a sink has written everything and closed (if it owned the
 * fd); err is the first write error, or NULL. */
typedef void (*ic_sink_done_fn)(const ic_err *err, void *ud);
/* Called when the queue falls below a quarter of IC_SINK_HIGH_WATER. */
typedef void (*ic_sink_drain_fn)(ic_sink *sink, void *ud);

#define IC_SINK_HIGH_WATER (4u << 20)

/* owns_fd: close fd at the end (and fsync it first when `sync`). */
int ic_sink_open(uv_loop_t *loop, int fd, bool owns_fd, bool sync, ic_sink **out, ic_err *err);
/* Copies the bytes into the queue. Fails only after a write error. */
int ic_sink_write(ic_sink *sink, const void *p, size_t n, ic_err *err);
size_t ic_sink_queued(const ic_sink *sink);
void ic_sink_on_drain(ic_sink *sink, ic_sink_drain_fn fn, void *ud);
/* Finishes the queued writes, closes, calls done, frees the sink. */
void ic_sink_close(ic_sink *sink, ic_sink_done_fn done, void *ud);

/* Chunks as they are read; n == 0 is end of file. err is set (and n 0)
 * when reading failed; no further calls follow EOF or an error. */
typedef void (*ic_source_read_fn)(ic_source *src, const void *p, size_t n, const ic_err *err, void *ud);

int ic_source_open(uv_loop_t *loop, int fd, bool owns_fd, ic_source_read_fn fn, void *ud,
                   ic_source **out, ic_err *err);
void ic_source_pause(ic_source *src, bool paused);
/* Stops reading (a pending pool read is left to finish and discarded) and
 * frees the source once its handles are closed. */
void ic_source_close(ic_source *src);

#endif
