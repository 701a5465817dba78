/*
 * vm.h - one microVM's lifecycle, whatever the VMM.
 *
 * The rest of ironclaw sees a VM only through this header: create it, start
 * it, get its channel (a byte stream to the guest agent), stop it, destroy
 * it. The driver behind it (qemu or firecracker) is chosen at create time
 * and stays private to src/vm/.
 *
 * Everything runs on the caller's libuv loop and never blocks it. Progress
 * is reported through one callback:
 *
 *   create -> start -> IC_VM_EV_CHANNEL (ic_vm_channel() is now valid)
 *          ... any time: IC_VM_EV_EXITED (the VMM process ended; `err` says
 *              how if it was not asked to) or IC_VM_EV_FAILED (start failed)
 *   stop   -> waits for the VMM to end on its own for a grace period, then
 *             kills it; IC_VM_EV_EXITED follows.
 *   destroy-> kills what is left, removes every resource in the VM's state
 *             record and frees the VM once its handles are closed.
 *
 * Every resource (directory, socket, process) is written to the VM's state
 * record before it is created (see state.h), so a crash of the owner leaves
 * nothing `ironclaw gc` cannot find.
 */
#ifndef IRONCLAW_VM_H
#define IRONCLAW_VM_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "ironclaw/err.h"

typedef struct ic_vm ic_vm;
struct ic_net_spec;
struct ic_net;

struct ic_vm_config {
    const char *name;          /* label only, validated; NULL for none */
    const char *vmm;           /* "auto", "qemu" or "firecracker" */
    const char *image;         /* guest image name, NULL for "default" */
    unsigned cpus;             /* 1..32 */
    unsigned mem_mib;          /* 64..65536 */
    uint32_t channel_timeout_ms; /* VMM to connect its channel (Firecracker: the guest to
                                  * accept the vsock connection); 0 = default */
    bool debug_guest;          /* ironclaw.debug=1 on the guest command line */

    /* A disk for the guest (/dev/vda), NULL for none: attached read-only,
     * or with drive_copy as a writable per-VM copy that is thrown away. */
    const char *drive;
    bool drive_copy;

    /* Firecracker only (docs/firecracker.md). */
    const char *fc_filter;     /* custom seccomp filter in seccompiler's JSON format;
                                * NULL = Firecracker's built-in filters */
    bool no_jailer;            /* run Firecracker without its jailer (weaker isolation) */

    /* Network namespace the VMM joins (an nsfs file); NULL gives it a new,
     * empty one (no network). Firecracker's jailer gets it as --netns. */
    const char *netns;
    /* The VM's network (net.h): NULL or mode IC_NET_NONE for none. With
     * an allow-list, vm.c sets the network up before the VMM starts (and
     * `netns` must be NULL: the VM gets a namespace of its own). */
    const struct ic_net_spec *net;
    /* Filled in by vm.c once the network is up, for the drivers (NULL
     * without a network): the tap device inside `netns`, the guest NIC's
     * MAC, and the kernel command-line word that gives the guest agent its
     * address and gateway. */
    const char *tap_name;
    const char *mac;
    const char *net_cmdline;
    /* Confinement of the VMM (docs/seccomp.md). */
    const char *seccomp;       /* level or JSON policy file; NULL = "default" */
    struct ic_audit *audit;    /* blocked and logged system calls go here (borrowed,
                                * must outlive the VM); NULL: the VM keeps its own */
    uint64_t max_violations;   /* end the VM after this many blocked calls; 0 = no limit */
    bool no_jail;              /* weaker: no jail (namespaces, root, uid, cgroups); warned */
    uint32_t jail_uid_base;    /* the jailed VMM's per-VM uid range; 0 = defaults */
    uint32_t jail_uid_count;
    const char *cgroup_parent; /* the VMs' cgroups live in <hierarchy>/<this>; NULL = "ironclaw" */
};

#define IC_VM_DEFAULT_CPUS 1
#define IC_VM_DEFAULT_MEM_MIB 256

enum ic_vm_event {
    IC_VM_EV_CHANNEL = 1,  /* channel stream connected */
    IC_VM_EV_FAILED,       /* start failed; err says why; call destroy */
    IC_VM_EV_EXITED,       /* the VMM process is gone */
};

typedef void (*ic_vm_event_fn)(ic_vm *vm, enum ic_vm_event ev, const ic_err *err, void *ud);

/* Picks the driver (see host.h), gives the VM its id and runtime directory
 * and writes its state record. Nothing runs yet. */
int ic_vm_create(uv_loop_t *loop, const struct ic_vm_config *cfg, ic_vm_event_fn cb,
                 void *ud, ic_vm **out, ic_err *err);

/* Starts the VMM. Returns <0 only for failures found before anything
 * asynchronous began; later failures arrive as IC_VM_EV_FAILED. */
int ic_vm_start(ic_vm *vm, ic_err *err);

/* The connected channel (a malloc'd handle). After this call the caller
 * owns it: close it with uv_close and free() it in the close callback. */
uv_stream_t *ic_vm_take_channel(ic_vm *vm);

/* Asks the VMM to end and gives it grace_ms before SIGKILL. The guest is
 * normally told to power off over the channel first; this is the backstop. */
void ic_vm_stop(ic_vm *vm, uint32_t grace_ms);

/* Kills, closes, reaps the state record; `done` runs once the VM's handles
 * are closed and it has been freed (may be NULL). The first cleanup
 * failure is passed to done. */
typedef void (*ic_vm_done_fn)(const ic_err *err, void *ud);
void ic_vm_destroy(ic_vm *vm, ic_vm_done_fn done, void *ud);

const char *ic_vm_id(const ic_vm *vm);
const char *ic_vm_name(const ic_vm *vm);      /* "" when none */
const char *ic_vm_driver(const ic_vm *vm);    /* "qemu", ... */
const char *ic_vm_dir(const ic_vm *vm);       /* runtime directory */
const char *ic_vm_accel(const ic_vm *vm);     /* "kvm" or "tcg" */
int ic_vm_pid(const ic_vm *vm);               /* VMM pid, 0 when not running */
/* The VM's network (net.h), NULL with --net none. */
const struct ic_net *ic_vm_net(const ic_vm *vm);
bool ic_vm_running(const ic_vm *vm);
/* The VM's audit trail (audit.h): what its seccomp policy blocked or
 * logged, and why the VM was stopped for it, if it was. */
struct ic_audit;
const struct ic_audit *ic_vm_audit(const ic_vm *vm);
/* The last `max` bytes of the guest console log, for error messages. */
int ic_vm_console_tail(const ic_vm *vm, char *out, size_t max);

/* Removes everything a VM's state record lists, whatever layer created
 * it (processes, paths, and the isolation layers' resources). Idempotent;
 * keeps going past failures and reports the first. Blocking: call it in
 * the thread pool or from a command such as `ironclaw gc`. */
struct ic_state;
int ic_vm_reap_record(struct ic_state *st, ic_err *err);

/* Entry point of the launch trampoline: a program using this library must
 * call it first thing in main(). It returns -1 when argv is not a launch
 * request; otherwise it never returns (it execs the VMM or exits 127). */
int ic_vm_launch_main(int argc, char **argv);

#endif
