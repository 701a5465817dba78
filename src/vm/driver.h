/*
 * driver.h - what a VMM driver implements and what vm.c lends it.
 *
 * Private to src/vm/. vm.c owns the ic_vm struct, its state record and the
 * VMM process; a driver only knows how to turn a configured VM into a
 * running VMM with a connected channel. Every libuv handle a driver opens
 * must have handle->data == vm and be closed with ic_vm__close(), so that
 * vm.c knows when the VM can be freed.
 */
#ifndef IRONCLAW_VM_DRIVER_H
#define IRONCLAW_VM_DRIVER_H

#include "ironclaw/host.h"
#include "ironclaw/image.h"
#include "ironclaw/state.h"
#include "ironclaw/vm.h"

struct ic_vm_driver {
    const char *name;
    /* Begins starting the VM; completes with ic_vm__channel_up() or
     * ic_vm__fail(). Returns <0 for failures found synchronously. */
    int (*start)(ic_vm *vm, ic_err *err);
    /* A polite request to end (the backstop after the guest's poweroff). */
    void (*stop)(ic_vm *vm);
    /* Closes the driver's handles (ic_vm__close). Private data set with
     * ic_vm__set_priv must be one malloc'd block: vm.c frees it after the
     * close callbacks have run. */
    void (*release)(ic_vm *vm);
    /* The VMM runs in ironclaw's jail (jail.h); a driver with a jailer of
     * its own leaves this false. Declare paths with ic_vm__jail_path. */
    bool jail;
    /* The seccomp level the VMM gets when the user names none: it must
     * let the driver's own launch steps through (a jailer's, say). */
    const char *seccomp_level;
};

extern const struct ic_vm_driver ic_vm_driver_qemu;
extern const struct ic_vm_driver ic_vm_driver_firecracker;

/* ---- what vm.c offers to drivers ---------------------------------------- */

uv_loop_t *ic_vm__loop(ic_vm *vm);
ic_state *ic_vm__state(ic_vm *vm);
const struct ic_vm_config *ic_vm__config(ic_vm *vm);
const struct ic_image_paths *ic_vm__image(ic_vm *vm);
bool ic_vm__use_kvm(ic_vm *vm);
/* What the host offered when the VM was created (programs, features). */
const struct ic_host *ic_vm__host(ic_vm *vm);
void *ic_vm__priv(ic_vm *vm);
void ic_vm__set_priv(ic_vm *vm, void *priv);

/* Joins the VM directory and `name` into out (IC_PATH_MAX). */
int ic_vm__path(ic_vm *vm, const char *name, char *out, ic_err *err);

/* Spawns the VMM through the launch trampoline (own session, dies with
 * its parent, stdout/stderr appended to `log_path`), after recording it in
 * the state record under role "vmm". argv[0] must be an absolute path. */
int ic_vm__spawn_vmm(ic_vm *vm, char *const argv[], const char *log_path, ic_err *err);
/* The same, with IC_VM_SPAWN_* flags. SUPERVISE: argv[0] forks the real
 * VMM and exits (Firecracker's jailer); the trampoline then stays as a
 * supervisor that adopts the VMM, ends with it, and kills it when
 * ironclaw dies (see launch.c). */
#define IC_VM_SPAWN_SUPERVISE 1u
/* The trampoline opens the VM's tap (cfg->tap_name) in the VM's network
 * namespace and hands it to the VMM on IC_LAUNCH_TAP_FD (launch.h). */
#define IC_VM_SPAWN_TAP_FD 2u
/* Before the spawn: also make that tap persistently owned by uid/gid, so
 * that an unprivileged VMM (Firecracker under its jailer) can attach to it
 * by name. Only with IC_VM_SPAWN_TAP_FD. */
void ic_vm__set_tap_owner(ic_vm *vm, uid_t uid, gid_t gid);
int ic_vm__spawn_vmm_flags(ic_vm *vm, char *const argv[], const char *log_path, unsigned flags,
                           ic_err *err);

/* A path the jailed VMM needs, at the same absolute path inside its jail:
 * IC_JAIL_RO (read-only data), IC_JAIL_RW (a file it writes, created if
 * missing, or a socket it connects to; handed to its uid), IC_JAIL_DEV (a
 * device node), IC_JAIL_EXE (an ELF file it loads: its libraries come
 * along). The VMM binary and the image's kernel and initrd are added by
 * vm.c. Call before ic_vm__spawn_vmm. */
int ic_vm__jail_path(ic_vm *vm, int kind, const char *path, ic_err *err);

/* Keeps the VM from being freed while something outside its handles
 * (a thread-pool job, a listener) still refers to it. */
void ic_vm__hold(ic_vm *vm);
void ic_vm__unhold(ic_vm *vm);
/* The VMM broke its seccomp policy too often: kill it; `reason` becomes
 * the error of its exit. */
void ic_vm__violation(ic_vm *vm, const char *reason);

/* Hands over the connected channel, a malloc'd handle: the VM owns it
 * until ic_vm_take_channel(), whose caller must close and free it. */
void ic_vm__channel_up(ic_vm *vm, uv_stream_t *channel);
/* Reports a start failure (once; later calls are ignored). */
void ic_vm__fail(ic_vm *vm, const ic_err *err);

/* Closes a handle whose data is the VM, counting it until its close
 * callback has run. Safe on handles already closing. */
void ic_vm__close(ic_vm *vm, uv_handle_t *h);

#endif
