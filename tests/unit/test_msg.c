/*
 * test_msg.c - the message layer (src/proto/msg.c): the four message shapes
 * survive encode -> frame -> decode -> parse, malformed envelopes are
 * refused, and the HELLO handshake checks version and role.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "ironclaw/proto.h"

/* Decodes the single frame in `b` (checking that it is the only one and of
 * `kind`) and returns its body. The decoder is returned for freeing. */
static ic_decoder *one_frame(const ic_buf *b, uint8_t kind, ic_frame *f)
{
    ic_decoder *d = ic_decoder_new(0);
    ic_err err;
    assert_int_equal(ic_decoder_feed(d, ic_buf_head(b), ic_buf_size(b), &err), 0);
    assert_int_equal(ic_decoder_next(d, f, &err), 1);
    assert_int_equal(f->kind, kind);
    ic_frame extra;
    assert_int_equal(ic_decoder_next(d, &extra, &err), 0);
    assert_int_equal(ic_decoder_pending(d), 0);
    return d;
}

static void assert_body(const ic_frame *f, const char *json)
{
    assert_int_equal(f->len, strlen(json));
    assert_memory_equal(f->data, json, f->len);
}

static int parse_str(const char *json, ic_msg *m, ic_err *err)
{
    return ic_msg_parse((const uint8_t *)json, strlen(json), m, err);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_request_roundtrip(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    json_t *params = json_pack("{s:[s,s],s:b}", "argv", "ls", "-l", "stdin", 1);
    assert_int_equal(ic_msg_put_request(&b, 7, IC_M_EXEC, params, &err), 0);
    /* Borrowed, not stolen. */
    assert_int_equal(params->refcount, 1);
    ic_frame f;
    ic_decoder *d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_body(&f, "{\"id\":7,\"method\":\"exec\",\"params\":{\"argv\":[\"ls\",\"-l\"],\"stdin\":true}}");
    ic_msg m;
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_REQUEST);
    assert_int_equal(m.id, 7);
    assert_string_equal(m.method, "exec");
    assert_true(json_equal(m.params, params));
    assert_null(m.result);
    ic_msg_release(&m);
    assert_null(m.root);
    ic_msg_release(&m);   /* twice is harmless */

    /* No params on the wire become {} in the parsed message, and the
     * largest id goes through. */
    ic_buf_reset(&b);
    assert_int_equal(ic_msg_put_request(&b, 0xffffffffu, IC_M_PING, NULL, &err), 0);
    ic_decoder_free(d);
    d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_body(&f, "{\"id\":4294967295,\"method\":\"ping\",\"params\":{}}");
    assert_int_equal(parse_str("{\"id\":4294967295,\"method\":\"ping\"}", &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_REQUEST);
    assert_int_equal(m.id, 0xffffffffu);
    assert_true(json_is_object(m.params));
    assert_int_equal(json_object_size(m.params), 0);
    ic_msg_release(&m);

    ic_decoder_free(d);
    json_decref(params);
    ic_buf_free(&b);
}

static void test_response_roundtrip(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    json_t *result = json_pack("{s:i}", "pid", 123);
    assert_int_equal(ic_msg_put_response(&b, 1, result, &err), 0);
    assert_int_equal(ic_msg_put_response(&b, 2, NULL, &err), 0);
    ic_decoder *d = ic_decoder_new(0);
    assert_int_equal(ic_decoder_feed(d, ic_buf_head(&b), ic_buf_size(&b), &err), 0);
    ic_frame f;
    ic_msg m;
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_body(&f, "{\"id\":1,\"result\":{\"pid\":123}}");
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_RESPONSE);
    assert_int_equal(m.id, 1);
    assert_true(json_equal(m.result, result));
    assert_null(m.method);
    assert_null(m.params);
    ic_msg_release(&m);
    assert_int_equal(ic_decoder_next(d, &f, &err), 1);
    assert_body(&f, "{\"id\":2,\"result\":{}}");

    /* Any JSON value is a result, null included. */
    assert_int_equal(parse_str("{\"id\":3,\"result\":null}", &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_RESPONSE);
    assert_true(json_is_null(m.result));
    ic_msg_release(&m);
    assert_int_equal(parse_str("{\"result\":[1,2],\"id\":9,\"extra\":{\"x\":1}}", &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_RESPONSE);
    assert_int_equal(m.id, 9);
    assert_int_equal(json_array_size(m.result), 2);
    ic_msg_release(&m);

    ic_decoder_free(d);
    json_decref(result);
    ic_buf_free(&b);
}

static void test_error_roundtrip(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    ic_frame f;
    ic_msg m;
    assert_int_equal(ic_msg_put_error(&b, 5, ENOENT, "no such program: lss", &err), 0);
    ic_decoder *d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_body(&f, "{\"id\":5,\"error\":{\"code\":2,\"message\":\"no such program: lss\"}}");
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_ERROR);
    assert_int_equal(m.id, 5);
    assert_int_equal(m.error_code, ENOENT);
    assert_string_equal(m.error_message, "no such program: lss");
    ic_msg_release(&m);
    ic_decoder_free(d);

    /* A negative errno is sent as its absolute value; no message means
     * strerror; bytes that are not UTF-8 become '?'. */
    ic_buf_reset(&b);
    assert_int_equal(ic_msg_put_error(&b, 6, -ENOSYS, NULL, &err), 0);
    d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_int_equal(m.error_code, ENOSYS);
    assert_string_equal(m.error_message, strerror(ENOSYS));
    ic_msg_release(&m);
    ic_decoder_free(d);

    ic_buf_reset(&b);
    assert_int_equal(ic_msg_put_error(&b, 6, EACCES, "open /tmp/\xff\xfe: denied", &err), 0);
    d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_string_equal(m.error_message, "open /tmp/??: denied");
    ic_msg_release(&m);
    ic_decoder_free(d);
    ic_buf_free(&b);
}

static void test_notify_roundtrip(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    ic_frame f;
    ic_msg m;
    json_t *params = json_pack("{s:i,s:i,s:i,s:b}", "id", 7, "code", 0, "signal", 0,
                               "timed_out", 0);
    assert_int_equal(ic_msg_put_notify(&b, IC_N_EXIT, params, &err), 0);
    ic_decoder *d = one_frame(&b, IC_FRAME_MSG, &f);
    assert_body(&f, "{\"method\":\"exit\",\"params\":{\"id\":7,\"code\":0,\"signal\":0,\"timed_out\":false}}");
    assert_int_equal(ic_msg_parse(f.data, f.len, &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_NOTIFY);
    assert_int_equal(m.id, 0);
    assert_string_equal(m.method, "exit");
    assert_true(json_equal(m.params, params));
    ic_msg_release(&m);

    assert_int_equal(parse_str("{\"method\":\"log\"}", &m, &err), 0);
    assert_int_equal(m.type, IC_MSG_NOTIFY);
    assert_true(json_is_object(m.params));
    ic_msg_release(&m);

    ic_decoder_free(d);
    json_decref(params);
    ic_buf_free(&b);
}

/* ---- bad envelopes -------------------------------------------------------- */

static void test_bad_envelopes(void **state)
{
    static const char *bad[] = {
        "{\"id\":0,\"method\":\"ping\"}",
        "{\"id\":4294967296,\"method\":\"ping\"}",
        "{\"id\":-1,\"method\":\"ping\"}",
        "{\"id\":\"1\",\"method\":\"ping\"}",
        "{\"id\":1.0,\"method\":\"ping\"}",
        "{\"id\":null,\"method\":\"ping\"}",
        "{\"id\":true,\"result\":{}}",
        "{\"id\":1,\"result\":{},\"error\":{\"code\":1,\"message\":\"x\"}}",
        "{\"id\":1}",
        "{}",
        "{\"result\":{}}",
        "{\"error\":{\"code\":1,\"message\":\"x\"}}",
        "{\"id\":1,\"method\":\"ping\",\"params\":[]}",
        "{\"id\":1,\"method\":\"ping\",\"params\":\"x\"}",
        "{\"id\":1,\"method\":\"ping\",\"params\":null}",
        "{\"method\":\"log\",\"params\":5}",
        "{\"id\":1,\"method\":5}",
        "{\"id\":1,\"method\":\"\"}",
        "{\"method\":null}",
        "{\"id\":1,\"method\":\"ping\",\"result\":{}}",
        "{\"id\":1,\"method\":\"ping\",\"error\":{\"code\":1,\"message\":\"x\"}}",
        "{\"id\":1,\"error\":{\"code\":0,\"message\":\"x\"}}",
        "{\"id\":1,\"error\":{\"code\":-2,\"message\":\"x\"}}",
        "{\"id\":1,\"error\":{\"code\":2147483648,\"message\":\"x\"}}",
        "{\"id\":1,\"error\":{\"code\":\"2\",\"message\":\"x\"}}",
        "{\"id\":1,\"error\":{\"code\":2}}",
        "{\"id\":1,\"error\":{\"code\":2,\"message\":7}}",
        "{\"id\":1,\"error\":\"ENOENT\"}",
        "{\"id\":1,\"id\":2,\"method\":\"ping\"}",
        "{\"id\":1,\"method\":\"a\\u0000b\"}",
        "not json",
        "[1,2]",
        "[{\"id\":1,\"method\":\"ping\"}]",
        "\"ping\"",
        "42",
        "null",
        "{\"id\":1,\"method\":\"ping\"",
        "{\"id\":1,\"method\":\"ping\"}}",
        "{\"id\":1,\"method\":\"ping\"} {}",
        "",
        "{\"id\":1,\"method\":\"\xff\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ic_msg m;
        ic_err err = {0};
        memset(&m, 0xa5, sizeof(m));
        int r = parse_str(bad[i], &m, &err);
        if (r != -EPROTO)
            fail_msg("accepted or wrong code %d: %s", r, bad[i]);
        assert_int_equal(err.code, EPROTO);
        assert_non_null(strstr(err.msg, "protocol error"));
        /* Nothing left to release, nothing leaked. */
        assert_null(m.root);
        assert_null(m.method);
        ic_msg_release(&m);
        /* NULL err is allowed. */
        assert_int_equal(parse_str(bad[i], &m, NULL), -EPROTO);
    }
    /* Embedded NUL bytes in the frame are not JSON either. */
    static const char nul[] = "{\"id\":1,\0\"method\":\"x\"}";
    ic_msg m;
    assert_int_equal(ic_msg_parse((const uint8_t *)nul, sizeof(nul) - 1, &m, NULL), -EPROTO);
}

static void test_error_messages(void **state)
{
    ic_msg m;
    ic_err err;
    assert_int_equal(parse_str("{\"id\":4294967296,\"method\":\"ping\"}", &m, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "4294967296"));
    assert_int_equal(parse_str("[1]", &m, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "JSON"));
    assert_int_equal(parse_str("{\"id\":3,\"result\":1,\"error\":{}}", &m, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "exactly one"));
}

static void test_encoder_refusals(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    json_t *arr = json_array();
    assert_int_equal(ic_msg_put_request(&b, 0, "ping", NULL, &err), -EINVAL);
    assert_int_equal(ic_msg_put_request(&b, 1, "ping", arr, &err), -EINVAL);
    assert_int_equal(ic_msg_put_request(&b, 1, "", NULL, &err), -EINVAL);
    assert_int_equal(ic_msg_put_request(&b, 1, NULL, NULL, &err), -EINVAL);
    assert_int_equal(ic_msg_put_request(&b, 1, "\xff", NULL, &err), -EINVAL);
    assert_int_equal(ic_msg_put_notify(&b, "log", arr, &err), -EINVAL);
    assert_int_equal(ic_msg_put_notify(&b, NULL, NULL, NULL), -EINVAL);
    assert_int_equal(ic_msg_put_response(&b, 0, NULL, &err), -EINVAL);
    assert_int_equal(ic_msg_put_error(&b, 0, EIO, "x", &err), -EINVAL);
    assert_int_equal(ic_msg_put_error(&b, 1, 0, "x", &err), -EINVAL);
    assert_int_equal(ic_hello_put(&b, "admin", "x", &err), -EINVAL);
    assert_int_equal(ic_hello_put(&b, NULL, "x", &err), -EINVAL);
    assert_int_equal(ic_buf_size(&b), 0);

    /* A result too big for one frame: EMSGSIZE, and `out` keeps what it had. */
    assert_int_equal(ic_msg_put_request(&b, 1, "ping", NULL, &err), 0);
    size_t before = ic_buf_size(&b);
    char *big = malloc(IC_FRAME_MAX);
    assert_non_null(big);
    memset(big, 'a', IC_FRAME_MAX);
    json_t *s = json_stringn(big, IC_FRAME_MAX);
    assert_non_null(s);
    assert_int_equal(ic_msg_put_response(&b, 2, s, &err), -EMSGSIZE);
    assert_int_equal(err.code, EMSGSIZE);
    assert_int_equal(ic_buf_size(&b), before);
    json_decref(s);

    /* One that just fits: {"id":2,"result":""} is 20 bytes plus the text. */
    size_t text = IC_FRAME_MAX - 1 - 20;
    s = json_stringn(big, text);
    assert_int_equal(ic_msg_put_response(&b, 2, s, &err), 0);
    assert_int_equal(ic_be32_read(ic_buf_head(&b) + before), IC_FRAME_MAX);
    json_decref(s);
    s = json_stringn(big, text + 1);
    assert_int_equal(ic_msg_put_response(&b, 2, s, &err), -EMSGSIZE);
    json_decref(s);
    free(big);

    json_decref(arr);
    ic_buf_free(&b);
}

/* ---- handshake ----------------------------------------------------------- */

static int check_str(const char *json, const char *role, char *agent, size_t size, ic_err *err)
{
    return ic_hello_check((const uint8_t *)json, strlen(json), role, agent, size, err);
}

static void test_hello_ok(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err;
    ic_frame f;
    char agent[64];
    assert_int_equal(ic_hello_put(&b, "guest", "ironclaw-guest 0.1.0", &err), 0);
    ic_decoder *d = one_frame(&b, IC_FRAME_HELLO, &f);
    assert_body(&f, "{\"protocol\":1,\"role\":\"guest\",\"agent\":\"ironclaw-guest 0.1.0\"}");
    assert_int_equal(ic_hello_check(f.data, f.len, "guest", agent, sizeof(agent), &err), 0);
    assert_string_equal(agent, "ironclaw-guest 0.1.0");
    assert_int_equal(ic_hello_check(f.data, f.len, "guest", NULL, 0, &err), 0);
    ic_decoder_free(d);

    /* No agent: accepted, reported as "". */
    ic_buf_reset(&b);
    assert_int_equal(ic_hello_put(&b, "host", NULL, &err), 0);
    d = one_frame(&b, IC_FRAME_HELLO, &f);
    assert_body(&f, "{\"protocol\":1,\"role\":\"host\"}");
    strcpy(agent, "stale");
    assert_int_equal(ic_hello_check(f.data, f.len, "host", agent, sizeof(agent), &err), 0);
    assert_string_equal(agent, "");
    ic_decoder_free(d);

    /* Unknown members ignored; agent truncated without splitting UTF-8;
     * control characters defused. */
    assert_int_equal(check_str("{\"role\":\"host\",\"new\":[1],\"protocol\":1,\"agent\":\"abcdef\"}",
                               "host", agent, 4, &err), 0);
    assert_string_equal(agent, "abc");
    assert_int_equal(check_str("{\"protocol\":1,\"role\":\"host\",\"agent\":\"h\xc3\xa9llo\"}",
                               "host", agent, 3, &err), 0);
    assert_string_equal(agent, "h");
    assert_int_equal(check_str("{\"protocol\":1,\"role\":\"host\",\"agent\":\"a\\nb\\u001bc\"}",
                               "host", agent, sizeof(agent), &err), 0);
    assert_string_equal(agent, "a?b?c");
    assert_int_equal(check_str("{\"protocol\":1,\"role\":\"host\",\"agent\":5}",
                               "host", agent, sizeof(agent), &err), 0);
    assert_string_equal(agent, "");
    ic_buf_free(&b);
}

static void test_hello_wrong_version(void **state)
{
    ic_err err;
    char agent[16];
    assert_int_equal(check_str("{\"protocol\":2,\"role\":\"guest\",\"agent\":\"future\"}",
                               "guest", agent, sizeof(agent), &err), -EPROTONOSUPPORT);
    assert_non_null(strstr(err.msg, "version 2"));
    assert_non_null(strstr(err.msg, "version 1"));
    assert_int_equal(check_str("{\"protocol\":0,\"role\":\"guest\"}", "guest", NULL, 0, &err),
                     -EPROTONOSUPPORT);
    assert_non_null(strstr(err.msg, "version 0"));
    assert_int_equal(check_str("{\"protocol\":\"1\",\"role\":\"guest\"}", "guest", NULL, 0, &err),
                     -EPROTONOSUPPORT);
    assert_non_null(strstr(err.msg, "version 1"));
    assert_int_equal(check_str("{\"role\":\"guest\"}", "guest", NULL, 0, &err), -EPROTONOSUPPORT);
}

static void test_hello_wrong_role(void **state)
{
    ic_err err;
    char agent[16];
    assert_int_equal(check_str("{\"protocol\":1,\"role\":\"guest\"}", "host", agent, sizeof(agent),
                               &err), -EPROTO);
    assert_non_null(strstr(err.msg, "\"guest\""));
    assert_non_null(strstr(err.msg, "\"host\""));
    assert_int_equal(check_str("{\"protocol\":1}", "host", NULL, 0, &err), -EPROTO);
    assert_int_equal(check_str("{\"protocol\":1,\"role\":7}", "host", NULL, 0, &err), -EPROTO);
    assert_int_equal(check_str("{\"protocol\":1,\"role\":\"\"}", "host", NULL, 0, &err), -EPROTO);
    /* Not a HELLO at all. */
    assert_int_equal(check_str("[]", "host", NULL, 0, &err), -EPROTO);
    assert_int_equal(check_str("{\"protocol\":1,", "host", NULL, 0, &err), -EPROTO);
    assert_int_equal(check_str("", "host", NULL, 0, NULL), -EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_response_roundtrip),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_notify_roundtrip),
        cmocka_unit_test(test_bad_envelopes),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_encoder_refusals),
        cmocka_unit_test(test_hello_ok),
        cmocka_unit_test(test_hello_wrong_version),
        cmocka_unit_test(test_hello_wrong_role),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
