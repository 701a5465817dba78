/*
 * state.h - a VM's state record: the list of everything it owns.
 *
 * Each VM has a directory <runtime>/vms/<id>/ holding state.json. Every
 * resource the VM takes (directory, socket, file, process; later chains,
 * taps, namespaces, cgroups) is appended to the record and the record is
 * written to disk BEFORE the resource is created, so that whatever happens
 * to the owner (crash, kill -9), `ironclaw gc` finds and removes it.
 * Processes are recorded by role first, then their pid and start time once
 * known; the start time protects against killing a recycled pid.
 *
 * The owner holds an exclusive flock on <dir>/lock for the VM's life; a
 * record whose lock can be taken has no living owner.
 */
#ifndef IRONCLAW_STATE_H
#define IRONCLAW_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ironclaw/err.h"
#include "ironclaw/paths.h"

typedef struct ic_state ic_state;

#define IC_RES_DIR "dir"
#define IC_RES_SOCKET "socket"
#define IC_RES_FILE "file"
#define IC_RES_PROCESS "process"
/* A directory tree outside the VM directory (Firecracker's jail), removed
 * whole without following symlinks once the processes are gone. */
#define IC_RES_TREE "tree"
/* A cgroup directory, removed (rmdir) once its processes are gone. */
#define IC_RES_CGROUP "cgroup"
/* Network resources (net.h); their "path" is a name, not a file. */
#define IC_RES_NETNS "netns"       /* path: the nsfs bind mount */
#define IC_RES_LINK "link"         /* path: interface name (role "veth", "tap") */
#define IC_RES_CHAIN "chain"       /* path: chain name; role: the backend */
#define IC_RES_ADDRESS "address"   /* role "pool": path = the pool file; else informational */
#define IC_RES_SYSCTL "sysctl"     /* role "forwarding": path = the registry file */

/* Creates <runtime>/vms/<id>/, takes its lock and writes the first record. */
int ic_state_create(const char *runtime_dir, const char *id, const char *name,
                    const char *driver, ic_state **out, ic_err *err);
/* Loads a record for inspection (ps, gc). Does not take the lock. */
int ic_state_load(const char *vm_dir, ic_state **out, ic_err *err);
void ic_state_free(ic_state *st);

/* Records a resource (kind IC_RES_*, a role such as "vmm" or "channel",
 * and a path or NULL) and saves, before the caller creates it. */
int ic_state_add(ic_state *st, const char *kind, const char *role, const char *path, ic_err *err);
/* Fills in the pid of the process resource with that role, and saves. */
int ic_state_set_pid(ic_state *st, const char *role, pid_t pid, ic_err *err);
int ic_state_set_phase(ic_state *st, const char *phase, ic_err *err);
/* A number kept in the record under `key` (such as the VMM's uid), saved. */
int ic_state_set_num(ic_state *st, const char *key, int64_t value, ic_err *err);
bool ic_state_get_num(const ic_state *st, const char *key, int64_t *out);
/* The paths of the resources of one kind, in record order (for layers that
 * remove kinds of their own); returns how many, at most max. */
size_t ic_state_paths(const ic_state *st, const char *kind, const char **out, size_t max);

const char *ic_state_id(const ic_state *st);
const char *ic_state_name(const ic_state *st);     /* "" when none */
const char *ic_state_driver(const ic_state *st);
const char *ic_state_phase(const ic_state *st);
const char *ic_state_dir(const ic_state *st);
int64_t ic_state_created_ms(const ic_state *st);
pid_t ic_state_owner_pid(const ic_state *st);
/* pid of the process with that role if it is still the same process, else 0. */
pid_t ic_state_live_pid(const ic_state *st, const char *role);

/* True when the owner still holds the VM's lock. */
bool ic_state_owner_alive(const ic_state *st);

/* Calls fn for each resource of `kind` (every kind when NULL), newest
 * first; path may be NULL. Stops when fn returns < 0 and returns that. */
typedef int (*ic_state_res_fn)(const char *kind, const char *role, const char *path, void *ud);
int ic_state_each_resource(const ic_state *st, const char *kind, ic_state_res_fn fn, void *ud);

/* Kills the record's processes (SIGKILL, start time checked, plus any
 * process whose command line names the VM's directory) and waits until
 * they are gone. */
void ic_state_kill_processes(ic_state *st);
/* Kills the processes as above, removes its sockets, files, trees, cgroups
 * and directory (other kinds belong to their layers: ic_vm_reap_record).
 * Idempotent; keeps going past failures and reports the first. When a
 * tree or cgroup outside the VM directory cannot be removed, the directory
 * (and so the record) is kept, so that `ironclaw gc` can try again. */
int ic_state_reap(ic_state *st, ic_err *err);

/* Calls fn for every record under <runtime>/vms (unreadable ones are
 * passed with st == NULL and their directory). Stops if fn returns < 0. */
typedef int (*ic_state_visit_fn)(ic_state *st, const char *vm_dir, const ic_err *load_err, void *ud);
int ic_state_each(const char *runtime_dir, ic_state_visit_fn fn, void *ud, ic_err *err);

/* Start time of a process (clock ticks since boot, /proc/PID/stat field 22), 0 if gone. */
uint64_t ic_proc_starttime(pid_t pid);

#endif
