/*
 * test_firecracker.c - the Firecracker driver's pieces on their own: request
 * bodies and machine limits, error sentences (fault_message verbatim),
 * the API client against a scripted HTTP peer (good, refusing, malformed,
 * silent, oversized), the hybrid-vsock answer parser and connector against
 * a scripted Firecracker (closing until the guest listens, garbage,
 * nothing there), seccomp filter validation, version matching, the
 * jailer's plan, argv, files and pid file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "vm/fc.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

static char tmp[64];

static int make_tmp(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/ic-fct-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    return 0;
}

static int remove_tmp(void **state)
{
    ic_rm_rf(tmp, NULL);
    return 0;
}

/* ---- bodies and limits ------------------------------------------------------ */

static void test_machine_limits(void **state)
{
    ic_err err = {0};
    assert_int_equal(ic_fc_check_machine(1, 128, &err), 0);
    assert_int_equal(ic_fc_check_machine(2, 64, &err), 0);
    assert_int_equal(ic_fc_check_machine(32, 65536, &err), 0);
    unsigned bad_cpus[] = {0, 3, 5, 31, 33, 34};
    for (size_t i = 0; i < sizeof(bad_cpus) / sizeof(bad_cpus[0]); i++) {
        ic_err_clear(&err);
        assert_int_equal(ic_fc_check_machine(bad_cpus[i], 256, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "even number"));
    }
    assert_int_equal(ic_fc_check_machine(1, 63, &err), -EINVAL);
    assert_int_equal(ic_fc_check_machine(1, 65537, &err), -EINVAL);
}

static void expect_body(char *body, const char *want)
{
    assert_non_null(body);
    assert_string_equal(body, want);
    free(body);
}

static void test_bodies(void **state)
{
    expect_body(ic_fc_body_machine(2, 512), "{\"vcpu_count\":2,\"mem_size_mib\":512,\"smt\":false}");
    expect_body(ic_fc_body_boot_source("/k", "/i", "console=ttyS0"),
                "{\"kernel_image_path\":\"/k\",\"boot_args\":\"console=ttyS0\",\"initrd_path\":\"/i\"}");
    expect_body(ic_fc_body_boot_source("/k", NULL, "x"),
                "{\"kernel_image_path\":\"/k\",\"boot_args\":\"x\"}");
    expect_body(ic_fc_body_drive("drive0", "/d.img", true),
                "{\"drive_id\":\"drive0\",\"path_on_host\":\"/d.img\",\"is_root_device\":false,"
                "\"is_read_only\":true}");
    expect_body(ic_fc_body_vsock(3, "/v.sock"), "{\"guest_cid\":3,\"uds_path\":\"/v.sock\"}");
    expect_body(ic_fc_body_net("eth0", "tap0", "06:00:00:00:00:01"),
                "{\"iface_id\":\"eth0\",\"host_dev_name\":\"tap0\",\"guest_mac\":\"06:00:00:00:00:01\"}");
    expect_body(ic_fc_body_action("InstanceStart"), "{\"action_type\":\"InstanceStart\"}");
    expect_body(ic_fc_body_metrics("/m"), "{\"metrics_path\":\"/m\"}");
    expect_body(ic_fc_body_logger("/l"), "{\"log_path\":\"/l\",\"level\":\"Warning\","
                "\"show_level\":true,\"show_log_origin\":false}");
    /* Quotes and backslashes in paths stay JSON. */
    char *b = ic_fc_body_vsock(3, "/a\"b\\c");
    json_t *o = json_loads(b, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "uds_path")), "/a\"b\\c");
    json_decref(o);
    free(b);
    assert_true(ic_fc_id_ok("drive0"));
    assert_false(ic_fc_id_ok("../x"));
    assert_false(ic_fc_id_ok(""));
    assert_false(ic_fc_id_ok("a b"));
}

