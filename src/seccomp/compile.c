/*
 * compile.c - a policy turned into a kernel filter with libseccomp: the
 * action mapping (kernel actions, or user notifications for the audit
 * listener), the hand-off exception for sendmsg, and BPF export to a file
 * descriptor or a sealed memfd that the launch trampoline installs.
 */
#include "seccomp/internal.h"

#include "ironclaw/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <seccomp.h>

struct build {
    const ic_seccomp_policy *p;
    bool notify;
    int handoff_fd;
    uint32_t kdef;
    scmp_filter_ctx ctx;
    ic_err *err;
};

static uint32_t kernel_action(const struct build *b, struct ic_sc_action a)
{
    if (a.kind == IC_SC_ALLOW)
        return SCMP_ACT_ALLOW;
    if (b->notify)
        return SCMP_ACT_NOTIFY;
    switch (a.kind) {
    case IC_SC_ERRNO: return SCMP_ACT_ERRNO((uint32_t)a.err);
    case IC_SC_KILL: return SCMP_ACT_KILL_PROCESS;
    case IC_SC_TRAP: return SCMP_ACT_TRAP;
    case IC_SC_LOG: return SCMP_ACT_LOG;
    default: return SCMP_ACT_KILL_PROCESS;
    }
}

static void to_scmp(const struct ic_sc_cond *c, unsigned n, struct scmp_arg_cmp *out)
{
    static const enum scmp_compare ops[] = {SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE,
                                            SCMP_CMP_GT, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ};
    for (unsigned i = 0; i < n; i++) {
        out[i].arg = c[i].index;
        out[i].op = ops[c[i].op];
        if (c[i].op == IC_SC_MASKED_EQ) {
            out[i].datum_a = c[i].mask;
            out[i].datum_b = c[i].value;
        } else {
            out[i].datum_a = c[i].value;
            out[i].datum_b = 0;
        }
    }
}

static int add(struct build *b, uint32_t act, int nr, unsigned n, const struct ic_sc_cond *c)
{
    struct scmp_arg_cmp cmp[7];
    to_scmp(c, n, cmp);
    int r = seccomp_rule_add_array(b->ctx, act, nr, n, cmp);
    if (r < 0) {
        char name[64];
        return ic_err_set(b->err, -r, "libseccomp refused the rule for %s: %s",
                          ic_seccomp_syscall_name(nr, name, sizeof(name)), strerror(-r));
    }
    return 0;
}

/* The rules of system call nr (they share one action: see sc_policy_check). */
static int add_syscall(struct build *b, int nr, size_t first)
{
    const ic_seccomp_policy *p = b->p;
    uint32_t act = kernel_action(b, p->rules[first].act);
    if (act == b->kdef)
        return 0;   /* the default covers it; the listener tells errno codes apart */
    for (size_t i = first; i < p->n; i++)
        if (p->rules[i].nr == nr && p->rules[i].ncond == 0)
            return add(b, act, nr, 0, NULL);
    for (size_t i = first; i < p->n; i++) {
        const struct sc_rule *r = &p->rules[i];
        if (r->nr != nr)
            continue;
        int e = add(b, act, nr, r->ncond, r->cond);
        if (e < 0)
            return e;
    }
    return 0;
}

/* sendmsg(handoff_fd, ...) must pass whatever the policy says, so that the
 * trampoline can hand the notification descriptor to its owner after the
 * filter is loaded. Only called in notify mode: actions are ALLOW/NOTIFY. */
static int add_sendmsg(struct build *b, int nr, ssize_t first)
{
    struct ic_sc_cond is_fd = {0, IC_SC_EQ, (uint64_t)b->handoff_fd, 0};
    struct ic_sc_cond not_fd = {0, IC_SC_NE, (uint64_t)b->handoff_fd, 0};
    uint32_t act = first >= 0 ? kernel_action(b, b->p->rules[first].act) : b->kdef;
    if (b->kdef == SCMP_ACT_ALLOW && act == SCMP_ACT_ALLOW)
        return 0;
    if (b->kdef != SCMP_ACT_ALLOW) {
        if (first >= 0 && act == SCMP_ACT_ALLOW) {
            for (size_t i = (size_t)first; i < b->p->n; i++)
                if (b->p->rules[i].nr == nr && b->p->rules[i].ncond == 0)
                    return add(b, SCMP_ACT_ALLOW, nr, 0, NULL);
            int r = add_syscall(b, nr, (size_t)first);
            if (r < 0)
                return r;
        }
        return add(b, SCMP_ACT_ALLOW, nr, 1, &is_fd);
    }
    /* Default allow; the policy restricts sendmsg: restrict all but fd. */
    const ic_seccomp_policy *p = b->p;
    for (size_t i = (size_t)first; i < p->n; i++) {
        const struct sc_rule *r = &p->rules[i];
        if (r->nr != nr)
            continue;
        struct ic_sc_cond c[7];
        memcpy(c, r->cond, r->ncond * sizeof(c[0]));
        unsigned n = r->ncond;
        bool on_fd = false;
        for (unsigned k = 0; k < n; k++)
            if (c[k].index == 0) {
                uint64_t args[6] = {(uint64_t)b->handoff_fd};
                if (sc_cond_holds(&c[k], args))
                    return ic_err_set(b->err, ENOTSUP, "the policy's sendmsg rule matches the "
                                      "launcher's hand-off descriptor %d; compare argument 0 "
                                      "so that it excludes %d", b->handoff_fd, b->handoff_fd);
                on_fd = true;
            }
        if (!on_fd)
            c[n++] = not_fd;
        int e = add(b, act, nr, n, c);
        if (e < 0)
            return e;
    }
    return 0;
}

