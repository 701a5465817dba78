/*
 * launch.c - the trampoline between ironclaw and a VMM process.
 *
 * libuv's uv_spawn cannot run code between fork and exec, yet a VMM must be
 * set up in exactly that window: it must die with its parent (so a kill -9
 * of ironclaw takes the VMM along) and, later, enter its jail and seccomp
 * filter. So ironclaw spawns itself with a marker argument; this code runs
 * in that child, applies the settings, and execs the VMM. The settings
 * survive execve, which is what makes the trick work.
 */
#include "vm/launch.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void close_inherited_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < max && fd < 65536; fd++)
        close((int)fd);
}

static void die(const char *what, int code)
{
    /* stderr is the VMM's log file: the owner shows its tail on failure. */
    fprintf(stderr, "ironclaw launch: %s: %s\n", what, strerror(code));
    _exit(127);
}

int ic_vm_launch_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], IC_LAUNCH_MARKER) != 0)
        return -1;
    pid_t parent = 0;
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--parent") == 0 && i + 1 < argc)
            parent = (pid_t)strtol(argv[++i], NULL, 10);
        else
            die("unknown launch option", EINVAL);
    }
    if (i + 1 >= argc || parent <= 1)
        die("no VMM command or parent pid", EINVAL);

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        die("PR_SET_PDEATHSIG", errno);
    /* The parent may have died before the line above: then nobody would
     * ever kill us. */
    if (getppid() != parent)
        _exit(127);
    close_inherited_fds();
    execv(argv[i + 1], argv + i + 1);
    die(argv[i + 1], errno);
    return -1;
}
