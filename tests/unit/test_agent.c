/*
 * test_agent.c - ironclaw-guest end to end, in its --test-fd mode: the
 * test plays the host over a socketpair, speaking the protocol through the
 * real codec, and checks exec (outputs, exit codes, signals, stdin,
 * timeouts, errors), the file methods, and that protocol violations end
 * the connection without a crash.
 *
 * Every wait is bounded by a deadline, so a guest that hangs fails the
 * test instead of hanging it. The host side keeps reading while it writes
 * (one poll loop for both), as a real host must, so big transfers cannot
 * deadlock on full socket buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ironclaw/proto.h"

#define WAIT_MS 30000
#define MAX_STREAMS 64
/* The guest is a sanitizer build in the sanitizer configuration: its
 * sanitizer reports exit with this code, distinct from the agent's own 1. */
#define SAN_EXIT 99

struct stream {
    uint32_t id;
    bool used;
    ic_buf ch[4];
    bool eof[4];
    bool exited;
    bool eofs_at_exit;   /* stdout and stderr had ended when `exit` came */
};

typedef struct host {
    pid_t pid;
    int fd;
    ic_decoder *dec;
    ic_buf out;
    bool got_hello;
    char guest_agent[128];
    bool eof;
    ic_msg *msgs;
    size_t nmsgs, capmsgs;
    struct stream streams[MAX_STREAMS];
} host;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the host side of the protocol ------------------------------------------ */

static struct stream *stream_get(host *h, uint32_t id)
{
    struct stream *free_slot = NULL;
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (h->streams[i].used && h->streams[i].id == id)
            return &h->streams[i];
        if (!h->streams[i].used && !free_slot)
            free_slot = &h->streams[i];
    }
    assert_non_null(free_slot);
    free_slot->used = true;
    free_slot->id = id;
    return free_slot;
}

static void on_msg(host *h, const ic_frame *f)
{
    ic_msg m;
    ic_err err;
    if (ic_msg_parse(f->data, f->len, &m, &err) < 0)
        fail_msg("guest sent a bad message: %s", err.msg);
    assert_true(m.type != IC_MSG_REQUEST);
    if (m.type == IC_MSG_NOTIFY && strcmp(m.method, IC_N_EXIT) == 0) {
        json_int_t id = json_integer_value(json_object_get(m.params, "id"));
        struct stream *s = stream_get(h, (uint32_t)id);
        s->exited = true;
        s->eofs_at_exit = s->eof[IC_CHAN_STDOUT] && s->eof[IC_CHAN_STDERR];
    }
    if (h->nmsgs == h->capmsgs) {
        h->capmsgs = h->capmsgs ? h->capmsgs * 2 : 16;
        h->msgs = realloc(h->msgs, h->capmsgs * sizeof(*h->msgs));
        assert_non_null(h->msgs);
    }
    h->msgs[h->nmsgs++] = m;
}

static void on_frame(host *h, const ic_frame *f)
{
    ic_err err;
    if (!h->got_hello) {
        assert_int_equal(f->kind, IC_FRAME_HELLO);
        assert_int_equal(ic_hello_check(f->data, f->len, "guest", h->guest_agent,
                                        sizeof(h->guest_agent), &err),
                         0);
        h->got_hello = true;
        return;
    }
    assert_int_not_equal(f->kind, IC_FRAME_HELLO);
    if (f->kind == IC_FRAME_MSG) {
        on_msg(h, f);
        return;
    }
    assert_true(f->channel >= IC_CHAN_STDOUT && f->channel <= IC_CHAN_FILE);
    assert_true(f->len <= IC_DATA_CHUNK);
    struct stream *s = stream_get(h, f->stream);
    assert_false(s->eof[f->channel]);
    if (f->len == 0)
        s->eof[f->channel] = true;
    else
        assert_int_equal(ic_buf_append(&s->ch[f->channel], f->data, f->len), 0);
}