static int build_rules(struct build *b)
{
    const ic_seccomp_policy *p = b->p;
    int sendmsg_nr = ic_seccomp_syscall_nr("sendmsg");
    ssize_t sendmsg_first = -1;
    for (size_t i = 0; i < p->n; i++) {
        int nr = p->rules[i].nr;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = p->rules[j].nr == nr;
        if (seen)
            continue;
        if (nr == sendmsg_nr && b->handoff_fd >= 0) {
            sendmsg_first = (ssize_t)i;
            continue;
        }
        int r = add_syscall(b, nr, i);
        if (r < 0)
            return r;
    }
    if (b->handoff_fd >= 0)
        return add_sendmsg(b, sendmsg_nr, sendmsg_first);
    return 0;
}

static int build_ctx(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o,
                     scmp_filter_ctx *out, ic_err *err)
{
    struct build b = {
        .p = p,
        .notify = o && (o->flags & IC_SC_NOTIFY),
        .handoff_fd = o ? o->handoff_fd : -1,
        .err = err,
    };
    if (b.handoff_fd >= 0 && !b.notify)
        return ic_err_set(err, EINVAL, "a hand-off descriptor only makes sense with notifications");
    b.kdef = kernel_action(&b, p->def);
    b.ctx = seccomp_init(b.kdef);
    if (!b.ctx)
        return ic_err_set(err, ENOMEM, "libseccomp could not create a filter");
    /* no_new_privs is the launcher's own step; a foreign architecture's
     * system calls (int 0x80, x32) end the process. */
    int r = seccomp_attr_set(b.ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (r == 0)
        r = seccomp_attr_set(b.ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (r == 0)
        r = seccomp_attr_set(b.ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (r < 0) {
        seccomp_release(b.ctx);
        return ic_err_set(err, -r, "libseccomp refused a filter attribute: %s", strerror(-r));
    }
    r = build_rules(&b);
    if (r < 0) {
        seccomp_release(b.ctx);
        return r;
    }
    *out = b.ctx;
    return 0;
}

int ic_seccomp_export_bpf(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o,
                          int fd, ic_err *err)
{
    scmp_filter_ctx ctx = NULL;
    int r = build_ctx(p, o, &ctx, err);
    if (r < 0)
        return r;
    r = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (r < 0)
        return ic_err_set(err, -r, "cannot export the BPF program: %s", strerror(-r));
    return 0;
}

int ic_seccomp_compile_memfd(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o,
                             int *fd_out, size_t *insns, ic_err *err)
{
    _cleanup_close_ int fd = (int)syscall(SYS_memfd_create, "ironclaw-seccomp",
                                          MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return ic_err_sys(err, errno, "memfd_create");
    int r = ic_seccomp_export_bpf(p, o, fd, err);
    if (r < 0)
        return r;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ic_err_sys(err, errno, "fstat of the BPF memfd");
    size_t n = (size_t)st.st_size / sizeof(struct sock_filter);
    if (n == 0 || (size_t)st.st_size % sizeof(struct sock_filter))
        return ic_err_set(err, EINVAL, "libseccomp produced a malformed BPF program");
    if (n > BPF_MAXINSNS)
        return ic_err_set(err, E2BIG, "the filter needs %zu BPF instructions, more than the "
                          "kernel's %d", n, BPF_MAXINSNS);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0 ||
        lseek(fd, 0, SEEK_SET) < 0)
        return ic_err_sys(err, errno, "cannot seal the BPF memfd");
    *insns = n;
    *fd_out = TAKE_FD(fd);
    return 0;
}
