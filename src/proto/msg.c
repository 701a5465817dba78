/*
 * msg.c - the message layer of the wire protocol (docs/protocol.md, 2-3):
 * parsing and validating the JSON envelope inside MSG frames, encoding the
 * four message shapes, and the HELLO handshake.
 *
 * The parser is strict about the envelope (an id out of range or a
 * response with both result and error ends the connection) and lenient
 * about everything else: unknown members are ignored, as the protocol
 * asks. Encoders write compact JSON straight into the output buffer.
 *
 * Only jansson and libc: this file is linked into the static guest.
 */
#include "ironclaw/proto.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 0xffffffffu

/* Parses a JSON object; `what` names the frame in errors. Duplicate keys
 * are refused: two "id" members would mean different things to different
 * JSON parsers. */
static json_t *load_object(const uint8_t *json, size_t len, const char *what, ic_err *err)
{
    json_error_t je;
    json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        ic_err_set(err, EPROTO, "protocol error: %s is not valid JSON: %s (at byte %d)",
                   what, je.text, je.position);
        return NULL;
    }
    if (!json_is_object(root)) {
        ic_err_set(err, EPROTO, "protocol error: %s is not a JSON object", what);
        json_decref(root);
        return NULL;
    }
    return root;
}

static int parse_id(json_t *jid, uint32_t *id, ic_err *err)
{
    if (!json_is_integer(jid))
        return ic_err_set(err, EPROTO, "protocol error: message id is not an integer");
    json_int_t v = json_integer_value(jid);
    if (v < 1 || v > (json_int_t)ID_MAX)
        return ic_err_set(err, EPROTO, "protocol error: message id %lld is outside 1..%u",
                          (long long)v, ID_MAX);
    *id = (uint32_t)v;
    return 0;
}

/* Requests and notifications: method is a non-empty string, params an
 * object; an absent params becomes an empty object owned by root. */
static int parse_call(ic_msg *m, ic_err *err)
{
    json_t *jm = json_object_get(m->root, "method");
    if (!json_is_string(jm) || json_string_length(jm) == 0)
        return ic_err_set(err, EPROTO, "protocol error: message method is not a non-empty string");
    if (json_object_get(m->root, "result") || json_object_get(m->root, "error"))
        return ic_err_set(err, EPROTO,
                          "protocol error: message has a method and also a result or error");
    m->method = json_string_value(jm);
    json_t *params = json_object_get(m->root, "params");
    if (!params) {
        params = json_object();
        if (!params || json_object_set_new(m->root, "params", params) < 0)
            return ic_err_set(err, ENOMEM, "out of memory parsing a message");
    } else if (!json_is_object(params)) {
        return ic_err_set(err, EPROTO, "protocol error: params of \"%s\" is not an object",
                          m->method);
    }
    m->params = params;
    return 0;
}

static int parse_error_member(ic_msg *m, json_t *jerr, ic_err *err)
{
    json_t *jc = json_object_get(jerr, "code");
    json_t *jmsg = json_object_get(jerr, "message");
    if (!json_is_object(jerr) || !json_is_integer(jc) || !json_is_string(jmsg))
        return ic_err_set(err, EPROTO,
                          "protocol error: error member is not {\"code\": N, \"message\": \"...\"}");
    json_int_t code = json_integer_value(jc);
    if (code < 1 || code > 0x7fffffff)
        return ic_err_set(err, EPROTO, "protocol error: error code %lld is not a positive errno",
                          (long long)code);
    m->error_code = (int)code;
    m->error_message = json_string_value(jmsg);
    return 0;
}

static int parse_envelope(ic_msg *m, ic_err *err)
{
    json_t *jid = json_object_get(m->root, "id");
    if (!jid) {
        if (!json_object_get(m->root, "method"))
            return ic_err_set(err, EPROTO, "protocol error: message has neither id nor method");
        m->type = IC_MSG_NOTIFY;
        return parse_call(m, err);
    }
    int r = parse_id(jid, &m->id, err);
    if (r < 0)
        return r;
    if (json_object_get(m->root, "method")) {
        m->type = IC_MSG_REQUEST;
        return parse_call(m, err);
    }
    json_t *result = json_object_get(m->root, "result");
    json_t *jerr = json_object_get(m->root, "error");
    if (!!result == !!jerr)
        return ic_err_set(err, EPROTO, "protocol error: reply %u must have exactly one of "
                          "result and error", m->id);
    if (result) {
        m->type = IC_MSG_RESPONSE;
        m->result = result;
        return 0;
    }
    m->type = IC_MSG_ERROR;
    return parse_error_member(m, jerr, err);
}