static void host_flush(host *h)
{
    while (ic_buf_size(&h->out) > 0) {
        ssize_t n = send(h->fd, ic_buf_head(&h->out), ic_buf_size(&h->out), MSG_NOSIGNAL);
        if (n > 0) {
            ic_buf_consume(&h->out, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        /* The guest closed: what it sent before is still read. */
        ic_buf_reset(&h->out);
        return;
    }
}

static void host_read(host *h)
{
    for (;;) {
        uint8_t *p;
        size_t room;
        assert_int_equal(ic_decoder_space(h->dec, (size_t)256 * 1024, &p, &room), 0);
        ssize_t n = recv(h->fd, p, room, 0);
        if (n > 0) {
            ic_decoder_commit(h->dec, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        h->eof = true;
        break;
    }
    ic_frame f;
    ic_err err;
    int r;
    while ((r = ic_decoder_next(h->dec, &f, &err)) == 1)
        on_frame(h, &f);
    if (r < 0)
        fail_msg("guest sent a bad frame: %s", err.msg);
    if (h->eof && ic_decoder_finish(h->dec, &err) < 0)
        fail_msg("guest truncated its output: %s", err.msg);
}

/* One round: write what the socket takes, read what arrived. */
static void host_pump(host *h, int timeout_ms)
{
    if (h->eof)
        return;
    struct pollfd p = {.fd = h->fd, .events = POLLIN | (ic_buf_size(&h->out) ? POLLOUT : 0)};
    int r = poll(&p, 1, timeout_ms);
    assert_true(r >= 0 || errno == EINTR);
    if (p.revents & POLLOUT)
        host_flush(h);
    if (p.revents & (POLLIN | POLLHUP | POLLERR))
        host_read(h);
}

#define WAIT_UNTIL(h, cond)                                                          \
    do {                                                                             \
        uint64_t end_ = now_ms() + WAIT_MS;                                          \
        while (!(cond)) {                                                            \
            if ((h)->eof)                                                            \
                fail_msg("the guest closed the connection while waiting for %s", #cond); \
            if (now_ms() >= end_)                                                    \
                fail_msg("timed out waiting for %s", #cond);                         \
            host_pump((h), 100);                                                     \
        }                                                                            \
    } while (0)

static void spawn_guest(host *h, int sock)
{
    h->pid = fork();
    assert_true(h->pid >= 0);
    if (h->pid == 0) {
        if (dup2(sock, 3) < 0)
            _exit(126);
        const char *old = getenv("ASAN_OPTIONS");
        char opts[512];
        snprintf(opts, sizeof(opts), "%s%sexitcode=%d", old ? old : "", old ? ":" : "", SAN_EXIT);
        setenv("ASAN_OPTIONS", opts, 1);
        old = getenv("UBSAN_OPTIONS");
        snprintf(opts, sizeof(opts), "%s%sexitcode=%d", old ? old : "", old ? ":" : "", SAN_EXIT);
        setenv("UBSAN_OPTIONS", opts, 1);
        execl(IC_TEST_GUEST, "ironclaw-guest", "--test-fd", "3", (char *)NULL);
        _exit(127);
    }
}

/* Starts the guest; with `hello`, sends the host's HELLO and waits for
 * the guest's. */
static void host_start(host *h, bool hello)
{
    memset(h, 0, sizeof(*h));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    spawn_guest(h, sv[1]);
    close(sv[1]);
    h->fd = sv[0];
    assert_int_equal(fcntl(h->fd, F_SETFL, O_NONBLOCK), 0);
    h->dec = ic_decoder_new(0);
    assert_non_null(h->dec);
    if (hello) {
        ic_err err;
        assert_int_equal(ic_hello_put(&h->out, "host", "test_agent", &err), 0);
        WAIT_UNTIL(h, h->got_hello);
        assert_true(strncmp(h->guest_agent, "ironclaw-guest ", 15) == 0);
    }
}

/* Waits for the guest process to exit; returns its wait status. */
static int wait_guest(host *h)
{
    uint64_t end = now_ms() + WAIT_MS;
    for (;;) {
        int st;
        pid_t r = waitpid(h->pid, &st, WNOHANG);
        if (r == h->pid) {
            h->pid = 0;
            return st;
        }
        assert_int_equal(r, 0);
        if (now_ms() >= end) {
            kill(h->pid, SIGKILL);
            fail_msg("the guest did not exit");
        }
        host_pump(h, 10);
    }
}

static void host_free(host *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        waitpid(h->pid, NULL, 0);
    }
    for (size_t i = 0; i < h->nmsgs; i++)
        ic_msg_release(&h->msgs[i]);
    free(h->msgs);
    for (int i = 0; i < MAX_STREAMS; i++)
        for (int c = 0; c < 4; c++)
            ic_buf_free(&h->streams[i].ch[c]);
    ic_decoder_free(h->dec);
    ic_buf_free(&h->out);
}

/* Closes the connection as a host does and expects the guest to exit
 * with `code`. */
static void host_stop(host *h, int code)
{
    close(h->fd);
    h->fd = -1;
    int st = wait_guest(h);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), code);
    host_free(h);
}

/* ---- requests ------------------------------------------------------------- */

static void send_req(host *h, uint32_t id, const char *method, json_t *params)
{
    ic_err err;
    assert_int_equal(ic_msg_put_request(&h->out, id, method, params, &err), 0);
    json_decref(params);
    host_flush(h);
}

static void send_data(host *h, uint32_t id, uint8_t chan, const uint8_t *data, size_t len)
{
    ic_err err;
    for (size_t off = 0; off < len; off += IC_DATA_CHUNK) {
        size_t n = len - off < IC_DATA_CHUNK ? len - off : IC_DATA_CHUNK;
        assert_int_equal(ic_frame_put_data(&h->out, id, chan, data + off, n, &err), 0);
    }
    assert_int_equal(ic_frame_put_data(&h->out, id, chan, NULL, 0, &err), 0);
    host_flush(h);
}

static ssize_t find_reply(host *h, uint32_t id)
{
    for (size_t i = 0; i < h->nmsgs; i++)
        if ((h->msgs[i].type == IC_MSG_RESPONSE || h->msgs[i].type == IC_MSG_ERROR) &&
            h->msgs[i].id == id)
            return (ssize_t)i;
    return -1;
}

static ssize_t find_exit(host *h, uint32_t id)
{
    for (size_t i = 0; i < h->nmsgs; i++)
        if (h->msgs[i].type == IC_MSG_NOTIFY && strcmp(h->msgs[i].method, IC_N_EXIT) == 0 &&
            json_integer_value(json_object_get(h->msgs[i].params, "id")) == id)
            return (ssize_t)i;
    return -1;
}

static ic_msg take_msg(host *h, size_t i)
{
    ic_msg m = h->msgs[i];
    memmove(&h->msgs[i], &h->msgs[i + 1], (h->nmsgs - i - 1) * sizeof(*h->msgs));
    h->nmsgs--;
    return m;
}

static ic_msg wait_reply(host *h, uint32_t id)
{
    WAIT_UNTIL(h, find_reply(h, id) >= 0);
    return take_msg(h, (size_t)find_reply(h, id));
}

/* Sends a request and returns its result (owned by the caller). */
static json_t *call_ok(host *h, uint32_t id, const char *method, json_t *params)
{
    send_req(h, id, method, params);
    ic_msg m = wait_reply(h, id);
    if (m.type != IC_MSG_RESPONSE)
        fail_msg("%s failed: %d %s", method, m.error_code, m.error_message);
    json_t *r = json_incref(m.result);
    ic_msg_release(&m);
    return r;
}

/* Sends a request that must fail; returns the error code. */
static int call_err(host *h, uint32_t id, const char *method, json_t *params)
{
    send_req(h, id, method, params);
    ic_msg m = wait_reply(h, id);
    assert_int_equal(m.type, IC_MSG_ERROR);
    assert_non_null(m.error_message);
    int code = m.error_code;
    ic_msg_release(&m);
    return code;
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

struct exit_info {
    int code, signal;
    bool timed_out;
    json_int_t duration_ms;
};

static struct exit_info wait_exit(host *h, uint32_t id)
{
    WAIT_UNTIL(h, find_exit(h, id) >= 0);
    ic_msg m = take_msg(h, (size_t)find_exit(h, id));
    struct exit_info e = {
        .code = (int)jint(m.params, "code"),
        .signal = (int)jint(m.params, "signal"),
        .timed_out = json_is_true(json_object_get(m.params, "timed_out")),
        .duration_ms = jint(m.params, "duration_ms"),
    };
    assert_true(json_is_boolean(json_object_get(m.params, "timed_out")));
    ic_msg_release(&m);
    /* All output precedes `exit`. */
    assert_true(stream_get(h, id)->eofs_at_exit);
    return e;
}

/* Starts argv (a JSON array, stolen) and returns the pid. */
static int exec_start(host *h, uint32_t id, json_t *params)
{
    json_t *r = call_ok(h, id, IC_M_EXEC, params);
    int pid = (int)jint(r, "pid");
    assert_true(pid > 0);
    json_decref(r);
    return pid;
}

static void assert_chan(host *h, uint32_t id, uint8_t chan, const char *text)
{
    struct stream *s = stream_get(h, id);
    assert_true(s->eof[chan]);
    assert_int_equal(ic_buf_size(&s->ch[chan]), strlen(text));
    assert_memory_equal(ic_buf_head(&s->ch[chan]), text, strlen(text));
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 24);
    }
}

/* ---- handshake and framing -------------------------------------------------- */

static void test_handshake_and_ping(void **state)
{
    host h;
    host_start(&h, true);
    json_t *r = call_ok(&h, 1, IC_M_PING, NULL);
    assert_true(jint(r, "uptime_ms") > 0);
    json_decref(r);
    host_stop(&h, 0);
}

static void test_wrong_version_hello(void **state)
{
    host h;
    host_start(&h, false);
    const char *hello = "{\"protocol\":2,\"role\":\"host\",\"agent\":\"future\"}";
    ic_err err;
    assert_int_equal(ic_frame_put_json(&h.out, IC_FRAME_HELLO, hello, strlen(hello), &err), 0);
    WAIT_UNTIL(&h, h.got_hello);   /* the guest speaks first regardless */
    uint64_t end = now_ms() + WAIT_MS;
    while (!h.eof && now_ms() < end)
        host_pump(&h, 100);
    assert_true(h.eof);
    assert_int_equal(h.nmsgs, 0);
    host_stop(&h, 1);
}

static void test_request_before_hello(void **state)
{
    host h;
    host_start(&h, false);
    send_req(&h, 1, IC_M_PING, NULL);
    uint64_t end = now_ms() + WAIT_MS;
    while (!h.eof && now_ms() < end)
        host_pump(&h, 100);
    assert_true(h.eof);
    assert_int_equal(h.nmsgs, 0);   /* the ping was not answered */
    host_stop(&h, 1);
}

static void test_oversized_frame(void **state)
{
    host h;
    host_start(&h, true);
    /* A length far over 16 MiB: the guest must refuse it from the header
     * alone, before any body arrives. */
    const uint8_t hdr[5] = {0x7f, 0xff, 0xff, 0xff, IC_FRAME_MSG};
    assert_int_equal(ic_buf_append(&h.out, hdr, sizeof(hdr)), 0);
    uint64_t end = now_ms() + WAIT_MS;
    while (!h.eof && now_ms() < end)
        host_pump(&h, 100);
    assert_true(h.eof);
    host_stop(&h, 1);
}

static void test_truncated_frame(void **state)
{
    host h;
    host_start(&h, true);
    const uint8_t half[7] = {0, 0, 0, 40, IC_FRAME_MSG, '{', '"'};
    assert_int_equal(send(h.fd, half, sizeof(half), MSG_NOSIGNAL), (ssize_t)sizeof(half));
    host_stop(&h, 1);
}

static void test_malformed_messages(void **state)
{
    /* Each ends the connection (exit 1), never crashes the agent. */
    static const char *const bodies[] = {
        "not json",
        "[1,2,3]",
        "{\"id\":0,\"method\":\"ping\"}",
        "{\"id\":1,\"method\":\"ping\",\"params\":[]}",
        "{\"id\":1,\"method\":\"ping\",\"id\":2}",
        "{\"id\":1,\"result\":{},\"error\":{}}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        host h;
        host_start(&h, true);
        ic_err err;
        assert_int_equal(ic_frame_put_json(&h.out, IC_FRAME_MSG, bodies[i], strlen(bodies[i]), &err),
                         0);
        uint64_t end = now_ms() + WAIT_MS;
        while (!h.eof && now_ms() < end)
            host_pump(&h, 100);
        assert_true(h.eof);
        host_stop(&h, 1);
    }
    /* A DATA frame shorter than its header, and a second HELLO. */
    const uint8_t short_data[7] = {0, 0, 0, 3, IC_FRAME_DATA, 0, 0};
    for (int i = 0; i < 2; i++) {
        host h;
        host_start(&h, true);
        ic_err err;
        if (i == 0)
            assert_int_equal(ic_buf_append(&h.out, short_data, sizeof(short_data)), 0);
        else
            assert_int_equal(ic_hello_put(&h.out, "host", "again", &err), 0);
        uint64_t end = now_ms() + WAIT_MS;
        while (!h.eof && now_ms() < end)
            host_pump(&h, 100);
        assert_true(h.eof);
        host_stop(&h, 1);
    }
}

static void test_unknown_method_and_bad_params(void **state)
{
    host h;
    host_start(&h, true);
    assert_int_equal(call_err(&h, 1, "no.such.method", NULL), ENOSYS);
    assert_int_equal(call_err(&h, 2, IC_M_EXEC, json_pack("{}")), EINVAL);
    assert_int_equal(call_err(&h, 3, IC_M_EXEC, json_pack("{s:[]}", "argv")), EINVAL);
    assert_int_equal(call_err(&h, 4, IC_M_EXEC, json_pack("{s:[i]}", "argv", 1)), EINVAL);
    assert_int_equal(call_err(&h, 5, IC_M_EXEC, json_pack("{s:[s],s:i}", "argv", "true",
                                                          "timeout_ms", -1)),
                     EINVAL);
    assert_int_equal(call_err(&h, 6, IC_M_EXEC, json_pack("{s:[s],s:[s]}", "argv", "true", "env",
                                                          "NOEQUALS")),
                     EINVAL);
    assert_int_equal(call_err(&h, 7, IC_M_FILE_GET, json_pack("{s:s}", "path", "relative")), EINVAL);
    assert_int_equal(call_err(&h, 8, IC_M_SIGNAL, json_pack("{s:i}", "id", 1)), EINVAL);
    /* Still serving. */
    json_decref(call_ok(&h, 9, IC_M_PING, NULL));
    host_stop(&h, 0);
}

static void test_poweroff_closes_in_test_mode(void **state)
{
    host h;
    host_start(&h, true);
    json_t *r = call_ok(&h, 1, IC_M_POWEROFF, NULL);
    assert_int_equal(json_object_size(r), 0);
    json_decref(r);
    uint64_t end = now_ms() + WAIT_MS;
    while (!h.eof && now_ms() < end)
        host_pump(&h, 100);
    assert_true(h.eof);
    host_stop(&h, 0);
}

/* ---- exec ------------------------------------------------------------------- */

static void test_exec_outputs_and_exit_code(void **state)
{
    host h;
    host_start(&h, true);
    exec_start(&h, 1, json_pack("{s:[s,s,s]}", "argv", "sh", "-c",
                                "echo out; echo err >&2; echo more; exit 3"));
    struct exit_info e = wait_exit(&h, 1);
    assert_int_equal(e.code, 3);
    assert_int_equal(e.signal, 0);
    assert_false(e.timed_out);
    assert_true(e.duration_ms >= 0);
    assert_chan(&h, 1, IC_CHAN_STDOUT, "out\nmore\n");
    assert_chan(&h, 1, IC_CHAN_STDERR, "err\n");
    host_stop(&h, 0);
}

static void test_exec_killed_by_signal(void **state)
{
    host h;
    host_start(&h, true);
    exec_start(&h, 1, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "kill -TERM $$"));
    struct exit_info e = wait_exit(&h, 1);
    assert_int_equal(e.signal, 15);
    assert_int_equal(e.code, 0);
    assert_false(e.timed_out);
    host_stop(&h, 0);
}

static void test_exec_stdin_8mib(void **state)
{
    host h;
    host_start(&h, true);
    const size_t size = 8u << 20;
    uint8_t *data = malloc(size);
    assert_non_null(data);
    fill_random(data, size, 0x1234567);
    exec_start(&h, 1, json_pack("{s:[s],s:b}", "argv", "cat", "stdin", 1));
    send_data(&h, 1, IC_CHAN_STDIN, data, size);
    struct exit_info e = wait_exit(&h, 1);
    assert_int_equal(e.code, 0);
    struct stream *s = stream_get(&h, 1);
    assert_int_equal(ic_buf_size(&s->ch[IC_CHAN_STDOUT]), size);
    assert_true(memcmp(ic_buf_head(&s->ch[IC_CHAN_STDOUT]), data, size) == 0);
    assert_int_equal(ic_buf_size(&s->ch[IC_CHAN_STDERR]), 0);
    free(data);
    host_stop(&h, 0);
}

static void test_exec_stdin_false_is_dev_null(void **state)
{
    host h;
    host_start(&h, true);
    exec_start(&h, 1, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "wc -c"));
    assert_int_equal(wait_exit(&h, 1).code, 0);
    struct stream *s = stream_get(&h, 1);
    assert_true(ic_buf_size(&s->ch[IC_CHAN_STDOUT]) > 0);
    assert_int_equal(atoi((const char *)ic_buf_head(&s->ch[IC_CHAN_STDOUT])), 0);
    host_stop(&h, 0);
}

