/*
 * fc_jailer.c - running Firecracker under its jailer.
 *
 * The jailer (docs/jailer.md) builds <chroot-base>/<exec name>/<id>/root,
 * copies Firecracker there, enters new mount (pivot_root) and, with
 * --new-pid-ns, pid namespaces, drops to an unprivileged uid/gid and execs
 * Firecracker, whose paths are then relative to that root. So ironclaw:
 *   - chooses the chroot base <runtime>/jail (short enough for socket
 *     paths) and records <base>/<exec>/<id> in the VM's state record before
 *     anything is created, so destroy and gc remove it whole;
 *   - puts the kernel, initrd, drives and filter into the root beforehand
 *     (hard links where the jail user may read them, else private copies),
 *     and creates the log files owned by the jail user;
 *   - finds the real Firecracker pid in <root>/<exec>.pid, which the
 *     jailer writes when it forks into the new pid namespace, and checks it
 *     is the jailer's child before trusting it.
 */
#include "vm/fc.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

/* Per-VM jail users: 10^9 + the first 16 bits of the VM id, far above
 * system users and the usual subordinate-id ranges. */
#define JAIL_ID_BASE 1000000000u

/* ---- plan ---------------------------------------------------------------------- */

static int env_id(const char *name, unsigned *out, ic_err *err)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || v[0] == '-' || n == 0 || n >= 0xffffffffUL)
        return ic_err_set(err, EINVAL, "%s=%s: the jail needs a non-zero numeric id", name, v);
    *out = (unsigned)n;
    return 1;
}

static bool exec_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64 || !strstr(s, "firecracker"))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

int ic_fc_jail_plan(const char *vm_dir, const char *id, const char *firecracker,
                    const struct ic_host *h, struct ic_fc_jail *j, ic_err *err)
{
    memset(j, 0, sizeof(*j));
    if (!ic_id_valid(id))
        return ic_err_set(err, EINVAL, "invalid VM id '%s'", id);
    /* vm_dir is <runtime>/vms/<id>: the base sits beside vms/. */
    char suffix[IC_ID_SIZE + 8];
    snprintf(suffix, sizeof(suffix), "/vms/%s", id);
    size_t n = strlen(vm_dir), sn = strlen(suffix);
    if (n <= sn || strcmp(vm_dir + n - sn, suffix) != 0)
        return ic_err_set(err, EINVAL, "unexpected VM directory %s", vm_dir);
    const char *slash = strrchr(firecracker, '/');
    const char *name = slash ? slash + 1 : firecracker;
    if (!exec_name_ok(name))
        return ic_err_set(err, EINVAL, "the jailer only runs a binary whose name contains "
                          "\"firecracker\" (and only [A-Za-z0-9._-]); %s does not qualify",
                          firecracker);
    snprintf(j->exec_name, sizeof(j->exec_name), "%s", name);
    int r = ic_path_join(j->base, sizeof(j->base), err, "%.*s/jail", (int)(n - sn), vm_dir);
    if (r == 0)
        r = ic_path_join(j->dir, sizeof(j->dir), err, "%s/%s/%s", j->base, name, id);
    if (r == 0)
        r = ic_path_join(j->root, sizeof(j->root), err, "%s/root", j->dir);
    if (r == 0 && h->cgroup == IC_CGROUP_V2)
        r = ic_path_join(j->cgroup, sizeof(j->cgroup), err, "/sys/fs/cgroup/%s/%s", name, id);
    if (r < 0)
        return r;
    unsigned derived = JAIL_ID_BASE + (unsigned)strtoul((char[5]){id[0], id[1], id[2], id[3], 0},
                                                        NULL, 16);
    unsigned uid = derived, gid = derived;
    if ((r = env_id("IRONCLAW_JAILER_UID", &uid, err)) < 0 ||
        (r = env_id("IRONCLAW_JAILER_GID", &gid, err)) < 0)
        return r;
    j->uid = (uid_t)uid;
    j->gid = (gid_t)gid;
    return 0;
}

/* ---- argv ---------------------------------------------------------------------- */

void ic_fc_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

int ic_fc_jail_argv(const struct ic_fc_jail *j, const char *jailer, const char *firecracker,
                    const char *id, bool cgroup_v2, const char *netns, char *const fc_args[],
                    char ***argv, ic_err *err)
{
    size_t nfc = 0;
    while (fc_args[nfc])
        nfc++;
    char **v = calloc(nfc + 24, sizeof(char *));
    if (!v)
        return ic_err_set(err, ENOMEM, "out of memory");
    size_t n = 0;
    char uid[16], gid[16];
    snprintf(uid, sizeof(uid), "%u", (unsigned)j->uid);
    snprintf(gid, sizeof(gid), "%u", (unsigned)j->gid);
    const char *head[] = {jailer, "--id", id, "--exec-file", firecracker, "--uid", uid, "--gid",
                          gid, "--chroot-base-dir", j->base};
    for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
        v[n++] = strdup(head[i]);
    if (cgroup_v2) {
        v[n++] = strdup("--cgroup-version");
        v[n++] = strdup("2");
    }
    if (netns) {
        v[n++] = strdup("--netns");
        v[n++] = strdup(netns);
    }
    v[n++] = strdup("--new-pid-ns");
    v[n++] = strdup("--");
    for (size_t i = 0; i < nfc; i++)
        v[n++] = strdup(fc_args[i]);
    for (size_t i = 0; i < n; i++) {
        if (!v[i]) {
            for (size_t k = 0; k < n; k++)
                free(v[k]);
            free(v);
            return ic_err_set(err, ENOMEM, "out of memory");
        }
    }
    *argv = v;
    return 0;
}

