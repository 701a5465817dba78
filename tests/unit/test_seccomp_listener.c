/*
 * test_seccomp_listener.c - the seccomp notification listener
 * (src/seccomp/listener.c) against real filtered processes: a child
 * installs a filter built from a policy with a notification listener,
 * hands the listener over as the launch trampoline does (SCM_RIGHTS on
 * the hand-off socket, the one sendmsg the filter always lets through),
 * and then makes forbidden system calls; the parent serves the listener
 * on a libuv loop and checks what the audit recorded and what the child
 * got back: errno, continue, death on a kill rule, the violation limit,
 * and a flood that keeps the audit bounded and exact.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "ironclaw/audit.h"
#include "ironclaw/seccomp.h"
#include "vm/control.h"

#define FLOOD 200000

struct run {
    uv_loop_t loop;
    uv_timer_t reaper;
    pid_t child;
    int status;
    bool done;
    ic_sc_listener *listener;
    ic_audit *audit;
    int limits_fired;
    int last_nr;
    size_t mem0;           /* the audit's memory when it was made */
};

static int nr(const char *name)
{
    int n = ic_seccomp_syscall_nr(name);
    assert_true(n >= 0);
    return n;
}

/* ---- the child ------------------------------------------------------------ */

enum workload { WORK_MIXED, WORK_FLOOD, WORK_LIMIT };

static int __attribute__((noreturn)) child_main(int sock, struct sock_filter *insns, size_t n,
                                                enum workload w)
{
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = insns};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        _exit(100);
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
    if (fd < 0)
        _exit(100);
    if (ic_control_send(sock, IC_CONTROL_NOTIFY, 0, (int)fd) < 0)
        _exit(101);
    if (w == WORK_FLOOD) {
        for (int i = 0; i < FLOOD; i++)
            if (syscall(SYS_getppid) != -1 || errno != EACCES)
                _exit(102);
        _exit(0);
    }
    if (w == WORK_LIMIT) {
        for (int i = 0; i < 1000; i++)
            syscall(SYS_getppid);
        _exit(0);   /* only reached if nobody stopped us */
    }
    /* errno: the policy's own code comes back */
    if (syscall(SYS_getppid) != -1 || errno != EACCES)
        _exit(103);
    /* log: the call runs */
    struct utsname u;
    if (syscall(SYS_uname, &u) != 0)
        _exit(104);
    /* kill: we never come back */
    syscall(SYS_sethostname, "x", 1);
    _exit(105);
}

/* ---- the parent ------------------------------------------------------------ */

static void on_reap(uv_timer_t *t)
{
    struct run *r = t->data;
    if (waitpid(r->child, &r->status, WNOHANG) != r->child)
        return;
    r->done = true;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    ic_sc_listener_close(r->listener, NULL, NULL);
}

static void on_limit(void *ud, const struct ic_audit_entry *last)
{
    struct run *r = ud;
    r->limits_fired++;
    r->last_nr = last->nr;
}

static int recv_fd(int sock)
{
    struct ic_control_msg m;
    if (ic_control_recv(sock, 0, &m) != IC_CONTROL_MSG_SIZE)
        return -1;
    return m.fd;
}

static void run_policy(struct run *r, const char *policy, size_t ring, uint64_t max_violations,
                       enum workload w)
{
    memset(r, 0, sizeof(*r));
    ic_err err = {0};
    ic_seccomp_policy *p = NULL;
    assert_int_equal(ic_seccomp_policy_parse(policy, strlen(policy), "t.json", &p, &err), 0);
    assert_int_equal(ic_audit_new(ring, &r->audit, &err), 0);
    r->mem0 = ic_audit_memory(r->audit);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    struct ic_sc_compile_opts o = {IC_SC_NOTIFY, sv[1]};
    int bpf = -1;
    size_t n = 0;
    assert_int_equal(ic_seccomp_compile_memfd(p, &o, &bpf, &n, &err), 0);
    struct sock_filter *insns = calloc(n, sizeof(*insns));
    assert_int_equal(pread(bpf, insns, n * sizeof(*insns), 0), (ssize_t)(n * sizeof(*insns)));
    close(bpf);

    r->child = fork();
    assert_true(r->child >= 0);
    if (r->child == 0) {
        close(sv[0]);
        child_main(sv[1], insns, n, w);
    }
    free(insns);
    close(sv[1]);
    int fd = recv_fd(sv[0]);
    close(sv[0]);
    assert_true(fd >= 0);

