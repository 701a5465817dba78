/*
 * confine.c - what every process the agent starts is confined by (see
 * docs/seccomp.md, "The guest's tools"): resource limits and a seccomp
 * filter that refuses, with EPERM, the system calls a tool never needs
 * (kernel modules, kexec, eBPF, tracing or reading other processes,
 * mounts and namespaces, reboot, swap, perf, handles, keys, raw ports).
 * clone3 answers ENOSYS so that libc falls back to clone(2), whose flags
 * the filter can see; clone with a namespace flag is refused.
 *
 * The filter is built once with libseccomp when the agent starts and kept
 * as a BPF program; the child installs it with seccomp(2) after
 * PR_SET_NO_NEW_PRIVS, just before exec. The agent itself (PID 1) is not
 * filtered: it mounts, loads modules and powers off.
 */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <seccomp.h>

#include "ironclaw/cleanup.h"

/* Refused with EPERM for every tool. */
static const char *const denied[] = {
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "unshare",
    "setns", "reboot", "swapon", "swapoff", "perf_event_open", "open_by_handle_at",
    "name_to_handle_at", "keyctl", "add_key", "request_key", "iopl", "ioperm", "userfaultfd",
    "acct", "quotactl", "lookup_dcookie", "kcmp", "vhangup", "uselib", NULL,
};

static int deny_ptrace(scmp_filter_ctx ctx)
{
    /* A tool may be traced by its parent (PTRACE_TRACEME) but attaches to
     * nothing: not the agent, not another command. */
    static const unsigned long requests[] = {PTRACE_ATTACH, PTRACE_SEIZE};
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        struct scmp_arg_cmp c = {.arg = 0, .op = SCMP_CMP_EQ, .datum_a = requests[i], .datum_b = 0};
        int r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ptrace), 1, &c);
        if (r < 0)
            return r;
    }
    return 0;
}

static int deny_namespaces(scmp_filter_ctx ctx)
{
    static const unsigned long flags[] = {CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
                                          CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
                                          CLONE_NEWNET, 0x80 /* CLONE_NEWTIME */};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        struct scmp_arg_cmp c = {.arg = 0, .op = SCMP_CMP_MASKED_EQ, .datum_a = flags[i],
                                 .datum_b = flags[i]};
        int r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, &c);
        if (r < 0)
            return r;
    }
    return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

static int build(scmp_filter_ctx ctx)
{
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    for (const char *const *n = denied; r == 0 && *n; n++) {
        int nr = seccomp_syscall_resolve_name(*n);
        if (nr == __NR_SCMP_ERROR || nr < 0)
            continue;
        r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    if (r == 0)
        r = deny_ptrace(ctx);
    if (r == 0)
        r = deny_namespaces(ctx);
    return r;
}

int ic_guest_filter_build(struct ic_guest_filter *f, ic_err *err)
{
    memset(f, 0, sizeof(*f));
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return ic_err_set(err, ENOMEM, "libseccomp could not create a filter");
    int r = build(ctx);
    _cleanup_close_ int fd = r == 0 ? (int)syscall(SYS_memfd_create, "tool-filter", MFD_CLOEXEC) : -1;
    if (r == 0 && fd < 0)
        r = -errno;
    if (r == 0)
        r = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (r < 0)
        return ic_err_set(err, -r, "cannot build the tools' seccomp filter: %s", strerror(-r));
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % (off_t)sizeof(struct sock_filter) ||
        st.st_size > (off_t)(BPF_MAXINSNS * sizeof(struct sock_filter)))
        return ic_err_set(err, EINVAL, "the tools' seccomp filter is malformed");
    f->insns = malloc((size_t)st.st_size);
    if (!f->insns || pread(fd, f->insns, (size_t)st.st_size, 0) != st.st_size) {
        free(f->insns);
        f->insns = NULL;
        return ic_err_set(err, EIO, "cannot read the tools' seccomp filter");
    }
    f->len = (unsigned short)(st.st_size / (off_t)sizeof(struct sock_filter));
    return 0;
}

void ic_guest_filter_free(struct ic_guest_filter *f)
{
    free(f->insns);
    f->insns = NULL;
    f->len = 0;
}

/* Lowers a limit, never above what the agent itself may have. */
static int limit(int resource, rlim_t value)
{
    struct rlimit cur;
    if (getrlimit(resource, &cur) < 0)
        return -errno;
    if (cur.rlim_max != RLIM_INFINITY && cur.rlim_max < value)
        value = cur.rlim_max;
    struct rlimit next = {value, value};
    return setrlimit(resource, &next) < 0 ? -errno : 0;
}

int ic_guest_confine_child(const struct ic_guest_filter *f)
{
    int r;
    if ((r = limit(RLIMIT_CORE, 0)) < 0 || (r = limit(RLIMIT_NOFILE, IC_GUEST_TOOL_NOFILE)) < 0 ||
        (r = limit(RLIMIT_NPROC, IC_GUEST_TOOL_NPROC)) < 0)
        return r;
    if (!f->insns)
        return -ENOSYS;   /* no filter, no command: fail closed */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    struct sock_fprog prog = {.len = f->len, .filter = f->insns};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}
