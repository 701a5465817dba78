/*
 * jail_enter.c - the jail, as the launch trampoline builds it between fork
 * and exec of the VMM (see launch.c for the order of the steps):
 *
 *   cgroups     the trampoline moves itself into the VM's cgroups, so that
 *               everything it starts is born inside their limits;
 *   namespaces  new mount, pid, ipc and uts namespaces (the network one is
 *               launch.c's own step);
 *   fork        a new pid namespace only applies to children: the
 *               trampoline forks, stays behind as a waiter (the process
 *               vm.c tracks: it forwards signals, reports the VMM's real
 *               pid to the owner and exits as the VMM did) and the child
 *               becomes pid 1 of the namespace, dying with the waiter;
 *   root        a tmpfs on the per-VM root directory holding, at their own
 *               absolute paths, only what the VMM needs: its binary and
 *               the libraries it links, the files and devices the driver
 *               listed, a /proc of its own; then pivot_root into it and
 *               remount it read-only;
 *   hostname    a fixed name in the new uts namespace;
 *   uid/gid     an unprivileged per-VM uid and gid (after the rlimits).
 */
#include "vm/control.h"
#include "vm/jail.h"

#include "ironclaw/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(struct ic_jail_fail *f, const char *step, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct ic_jail_fail *f, const char *step, int code, const char *fmt, ...)
{
    f->step = step;
    f->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- options ------------------------------------------------------------ */

static bool parse_id(const char *s, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !end || *end || end == s || v >= (unsigned long)UINT32_MAX)
        return false;
    *out = v;
    return true;
}

int ic_jail_parse_opt(struct ic_jail_opts *j, const char *a, const char *v)
{
    unsigned long id;
    if (strcmp(a, "--jail-root") == 0 && v) {
        j->root = v;
    } else if ((strcmp(a, "--jail-uid") == 0 || strcmp(a, "--jail-gid") == 0) && v) {
        if (!parse_id(v, &id) || id == 0)
            return -1;
        if (a[7] == 'u')
            j->uid = (uid_t)id;
        else
            j->gid = (gid_t)id;
        j->have_ids = j->uid && j->gid;
    } else if (strcmp(a, "--jail-group") == 0 && v) {
        if (!parse_id(v, &id) || j->n_groups >= sizeof(j->groups) / sizeof(j->groups[0]))
            return -1;
        j->groups[j->n_groups++] = (gid_t)id;
    } else if (strcmp(a, "--jail-path") == 0 && v) {
        if (j->n_paths >= IC_JAIL_MAX_PATHS || !strchr(v, ':') || strchr(v, ':')[1] != '/')
            return -1;
        j->paths[j->n_paths++] = v;
    } else if (strcmp(a, "--cgroup") == 0 && v) {
        if (j->n_cgroups >= IC_CG_MAX_DIRS || v[0] != '/')
            return -1;
        j->cgroups[j->n_cgroups++] = v;
    } else if (strcmp(a, "--hostname") == 0 && v) {
        j->hostname = v;
    } else {
        return 0;
    }
    return 2;
}

int ic_jail_join_cgroups(const struct ic_jail_opts *j, struct ic_jail_fail *f)
{
    for (size_t i = 0; i < j->n_cgroups; i++) {
        int r = ic_cg_join(j->cgroups[i], getpid());
        if (r < 0)
            return fail(f, "cgroup", -r, "cannot enter %s", j->cgroups[i]);
    }
    return 0;
}

/* ---- the waiter ----------------------------------------------------------- */

static void report_pid(int fd, pid_t pid)
{
    if (fd >= 0)
        (void)ic_control_send(fd, IC_CONTROL_PID, (int32_t)pid, -1);
}

