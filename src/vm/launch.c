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
 * first. ironclaw thus still sees one child whose life is the VMM's. The
 * seccomp filter then goes on in the supervised child, not the supervisor.
 *
 * The steps, in order: death signal, descriptors (the control socket moves
 * to IC_SC_HANDOFF_FD, the BPF program is read), cgroup, network
 * namespace, the jail (namespaces, fork, mounts, root, pivot_root,
 * hostname: jail_enter.c), rlimits, uid, no_new_privs, seccomp, exec.
 * The seccomp filter goes last, just before execve, so that it confines
 * the VMM and nothing of ours; it is installed with a notification
 * listener, which is handed to the owner over the control socket
 * (SCM_RIGHTS). IRONCLAW_TEST_FAIL_JAIL_STEP=<step> makes that step fail
 * (tests only: it can only stop a VMM from starting).
 */
#include "vm/control.h"
#include "vm/launch.h"
#include "vm/jail.h"

#include "ironclaw/seccomp.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RLIMITS 8

struct launch_opts {
    pid_t parent;
    int status_fd;          /* -1: report on stderr only */
    const char *netns;      /* a network namespace to join (a bind-mounted nsfs file) */
    bool new_netns;         /* or a new, empty one */
    bool supervise;         /* stay as the VMM's supervisor (see the top) */
    const char *tap;        /* a tap to open for the VMM on IC_LAUNCH_TAP_FD */
    bool tap_owned;         /* and to hand over to tap_uid/tap_gid */
    uid_t tap_uid;
    gid_t tap_gid;
    int control_fd;         /* socket to the owner: VMM pid, seccomp listener */
    int seccomp_fd;         /* memfd holding the BPF program */
    struct sock_filter *bpf;
    size_t bpf_len;
    struct { int resource; struct rlimit lim; } rlimits[MAX_RLIMITS];
    size_t n_rlimits;
    struct ic_jail_opts jail;
    int alive_fd;           /* jail: the waiter's liveness pipe */
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

/* --rlimit NAME=SOFT:HARD */
static bool parse_rlimit(struct launch_opts *o, const char *v)
{
    static const struct {
        const char *name;
        int resource;
    } names[] = {{"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC}, {"core", RLIMIT_CORE},
                 {"fsize", RLIMIT_FSIZE}, {"memlock", RLIMIT_MEMLOCK}};
    const char *eq = strchr(v, '=');
    if (!eq || o->n_rlimits >= MAX_RLIMITS)
        return false;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strncmp(v, names[i].name, (size_t)(eq - v)) != 0 || names[i].name[eq - v])
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long long soft = strtoull(eq + 1, &end, 10);
        if (errno || !end || *end != ':')
            return false;
        unsigned long long hard = strtoull(end + 1, &end, 10);
        if (errno || !end || *end || soft > hard)
            return false;
        o->rlimits[o->n_rlimits].resource = names[i].resource;
        o->rlimits[o->n_rlimits].lim = (struct rlimit){soft, hard};
        o->n_rlimits++;
        return true;
    }
    return false;
}

static void parse(int argc, char **argv, struct launch_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->status_fd = -1;
    o->control_fd = -1;
    o->seccomp_fd = -1;
    o->alive_fd = -1;
    o->jail.control_fd = -1;
    /* --status-fd comes first on the command line vm.c builds, so that
     * even a bad later option is reported through it. */
    int i = 2;
    for (; i < argc && argv[i] && strcmp(argv[i], "--") != 0; i++) {
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
        } else if (strcmp(a, "--tap") == 0 && v) {
            if (strlen(v) >= IFNAMSIZ)
                die(o, "options", EINVAL, "bad --tap '%s'", v);
            o->tap = v;
            i++;
        } else if (strcmp(a, "--tap-owner") == 0 && v) {
            unsigned u, g;
            char end;
            if (sscanf(v, "%u:%u%c", &u, &g, &end) != 2)
                die(o, "options", EINVAL, "bad --tap-owner '%s'", v);
            o->tap_owned = true;
            o->tap_uid = (uid_t)u;
            o->tap_gid = (gid_t)g;
            i++;
        } else if ((strcmp(a, "--control-fd") == 0 || strcmp(a, "--seccomp-fd") == 0) && v) {
            int fd = parse_fd(v);
            if (fd < 0)
                die(o, "options", EINVAL, "bad %s '%s'", a, v);
            *(a[2] == 'c' ? &o->control_fd : &o->seccomp_fd) = fd;
            i++;
        } else if (strcmp(a, "--rlimit") == 0 && v) {
            if (!parse_rlimit(o, v))
                die(o, "options", EINVAL, "bad --rlimit '%s'", v);
            i++;
        } else {
            int used = ic_jail_parse_opt(&o->jail, a, v);
            if (used < 0)
                die(o, "options", EINVAL, "bad value for %s: '%s'", a, v);
            if (used == 0)
                die(o, "options", EINVAL, "unknown launch option '%s'", a);
            i += used - 1;
        }
    }
    if (i + 1 >= argc || o->parent <= 1)
        die(o, "options", EINVAL, "no VMM command or parent pid");
    if (o->netns && o->new_netns)
        die(o, "options", EINVAL, "--netns and --new-netns exclude each other");
    o->vmm_argv = argv + i + 1;
}