static void test_exec_inherits_only_stdio(void **state)
{
    host h;
    host_start(&h, true);
    /* Another process's pipes, the channel and the signalfd must not
     * leak into a child: ls sees 0-2 and its own directory fd. */
    exec_start(&h, 1, json_pack("{s:[s],s:b}", "argv", "cat", "stdin", 1));
    exec_start(&h, 2, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "exec ls /proc/self/fd"));
    assert_int_equal(wait_exit(&h, 2).code, 0);
    assert_chan(&h, 2, IC_CHAN_STDOUT, "0\n1\n2\n3\n");
    send_data(&h, 1, IC_CHAN_STDIN, (const uint8_t *)"x", 1);
    assert_int_equal(wait_exit(&h, 1).code, 0);
    assert_chan(&h, 1, IC_CHAN_STDOUT, "x");
    host_stop(&h, 0);
}

static void test_exec_timeout(void **state)
{
    host h;
    host_start(&h, true);
    uint64_t t0 = now_ms();
    exec_start(&h, 1, json_pack("{s:[s,s],s:i}", "argv", "sleep", "100", "timeout_ms", 300));
    struct exit_info e = wait_exit(&h, 1);
    uint64_t took = now_ms() - t0;
    assert_true(e.timed_out);
    assert_int_equal(e.signal, 9);
    assert_true(e.duration_ms >= 300);
    assert_true(took < 10000);
    host_stop(&h, 0);
}

