/*
 * test_state.c - VM ids, names and state records: what gc relies on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/state.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char runtime[64];

static int make_runtime(void **state)
{
    snprintf(runtime, sizeof(runtime), "/tmp/ic-state-XXXXXX");
    assert_non_null(mkdtemp(runtime));
    return 0;
}

static pid_t sleeper;

static int remove_runtime(void **state)
{
    if (sleeper > 0)
        kill(sleeper, SIGKILL); /* in case the test failed before reaping */
    sleeper = 0;
    ic_rm_rf(runtime, NULL);
    return 0;
}

static void test_ids(void **state)
{
    char a[IC_ID_SIZE], b[IC_ID_SIZE];
    ic_err err = {0};
    assert_int_equal(ic_id_new(a, &err), 0);
    assert_int_equal(ic_id_new(b, &err), 0);
    assert_int_equal(strlen(a), IC_ID_LEN);
    assert_true(ic_id_valid(a));
    assert_string_not_equal(a, b);
    assert_false(ic_id_valid("../../etc"));
    assert_false(ic_id_valid("ABCDEF0123456789abcdef0123456789"));
    assert_false(ic_id_valid("0123456789abcdef0123456789abcde"));
}

static void test_names(void **state)
{
    ic_err err = {0};
    assert_int_equal(ic_name_validate("vm-1", &err), 0);
    assert_int_equal(ic_name_validate("a.b_c", &err), 0);
    const char *bad[] = {"", "../x", "a/b", ".hidden", "-rf", "sp ace", "é", "x\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ic_err_clear(&err);
        assert_int_equal(ic_name_validate(bad[i], &err), -EINVAL);
        assert_true(err.msg[0] != '\0');
    }
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[299] = '\0';
    assert_int_equal(ic_name_validate(longname, &err), -EINVAL);
    longname[IC_NAME_MAX] = '\0';
    assert_int_equal(ic_name_validate(longname, &err), 0);
}

struct seen {
    int count;
    int alive;
    char dir[512];
};

static int count_visit(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct seen *s = ud;
    s->count++;
    if (st && ic_state_owner_alive(st))
        s->alive++;
    snprintf(s->dir, sizeof(s->dir), "%s", dir);
    return 0;
}

/* A child creates a VM record with a socket file and a process, then dies
 * without cleaning up (as kill -9 would leave it): reaping removes all. */
static void test_dead_owner_is_reaped(void **state)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t owner = fork();
    assert_true(owner >= 0);
    if (owner == 0) {
        ic_err err = {0};
        char id[IC_ID_SIZE], path[512];
        ic_state *st;
        if (ic_id_new(id, &err) < 0 ||
            ic_state_create(runtime, id, "victim", "qemu", &st, &err) < 0)
            _exit(1);
        snprintf(path, sizeof(path), "%s/channel.sock", ic_state_dir(st));
        ic_state_add(st, IC_RES_SOCKET, "channel", path, &err);
        close(open(path, O_CREAT | O_WRONLY, 0600));
        ic_state_add(st, IC_RES_PROCESS, "vmm", NULL, &err);
        /* Until the sleeper has exec'd it shares our lock's descriptor:
         * wait for its exec (the close-on-exec pipe reads EOF) so that the
         * lock really dies with us. */
        int execd[2];
        if (pipe2(execd, O_CLOEXEC) < 0)
            _exit(1);
        pid_t vmm = fork();
        if (vmm == 0) {
            setsid();
            int null = open("/dev/null", O_RDWR);
            dup2(null, 1), dup2(null, 2); /* ctest waits for its output pipe */
            close(pipefd[1]);
            execl("/bin/sleep", "sleep", "300", (char *)NULL);
            _exit(127);
        }
        close(execd[1]);
        char c;
        if (read(execd[0], &c, 1) != 0)
            _exit(1);
        ic_state_set_pid(st, "vmm", vmm, &err);
        if (write(pipefd[1], &vmm, sizeof(vmm)) != sizeof(vmm))
            _exit(1);
        _exit(0); /* no cleanup: the lock dies with us */
    }
    close(pipefd[1]);
    pid_t vmm = 0;
    assert_int_equal(read(pipefd[0], &vmm, sizeof(vmm)), sizeof(vmm));
    close(pipefd[0]);
    int status;
    waitpid(owner, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(kill(vmm, 0), 0);
    sleeper = vmm;

    struct seen s = {0};
    ic_err err = {0};
    assert_int_equal(ic_state_each(runtime, count_visit, &s, &err), 0);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.alive, 0);

    ic_state *st = NULL;
    assert_int_equal(ic_state_load(s.dir, &st, &err), 0);
    assert_string_equal(ic_state_name(st), "victim");
    assert_int_equal(ic_state_live_pid(st, "vmm"), vmm);
    assert_int_equal(ic_state_reap(st, &err), 0);
    ic_state_free(st);
    /* The sleeper is our grandchild reparented to init (or to us if we are
     * a subreaper); either way it must be dead or a zombie now. */
    waitpid(vmm, NULL, WNOHANG);
    char stat_path[64], buf[256] = "";
    snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)vmm);
    FILE *f = fopen(stat_path, "r");
    if (f) {
        if (!fgets(buf, sizeof(buf), f))
            buf[0] = '\0';
        fclose(f);
        char *p = strrchr(buf, ')');
        assert_true(p && (p[2] == 'Z' || p[2] == 'X'));
    }
    assert_false(ic_path_exists(s.dir));

    memset(&s, 0, sizeof(s));
    assert_int_equal(ic_state_each(runtime, count_visit, &s, &err), 0);
    assert_int_equal(s.count, 0);
}

static void test_live_owner_is_seen(void **state)
{
    ic_err err = {0};
    char id[IC_ID_SIZE];
    ic_state *st;
    assert_int_equal(ic_id_new(id, &err), 0);
    assert_int_equal(ic_state_create(runtime, id, "", "qemu", &st, &err), 0);
    assert_int_equal(ic_state_set_phase(st, "running", &err), 0);

    /* Another process looking at it sees a living owner. */
    pid_t child = fork();
    if (child == 0) {
        struct seen s = {0};
        ic_err e = {0};
        if (ic_state_each(runtime, count_visit, &s, &e) < 0)
            _exit(2);
        _exit(s.count == 1 && s.alive == 1 ? 0 : 1);
    }
    int status;
    waitpid(child, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    ic_state *seen = NULL;
    assert_int_equal(ic_state_load(ic_state_dir(st), &seen, &err), 0);
    assert_string_equal(ic_state_phase(seen), "running");
    assert_string_equal(ic_state_id(seen), id);
    ic_state_free(seen);
    assert_int_equal(ic_state_reap(st, &err), 0);
    ic_state_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_dead_owner_is_reaped, make_runtime, remove_runtime),
        cmocka_unit_test_setup_teardown(test_live_owner_is_seen, make_runtime, remove_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