static void test_describe_error(void **state)
{
    ic_err err = {0};
    const char *b = "{\"fault_message\":\"The kernel file cannot be opened: No such file\"}";
    assert_int_equal(ic_fc_api_describe_error("PUT", "/boot-source", 400, b, strlen(b), &err),
                     -EINVAL);
    assert_string_equal(err.msg, "Firecracker refused PUT /boot-source (HTTP 400): The kernel file "
                        "cannot be opened: No such file");
    /* Terminal control bytes are shown, not sent. */
    b = "{\"fault_message\":\"bad\\u001b[2Jthing\\n\"}";
    ic_fc_api_describe_error("PUT", "/x", 400, b, strlen(b), &err);
    assert_non_null(strstr(err.msg, "bad\\x1b[2Jthing\\x0a"));
    assert_null(strchr(err.msg, 0x1b));
    /* No fault_message: the status and the body's start. */
    b = "<html>oops</html>";
    assert_int_equal(ic_fc_api_describe_error("PUT", "/x", 500, b, strlen(b), &err), -EPROTO);
    assert_non_null(strstr(err.msg, "HTTP 500"));
    assert_non_null(strstr(err.msg, "<html>oops"));
    ic_fc_api_describe_error("PUT", "/x", 404, NULL, 0, &err);
    assert_non_null(strstr(err.msg, "HTTP 404 and no fault_message"));
}

/* ---- a scripted HTTP peer ----------------------------------------------------------- */

/* A listening Unix socket in tmp with one thread serving it (the fake
 * API server and the fake hybrid-vsock socket below). */
struct server {
    char path[108];
    int lfd;
    pthread_t th;
};

struct peer {
    struct server srv;
    const char *reply;     /* written after the request; NULL: close at once */
    size_t reply_len;
    int delay_ms;          /* before replying */
    char request[8192];
    size_t request_len;
};

static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

/* Reads one request (head plus Content-Length body). */
static void read_request(int fd, struct peer *p)
{
    p->request_len = 0;
    for (;;) {
        ssize_t n = read(fd, p->request + p->request_len, sizeof(p->request) - 1 - p->request_len);
        if (n <= 0)
            return;
        p->request_len += (size_t)n;
        p->request[p->request_len] = '\0';
        char *end = strstr(p->request, "\r\n\r\n");
        const char *cl = strcasestr(p->request, "Content-Length:");
        if (end && (!cl || p->request_len >= (size_t)(end - p->request) + 4 + strtoul(cl + 15, NULL, 10)))
            return;
    }
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    int c = accept(p->srv.lfd, NULL, NULL);
    if (c < 0)
        return NULL;
    read_request(c, p);
    if (p->delay_ms)
        usleep((useconds_t)p->delay_ms * 1000);
    if (p->reply)
        (void)!write(c, p->reply, p->reply_len ? p->reply_len : strlen(p->reply));
    close(c);
    return NULL;
}

static void server_start(struct server *s, const char *name, void *(*serve)(void *), void *arg)
{
    snprintf(s->path, sizeof(s->path), "%s/%s", tmp, name);
    s->lfd = listen_at(s->path);
    assert_int_equal(pthread_create(&s->th, NULL, serve, arg), 0);
}

/* shutdown() ends the serving thread's accept(). */
static void server_stop(struct server *s)
{
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
}

static void peer_start(struct peer *p) { server_start(&p->srv, "api.sock", peer_main, p); }
static void peer_stop(struct peer *p) { server_stop(&p->srv); }

static void test_api_ok_and_request_shape(void **state)
{
    struct peer p = {.reply = "HTTP/1.1 204 \r\nServer: Firecracker API\r\n\r\n"};
    peer_start(&p);
    ic_err err = {0};
    assert_int_equal(ic_fc_api_put(p.srv.path, "/machine-config", "{\"vcpu_count\":1}", 2000, &err), 0);
    peer_stop(&p);
    assert_non_null(strstr(p.request, "PUT /machine-config HTTP/1.1\r\n"));
    assert_non_null(strcasestr(p.request, "Content-Type: application/json\r\n"));
    assert_non_null(strcasestr(p.request, "Accept: application/json\r\n"));
    assert_null(strcasestr(p.request, "Expect:"));
    assert_non_null(strstr(p.request, "\r\n\r\n{\"vcpu_count\":1}"));
}

