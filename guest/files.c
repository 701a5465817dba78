/*
 * files.c - file.put, file.get and file.list (docs/protocol.md, 4).
 *
 * file.put writes into a temporary file next to the target and renames it
 * into place only after the whole stream arrived and was fsync'ed, so the
 * target is never seen half-written. file.get streams a file in
 * IC_DATA_CHUNK pieces, only while the write queue has room: a large file
 * never sits in memory. Uploads and downloads share the request-id stream
 * space with exec.
 */
#include "guest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ironclaw/cleanup.h"

#define DEFAULT_MODE 0644
#define TMP_SUFFIX ".ironclaw-XXXXXX"

struct ic_put {
    struct ic_put *next;
    uint32_t id;
    int fd;            /* the temporary file */
    char *tmp;         /* its path */
    char *path;        /* the target */
    mode_t mode;
    uint64_t size;
};

struct ic_get {
    struct ic_get *next;
    uint32_t id;
    int fd;
};

static struct ic_put *put_find(const ic_conn *c, uint32_t id)
{
    for (struct ic_put *p = c->puts; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

bool ic_files_has(const ic_conn *c, uint32_t id)
{
    if (put_find(c, id))
        return true;
    for (struct ic_get *g = c->gets; g; g = g->next)
        if (g->id == id)
            return true;
    return false;
}

/* ---- file.put ----------------------------------------------------------- */

int ic_files_mkparents(const char *path)
{
    char buf[IC_GUEST_PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    /* Every prefix ending before a '/' (except the root) is a directory. */
    for (char *s = buf + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    return 0;
}

static void put_free(struct ic_put *p, bool unlink_tmp)
{
    if (p->fd >= 0)
        close(p->fd);
    if (unlink_tmp && p->tmp)
        unlink(p->tmp);
    free(p->tmp);
    free(p->path);
    free(p);
}

/* "<dir>/.<base>.ironclaw-XXXXXX", or NULL when too long / no memory. */
static char *temp_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = (size_t)(slash - path) + 1;
    size_t total = strlen(path) + 1 + strlen(TMP_SUFFIX) + 1;
    if (total > IC_GUEST_PATH_MAX)
        return NULL;
    char *t = malloc(total);
    if (!t)
        return NULL;
    snprintf(t, total, "%.*s.%s%s", (int)dlen, path, slash + 1, TMP_SUFFIX);
    return t;
}

/* Creates the temporary file; 0 or -errno after answering the error. */
static int put_open(ic_conn *c, uint32_t id, struct ic_put *p)
{
    const char *base = strrchr(p->path, '/') + 1;
    if (!*base) {
        ic_conn_error(c, id, EISDIR, "\"%s\" names a directory", p->path);
        return -EISDIR;
    }
    struct stat st;
    if (stat(p->path, &st) == 0 && S_ISDIR(st.st_mode)) {
        ic_conn_error(c, id, EISDIR, "\"%s\" is a directory", p->path);
        return -EISDIR;
    }
    int r = ic_files_mkparents(p->path);
    if (r < 0) {
        ic_conn_error(c, id, -r, "creating the parents of \"%s\": %s", p->path, strerror(-r));
        return r;
    }
    p->tmp = temp_name(p->path);
    if (!p->tmp) {
        ic_conn_error(c, id, ENAMETOOLONG, "\"%s\": name too long for a temporary file", p->path);
        return -ENAMETOOLONG;
    }
    p->fd = mkostemp(p->tmp, O_CLOEXEC);
    if (p->fd < 0) {
        r = -errno;
        free(p->tmp);
        p->tmp = NULL;
        ic_conn_error(c, id, -r, "creating a file next to \"%s\": %s", p->path, strerror(-r));
        return r;
    }
    return 0;
}

void ic_files_put(ic_conn *c, uint32_t id, json_t *params)
{
    const char *path;
    long long mode = DEFAULT_MODE;
    if (ic_param_path(c, id, params, "path", &path) < 0 ||
        ic_param_int(c, id, params, "mode", false, 0, 07777, &mode) < 0)
        return;
    if (ic_conn_id_busy(c, id)) {
        ic_conn_error(c, id, EEXIST, "stream %u is already in use", id);
        return;
    }
    struct ic_put *p = calloc(1, sizeof(*p));
    if (!p || !(p->path = strdup(path))) {
        free(p);
        ic_conn_error(c, id, ENOMEM, "out of memory");
        return;
    }
    p->id = id;
    p->fd = -1;
    p->mode = (mode_t)mode;
    /* On failure the host's data for this stream finds no upload and is
     * discarded as it arrives. */
    if (put_open(c, id, p) < 0) {
        put_free(p, false);
        return;
    }
    p->next = c->puts;
    c->puts = p;
}

static int put_finish(struct ic_put *p)
{
    if (fchmod(p->fd, p->mode) < 0 || fsync(p->fd) < 0)
        return -errno;
    int fd = p->fd;
    p->fd = -1;
    if (close(fd) < 0)
        return -errno;
    if (rename(p->tmp, p->path) < 0)
        return -errno;
    free(p->tmp);
    p->tmp = NULL;
    return 0;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

void ic_files_data(ic_conn *c, uint32_t stream, const uint8_t *data, size_t len)
{
    struct ic_put **pp = &c->puts;
    while (*pp && (*pp)->id != stream)
        pp = &(*pp)->next;
    struct ic_put *p = *pp;
    if (!p) {
        glog_debug("discarding %zu file bytes for stream %u", len, stream);
        return;
    }
    int r;
    if (len > 0) {
        r = write_all(p->fd, data, len);
        if (r == 0) {
            p->size += len;
            return;
        }
    } else {
        r = put_finish(p);
        if (r == 0)
            ic_conn_reply(c, stream, json_pack("{s:I}", "size", (json_int_t)p->size));
    }
    if (r < 0)
        ic_conn_error(c, stream, -r, "writing \"%s\": %s", p->path, strerror(-r));
    /* Done either way; later bytes of a failed upload are discarded. */
    *pp = p->next;
    put_free(p, true);
}

/* ---- file.get ----------------------------------------------------------- */

void ic_files_get(ic_conn *c, uint32_t id, json_t *params)
{
    const char *path;
    if (ic_param_path(c, id, params, "path", &path) < 0)
        return;
    if (ic_conn_id_busy(c, id)) {
        ic_conn_error(c, id, EEXIST, "stream %u is already in use", id);
        return;
    }
    /* O_NONBLOCK: opening a FIFO must not hang the agent. */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        ic_conn_error(c, id, errno, "\"%s\": %s", path, strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
        int code = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        ic_conn_error(c, id, code, "\"%s\" is not a regular file", path);
        return;
    }
    struct ic_get *g = calloc(1, sizeof(*g));
    if (!g) {
        ic_conn_error(c, id, ENOMEM, "out of memory");
        return;
    }
    g->id = id;
    g->fd = TAKE_FD(fd);
    /* Appended, so downloads start in request order. */
    struct ic_get **tail = &c->gets;
    while (*tail)
        tail = &(*tail)->next;
    *tail = g;
    /* `size` is what stat said; the stream carries what read() returns
     * up to end of file (files in /proc report 0 and still have bytes). */
    ic_conn_reply(c, id, json_pack("{s:I,s:i}", "size", (json_int_t)st.st_size, "mode",
                                   (int)(st.st_mode & 07777)));
}

/* Sends one chunk of g; true when g is finished (EOF or error). */
static bool get_step(ic_conn *c, struct ic_get *g)
{
    ssize_t n = ic_conn_data_read(c, g->id, IC_CHAN_FILE, g->fd);
    if (n > 0)
        return false;
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return false;
    if (n == 0) {
        ic_conn_data(c, g->id, IC_CHAN_FILE, NULL, 0);
        return true;
    }
    int code = errno;
    glog_warn("request %u: reading: %s", g->id, strerror(code));
    ic_conn_notify(c, IC_N_STREAM_ERROR, json_pack("{s:I,s:i,s:s}", "id", (json_int_t)g->id,
                                                   "code", code, "message", strerror(code)));
    return true;
}

bool ic_files_pump(ic_conn *c)
{
    while (c->gets && c->error == 0 && ic_buf_size(&c->out) < IC_GUEST_OUT_HIGH) {
        /* One chunk per download per round: big files share the channel. */
        for (struct ic_get **gp = &c->gets; *gp;) {
            struct ic_get *g = *gp;
            if (ic_buf_size(&c->out) >= IC_GUEST_OUT_HIGH)
                break;
            if (get_step(c, g)) {
                *gp = g->next;
                close(g->fd);
                free(g);
            } else {
                gp = &g->next;
            }
        }
    }
    return c->gets != NULL;
}

/* ---- file.list ------------------------------------------------------------ */

static const char *type_name(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "dir";
    if (S_ISLNK(m))
        return "link";
    return "other";
}

/* Names are bytes; JSON wants UTF-8. Bytes that do not form UTF-8 are
 * shown as '?', so such a name is listed but not exact. */
static json_t *name_json(const char *name)
{
    json_t *s = json_string(name);
    if (s)
        return s;
    _cleanup_free_ char *copy = strdup(name);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return json_string(copy); // NOLINT(clang-analyzer-unix.Malloc): freed by _cleanup_free_
}

static int entry_cmp(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "name"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "name"));
    return strcmp(x, y);
}

static json_t *list_entry(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return NULL;   /* gone since readdir: not listed */
    json_t *jn = name_json(name);
    if (!jn)
        return NULL;
    return json_pack("{s:o,s:s,s:I,s:i}", "name", jn, "type", type_name(st.st_mode), "size",
                     (json_int_t)st.st_size, "mode", (int)(st.st_mode & 07777));
}

static int list_collect(DIR *d, json_t ***out, size_t *count)
{
    json_t **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((errno = 0, de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        json_t *e = list_entry(dirfd(d), de->d_name);
        if (!e)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            /* NOLINTNEXTLINE(bugprone-sizeof-expression): the elements are pointers */
            json_t **nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                json_decref(e);
                errno = ENOMEM;
                break;
            }
            v = nv;
        }
        v[n++] = e;
    }
    int r = -errno;
    *out = v;
    *count = n;
    return r;
}

void ic_files_list(ic_conn *c, uint32_t id, json_t *params)
{
    const char *path;
    if (ic_param_path(c, id, params, "path", &path) < 0)
        return;
    DIR *d = opendir(path);
    if (!d) {
        ic_conn_error(c, id, errno, "\"%s\": %s", path, strerror(errno));
        return;
    }
    json_t **v;
    size_t n;
    int r = list_collect(d, &v, &n);
    closedir(d);
    json_t *arr = r == 0 ? json_array() : NULL;
    if (arr && n > 0) {
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): the elements are pointers */
        qsort(v, n, sizeof(*v), entry_cmp);
        for (size_t i = 0; i < n; i++)
            json_array_append(arr, v[i]);
    }
    for (size_t i = 0; i < n; i++)
        json_decref(v[i]);
    free(v);
    if (!arr) {
        r = r < 0 ? r : -ENOMEM;
        ic_conn_error(c, id, -r, "listing \"%s\": %s", path, strerror(-r));
        return;
    }
    ic_conn_reply(c, id, json_pack("{s:o}", "entries", arr));
}

/* ---- connection end --------------------------------------------------------- */

void ic_files_close_all(ic_conn *c)
{
    while (c->puts) {
        struct ic_put *p = c->puts;
        c->puts = p->next;
        put_free(p, true);
    }
    while (c->gets) {
        struct ic_get *g = c->gets;
        c->gets = g->next;
        close(g->fd);
        free(g);
    }
}