/* ---- the steps, in the order they run ------------------------------------ */

/* Test-only fault injection: IRONCLAW_TEST_FAIL_JAIL_STEP=<step>. */
static void check_step(const char *step, void *ud)
{
    const char *want = getenv("IRONCLAW_TEST_FAIL_JAIL_STEP");
    if (want && strcmp(want, step) == 0)
        die(ud, step, 0, "injected failure (IRONCLAW_TEST_FAIL_JAIL_STEP, for tests only)");
}

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

/* Attaches to the tap the network layer made in this namespace and puts
 * it where the VMM's command line expects it. */
static void open_tap(const struct launch_opts *o)
{
    if (!o->tap)
        return;
    check_step("tap", (void *)o);
    /* TUNSETIFF would make a new tap of that name: only attach. */
    if (if_nametoindex(o->tap) == 0)
        die(o, "tap", errno, "cannot attach to the tap %s", o->tap);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        die(o, "tap", errno, "cannot open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", o->tap);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        die(o, "tap", errno, "cannot attach to the tap %s", o->tap);
    if (o->tap_owned && (ioctl(fd, TUNSETOWNER, (unsigned long)o->tap_uid) < 0 ||
                         ioctl(fd, TUNSETGROUP, (unsigned long)o->tap_gid) < 0))
        die(o, "tap", errno, "cannot give the tap %s to uid %u", o->tap, (unsigned)o->tap_uid);
    if (fd != IC_LAUNCH_TAP_FD) {
        if (dup2(fd, IC_LAUNCH_TAP_FD) < 0)
            die(o, "tap", errno, "cannot move the tap descriptor");
        close(fd);
    }
}

/* The control socket moves above the VMM's RLIMIT_NOFILE, where the
 * seccomp filter lets sendmsg through (IC_SC_HANDOFF_FD); the BPF program
 * is read into memory. */
static void prepare_descriptors(struct launch_opts *o)
{
    check_step("descriptors", o);
    if (o->control_fd >= 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
            die(o, "descriptors", errno, "getrlimit");
        if (rl.rlim_cur <= IC_SC_HANDOFF_FD) {
            rl.rlim_cur = IC_SC_HANDOFF_FD + 1;
            if (rl.rlim_max < rl.rlim_cur)
                rl.rlim_max = rl.rlim_cur;
            if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                die(o, "descriptors", errno, "cannot raise RLIMIT_NOFILE for the hand-off");
        }
        if (dup3(o->control_fd, IC_SC_HANDOFF_FD, O_CLOEXEC) < 0)
            die(o, "descriptors", errno, "cannot move the control socket");
        close(o->control_fd);
        o->control_fd = IC_SC_HANDOFF_FD;
        o->jail.control_fd = IC_SC_HANDOFF_FD;
    }
    if (o->seccomp_fd >= 0) {
        struct stat st;
        if (fstat(o->seccomp_fd, &st) < 0 || st.st_size <= 0 ||
            st.st_size % (off_t)sizeof(struct sock_filter) ||
            st.st_size > (off_t)(BPF_MAXINSNS * sizeof(struct sock_filter)))
            die(o, "descriptors", EINVAL, "the seccomp program is missing or malformed");
        o->bpf = malloc((size_t)st.st_size);
        if (!o->bpf || pread(o->seccomp_fd, o->bpf, (size_t)st.st_size, 0) != st.st_size)
            die(o, "descriptors", errno ? errno : EIO, "cannot read the seccomp program");
        o->bpf_len = (size_t)st.st_size / sizeof(struct sock_filter);
        close(o->seccomp_fd);
        o->seccomp_fd = -1;
    }
}