static void test_api_fault_verbatim(void **state)
{
    static const char reply[] =
        "HTTP/1.1 400 \r\nContent-Type: application/json\r\nContent-Length: 56\r\n\r\n"
        "{\"fault_message\":\"Invalid vCPU count: it must be even.\"}";
    struct peer p = {.reply = reply};
    peer_start(&p);
    ic_err err = {0};
    assert_int_equal(ic_fc_api_put(p.srv.path, "/machine-config", "{}", 2000, &err), -EINVAL);
    peer_stop(&p);
    assert_string_equal(err.msg, "Firecracker refused PUT /machine-config (HTTP 400): Invalid vCPU "
                        "count: it must be even.");
}

static void test_api_malformed_answers(void **state)
{
    ic_err err = {0};
    struct peer p = {.reply = "SSH-2.0-OpenSSH\r\n\r\n"};
    peer_start(&p);
    assert_true(ic_fc_api_put(p.srv.path, "/x", "{}", 2000, &err) < 0);
    peer_stop(&p);
    assert_non_null(strstr(err.msg, "PUT /x"));

    /* Closed without a word. */
    struct peer q = {.reply = NULL};
    peer_start(&q);
    ic_err_clear(&err);
    assert_true(ic_fc_api_put(q.srv.path, "/x", "{}", 2000, &err) < 0);
    peer_stop(&q);
    assert_non_null(strstr(err.msg, "failed"));

    /* Too slow. */
    struct peer s = {.reply = "HTTP/1.1 204 \r\n\r\n", .delay_ms = 700};
    peer_start(&s);
    ic_err_clear(&err);
    assert_int_equal(ic_fc_api_put(s.srv.path, "/x", "{}", 200, &err), -ETIMEDOUT);
    peer_stop(&s);

    /* An answer far larger than any fault message. */
    size_t big = IC_FC_API_BODY_MAX * 2;
    char *r = malloc(big + 128);
    int h = snprintf(r, 128, "HTTP/1.1 400 \r\nContent-Length: %zu\r\n\r\n", big);
    memset(r + h, 'x', big);
    struct peer b = {.reply = r, .reply_len = (size_t)h + big};
    peer_start(&b);
    ic_err_clear(&err);
    assert_int_equal(ic_fc_api_put(b.srv.path, "/x", "{}", 2000, &err), -EPROTO);
    peer_stop(&b);
    assert_non_null(strstr(err.msg, "larger than"));
    free(r);

    /* Nobody there at all. */
    ic_err_clear(&err);
    char none[128];
    snprintf(none, sizeof(none), "%s/none.sock", tmp);
    assert_true(ic_fc_api_put(none, "/x", "{}", 500, &err) < 0);
    assert_int_equal(ic_fc_api_put(none, "no-slash", "{}", 500, &err), -EINVAL);
}

/* ---- hybrid vsock -------------------------------------------------------------------- */