static void test_exec_descendant_does_not_hold_exit(void **state)
{
    host h;
    host_start(&h, true);
    /* The background sleep shares the pipes; the group kill ends it. */
    exec_start(&h, 1, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "sleep 100 & echo done"));
    uint64_t t0 = now_ms();
    assert_int_equal(wait_exit(&h, 1).code, 0);
    assert_true(now_ms() - t0 < 10000);
    assert_chan(&h, 1, IC_CHAN_STDOUT, "done\n");
    host_stop(&h, 0);
}

static void test_exec_escaped_descendant_does_not_hold_exit(void **state)
{
    host h;
    host_start(&h, true);
    /* setsid leaves the process group, so the group kill misses it; its
     * copy of stdout must still not keep `exit` from coming. It prints
     * nothing, so the empty pipe is ended after a short grace. */
    exec_start(&h, 1, json_pack("{s:[s,s,s]}", "argv", "sh", "-c", "setsid sleep 100 & echo $!"));
    uint64_t t0 = now_ms();
    assert_int_equal(wait_exit(&h, 1).code, 0);
    assert_true(now_ms() - t0 < 10000);
    /* The escaped sleep is not ours to leave behind. */
    struct stream *s = stream_get(&h, 1);
    assert_true(ic_buf_size(&s->ch[IC_CHAN_STDOUT]) > 0);
    int pid = atoi((const char *)ic_buf_head(&s->ch[IC_CHAN_STDOUT]));
    assert_true(pid > 0);
    kill(pid, SIGKILL);
    host_stop(&h, 0);
}

