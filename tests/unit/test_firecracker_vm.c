/*
 * test_firecracker_vm.c - the Firecracker driver end to end, under the
 * sanitizers, against the test doubles in tests/fcserver: a command runs
 * through hybrid vsock (with and without the jailer), a fault_message
 * reaches the caller verbatim, a VMM that dies or never opens its socket,
 * a guest that never listens, a custom seccomp filter compiled and passed
 * (and refused when seccompiler-bin is missing or of another release), a
 * teardown while work is still in flight; after each, nothing is left.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/buf.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"
#include "ironclaw/sandbox.h"
#include "ironclaw/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

static char top[64], data[128], runtime[128], argv_file[160], jargv_file[160], sargv_file[160];

static void put_file(const char *path, const char *text, mode_t mode)
{
    ic_err err = {0};
    assert_int_equal(ic_file_write_atomic(path, text, strlen(text), mode, &err), 0);
}

/* A hand-made image: the fake Firecracker only needs the vmlinux to be ELF. */
static int setup(void **state)
{
    snprintf(top, sizeof(top), "/tmp/ic-fcvm-XXXXXX");
    assert_non_null(mkdtemp(top));
    snprintf(data, sizeof(data), "%s/data", top);
    snprintf(runtime, sizeof(runtime), "%s/rt", top);
    char img[256], p[320];
    snprintf(img, sizeof(img), "%s/images/default", data);
    ic_err err = {0};
    assert_int_equal(ic_mkdir_p(img, 0755, &err), 0);
    snprintf(p, sizeof(p), "%s/vmlinuz", img);
    put_file(p, "bzImage", 0644);
    snprintf(p, sizeof(p), "%s/initrd.cpio", img);
    put_file(p, "cpio", 0644);
    snprintf(p, sizeof(p), "%s/manifest.json", img);
    put_file(p, "{\"kernel_release\": \"6.1.0-test\"}", 0644);
    snprintf(p, sizeof(p), "%s/vmlinux", img);
    put_file(p, "\177ELF fake vmlinux", 0644);
    snprintf(argv_file, sizeof(argv_file), "%s/fc.argv", top);
    snprintf(jargv_file, sizeof(jargv_file), "%s/jailer.argv", top);
    snprintf(sargv_file, sizeof(sargv_file), "%s/seccompiler.argv", top);
    setenv("IRONCLAW_DATA_DIR", data, 1);
    setenv("IRONCLAW_RUNTIME_DIR", runtime, 1);
    setenv("IRONCLAW_FIRECRACKER", IC_TEST_FAKE_FC, 1);
    setenv("IRONCLAW_SECCOMPILER", IC_TEST_FAKE_SECCOMPILER, 1);
    unsetenv("IRONCLAW_JAILER");
    setenv("FAKE_FC_GUEST", IC_TEST_GUEST, 1);
    setenv("FAKE_FC_ARGV_FILE", argv_file, 1);
    setenv("FAKE_JAILER_ARGV_FILE", jargv_file, 1);
    setenv("FAKE_SECCOMPILER_ARGV_FILE", sargv_file, 1);
    static const char *const knobs[] = {"FAKE_FC_FAULT", "FAKE_FC_FAULT_MESSAGE",
        "FAKE_FC_DIE_BEFORE_SOCKET", "FAKE_FC_NO_SOCKET", "FAKE_FC_NO_GUEST", "FAKE_FC_VERSION",
        "FAKE_SECCOMPILER_VERSION", "FAKE_SECCOMPILER_FAIL", "FAKE_FC_BAD_OK",
        "FAKE_FC_STAY_AFTER_GUEST", "FAKE_FC_REQUEST_LOG"};
    for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++)
        unsetenv(knobs[i]);
    return 0;
}

static int teardown(void **state)
{
    ic_rm_rf(top, NULL);
    return 0;
}

/* ---- one run --------------------------------------------------------------------- */

struct run {
    uv_loop_t loop;
    uv_timer_t deadline, early;
    struct ic_vm_config cfg;
    uint32_t ready_ms;
    uint32_t destroy_after_ms;     /* kill the sandbox this soon after start (0: no) */
    const char *cmd;               /* sh -c CMD once ready; NULL: shut down at once */
    ic_sandbox *sb;
    int start_r;
    ic_err start_err;
    bool ready_called;
    ic_err ready_err;              /* code 0: ready */
    ic_buf out[3];
    bool exited;
    struct ic_exec_status st;
    bool done;
    ic_err done_err;
    char state_json[8192];         /* the record while the command ran */
    char failure[512];             /* a failure seen in a callback; reported after the loop */
};

