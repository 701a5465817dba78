/*
 * test_jail.c - the VMM's jail: cgroup hierarchies found from mountinfo
 * (v1, v2, hybrid), real cgroups created, joined and removed, per-VM uids
 * that avoid each other, the libraries of an ELF program, and the launch
 * trampoline run for real with a jail (pid 1 of its namespace, an
 * unprivileged uid, a root holding only what was asked for, a file handed
 * to the jailed uid) and with a fault injected into each of its steps.
 * The real-kernel tests need root and say so when they skip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/seccomp.h"
#include "ironclaw/state.h"
#include "vm/jail.h"

#include "launch_run.h"

#define TEST_UID 2147000001u

static char tmp[PATH_MAX];

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/ic-test-jail-XXXXXX");
    return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    return ic_rm_rf(tmp, NULL);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static bool need_root(void)
{
    if (geteuid() == 0)
        return true;
    print_message("SKIP: needs root (namespaces, cgroups, uid changes)\n");
    return false;
}

/* ---- cgroup plans --------------------------------------------------------- */

static void test_plan_hybrid_v1(void **state)
{
    char mi[PATH_MAX], v2[PATH_MAX];
    snprintf(mi, sizeof(mi), "%s/mountinfo", tmp);
    snprintf(v2, sizeof(v2), "%s/unified", tmp);
    mkdir(v2, 0755);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/cgroup.controllers", v2);
    write_file(path, "hugetlb\n");
    char text[2048];
    snprintf(text, sizeof(text),
             "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
             "30 22 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
             "31 22 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "32 22 0:28 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
             "33 22 0:29 / %s rw,relatime - cgroup2 cgroup2 rw\n", v2);
    write_file(mi, text);
    struct ic_cg_plan plan;
    ic_err err = {0};
    assert_int_equal(ic_cg_plan(mi, "ironclaw", "vm-x", &plan, &err), 0);
    assert_int_equal(plan.n, 3);
    assert_string_equal(plan.dir[0].path, "/sys/fs/cgroup/memory/ironclaw/vm-x");
    assert_string_equal(plan.dir[0].controllers, "memory");
    assert_false(plan.dir[0].v2);
    assert_string_equal(plan.dir[1].path, "/sys/fs/cgroup/cpu/ironclaw/vm-x");
    assert_string_equal(plan.dir[2].path, "/sys/fs/cgroup/pids/ironclaw/vm-x");

    /* co-mounted controllers share one directory */
    write_file(mi, "30 22 0:26 / /c/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
                   "31 22 0:27 / /c/mp rw - cgroup cgroup rw,memory,pids\n");
    assert_int_equal(ic_cg_plan(mi, "", "vm-y", &plan, &err), 0);
    assert_int_equal(plan.n, 2);
    assert_string_equal(plan.dir[0].path, "/c/mp/vm-y");
    assert_string_equal(plan.dir[0].controllers, "memory,pids");
    assert_string_equal(plan.dir[1].path, "/c/cpu,cpuacct/vm-y");
}

static void test_plan_v2_and_missing(void **state)
{
    char mi[PATH_MAX], v2[PATH_MAX], path[PATH_MAX + 32];
    snprintf(mi, sizeof(mi), "%s/mountinfo", tmp);
    snprintf(v2, sizeof(v2), "%s/cg2", tmp);
    mkdir(v2, 0755);
    snprintf(path, sizeof(path), "%s/cgroup.controllers", v2);
    write_file(path, "cpuset cpu io memory hugetlb pids rdma misc\n");
    char text[1024];
    snprintf(text, sizeof(text), "33 22 0:29 / %s rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", v2);
    write_file(mi, text);
    struct ic_cg_plan plan;
    ic_err err = {0};
    assert_int_equal(ic_cg_plan(mi, "ironclaw", "vm-z", &plan, &err), 0);
    assert_int_equal(plan.n, 1);
    assert_true(plan.dir[0].v2);
    assert_string_equal(plan.dir[0].controllers, "memory cpu pids");
    assert_string_equal(plan.dir[0].mount, v2);

    /* The v2 path writes the controllers into subtree_control on the way;
     * a plain directory has no memory.max, so it stops there, saying so. */
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", v2);
    write_file(path, "");
    struct ic_cg_limits lim = {256u << 20, 1, 64};
    char sub[PATH_MAX + 32];
    snprintf(sub, sizeof(sub), "%s/ironclaw", v2);
    mkdir(sub, 0755);
    snprintf(sub, sizeof(sub), "%s/ironclaw/cgroup.subtree_control", v2);
    write_file(sub, "");
    assert_true(ic_cg_create(&plan.dir[0], &lim, &err) < 0);
    assert_non_null(strstr(err.msg, "memory.max"));
    char *got = NULL;
    assert_int_equal(ic_file_read(path, 100, &got, NULL, NULL), 0);
    assert_string_equal(got, "+memory +cpu +pids");
    free(got);

    write_file(mi, "30 22 0:26 / /c/cpu rw - cgroup cgroup rw,cpu\n");
    assert_int_equal(ic_cg_plan(mi, "ironclaw", "vm-z", &plan, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "memory controller"));
    assert_int_equal(ic_cg_plan("/no/such/mountinfo", "p", "n", &plan, &err), -ENOENT);
}