/* Forwards the signals ironclaw may send to the VMM, and ends as it did. */
static void __attribute__((noreturn)) wait_for(pid_t child, int control_fd, int alive_w)
{
    static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
                                    SIGCONT, SIGWINCH};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
        sigaddset(&set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    report_pid(control_fd, child);
    /* Nothing of ours may keep the status pipe or the control socket
     * open: their end of file tells the owner the VMM was exec'd. Only
     * stderr and the write end of the child's liveness pipe stay. */
    int keep = dup2(alive_w, 3) == 3 ? 3 : alive_w;
    syscall(SYS_close_range, 0u, 1u, 0u);
    syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u);
    for (int fd = 3; fd < keep; fd++)
        close(fd);
    for (;;) {
        int status;
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child) {
            if (WIFEXITED(status))
                _exit(WEXITSTATUS(status));
            int sig = WTERMSIG(status);
            struct rlimit no_core = {0, 0};
            setrlimit(RLIMIT_CORE, &no_core);
            signal(sig, SIG_DFL);
            sigset_t one;
            sigemptyset(&one);
            sigaddset(&one, sig);
            sigprocmask(SIG_UNBLOCK, &one, NULL);
            kill(getpid(), sig);
            _exit(128 + sig);
        }
        if (r < 0 && errno == ECHILD)
            _exit(127);
        siginfo_t si;
        int sig = sigwaitinfo(&set, &si);
        if (sig > 0 && sig != SIGCHLD)
            kill(child, sig);
    }
}

/* ---- the root -------------------------------------------------------------- */

struct root {
    const char *dir;          /* the jail root on the host */
    int depth;
    struct ic_jail_fail *f;
};

static int jpath(const struct root *rt, const char *path, char *out)
{
    if (snprintf(out, PATH_MAX, "%s%s", rt->dir, path) >= PATH_MAX)
        return fail(rt->f, "root", ENAMETOOLONG, "path too long: %s", path);
    return 0;
}

static int bind_into(const struct root *rt, const char *src, const char *dst, unsigned long flags)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
        return fail(rt->f, "root", errno, "cannot bind %s into the jail", src);
    if (mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0)
        return fail(rt->f, "root", errno, "cannot restrict the bind mount of %s", src);
    return 0;
}

static int add_path(struct root *rt, const char *path, enum ic_jail_kind kind);

/* Copies the symlink at host path `link` into the jail and follows it. */
static int add_link(struct root *rt, const char *link, const char *rest, enum ic_jail_kind kind)
{
    char target[PATH_MAX], in_jail[PATH_MAX], next[PATH_MAX];
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n < 0)
        return fail(rt->f, "root", errno, "cannot read the link %s", link);
    target[n] = '\0';
    if (jpath(rt, link, in_jail) < 0)
        return -1;
    if (symlink(target, in_jail) < 0 && errno != EEXIST)
        return fail(rt->f, "root", errno, "cannot copy the link %s", link);
    int len;
    if (target[0] == '/') {
        len = snprintf(next, sizeof(next), "%s%s", target, rest);
    } else {
        size_t dlen = (size_t)(strrchr(link, '/') - link);
        len = snprintf(next, sizeof(next), "%.*s/%s%s", (int)dlen, link, target, rest);
    }
    if (len < 0 || (size_t)len >= sizeof(next))
        return fail(rt->f, "root", ENAMETOOLONG, "path too long behind %s", link);
    if (++rt->depth > 40)
        return fail(rt->f, "root", ELOOP, "too many links at %s", link);
    int r = add_path(rt, next, kind);
    rt->depth--;
    return r;
}

static int add_leaf(struct root *rt, const char *path, const struct stat *st, enum ic_jail_kind kind)
{
    char dst[PATH_MAX];
    if (jpath(rt, path, dst) < 0)
        return -1;
    if (S_ISDIR(st->st_mode)) {
        if (mkdir(dst, 0755) < 0 && errno != EEXIST)
            return fail(rt->f, "root", errno, "cannot create %s in the jail", path);
    } else {
        int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            return 0;   /* already there (a library listed twice) */
        if (fd < 0)
            return fail(rt->f, "root", errno, "cannot create %s in the jail", path);
        close(fd);
    }
    unsigned long flags = MS_NOSUID;
    switch (kind) {
    case IC_JAIL_EXE: flags |= MS_RDONLY | MS_NODEV; break;
    case IC_JAIL_RO: flags |= MS_RDONLY | MS_NODEV | MS_NOEXEC; break;
    case IC_JAIL_RW: flags |= MS_NODEV | MS_NOEXEC; break;
    case IC_JAIL_DEV: flags |= MS_NOEXEC; break;
    }
    return bind_into(rt, path, dst, flags);
}

/* Reproduces host `path` in the jail: directories on the way, symlinks as
 * symlinks (then what they point to), the file itself as a bind mount. */
