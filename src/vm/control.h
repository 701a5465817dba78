/*
 * control.h - the launch trampoline's control channel to its owner
 * (private to src/vm/): one end of a socketpair, on the trampoline's fd 4,
 * whose other end confine.c watches on the loop.
 *
 * Every message is IC_CONTROL_MSG_SIZE bytes: a tag, three bytes of
 * padding and a native int32.
 *   IC_CONTROL_PID     the jailed VMM's pid (jail_enter.c's waiter)
 *   IC_CONTROL_NOTIFY  value unused; the seccomp user-notification
 *                      descriptor attached (SCM_RIGHTS), sent by launch.c
 *                      last before exec
 */
#ifndef IRONCLAW_VM_CONTROL_H
#define IRONCLAW_VM_CONTROL_H

#include <stdint.h>
#include <sys/types.h>

#define IC_CONTROL_MSG_SIZE 8
#define IC_CONTROL_PID 'P'
#define IC_CONTROL_NOTIFY 'N'

struct ic_control_msg {
    char tag;
    int32_t value;
    int fd;          /* the descriptor that came with it (close-on-exec), or -1 */
};

/* Sends one message, with fd attached when it is >= 0; never raises
 * SIGPIPE. Only sendmsg runs, so it is safe between fork and exec and
 * under the trampoline's own seccomp filter. 0 or -errno. */
int ic_control_send(int sock, char tag, int32_t value, int fd);
/* Receives one message (flags as for recvmsg). Returns the bytes read
 * (0 at end of file) with *m filled, or -errno. */
ssize_t ic_control_recv(int sock, int flags, struct ic_control_msg *m);

#endif