/* Creates a real cgroup set with limits, reads them back, moves a process
 * in, and removes it all with the process still inside. */
static void test_real_cgroups(void **state)
{
    if (!need_root())
        skip();
    struct ic_cg_plan plan;
    ic_err err = {0};
    char parent[64], name[32];
    snprintf(parent, sizeof(parent), "ironclaw-test-%d", (int)getpid());
    snprintf(name, sizeof(name), "vm-unit");
    if (ic_cg_plan("/proc/self/mountinfo", parent, name, &plan, &err) < 0) {
        print_message("SKIP: %s\n", err.msg);
        skip();
    }
    struct ic_cg_limits lim = {300ull << 20, 2, 77};
    for (size_t i = 0; i < plan.n; i++)
        if (ic_cg_create(&plan.dir[i], &lim, &err) < 0)
            fail_msg("%s", err.msg);
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    for (size_t i = 0; i < plan.n; i++) {
        const struct ic_cg_dir *d = &plan.dir[i];
        assert_int_equal(ic_cg_join(d->path, child), 0);
        char file[PATH_MAX + 32], *got = NULL;
        const char *want = NULL;
        if (strstr(d->controllers, "pids")) {
            snprintf(file, sizeof(file), "%s/pids.max", d->path);
            want = "77\n";
        } else if (strstr(d->controllers, "memory")) {
            snprintf(file, sizeof(file), "%s/%s", d->path, d->v2 ? "memory.max" : "memory.limit_in_bytes");
            want = "314572800\n";
        } else {
            snprintf(file, sizeof(file), "%s/%s", d->path, d->v2 ? "cpu.max" : "cpu.cfs_quota_us");
            want = d->v2 ? "200000 100000\n" : "200000\n";
        }
        assert_int_equal(ic_file_read(file, 100, &got, NULL, NULL), 0);
        assert_string_equal(got, want);
        free(got);
    }
    for (size_t i = 0; i < plan.n; i++) {
        assert_int_equal(ic_cg_remove(plan.dir[i].path, &err), 0);
        assert_false(ic_path_exists(plan.dir[i].path));
        /* the shared parent went with its last child */
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", plan.dir[i].mount, parent);
        assert_false(ic_path_exists(p));
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_int_equal(ic_cg_remove(plan.dir[0].path, &err), 0);   /* gone is fine */
}

/* ---- uids ------------------------------------------------------------------- */

static void test_uid_avoids_other_vms(void **state)
{
    char id[IC_ID_SIZE];
    ic_err err = {0};
    /* Two records hold uids 1000 and 1001 of a 3-uid range. */
    for (int i = 0; i < 2; i++) {
        ic_state *st = NULL;
        assert_int_equal(ic_id_new(id, &err), 0);
        assert_int_equal(ic_state_create(tmp, id, "", "qemu", &st, &err), 0);
        assert_int_equal(ic_state_set_num(st, "jail_uid", 1000 + i, &err), 0);
        ic_state_free(st);
    }
    uint32_t uid = 0;
    assert_int_equal(ic_jail_pick_uid(tmp, "00000000000000000000000000000000", 1000, 3, &uid, &err), 0);
    assert_int_equal(uid, 1002);
    assert_int_equal(ic_jail_pick_uid(tmp, "00000000000000000000000000000001", 1000, 2, &uid, &err), -EAGAIN);
    assert_int_equal(ic_jail_pick_uid(tmp, "00000000000000000000000000000001", 0, 2, &uid, &err), -EINVAL);
    /* otherwise the id chooses the start */
    assert_int_equal(ic_jail_pick_uid(tmp, "0000000a000000000000000000000000", 5000, 100, &uid, &err), 0);
    assert_int_equal(uid, 5010);
}

/* ---- libraries ---------------------------------------------------------------- */

struct libs {
    char names[128][PATH_MAX];
    size_t n;
};

static int add_lib(const char *lib, void *ud)
{
    struct libs *l = ud;
    char real[PATH_MAX];
    if (!realpath(lib, real))
        return 0;
    /* The loader may be named twice (PT_INTERP, and libc's DT_NEEDED). */
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], real) == 0)
            return 0;
    if (l->n < 128)
        snprintf(l->names[l->n++], PATH_MAX, "%s", real);
    return 0;
}