static int add_path(struct root *rt, const char *path, enum ic_jail_kind kind)
{
    if (path[0] != '/')
        return fail(rt->f, "root", EINVAL, "not an absolute path: %s", path);
    char cur[PATH_MAX] = "";
    size_t used = 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, "/");
        if (used + 1 + len >= sizeof(cur))
            return fail(rt->f, "root", ENAMETOOLONG, "path too long: %s", path);
        cur[used++] = '/';
        memcpy(cur + used, p, len);
        used += len;
        cur[used] = '\0';
        p += len;
        bool last = strspn(p, "/") == strlen(p);
        struct stat st;
        if (lstat(cur, &st) < 0)
            return fail(rt->f, "root", errno, "the VMM needs %s", path);
        if (S_ISLNK(st.st_mode))
            return add_link(rt, cur, p, kind);
        if (last)
            return add_leaf(rt, cur, &st, kind);
        if (!S_ISDIR(st.st_mode))
            return fail(rt->f, "root", ENOTDIR, "%s is not a directory", cur);
        char dst[PATH_MAX];
        if (jpath(rt, cur, dst) < 0)
            return -1;
        if (mkdir(dst, 0755) < 0 && errno != EEXIST)
            return fail(rt->f, "root", errno, "cannot create %s in the jail", cur);
    }
    return 0;
}

static int add_lib(const char *lib, void *ud)
{
    return add_path(ud, lib, IC_JAIL_EXE);
}

static int add_exe(struct root *rt, const char *exe)
{
    char why[256] = "";
    if (add_path(rt, exe, IC_JAIL_EXE) < 0)
        return -1;
    if (ic_elf_deps(exe, add_lib, rt, why, sizeof(why)) < 0)
        return rt->f->step ? -1 : fail(rt->f, "root", ENOENT, "%s: %s", exe, why);
    return 0;
}

/* A file the VMM writes: created if missing, owned by the VMM's uid. */
static int prepare_rw(struct root *rt, const struct ic_jail_opts *j, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0600);
    if (fd >= 0) {
        int r = j->have_ids ? fchown(fd, j->uid, j->gid) : 0;
        close(fd);
        if (r < 0)
            return fail(rt->f, "root", errno, "cannot hand %s to the VMM's uid", path);
        return 0;
    }
    /* Sockets cannot be opened: hand them over by name (no link follows). */
    if (errno != ENXIO && errno != EOPNOTSUPP)
        return fail(rt->f, "root", errno, "cannot prepare %s for the VMM", path);
    if (j->have_ids && lchown(path, j->uid, j->gid) < 0)
        return fail(rt->f, "root", errno, "cannot hand %s to the VMM's uid", path);
    return 0;
}

static int listed_paths(struct root *rt, const struct ic_jail_opts *j)
{
    static const struct {
        const char *prefix;
        enum ic_jail_kind kind;
    } kinds[] = {{"ro:", IC_JAIL_RO}, {"rw:", IC_JAIL_RW}, {"dev:", IC_JAIL_DEV},
                 {"exe:", IC_JAIL_EXE}};
    for (size_t i = 0; i < j->n_paths; i++) {
        const char *spec = j->paths[i], *path = strchr(spec, ':') + 1;
        size_t k = 0;
        for (; k < sizeof(kinds) / sizeof(kinds[0]); k++)
            if (strncmp(spec, kinds[k].prefix, strlen(kinds[k].prefix)) == 0)
                break;
        if (k == sizeof(kinds) / sizeof(kinds[0]))
            return fail(rt->f, "root", EINVAL, "bad jail path '%s'", spec);
        int r = 0;
        if (kinds[k].kind == IC_JAIL_RW)
            r = prepare_rw(rt, j, path);
        if (r == 0)
            r = kinds[k].kind == IC_JAIL_EXE ? add_exe(rt, path) : add_path(rt, path, kinds[k].kind);
        if (r < 0)
            return r;
    }
    return 0;
}

