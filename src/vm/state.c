/*
 * state.c - the VM state record (state.json) and the reaper that removes
 * what a record lists. See include/ironclaw/state.h for the contract.
 */
#include "ironclaw/state.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

struct ic_state {
    char dir[IC_PATH_MAX];
    char path[IC_PATH_MAX];
    json_t *root;
    int lock_fd;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t ic_proc_starttime(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* comm may contain spaces and parentheses: fields restart after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    return strtoull(p, NULL, 10);
}

static int state_save(ic_state *st, ic_err *err)
{
    _cleanup_free_ char *text = json_dumps(st->root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return ic_err_set(err, ENOMEM, "cannot serialise the state record");
    return ic_file_write_atomic(st->path, text, strlen(text), 0600, err);
}

static int lock_dir(ic_state *st, ic_err *err)
{
    char lock[IC_PATH_MAX];
    int r = ic_path_join(lock, sizeof(lock), err, "%s/lock", st->dir);
    if (r < 0)
        return r;
    st->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (st->lock_fd < 0)
        return ic_err_sys(err, errno, "cannot create %s", lock);
    if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0)
        return ic_err_sys(err, errno, "cannot lock %s", lock);
    return 0;
}

static ic_state *state_alloc(const char *dir, ic_err *err)
{
    ic_state *st = calloc(1, sizeof(*st));
    if (!st) {
        ic_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    st->lock_fd = -1;
    if (ic_path_join(st->dir, sizeof(st->dir), err, "%s", dir) < 0 ||
        ic_path_join(st->path, sizeof(st->path), err, "%s/state.json", dir) < 0) {
        free(st);
        return NULL;
    }
    return st;
}

int ic_state_create(const char *runtime_dir, const char *id, const char *name,
                    const char *driver, ic_state **out, ic_err *err)
{
    if (!ic_id_valid(id))
        return ic_err_set(err, EINVAL, "invalid VM id '%s'", id);
    char vms[IC_PATH_MAX], dir[IC_PATH_MAX];
    int r = ic_path_join(vms, sizeof(vms), err, "%s/vms", runtime_dir);
    if (r < 0 || (r = ic_path_join(dir, sizeof(dir), err, "%s/%s", vms, id)) < 0)
        return r;
    if ((r = ic_mkdir_p(vms, 0700, err)) < 0)
        return r;
    if (mkdir(dir, 0700) < 0)
        return ic_err_sys(err, errno, "cannot create the VM directory %s", dir);
    ic_state *st = state_alloc(dir, err);
    if (!st) {
        rmdir(dir);
        return -ENOMEM;
    }
    st->root = json_pack("{s:s, s:s, s:s, s:s, s:I, s:{s:i, s:I}, s:[{s:s, s:s, s:s}]}",
                         "id", id, "name", name ? name : "", "driver", driver,
                         "phase", "creating", "created_ms", (json_int_t)now_ms(),
                         "owner", "pid", (int)getpid(),
                         "starttime", (json_int_t)ic_proc_starttime(getpid()),
                         "resources", "kind", IC_RES_DIR, "role", "vm-dir", "path", dir);
    if (!st->root)
        r = ic_err_set(err, ENOMEM, "cannot build the state record");
    if (r == 0)
        r = lock_dir(st, err);
    if (r == 0)
        r = state_save(st, err);
    if (r < 0) {
        ic_rm_rf(dir, NULL);
        ic_state_free(st);
        return r;
    }
    *out = st;
    return 0;
}

int ic_state_load(const char *vm_dir, ic_state **out, ic_err *err)
{
    ic_state *st = state_alloc(vm_dir, err);
    if (!st)
        return -ENOMEM;
    json_error_t jerr;
    st->root = json_load_file(st->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!st->root || !json_is_object(st->root) ||
        !json_is_array(json_object_get(st->root, "resources"))) {
        int r = ic_err_set(err, EINVAL, "unreadable state record %s: %s", st->path,
                           st->root ? "wrong shape" : jerr.text);
        ic_state_free(st);
        return r;
    }
    *out = st;
    return 0;
}

void ic_state_free(ic_state *st)
{
    if (!st)
        return;
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    json_decref(st->root);
    free(st);
}

int ic_state_add(ic_state *st, const char *kind, const char *role, const char *path, ic_err *err)
{
    json_t *res = json_pack("{s:s, s:s}", "kind", kind, "role", role);
    if (!res)
        return ic_err_set(err, ENOMEM, "out of memory");
    if (path)
        json_object_set_new(res, "path", json_string(path));
    json_array_append_new(json_object_get(st->root, "resources"), res);
    return state_save(st, err);
}

static json_t *find_resource(const ic_state *st, const char *kind, const char *role)
{
    size_t i;
    json_t *res;
    json_array_foreach(json_object_get(st->root, "resources"), i, res) {
        if (strcmp(json_string_value(json_object_get(res, "kind")) ?: "", kind) == 0 &&
            strcmp(json_string_value(json_object_get(res, "role")) ?: "", role) == 0)
            return res;
    }
    return NULL;
}

int ic_state_set_pid(ic_state *st, const char *role, pid_t pid, ic_err *err)
{
    json_t *res = find_resource(st, IC_RES_PROCESS, role);
    if (!res)
        return ic_err_set(err, ENOENT, "no process '%s' in the state record", role);
    json_object_set_new(res, "pid", json_integer(pid));
    json_object_set_new(res, "starttime", json_integer((json_int_t)ic_proc_starttime(pid)));
    return state_save(st, err);
}

int ic_state_set_phase(ic_state *st, const char *phase, ic_err *err)
{
    json_object_set_new(st->root, "phase", json_string(phase));
    return state_save(st, err);
}

int ic_state_set_num(ic_state *st, const char *key, int64_t value, ic_err *err)
{
    json_object_set_new(st->root, key, json_integer((json_int_t)value));
    return state_save(st, err);
}

bool ic_state_get_num(const ic_state *st, const char *key, int64_t *out)
{
    json_t *v = json_object_get(st->root, key);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

size_t ic_state_paths(const ic_state *st, const char *kind, const char **out, size_t max)
{
    size_t i, n = 0;
    json_t *res;
    json_array_foreach(json_object_get(st->root, "resources"), i, res) {
        const char *path = json_string_value(json_object_get(res, "path"));
        if (n < max && path && strcmp(json_string_value(json_object_get(res, "kind")) ?: "", kind) == 0)
            out[n++] = path;
    }
    return n;
}

static const char *get_str(const ic_state *st, const char *key)
{
    return json_string_value(json_object_get(st->root, key)) ?: "";
}

const char *ic_state_id(const ic_state *st) { return get_str(st, "id"); }
const char *ic_state_name(const ic_state *st) { return get_str(st, "name"); }
const char *ic_state_driver(const ic_state *st) { return get_str(st, "driver"); }
const char *ic_state_phase(const ic_state *st) { return get_str(st, "phase"); }
const char *ic_state_dir(const ic_state *st) { return st->dir; }

int64_t ic_state_created_ms(const ic_state *st)
{
    return json_integer_value(json_object_get(st->root, "created_ms"));
}

pid_t ic_state_owner_pid(const ic_state *st)
{
    return (pid_t)json_integer_value(json_object_get(json_object_get(st->root, "owner"), "pid"));
}

/* The recorded process if the pid still names the same process. */
static pid_t res_live_pid(json_t *res)
{
    pid_t pid = (pid_t)json_integer_value(json_object_get(res, "pid"));
    uint64_t start = (uint64_t)json_integer_value(json_object_get(res, "starttime"));
    if (pid <= 1 || start == 0)
        return 0;
    return ic_proc_starttime(pid) == start ? pid : 0;
}

pid_t ic_state_live_pid(const ic_state *st, const char *role)
{
    json_t *res = find_resource(st, IC_RES_PROCESS, role);
    return res ? res_live_pid(res) : 0;
}

bool ic_state_owner_alive(const ic_state *st)
{
    if (st->lock_fd >= 0)
        return true;   /* that is us */
    char lock[IC_PATH_MAX];
    if (ic_path_join(lock, sizeof(lock), NULL, "%s/lock", st->dir) < 0)
        return false;
    _cleanup_close_ int fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return false;  /* we got it, so nobody holds it; released on close */
    return errno == EWOULDBLOCK;
}

/* Any process whose command line mentions the VM's directory belongs to
 * it: this catches a VMM whose pid was not yet recorded when the owner died. */
static void kill_by_cmdline(const char *dir)
{
    DIR *proc = opendir("/proc");
    if (!proc)
        return;
    size_t dlen = strlen(dir);
    struct dirent *de;
    while ((de = readdir(proc))) {
        pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
        if (pid <= 1 || pid == getpid())
            continue;
        char path[64], buf[8192];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
            continue;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[n] = '\0';
        if (memmem(buf, (size_t)n, dir, dlen)) {
            ic_log_info("killing leftover process %d of %s", (int)pid, dir);
            kill(pid, SIGKILL);
        }
    }
    closedir(proc);
}

static void reap_process(json_t *res)
{
    pid_t pid = res_live_pid(res);
    if (pid > 0) {
        ic_log_info("killing process %d (%s)", (int)pid,
                    json_string_value(json_object_get(res, "role")) ?: "?");
        kill(pid, SIGKILL);
    }
}

static bool proc_is_zombie(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (ic_file_read_small(path, buf, sizeof(buf)) <= 0)
        return true;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* SIGKILL is asynchronous: give the killed processes a moment to be gone
 * (reaped by their parent or init) so that "reaped" means gone. */
static void wait_processes_gone(json_t *list)
{
    for (int tries = 0; tries < 200; tries++) {
        bool any = false;
        size_t i;
        json_t *res;
        json_array_foreach(list, i, res) {
            const char *kind = json_string_value(json_object_get(res, "kind")) ?: "";
            pid_t pid = strcmp(kind, IC_RES_PROCESS) == 0 ? res_live_pid(res) : 0;
            if (pid > 0 && !proc_is_zombie(pid))
                any = true;
        }
        if (!any)
            return;
        usleep(10000);
    }
}

/* A recorded tree or cgroup path must be absolute and plain: never "/",
 * never with "." or ".." components. */
static bool outside_path_ok(const char *p)
{
    if (p[0] != '/' || strlen(p) < 6 || strstr(p, "/./") || strstr(p, "/../") || strstr(p, "//"))
        return false;
    size_t n = strlen(p);
    return !(n >= 3 && strcmp(p + n - 3, "/..") == 0) && !(n >= 2 && strcmp(p + n - 2, "/.") == 0);
}

static int reap_path(json_t *res, const char *kind, ic_err *err)
{
    const char *path = json_string_value(json_object_get(res, "path"));
    if (!path || strcmp(kind, IC_RES_DIR) == 0)
        return 0;  /* directories go last, whole */
    bool tree = strcmp(kind, IC_RES_TREE) == 0, cgroup = strcmp(kind, IC_RES_CGROUP) == 0;
    if ((tree || cgroup) && !outside_path_ok(path))
        return ic_err_set(err, EINVAL, "refusing to remove the recorded %s '%s'", kind, path);
    if (tree)
        return ic_rm_rf(path, err);
    if (cgroup) {
        if (rmdir(path) < 0 && errno != ENOENT)
            return ic_err_sys(err, errno, "cannot remove the cgroup %s", path);
        return 0;
    }
    if (strcmp(kind, IC_RES_SOCKET) != 0 && strcmp(kind, IC_RES_FILE) != 0)
        return 0;  /* a kind of another layer's: ic_vm_reap_record's business */
    if (unlink(path) < 0 && errno != ENOENT)
        return ic_err_sys(err, errno, "cannot remove %s", path);
    return 0;
}

int ic_state_each_resource(const ic_state *st, const char *kind, ic_state_res_fn fn, void *ud)
{
    json_t *list = json_object_get(st->root, "resources");
    for (size_t i = json_array_size(list); i-- > 0;) {
        json_t *res = json_array_get(list, i);
        const char *k = json_string_value(json_object_get(res, "kind")) ?: "";
        if (kind && strcmp(k, kind) != 0)
            continue;
        int r = fn(k, json_string_value(json_object_get(res, "role")) ?: "",
                   json_string_value(json_object_get(res, "path")), ud);
        if (r < 0)
            return r;
    }
    return 0;
}

void ic_state_kill_processes(ic_state *st)
{
    json_t *list = json_object_get(st->root, "resources");
    /* Newest first: undo in the reverse order of creation. */
    for (size_t i = json_array_size(list); i-- > 0;) {
        json_t *res = json_array_get(list, i);
        const char *kind = json_string_value(json_object_get(res, "kind")) ?: "";
        if (strcmp(kind, IC_RES_PROCESS) == 0)
            reap_process(res);
    }
    kill_by_cmdline(st->dir);
    wait_processes_gone(list);
}

int ic_state_reap(ic_state *st, ic_err *err)
{
    json_t *list = json_object_get(st->root, "resources");
    int first = 0;
    ic_err local;
    size_t i;
    json_t *res;
    ic_state_kill_processes(st);
    bool keep_record = false;
    json_array_foreach(list, i, res) {
        const char *kind = json_string_value(json_object_get(res, "kind")) ?: "";
        int r = reap_path(res, kind, &local);
        if (r < 0 && (strcmp(kind, IC_RES_TREE) == 0 || strcmp(kind, IC_RES_CGROUP) == 0))
            keep_record = true;
        if (r < 0 && first == 0) {
            first = r;
            if (err)
                *err = local;
        }
    }
    if (keep_record)
        return first;
    int r = ic_rm_rf(st->dir, &local);
    if (r < 0 && first == 0) {
        first = r;
        if (err)
            *err = local;
    }
    return first;
}

int ic_state_each(const char *runtime_dir, ic_state_visit_fn fn, void *ud, ic_err *err)
{
    char vms[IC_PATH_MAX];
    int r = ic_path_join(vms, sizeof(vms), err, "%s/vms", runtime_dir);
    if (r < 0)
        return r;
    DIR *d = opendir(vms);
    if (!d)
        return errno == ENOENT ? 0 : ic_err_sys(err, errno, "cannot read %s", vms);
    struct dirent *de;
    while (r >= 0 && (de = readdir(d))) {
        if (!ic_id_valid(de->d_name))
            continue;
        char dir[IC_PATH_MAX];
        if (ic_path_join(dir, sizeof(dir), NULL, "%s/%s", vms, de->d_name) < 0)
            continue;
        ic_state *st = NULL;
        ic_err lerr = {0};
        ic_state_load(dir, &st, &lerr);
        r = fn(st, dir, st ? NULL : &lerr, ud);
        ic_state_free(st);
    }
    closedir(d);
    return r < 0 ? r : 0;
}
