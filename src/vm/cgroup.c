/*
 * cgroup.c - a VM's cgroups, on cgroup v1, v2 or a hybrid of both: which
 * hierarchy offers the memory, cpu and pids controllers (read from
 * mountinfo), creating <mount>/<parent>/<vm> with its limits, moving the
 * VMM in, and removing it again (killing what is left inside first).
 *
 *   v2: memory.max, memory.swap.max = 0, cpu.max "QUOTA PERIOD", pids.max;
 *       the controllers are enabled in cgroup.subtree_control on the way
 *   v1: memory.limit_in_bytes (and memory.memsw.limit_in_bytes where swap
 *       accounting exists), cpu.cfs_period_us + cpu.cfs_quota_us, pids.max
 */
#include "vm/jail.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPU_PERIOD_US 100000u
static const char *const wanted[] = {"memory", "cpu", "pids"};

/* ---- finding the hierarchies ---------------------------------------------- */

static bool has_word(const char *list, const char *word, char sep)
{
    size_t n = strlen(word);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, sep);
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, word, n) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static bool v2_offers(const char *mount, const char *ctrl)
{
    char path[IC_PATH_MAX], buf[512];
    if (snprintf(path, sizeof(path), "%s/cgroup.controllers", mount) >= (int)sizeof(path))
        return false;
    if (ic_file_read_small(path, buf, sizeof(buf)) <= 0)
        return false;
    buf[strcspn(buf, "\n")] = '\0';
    return has_word(buf, ctrl, ' ');
}

struct mnt {
    char point[IC_PATH_MAX];
    char opts[256];
    bool v2;
};

/* mountinfo: ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - FSTYPE SOURCE SUPEROPTS */
static int parse_line(char *line, struct mnt *m)
{
    char *fields[6] = {0}, *save = NULL, *tok = strtok_r(line, " \n", &save);
    int i = 0;
    for (; tok && i < 6; tok = strtok_r(NULL, " \n", &save))
        fields[i++] = tok;
    while (tok && strcmp(tok, "-") != 0)
        tok = strtok_r(NULL, " \n", &save);
    char *fstype = tok ? strtok_r(NULL, " \n", &save) : NULL;
    char *source = fstype ? strtok_r(NULL, " \n", &save) : NULL;
    char *super = source ? strtok_r(NULL, " \n", &save) : NULL;
    if (i < 5 || !fstype || !super)
        return -1;
    bool v2 = strcmp(fstype, "cgroup2") == 0;
    if (!v2 && strcmp(fstype, "cgroup") != 0)
        return -1;
    /* Mount points with spaces are octal-escaped; ours never have any. */
    if (snprintf(m->point, sizeof(m->point), "%s", fields[4]) >= (int)sizeof(m->point) ||
        snprintf(m->opts, sizeof(m->opts), "%s", super) >= (int)sizeof(m->opts))
        return -1;
    m->v2 = v2;
    return 0;
}

static int add_dir(struct ic_cg_plan *plan, const struct mnt *m, const char *ctrl,
                   const char *parent, const char *name, ic_err *err)
{
    char path[IC_PATH_MAX];
    int r = parent && parent[0]
                ? ic_path_join(path, sizeof(path), err, "%s/%s/%s", m->point, parent, name)
                : ic_path_join(path, sizeof(path), err, "%s/%s", m->point, name);
    if (r < 0)
        return r;
    for (size_t i = 0; i < plan->n; i++) {
        struct ic_cg_dir *d = &plan->dir[i];
        if (strcmp(d->path, path) == 0) {
            size_t used = strlen(d->controllers);
            snprintf(d->controllers + used, sizeof(d->controllers) - used, "%c%s",
                     d->v2 ? ' ' : ',', ctrl);
            return 0;
        }
    }
    if (plan->n >= IC_CG_MAX_DIRS)
        return ic_err_set(err, E2BIG, "too many cgroup hierarchies");
    struct ic_cg_dir *d = &plan->dir[plan->n++];
    snprintf(d->controllers, sizeof(d->controllers), "%s", ctrl);
    snprintf(d->path, sizeof(d->path), "%s", path);
    snprintf(d->mount, sizeof(d->mount), "%s", m->point);
    d->v2 = m->v2;
    return 0;
}