static void join_cgroups(struct launch_opts *o)
{
    check_step("cgroup", o);
    struct ic_jail_fail f = {0};
    if (ic_jail_join_cgroups(&o->jail, &f) < 0)
        die(o, f.step, f.code, "%s", f.msg);
}

static void enter_jail(struct launch_opts *o)
{
    struct ic_jail_fail f = {0};
    if (ic_jail_enter(&o->jail, o->vmm_argv[0], check_step, o, &o->alive_fd, &f) < 0)
        die(o, f.step, f.code, "%s", f.msg);
}

static void set_rlimits(struct launch_opts *o)
{
    check_step("rlimits", o);
    for (size_t i = 0; i < o->n_rlimits; i++)
        if (setrlimit(o->rlimits[i].resource, &o->rlimits[i].lim) < 0)
            die(o, "rlimits", errno, "setrlimit %d", o->rlimits[i].resource);
}

static void drop_privileges(struct launch_opts *o)
{
    check_step("uid", o);
    struct ic_jail_fail f = {0};
    if (ic_jail_drop_privileges(&o->jail, o->alive_fd, &f) < 0)
        die(o, f.step, f.code, "%s", f.msg);
    o->alive_fd = -1;
}

static void no_new_privs(struct launch_opts *o)
{
    check_step("no_new_privs", o);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(o, "no_new_privs", errno, "PR_SET_NO_NEW_PRIVS");
}

/* Last before exec. After this only sendmsg (to the owner, always allowed
 * on IC_SC_HANDOFF_FD) and execve run in this process. */
static void install_seccomp(struct launch_opts *o)
{
    check_step("seccomp", o);
    if (!o->bpf)
        return;
    struct sock_fprog prog = {.len = (unsigned short)o->bpf_len, .filter = o->bpf};
    unsigned flags = o->control_fd >= 0 ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0;
    long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (fd < 0)
        die(o, "seccomp", errno, "cannot install the seccomp filter");
    /* close-on-exec: the descriptor is gone from the VMM at execve */
    if (flags && ic_control_send(o->control_fd, IC_CONTROL_NOTIFY, 0, (int)fd) < 0)
        die(o, "seccomp", errno, "cannot hand the notification descriptor to the owner");
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

static int by_fd(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* The VMM keeps stdio and its tap; the status descriptor and the control
 * socket close at exec. */
static void close_inherited_fds(const struct launch_opts *o)
{
    int keep[3] = {o->status_fd, o->control_fd, o->tap ? IC_LAUNCH_TAP_FD : -1};
    for (int k = 0; k < 2; k++)
        if (keep[k] >= 0 && fcntl(keep[k], F_SETFD, FD_CLOEXEC) < 0)
            die(o, "descriptors", errno, "cannot mark descriptor %d close-on-exec", keep[k]);
    qsort(keep, 3, sizeof(int), by_fd);
    int from = 3;
    for (int k = 0; k < 3; k++) {
        if (keep[k] < from)
            continue;
        for (int fd = from; fd < keep[k]; fd++)
            close(fd);
        from = keep[k] + 1;
    }
    close_from(from);
}

/* The last steps, in the process that becomes the VMM: the filter goes on
 * just before execve so that it confines the VMM and nothing of ours. */
static void exec_vmm(struct launch_opts *o) __attribute__((noreturn));
static void exec_vmm(struct launch_opts *o)
{
    no_new_privs(o);
    install_seccomp(o);
    /* A jailed VMM gets a clean environment: nothing of ours leaks. */
    static char *const clean_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    unsetenv("IRONCLAW_TEST_FAIL_JAIL_STEP");
    execve(o->vmm_argv[0], o->vmm_argv, o->jail.root ? clean_env : environ);
    die(o, "exec", errno, "%s", o->vmm_argv[0]);
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
static void supervise(struct launch_opts *o, const sigset_t *old)
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
        exec_vmm(o);
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
    prepare_descriptors(&o);
    join_cgroups(&o);
    enter_network(&o);
    open_tap(&o);
    enter_jail(&o);
    set_rlimits(&o);
    drop_privileges(&o);
    close_inherited_fds(&o);
    if (o.supervise)
        supervise(&o, &old);
    exec_vmm(&o);
}
