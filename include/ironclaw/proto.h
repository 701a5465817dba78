/*
 * proto.h - the host<->guest wire codec, shared by ironclaw and
 * ironclaw-guest. docs/protocol.md is the specification; this header is
 * its only implementation's interface.
 *
 * Frame on the wire:
 *
 *   u32 big-endian  L      length of everything after this field, 1..IC_FRAME_MAX
 *   u8              kind   IC_FRAME_HELLO | IC_FRAME_MSG | IC_FRAME_DATA
 *   HELLO, MSG:     L-1 bytes of UTF-8 JSON (one object)
 *   DATA:           u32 BE stream id, u8 channel, L-6 payload bytes
 *                   (an empty payload is end-of-stream for that channel)
 *
 * The decoder owns one persistent buffer per connection. Bytes fed to it are
 * never dropped: a frame split across any number of reads, or many frames
 * coalesced in one read, decode the same. The length is checked against the
 * decoder's limit before any buffer grows for the frame. Any malformed
 * input puts the decoder in a sticky error state; the connection must end.
 */
#ifndef IRONCLAW_PROTO_H
#define IRONCLAW_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ironclaw/buf.h"
#include "ironclaw/err.h"

#define IC_PROTO_VERSION 1
#define IC_FRAME_MAX ((size_t)16 * 1024 * 1024)   /* largest L accepted */
#define IC_FRAME_HEADER 5u                   /* length + kind */
#define IC_DATA_HEADER 5u                    /* stream + channel, after kind */
#define IC_DATA_CHUNK ((size_t)64 * 1024)         /* what senders put in one DATA frame */

enum ic_frame_kind {
    IC_FRAME_HELLO = 1,
    IC_FRAME_MSG = 2,
    IC_FRAME_DATA = 3,
};

enum ic_channel {
    IC_CHAN_STDIN = 0,
    IC_CHAN_STDOUT = 1,
    IC_CHAN_STDERR = 2,
    IC_CHAN_FILE = 3,
};

/* A decoded frame. `data` points into the decoder's buffer and is valid
 * until the next call on that decoder. For HELLO/MSG, `data` is the JSON
 * text (not NUL-terminated); stream and channel are 0. */
typedef struct ic_frame {
    uint8_t kind;
    uint8_t channel;
    uint32_t stream;
    const uint8_t *data;
    size_t len;
} ic_frame;

typedef struct ic_decoder ic_decoder;

/* max_frame: largest L accepted (0 means IC_FRAME_MAX). NULL on ENOMEM. */
ic_decoder *ic_decoder_new(size_t max_frame);
void ic_decoder_free(ic_decoder *d);

/* Copies bytes in. Returns 0, or <0 if the decoder already failed / ENOMEM. */
int ic_decoder_feed(ic_decoder *d, const void *data, size_t len, ic_err *err);

/* Zero-copy reading: a writable region of at least `hint` bytes (may be
 * larger) into which the caller read()s, then ic_decoder_commit(n). */
int ic_decoder_space(ic_decoder *d, size_t hint, uint8_t **ptr, size_t *room);
void ic_decoder_commit(ic_decoder *d, size_t n);

/* Returns 1 and fills *out when a whole frame is buffered, 0 when more
 * bytes are needed, or <0 (sticky) on malformed input: zero length,
 * length over the limit, unknown kind, DATA shorter than its header,
 * HELLO/MSG that is not valid UTF-8 JSON object text is NOT checked here
 * (that is the message layer's job). */
int ic_decoder_next(ic_decoder *d, ic_frame *out, ic_err *err);

/* Bytes buffered but not yet returned as frames (a partial frame at EOF
 * means the peer truncated the stream). */
size_t ic_decoder_pending(const ic_decoder *d);

/* Call at end of stream: 0 when the stream ended on a frame boundary,
 * otherwise -EPROTO with a message saying how much of which frame was
 * left over (or the decoder's sticky error). */
int ic_decoder_finish(const ic_decoder *d, ic_err *err);

/* Error codes of ic_decoder_next: -EMSGSIZE for a length over the limit,
 * -EPROTO for every other malformed frame. The channel byte of DATA frames
 * is passed through unchecked; consumers reject channels they do not
 * expect. */

/* Encoders append one whole frame to `out`. They fail with -EMSGSIZE when
 * the frame would exceed IC_FRAME_MAX (and -EINVAL for a JSON frame whose
 * kind is not HELLO/MSG); on any failure `out` is left unchanged. */
int ic_frame_put_json(ic_buf *out, uint8_t kind, const char *json, size_t len, ic_err *err);
int ic_frame_put_data(ic_buf *out, uint32_t stream, uint8_t channel,
                      const void *data, size_t len, ic_err *err);