/* Callbacks only note a failure and wind the VM down: a cmocka failure
 * (a longjmp) from inside uv_run would leave the loop and the pool's
 * jobs pointing at a dead stack frame. */
static void note_failure(struct run *r, const char *what, const char *msg)
{
    if (!r->failure[0])
        snprintf(r->failure, sizeof(r->failure), "%s%s", what, msg);
}

static void on_deadline(uv_timer_t *t)
{
    struct run *r = t->data;
    note_failure(r, "test deadline expired", "");
    uv_stop(t->loop);
}

static void on_done(const struct ic_sandbox_timings *t, const ic_err *err, void *ud)
{
    struct run *r = ud;
    r->done = true;
    if (err)
        r->done_err = *err;
    r->sb = NULL;
    uv_close((uv_handle_t *)&r->deadline, NULL);
    uv_close((uv_handle_t *)&r->early, NULL);
}

static void ex_started(ic_exec *ex, int pid, const ic_err *err, void *ud)
{
    struct run *r = ud;
    if (err) {
        note_failure(r, "exec did not start: ", err->msg);
        if (r->sb)
            ic_sandbox_kill(r->sb, on_done, r);
    }
}

static void ex_output(ic_exec *ex, int ch, const uint8_t *p, size_t n, void *ud)
{
    struct run *r = ud;
    ic_buf_append(&r->out[ch], p, n);
}

/* Snapshot of the state record while the VM runs. */
static void read_record(struct run *r)
{
    DIR *d;
    char vms[256];
    snprintf(vms, sizeof(vms), "%s/vms", runtime);
    assert_non_null(d = opendir(vms));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s/state.json", vms, de->d_name);
        _cleanup_free_ char *text = NULL;
        if (ic_file_read(p, sizeof(r->state_json) - 1, &text, NULL, NULL) == 0)
            snprintf(r->state_json, sizeof(r->state_json), "%s", text);
    }
    closedir(d);
}

static void ex_exited(ic_exec *ex, const struct ic_exec_status *st, void *ud)
{
    struct run *r = ud;
    r->exited = true;
    r->st = *st;
    read_record(r);
    ic_sandbox_shutdown(r->sb, on_done, r);
}

static const struct ic_exec_events ex_events = {
    .started = ex_started, .output = ex_output, .exited = ex_exited};

static void on_ready(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct run *r = ud;
    r->ready_called = true;
    if (err) {
        r->ready_err = *err;
        ic_sandbox_kill(sb, on_done, r);
        return;
    }
    if (!r->cmd) {
        ic_sandbox_shutdown(sb, on_done, r);
        return;
    }
    const char *argv[] = {"sh", "-c", r->cmd, NULL};
    struct ic_exec_spec spec = {.argv = argv};
    ic_exec *ex;
    ic_err e = {0};
    assert_int_equal(ic_sandbox_exec(sb, &spec, &ex_events, r, &ex, &e), 0);
}

static void on_lost(ic_sandbox *sb, const ic_err *err, void *ud)
{
    struct run *r = ud;
    note_failure(r, "VM lost: ", err->msg);
    ic_sandbox_kill(sb, on_done, r);
}

static void on_early(uv_timer_t *t)
{
    struct run *r = t->data;
    if (r->sb && !r->ready_called) {
        r->ready_called = true;
        ic_sandbox_kill(r->sb, on_done, r);
    }
}

static void run(struct run *r)
{
    uv_loop_init(&r->loop);
    uv_timer_init(&r->loop, &r->deadline);
    r->deadline.data = r;
    uv_timer_start(&r->deadline, on_deadline, 60000, 0);
    uv_timer_init(&r->loop, &r->early);
    r->early.data = r;
    if (!r->cfg.cpus)
        r->cfg.cpus = 1;
    if (!r->cfg.mem_mib)
        r->cfg.mem_mib = 128;
    r->cfg.vmm = "firecracker";
    r->start_r = ic_sandbox_start(&r->loop, &r->cfg, r->ready_ms ? r->ready_ms : 20000, on_ready,
                                  on_lost, r, &r->sb, &r->start_err);
    if (r->start_r < 0) {
        uv_close((uv_handle_t *)&r->deadline, NULL);
        uv_close((uv_handle_t *)&r->early, NULL);
        r->done = true;
    } else if (r->destroy_after_ms) {
        uv_timer_start(&r->early, on_early, r->destroy_after_ms, 0);
    }
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (r->failure[0])
        fail_msg("%s", r->failure);
    assert_true(r->done);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    for (int i = 0; i < 3; i++)
        ic_buf_free(&r->out[i]);
}

