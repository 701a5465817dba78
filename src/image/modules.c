/*
 * modules.c - which kernel modules go into the image, and in what order.
 *
 * Input: the names in image/modules.list and the kernel's modules tree
 * (<kernel dir>/modules/, the same layout as /lib/modules/<release>/).
 * We index every *.ko under it by canonical name ('-' read as '_', as the
 * kernel does), read each wanted module's dependencies from its ELF
 * .modinfo "depends=" string (depmod's modules.dep is not needed, and the
 * Debian package does not ship it), and emit a depth-first post-order:
 * every module after all of its dependencies, otherwise in the order the
 * list names them. Modules built into the kernel (modules.builtin) are
 * skipped; a module that is nowhere is an error naming it.
 */
#include "ironclaw/image.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TREE_DEPTH 16

struct modfile {
    char *name;       /* canonical */
    char *relpath;    /* relative to the modules dir */
    bool compressed;  /* .ko.xz / .ko.zst / .ko.gz */
    int state;        /* 0 unvisited, 1 on the DFS stack, 2 emitted or skipped */
};

struct index {
    struct modfile *v;
    size_t n, cap;
    char **builtin;
    size_t nbuiltin;
    const char *dir;
    const char *release;
};

static void canon(char *s)
{
    for (; *s; s++)
        if (*s == '-')
            *s = '_';
}

static void index_free(struct index *ix)
{
    for (size_t i = 0; i < ix->n; i++) {
        free(ix->v[i].name);
        free(ix->v[i].relpath);
    }
    free(ix->v);
    for (size_t i = 0; i < ix->nbuiltin; i++)
        free(ix->builtin[i]);
    free(ix->builtin);
}

/* Module name from a file name: "virtio-rng.ko.xz" -> "virtio_rng". */
static char *name_of(const char *file, bool *compressed)
{
    static const char *const exts[] = {".ko", ".ko.xz", ".ko.zst", ".ko.gz"};
    size_t len = strlen(file);
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        size_t el = strlen(exts[i]);
        if (len > el && strcmp(file + len - el, exts[i]) == 0) {
            char *n = strndup(file, len - el);
            if (n)
                canon(n);
            *compressed = i > 0;
            return n;
        }
    }
    return NULL;
}

static int index_add(struct index *ix, const char *rel, const char *file, ic_err *err)
{
    bool compressed = false;
    char *name = name_of(file, &compressed);
    if (!name)
        return 0;
    if (ix->n == ix->cap) {
        size_t cap = ix->cap ? ix->cap * 2 : 256;
        struct modfile *v = realloc(ix->v, cap * sizeof(*v));
        if (!v) {
            free(name);
            return ic_err_set(err, ENOMEM, "out of memory");
        }
        ix->v = v;
        ix->cap = cap;
    }
    char *relpath = strdup(rel);
    if (!relpath) {
        free(name);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    ix->v[ix->n++] = (struct modfile){.name = name, .relpath = relpath, .compressed = compressed};
    return 0;
}

/* Walks dir/rel recursively; symlinks (such as "build" and "source" in a
 * real modules dir) are not followed. */
static int walk(struct index *ix, const char *rel, int depth, ic_err *err)
{
    if (depth > MAX_TREE_DEPTH)
        return 0;
    char path[IC_PATH_MAX];
    if (ic_path_join(path, sizeof(path), err, "%s%s%s", ix->dir, *rel ? "/" : "", rel) < 0)
        return -ENAMETOOLONG;
    DIR *d = opendir(path);
    if (!d)
        return ic_err_sys(err, errno, "cannot read the modules directory %s", path);
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char sub[IC_PATH_MAX];
        if ((r = ic_path_join(sub, sizeof(sub), err, "%s%s%s", rel, *rel ? "/" : "", de->d_name)) < 0)
            break;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            r = walk(ix, sub, depth + 1, err);
        else if (S_ISREG(st.st_mode))
            r = index_add(ix, sub, de->d_name, err);
    }
    closedir(d);
    return r;
}

static int by_name_then_path(const void *a, const void *b)
{
    const struct modfile *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->relpath, y->relpath);
}

/* modules.builtin lists the modules compiled into the kernel, one path
 * per line ("kernel/fs/binfmt_script.ko"). Absent file: nothing builtin. */
static int load_builtin(struct index *ix, ic_err *err)
{
    char path[IC_PATH_MAX];
    if (ic_path_join(path, sizeof(path), err, "%s/modules.builtin", ix->dir) < 0)
        return -ENAMETOOLONG;
    if (!ic_path_exists(path))
        return 0;
    _cleanup_free_ char *text = NULL;
    int r = ic_file_read(path, 16 << 20, &text, NULL, err);
    if (r < 0)
        return r;
    size_t lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    ix->builtin = calloc(lines, sizeof(char *));
    if (!ix->builtin)
        return ic_err_set(err, ENOMEM, "out of memory");
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        const char *base = strrchr(line, '/');
        bool compressed;
        char *name = name_of(base ? base + 1 : line, &compressed);
        if (name)
            ix->builtin[ix->nbuiltin++] = name;
    }
    return 0;
}

static bool is_builtin(const struct index *ix, const char *name)
{
    for (size_t i = 0; i < ix->nbuiltin; i++)
        if (strcmp(ix->builtin[i], name) == 0)
            return true;
    return false;
}

