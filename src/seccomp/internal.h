/*
 * internal.h - the seccomp module's private view of a policy (src/seccomp/
 * only): policy.c parses and checks it, levels.c builds the named levels,
 * compile.c turns it into BPF, listener.c evaluates it again.
 */
#ifndef IRONCLAW_SECCOMP_INTERNAL_H
#define IRONCLAW_SECCOMP_INTERNAL_H

#include "ironclaw/seccomp.h"

struct sc_rule {
    int nr;
    struct ic_sc_action act;
    unsigned ncond;
    struct ic_sc_cond cond[6];
};

struct ic_seccomp_policy {
    char name[64];
    char description[256];
    struct ic_sc_action def;
    struct sc_rule *rules;
    size_t n, cap;
};

ic_seccomp_policy *sc_policy_new(const char *name, struct ic_sc_action def);
/* Appends a rule; -ENOMEM or -E2BIG (more than IC_SC_MAX_RULES). */
int sc_policy_add(ic_seccomp_policy *p, int nr, struct ic_sc_action act, unsigned ncond,
                  const struct ic_sc_cond *cond);
/* Every rule of one system call must carry the same action. */
int sc_policy_check(const ic_seccomp_policy *p, const char *origin, ic_err *err);
bool sc_cond_holds(const struct ic_sc_cond *c, const uint64_t args[6]);
bool sc_action_eq(struct ic_sc_action a, struct ic_sc_action b);

/* Builds the named level; -ENOENT when `name` is not a level. */
int sc_level_build(const char *name, ic_seccomp_policy **out, ic_err *err);

#endif