int ic_cg_plan(const char *mountinfo, const char *parent, const char *name,
               struct ic_cg_plan *plan, ic_err *err)
{
    memset(plan, 0, sizeof(*plan));
    _cleanup_fclose_ FILE *f = fopen(mountinfo, "re");
    if (!f)
        return ic_err_sys(err, errno, "cannot read %s", mountinfo);
    struct mnt mnts[32];
    size_t n = 0;
    char line[4096];
    while (n < 32 && fgets(line, sizeof(line), f))
        if (parse_line(line, &mnts[n]) == 0)
            n++;
    for (size_t c = 0; c < sizeof(wanted) / sizeof(wanted[0]); c++) {
        const struct mnt *found = NULL;
        for (size_t i = 0; i < n && !found; i++)
            if (!mnts[i].v2 && has_word(mnts[i].opts, wanted[c], ','))
                found = &mnts[i];
        for (size_t i = 0; i < n && !found; i++)
            if (mnts[i].v2 && v2_offers(mnts[i].point, wanted[c]))
                found = &mnts[i];
        if (!found)
            return ic_err_set(err, ENOTSUP, "no cgroup hierarchy offers the %s controller "
                              "(see 'ironclaw doctor')", wanted[c]);
        int r = add_dir(plan, found, wanted[c], parent, name, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- creating ------------------------------------------------------------- */

static int put(const char *dir, const char *file, const char *value, bool optional, ic_err *err)
{
    char path[IC_PATH_MAX];
    int r = ic_path_join(path, sizeof(path), err, "%s/%s", dir, file);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && optional && errno == ENOENT)
        return 0;
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    ssize_t w = write(fd, value, strlen(value));
    if (w < 0)
        return ic_err_sys(err, errno, "cannot write '%s' to %s", value, path);
    return 0;
}

/* v2: the controllers must be enabled in every ancestor's subtree_control. */
static int v2_enable(const char *dir, const char *controllers, ic_err *err)
{
    char value[64] = "";
    for (size_t c = 0; c < sizeof(wanted) / sizeof(wanted[0]); c++)
        if (has_word(controllers, wanted[c], ' ')) {
            size_t used = strlen(value);
            snprintf(value + used, sizeof(value) - used, "%s+%s", used ? " " : "", wanted[c]);
        }
    return put(dir, "cgroup.subtree_control", value, false, err);
}

static int make_dir(const char *path, ic_err *err)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return ic_err_sys(err, errno, "cannot create the cgroup %s", path);
    return 0;
}

static int write_limits(const struct ic_cg_dir *d, const struct ic_cg_limits *lim, ic_err *err)
{
    char mem[32], quota[24], pids[24];
    snprintf(mem, sizeof(mem), "%llu", (unsigned long long)lim->mem_bytes);
    snprintf(quota, sizeof(quota), "%u", lim->cpus * CPU_PERIOD_US);
    snprintf(pids, sizeof(pids), "%llu", (unsigned long long)lim->pids);
    const char *list = d->controllers;
    char sep = d->v2 ? ' ' : ',';
    int r = 0;
    if (has_word(list, "memory", sep)) {
        if (d->v2) {
            r = put(d->path, "memory.max", mem, false, err);
            if (r == 0)
                r = put(d->path, "memory.swap.max", "0", true, err);
        } else {
            r = put(d->path, "memory.limit_in_bytes", mem, false, err);
            if (r == 0)
                r = put(d->path, "memory.memsw.limit_in_bytes", mem, true, err);
        }
    }
    if (r == 0 && has_word(list, "cpu", sep)) {
        char cpu[48];
        if (d->v2) {
            snprintf(cpu, sizeof(cpu), "%s %u", quota, CPU_PERIOD_US);
            r = put(d->path, "cpu.max", cpu, false, err);
        } else {
            snprintf(cpu, sizeof(cpu), "%u", CPU_PERIOD_US);
            r = put(d->path, "cpu.cfs_period_us", cpu, false, err);
            if (r == 0)
                r = put(d->path, "cpu.cfs_quota_us", quota, false, err);
        }
    }
    if (r == 0 && has_word(list, "pids", sep))
        r = put(d->path, "pids.max", pids, false, err);
    return r;
}

int ic_cg_create(const struct ic_cg_dir *d, const struct ic_cg_limits *lim, ic_err *err)
{
    char parent[IC_PATH_MAX];
    const char *slash = strrchr(d->path, '/');
    snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - d->path) : 0, d->path);
    bool nested = strcmp(parent, d->mount) != 0;
    if (d->v2 && v2_enable(d->mount, d->controllers, err) < 0)
        return ic_err_wrap(err, "enabling cgroup controllers");
    /* Another VM's teardown may remove an empty parent between our mkdir
     * calls: try again a few times. */
    for (int tries = 0; tries < 5; tries++) {
        int r;
        if (nested && (r = make_dir(parent, err)) < 0)
            return r;
        if (nested && d->v2 && v2_enable(parent, d->controllers, err) < 0) {
            if (err && err->code == ENOENT)
                continue;
            return ic_err_wrap(err, "enabling cgroup controllers");
        }
        if (mkdir(d->path, 0755) == 0)
            return write_limits(d, lim, err);
        if (errno != ENOENT)
            return ic_err_sys(err, errno, "cannot create the cgroup %s", d->path);
    }
    return ic_err_sys(err, ENOENT, "cannot create the cgroup %s", d->path);
}

int ic_cg_join(const char *path, pid_t pid)
{
    char file[IC_PATH_MAX], value[24];
    if (snprintf(file, sizeof(file), "%s/cgroup.procs", path) >= (int)sizeof(file))
        return -ENAMETOOLONG;
    snprintf(value, sizeof(value), "%d", (int)pid);
    _cleanup_close_ int fd = open(file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (write(fd, value, strlen(value)) < 0)
        return -errno;
    return 0;
}

/* ---- removing -------------------------------------------------------------- */

/* SIGKILL to every process listed; returns how many there were. */
static int kill_members(const char *path)
{
    char file[IC_PATH_MAX];
    if (snprintf(file, sizeof(file), "%s/cgroup.procs", path) >= (int)sizeof(file))
        return 0;
    _cleanup_fclose_ FILE *f = fopen(file, "re");
    if (!f)
        return 0;
    int n = 0, pid;
    while (fscanf(f, "%d", &pid) == 1) {
        if (pid > 1 && pid != getpid()) {
            kill(pid, SIGKILL);
            n++;
        }
    }
    return n;
}

int ic_cg_remove(const char *path, ic_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0 && errno == ENOENT)
        return 0;
    int last = 0;
    for (int tries = 0; tries < 300; tries++) {
        int members = kill_members(path);
        if (rmdir(path) == 0 || errno == ENOENT) {
            last = 0;
            break;
        }
        last = errno;
        if (last != EBUSY && !(last == ENOTEMPTY && members))
            break;
        usleep(10000);
    }
    if (last)
        return ic_err_sys(err, last, "cannot remove the cgroup %s", path);
    char parent[IC_PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", path);
    if (rmdir(dirname(parent)) < 0 && errno != EBUSY && errno != ENOTEMPTY && errno != ENOENT)
        ic_log_debug("cgroup parent %s stays: %s", parent, strerror(errno));
    return 0;
}