static bool listed(const struct libs *l, const char *path)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return false;
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], real) == 0)
            return true;
    return false;
}

static void test_elf_deps_match_ldd(void **state)
{
    const char *prog = access("/usr/bin/qemu-system-x86_64", X_OK) == 0 ? "/usr/bin/qemu-system-x86_64"
                                                                         : "/bin/ls";
    struct libs l = {.n = 0};
    char why[256] = "";
    assert_int_equal(ic_elf_deps(prog, add_lib, &l, why, sizeof(why)), 0);
    assert_true(l.n > 2);
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "ldd %s 2>/dev/null", prog);
    FILE *p = popen(cmd, "r");
    if (!p) {
        print_message("SKIP: no ldd\n");
        skip();
    }
    char line[PATH_MAX];
    size_t checked = 0;
    while (fgets(line, sizeof(line), p)) {
        char *slash = strchr(line, '/');
        if (!slash || strstr(line, "linux-vdso"))
            continue;
        slash[strcspn(slash, " \n(")] = '\0';
        if (!listed(&l, slash))
            fail_msg("ldd lists %s, ic_elf_deps does not", slash);
        checked++;
    }
    pclose(p);
    assert_int_equal(checked, l.n);

    assert_int_equal(ic_elf_deps("/etc/hostname", add_lib, &l, why, sizeof(why)), 0);   /* not ELF */
    assert_int_equal(ic_elf_deps("/no/such", add_lib, &l, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "/no/such"));
}

/* ---- the trampoline with a jail ---------------------------------------------- */

/* Only shell builtins run in the jail: there is nothing else in it. */
static const char *const probe =
    "echo pid=$$; cd /; echo root: *; echo dev: /dev/*;"
    " while read k v rest; do case $k in Uid:|Gid:|NoNewPrivs:|Seccomp:) echo $k$v;; esac; done </proc/self/status;"
    " read h </proc/sys/kernel/hostname; echo host=$h;"
    " [ -e /etc/passwd ] && echo LEAK-passwd; [ -e /run ] && echo has-run;"
    " echo written > \"$1\"; echo done";

