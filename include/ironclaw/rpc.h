/*
 * rpc.h - the host end of one channel to a guest agent.
 *
 * Owns the channel stream, its decoder and its write queue. Sends the
 * host's HELLO, checks the guest's, matches responses to requests by id,
 * times requests out, and hands notifications and DATA frames to the
 * owner. Reads and writes never block the loop; the owner applies
 * back-pressure with ic_rpc_pause() when it cannot keep up with DATA, and
 * watches ic_rpc_queued() / the drained event before writing more.
 */
#ifndef IRONCLAW_RPC_H
#define IRONCLAW_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "ironclaw/err.h"
#include "ironclaw/proto.h"

typedef struct ic_rpc ic_rpc;

/* Above this many queued bytes a writer should wait for `drained`. */
#define IC_RPC_HIGH_WATER (1u << 20)

struct ic_rpc_events {
    /* The guest's HELLO arrived and was accepted. */
    void (*ready)(ic_rpc *rpc, const char *agent, void *ud);
    /* A notification (exit, stream.error, log). */
    void (*notify)(ic_rpc *rpc, const ic_msg *msg, void *ud);
    /* Stream bytes; n == 0 is end of stream. `p` is valid only during the call. */
    void (*data)(ic_rpc *rpc, uint32_t stream, uint8_t channel, const uint8_t *p, size_t n, void *ud);
    /* The write queue fell below IC_RPC_HIGH_WATER / 4. */
    void (*drained)(ic_rpc *rpc, void *ud);
    /* The channel ended: err says why (peer closed, protocol error). Not
     * called after ic_rpc_close(). Pending requests have been failed. */
    void (*closed)(ic_rpc *rpc, const ic_err *err, void *ud);
};

/* Takes ownership of `stream` (malloc'd; freed on close), sends HELLO and
 * starts reading. */
int ic_rpc_open(uv_stream_t *stream, const struct ic_rpc_events *ev, void *ud, ic_rpc **out,
                ic_err *err);

/* Answer to a request: `reply` is the response or error message (for an
 * error message `err` also holds its code and text); reply is NULL when
 * the request timed out or the channel ended, with err saying which. */
typedef void (*ic_rpc_reply_fn)(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud);

/* Sends a request. params is borrowed (NULL for {}); timeout_ms 0 = none.
 * *id_out (may be NULL) receives the id, which also names its DATA stream. */
int ic_rpc_call(ic_rpc *rpc, const char *method, json_t *params, uint32_t timeout_ms,
                ic_rpc_reply_fn fn, void *ud, uint32_t *id_out, ic_err *err);

/* Queues DATA on (stream, channel); n == 0 sends end of stream. Large
 * buffers are cut into IC_DATA_CHUNK frames. */
int ic_rpc_send_data(ic_rpc *rpc, uint32_t stream, uint8_t channel, const void *p, size_t n,
                     ic_err *err);

/* Bytes queued for writing and not yet taken by the kernel. */
size_t ic_rpc_queued(const ic_rpc *rpc);

/* Stops/resumes handing frames to the owner (and reading the channel). */
void ic_rpc_pause(ic_rpc *rpc, bool paused);

/* Fails pending requests (without calling `closed`), closes the stream and
 * frees the rpc once libuv has closed its handles. Idempotent. */
void ic_rpc_close(ic_rpc *rpc);

#endif
