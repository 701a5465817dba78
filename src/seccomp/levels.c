/*
 * levels.c - the named seccomp levels for the VMM. Each one is built from
 * the system calls QEMU was measured to make (docs/seccomp.md says how:
 * `ironclaw exec --seccomp learn`, the audit's counters are the list):
 *
 *   strict      allow exactly what was measured; anything else kills
 *   default     what was measured plus a margin for other configurations;
 *               anything else fails with EPERM and is recorded; the calls
 *               no VMM has any business making kill it
 *   permissive  like default, but unknown calls are allowed and recorded
 *   learn       allow and record everything (measuring only)
 *   firecracker default plus what Firecracker's jailer does before it
 *               execs Firecracker (the driver's default level)
 */
#include "seccomp/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Measured (docs/seccomp.md, scripts/seccomp-learn.sh): QEMU 7.2 (Debian
 * 1:7.2+dfsg-7+deb12u18), microvm, TCG, 1 and 2 vCPUs, with -sandbox on,
 * obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny, run
 * as the jailed VMM from execve to exit_group under the "learn" level:
 * every distinct system call the audit counted, 51 of them. */
static const char *const measured[] = {
    "access", "arch_prctl", "brk", "clock_nanosleep", "clone", "clone3", "close", "connect",
    "eventfd2", "execve", "exit_group", "fcntl", "futex", "get_mempolicy", "getpeername",
    "getrandom", "getsockname", "gettid", "io_uring_setup", "lseek", "madvise",
    "memfd_create", "mmap", "mprotect", "munmap", "newfstatat", "openat", "ppoll", "prctl",
    "pread64", "prlimit64", "read", "readlink", "recvmsg", "rseq", "rt_sigaction",
    "rt_sigprocmask", "sched_getaffinity", "seccomp", "sendmsg", "set_mempolicy",
    "set_robust_list", "set_tid_address", "setsockopt", "signalfd4", "socket", "statfs",
    "sysinfo", "write", "writev", NULL,
};

/* In the strict level these measured calls are allowed only with the
 * arguments the learning run saw. */
static const struct {
    const char *name;
    struct ic_sc_cond cond;
} strict_args[] = {
    {"clone", {0, IC_SC_MASKED_EQ, 0x10000 /* CLONE_THREAD */, 0x10000}},   /* threads only */
    {"socket", {0, IC_SC_EQ, 1 /* AF_UNIX */, 0}},
    {"prctl", {0, IC_SC_EQ, 29 /* PR_SET_TIMERSLACK */, 0}},
    {"prctl", {0, IC_SC_EQ, 33 /* PR_MCE_KILL */, 0}},
    {"prctl", {0, IC_SC_EQ, 38 /* PR_SET_NO_NEW_PRIVS */, 0}},
    {"fcntl", {1, IC_SC_EQ, 3 /* F_GETFL */, 0}},
    {"fcntl", {1, IC_SC_EQ, 4 /* F_SETFL */, 0}},
};

/* Not seen in the learning run, but what QEMU does with KVM, more vCPUs,
 * vhost, taps, block devices or a busier guest: the default and
 * permissive levels allow them so that those set-ups do not fail. */
static const char *const margin[] = {
    "ioctl", "exit", "rt_sigreturn", "ftruncate", "fchdir", "getdents64", "dup", "dup2", "dup3", "epoll_create1", "epoll_ctl", "epoll_pwait",
    "epoll_wait", "fdatasync", "fstat", "fsync", "getcwd", "getegid", "geteuid", "getgid",
    "getpid", "getppid", "getuid", "io_uring_enter", "io_uring_register", "io_submit",
    "io_getevents", "io_setup", "io_destroy", "io_cancel", "kill", "tgkill", "mremap",
    "nanosleep", "pipe2", "poll", "preadv", "pwrite64", "pwritev", "readv", "recvfrom",
    "restart_syscall", "rt_sigtimedwait", "sched_yield", "select", "pselect6", "sendto",
    "shutdown", "sigaltstack", "socketpair", "timerfd_create", "timerfd_settime", "uname",
    "unlink", "getsockopt", "accept4", "bind", "listen", "fallocate", "membarrier",
    "mlock", "munlock", "getrlimit", "clock_gettime", "gettimeofday", "time", "statx",
    "lstat", "stat", "readlinkat", "faccessat", "faccessat2", "mbind", "sched_getparam",
    "sched_getscheduler", "getpriority", "eventfd", "inotify_init1", "inotify_add_watch",
    "close_range", NULL,
};

/* No VMM has any business making these: module loading, kexec, eBPF,
 * tracing others, mounts and namespaces, reboot, swap, raw I/O ports,
 * identity changes, keys, handles that bypass paths. */
static const char *const forbidden[] = {
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
    "chroot", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "setns", "unshare", "reboot", "swapon", "swapoff", "iopl", "ioperm",
    "perf_event_open", "open_by_handle_at", "name_to_handle_at", "keyctl", "add_key",
    "request_key", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "setfsuid", "setfsgid", "capset", "acct", "quotactl", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "uselib", "vhangup", "syslog",
    "fanotify_init", "kcmp", "userfaultfd", "lookup_dcookie", "nfsservctl", "personality",
    NULL,
};

