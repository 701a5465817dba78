/*
 * test_seccomp.c - seccomp policies (src/seccomp/policy.c, levels.c,
 * compile.c): the JSON format and its error messages, evaluation, the
 * round trip through JSON, the named levels, BPF and Firecracker export,
 * and filters built from policies running for real in a child process.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "ironclaw/seccomp.h"

static ic_seccomp_policy *parse_ok(const char *text)
{
    ic_seccomp_policy *p = NULL;
    ic_err err = {0};
    int r = ic_seccomp_policy_parse(text, strlen(text), "t.json", &p, &err);
    if (r < 0)
        fail_msg("unexpected error: %s", err.msg);
    return p;
}

/* The policy must be refused with a message containing every `want`. */
static void parse_bad(const char *text, const char *want1, const char *want2)
{
    ic_seccomp_policy *p = NULL;
    ic_err err = {0};
    int r = ic_seccomp_policy_parse(text, strlen(text), "t.json", &p, &err);
    if (r == 0) {
        ic_seccomp_policy_free(p);
        fail_msg("accepted: %s", text);
    }
    assert_int_equal(r, -EINVAL);
    assert_null(p);
    if (!strstr(err.msg, want1) || (want2 && !strstr(err.msg, want2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.msg, want1, want2 ? want2 : "");
}

static int nr(const char *name)
{
    int n = ic_seccomp_syscall_nr(name);
    assert_true(n >= 0);
    return n;
}

static const uint64_t no_args[6] = {0};

static void test_full_policy_and_eval(void **state)
{
    ic_seccomp_policy *p = parse_ok(
        "{\"name\": \"t\", \"description\": \"d\", \"default_action\": \"errno(EACCES)\",\n"
        " \"rules\": [\n"
        "  {\"syscalls\": [\"read\", \"write\"], \"action\": \"allow\", \"comment\": \"io\"},\n"
        "  {\"syscall\": \"ioctl\", \"action\": \"allow\",\n"
        "   \"args\": [{\"index\": 1, \"op\": \"eq\", \"value\": \"0x5401\"}]},\n"
        "  {\"syscall\": \"mmap\", \"action\": \"allow\",\n"
        "   \"args\": [{\"index\": 2, \"op\": \"masked_eq\", \"mask\": 4, \"value\": 0}]},\n"
        "  {\"syscall\": \"mount\", \"action\": \"kill\"},\n"
        "  {\"syscall\": \"getpid\", \"action\": \"log\"},\n"
        "  {\"syscall\": \"uname\", \"action\": \"trap\"},\n"
        "  {\"syscall\": \"kill\", \"action\": \"errno(38)\",\n"
        "   \"args\": [{\"index\": 1, \"op\": \"ge\", \"value\": 9}, {\"index\": 0, \"op\": \"ne\", \"value\": 1}]}\n"
        " ]}");
    assert_string_equal(ic_seccomp_policy_name(p), "t");
    assert_int_equal(ic_seccomp_policy_rule_count(p), 8);
    struct ic_sc_action a = ic_seccomp_policy_eval(p, nr("read"), no_args);
    assert_int_equal(a.kind, IC_SC_ALLOW);
    uint64_t tty[6] = {3, 0x5401};
    assert_int_equal(ic_seccomp_policy_eval(p, nr("ioctl"), tty).kind, IC_SC_ALLOW);
    uint64_t other[6] = {3, 0x5402};
    a = ic_seccomp_policy_eval(p, nr("ioctl"), other);
    assert_int_equal(a.kind, IC_SC_ERRNO);
    assert_int_equal(a.err, EACCES);
    uint64_t rw[6] = {0, 0, 3}, rwx[6] = {0, 0, 7};
    assert_int_equal(ic_seccomp_policy_eval(p, nr("mmap"), rw).kind, IC_SC_ALLOW);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("mmap"), rwx).kind, IC_SC_ERRNO);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("mount"), no_args).kind, IC_SC_KILL);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("getpid"), no_args).kind, IC_SC_LOG);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("uname"), no_args).kind, IC_SC_TRAP);
    uint64_t k9[6] = {2, 9}, k9self[6] = {1, 9}, k1[6] = {2, 1};
    a = ic_seccomp_policy_eval(p, nr("kill"), k9);
    assert_int_equal(a.kind, IC_SC_ERRNO);
    assert_int_equal(a.err, 38);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("kill"), k9self).err, EACCES);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("kill"), k1).err, EACCES);
    assert_false(ic_seccomp_policy_denies_nothing(p));

    /* Its JSON rendering parses back to a policy that decides the same. */
    json_t *doc = ic_seccomp_policy_to_json(p);
    char *text = json_dumps(doc, 0);
    json_decref(doc);
    ic_seccomp_policy *q = parse_ok(text);
    free(text);
    assert_int_equal(ic_seccomp_policy_rule_count(q), 8);
    const char *names[] = {"read", "write", "ioctl", "mmap", "mount", "getpid", "uname", "kill", "open"};
    uint64_t argsets[4][6] = {{0}, {3, 0x5401}, {0, 0, 7}, {2, 9}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        for (size_t k = 0; k < 4; k++) {
            struct ic_sc_action x = ic_seccomp_policy_eval(p, nr(names[i]), argsets[k]);
            struct ic_sc_action y = ic_seccomp_policy_eval(q, nr(names[i]), argsets[k]);
            assert_int_equal(x.kind, y.kind);
            assert_int_equal(x.err, y.err);
        }
    ic_seccomp_policy_free(q);
    ic_seccomp_policy_free(p);
}