static void test_exec_unread_stdin_does_not_block(void **state)
{
    host h;
    host_start(&h, true);
    /* The process never reads stdin: the guest's 1 MiB buffer fills and it
     * stops reading the channel; when the process exits the rest is
     * discarded and the connection goes on. */
    const size_t size = 4u << 20;
    uint8_t *data = calloc(1, size);
    assert_non_null(data);
    exec_start(&h, 1, json_pack("{s:[s,s,s],s:b}", "argv", "sh", "-c", "sleep 0.3; echo bye",
                                "stdin", 1));
    send_data(&h, 1, IC_CHAN_STDIN, data, size);
    assert_int_equal(wait_exit(&h, 1).code, 0);
    assert_chan(&h, 1, IC_CHAN_STDOUT, "bye\n");
    WAIT_UNTIL(&h, ic_buf_size(&h.out) == 0);
    json_decref(call_ok(&h, 2, IC_M_PING, NULL));
    free(data);
    host_stop(&h, 0);
}

static void test_signal_method(void **state)
{
    host h;
    host_start(&h, true);
    exec_start(&h, 1, json_pack("{s:[s,s]}", "argv", "sleep", "100"));
    json_t *r = call_ok(&h, 2, IC_M_SIGNAL, json_pack("{s:i,s:i}", "id", 1, "signal", 15));
    assert_int_equal(json_object_size(r), 0);
    json_decref(r);
    struct exit_info e = wait_exit(&h, 1);
    assert_int_equal(e.signal, 15);
    assert_false(e.timed_out);
    assert_int_equal(call_err(&h, 3, IC_M_SIGNAL, json_pack("{s:i,s:i}", "id", 1, "signal", 15)),
                     ESRCH);
    assert_int_equal(call_err(&h, 4, IC_M_SIGNAL, json_pack("{s:i,s:i}", "id", 99, "signal", 9)),
                     ESRCH);
    host_stop(&h, 0);
}

