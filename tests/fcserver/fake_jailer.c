/*
 * fake_jailer.c - a test double of Firecracker's jailer, for the tests only.
 *
 * It checks its command line the way docs/jailer.md describes it (--id of
 * [A-Za-z0-9-]{1,64}, an absolute --exec-file whose name contains
 * "firecracker", numeric --uid/--gid, --chroot-base-dir, --cgroup-version
 * 1|2, --netns PATH, --new-pid-ns, --daemonize, then "--" and Firecracker's
 * arguments), records it, builds <base>/<exec name>/<id>/root, copies the
 * exec file there and gives the root to uid:gid, as the jailer does. It
 * does not pivot_root or drop privileges (the double of Firecracker is not
 * a static binary); instead it tells the fake Firecracker its root and the
 * jail user, so paths resolve under the root and files are checked for
 * what that user could do. With --new-pid-ns it forks into a new pid
 * namespace (plain fork if that is not allowed), writes the child's pid to
 * <root>/<exec name>.pid and exits, as the jailer does.
 *
 *   FAKE_JAILER_ARGV_FILE   write argv here, one argument per line
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "fake-jailer: error: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-')
            return false;
    return true;
}

static long number(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0)
        die("%s is not a number", what);
    return v;
}

static void mkdirs(const char *path)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        mkdir(p, 0755);
        *s = '/';
    }
    if (mkdir(p, 0755) < 0 && errno != EEXIST)
        die("cannot create %s", path);
}

static void copy(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (in < 0 || out < 0)
        die("cannot copy the exec file to %s", to);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0)
        if (write(out, buf, (size_t)n) != n)
            die("cannot write %s", to);
    close(in);
    close(out);
}

static void record(int argc, char **argv)
{
    const char *f = getenv("FAKE_JAILER_ARGV_FILE");
    FILE *out = f ? fopen(f, "we") : NULL;
    if (!out)
        return;
    for (int i = 0; i < argc; i++)
        fprintf(out, "%s\n", argv[i]);
    fclose(out);
}

int main(int argc, char **argv)
{
    record(argc, argv);
    const char *id = NULL, *exec_file = NULL, *uid_s = NULL, *gid_s = NULL, *netns = NULL;
    const char *base = "/srv/jailer";
    bool new_pid_ns = false, daemonize = false;
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--new-pid-ns") == 0) {
            new_pid_ns = true;
            continue;
        }
        if (strcmp(a, "--daemonize") == 0) {
            daemonize = true;
            continue;
        }
        if (!v)
            die("%s needs a value", a);
        i++;
        if (strcmp(a, "--id") == 0)
            id = v;
        else if (strcmp(a, "--exec-file") == 0)
            exec_file = v;
        else if (strcmp(a, "--uid") == 0)
            uid_s = v;
        else if (strcmp(a, "--gid") == 0)
            gid_s = v;
        else if (strcmp(a, "--chroot-base-dir") == 0)
            base = v;
        else if (strcmp(a, "--netns") == 0)
            netns = v;
        else if (strcmp(a, "--cgroup-version") == 0) {
            if (strcmp(v, "1") != 0 && strcmp(v, "2") != 0)
                die("--cgroup-version must be 1 or 2, not %s", v);
        } else if (strcmp(a, "--cgroup") == 0 || strcmp(a, "--parent-cgroup") == 0 ||
                   strcmp(a, "--resource-limit") == 0) {
            /* accepted, not emulated */
        } else
            die("unexpected argument '%s'", a);
    }
    if (!id || !exec_file || !uid_s || !gid_s)
        die("%s", "--id, --exec-file, --uid and --gid are required");
    if (!id_ok(id))
        die("invalid --id '%s'", id);
    long uid = number(uid_s, "--uid"), gid = number(gid_s, "--gid");
    if (exec_file[0] != '/' || access(exec_file, X_OK) < 0)
        die("--exec-file %s is not an executable absolute path", exec_file);
    const char *name = strrchr(exec_file, '/') + 1;
    if (!strstr(name, "firecracker"))
        die("the exec file name must contain \"firecracker\": %s", name);
    if (base[0] != '/')
        die("--chroot-base-dir %s is not absolute", base);
    if (netns && access(netns, R_OK) < 0)
        die("--netns %s cannot be opened", netns);
    if (geteuid() != 0)
        die("%s", "the jailer must run as root");

    if (strlen(base) + strlen(name) + strlen(id) > 3000)
        die("%s", "paths too long");
    char dir[3100], root[3200], exe[3300], pidfile[3400];
    snprintf(dir, sizeof(dir), "%s/%s/%s", base, name, id);
    snprintf(root, sizeof(root), "%s/root", dir);
    snprintf(exe, sizeof(exe), "%s/%s", root, name);
    snprintf(pidfile, sizeof(pidfile), "%s/%s.pid", root, name);
    mkdirs(root);
    copy(exec_file, exe);
    if (chown(root, (uid_t)uid, (gid_t)gid) < 0)
        die("cannot chown %s", root);
    if (daemonize) {
        setsid();
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
    }

    /* Firecracker's argv as the jailer builds it. */
    int extra = i < argc ? argc - i - 1 : 0;
    char **fc = calloc((size_t)extra + 5, sizeof(char *));
    char idarg[128], t1[64], t2[64];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snprintf(idarg, sizeof(idarg), "--id=%s", id);
    snprintf(t1, sizeof(t1), "--start-time-us=%lld", (long long)tv.tv_sec * 1000000 + tv.tv_usec);
    snprintf(t2, sizeof(t2), "--start-time-cpu-us=%d", 0);
    int k = 0;
    fc[k++] = (char *)name;
    fc[k++] = idarg;
    fc[k++] = t1;
    fc[k++] = t2;
    for (int e = 0; e < extra; e++)
        fc[k++] = argv[i + 1 + e];
    char us[32], gs[32];
    snprintf(us, sizeof(us), "%ld", uid);
    snprintf(gs, sizeof(gs), "%ld", gid);
    setenv("FAKE_FC_ROOT", root, 1);
    setenv("FAKE_FC_JAIL_UID", us, 1);
    setenv("FAKE_FC_JAIL_GID", gs, 1);
    if (chdir(root) < 0)
        die("cannot enter %s", root);

    if (new_pid_ns) {
        if (unshare(CLONE_NEWPID) < 0)
            fprintf(stderr, "fake-jailer: no new pid namespace (%s); forking anyway\n",
                    strerror(errno));
        pid_t pid = fork();
        if (pid < 0)
            die("%s", "cannot fork");
        if (pid > 0) {
            FILE *f = fopen(pidfile, "we");
            if (!f)
                die("cannot write %s", pidfile);
            fprintf(f, "%d", (int)pid);
            fclose(f);
            return 0;
        }
    }
    execv(exe, fc);
    die("cannot exec %s", exe);
    return 1;
}