int ic_msg_parse(const uint8_t *json, size_t len, ic_msg *out, ic_err *err)
{
    memset(out, 0, sizeof(*out));
    out->root = load_object(json, len, "MSG", err);
    if (!out->root)
        return err ? -err->code : -EPROTO;
    int r = parse_envelope(out, err);
    if (r < 0)
        ic_msg_release(out);
    return r;
}

void ic_msg_release(ic_msg *m)
{
    if (!m)
        return;
    json_decref(m->root);
    memset(m, 0, sizeof(*m));
}

/* ---- encoding --------------------------------------------------------- */

/* Serializes obj (compact) directly behind a frame header in `out`; on
 * failure `out` is left as it was. */
static int put_object(ic_buf *out, uint8_t kind, json_t *obj, ic_err *err)
{
    size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
    if (n == 0)
        return ic_err_set(err, EINVAL, "cannot encode message as JSON");
    if (n > IC_FRAME_MAX - 1)
        return ic_err_set(err, EMSGSIZE, "message of %zu bytes exceeds the %zu-byte frame limit",
                          n, IC_FRAME_MAX);
    if (ic_buf_reserve(out, IC_FRAME_HEADER + n) < 0)
        return ic_err_set(err, ENOMEM, "out of memory encoding a %zu-byte message", n);
    size_t mark = out->len;
    ic_buf_append_be32(out, (uint32_t)(n + 1));
    ic_buf_append_u8(out, kind);
    size_t room;
    char *tail = (char *)ic_buf_tail(out, &room);
    if (json_dumpb(obj, tail, n, JSON_COMPACT) != n) {
        out->len = mark;
        return ic_err_set(err, EINVAL, "message changed size while being encoded");
    }
    ic_buf_commit(out, n);
    return 0;
}

/* A JSON string for text that may not be valid UTF-8 (error messages can
 * quote paths): bytes above 0x7f become '?' rather than failing the reply. */
static json_t *string_lossy(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p > 0x7f)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

/* Builds {"id":..?, "method":..., "params":...} around borrowed params. */
static json_t *build_call(uint32_t id, const char *method, json_t *params, ic_err *err)
{
    if (!method || !*method) {
        ic_err_set(err, EINVAL, "message method must be a non-empty string");
        return NULL;
    }
    if (params && !json_is_object(params)) {
        ic_err_set(err, EINVAL, "params of \"%s\" must be a JSON object", method);
        return NULL;
    }
    json_t *o = json_object();
    int bad = !o;
    if (!bad && id)
        bad = json_object_set_new(o, "id", json_integer(id)) < 0;
    if (!bad)
        bad = json_object_set_new(o, "method", json_string(method)) < 0;
    if (!bad)
        bad = params ? json_object_set(o, "params", params) < 0
                     : json_object_set_new(o, "params", json_object()) < 0;
    if (bad) {
        json_decref(o);
        ic_err_set(err, EINVAL, "cannot build message \"%s\" (not UTF-8, or out of memory)", method);
        return NULL;
    }
    return o;
}

int ic_msg_put_request(ic_buf *out, uint32_t id, const char *method,
                       json_t *params, ic_err *err)
{
    if (id == 0)
        return ic_err_set(err, EINVAL, "request id must be at least 1");
    json_t *o = build_call(id, method, params, err);
    if (!o)
        return err ? -err->code : -EINVAL;
    int r = put_object(out, IC_FRAME_MSG, o, err);
    json_decref(o);
    return r;
}

int ic_msg_put_notify(ic_buf *out, const char *method, json_t *params, ic_err *err)
{
    json_t *o = build_call(0, method, params, err);
    if (!o)
        return err ? -err->code : -EINVAL;
    int r = put_object(out, IC_FRAME_MSG, o, err);
    json_decref(o);
    return r;
}

int ic_msg_put_response(ic_buf *out, uint32_t id, json_t *result, ic_err *err)
{
    if (id == 0)
        return ic_err_set(err, EINVAL, "response id must be at least 1");
    json_t *o = json_object();
    int bad = !o || json_object_set_new(o, "id", json_integer(id)) < 0;
    if (!bad)
        bad = result ? json_object_set(o, "result", result) < 0
                     : json_object_set_new(o, "result", json_object()) < 0;
    if (bad) {
        json_decref(o);
        return ic_err_set(err, ENOMEM, "out of memory building response %u", id);
    }
    int r = put_object(out, IC_FRAME_MSG, o, err);
    json_decref(o);
    return r;
}