static void test_jailed_launch(void **state)
{
    if (!need_root())
        skip();
    char root[PATH_MAX], out_file[PATH_MAX], rw[PATH_MAX + 8], uid[16];
    snprintf(root, sizeof(root), "%s/root", tmp);
    snprintf(out_file, sizeof(out_file), "%s/out.txt", tmp);
    snprintf(rw, sizeof(rw), "rw:%s", out_file);
    snprintf(uid, sizeof(uid), "%u", TEST_UID);
    assert_int_equal(mkdir(root, 0755), 0);

    /* a seccomp filter (kernel actions) as a memfd on fd 5 */
    ic_seccomp_policy *p = NULL;
    ic_err err = {0};
    const char *policy = "{\"default_action\": \"allow\", \"rules\": [{\"syscall\": \"mount\","
                         " \"action\": \"errno(EPERM)\"}]}";
    assert_int_equal(ic_seccomp_policy_parse(policy, strlen(policy), "t", &p, &err), 0);
    struct ic_sc_compile_opts o = {0, -1};
    int bpf = -1;
    size_t n = 0;
    assert_int_equal(ic_seccomp_compile_memfd(p, &o, &bpf, &n, &err), 0);
    ic_seccomp_policy_free(p);
    if (bpf != 5) {
        assert_int_equal(dup2(bpf, 5), 5);
        close(bpf);
    }
    const char *extra[] = {"--new-netns", "--seccomp-fd", "5", "--jail-root", root,
                           "--jail-uid", uid, "--jail-gid", uid, "--jail-path", rw,
                           "--rlimit", "nofile=64:64", NULL};
    const char *prog[] = {"/bin/sh", "-c", probe, "sh", out_file, NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    close(5);
    if (!WIFEXITED(l.status) || WEXITSTATUS(l.status) != 0)
        fail_msg("status %d, message '%s', output '%s'", l.status, l.msg, l.out);
    assert_string_equal(l.msg, "");
    assert_non_null(strstr(l.out, "pid=1\n"));                    /* its own pid namespace */
    char want[64];
    snprintf(want, sizeof(want), "Uid:%u\n", TEST_UID);
    assert_non_null(strstr(l.out, want));
    snprintf(want, sizeof(want), "Gid:%u\n", TEST_UID);
    assert_non_null(strstr(l.out, want));
    assert_non_null(strstr(l.out, "NoNewPrivs:1\n"));
    assert_non_null(strstr(l.out, "Seccomp:2\n"));
    assert_non_null(strstr(l.out, "host=" IC_JAIL_HOSTNAME "\n"));
    if (!strstr(l.out, "dev: /dev/full /dev/null /dev/random /dev/urandom /dev/zero\n"))
        fail_msg("the jail's /dev: %s", l.out);
    assert_null(strstr(l.out, "LEAK"));
    assert_non_null(strstr(l.out, "done\n"));
    /* The root holds the program's own tree and /proc, /dev, the file. */
    /* Only what /bin/sh, its libraries, /proc, /dev and the file need. */
    const char *line = strstr(l.out, "root: ");
    assert_non_null(line);
    char names[512];
    snprintf(names, sizeof(names), "%.*s", (int)strcspn(line + 6, "\n"), line + 6);
    static const char *const allowed[] = {"bin", "dev", "etc", "lib", "lib64", "lib32", "libx32",
                                          "proc", "tmp", "usr", NULL};
    char *save = NULL;
    for (char *w = strtok_r(names, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, w) == 0;
        if (!ok)
            fail_msg("the jail's root holds '%s': %s", w, l.out);
    }
    assert_non_null(strstr(l.out, " proc "));
    /* The file it was given is written through to the host, as its uid. */
    char *text = NULL;
    assert_int_equal(ic_file_read(out_file, 100, &text, NULL, NULL), 0);
    assert_string_equal(text, "written\n");
    free(text);
    struct stat st;
    assert_int_equal(stat(out_file, &st), 0);
    assert_int_equal(st.st_uid, TEST_UID);
    /* Nothing of the jail is visible on the host: the root is an empty dir. */
    assert_int_equal(rmdir(root), 0);
}

static void test_jail_bad_path_fails_closed(void **state)
{
    if (!need_root())
        skip();
    char root[PATH_MAX], uid[16];
    snprintf(root, sizeof(root), "%s/root", tmp);
    snprintf(uid, sizeof(uid), "%u", TEST_UID);
    assert_int_equal(mkdir(root, 0755), 0);
    const char *extra[] = {"--jail-root", root, "--jail-uid", uid, "--jail-gid", uid,
                           "--jail-path", "ro:/no/such/firmware", NULL};
    const char *prog[] = {"/bin/echo", "must-not-run", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_true(WIFEXITED(l.status));
    assert_int_equal(WEXITSTATUS(l.status), 127);
    assert_string_equal(l.out, "");
    assert_non_null(strstr(l.msg, "root: the VMM needs /no/such/firmware: No such file"));
    rmdir(root);

    const char *no_ids[] = {"--jail-root", root, NULL};
    launch_run(no_ids, prog, NULL, &l);
    assert_int_equal(WEXITSTATUS(l.status), 127);
    assert_non_null(strstr(l.msg, "needs --jail-uid"));
    const char *bad_uid[] = {"--jail-uid", "0", NULL};
    launch_run(bad_uid, prog, NULL, &l);
    assert_non_null(strstr(l.msg, "options: bad value for --jail-uid"));
}

/* Every step of the jail, made to fail: the status pipe names it, the
 * program never runs, nothing is left. */
static void test_each_step_fails_closed(void **state)
{
    if (!need_root())
        skip();
    static const char *const steps[] = {"descriptors", "cgroup", "namespaces", "fork", "mounts",
                                        "root", "pivot_root", "hostname", "rlimits", "uid",
                                        "no_new_privs", "seccomp"};
    char root[PATH_MAX], uid[16];
    snprintf(root, sizeof(root), "%s/root", tmp);
    snprintf(uid, sizeof(uid), "%u", TEST_UID);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        assert_int_equal(mkdir(root, 0755), 0);
        const char *extra[] = {"--new-netns", "--jail-root", root, "--jail-uid", uid, "--jail-gid",
                               uid, NULL};
        const char *prog[] = {"/bin/echo", "must-not-run", NULL};
        struct launched l;
        launch_run(extra, prog, steps[i], &l);
        char want[128];
        snprintf(want, sizeof(want), "%s: injected failure", steps[i]);
        if (!strstr(l.msg, want))
            fail_msg("step %s: message '%s'", steps[i], l.msg);
        assert_true(WIFEXITED(l.status));
        assert_int_equal(WEXITSTATUS(l.status), 127);
        assert_string_equal(l.out, "");
        assert_int_equal(rmdir(root), 0);   /* empty: no mount leaked out */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plan_hybrid_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plan_v2_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_cgroups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uid_avoids_other_vms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_elf_deps_match_ldd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jailed_launch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jail_bad_path_fails_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_step_fails_closed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
