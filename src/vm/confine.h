/*
 * confine.h - the owner's side of a VMM's confinement (private to
 * src/vm/, see confine.c): seccomp policy and listener, audit, the jail's
 * launch options. vm.c drives it around the VMM's spawn; drivers only
 * declare the paths their VMM needs (ic_vm__jail_path in driver.h).
 */
#ifndef IRONCLAW_VM_CONFINE_H
#define IRONCLAW_VM_CONFINE_H

#include "vm/driver.h"

typedef struct ic_confine ic_confine;
struct ic_audit;

struct ic_confine_spawn {
    ic_state *state;
    unsigned mem_mib;
    unsigned cpus;
    bool jail;               /* the driver wants ironclaw's jail */
};

/* Loads the policy (errors name it) and sets up the audit. */
/* default_level: the seccomp level when cfg->seccomp names none. */
int ic_confine_new(const struct ic_vm_config *cfg, const char *default_level, ic_confine **out,
                   ic_err *err);
void ic_confine_free(ic_confine *c);
const struct ic_audit *ic_confine_audit(const ic_confine *c);

/* A path the VMM needs in its jail (kind: enum ic_jail_kind in jail.h). */
int ic_confine_add_path(ic_confine *c, int kind, const char *path, ic_err *err);

/* Before the spawn: compiles the filter, makes the control socket, and for
 * a jail picks the uid and records and creates the root and cgroups. */
int ic_confine_prepare(ic_confine *c, const struct ic_confine_spawn *s, ic_err *err);
/* The trampoline options to add (owned by c), and the descriptors that
 * must become the trampoline's fds 4 (control socket) and 5 (BPF). */
size_t ic_confine_args(const ic_confine *c, char **out, size_t max);
void ic_confine_child_fds(const ic_confine *c, int fds[2]);
/* After a successful spawn: closes the child's ends, watches the control
 * socket, starts the audit file timer. */
int ic_confine_spawned(ic_confine *c, ic_vm *vm, ic_err *err);
/* Closes the handles (counted by vm.c); free later with ic_confine_free. */
void ic_confine_release(ic_confine *c);

#endif
