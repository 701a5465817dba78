/*
 * launch.h - the launch trampoline's marker (private to src/vm/).
 *
 * vm.c spawns: <self> IC_LAUNCH_MARKER --parent PID -- VMM ARGS...
 * and ic_vm_launch_main() (vm.h) turns that into the VMM process.
 */
#ifndef IRONCLAW_VM_LAUNCH_H
#define IRONCLAW_VM_LAUNCH_H

#include "ironclaw/vm.h"

#define IC_LAUNCH_MARKER "__ironclaw_launch"

#include <stdbool.h>

/* With --tap NAME the trampoline opens that tap device (inside the VM's
 * network namespace, before any privilege is dropped) and leaves it on
 * this descriptor for the VMM: a jailed, unprivileged VMM could not. */
#define IC_LAUNCH_TAP_FD 6

/* True once ic_vm_launch_main() has run in this process (and found no
 * launch request): only then may it re-execute itself as the trampoline. */
bool ic_vm__launch_ready(void);

#endif