static void test_exec_errors(void **state)
{
    host h;
    host_start(&h, true);
    char dir[] = "/tmp/ic-test-agent-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[PATH_MAX];
    snprintf(file, sizeof(file), "%s/not-executable", dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
    close(fd);

    assert_int_equal(call_err(&h, 1, IC_M_EXEC,
                              json_pack("{s:[s]}", "argv", "ironclaw-no-such-program")),
                     ENOENT);
    assert_int_equal(call_err(&h, 2, IC_M_EXEC, json_pack("{s:[s]}", "argv", "/nonexistent/prog")),
                     ENOENT);
    assert_int_equal(call_err(&h, 3, IC_M_EXEC, json_pack("{s:[s]}", "argv", file)), EACCES);
    assert_int_equal(call_err(&h, 4, IC_M_EXEC,
                              json_pack("{s:[s],s:s}", "argv", "true", "cwd", "/nonexistent/dir")),
                     ENOENT);
    assert_int_equal(call_err(&h, 5, IC_M_EXEC, json_pack("{s:[s],s:s}", "argv", "true", "cwd", file)),
                     ENOTDIR);
    /* A failed exec leaves no stream behind: the id is free again. */
    exec_start(&h, 1, json_pack("{s:[s]}", "argv", "true"));
    assert_int_equal(wait_exit(&h, 1).code, 0);
    unlink(file);
    rmdir(dir);
    host_stop(&h, 0);
}

static void test_exec_env_and_cwd(void **state)
{
    host h;
    host_start(&h, true);
    char dir[] = "/tmp/ic-test-agent-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char real[PATH_MAX];
    assert_non_null(realpath(dir, real));
    exec_start(&h, 1, json_pack("{s:[s,s,s],s:[s,s],s:s}", "argv", "sh", "-c",
                                "printf '%s|%s|%s|%s' \"$FOO\" \"$(pwd)\" \"$HOME\" \"$PATH\"",
                                "env", "FOO=bar baz", "HOME=/home/x", "cwd", real));
    assert_int_equal(wait_exit(&h, 1).code, 0);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof(want), "bar baz|%s|/home/x|%s", real,
             "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert_chan(&h, 1, IC_CHAN_STDOUT, want);
    /* Only the base environment and the additions: nothing of ours leaks. */
    exec_start(&h, 2, json_pack("{s:[s]}", "argv", "env"));
    assert_int_equal(wait_exit(&h, 2).code, 0);
    assert_chan(&h, 2, IC_CHAN_STDOUT,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nHOME=/root\n");
    rmdir(dir);
    host_stop(&h, 0);
}

static void test_concurrent_execs(void **state)
{
    host h;
    host_start(&h, true);
    enum { N = 20 };
    const char *script = "i=$0; sleep 0.$((i % 4)); echo \"out $i\"; echo \"err $i\" >&2; "
                         "exit $((i % 7))";
    for (int i = 1; i <= N; i++) {
        char arg[16];
        snprintf(arg, sizeof(arg), "%d", i);
        send_req(&h, (uint32_t)i, IC_M_EXEC, json_pack("{s:[s,s,s,s]}", "argv", "sh", "-c", script, arg));
    }
    for (int i = 1; i <= N; i++) {
        ic_msg m = wait_reply(&h, (uint32_t)i);
        assert_int_equal(m.type, IC_MSG_RESPONSE);
        ic_msg_release(&m);
    }
    for (int i = 1; i <= N; i++) {
        struct exit_info e = wait_exit(&h, (uint32_t)i);
        assert_int_equal(e.code, i % 7);
        char want[32];
        snprintf(want, sizeof(want), "out %d\n", i);
        assert_chan(&h, (uint32_t)i, IC_CHAN_STDOUT, want);
        snprintf(want, sizeof(want), "err %d\n", i);
        assert_chan(&h, (uint32_t)i, IC_CHAN_STDERR, want);
    }
    host_stop(&h, 0);
}

static void test_connection_end_kills_processes(void **state)
{
    host h;
    host_start(&h, true);
    int pid = exec_start(&h, 1, json_pack("{s:[s,s]}", "argv", "sleep", "100"));
    host_stop(&h, 0);
    /* The process group was killed; once reaped by init it is gone. */
    uint64_t end = now_ms() + WAIT_MS;
    while (kill(pid, 0) == 0 && now_ms() < end) {
        char path[64], st[256] = "";
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(st, 1, sizeof(st) - 1, f);
            st[n] = '\0';
            fclose(f);
        }
        char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'Z')
            break;   /* dead, waiting for whoever inherited it to reap */
        usleep(10000);
    }
    assert_true(now_ms() < end);
}