static void test_vsock_parse(void **state)
{
    size_t len = 0;
    uint32_t port = 0;
    ic_err err = {0};
    assert_int_equal(ic_fc_vsock_parse_ok("OK 1073741824\nHELLO", 19, &len, &port, &err), 0);
    assert_int_equal(len, 14);
    assert_int_equal(port, 1073741824u);
    const char *partial[] = {"", "O", "OK", "OK ", "OK 12"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(ic_fc_vsock_parse_ok(partial[i], strlen(partial[i]), &len, &port, &err),
                         -EAGAIN);
    const char *bad[] = {"NO\n", "ok 1\n", "OK\n", "OK \n", "OK 12a\n", "OK 99999999999\n",
                         "OK -1\n", " OK 1\n", "OK 1 \n", "\n", "HTTP/1.1 200 OK\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ic_err_clear(&err);
        assert_int_equal(ic_fc_vsock_parse_ok(bad[i], strlen(bad[i]), &len, &port, &err), -EPROTO);
        assert_true(err.msg[0] != '\0');
    }
    /* A NUL inside is shown, not a string end. */
    assert_int_equal(ic_fc_vsock_parse_ok("OK \0\n", 5, &len, &port, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "\\x00"));
    /* Digits forever without a newline: refused, not waited for. */
    char longline[64];
    memset(longline, '1', sizeof(longline));
    memcpy(longline, "OK ", 3); // NOLINT(bugprone-not-null-terminated-result): no NUL on purpose
    assert_int_equal(ic_fc_vsock_parse_ok(longline, sizeof(longline), &len, &port, &err), -EPROTO);
}

/* A scripted Firecracker: the first `refuse` connections are closed after
 * CONNECT, then `answer` is sent (followed by the guest's first bytes). */
struct fcpeer {
    struct server srv;
    int refuse;
    const char *answer;
    int accepted;
    int split;             /* CONNECT lines that did not arrive in one read */
    char line[64];
};

static void *fcpeer_main(void *arg)
{
    struct fcpeer *p = arg;
    for (;;) {
        int c = accept(p->srv.lfd, NULL, NULL);
        if (c < 0)
            return NULL;
        p->accepted++;
        char buf[64];
        ssize_t n = read(c, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        if (n <= 0 || buf[n - 1] != '\n')
            p->split++;
        snprintf(p->line, sizeof(p->line), "%s", buf);
        if (p->accepted <= p->refuse || !p->answer) {
            close(c);
            continue;
        }
        (void)!write(c, p->answer, strlen(p->answer));
        usleep(200 * 1000);
        close(c);
        return NULL;
    }
}

static void fcpeer_start(struct fcpeer *p) { server_start(&p->srv, "v.sock", fcpeer_main, p); }
static void fcpeer_stop(struct fcpeer *p) { server_stop(&p->srv); }

struct vres {
    bool called;
    uv_stream_t *chan;
    ic_err err;
    char got[64];
    size_t got_len;
};

static void on_vres(uv_stream_t *chan, const ic_err *err, void *ud)
{
    struct vres *r = ud;
    r->called = true;
    r->chan = chan;
    if (err)
        r->err = *err;
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct vres *r = h->data;
    *b = uv_buf_init(r->got + r->got_len, (unsigned)(sizeof(r->got) - 1 - r->got_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct vres *r = s->data;
    if (n > 0)
        r->got_len += (size_t)n;
    if (n < 0 || strstr(r->got, "HELLO"))
        uv_read_stop(s);
}

static void run_connector(struct vres *r, const char *path, uint32_t deadline)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ic_fc_vsock_opts o = {.uds_path = path, .port = 1024, .deadline_ms = deadline,
                                 .handshake_ms = 500};
    ic_fc_vsock *c = NULL;
    ic_err err = {0};
    assert_int_equal(ic_fc_vsock_connect(&loop, &o, on_vres, r, &c, &err), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(r->called);
    if (r->chan) {
        /* What came after the OK line is still there to read. */
        r->chan->data = r;
        uv_read_start(r->chan, on_alloc, on_read);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_close((uv_handle_t *)r->chan, (uv_close_cb)free);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_vsock_retry_then_ok(void **state)
{
    struct fcpeer p = {.refuse = 3, .answer = "OK 1073741825\nHELLO"};
    fcpeer_start(&p);
    struct vres r = {0};
    run_connector(&r, p.srv.path, 5000);
    fcpeer_stop(&p);
    assert_non_null(r.chan);
    assert_int_equal(p.accepted, 4);
    assert_int_equal(p.split, 0);
    assert_string_equal(p.line, "CONNECT 1024\n");
    assert_string_equal(r.got, "HELLO");
}

static void test_vsock_garbage(void **state)
{
    struct fcpeer p = {.answer = "HTTP/1.1 400 Bad Request\r\n"};
    fcpeer_start(&p);
    struct vres r = {0};
    run_connector(&r, p.srv.path, 5000);
    fcpeer_stop(&p);
    assert_null(r.chan);
    assert_int_equal(r.err.code, EPROTO);
    assert_non_null(strstr(r.err.msg, "HTTP/1.1 400"));
}

static void test_vsock_guest_never_listens(void **state)
{
    struct fcpeer p = {.refuse = 1000000};
    fcpeer_start(&p);
    struct vres r = {0};
    uint64_t t0 = uv_hrtime();
    run_connector(&r, p.srv.path, 600);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    fcpeer_stop(&p);
    assert_null(r.chan);
    assert_int_equal(r.err.code, ETIMEDOUT);
    assert_non_null(strstr(r.err.msg, "did not accept a vsock connection on port 1024"));
    assert_non_null(strstr(r.err.msg, "closed the connection"));
    assert_true(p.accepted >= 3);
    assert_true(ms >= 550 && ms < 3000);
}

static void test_vsock_nothing_there(void **state)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/missing.sock", tmp);
    struct vres r = {0};
    run_connector(&r, path, 300);
    assert_int_equal(r.err.code, ETIMEDOUT);
    assert_non_null(strstr(r.err.msg, "No such file"));
}

static void test_vsock_cancel(void **state)
{
    struct fcpeer p = {.refuse = 1000000};
    fcpeer_start(&p);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ic_fc_vsock_opts o = {.uds_path = p.srv.path, .port = 1024, .deadline_ms = 10000};
    ic_fc_vsock *c = NULL;
    struct vres r = {0};
    ic_err err = {0};
    assert_int_equal(ic_fc_vsock_connect(&loop, &o, on_vres, &r, &c, &err), 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    ic_fc_vsock_cancel(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_false(r.called);
    assert_int_equal(uv_loop_close(&loop), 0);
    fcpeer_stop(&p);

    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    o.uds_path = longp;
    uv_loop_init(&loop);
    assert_int_equal(ic_fc_vsock_connect(&loop, &o, on_vres, &r, &c, &err), -ENAMETOOLONG);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- seccomp filters ----------------------------------------------------------------- */

static const char GOOD_FILTER[] =
    "{\"vmm\": {\"default_action\": \"trap\", \"filter_action\": \"allow\", \"filter\": ["
    "  {\"syscall\": \"read\"},"
    "  {\"syscall\": \"accept4\", \"comment\": \"vsock\", \"args\": [{\"index\": 3, \"type\": \"dword\","
    "   \"op\": \"eq\", \"val\": 524288, \"comment\": \"SOCK_CLOEXEC\"}]},"
    "  {\"syscall\": \"mmap\", \"args\": [{\"index\": 2, \"type\": \"dword\", \"op\": {\"masked_eq\": 4},"
    "   \"val\": 0}]}]},"
    " \"api\": {\"default_action\": {\"errno\": 1}, \"filter_action\": \"allow\", \"filter\": ["
    "  {\"syscall\": \"epoll_pwait\"}]},"
    " \"vcpu\": {\"default_action\": \"kill_process\", \"filter_action\": \"log\", \"filter\": ["
    "  {\"syscall\": \"ioctl\", \"args\": [{\"arg_index\": 1, \"arg_type\": \"qword\", \"op\": \"ge\","
    "   \"val\": 1}]}]}}";

static int validate(const char *text, ic_err *err)
{
    ic_err_clear(err);
    return ic_fc_filter_validate(text, strlen(text), err);
}

static void test_filter_good(void **state)
{
    ic_err err = {0};
    assert_int_equal(validate(GOOD_FILTER, &err), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/f.json", tmp);
    assert_int_equal(ic_file_write_atomic(path, GOOD_FILTER, strlen(GOOD_FILTER), 0644, &err), 0);
    assert_int_equal(ic_fc_filter_validate_file(path, &err), 0);
    snprintf(path, sizeof(path), "%s/none.json", tmp);
    assert_true(ic_fc_filter_validate_file(path, &err) < 0);
    assert_non_null(strstr(err.msg, "none.json"));
}

static void test_filter_bad(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"vmm\": {", "not valid JSON"},
        {"[]", "top level must be an object"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[]},"
         "\"api\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[]}}",
         "no filter for the \"vcpu\" threads"},
        {"{\"vmm\":{},\"api\":{},\"vcpu\":{},\"other\":{}}", "unknown key \"other\""},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[],\"x\":1},"
         "\"api\":{},\"vcpu\":{}}", "unknown key \"x\" in \"vmm\""},
        {"{\"vmm\":{\"default_action\":\"explode\",\"filter_action\":\"allow\",\"filter\":[]},"
         "\"api\":{},\"vcpu\":{}}", "\"explode\", which is not an action"},
        {"{\"vmm\":{\"default_action\":{\"errno\":-1},\"filter_action\":\"allow\",\"filter\":[]},"
         "\"api\":{},\"vcpu\":{}}", "must be an action"},
        {"{\"vmm\":{\"filter_action\":\"allow\",\"filter\":[]},\"api\":{},\"vcpu\":{}}",
         "lacks \"default_action\""},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":{}},"
         "\"api\":{},\"vcpu\":{}}", "filter must be a list"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"name\":\"read\"}]},"
         "\"api\":{},\"vcpu\":{}}", "unknown key \"name\" in \"vmm\".filter[0]"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"Read;\"}]},"
         "\"api\":{},\"vcpu\":{}}", "not a syscall name"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[{\"index\":6,\"type\":\"dword\",\"op\":\"eq\",\"val\":1}]}]},\"api\":{},\"vcpu\":{}}",
         "index must be 0 to 5"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[{\"index\":1,\"arg_index\":1,\"type\":\"dword\",\"op\":\"eq\",\"val\":1}]}]},\"api\":{},\"vcpu\":{}}",
         "both \"index\" and \"arg_index\""},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[{\"index\":1,\"type\":\"word\",\"op\":\"eq\",\"val\":1}]}]},\"api\":{},\"vcpu\":{}}",
         "\"dword\" or \"qword\""},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[{\"index\":1,\"type\":\"dword\",\"op\":\"like\",\"val\":1}]}]},\"api\":{},\"vcpu\":{}}",
         "\"op\" must be"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[{\"index\":1,\"type\":\"dword\",\"op\":\"eq\",\"val\":4294967296}]}]},\"api\":{},\"vcpu\":{}}",
         "does not fit a dword"},
        {"{\"vmm\":{\"default_action\":\"trap\",\"filter_action\":\"allow\",\"filter\":[{\"syscall\":\"read\","
         "\"args\":[]}]},\"api\":{},\"vcpu\":{}}", "list of 1 to 6"},
        {"{\"vmm\":{},\"vmm\":{},\"api\":{},\"vcpu\":{}}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ic_err err = {0};
        assert_int_equal(validate(cases[i].text, &err), -EINVAL);
        if (!strstr(err.msg, cases[i].want))
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err.msg, cases[i].want);
    }
}

static void test_versions(void **state)
{
    char v[32];
    assert_int_equal(ic_fc_version_parse("Firecracker v1.7.0\n\nSupported snapshot data format "
                                         "versions: 1.0.0\n", v, sizeof(v)), 0);
    assert_string_equal(v, "1.7.0");
    assert_int_equal(ic_fc_version_parse("seccompiler-bin 1.10.1-rc1\n", v, sizeof(v)), 0);
    assert_string_equal(v, "1.10.1-rc1");
    assert_int_equal(ic_fc_version_parse("version 2 3.4", v, sizeof(v)), -ENOENT);
    assert_int_equal(ic_fc_version_parse("x86_64 v12.0.3.", v, sizeof(v)), 0);
    assert_string_equal(v, "12.0.3");
    ic_err err = {0};
    assert_int_equal(ic_fc_versions_match("Firecracker v1.7.0\n", "seccompiler-bin v1.7.0\n", &err), 0);
    assert_int_equal(ic_fc_versions_match("Firecracker v1.7.0\n", "seccompiler-bin v1.6.0\n", &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "seccompiler-bin is version 1.6.0 but Firecracker is 1.7.0"));
    assert_int_equal(ic_fc_versions_match("Firecracker v1.7.0\n", "no idea", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "seccompiler-bin's version"));
}

/* ---- the jailer ------------------------------------------------------------------------ */

#define VMID "0123456789abcdef0123456789abcdef"

static void test_jail_plan_and_argv(void **state)
{
    struct ic_host h = {.cgroup = IC_CGROUP_V2};
    struct ic_fc_jail j;
    ic_err err = {0};
    unsetenv("IRONCLAW_JAILER_UID");
    unsetenv("IRONCLAW_JAILER_GID");
    assert_int_equal(ic_fc_jail_plan("/run/ic/vms/" VMID, VMID, "/usr/bin/firecracker", &h, &j, &err), 0);
    assert_string_equal(j.base, "/run/ic/jail");
    assert_string_equal(j.dir, "/run/ic/jail/firecracker/" VMID);
    assert_string_equal(j.root, "/run/ic/jail/firecracker/" VMID "/root");
    assert_string_equal(j.cgroup, "/sys/fs/cgroup/firecracker/" VMID);
    assert_int_equal(j.uid, 1000000000u + 0x0123);
    assert_int_equal(j.gid, j.uid);

    char *fc[] = {"--api-sock", "/api.sock", NULL};
    char **argv = NULL;
    assert_int_equal(ic_fc_jail_argv(&j, "/usr/bin/jailer", "/usr/bin/firecracker", VMID, true,
                                     "/run/netns/x", fc, &argv, &err), 0);
    const char *want[] = {"/usr/bin/jailer", "--id", VMID, "--exec-file", "/usr/bin/firecracker",
                          "--uid", "1000000291", "--gid", "1000000291", "--chroot-base-dir",
                          "/run/ic/jail", "--cgroup-version", "2", "--netns", "/run/netns/x",
                          "--new-pid-ns", "--", "--api-sock", "/api.sock", NULL};
    for (size_t i = 0; want[i] || argv[i]; i++) {
        assert_non_null(argv[i]);
        assert_non_null(want[i]);
        assert_string_equal(argv[i], want[i]);
    }
    ic_fc_argv_free(argv);

    /* Overrides, and what is refused. */
    setenv("IRONCLAW_JAILER_UID", "4242", 1);
    setenv("IRONCLAW_JAILER_GID", "4343", 1);
    h.cgroup = IC_CGROUP_V1;
    assert_int_equal(ic_fc_jail_plan("/r/vms/" VMID, VMID, "/opt/firecracker-v1.7", &h, &j, &err), 0);
    assert_int_equal(j.uid, 4242);
    assert_int_equal(j.gid, 4343);
    assert_string_equal(j.cgroup, "");
    assert_string_equal(j.exec_name, "firecracker-v1.7");
    setenv("IRONCLAW_JAILER_UID", "0", 1);
    assert_int_equal(ic_fc_jail_plan("/r/vms/" VMID, VMID, "/opt/firecracker", &h, &j, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "IRONCLAW_JAILER_UID"));
    setenv("IRONCLAW_JAILER_UID", "12x", 1);
    assert_int_equal(ic_fc_jail_plan("/r/vms/" VMID, VMID, "/opt/firecracker", &h, &j, &err), -EINVAL);
    unsetenv("IRONCLAW_JAILER_UID");
    unsetenv("IRONCLAW_JAILER_GID");
    assert_int_equal(ic_fc_jail_plan("/r/vms/" VMID, VMID, "/opt/vmm", &h, &j, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "\"firecracker\""));
    assert_int_equal(ic_fc_jail_plan("/r/other/" VMID, VMID, "/opt/firecracker", &h, &j, &err), -EINVAL);
    assert_int_equal(ic_fc_jail_plan("/r/vms/../x", "../x", "/opt/firecracker", &h, &j, &err), -EINVAL);
}

static void test_jail_files(void **state)
{
    if (geteuid() != 0)
        skip(); /* chown to the jail user needs root */
    char vmdir[128], src[128], secret[128], path[256];
    struct ic_host h = {0};
    struct ic_fc_jail j;
    ic_err err = {0};
    snprintf(vmdir, sizeof(vmdir), "%s/vms/%s", tmp, VMID);
    assert_int_equal(ic_fc_jail_plan(vmdir, VMID, "/usr/bin/firecracker", &h, &j, &err), 0);
    snprintf(src, sizeof(src), "%s/kernel", tmp);
    snprintf(secret, sizeof(secret), "%s/secret", tmp);
    assert_int_equal(ic_file_write_atomic(src, "ELF", 3, 0644, &err), 0);
    assert_int_equal(ic_file_write_atomic(secret, "disk", 4, 0600, &err), 0);

    /* World-readable and read-only: a hard link. */
    assert_int_equal(ic_fc_jail_install(&j, src, "vmlinux", false, &err), 0);
    struct stat a, b;
    snprintf(path, sizeof(path), "%s/vmlinux", j.root);
    assert_int_equal(stat(src, &a), 0);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    /* Not readable by others: a private copy for the jail user. */
    assert_int_equal(ic_fc_jail_install(&j, secret, "drive0.img", false, &err), 0);
    snprintf(path, sizeof(path), "%s/drive0.img", j.root);
    assert_int_equal(stat(path, &b), 0);
    assert_int_not_equal(b.st_ino, a.st_ino);
    assert_int_equal(b.st_uid, j.uid);
    assert_int_equal(b.st_mode & 0777, 0400);
    /* Writable: always a copy, owned by the jail user, the original untouched. */
    assert_int_equal(ic_fc_jail_install(&j, src, "rw.img", true, &err), 0);
    snprintf(path, sizeof(path), "%s/rw.img", j.root);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(b.st_uid, j.uid);
    assert_int_equal(b.st_mode & 0777, 0600);
    assert_int_equal(stat(src, &a), 0);
    assert_int_equal(a.st_uid, 0);
    /* Log files owned by the jail user. */
    assert_int_equal(ic_fc_jail_touch(&j, "firecracker.log", &err), 0);
    snprintf(path, sizeof(path), "%s/firecracker.log", j.root);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(b.st_uid, j.uid);
    /* Names that would leave the root. */
    assert_int_equal(ic_fc_jail_install(&j, src, "../x", false, &err), -EINVAL);
    assert_int_equal(ic_fc_jail_touch(&j, ".hidden", &err), -EINVAL);
    assert_int_equal(ic_fc_jail_install(&j, tmp, "dir", false, &err), -EINVAL);
}

static void test_jail_pid_file(void **state)
{
    char vmdir[128], pidfile[256];
    struct ic_host h = {0};
    struct ic_fc_jail j;
    ic_err err = {0};
    snprintf(vmdir, sizeof(vmdir), "%s/vms/%s", tmp, VMID);
    /* The "Firecracker" is a child of ours named like the exec file. */
    assert_int_equal(ic_fc_jail_plan(vmdir, VMID, "/bin/sleep-firecracker", &h, &j, &err), 0);
    snprintf(j.exec_name, sizeof(j.exec_name), "sleep");
    assert_int_equal(ic_mkdir_p(j.root, 0755, &err), 0);
    snprintf(pidfile, sizeof(pidfile), "%s/sleep.pid", j.root);
    pid_t pid = 0;
    assert_int_equal(ic_fc_jail_read_pid(&j, getpid(), &pid, &err), -ENOENT);

    pid_t child = fork();
    if (child == 0) {
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    usleep(100 * 1000);
    char text[32];
    snprintf(text, sizeof(text), "%d\n", (int)child);
    assert_int_equal(ic_file_write_atomic(pidfile, text, strlen(text), 0644, &err), 0);
    assert_int_equal(ic_fc_jail_read_pid(&j, getpid(), &pid, &err), 0);
    assert_int_equal(pid, child);
    /* Not our child: refused (a jail user could write anything there). */
    assert_int_equal(ic_fc_jail_read_pid(&j, 999999, &pid, &err), -EPERM);
    snprintf(text, sizeof(text), "%d", (int)getppid());
    assert_int_equal(ic_file_write_atomic(pidfile, text, strlen(text), 0644, &err), 0);
    assert_int_equal(ic_fc_jail_read_pid(&j, getpid(), &pid, &err), -EPERM);
    const char *garbage[] = {"", "abc", "1", "-5", "12 34", "99999999999"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        ic_err_clear(&err);
        int fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, garbage[i], strlen(garbage[i])), (ssize_t)strlen(garbage[i]));
        close(fd);
        assert_true(ic_fc_jail_read_pid(&j, getpid(), &pid, &err) < 0);
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_NOTHING);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_machine_limits),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_describe_error),
        cmocka_unit_test_setup_teardown(test_api_ok_and_request_shape, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_api_fault_verbatim, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_api_malformed_answers, make_tmp, remove_tmp),
        cmocka_unit_test(test_vsock_parse),
        cmocka_unit_test_setup_teardown(test_vsock_retry_then_ok, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_vsock_garbage, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_vsock_guest_never_listens, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_vsock_nothing_there, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_vsock_cancel, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_filter_good, make_tmp, remove_tmp),
        cmocka_unit_test(test_filter_bad),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_jail_plan_and_argv),
        cmocka_unit_test_setup_teardown(test_jail_files, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_jail_pid_file, make_tmp, remove_tmp),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