/* What Firecracker's jailer does between our exec of it and its exec of
 * Firecracker (docs/jailer.md upstream: build the chroot, device nodes,
 * cgroups, join the netns, new mount and pid namespaces, pivot_root, drop
 * to the jail uid), and what Firecracker itself needs beyond the margin.
 * Not measured here: Firecracker cannot run on this project's machines
 * (docs/seccomp.md). Firecracker then confines each of its threads with
 * its own, much narrower filters, which stack with this one. */
static const char *const jailer_extra[] = {
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "mknod", "mknodat",
    "mkdir", "mkdirat", "rmdir", "chdir", "chown", "fchown", "fchownat", "lchown", "chmod",
    "fchmod", "fchmodat", "umask", "link", "linkat", "symlink", "symlinkat", "rename",
    "renameat", "renameat2", "unlinkat", "open", "creat", "truncate", "copy_file_range",
    "sendfile", "setsid", "getsid", "setpgid", "getpgid", "setrlimit", "setuid", "setgid",
    "setresuid", "setresgid", "setgroups", "fork", "vfork", "wait4", "tkill", "msync",
    "sched_setaffinity", NULL,
};

static bool listed(const char *const *names, const char *name)
{
    for (; names && *names; names++)
        if (strcmp(*names, name) == 0)
            return true;
    return false;
}

static bool has_strict_args(const char *name)
{
    for (size_t i = 0; i < sizeof(strict_args) / sizeof(strict_args[0]); i++)
        if (strcmp(strict_args[i].name, name) == 0)
            return true;
    return false;
}

static int add_strict(ic_seccomp_policy *p)
{
    struct ic_sc_action allow = {IC_SC_ALLOW, 0};
    for (const char *const *n = measured; *n; n++) {
        int nr = ic_seccomp_syscall_nr(*n);
        if (nr < 0)
            continue;
        int r = has_strict_args(*n) ? 0 : sc_policy_add(p, nr, allow, 0, NULL);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < sizeof(strict_args) / sizeof(strict_args[0]); i++) {
        int nr = ic_seccomp_syscall_nr(strict_args[i].name);
        int r = nr < 0 ? 0 : sc_policy_add(p, nr, allow, 1, &strict_args[i].cond);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Adds every name not in `except` (NULL: none). */
static int add_list(ic_seccomp_policy *p, const char *const *names, struct ic_sc_action act,
                    const char *const *except)
{
    for (; *names; names++) {
        if (listed(except, *names))
            continue;
        int nr = ic_seccomp_syscall_nr(*names);
        if (nr < 0)
            continue;   /* not on this architecture */
        int r = sc_policy_add(p, nr, act, 0, NULL);
        if (r < 0)
            return r;
    }
    return 0;
}

const char *const ic_seccomp_levels[] = {"strict", "default", "permissive", "learn", "firecracker",
                                         NULL};

static const struct {
    const char *name;
    const char *description;
    struct ic_sc_action def;
    bool margin, forbidden;
    const char *const *extra;   /* allowed too, and so not forbidden */
} levels[] = {
    {"strict", "only the system calls QEMU was measured to make; anything else kills it",
     {IC_SC_KILL, 0}, false, false, NULL},
    {"default", "measured calls plus a margin; others fail with EPERM and are recorded; "
     "dangerous ones kill", {IC_SC_ERRNO, EPERM}, true, true, NULL},
    {"permissive", "measured calls plus a margin; others are allowed and recorded; "
     "dangerous ones kill", {IC_SC_LOG, 0}, true, true, NULL},
    {"learn", "allows and records every system call (for measuring a VMM)",
     {IC_SC_LOG, 0}, false, false, NULL},
    {"firecracker", "default plus what Firecracker's jailer needs to build its chroot and "
     "drop privileges (the firecracker driver's default)", {IC_SC_ERRNO, EPERM}, true, true,
     jailer_extra},
};

int sc_level_build(const char *name, ic_seccomp_policy **out, ic_err *err)
{
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        if (strcmp(name, levels[i].name) != 0)
            continue;
        ic_seccomp_policy *p = sc_policy_new(name, levels[i].def);
        if (!p)
            return ic_err_set(err, ENOMEM, "out of memory");
        snprintf(p->description, sizeof(p->description), "%s", levels[i].description);
        struct ic_sc_action allow = {IC_SC_ALLOW, 0}, kill = {IC_SC_KILL, 0};
        int r = 0;
        if (strcmp(name, "strict") == 0)
            r = add_strict(p);
        else if (strcmp(name, "learn") != 0)
            r = add_list(p, measured, allow, NULL);
        if (r == 0 && levels[i].margin)
            r = add_list(p, margin, allow, NULL);
        if (r == 0 && levels[i].extra)
            r = add_list(p, levels[i].extra, allow, measured);
        if (r == 0 && levels[i].forbidden)
            r = add_list(p, forbidden, kill, levels[i].extra);
        if (r == 0)
            r = sc_policy_check(p, name, err);
        if (r < 0) {
            ic_seccomp_policy_free(p);
            return err && err->code ? r : ic_err_set(err, -r, "cannot build level %s", name);
        }
        *out = p;
        return 0;
    }
    return -ENOENT;
}