static void test_malformed_policies(void **state)
{
    /* bad JSON: file, line and column */
    parse_bad("{\"default_action\": \"allow\",\n \"rules\": [\n}", "t.json:3:", "not valid JSON");
    parse_bad("[]", "must be a JSON object", NULL);
    parse_bad("{\"rules\": []}", "no \"default_action\"", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": {}}", "\"rules\" must be an array", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [], \"rulez\": 1}", "unknown member \"rulez\"", NULL);
    /* unknown system call, with the line it is on */
    parse_bad("{\"default_action\": \"allow\",\n \"rules\": [\n  {\"syscall\": \"mout\", \"action\": \"kill\"}]}",
              "t.json:3: rules[0].syscall: unknown system call 'mout'", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscalls\": [\"read\", \"nosuchcall\"], \"action\": \"kill\"}]}",
              "rules[0].syscalls[1]", "'nosuchcall'");
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"syscalls\": [\"write\"], \"action\": \"kill\"}]}",
              "exactly one of", NULL);
    /* bad actions */
    parse_bad("{\"default_action\": \"alow\", \"rules\": []}", "unknown action \"alow\"", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"errno(0)\"}]}",
              "rules[0].action", "1 to 4095");
    parse_bad("{\"default_action\": \"errno(99999)\", \"rules\": []}", "1 to 4095", NULL);
    parse_bad("{\"default_action\": \"errno(EFOO)\", \"rules\": []}", "1 to 4095", NULL);
    parse_bad("{\"default_action\": 1, \"rules\": []}", "must be a string", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\"}]}", "no \"action\"", NULL);
    /* bad argument conditions */
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"like\", \"value\": 1}]}]}",
              "rules[0].args[0].op", "unknown comparison \"like\"");
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 6, \"op\": \"eq\", \"value\": 1}]}]}", "0 to 5", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\"}]}]}", "no \"value\"", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"masked_eq\", \"value\": 1}]}]}", "needs a \"mask\"", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 1, \"mask\": 1}]}]}", "only goes with", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 1}, {\"index\": 0, \"op\": \"ne\", \"value\": 2}]}]}",
              "argument 0 is already compared", NULL);
    /* huge, negative and non-integer values */
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": \"0x1ffffffffffffffff\"}]}]}",
              "larger than 64 bits", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 99999999999999999999999}]}]}",
              "not valid JSON", "too big");
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": -1}]}]}", "must not be negative", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 1.5}]}]}", "integer or a string", NULL);
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\","
              " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": \"12abc\"}]}]}", "is not a number", NULL);
    /* one action per system call */
    parse_bad("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\", \"action\": \"kill\"},"
              " {\"syscall\": \"read\", \"action\": \"log\"}]}", "'read' has rules with different actions", NULL);

    ic_seccomp_policy *p = parse_ok("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"read\","
                                    " \"action\": \"kill\", \"args\": [{\"index\": 0, \"op\": \"eq\","
                                    " \"value\": \"18446744073709551615\"}]}]}");
    uint64_t max[6] = {UINT64_MAX};
    assert_int_equal(ic_seccomp_policy_eval(p, nr("read"), max).kind, IC_SC_KILL);
    ic_seccomp_policy_free(p);
}