    assert_int_equal(uv_loop_init(&r->loop), 0);
    struct ic_sc_listener_opts lo = {p, r->audit, max_violations, on_limit, NULL, r};
    assert_int_equal(ic_sc_listener_start(&r->loop, fd, &lo, &r->listener, &err), 0);
    uv_timer_init(&r->loop, &r->reaper);
    r->reaper.data = r;
    uv_timer_start(&r->reaper, on_reap, 5, 5);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    assert_true(r->done);
    assert_int_equal(uv_loop_close(&r->loop), 0);
    ic_seccomp_policy_free(p);
}

static const char *const mixed_policy =
    "{\"default_action\": \"allow\", \"rules\": ["
    " {\"syscall\": \"getppid\", \"action\": \"errno(EACCES)\"},"
    " {\"syscall\": \"uname\", \"action\": \"log\"},"
    " {\"syscall\": \"sethostname\", \"action\": \"kill\"}]}";

static void test_errno_log_and_kill(void **state)
{
    struct run r;
    run_policy(&r, mixed_policy, 100, 0, WORK_MIXED);
    /* Stopped on the forbidden call, by SIGKILL, and the audit names it. */
    assert_true(WIFSIGNALED(r.status));
    assert_int_equal(WTERMSIG(r.status), SIGKILL);
    assert_int_equal(ic_audit_total(r.audit), 3);
    assert_int_equal(ic_audit_violations(r.audit), 2);
    assert_int_equal(ic_audit_count(r.audit, nr("getppid"), IC_SC_ERRNO), 1);
    assert_int_equal(ic_audit_count(r.audit, nr("uname"), IC_SC_LOG), 1);
    assert_int_equal(ic_audit_count(r.audit, nr("sethostname"), IC_SC_KILL), 1);
    struct ic_audit_entry e;
    assert_int_equal(ic_audit_entry(r.audit, 2, &e), 0);
    assert_int_equal(e.nr, nr("sethostname"));
    assert_int_equal(e.action.kind, IC_SC_KILL);
    assert_int_equal(e.pid, r.child);
    assert_int_equal(ic_audit_entry(r.audit, 0, &e), 0);
    assert_int_equal(e.action.err, EACCES);
    assert_non_null(strstr(ic_audit_stop_reason(r.audit), "sethostname"));
    assert_int_equal(r.limits_fired, 0);
    ic_audit_free(r.audit);
}

static void test_violation_limit(void **state)
{
    struct run r;
    const char *policy = "{\"default_action\": \"allow\", \"rules\": ["
                         " {\"syscall\": \"getppid\", \"action\": \"errno(EACCES)\"}]}";
    run_policy(&r, policy, 100, 5, WORK_LIMIT);
    /* The limit fired once, at the fifth violation (the owner of a VM
     * kills it there); counting went on for the other calls. */
    assert_int_equal(r.limits_fired, 1);
    assert_int_equal(r.last_nr, nr("getppid"));
    assert_true(WIFEXITED(r.status));
    assert_int_equal(ic_audit_violations(r.audit), 1000);
    assert_int_equal(ic_audit_len(r.audit), 100);
    ic_audit_free(r.audit);
}

/* A flood of violations through the real listener: every one answered,
 * every one counted, the ring no bigger than it was made. */
static void test_flood_is_bounded_and_exact(void **state)
{
    struct run r;
    const char *policy = "{\"default_action\": \"allow\", \"rules\": ["
                         " {\"syscall\": \"getppid\", \"action\": \"errno(EACCES)\"}]}";
    uint64_t t0 = uv_hrtime();
    run_policy(&r, policy, 1000, 0, WORK_FLOOD);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    print_message("flood: %d notifications in %.2f s (%.1f us each)\n", FLOOD, secs,
                  secs * 1e6 / FLOOD);
    assert_true(WIFEXITED(r.status));
    assert_int_equal(WEXITSTATUS(r.status), 0);   /* every call got EACCES */
    assert_int_equal(ic_audit_total(r.audit), FLOOD);
    assert_int_equal(ic_audit_count(r.audit, nr("getppid"), IC_SC_ERRNO), FLOOD);
    assert_int_equal(ic_audit_len(r.audit), 1000);
    assert_int_equal(ic_audit_memory(r.audit), r.mem0);
    ic_audit_free(r.audit);
}

int main(void)
{
    if (geteuid() != 0 && prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) < 0) {
        printf("SKIP: seccomp is not available\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errno_log_and_kill),
        cmocka_unit_test(test_violation_limit),
        cmocka_unit_test(test_flood_is_bounded_and_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