/* ---- files in the root ------------------------------------------------------------ */

static int root_path(const struct ic_fc_jail *j, const char *name, char *out, ic_err *err)
{
    if (!*name || strchr(name, '/') || name[0] == '.')
        return ic_err_set(err, EINVAL, "bad file name '%s' for the jail", name);
    int r = ic_mkdir_p(j->root, 0755, err);
    if (r < 0)
        return r;
    r = ic_path_join(out, IC_PATH_MAX, err, "%s/%s", j->root, name);
    if (r == 0 && unlink(out) < 0 && errno != ENOENT)
        r = ic_err_sys(err, errno, "cannot replace %s", out);
    return r;
}

int ic_fc_jail_install(const struct ic_fc_jail *j, const char *src, const char *name,
                       bool writable, ic_err *err)
{
    char dst[IC_PATH_MAX];
    int r = root_path(j, name, dst, err);
    if (r < 0)
        return r;
    struct stat st;
    if (stat(src, &st) < 0)
        return ic_err_sys(err, errno, "cannot use %s", src);
    if (!S_ISREG(st.st_mode))
        return ic_err_set(err, EINVAL, "%s is not a regular file", src);
    /* A link shares the inode: only for read-only files everyone may read. */
    if (!writable && (st.st_mode & S_IROTH) && link(src, dst) == 0)
        return 0;
    r = ic_file_copy(src, dst, writable ? 0600 : 0400, err);
    if (r == 0 && chown(dst, j->uid, j->gid) < 0)
        r = ic_err_sys(err, errno, "cannot give %s to the jail user %u", dst, (unsigned)j->uid);
    return r;
}

int ic_fc_jail_touch(const struct ic_fc_jail *j, const char *name, ic_err *err)
{
    char dst[IC_PATH_MAX];
    int r = root_path(j, name, dst, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot create %s", dst);
    if (fchown(fd, j->uid, j->gid) < 0)
        return ic_err_sys(err, errno, "cannot give %s to the jail user %u", dst, (unsigned)j->uid);
    return 0;
}

/* ---- the real pid ------------------------------------------------------------------ */

/* comm and ppid from /proc/PID/stat; false if the process is gone. */
static bool proc_info(pid_t pid, char *comm, size_t size, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (ic_file_read_small(path, buf, sizeof(buf)) <= 0)
        return false;
    char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren || close_paren < open_paren)
        return false;
    snprintf(comm, size, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
    char state;
    int pp;
    if (sscanf(close_paren + 1, " %c %d", &state, &pp) != 2)
        return false;
    *ppid = (pid_t)pp;
    return state != 'Z' && state != 'X';
}

int ic_fc_jail_read_pid(const struct ic_fc_jail *j, pid_t supervisor, pid_t *pid, ic_err *err)
{
    char path[IC_PATH_MAX];
    int r = ic_path_join(path, sizeof(path), err, "%s/%s.pid", j->root, j->exec_name);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ic_err_sys(err, errno, "the jailer wrote no pid file %s", path);
    char buf[32];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return ic_err_set(err, EAGAIN, "the jailer's pid file %s is empty", path);
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    while (*end == '\n' || *end == ' ')
        end++;
    if (end == buf || *end || v <= 1 || v > 1 << 22)
        return ic_err_set(err, EINVAL, "the jailer's pid file %s does not hold a pid", path);
    char comm[64];
    pid_t ppid = 0, gppid = 0;
    if (!proc_info((pid_t)v, comm, sizeof(comm), &ppid))
        return ic_err_set(err, ESRCH, "Firecracker (pid %ld from %s) is not running", v, path);
    /* The jailer's child is ours once the jailer has exited (we are its
     * subreaper), or the jailer's while it still runs. */
    bool ours = ppid == supervisor;
    if (!ours && ppid > 1 && proc_info(ppid, (char[64]){0}, 64, &gppid))
        ours = gppid == supervisor;
    /* The kernel keeps the first 15 bytes of the program's name. */
    if (!ours || strncmp(comm, j->exec_name, 15) != 0)
        return ic_err_set(err, EPERM, "pid %ld in %s is not the Firecracker this jailer started "
                          "(%s, parent %d)", v, path, comm, (int)ppid);
    *pid = (pid_t)v;
    return 0;
}
