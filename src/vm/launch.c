/*
 * launch.c - the trampoline between ironclaw and a VMM process.
 *
 * libuv's uv_spawn cannot run code between fork and exec, yet a VMM must be
 * set up in exactly that window: it must die with its parent (so a kill -9
 * of ironclaw takes the VMM along) and, later, enter its jail and seccomp
 * filter. So ironclaw spawns itself with a marker argument; this code runs
 * in that child, applies the settings, and execs the VMM. The settings
 * survive execve, which is what makes the trick work.
 *
 * With --supervise (Firecracker's jailer) the trampoline stays as a tiny
 * supervisor instead of exec'ing: the jailer forks the real VMM into a new
 * pid namespace and exits, and drops privileges (which clears a death
 * signal), so neither "dies with its parent" nor "the VMM is our child"
 * would hold. The supervisor is a child subreaper, so the VMM becomes its
 * child when the jailer exits; it exits with the status of the last child
 * to end, and when ironclaw dies (or it gets SIGTERM) it kills every child
 * first. ironclaw thus still sees one child whose life is the VMM's.
 */
#include "vm/launch.h"

#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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

/* SIGKILLs every child of ours (found in /proc: after a reparent we do
 * not know their pids). */
static void kill_children(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    struct dirent *de;
    pid_t self = getpid();
    while ((de = readdir(d))) {
        pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
        if (pid <= 1 || pid == self)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        int ppid = 0;
        char st;
        if (p && sscanf(p + 1, " %c %d", &st, &ppid) == 2 && ppid == self)
            kill(pid, SIGKILL);
    }
    closedir(d);
}

static int wait_status_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void supervisor_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
}

/* Runs with supervisor_signals() blocked (old: the mask before). */
static void supervise(char **argv, const sigset_t *old)
{
    sigset_t set;
    supervisor_signals(&set);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        die("PR_SET_CHILD_SUBREAPER", errno);
    pid_t child = fork();
    if (child < 0)
        die("fork", errno);
    if (child == 0) {
        sigprocmask(SIG_SETMASK, old, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(argv[0], argv);
        die(argv[0], errno);
    }
    int last = 0;
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            /* ironclaw died (the death signal) or asked us to end. */
            for (int round = 0; round < 100; round++) {
                kill_children();
                pid_t p;
                while ((p = waitpid(-1, NULL, WNOHANG)) > 0)
                    ;
                if (p < 0 && errno == ECHILD)
                    break;
                usleep(10000);
            }
            _exit(128 + sig);
        }
        pid_t p;
        int status;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0)
            last = wait_status_code(status);
        if (p < 0 && errno == ECHILD)
            _exit(last);
    }
}

int ic_vm_launch_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], IC_LAUNCH_MARKER) != 0)
        return -1;
    pid_t parent = 0;
    bool supervised = false;
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--parent") == 0 && i + 1 < argc)
            parent = (pid_t)strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--supervise") == 0)
            supervised = true;
        else
            die("unknown launch option", EINVAL);
    }
    if (i + 1 >= argc || parent <= 1)
        die("no VMM command or parent pid", EINVAL);

    /* A supervisor must outlive the moment of ironclaw's death long enough
     * to take its children along: it gets SIGTERM, blocked from here on and
     * taken by sigwaitinfo. */
    sigset_t sup, old;
    supervisor_signals(&sup);
    if (supervised)
        sigprocmask(SIG_BLOCK, &sup, &old);
    if (prctl(PR_SET_PDEATHSIG, supervised ? SIGTERM : SIGKILL) < 0)
        die("PR_SET_PDEATHSIG", errno);
    /* The parent may have died before the line above: then nobody would
     * ever kill us. */
    if (getppid() != parent)
        _exit(127);
    close_inherited_fds();
    if (supervised)
        supervise(argv + i + 1, &old);
    execv(argv[i + 1], argv + i + 1);
    die(argv[i + 1], errno);
    return -1;
}