/* A DATA frame filled in place, for a reader that can put its bytes
 * straight into the queue (no copy through a scratch buffer): _open makes
 * room for up to `max` payload bytes (0 < max <= IC_FRAME_MAX - 1 -
 * IC_DATA_HEADER) and returns where they go; _close appends the frame
 * with the first n of them (0 < n <= max). Not closing leaves `out` as it
 * was; nothing else may touch `out` between the two calls. */
int ic_frame_data_open(ic_buf *out, size_t max, uint8_t **payload, ic_err *err);
void ic_frame_data_close(ic_buf *out, uint32_t stream, uint8_t channel, size_t n);

/* Grows the DATA frame that starts `at` bytes past ic_buf_head(out) by up
 * to `len` bytes of `data`, so that a writer handed small pieces sends
 * few frames. Only a frame that is the last one in `out`, of the same
 * stream and channel, with a non-empty payload (an empty one is an end of
 * stream) of less than `max` bytes (<= IC_FRAME_MAX - 1 - IC_DATA_HEADER)
 * is grown; returns how many bytes it took, 0 when it cannot (or -ENOMEM). */
ssize_t ic_frame_data_extend(ic_buf *out, size_t at, uint32_t stream, uint8_t channel,
                             const void *data, size_t len, size_t max);

/* ---- message layer (JSON inside HELLO/MSG frames) -------------------- */

/* Methods, see docs/protocol.md for params and results. */
#define IC_M_EXEC      "exec"
#define IC_M_SIGNAL    "signal"
#define IC_M_FILE_PUT  "file.put"
#define IC_M_FILE_GET  "file.get"
#define IC_M_FILE_LIST "file.list"
#define IC_M_POWEROFF  "poweroff"
#define IC_M_PING      "ping"
/* Notifications (guest -> host) */
#define IC_N_EXIT         "exit"
#define IC_N_STREAM_ERROR "stream.error"
#define IC_N_LOG          "log"

enum ic_msg_type {
    IC_MSG_REQUEST = 1,      /* id + method + params */
    IC_MSG_RESPONSE,         /* id + result */
    IC_MSG_ERROR,            /* id + error{code,message} */
    IC_MSG_NOTIFY,           /* method + params, no id */
};

struct json_t;

/* A parsed message. Owns `root`; params/result point inside it. */
typedef struct ic_msg {
    enum ic_msg_type type;
    uint32_t id;
    const char *method;          /* requests and notifications */
    struct json_t *params;       /* object, never NULL for requests/notifications */
    struct json_t *result;       /* responses */
    int error_code;              /* errors: positive errno-style code */
    const char *error_message;   /* errors */
    struct json_t *root;
} ic_msg;

/* Parses the JSON of a MSG frame; validates the envelope (id range, method a
 * string, exactly one of result/error, params an object). Errors are
 * -EPROTO. Requests and notifications without params get an empty object
 * (owned by root). On failure *out is zeroed and owns nothing. */
int ic_msg_parse(const uint8_t *json, size_t len, ic_msg *out, ic_err *err);
void ic_msg_release(ic_msg *m);

/* Encode whole MSG frames into `out` (compact JSON). `params`/`result` are
 * borrowed (may be NULL for {}); params must be an object. ids must be
 * non-zero. ic_msg_put_error accepts a negative errno too (sent as its
 * absolute value) and a NULL message (strerror(code)); message bytes that
 * are not UTF-8 are sent as '?'. */
int ic_msg_put_request(ic_buf *out, uint32_t id, const char *method,
                       struct json_t *params, ic_err *err);
int ic_msg_put_response(ic_buf *out, uint32_t id, struct json_t *result, ic_err *err);
int ic_msg_put_error(ic_buf *out, uint32_t id, int code, const char *message, ic_err *err);
int ic_msg_put_notify(ic_buf *out, const char *method, struct json_t *params, ic_err *err);

/* HELLO: {"protocol":N,"role":"host"|"guest","agent":"..."}. */
int ic_hello_put(ic_buf *out, const char *role, const char *agent, ic_err *err);
/* Checks a received HELLO: protocol must equal IC_PROTO_VERSION and role
 * must be `expect_role`. Copies the peer's agent string (may be NULL;
 * truncated to agent_size-1, control characters replaced by '?', "" when
 * absent). -EPROTONOSUPPORT on a version mismatch (the message names both
 * versions), -EPROTO otherwise. */
int ic_hello_check(const uint8_t *json, size_t len, const char *expect_role,
                   char *agent, size_t agent_size, ic_err *err);

#endif