int ic_msg_put_error(ic_buf *out, uint32_t id, int code, const char *message, ic_err *err)
{
    if (id == 0)
        return ic_err_set(err, EINVAL, "error reply id must be at least 1");
    /* Callers hold negative errnos everywhere; the wire wants positive. */
    if (code < 0 && code != INT_MIN)
        code = -code;
    if (code <= 0)
        return ic_err_set(err, EINVAL, "error reply %u needs a positive errno, not %d", id, code);
    if (!message)
        message = strerror(code);
    json_t *e = json_object();
    json_t *o = json_object();
    int bad = !e || !o;
    if (!bad)
        bad = json_object_set_new(e, "code", json_integer(code)) < 0 ||
              json_object_set_new(e, "message", string_lossy(message)) < 0 ||
              json_object_set_new(o, "id", json_integer(id)) < 0 ||
              json_object_set(o, "error", e) < 0;
    int r = bad ? ic_err_set(err, ENOMEM, "out of memory building error reply %u", id)
                : put_object(out, IC_FRAME_MSG, o, err);
    json_decref(e);
    json_decref(o);
    return r;
}

/* ---- handshake ---------------------------------------------------------- */

static int role_ok(const char *role)
{
    return role && (strcmp(role, "host") == 0 || strcmp(role, "guest") == 0);
}

int ic_hello_put(ic_buf *out, const char *role, const char *agent, ic_err *err)
{
    if (!role_ok(role))
        return ic_err_set(err, EINVAL, "HELLO role must be \"host\" or \"guest\"");
    json_t *o = json_object();
    int bad = !o || json_object_set_new(o, "protocol", json_integer(IC_PROTO_VERSION)) < 0 ||
              json_object_set_new(o, "role", json_string(role)) < 0;
    if (!bad && agent)
        bad = json_object_set_new(o, "agent", string_lossy(agent)) < 0;
    int r = bad ? ic_err_set(err, ENOMEM, "out of memory building HELLO")
                : put_object(out, IC_FRAME_HELLO, o, err);
    json_decref(o);
    return r;
}

/* Copies peer-supplied text for logs; control characters become '?' so
 * that a hostile peer cannot forge log lines. */
static void copy_text(json_t *jagent, char *agent, size_t agent_size)
{
    if (!agent || agent_size == 0)
        return;
    agent[0] = '\0';
    if (!json_is_string(jagent))
        return;
    const char *s = json_string_value(jagent);
    size_t n = strnlen(s, agent_size - 1);
    /* Do not cut a UTF-8 sequence in half. */
    if (s[n] != '\0')
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    for (size_t i = 0; i < n; i++)
        agent[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    agent[n] = '\0';
}

int ic_hello_check(const uint8_t *json, size_t len, const char *expect_role,
                   char *agent, size_t agent_size, ic_err *err)
{
    if (agent && agent_size)
        agent[0] = '\0';
    json_t *root = load_object(json, len, "HELLO", err);
    if (!root)
        return err ? -err->code : -EPROTO;
    int r = 0;
    json_t *jp = json_object_get(root, "protocol");
    json_t *jrole = json_object_get(root, "role");
    if (!json_is_integer(jp)) {
        r = ic_err_set(err, EPROTONOSUPPORT,
                       "protocol mismatch: peer's HELLO names no protocol version, "
                       "this side speaks version %d", IC_PROTO_VERSION);
    } else if (json_integer_value(jp) != IC_PROTO_VERSION) {
        r = ic_err_set(err, EPROTONOSUPPORT,
                       "protocol mismatch: peer speaks version %lld, this side speaks version %d",
                       (long long)json_integer_value(jp), IC_PROTO_VERSION);
    } else if (!json_is_string(jrole)) {
        r = ic_err_set(err, EPROTO, "protocol error: HELLO has no role");
    } else if (!expect_role || strcmp(json_string_value(jrole), expect_role) != 0) {
        char role[33];
        copy_text(jrole, role, sizeof(role));
        r = ic_err_set(err, EPROTO, "protocol error: HELLO from a peer with role \"%s\", "
                       "expected \"%s\"", role, expect_role ? expect_role : "(none)");
    } else {
        copy_text(json_object_get(root, "agent"), agent, agent_size);
    }
    json_decref(root);
    return r;
}