static void test_load_levels_and_files(void **state)
{
    for (const char *const *l = ic_seccomp_levels; *l; l++) {
        ic_seccomp_policy *p = NULL;
        ic_err err = {0};
        assert_int_equal(ic_seccomp_policy_load(*l, &p, &err), 0);
        assert_string_equal(ic_seccomp_policy_name(p), *l);
        /* Every level lets the VMM be exec'd and run threads. */
        assert_int_equal(ic_seccomp_policy_eval(p, nr("execve"), no_args).kind,
                         strcmp(*l, "learn") == 0 ? IC_SC_LOG : IC_SC_ALLOW);
        assert_true(ic_seccomp_policy_rule_count(p) > 0 || strcmp(*l, "learn") == 0);
        ic_seccomp_policy_free(p);
    }
    ic_seccomp_policy *p = NULL;
    ic_err err = {0};
    assert_int_equal(ic_seccomp_policy_load(NULL, &p, &err), 0);
    assert_string_equal(ic_seccomp_policy_name(p), "default");
    /* The levels were built from lists of names: none may be unknown. */
    assert_true(ic_seccomp_policy_rule_count(p) >= 150);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("mount"), no_args).kind, IC_SC_KILL);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("init_module"), no_args).kind, IC_SC_KILL);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("ptrace"), no_args).kind, IC_SC_KILL);
    struct ic_sc_action a = ic_seccomp_policy_eval(p, nr("chown"), no_args);
    assert_int_equal(a.kind, IC_SC_ERRNO);
    assert_int_equal(a.err, EPERM);
    ic_seccomp_policy_free(p);

    assert_int_equal(ic_seccomp_policy_load("strict", &p, &err), 0);
    uint64_t thread[6] = {0x3d0f00}, forkish[6] = {0x11 /* SIGCHLD */};
    assert_int_equal(ic_seccomp_policy_eval(p, nr("clone"), thread).kind, IC_SC_ALLOW);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("clone"), forkish).kind, IC_SC_KILL);
    uint64_t unix_sock[6] = {1}, inet[6] = {2};
    assert_int_equal(ic_seccomp_policy_eval(p, nr("socket"), unix_sock).kind, IC_SC_ALLOW);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("socket"), inet).kind, IC_SC_KILL);
    assert_int_equal(ic_seccomp_policy_eval(p, nr("ioctl"), no_args).kind, IC_SC_KILL);
    ic_seccomp_policy_free(p);

    assert_int_equal(ic_seccomp_policy_load("strictest", &p, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no seccomp level 'strictest'"));
    assert_int_equal(ic_seccomp_policy_load("/no/such/policy.json", &p, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/no/such/policy.json"));

    char path[] = "/tmp/ic-test-policy-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"default_action\": \"allow\",\n\n \"rules\": [{\"syscall\": \"mout\", \"action\": \"kill\"}]}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(ic_seccomp_policy_load(path, &p, &err), -EINVAL);
    char want[80];
    snprintf(want, sizeof(want), "%s:3: rules[0].syscall", path);
    assert_non_null(strstr(err.msg, want));
    unlink(path);
}

static void test_names_and_actions(void **state)
{
    char buf[64];
    assert_string_equal(ic_seccomp_syscall_name(nr("openat"), buf, sizeof(buf)), "openat");
    assert_string_equal(ic_seccomp_syscall_name(9999, buf, sizeof(buf)), "syscall_9999");
    assert_int_equal(ic_seccomp_syscall_nr("socketcall"), -1);   /* not on x86-64 */
    struct ic_sc_action a;
    assert_int_equal(ic_seccomp_action_parse("errno(ENOSYS)", &a), 0);
    assert_int_equal(a.err, ENOSYS);
    assert_string_equal(ic_seccomp_action_str(a, buf, sizeof(buf)), "errno(ENOSYS)");
    assert_int_equal(ic_seccomp_action_parse("errno(4000)", &a), 0);
    assert_string_equal(ic_seccomp_action_str(a, buf, sizeof(buf)), "errno(4000)");
    assert_int_equal(ic_seccomp_action_parse("errno()", &a), -EINVAL);
    assert_int_equal(ic_seccomp_action_parse("kill", &a), 0);
    assert_int_equal(a.kind, IC_SC_KILL);
}

static size_t export_size(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o, ic_err *err)
{
    int fd = -1;
    size_t n = 0;
    int r = ic_seccomp_compile_memfd(p, o, &fd, &n, err);
    if (r < 0)
        return 0;
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((size_t)st.st_size, n * sizeof(struct sock_filter));
    /* Sealed: nobody changes the program after it was built. */
    assert_true(write(fd, "x", 1) < 0);
    close(fd);
    return n;
}

static void test_compile_and_handoff(void **state)
{
    ic_err err = {0};
    ic_seccomp_policy *p = NULL;
    assert_int_equal(ic_seccomp_policy_load("default", &p, &err), 0);
    struct ic_sc_compile_opts plain = {0, -1};
    struct ic_sc_compile_opts vmm = {IC_SC_NOTIFY, IC_SC_HANDOFF_FD};
    assert_true(export_size(p, &plain, &err) > 10);
    assert_true(export_size(p, &vmm, &err) > 10);
    struct ic_sc_compile_opts bad = {0, 7};
    assert_int_equal(export_size(p, &bad, &err), 0);
    assert_non_null(strstr(err.msg, "hand-off"));
    ic_seccomp_policy_free(p);

    /* A policy that forbids sendmsg still lets the hand-off through. */
    const char *deny[] = {
        "{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"sendmsg\", \"action\": \"errno(1)\"}]}",
        "{\"default_action\": \"kill\", \"rules\": [{\"syscall\": \"read\", \"action\": \"allow\"}]}",
        "{\"default_action\": \"kill\", \"rules\": [{\"syscall\": \"sendmsg\", \"action\": \"allow\","
        " \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 3}]}]}",
        "{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"sendmsg\", \"action\": \"kill\","
        " \"args\": [{\"index\": 2, \"op\": \"eq\", \"value\": 0}]}]}",
    };
    for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++) {
        p = parse_ok(deny[i]);
        if (export_size(p, &vmm, &err) == 0)
            fail_msg("policy %zu: %s", i, err.msg);
        ic_seccomp_policy_free(p);
    }
    /* ... unless its own sendmsg rule covers the hand-off descriptor. */
    p = parse_ok("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"sendmsg\", \"action\": \"kill\","
                 " \"args\": [{\"index\": 0, \"op\": \"gt\", \"value\": 2}]}]}");
    assert_int_equal(export_size(p, &vmm, &err), 0);
    assert_non_null(strstr(err.msg, "hand-off descriptor"));
    ic_seccomp_policy_free(p);
}

static void test_firecracker_export(void **state)
{
    ic_err err = {0};
    ic_seccomp_policy *p = parse_ok(
        "{\"default_action\": \"trap\", \"rules\": [{\"syscalls\": [\"read\", \"write\"], \"action\": \"allow\"},"
        " {\"syscall\": \"ioctl\", \"action\": \"allow\", \"args\": [{\"index\": 1, \"op\": \"masked_eq\","
        " \"mask\": 255, \"value\": 1}]}, {\"syscall\": \"mount\", \"action\": \"trap\"}]}");
    json_t *doc = NULL;
    assert_int_equal(ic_seccomp_policy_to_firecracker(p, &doc, &err), 0);
    const char *threads[] = {"vmm", "api", "vcpu"};
    for (int i = 0; i < 3; i++) {
        json_t *f = json_object_get(doc, threads[i]);
        assert_non_null(f);
        assert_string_equal(json_string_value(json_object_get(f, "default_action")), "trap");
        assert_string_equal(json_string_value(json_object_get(f, "filter_action")), "allow");
        json_t *rules = json_object_get(f, "filter");
        assert_int_equal(json_array_size(rules), 3);   /* read, write, ioctl; mount is the default */
        json_t *io = json_array_get(rules, 2);
        assert_string_equal(json_string_value(json_object_get(io, "syscall")), "ioctl");
        json_t *c = json_array_get(json_object_get(io, "args"), 0);
        assert_int_equal(json_integer_value(json_object_get(c, "index")), 1);
        assert_string_equal(json_string_value(json_object_get(c, "type")), "qword");
        assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "op"), "masked_eq")), 255);
        assert_int_equal(json_integer_value(json_object_get(c, "val")), 1);
    }
    json_decref(doc);
    ic_seccomp_policy_free(p);

    assert_int_equal(ic_seccomp_policy_load("default", &p, &err), 0);
    assert_int_equal(ic_seccomp_policy_to_firecracker(p, &doc, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "one match action"));
    ic_seccomp_policy_free(p);
    assert_int_equal(ic_seccomp_policy_load("strict", &p, &err), 0);
    assert_int_equal(ic_seccomp_policy_to_firecracker(p, &doc, &err), 0);
    json_decref(doc);
    ic_seccomp_policy_free(p);
}