static struct modfile *lookup(struct index *ix, const char *name)
{
    struct modfile key = {.name = (char *)name, .relpath = ""};
    /* First entry with that name (sorted by path within a name). */
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (by_name_then_path(&ix->v[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && strcmp(ix->v[lo].name, name) == 0 ? &ix->v[lo] : NULL;
}

static int out_push(struct ic_modlist *out, const struct modfile *m, ic_err *err)
{
    char **names = realloc(out->name, (out->n + 1) * sizeof(char *));
    if (!names)
        return ic_err_set(err, ENOMEM, "out of memory");
    out->name = names;
    char **paths = realloc(out->relpath, (out->n + 1) * sizeof(char *));
    if (!paths)
        return ic_err_set(err, ENOMEM, "out of memory");
    out->relpath = paths;
    out->name[out->n] = strdup(m->name);
    out->relpath[out->n] = strdup(m->relpath);
    out->n++;
    if (!out->name[out->n - 1] || !out->relpath[out->n - 1])
        return ic_err_set(err, ENOMEM, "out of memory");
    return 0;
}

/* A module built for another kernel would be refused by finit_module in
 * the guest, long after the build said all was well. */
static int check_vermagic(const struct index *ix, const struct modfile *m, const char *path,
                          ic_err *err)
{
    if (!ix->release)
        return 0;
    _cleanup_free_ char *vm = NULL;
    int r = ic_image_modinfo(path, "vermagic", &vm, err);
    if (r < 0 || !vm)
        return r;
    size_t n = strcspn(vm, " ");
    if (n != strlen(ix->release) || strncmp(vm, ix->release, n) != 0)
        return ic_err_set(err, EINVAL, "module %s (%s) was built for kernel %.*s, not %s",
                          m->name, m->relpath, (int)n, vm, ix->release);
    return 0;
}

static int visit(struct index *ix, const char *raw, const char *needed_by,
                 struct ic_modlist *out, int depth, ic_err *err)
{
    _cleanup_free_ char *name = strdup(raw);
    if (!name)
        return ic_err_set(err, ENOMEM, "out of memory");
    canon(name);
    struct modfile *m = lookup(ix, name);
    if (!m) {
        if (is_builtin(ix, name)) {
            ic_log_debug("module %s is built into the kernel; skipped", name);
            return 0;
        }
        if (needed_by)
            return ic_err_set(err, ENOENT,
                              "module '%s' (needed by '%s') is not in %s and not built into the kernel",
                              name, needed_by, ix->dir);
        return ic_err_set(err, ENOENT, "module '%s' is not in %s and not built into the kernel",
                          name, ix->dir);
    }
    if (m->state == 2)
        return 0;
    if (m->state == 1 || depth > 64)
        return ic_err_set(err, ELOOP, "module '%s' depends on itself (dependency cycle)", name);
    if (m->compressed)
        return ic_err_set(err, ENOTSUP,
                          "module '%s' is compressed (%s); ironclaw needs plain .ko modules "
                          "(uncompress them in the kernel's modules directory)",
                          name, m->relpath);
    char path[IC_PATH_MAX];
    int r = ic_path_join(path, sizeof(path), err, "%s/%s", ix->dir, m->relpath);
    _cleanup_free_ char *deps = NULL;
    if (r == 0)
        r = ic_image_modinfo(path, "depends", &deps, err);
    if (r == 0)
        r = check_vermagic(ix, m, path, err);
    if (r < 0)
        return r;
    m->state = 1;
    for (char *save = NULL, *d = deps ? strtok_r(deps, ",", &save) : NULL; d && r == 0;
         d = strtok_r(NULL, ",", &save))
        if (*d)
            r = visit(ix, d, m->name, out, depth + 1, err);
    /* lookup() may have returned a pointer that stays valid: the index is
     * not resized during the walk. */
    m->state = 2;
    return r < 0 ? r : out_push(out, m, err);
}

int ic_image_resolve_modules(const char *modules_dir, const char *release,
                             const char *const *wanted, size_t nwanted, struct ic_modlist *out,
                             ic_err *err)
{
    memset(out, 0, sizeof(*out));
    struct index ix = {.dir = modules_dir, .release = release};
    int r = walk(&ix, "", 0, err);
    if (r == 0)
        r = load_builtin(&ix, err);
    if (r == 0) {
        if (ix.n > 0)   /* an empty tree leaves ix.v NULL, which qsort() must not get */
            qsort(ix.v, ix.n, sizeof(*ix.v), by_name_then_path);
        for (size_t i = 0; r == 0 && i < nwanted; i++)
            r = visit(&ix, wanted[i], NULL, out, 0, err);
    }
    index_free(&ix);
    if (r < 0)
        ic_modlist_free(out);
    return r;
}

void ic_modlist_free(struct ic_modlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->name[i]);
        free(l->relpath[i]);
    }
    free(l->name);
    free(l->relpath);
    memset(l, 0, sizeof(*l));
}

int ic_image_read_modules_list(const char *path, char ***names, size_t *n, ic_err *err)
{
    *names = NULL;
    *n = 0;
    _cleanup_free_ char *text = NULL;
    int r = ic_file_read(path, 1 << 20, &text, NULL, err);
    if (r < 0)
        return r;
    char **v = NULL;
    size_t count = 0;
    /* One or more names per line; '#' starts a comment. */
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        for (char *s2 = NULL, *w = strtok_r(line, " \t\r", &s2); w; w = strtok_r(NULL, " \t\r", &s2)) {
            for (const char *c = w; *c; c++)
                if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-') {
                    ic_image_free_names(v, count);
                    return ic_err_set(err, EINVAL, "%s: '%s' is not a module name", path, w);
                }
            char **nv = realloc(v, (count + 1) * sizeof(char *));
            if (!nv || !(nv[count] = strdup(w))) {
                ic_image_free_names(nv ? nv : v, count);
                return ic_err_set(err, ENOMEM, "out of memory");
            }
            v = nv;
            count++;
        }
    }
    *names = v;
    *n = count;
    return 0;
}

void ic_image_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