/* ---- files ------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void put_file(host *h, uint32_t id, const char *path, int mode, const uint8_t *data,
                     size_t len)
{
    json_t *params = mode >= 0 ? json_pack("{s:s,s:i}", "path", path, "mode", mode)
                               : json_pack("{s:s}", "path", path);
    send_req(h, id, IC_M_FILE_PUT, params);
    send_data(h, id, IC_CHAN_FILE, data, len);
    ic_msg m = wait_reply(h, id);
    if (m.type != IC_MSG_RESPONSE)
        fail_msg("file.put %s: %d %s", path, m.error_code, m.error_message);
    assert_int_equal(jint(m.result, "size"), (json_int_t)len);
    ic_msg_release(&m);
}

static void get_file(host *h, uint32_t id, const char *path, int mode, const uint8_t *data,
                     size_t len)
{
    json_t *r = call_ok(h, id, IC_M_FILE_GET, json_pack("{s:s}", "path", path));
    assert_int_equal(jint(r, "size"), (json_int_t)len);
    assert_int_equal(jint(r, "mode"), mode);
    json_decref(r);
    struct stream *s = stream_get(h, id);
    WAIT_UNTIL(h, s->eof[IC_CHAN_FILE]);
    assert_int_equal(ic_buf_size(&s->ch[IC_CHAN_FILE]), len);
    assert_true(memcmp(ic_buf_head(&s->ch[IC_CHAN_FILE]), data, len) == 0);
}

static void assert_entry(json_t *e, const char *name, const char *type, json_int_t size)
{
    assert_string_equal(json_string_value(json_object_get(e, "name")), name);
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    if (size >= 0)
        assert_int_equal(jint(e, "size"), size);
    (void)jint(e, "mode");
}

static void test_files_roundtrip(void **state)
{
    host h;
    host_start(&h, true);
    char dir[] = "/tmp/ic-test-agent-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[256], small[PATH_MAX], big[PATH_MAX], link[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/sub/dir", dir);
    snprintf(small, sizeof(small), "%s/small.txt", sub);
    snprintf(big, sizeof(big), "%s/big.bin", sub);
    snprintf(link, sizeof(link), "%s/link", sub);

    const size_t big_len = 5u << 20;
    uint8_t *data = malloc(big_len);
    assert_non_null(data);
    fill_random(data, big_len, 42);
    /* Parents are created; mode is applied exactly (not through umask). */
    put_file(&h, 1, small, 0600, (const uint8_t *)"hello\n", 6);
    put_file(&h, 2, big, -1, data, big_len);
    put_file(&h, 3, small, 0640, (const uint8_t *)"replaced\n", 9);
    struct stat st;
    assert_int_equal(stat(small, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_size, 9);
    assert_int_equal(stat(big, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(symlink("small.txt", link), 0);

    get_file(&h, 4, small, 0640, (const uint8_t *)"replaced\n", 9);
    get_file(&h, 5, big, 0644, data, big_len);

    json_t *r = call_ok(&h, 6, IC_M_FILE_LIST, json_pack("{s:s}", "path", sub));
    json_t *entries = json_object_get(r, "entries");
    assert_int_equal(json_array_size(entries), 3);
    assert_entry(json_array_get(entries, 0), "big.bin", "file", (json_int_t)big_len);
    assert_entry(json_array_get(entries, 1), "link", "link", -1);
    assert_entry(json_array_get(entries, 2), "small.txt", "file", 9);
    assert_int_equal(jint(json_array_get(entries, 2), "mode"), 0640);
    json_decref(r);
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    r = call_ok(&h, 7, IC_M_FILE_LIST, json_pack("{s:s}", "path", sub));
    entries = json_object_get(r, "entries");
    assert_int_equal(json_array_size(entries), 1);
    assert_entry(json_array_get(entries, 0), "dir", "dir", -1);
    json_decref(r);

    free(data);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    host_stop(&h, 0);
}

static void test_file_errors(void **state)
{
    host h;
    host_start(&h, true);
    char dir[] = "/tmp/ic-test-agent-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[PATH_MAX], under_file[PATH_MAX];
    snprintf(file, sizeof(file), "%s/plain", dir);
    snprintf(under_file, sizeof(under_file), "%s/plain/x", dir);
    int fd = open(file, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);

    assert_int_equal(call_err(&h, 1, IC_M_FILE_GET, json_pack("{s:s}", "path", dir)), EISDIR);
    assert_int_equal(call_err(&h, 2, IC_M_FILE_GET, json_pack("{s:s}", "path", "/dev/null")), EINVAL);
    assert_int_equal(call_err(&h, 3, IC_M_FILE_GET, json_pack("{s:s}", "path", "/nonexistent")),
                     ENOENT);
    assert_int_equal(call_err(&h, 4, IC_M_FILE_LIST, json_pack("{s:s}", "path", file)), ENOTDIR);
    /* A put that cannot be created is answered at once; the data the
     * host still sends is discarded and the connection goes on. */
    assert_int_equal(call_err(&h, 5, IC_M_FILE_PUT, json_pack("{s:s}", "path", under_file)),
                     ENOTDIR);
    const uint8_t junk[1000] = {1, 2, 3};
    send_data(&h, 5, IC_CHAN_FILE, junk, sizeof(junk));
    assert_int_equal(call_err(&h, 6, IC_M_FILE_PUT, json_pack("{s:s}", "path", dir)), EISDIR);
    send_data(&h, 6, IC_CHAN_FILE, junk, sizeof(junk));
    json_decref(call_ok(&h, 7, IC_M_PING, NULL));
    /* No temporary files were left behind. */
    json_t *r = call_ok(&h, 8, IC_M_FILE_LIST, json_pack("{s:s}", "path", dir));
    assert_int_equal(json_array_size(json_object_get(r, "entries")), 1);
    json_decref(r);
    unlink(file);
    rmdir(dir);
    host_stop(&h, 0);
}

/* ---- the listening test mode ----------------------------------------------- */

static void test_listen_once(void **state)
{
    char dir[] = "/tmp/ic-test-agent-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/guest.sock", dir);
    host h;
    memset(&h, 0, sizeof(h));
    h.pid = fork();
    assert_true(h.pid >= 0);
    if (h.pid == 0) {
        execl(IC_TEST_GUEST, "ironclaw-guest", "--test-listen", sa.sun_path, "--once", (char *)NULL);
        _exit(127);
    }
    h.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(h.fd >= 0);
    uint64_t end = now_ms() + WAIT_MS;
    while (connect(h.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        assert_true(now_ms() < end);
        usleep(10000);
    }
    assert_int_equal(fcntl(h.fd, F_SETFL, O_NONBLOCK), 0);
    h.dec = ic_decoder_new(0);
    ic_err err;
    assert_int_equal(ic_hello_put(&h.out, "host", "test_agent", &err), 0);
    json_decref(call_ok(&h, 1, IC_M_PING, NULL));
    host_stop(&h, 0);
    /* --once: the socket is gone with the guest. */
    assert_int_equal(access(sa.sun_path, F_OK), -1);
    rmdir(dir);
}

static void test_usage(void **state)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(IC_TEST_GUEST, "ironclaw-guest", (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    /* Not PID 1 and no test mode: refuses rather than acting as init. */
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_ping),
        cmocka_unit_test(test_wrong_version_hello),
        cmocka_unit_test(test_request_before_hello),
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_truncated_frame),
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_unknown_method_and_bad_params),
        cmocka_unit_test(test_poweroff_closes_in_test_mode),
        cmocka_unit_test(test_exec_outputs_and_exit_code),
        cmocka_unit_test(test_exec_killed_by_signal),
        cmocka_unit_test(test_exec_stdin_8mib),
        cmocka_unit_test(test_exec_stdin_false_is_dev_null),
        cmocka_unit_test(test_exec_inherits_only_stdio),
        cmocka_unit_test(test_exec_timeout),
        cmocka_unit_test(test_exec_descendant_does_not_hold_exit),
        cmocka_unit_test(test_exec_escaped_descendant_does_not_hold_exit),
        cmocka_unit_test(test_exec_unread_stdin_does_not_block),
        cmocka_unit_test(test_signal_method),
        cmocka_unit_test(test_exec_errors),
        cmocka_unit_test(test_exec_env_and_cwd),
        cmocka_unit_test(test_concurrent_execs),
        cmocka_unit_test(test_connection_end_kills_processes),
        cmocka_unit_test(test_files_roundtrip),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_listen_once),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
