/*
 * seccomp.h - system call policies for the VMM: named levels and user
 * policies in JSON, compiled to BPF with libseccomp, exported for
 * Firecracker's seccompiler, and evaluated again in user space by the
 * notification listener that feeds the audit trail (docs/seccomp.md).
 *
 * A policy is a default action plus rules. A rule names one system call,
 * an action, and zero to six argument conditions that must all hold; the
 * rules of one system call are OR'ed and must share one action (that is
 * what the kernel filter can express without ambiguity). Actions: allow,
 * errno(N), kill (the whole process), log (allow and record), trap
 * (SIGSYS).
 *
 * Compiled for a VMM with IC_SC_NOTIFY, every action but allow becomes a
 * user notification: the owner (listener below) records the call and
 * answers it with the policy's own action, so the audit names the exact
 * process and system call. Without it (export, the guest) the actions are
 * the kernel's own.
 */
#ifndef IRONCLAW_SECCOMP_H
#define IRONCLAW_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ironclaw/err.h"

typedef struct ic_seccomp_policy ic_seccomp_policy;

enum ic_sc_act {
    IC_SC_ALLOW = 0,
    IC_SC_ERRNO,
    IC_SC_KILL,
    IC_SC_TRAP,
    IC_SC_LOG,
};
#define IC_SC_ACT_COUNT 5

struct ic_sc_action {
    enum ic_sc_act kind;
    int err;                  /* IC_SC_ERRNO: 1..4095 */
};

enum ic_sc_op { IC_SC_EQ = 0, IC_SC_NE, IC_SC_LT, IC_SC_LE, IC_SC_GT, IC_SC_GE, IC_SC_MASKED_EQ };

struct ic_sc_cond {
    unsigned index;           /* argument 0..5 */
    enum ic_sc_op op;
    uint64_t value;
    uint64_t mask;            /* IC_SC_MASKED_EQ only */
};

#define IC_SC_MAX_RULES 4096
/* The level names, in order of strictness; "learn" records everything
 * and denies nothing (for measuring what a VMM needs). */
#define IC_SC_LEVEL_DEFAULT "default"
extern const char *const ic_seccomp_levels[];   /* NULL-terminated */

/* A level name (strict, default, permissive, learn) or the path of a JSON
 * policy file. Errors name the file and the member at fault. */
int ic_seccomp_policy_load(const char *spec, ic_seccomp_policy **out, ic_err *err);
/* Parses JSON text; `origin` (a file name) prefixes error messages. */
int ic_seccomp_policy_parse(const char *text, size_t len, const char *origin,
                            ic_seccomp_policy **out, ic_err *err);
void ic_seccomp_policy_free(ic_seccomp_policy *p);

const char *ic_seccomp_policy_name(const ic_seccomp_policy *p);
/* True for the built-in level "learn" and any policy that denies nothing. */
bool ic_seccomp_policy_denies_nothing(const ic_seccomp_policy *p);
struct ic_sc_action ic_seccomp_policy_default(const ic_seccomp_policy *p);
size_t ic_seccomp_policy_rule_count(const ic_seccomp_policy *p);

/* What the policy does with system call nr and these arguments. */
struct ic_sc_action ic_seccomp_policy_eval(const ic_seccomp_policy *p, int nr,
                                           const uint64_t args[6]);

struct json_t;
/* The policy in its JSON format (parses back to the same policy). */
struct json_t *ic_seccomp_policy_to_json(const ic_seccomp_policy *p);
/* The same rules in Firecracker's seccompiler format, one filter per
 * thread category (vmm, api, vcpu). Fails when a rule's action is neither
 * allow nor the default action (seccompiler has one match action). */
int ic_seccomp_policy_to_firecracker(const ic_seccomp_policy *p, struct json_t **out,
                                     ic_err *err);

/* ---- compiling ------------------------------------------------------------ */

enum {
    /* Non-allow actions become user notifications (SECCOMP_RET_USER_NOTIF). */
    IC_SC_NOTIFY = 1u << 0,
};

/* The descriptor on which the launch trampoline hands the notification
 * descriptor to its owner. It lies above the VMM's RLIMIT_NOFILE
 * (IC_SC_VMM_NOFILE), so no descriptor the VMM opens can ever have it. */
#define IC_SC_HANDOFF_FD 8191
#define IC_SC_VMM_NOFILE 4096

struct ic_sc_compile_opts {
    unsigned flags;
    /* >= 0: sendmsg() on this descriptor is always allowed, so that the
     * launcher can hand the notification descriptor over after the filter
     * is in place (see launch.c). -1: none. */
    int handoff_fd;
};

/* Writes the filter as raw BPF (struct sock_filter[]) to fd. */
int ic_seccomp_export_bpf(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o,
                          int fd, ic_err *err);
/* The same into a new memfd positioned at 0; *insns = instruction count. */
int ic_seccomp_compile_memfd(const ic_seccomp_policy *p, const struct ic_sc_compile_opts *o,
                             int *fd, size_t *insns, ic_err *err);

/* System call names of this architecture: number, or -1 when unknown. */
int ic_seccomp_syscall_nr(const char *name);
/* Name of nr into buf ("syscall_NNN" when unknown); returns buf. */
const char *ic_seccomp_syscall_name(int nr, char *buf, size_t size);
/* "allow", "errno(1)", "kill", "trap", "log". */
const char *ic_seccomp_action_str(struct ic_sc_action a, char *buf, size_t size);
/* Parses the same strings (and errno(EPERM) style names). */
int ic_seccomp_action_parse(const char *s, struct ic_sc_action *out);

/* ---- the listener ----------------------------------------------------------
 *
 * Serves a seccomp notification descriptor on a libuv loop: each
 * notification is evaluated against the policy, recorded in the audit
 * (audit.h) and answered: errno -> that error, log -> continue, kill ->
 * SIGKILL to the process, trap -> ENOSYS and SIGSYS. When the number of
 * violations (every action but log) reaches max_violations (0: no limit),
 * on_limit runs once.
 */
typedef struct ic_sc_listener ic_sc_listener;
struct ic_audit;
struct ic_audit_entry;

typedef void (*ic_sc_limit_fn)(void *ud, const struct ic_audit_entry *last);

struct ic_sc_listener_opts {
    const ic_seccomp_policy *policy;   /* borrowed; must outlive the listener */
    struct ic_audit *audit;            /* borrowed */
    uint64_t max_violations;
    ic_sc_limit_fn on_limit;
    /* The descriptor failed: nothing is answered any more, so the filtered
     * process would wait for ever; its owner must stop it. May be NULL. */
    void (*on_fail)(void *ud, const char *why);
    void *ud;
};

/* Takes ownership of notify_fd (closed by ic_sc_listener_close). */
int ic_sc_listener_start(uv_loop_t *loop, int notify_fd, const struct ic_sc_listener_opts *o,
                         ic_sc_listener **out, ic_err *err);
/* Answers nothing more; `closed` runs (may be NULL) once its handle is
 * closed and the listener freed. */
void ic_sc_listener_close(ic_sc_listener *l, void (*closed)(void *ud), void *ud);

#endif