static bool file_has(const char *path, const char *needle)
{
    _cleanup_free_ char *text = NULL;
    return ic_file_read(path, 1 << 20, &text, NULL, NULL) == 0 && strstr(text, needle);
}

/* Nothing of the VM is left: no record, no jail, no process using them. */
static void assert_nothing_left(void)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/vms", runtime);
    DIR *d = opendir(p);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                fail_msg("VM directory left: %s/%s", p, de->d_name);
        closedir(d);
    }
    snprintf(p, sizeof(p), "%s/jail/fake_firecracker", runtime);
    d = opendir(p);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                fail_msg("jail left: %s/%s", p, de->d_name);
        closedir(d);
    }
    /* Processes whose command line names the runtime directory. */
    d = opendir("/proc");
    struct dirent *de;
    while ((de = readdir(d))) {
        pid_t pid = (pid_t)atoi(de->d_name);
        if (pid <= 1 || pid == getpid())
            continue;
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        for (ssize_t i = 0; i < n; i++)
            if (!buf[i])
                buf[i] = ' ';
        buf[n > 0 ? n : 0] = '\0';
        char stat[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY);
        n = fd >= 0 ? read(fd, stat, sizeof(stat) - 1) : 0;
        if (fd >= 0)
            close(fd);
        stat[n > 0 ? n : 0] = '\0';
        char *paren = strrchr(stat, ')');
        bool zombie = paren && paren[2] == 'Z';
        if (strstr(buf, runtime) && !zombie)
            fail_msg("process %d left: %s", (int)pid, buf);
    }
    closedir(d);
}

/* ---- the tests -------------------------------------------------------------------- */

static void test_happy_unjailed(void **state)
{
    struct run r = {.cmd = "echo out; echo err >&2; exit 7"};
    r.cfg.no_jailer = true;
    run(&r);
    assert_int_equal(r.start_r, 0);
    assert_int_equal(r.ready_err.code, 0);
    assert_true(r.exited);
    assert_int_equal(r.st.code, 7);
    assert_int_equal(r.done_err.code, 0);
    assert_nothing_left();
    /* Exactly how Firecracker was started. */
    _cleanup_free_ char *argv = NULL;
    ic_err err = {0};
    assert_int_equal(ic_file_read(argv_file, 1 << 16, &argv, NULL, &err), 0);
    char want[1024];
    snprintf(want, sizeof(want), "%s\n--api-sock\n%s/vms/", IC_TEST_FAKE_FC, runtime);
    assert_true(strncmp(argv, want, strlen(want)) == 0);
    assert_non_null(strstr(argv, "/api.sock\n--id\n"));
    assert_null(strstr(argv, "--no-seccomp"));
    assert_null(strstr(argv, "--seccomp-filter"));
}

static void test_happy_jailed(void **state)
{
    if (geteuid() != 0)
        skip(); /* the jailer needs root */
    setenv("IRONCLAW_JAILER", IC_TEST_FAKE_JAILER, 1);
    struct run r = {.cmd = "echo jailed"};
    run(&r);
    unsetenv("IRONCLAW_JAILER");
    assert_int_equal(r.ready_err.code, 0);
    assert_true(r.exited);
    assert_int_equal(r.st.code, 0);
    assert_nothing_left();
    /* The jail, the real pid and the sockets were in the record. */
    json_t *st = json_loads(r.state_json, 0, NULL);
    assert_non_null(st);
    size_t i;
    json_t *res;
    bool tree = false, pid = false;
    json_array_foreach(json_object_get(st, "resources"), i, res) {
        const char *kind = json_string_value(json_object_get(res, "kind"));
        const char *role = json_string_value(json_object_get(res, "role"));
        if (strcmp(kind, "tree") == 0 && strcmp(role, "fc-jail") == 0)
            tree = strstr(json_string_value(json_object_get(res, "path")), "/jail/fake_firecracker/");
        if (strcmp(role, "firecracker") == 0)
            pid = json_integer_value(json_object_get(res, "pid")) > 1;
    }
    json_decref(st);
    assert_true(tree);
    assert_true(pid);
    assert_true(file_has(jargv_file, "\n--new-pid-ns\n--\n--api-sock\n/api.sock\n"));
    assert_true(file_has(jargv_file, "\n--chroot-base-dir\n"));
    assert_true(file_has(argv_file, "\n--api-sock\n/api.sock\n"));
}

