/*
 * launch.c - the trampoline between ironclaw and a VMM process.
 *
 * libuv's uv_spawn cannot run code between fork and exec, yet a VMM must be
 * set up in exactly that window: it must die with its parent (so a kill -9
 * of ironclaw takes the VMM along), enter its network namespace, and its
 * jail and seccomp filter. So ironclaw spawns itself with a marker
 * argument; this code runs in that child, applies the settings step by
 * step, and execs the VMM. The settings survive execve, which is what
 * makes the trick work.
 *
 * Every step fails closed: the first one that cannot be done writes
 * "<step>: <reason>" to the status descriptor and the trampoline exits 127
 * without exec'ing anything. The descriptor is close-on-exec, so the owner
 * reads EOF with no message exactly when the VMM was exec'd.
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
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct launch_opts {
    pid_t parent;
    int status_fd;          /* -1: report on stderr only */
    const char *netns;      /* a network namespace to join (a bind-mounted nsfs file) */
    bool new_netns;         /* or a new, empty one */
    bool supervise;         /* stay as the VMM's supervisor (see the top) */
    char **vmm_argv;
};

static void die(const struct launch_opts *o, const char *step, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
static void die(const struct launch_opts *o, const char *step, int code, const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "%s: ", step);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(msg))
        n += vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    if (code && n > 0 && (size_t)n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(code));
    /* stderr is the VMM's log file: the owner shows its tail on failure. */
    fprintf(stderr, "ironclaw launch: %s\n", msg);
    if (o->status_fd >= 0) {
        ssize_t w = write(o->status_fd, msg, strlen(msg));
        (void)w;
    }
    _exit(127);
}

static int parse_fd(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    return end && *end == '\0' && v >= 3 && v < 1024 ? (int)v : -1;
}

static void parse(int argc, char **argv, struct launch_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->status_fd = -1;
    /* --status-fd comes first on the command line vm.c builds, so that
     * even a bad later option is reported through it. */
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--parent") == 0 && v) {
            o->parent = (pid_t)strtol(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--status-fd") == 0 && v) {
            o->status_fd = parse_fd(v);
            if (o->status_fd < 0)
                die(o, "options", EINVAL, "bad --status-fd '%s'", v);
            i++;
        } else if (strcmp(a, "--netns") == 0 && v) {
            o->netns = v;
            i++;
        } else if (strcmp(a, "--new-netns") == 0) {
            o->new_netns = true;
        } else if (strcmp(a, "--supervise") == 0) {
            o->supervise = true;
        } else {
            die(o, "options", EINVAL, "unknown launch option '%s'", a);
        }
    }
    if (i + 1 >= argc || o->parent <= 1)
        die(o, "options", EINVAL, "no VMM command or parent pid");
    if (o->netns && o->new_netns)
        die(o, "options", EINVAL, "--netns and --new-netns exclude each other");
    o->vmm_argv = argv + i + 1;
}

/* ---- the steps, in the order they run ------------------------------------ */

static void supervisor_signals(sigset_t *set);

/* A supervisor must outlive the moment of ironclaw's death long enough to
 * take its children along: it gets SIGTERM, blocked from here on and taken
 * by sigwaitinfo. *old receives the mask to restore in the VMM. */
static void die_with_parent(const struct launch_opts *o, sigset_t *old)
{
    sigset_t sup;
    supervisor_signals(&sup);
    sigprocmask(o->supervise ? SIG_BLOCK : SIG_SETMASK, o->supervise ? &sup : NULL, old);
    if (prctl(PR_SET_PDEATHSIG, o->supervise ? SIGTERM : SIGKILL) < 0)
        die(o, "death signal", errno, "PR_SET_PDEATHSIG");
    /* The parent may have died before the line above: then nobody would
     * ever kill us. */
    if (getppid() != o->parent)
        _exit(127);
}

static void enter_network(const struct launch_opts *o)
{
    if (o->new_netns && unshare(CLONE_NEWNET) < 0)
        die(o, "network namespace", errno, "cannot give the VMM an empty network namespace");
    if (o->netns) {
        int fd = open(o->netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die(o, "network namespace", errno, "cannot open %s", o->netns);
        if (setns(fd, CLONE_NEWNET) < 0)
            die(o, "network namespace", errno, "cannot enter %s", o->netns);
        close(fd);
    }
}

static void close_from(int from)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)from, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = from; fd < max && fd < 65536; fd++)
        close((int)fd);
}

/* The VMM keeps stdio only; the status descriptor closes at exec. */
static void close_inherited_fds(const struct launch_opts *o)
{
    int keep = o->status_fd;
    if (keep < 0) {
        close_from(3);
        return;
    }
    if (fcntl(keep, F_SETFD, FD_CLOEXEC) < 0)
        die(o, "descriptors", errno, "cannot mark the status descriptor close-on-exec");
    for (int fd = 3; fd < keep; fd++)
        close(fd);
    close_from(keep + 1);
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

/* Runs with supervisor_signals() blocked (old: the mask before). The
 * child execs; the supervisor closes its copy of the status descriptor so
 * that EOF still means "exec'd", then waits. */
static void supervise(const struct launch_opts *o, const sigset_t *old)
{
    sigset_t set;
    supervisor_signals(&set);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        die(o, "supervisor", errno, "PR_SET_CHILD_SUBREAPER");
    pid_t child = fork();
    if (child < 0)
        die(o, "supervisor", errno, "fork");
    if (child == 0) {
        sigprocmask(SIG_SETMASK, old, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(o->vmm_argv[0], o->vmm_argv);
        die(o, "exec", errno, "%s", o->vmm_argv[0]);
    }
    if (o->status_fd >= 0)
        close(o->status_fd);
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

/* Set once this program has shown it handles launch requests. Without it a
 * program that re-executes itself as the trampoline would rerun its own
 * main() in every child: a fork bomb. The one process-wide flag the
 * library keeps, written once before any VM exists. */
static bool launch_ready;

bool ic_vm__launch_ready(void)
{
    return launch_ready;
}

int ic_vm_launch_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], IC_LAUNCH_MARKER) != 0) {
        launch_ready = true;
        return -1;
    }
    struct launch_opts o;
    sigset_t old;
    parse(argc, argv, &o);
    die_with_parent(&o, &old);
    enter_network(&o);
    close_inherited_fds(&o);
    if (o.supervise)
        supervise(&o, &old);
    execv(o.vmm_argv[0], o.vmm_argv);
    die(&o, "exec", errno, "%s", o.vmm_argv[0]);
}