static int build_root(const struct ic_jail_opts *j, const char *exe, struct ic_jail_fail *f)
{
    static const char *const devices[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                          "/dev/urandom"};
    struct root rt = {.dir = j->root, .f = f};
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return fail(f, "mounts", errno, "cannot make the mounts private");
    if (mount("tmpfs", j->root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096") < 0)
        return fail(f, "root", errno, "cannot mount a tmpfs on %s", j->root);
    if (add_exe(&rt, exe) < 0 || listed_paths(&rt, j) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++)
        if (add_path(&rt, devices[i], IC_JAIL_DEV) < 0)
            return -1;
    struct stat st;
    if (stat("/etc/ld.so.cache", &st) == 0 && add_path(&rt, "/etc/ld.so.cache", IC_JAIL_RO) < 0)
        return -1;
    char proc[PATH_MAX];
    if (jpath(&rt, "/proc", proc) < 0)
        return -1;
    if (mkdir(proc, 0555) < 0 && errno != EEXIST)
        return fail(f, "root", errno, "cannot create /proc in the jail");
    if (mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return fail(f, "root", errno, "cannot mount /proc in the jail");
    return 0;
}

static int enter_root(const struct ic_jail_opts *j, struct ic_jail_fail *f)
{
    if (chdir(j->root) < 0)
        return fail(f, "pivot_root", errno, "cannot enter %s", j->root);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return fail(f, "pivot_root", errno, "pivot_root into %s", j->root);
    /* The old root is stacked on the new one: detach it. */
    if (umount2(".", MNT_DETACH) < 0)
        return fail(f, "pivot_root", errno, "cannot detach the host's root");
    if (chdir("/") < 0)
        return fail(f, "pivot_root", errno, "chdir /");
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return fail(f, "pivot_root", errno, "cannot make the jail's root read-only");
    return 0;
}

/* ---- entering --------------------------------------------------------------- */

/* The child must die with the waiter; if the waiter is already gone, the
 * pipe's write end is closed and poll says so. Called again after the uid
 * changes: the kernel clears the death signal with the credentials. */
static int die_with_waiter(int alive_fd, struct ic_jail_fail *f)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        return fail(f, "death signal", errno, "PR_SET_PDEATHSIG in the jail");
    struct pollfd p = {.fd = alive_fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 0)
        _exit(127);
    return 0;
}

int ic_jail_enter(const struct ic_jail_opts *j, const char *exe, ic_jail_check_fn check,
                  void *ud, int *alive_fd, struct ic_jail_fail *f)
{
    *alive_fd = -1;
    if (!j->root)
        return 0;
    if (!j->have_ids)
        return fail(f, "options", EINVAL, "a jail needs --jail-uid and --jail-gid");
    check("namespaces", ud);
    if (unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        return fail(f, "namespaces", errno, "cannot create mount, pid, ipc and uts namespaces");
    check("fork", ud);
    int alive[2];
    if (pipe2(alive, O_CLOEXEC) < 0)
        return fail(f, "fork", errno, "pipe");
    pid_t child = fork();
    if (child < 0)
        return fail(f, "fork", errno, "cannot fork the VMM into its pid namespace");
    if (child > 0) {
        close(alive[0]);
        wait_for(child, j->control_fd, alive[1]);   /* keeps alive[1] open until it ends */
    }
    close(alive[1]);
    *alive_fd = alive[0];
    if (die_with_waiter(alive[0], f) < 0)
        return -1;
    check("mounts", ud);
    check("root", ud);
    if (build_root(j, exe, f) < 0)
        return -1;
    check("pivot_root", ud);
    if (enter_root(j, f) < 0)
        return -1;
    check("hostname", ud);
    const char *name = j->hostname ? j->hostname : IC_JAIL_HOSTNAME;
    if (sethostname(name, strlen(name)) < 0)
        return fail(f, "hostname", errno, "sethostname");
    return 0;
}

int ic_jail_drop_privileges(const struct ic_jail_opts *j, int alive_fd, struct ic_jail_fail *f)
{
    if (!j->root)
        return 0;
    if (setgroups(j->n_groups, j->groups) < 0)
        return fail(f, "uid", errno, "setgroups");
    if (setresgid(j->gid, j->gid, j->gid) < 0)
        return fail(f, "uid", errno, "setresgid %u", (unsigned)j->gid);
    if (setresuid(j->uid, j->uid, j->uid) < 0)
        return fail(f, "uid", errno, "setresuid %u", (unsigned)j->uid);
    /* Fail closed: there must be no way back. */
    if (setuid(0) == 0 || getuid() != j->uid || geteuid() != j->uid || getegid() != j->gid)
        return fail(f, "uid", EPERM, "the VMM could regain root");
    if (die_with_waiter(alive_fd, f) < 0)
        return -1;
    close(alive_fd);
    return 0;
}