static void test_fault_message(void **state)
{
    setenv("FAKE_FC_FAULT", "PUT /boot-source", 1);
    setenv("FAKE_FC_FAULT_MESSAGE", "The kernel file cannot be opened: No such file (os error 2)", 1);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    run(&r);
    assert_true(r.ready_called);
    assert_string_equal(r.ready_err.msg, "Firecracker refused PUT /boot-source (HTTP 400): The kernel "
                        "file cannot be opened: No such file (os error 2)");
    assert_nothing_left();
}

static void test_bad_config_refused_by_the_api(void **state)
{
    /* An odd vCPU count never reaches Firecracker. */
    struct run r = {.cmd = "true"};
    r.cfg.cpus = 3;
    r.cfg.no_jailer = true;
    run(&r);
    assert_true(r.start_r < 0);
    assert_non_null(strstr(r.start_err.msg, "even number"));
    assert_nothing_left();
}

static void test_dies_before_socket(void **state)
{
    setenv("FAKE_FC_DIE_BEFORE_SOCKET", "1", 1);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    run(&r);
    assert_non_null(strstr(r.ready_err.msg, "exited with status 1"));
    assert_non_null(strstr(r.ready_err.msg, "simulated crash before the API socket"));
    assert_nothing_left();
}

static void test_socket_never_appears(void **state)
{
    setenv("FAKE_FC_NO_SOCKET", "1", 1);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    run(&r);
    assert_int_equal(r.ready_err.code, ETIME);
    assert_non_null(strstr(r.ready_err.msg, "API socket"));
    assert_non_null(strstr(r.ready_err.msg, "did not appear within 5.0 s"));
    assert_nothing_left();
}

static void test_guest_never_listens(void **state)
{
    setenv("FAKE_FC_NO_GUEST", "1", 1);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    r.cfg.channel_timeout_ms = 1500;
    run(&r);
    assert_int_equal(r.ready_err.code, ETIMEDOUT);
    assert_non_null(strstr(r.ready_err.msg, "did not accept a vsock connection on port 1024"));
    assert_nothing_left();
}

static void test_teardown_in_flight(void **state)
{
    /* Killed while the first pool job or the socket wait is pending. */
    uint32_t after[] = {1, 30};
    for (size_t i = 0; i < 2; i++) {
        setenv("FAKE_FC_NO_SOCKET", "1", 1);
        struct run r = {.cmd = "true", .destroy_after_ms = after[i]};
        r.cfg.no_jailer = true;
        run(&r);
        assert_nothing_left();
    }
}

static const char FILTER[] =
    "{\"vmm\": {\"default_action\": \"trap\", \"filter_action\": \"allow\", \"filter\": [{\"syscall\": \"read\"}]},"
    " \"api\": {\"default_action\": \"trap\", \"filter_action\": \"allow\", \"filter\": []},"
    " \"vcpu\": {\"default_action\": \"trap\", \"filter_action\": \"allow\", \"filter\": []}}";

static void test_custom_filter(void **state)
{
    char f[256];
    snprintf(f, sizeof(f), "%s/filter.json", top);
    put_file(f, FILTER, 0644);
    struct run r = {.cmd = "echo filtered"};
    r.cfg.no_jailer = true;
    r.cfg.fc_filter = f;
    run(&r);
    assert_int_equal(r.ready_err.code, 0);
    assert_true(r.exited);
    assert_true(file_has(argv_file, "\n--seccomp-filter\n"));
    assert_true(file_has(argv_file, "/seccomp.bpf\n"));
    assert_true(file_has(sargv_file, "--target-arch\nx86_64\n--input-file\n"));
    assert_true(file_has(sargv_file, "/filter.json\n--output-file\n"));
    assert_nothing_left();

    /* The same with the jailer: the compiled filter goes into the jail. */
    if (geteuid() == 0) {
        setenv("IRONCLAW_JAILER", IC_TEST_FAKE_JAILER, 1);
        struct run j = {.cmd = "true"};
        j.cfg.fc_filter = f;
        run(&j);
        unsetenv("IRONCLAW_JAILER");
        assert_int_equal(j.ready_err.code, 0);
        assert_true(file_has(jargv_file, "\n--\n--api-sock\n/api.sock\n--seccomp-filter\n/seccomp.bpf\n"));
        assert_nothing_left();
    }
}

