/*
 * test_rpc.c - the host's RPC channel (src/channel/rpc.c) against the real
 * guest agent in its --test-fd mode, and against hostile peers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/buf.h"
#include "ironclaw/rpc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct t {
    uv_loop_t loop;
    uv_timer_t deadline;
    ic_rpc *rpc;
    pid_t guest;
    char agent[128];
    bool ready;
    bool closed;
    ic_err close_err;
    ic_buf out[3];
    int eofs;
    bool exited;
    int code, sig;
    int replies;
    ic_err reply_err;
    uint32_t exec_id;
    /* stdin pump */
    const uint8_t *in;
    size_t in_len, in_off;
};

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    fail_msg("test deadline expired");
}

static void ev_ready(ic_rpc *rpc, const char *agent, void *ud)
{
    struct t *t = ud;
    t->ready = true;
    snprintf(t->agent, sizeof(t->agent), "%s", agent);
    uv_stop(&t->loop);
}

static void ev_notify(ic_rpc *rpc, const ic_msg *m, void *ud)
{
    struct t *t = ud;
    if (strcmp(m->method, IC_N_EXIT) == 0) {
        t->exited = true;
        t->code = (int)json_integer_value(json_object_get(m->params, "code"));
        t->sig = (int)json_integer_value(json_object_get(m->params, "signal"));
        uv_stop(&t->loop);
    }
}

static void ev_data(ic_rpc *rpc, uint32_t stream, uint8_t ch, const uint8_t *p, size_t n, void *ud)
{
    struct t *t = ud;
    assert_int_equal(stream, t->exec_id);
    assert_true(ch == 1 || ch == 2);
    if (n == 0)
        t->eofs++;
    else
        ic_buf_append(&t->out[ch], p, n);
}

static void pump_stdin(struct t *t)
{
    ic_err err = {0};
    while (t->in && ic_rpc_queued(t->rpc) < IC_RPC_HIGH_WATER) {
        size_t n = t->in_len - t->in_off;
        if (n > 100000)
            n = 100000; /* not a multiple of the chunk size on purpose */
        assert_int_equal(ic_rpc_send_data(t->rpc, t->exec_id, IC_CHAN_STDIN, t->in + t->in_off, n, &err), 0);
        t->in_off += n;
        if (n == 0)
            t->in = NULL; /* that was the end of stream */
    }
}

static void ev_drained(ic_rpc *rpc, void *ud)
{
    pump_stdin(ud);
}

static void ev_closed(ic_rpc *rpc, const ic_err *err, void *ud)
{
    struct t *t = ud;
    t->closed = true;
    t->close_err = *err;
    t->rpc = NULL;
    uv_stop(&t->loop);
}

static const struct ic_rpc_events events = {
    .ready = ev_ready, .notify = ev_notify, .data = ev_data,
    .drained = ev_drained, .closed = ev_closed,
};

static void on_reply(ic_rpc *rpc, const ic_msg *reply, const ic_err *err, void *ud)
{
    struct t *t = ud;
    t->replies++;
    if (err)
        t->reply_err = *err;
    uv_stop(&t->loop);
}

/* Connects an rpc to `peer_fd`'s other end. */
static void open_rpc(struct t *t, int fd)
{
    uv_pipe_t *p = malloc(sizeof(*p));
    assert_non_null(p);
    assert_int_equal(uv_pipe_init(&t->loop, p, 0), 0);
    assert_int_equal(uv_pipe_open(p, fd), 0);
    ic_err err = {0};
    assert_int_equal(ic_rpc_open((uv_stream_t *)p, &events, t, &t->rpc, &err), 0);
}

static void setup_loop(struct t *t)
{
    memset(t, 0, sizeof(*t));
    uv_loop_init(&t->loop);
    uv_timer_init(&t->loop, &t->deadline);
    uv_timer_start(&t->deadline, on_deadline, 30000, 0);
    uv_unref((uv_handle_t *)&t->deadline);
}