/* Runs fn in a child confined by the policy's kernel filter (no
 * notifications); returns the wait status. */
static int run_confined(const char *policy, int (*fn)(void))
{
    ic_seccomp_policy *p = parse_ok(policy);
    struct ic_sc_compile_opts o = {0, -1};
    int fd = -1;
    size_t n = 0;
    ic_err err = {0};
    assert_int_equal(ic_seccomp_compile_memfd(p, &o, &fd, &n, &err), 0);
    ic_seccomp_policy_free(p);
    struct sock_filter *insns = calloc(n, sizeof(*insns));
    assert_int_equal(pread(fd, insns, n * sizeof(*insns), 0), (ssize_t)(n * sizeof(*insns)));
    close(fd);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_fprog prog = {.len = (unsigned short)n, .filter = insns};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
            _exit(100);
        _exit(fn());
    }
    free(insns);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static int call_getppid(void)
{
    errno = 0;
    long r = syscall(SYS_getppid);
    return r == -1 ? errno : 0;
}

static int call_uname_raw(void)
{
    syscall(SYS_uname, NULL);
    return 0;
}

static void test_filters_run_for_real(void **state)
{
    int st = run_confined("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"getppid\","
                          " \"action\": \"errno(ENOTTY)\"}]}", call_getppid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), ENOTTY);
    st = run_confined("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"uname\","
                      " \"action\": \"kill\"}]}", call_uname_raw);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGSYS);
    st = run_confined("{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"getppid\","
                      " \"action\": \"errno(EPERM)\", \"args\": [{\"index\": 0, \"op\": \"eq\", \"value\": 7}]}]}",
                      call_getppid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);   /* the condition does not hold */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_policy_and_eval),
        cmocka_unit_test(test_malformed_policies),
        cmocka_unit_test(test_load_levels_and_files),
        cmocka_unit_test(test_names_and_actions),
        cmocka_unit_test(test_compile_and_handoff),
        cmocka_unit_test(test_firecracker_export),
        cmocka_unit_test(test_filters_run_for_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