static void test_filter_refused(void **state)
{
    char f[256], bad[256];
    snprintf(f, sizeof(f), "%s/filter.json", top);
    snprintf(bad, sizeof(bad), "%s/bad.json", top);
    put_file(f, FILTER, 0644);
    put_file(bad, "{\"vmm\": [", 0644);

    /* seccompiler-bin of another release. */
    setenv("FAKE_SECCOMPILER_VERSION", "1.6.0", 1);
    struct run a = {.cmd = "true"};
    a.cfg.no_jailer = true;
    a.cfg.fc_filter = f;
    run(&a);
    unsetenv("FAKE_SECCOMPILER_VERSION");
    assert_non_null(strstr(a.ready_err.msg, "seccompiler-bin is version 1.6.0 but Firecracker is 1.7.0"));
    assert_nothing_left();

    /* No seccompiler-bin at all: refused before anything runs. */
    char none[256];
    snprintf(none, sizeof(none), "%s/no-such-seccompiler", top);
    setenv("IRONCLAW_SECCOMPILER", none, 1);
    struct run b = {.cmd = "true"};
    b.cfg.no_jailer = true;
    b.cfg.fc_filter = f;
    run(&b);
    setenv("IRONCLAW_SECCOMPILER", IC_TEST_FAKE_SECCOMPILER, 1);
    assert_int_equal(b.start_r, -ENOENT);
    assert_non_null(strstr(b.start_err.msg, "needs seccompiler-bin"));
    assert_nothing_left();

    /* A malformed filter. */
    struct run c = {.cmd = "true"};
    c.cfg.no_jailer = true;
    c.cfg.fc_filter = bad;
    run(&c);
    assert_non_null(strstr(c.ready_err.msg, "not valid JSON"));
    assert_nothing_left();

    /* seccompiler-bin fails. */
    setenv("FAKE_SECCOMPILER_FAIL", "Json Frontend error: unknown syscall", 1);
    struct run d = {.cmd = "true"};
    d.cfg.no_jailer = true;
    d.cfg.fc_filter = f;
    run(&d);
    unsetenv("FAKE_SECCOMPILER_FAIL");
    assert_non_null(strstr(d.ready_err.msg, "could not compile"));
    assert_non_null(strstr(d.ready_err.msg, "unknown syscall"));
    assert_nothing_left();
}

/* A guest that halts without the VMM ending: Ctrl+Alt+Del ends it, well
 * before the kill at the end of the grace period. */
static void test_stop_sends_ctrl_alt_del(void **state)
{
    setenv("FAKE_FC_STAY_AFTER_GUEST", "1", 1);
    setenv("FAKE_FC_REQUEST_LOG", argv_file, 1);
    unlink(argv_file);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    uint64_t t0 = uv_hrtime();
    run(&r);
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    unsetenv("FAKE_FC_STAY_AFTER_GUEST");
    unsetenv("FAKE_FC_REQUEST_LOG");
    assert_true(r.exited);
    assert_true(file_has(argv_file, "PUT /actions {\"action_type\":\"SendCtrlAltDel\"}"));
    assert_true(ms < 4500);
    assert_nothing_left();
}

static void test_drive(void **state)
{
    char img[256];
    snprintf(img, sizeof(img), "%s/disk.img", top);
    put_file(img, "disk bytes", 0600);
    setenv("FAKE_FC_REQUEST_LOG", argv_file, 1);
    unlink(argv_file);
    struct run r = {.cmd = "true"};
    r.cfg.no_jailer = true;
    r.cfg.drive = img;
    r.cfg.drive_copy = true;
    run(&r);
    unsetenv("FAKE_FC_REQUEST_LOG");
    assert_int_equal(r.ready_err.code, 0);
    /* The per-VM copy, writable; the original untouched. */
    assert_true(file_has(argv_file, "PUT /drives/drive0 {\"drive_id\":\"drive0\""));
    assert_true(file_has(argv_file, "/drive0.img\",\"is_root_device\":false,\"is_read_only\":false}"));
    assert_true(file_has(img, "disk bytes"));
    assert_nothing_left();
}

int main(int argc, char **argv)
{
    /* The VMM is launched through this very program (vm.h). */
    ic_vm_launch_main(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    /* The warnings this host earns (no KVM, --no-jailer) are expected. */
    ic_log_set_level(IC_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_happy_unjailed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_happy_jailed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config_refused_by_the_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dies_before_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_never_appears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_never_listens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teardown_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_custom_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_sends_ctrl_alt_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drive, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
