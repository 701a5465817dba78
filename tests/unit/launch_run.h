/*
 * launch_run.h - the launch trampoline (src/vm/launch.c) run for real, for
 * the unit tests of its steps (test_launch.c) and of its jail (test_jail.c):
 * the ironclaw binary re-executed with the launch marker, as vm.c does,
 * with what it reports on its status pipe and the program's stdout kept.
 * Included after cmocka.h by a test file, once.
 */
#ifndef IC_TEST_LAUNCH_RUN_H
#define IC_TEST_LAUNCH_RUN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct launched {
    int status;           /* wait status */
    char msg[512];        /* what came through the status pipe */
    char out[4096];       /* the exec'd program's stdout */
};

/* Reads fd to its end into buf (NUL-terminated, the rest dropped). */
static void launch_read_all(int fd, char *buf, size_t size)
{
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(fd);
}

/* Runs `ironclaw __ironclaw_launch --status-fd 3 --parent <us> EXTRA... --
 * PROG...`, with IRONCLAW_TEST_FAIL_JAIL_STEP=fail_step unless it is NULL,
 * and waits for it. */
static void launch_run(const char *const *extra, const char *const *prog, const char *fail_step,
                       struct launched *res)
{
    int status[2], out[2];
    assert_int_equal(pipe(status), 0);
    assert_int_equal(pipe(out), 0);
    char parent[24];
    snprintf(parent, sizeof(parent), "%d", (int)getpid());
    const char *argv[64];
    const char *head[] = {IC_TEST_IRONCLAW, "__ironclaw_launch", "--status-fd", "3", "--parent",
                          parent};
    size_t n = 0;
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
        argv[n++] = head[i];
    for (size_t i = 0; extra[i]; i++) {
        assert_true(n < 62);
        argv[n++] = extra[i];
    }
    argv[n++] = "--";
    for (size_t i = 0; prog[i]; i++) {
        assert_true(n < 63);
        argv[n++] = prog[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(status[1], 3);
        if (fail_step)
            setenv("IRONCLAW_TEST_FAIL_JAIL_STEP", fail_step, 1);
        execv(argv[0], (char *const *)argv);
        _exit(126);
    }
    close(status[1]);
    close(out[1]);
    memset(res, 0, sizeof(*res));
    launch_read_all(status[0], res->msg, sizeof(res->msg));
    launch_read_all(out[0], res->out, sizeof(res->out));
    assert_int_equal(waitpid(pid, &res->status, 0), pid);
}

#endif