static void start_guest(struct t *t)
{
    setup_loop(t);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    t->guest = fork();
    assert_true(t->guest >= 0);
    if (t->guest == 0) {
        dup2(sv[1], 3);
        execl(IC_TEST_GUEST, "ironclaw-guest", "--test-fd", "3", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    open_rpc(t, sv[0]);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_true(t->ready);
    assert_non_null(strstr(t->agent, "ironclaw-guest"));
}

static void teardown(struct t *t)
{
    if (t->rpc)
        ic_rpc_close(t->rpc);
    uv_close((uv_handle_t *)&t->deadline, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    if (t->guest > 0) {
        kill(t->guest, SIGKILL);
        waitpid(t->guest, NULL, 0);
    }
    for (int i = 0; i < 3; i++)
        ic_buf_free(&t->out[i]);
}

static void run_exec(struct t *t, const char *script, bool with_stdin)
{
    json_t *params = json_pack("{s:[s,s,s], s:b}", "argv", "sh", "-c", script, "stdin", with_stdin);
    ic_err err = {0};
    assert_int_equal(ic_rpc_call(t->rpc, IC_M_EXEC, params, 5000, on_reply, t, &t->exec_id, &err), 0);
    json_decref(params);
    if (with_stdin)
        pump_stdin(t);
    while (!t->exited && !t->closed)
        uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_false(t->closed);
    assert_int_equal(t->replies, 1);
    assert_int_equal(t->reply_err.code, 0);
    assert_int_equal(t->eofs, 2);
}

static void test_exec_streams(void **state)
{
    struct t t;
    start_guest(&t);
    run_exec(&t, "echo out; echo err >&2; exit 5", false);
    assert_int_equal(t.code, 5);
    assert_int_equal(ic_buf_size(&t.out[1]), 4);
    assert_memory_equal(ic_buf_head(&t.out[1]), "out\n", 4);
    assert_memory_equal(ic_buf_head(&t.out[2]), "err\n", 4);
    teardown(&t);
}

static void test_stdin_roundtrip_with_backpressure(void **state)
{
    struct t t;
    start_guest(&t);
    size_t len = 6u << 20;
    uint8_t *data = malloc(len);
    assert_non_null(data);
    srand(7);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)rand();
    t.in = data;
    t.in_len = len;
    run_exec(&t, "cat", true);
    assert_int_equal(t.code, 0);
    assert_int_equal(ic_buf_size(&t.out[1]), len);
    assert_memory_equal(ic_buf_head(&t.out[1]), data, len);
    free(data);
    teardown(&t);
}

static void test_error_answer(void **state)
{
    struct t t;
    start_guest(&t);
    ic_err err = {0};
    assert_int_equal(ic_rpc_call(t.rpc, "no.such.method", NULL, 5000, on_reply, &t, NULL, &err), 0);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.replies, 1);
    assert_int_equal(t.reply_err.code, ENOSYS);
    teardown(&t);
}

static void test_guest_death_fails_pending(void **state)
{
    struct t t;
    start_guest(&t);
    ic_err err = {0};
    json_t *params = json_pack("{s:[s,s]}", "argv", "sleep", "100");
    assert_int_equal(ic_rpc_call(t.rpc, IC_M_EXEC, params, 0, on_reply, &t, &t.exec_id, &err), 0);
    json_decref(params);
    uv_run(&t.loop, UV_RUN_DEFAULT); /* the exec answer */
    assert_int_equal(t.replies, 1);
    assert_int_equal(ic_rpc_call(t.rpc, IC_M_PING, NULL, 0, on_reply, &t, NULL, &err), 0);
    kill(t.guest, SIGKILL);
    waitpid(t.guest, NULL, 0);
    t.guest = 0;
    while (!t.closed)
        uv_run(&t.loop, UV_RUN_DEFAULT);
    /* The ping either got its answer before the kill or was failed. */
    assert_int_equal(t.replies, 2);
    assert_true(t.close_err.code != 0);
    teardown(&t);
}

/* A hostile peer: answers our HELLO with the bytes given. */
static void hostile_peer(const void *bytes, size_t n, bool greets, const char *expect)
{
    struct t t;
    setup_loop(&t);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(write(sv[1], bytes, n), (ssize_t)n);
    /* EOF after the bytes, while our own writes still succeed. */
    shutdown(sv[1], SHUT_WR);
    open_rpc(&t, sv[0]);
    ic_err err = {0};
    assert_int_equal(ic_rpc_call(t.rpc, IC_M_PING, NULL, 0, on_reply, &t, NULL, &err), 0);
    while (!t.closed)
        uv_run(&t.loop, UV_RUN_DEFAULT);
    assert_int_equal(t.ready, greets);
    assert_int_equal(t.replies, 1); /* the pending ping was failed, not lost */
    if (!strstr(t.close_err.msg, expect))
        fail_msg("close error '%s' does not mention '%s'", t.close_err.msg, expect);
    close(sv[1]);
    teardown(&t);
}

static void test_oversized_frame(void **state)
{
    static const uint8_t frame[] = {0xff, 0xff, 0xff, 0xff, 2};
    hostile_peer(frame, sizeof(frame), false, "malformed");
}

static void test_message_before_hello(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err = {0};
    assert_int_equal(ic_msg_put_response(&b, 1, NULL, &err), 0);
    hostile_peer(ic_buf_head(&b), ic_buf_size(&b), false, "before its HELLO");
    ic_buf_free(&b);
}

static void test_wrong_version(void **state)
{
    ic_buf b = IC_BUF_INIT;
    const char *hello = "{\"protocol\":99,\"role\":\"guest\",\"agent\":\"future\"}";
    ic_err err = {0};
    assert_int_equal(ic_frame_put_json(&b, IC_FRAME_HELLO, hello, strlen(hello), &err), 0);
    hostile_peer(ic_buf_head(&b), ic_buf_size(&b), false, "handshake");
    ic_buf_free(&b);
}

static void test_truncated_stream(void **state)
{
    ic_buf b = IC_BUF_INIT;
    ic_err err = {0};
    assert_int_equal(ic_hello_put(&b, "guest", "t", &err), 0);
    static const uint8_t partial[] = {0, 0, 0, 50, 2, '{'};
    ic_buf_append(&b, partial, sizeof(partial));
    hostile_peer(ic_buf_head(&b), ic_buf_size(&b), true, "mid-frame");
    ic_buf_free(&b);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_streams),
        cmocka_unit_test(test_stdin_roundtrip_with_backpressure),
        cmocka_unit_test(test_error_answer),
        cmocka_unit_test(test_guest_death_fails_pending),
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_message_before_hello),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_truncated_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
