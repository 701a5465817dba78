/*
 * jail.h - the VMM's jail (private to src/vm/): what the owner prepares
 * (jail.c: a per-VM uid, the root directory, cgroups; cgroup.c), what the
 * launch trampoline does with it between fork and exec (jail_enter.c:
 * namespaces, the waiter, the minimal root; elfdeps.c finds the
 * libraries), and the owner's side of the VMM's seccomp filter
 * (confine.c). docs/seccomp.md describes the layout.
 */
#ifndef IRONCLAW_VM_JAIL_H
#define IRONCLAW_VM_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ironclaw/err.h"
#include "ironclaw/paths.h"
#include "ironclaw/state.h"

/* ---- cgroups (cgroup.c) ------------------------------------------------- */

#define IC_CG_PARENT_DEFAULT "ironclaw"
#define IC_CG_MAX_DIRS 4

struct ic_cg_dir {
    char controllers[48];       /* "memory", "cpu,cpuacct", "memory cpu pids" (v2) */
    char mount[IC_PATH_MAX];     /* the hierarchy's mount point */
    char path[IC_PATH_MAX];
    bool v2;
};

struct ic_cg_plan {
    size_t n;
    struct ic_cg_dir dir[IC_CG_MAX_DIRS];
};

struct ic_cg_limits {
    uint64_t mem_bytes;          /* memory.max / memory.limit_in_bytes */
    unsigned cpus;               /* quota = cpus periods per period */
    uint64_t pids;               /* pids.max */
};

/* Finds, for each of the memory, cpu and pids controllers, the hierarchy
 * that offers it (v1 first, else v2) in mountinfo (a /proc/PID/mountinfo
 * file), and the directory <mount>/<parent>/<name> there. Fails when one
 * of them is offered nowhere. */
int ic_cg_plan(const char *mountinfo, const char *parent, const char *name,
               struct ic_cg_plan *plan, ic_err *err);
/* Creates one planned directory (its parent too) and writes its limits. */
int ic_cg_create(const struct ic_cg_dir *d, const struct ic_cg_limits *lim, ic_err *err);
/* Kills what is in the cgroup, waits for it to empty, removes it and its
 * parent if that is empty. A missing directory is success. */
int ic_cg_remove(const char *path, ic_err *err);
/* Moves pid into the cgroup (writes cgroup.procs). */
int ic_cg_join(const char *path, pid_t pid);

/* ---- the owner's part (jail.c) ------------------------------------------ */

#define IC_JAIL_UID_BASE 2100000000u
#define IC_JAIL_UID_COUNT 65536u
/* Memory the VMM needs beyond the guest's RAM (measured: docs/seccomp.md):
 * about 60 MiB of its own plus QEMU's TCG translation buffer (capped at
 * 128 MiB by qemu.c), with room to spare. */
#define IC_JAIL_MEM_OVERHEAD_MIB 256u
/* CPUs the VMM gets beyond its vCPUs, for its own threads (QEMU's main
 * loop does the device I/O). With vCPUs alone a busy 1-vCPU guest starved
 * its own I/O: 64 MiB through cat took 3.4 s against 2.4 s unconfined. */
#define IC_JAIL_CPU_OVERHEAD 1u
#define IC_JAIL_PIDS_MAX 128u
#define IC_JAIL_FSIZE_MAX (256ull << 20)
#define IC_JAIL_HOSTNAME "ironclaw-vmm"

enum ic_jail_kind { IC_JAIL_RO = 1, IC_JAIL_RW, IC_JAIL_DEV, IC_JAIL_EXE };

struct ic_jail_path {
    enum ic_jail_kind kind;
    char path[IC_PATH_MAX];
};

#define IC_JAIL_MAX_PATHS 24

/* Picks a uid in [base, base+count) that no other VM record uses, starting
 * from one derived from the VM id. */
int ic_jail_pick_uid(const char *runtime_dir, const char *id, uint32_t base, uint32_t count,
                     uint32_t *uid, ic_err *err);
/* Records and creates the cgroups of the plan with these limits; on
 * failure removes what it made. */
int ic_jail_cgroups(ic_state *st, const struct ic_cg_plan *plan,
                    const struct ic_cg_limits *lim, ic_err *err);
/* Removes the cgroups a record lists (killing what is in them). */
int ic_jail_reap(ic_state *st, ic_err *err);

/* ---- the trampoline's part (jail_enter.c) -------------------------------- */

struct ic_jail_opts {
    const char *root;             /* --jail-root: enables the jail */
    uid_t uid;
    gid_t gid;
    bool have_ids;
    gid_t groups[8];
    size_t n_groups;
    const char *hostname;
    const char *paths[IC_JAIL_MAX_PATHS + 1];   /* "ro:/p", "rw:/p", "dev:/p", "exe:/p" */
    size_t n_paths;
    const char *cgroups[IC_CG_MAX_DIRS];
    size_t n_cgroups;
    int control_fd;               /* the waiter reports the VMM's pid here; -1 none */
};

struct ic_jail_fail {
    const char *step;
    int code;
    char msg[400];
};

/* Parses one --jail-*, --cgroup or --hostname option; returns the number
 * of argv words used (1 or 2), 0 when `a` is not one, -1 on a bad value. */
int ic_jail_parse_opt(struct ic_jail_opts *j, const char *a, const char *v);
int ic_jail_join_cgroups(const struct ic_jail_opts *j, struct ic_jail_fail *f);
/* New mount, pid, ipc and uts namespaces; then fork: the calling process
 * stays behind as the waiter (forwards signals, reports the VMM's pid on
 * control_fd, exits as the VMM did) and never returns; the child returns
 * 0 as pid 1 of the new pid namespace, inside its new root. `check`
 * runs at each named step (test fault injection). */
typedef void (*ic_jail_check_fn)(const char *step, void *ud);
int ic_jail_enter(const struct ic_jail_opts *j, const char *exe, ic_jail_check_fn check,
                  void *ud, int *alive_fd, struct ic_jail_fail *f);
/* setgroups, setresgid, setresuid; then the death signal again (a change
 * of credentials clears it) and alive_fd is closed. */
int ic_jail_drop_privileges(const struct ic_jail_opts *j, int alive_fd, struct ic_jail_fail *f);

/* ---- ELF dependencies (elfdeps.c) ------------------------------------------ */

/* Calls fn for the program interpreter and every shared library `path`
 * needs, recursively, as the dynamic loader would find them (RUNPATH,
 * RPATH, ld.so.conf, the default directories). A file that is not a
 * dynamic ELF has no dependencies. */
typedef int (*ic_elf_dep_fn)(const char *lib, void *ud);
int ic_elf_deps(const char *path, ic_elf_dep_fn fn, void *ud, char *why, size_t why_size);

#endif
