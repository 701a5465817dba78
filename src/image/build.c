/*
 * build.c - assembling, publishing, finding and describing a guest image.
 *
 * Layout in <data>/images/:
 *   .lock                 flock held by a builder for its whole run
 *   <name>                symlink to the current version directory
 *   <name>.<hex>          version directories: vmlinuz, initrd.cpio,
 *                         manifest.json (the current one and the one before,
 *                         kept so a VM that resolved it a moment ago can still
 *                         open its files)
 *   .<name>.tmp-<pid>     a build in progress
 * A build writes a temp directory, fsyncs it, renames it to a version
 * directory and then atomically replaces the <name> symlink, so a reader
 * that resolves <name> once (ic_image_locate does) sees one whole image.
 */
#include "image/image_int.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define MANIFEST_MAX (4 << 20)

static void progress(const struct ic_image_build_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void progress(const struct ic_image_build_opts *o, const char *fmt, ...)
{
    if (!o->progress)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    o->progress(o->progress_ctx, line);
}

static int check_name(const char *name, ic_err *err)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return ic_err_set(err, EINVAL, "image name must be 1 to 64 characters");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return ic_err_set(err, EINVAL, "image name '%s' may only hold letters, digits, '-' and '_'",
                              name);
    return 0;
}

static int data_dir_of(const char *given, char *out, size_t size, ic_err *err)
{
    return given ? ic_path_join(out, size, err, "%s", given) : ic_paths_data_dir(out, size, err);
}

/* ---- locate ------------------------------------------------------------- */

static int locate_in(const char *data, const char *name, struct ic_image_paths *out, ic_err *err)
{
    memset(out, 0, sizeof(*out));
    int r = check_name(name, err);
    char link[IC_PATH_MAX];
    if (r == 0)
        r = ic_path_join(link, sizeof(link), err, "%s/images/%s", data, name);
    if (r < 0)
        return r;
    /* Resolve once: every path handed out points into one version dir. */
    if (!realpath(link, out->dir)) {
        if (errno == ENOENT)
            return ic_err_set(err, ENOENT, "image '%s' is not built; run `ironclaw image build`", name);
        return ic_err_sys(err, errno, "cannot open image '%s' at %s", name, link);
    }
    if (ic_path_join(out->kernel, sizeof(out->kernel), err, "%s/vmlinuz", out->dir) < 0 ||
        ic_path_join(out->initrd, sizeof(out->initrd), err, "%s/initrd.cpio", out->dir) < 0 ||
        ic_path_join(out->manifest, sizeof(out->manifest), err, "%s/manifest.json", out->dir) < 0)
        return -ENAMETOOLONG;
    /* Optional: only Firecracker needs it. */
    if (ic_path_join(out->vmlinux, sizeof(out->vmlinux), err, "%s/vmlinux", out->dir) < 0)
        return -ENAMETOOLONG;
    if (!ic_path_exists(out->vmlinux))
        out->vmlinux[0] = '\0';
    const char *need[] = {out->kernel, out->initrd, out->manifest};
    for (size_t i = 0; i < 3; i++)
        if (!ic_path_exists(need[i]))
            return ic_err_set(err, ENOENT,
                              "image '%s' is incomplete (%s is missing); run `ironclaw image build --force`",
                              name, need[i]);
    json_error_t je;
    json_t *m = json_load_file(out->manifest, 0, &je);
    const char *rel = m ? json_string_value(json_object_get(m, "kernel_release")) : NULL;
    if (!rel || strlen(rel) >= sizeof(out->release)) {
        json_decref(m);
        return ic_err_set(err, EINVAL, "image '%s' has a damaged manifest (%s); run `ironclaw image build --force`",
                          name, out->manifest);
    }
    snprintf(out->release, sizeof(out->release), "%s", rel);
    json_decref(m);
    return 0;
}

int ic_image_locate(const char *name, struct ic_image_paths *out, ic_err *err)
{
    char data[IC_PATH_MAX];
    int r = ic_paths_data_dir(data, sizeof(data), err);
    return r < 0 ? r : locate_in(data, name ? name : IC_IMAGE_DEFAULT, out, err);
}

/* ---- initramfs ------------------------------------------------------------ */

/* Directories already in the archive, so each is written once, parents
 * first. */
struct dirset {
    char **v;
    size_t n;
};

static void dirset_free(struct dirset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
}

static int ensure_dir(ic_cpio *c, struct dirset *s, const char *path, mode_t perm, ic_err *err)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], path) == 0)
            return 0;
    const char *slash = strrchr(path, '/');
    if (slash) {
        _cleanup_free_ char *parent = strndup(path, (size_t)(slash - path));
        if (!parent)
            return ic_err_set(err, ENOMEM, "out of memory");
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): parent is freed by _cleanup_free_ */
        int r = ensure_dir(c, s, parent, 0755, err);
        if (r < 0)
            return r;
    }
    char **v = realloc(s->v, (s->n + 1) * sizeof(char *));
    if (!v)
        return ic_err_set(err, ENOMEM, "out of memory");
    s->v = v;
    if (!(s->v[s->n] = strdup(path)))
        return ic_err_set(err, ENOMEM, "out of memory");
    s->n++;
    return ic_cpio_add_dir(c, path, perm, err);
}

static int ensure_parent(ic_cpio *c, struct dirset *s, const char *path, ic_err *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return 0;
    _cleanup_free_ char *parent = strndup(path, (size_t)(slash - path));
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): parent is freed by _cleanup_free_ */
    return parent ? ensure_dir(c, s, parent, 0755, err) : ic_err_set(err, ENOMEM, "out of memory");
}

/* An applet path from busybox must stay a plain relative path. */
static bool applet_path_ok(const char *p)
{
    if (!*p || *p == '/' || strstr(p, "..") || strstr(p, "//") || p[strlen(p) - 1] == '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 127)
            return false;
    return true;
}

static int add_applets(ic_cpio *c, struct dirset *ds, char *applets, size_t *count, ic_err *err)
{
    int r = 0;
    *count = 0;
    for (char *save = NULL, *line = strtok_r(applets, "\n", &save); line && r == 0;
         line = strtok_r(NULL, "\n", &save)) {
        line[strcspn(line, "\r")] = '\0';
        if (!*line || strcmp(line, "bin/busybox") == 0)
            continue;
        if (!applet_path_ok(line))
            return ic_err_set(err, EINVAL, "busybox listed a strange applet path '%s'", line);
        r = ensure_parent(c, ds, line, err);
        if (r == 0)
            r = ic_cpio_add_symlink(c, line, "/bin/busybox", err);
        (*count)++;
    }
    return r;
}

static int write_initrd(int fd, struct ic_image_inputs *in, size_t *napplets, ic_err *err)
{
    static const struct {
        const char *path;
        mode_t mode;
    } dirs[] = {
        {"bin", 0755}, {"sbin", 0755}, {"usr", 0755}, {"usr/bin", 0755}, {"usr/sbin", 0755},
        {"dev", 0755}, {"dev/pts", 0755}, {"proc", 0555}, {"sys", 0555}, {"tmp", 01777},
        {"run", 0755}, {"root", 0700}, {"etc", 0755}, {"etc/ironclaw", 0755}, {"lib", 0755},
        {"lib/modules", 0755},
    };
    ic_cpio *c;
    int r = ic_cpio_open(fd, &c, err);
    if (r < 0)
        return r;
    struct dirset ds = {0};
    for (size_t i = 0; r == 0 && i < sizeof(dirs) / sizeof(dirs[0]); i++)
        r = ensure_dir(c, &ds, dirs[i].path, dirs[i].mode, err);
    if (r == 0)
        r = ic_cpio_add_host_file(c, "init", 0755, in->guest, err);
    if (r == 0)
        r = ic_cpio_add_host_file(c, "bin/busybox", 0755, in->busybox, err);
    if (r == 0)
        r = add_applets(c, &ds, in->applets, napplets, err);
    /* Device nodes as archive entries: the kernel creates them while
     * unpacking, before /init runs and without mknod on the host. */
    if (r == 0)
        r = ic_cpio_add_chardev(c, "dev/console", 0600, 5, 1, err);
    if (r == 0)
        r = ic_cpio_add_chardev(c, "dev/null", 0666, 1, 3, err);
    static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n";
    static const char group[] = "root:x:0:\n";
    if (r == 0)
        r = ic_cpio_add_file(c, "etc/passwd", 0644, passwd, sizeof(passwd) - 1, err);
    if (r == 0)
        r = ic_cpio_add_file(c, "etc/group", 0644, group, sizeof(group) - 1, err);

    /* Modules under their usual path, and the load order for the agent. */
    size_t cap = 1, len = 0;
    for (size_t i = 0; i < in->modules.n; i++)
        cap += strlen(in->release) + strlen(in->modules.relpath[i]) + 16;
    _cleanup_free_ char *order = malloc(cap);
    if (!order && r == 0)
        r = ic_err_set(err, ENOMEM, "out of memory");
    if (order)
        order[0] = '\0';
    for (size_t i = 0; r == 0 && i < in->modules.n; i++) {
        char inimg[IC_PATH_MAX], host[IC_PATH_MAX];
        r = ic_path_join(inimg, sizeof(inimg), err, "lib/modules/%s/%s", in->release, in->modules.relpath[i]);
        if (r == 0)
            r = ic_path_join(host, sizeof(host), err, "%s/%s", in->modules_dir, in->modules.relpath[i]);
        if (r == 0)
            r = ensure_parent(c, &ds, inimg, err);
        if (r == 0)
            r = ic_cpio_add_host_file(c, inimg, 0644, host, err);
        if (r == 0)
            len += (size_t)snprintf(order + len, cap - len, "/%s\n", inimg);
    }
    if (r == 0)
        r = ic_cpio_add_file(c, "etc/ironclaw/modules.order", 0644, order, len, err);
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): order is freed by _cleanup_free_ */
    dirset_free(&ds);
    if (r < 0) {
        ic_cpio_abort(c);
        return r;
    }
    return ic_cpio_finish(c, NULL, err);
}

/* ---- manifest ---------------------------------------------------------- */

static json_t *hashed_json(const char *path, const struct ic_image_hashed *h)
{
    json_t *o = json_object();
    if (path)
        json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "sha256", json_string(h->sha256));
    json_object_set_new(o, "size", json_integer((json_int_t)h->size));
    return o;
}

/* What became of the vmlinux Firecracker needs: extracted, copied, or why not. */
struct vmlinux_out {
    bool made;
    struct ic_image_hashed h;
    char how[IC_PATH_MAX + 64];
    char error[IC_ERR_MSG_MAX];
};

static json_t *manifest_new(const char *name, const struct ic_image_inputs *in, size_t napplets,
                            const struct ic_image_hashed *vmlinuz, const struct ic_image_hashed *initrd,
                            const struct vmlinux_out *vx, double seconds)
{
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);

    json_t *inputs = json_object();
    json_object_set_new(inputs, "kernel", hashed_json(in->kernel, &in->kernel_h));
    json_object_set_new(inputs, "guest", hashed_json(in->guest, &in->guest_h));
    json_t *bb = hashed_json(in->busybox, &in->busybox_h);
    json_object_set_new(bb, "version", json_string(in->busybox_version));
    json_object_set_new(inputs, "busybox", bb);
    json_object_set_new(inputs, "modules_list", hashed_json(in->modules_list, &in->modules_list_h));
    json_object_set_new(inputs, "kernel_config", in->kernel_config[0]
                            ? hashed_json(in->kernel_config, &in->config_h) : json_null());
    json_object_set_new(inputs, "modules_dir", json_string(in->modules_dir));
    json_t *mods = json_array(), *order = json_array();
    for (size_t i = 0; i < in->modules.n; i++) {
        json_t *m = json_object();
        json_object_set_new(m, "name", json_string(in->modules.name[i]));
        json_object_set_new(m, "file", json_string(in->modules.relpath[i]));
        json_t *h = hashed_json(NULL, &in->module_h[i]);
        json_object_update(m, h);
        json_decref(h);
        json_array_append_new(mods, m);
        char p[IC_PATH_MAX];
        snprintf(p, sizeof(p), "/lib/modules/%s/%s", in->release, in->modules.relpath[i]);
        json_array_append_new(order, json_string(p));
    }
    json_object_set_new(inputs, "modules", mods);

    json_t *outputs = json_object();
    json_object_set_new(outputs, "vmlinuz", hashed_json(NULL, vmlinuz));
    json_object_set_new(outputs, "initrd.cpio", hashed_json(NULL, initrd));
    json_object_set_new(outputs, "vmlinux", vx->made ? hashed_json(NULL, &vx->h) : json_null());

    json_t *m = json_object();
    json_object_set_new(m, "format", json_integer(IC_IMAGE_FORMAT));
    json_object_set_new(m, "name", json_string(name));
    json_object_set_new(m, "kernel_release", json_string(in->release));
    json_object_set_new(m, "built_at", json_string(when));
    json_object_set_new(m, "build_seconds", json_real((double)(long long)(seconds * 1000 + 0.5) / 1000));
    json_object_set_new(m, "inputs_sha256", json_string(in->digest));
    json_object_set_new(m, "inputs", inputs);
    json_object_set_new(m, "module_order", order);
    json_object_set_new(m, "busybox_applets", json_integer((json_int_t)napplets));
    json_object_set_new(m, "outputs", outputs);
    json_object_set_new(m, "vmlinux_from", vx->made ? json_string(vx->how) : json_null());
    if (!vx->made)
        json_object_set_new(m, "vmlinux_error", json_string(vx->error));
    return m;
}

/* The current image is up to date when it was made from inputs with the
 * same digest and its outputs still have the recorded sizes. */
static bool up_to_date(const char *data, const char *name, const struct ic_image_inputs *in,
                       json_t **manifest)
{
    struct ic_image_paths p;
    if (locate_in(data, name, &p, NULL) < 0)
        return false;
    json_t *m = json_load_file(p.manifest, 0, NULL);
    if (!m)
        return false;
    const char *digest = json_string_value(json_object_get(m, "inputs_sha256"));
    bool ok = json_integer_value(json_object_get(m, "format")) == IC_IMAGE_FORMAT && digest &&
              strcmp(digest, in->digest) == 0;
    json_t *outs = json_object_get(m, "outputs");
    char vmlinux[IC_PATH_MAX];
    if (ic_path_join(vmlinux, sizeof(vmlinux), NULL, "%s/vmlinux", p.dir) < 0) {
        json_decref(m);
        return false;
    }
    const char *files[][2] = {{"vmlinuz", p.kernel}, {"initrd.cpio", p.initrd}, {"vmlinux", vmlinux}};
    for (size_t i = 0; ok && i < 3; i++) {
        if (i == 2 && json_is_null(json_object_get(outs, "vmlinux")))
            break; /* recorded as not made: nothing to check */
        struct stat st;
        json_t *size = json_object_get(json_object_get(outs, files[i][0]), "size");
        ok = stat(files[i][1], &st) == 0 && json_is_integer(size) &&
             (json_int_t)st.st_size == json_integer_value(size);
    }
    if (ok)
        *manifest = m;
    else
        json_decref(m);
    return ok;
}

/* ---- files --------------------------------------------------------------- */


static int hash_output(const char *path, struct ic_image_hashed *h, ic_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return ic_err_sys(err, errno, "cannot stat %s", path);
    h->size = (uint64_t)st.st_size;
    return ic_sha256_file(path, h->sha256, err);
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The vmlinux for Firecracker: the kernel itself when it is ELF, else
 * extracted from the bzImage. Failing here fails only Firecracker, so it
 * is noted, not fatal. */
static int make_vmlinux(const char *tmp, const struct ic_image_inputs *in, struct vmlinux_out *vx,
                        ic_err *err)
{
    char xpath[IC_PATH_MAX];
    int r = ic_path_join(xpath, sizeof(xpath), err, "%s/vmlinux", tmp);
    if (r < 0)
        return r;
    ic_err e = {0};
    if (in->kernel_elf) {
        snprintf(vx->how, sizeof(vx->how), "copy of %s", in->kernel);
        r = ic_file_copy(in->kernel, xpath, 0644, &e);
    } else {
        r = ic_image_extract_vmlinux(in->kernel, xpath, vx->how, sizeof(vx->how), &e);
    }
    if (r < 0) {
        snprintf(vx->error, sizeof(vx->error), "%s", e.msg);
        unlink(xpath);
        return 0;
    }
    vx->made = true;
    return hash_output(xpath, &vx->h, err);
}

/* Builds the image's files into tmp (an empty new directory). */
static int build_into(const char *tmp, const char *name, struct ic_image_inputs *in, double t0,
                      struct vmlinux_out *vx, json_t **manifest, ic_err *err)
{
    char kpath[IC_PATH_MAX], ipath[IC_PATH_MAX], mpath[IC_PATH_MAX], cpath[IC_PATH_MAX];
    int r = ic_path_join(kpath, sizeof(kpath), err, "%s/vmlinuz", tmp);
    if (r == 0)
        r = ic_path_join(ipath, sizeof(ipath), err, "%s/initrd.cpio", tmp);
    if (r == 0)
        r = ic_path_join(mpath, sizeof(mpath), err, "%s/manifest.json", tmp);
    if (r == 0)
        r = ic_path_join(cpath, sizeof(cpath), err, "%s/config", tmp);
    if (r == 0)
        r = ic_file_copy(in->kernel, kpath, 0644, err);
    if (r == 0 && in->kernel_config[0])
        r = ic_file_copy(in->kernel_config, cpath, 0644, err);
    if (r == 0)
        r = make_vmlinux(tmp, in, vx, err);
    if (r < 0)
        return r;
    size_t napplets = 0;
    {
        _cleanup_close_ int fd = open(ipath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return ic_err_sys(err, errno, "cannot create %s", ipath);
        r = write_initrd(fd, in, &napplets, err);
        if (r == 0 && fsync(fd) < 0)
            r = ic_err_sys(err, errno, "cannot sync %s", ipath);
        if (r < 0)
            return r;
    }
    struct ic_image_hashed kh = {0}, ih = {0};
    if ((r = hash_output(kpath, &kh, err)) < 0 || (r = hash_output(ipath, &ih, err)) < 0)
        return r;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - t0;
    json_t *m = manifest_new(name, in, napplets, &kh, &ih, vx, secs);
    _cleanup_free_ char *body = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    _cleanup_free_ char *text = NULL;
    /* A newline at the end, for people who cat it. */
    if (!body || asprintf(&text, "%s\n", body) < 0) {
        text = NULL;
        json_decref(m);
        return ic_err_set(err, ENOMEM, "cannot serialise the manifest");
    }
    r = ic_file_write_atomic(mpath, text, strlen(text), 0644, err);
    if (r < 0) {
        json_decref(m);
        return r;
    }
    fsync_dir(tmp);
    *manifest = m;
    return 0;
}

/* Removes leftovers of crashed builds and versions older than the one just
 * replaced. Runs under the lock, so nothing here is in use by a builder. */
static void prune(const char *images, const char *name, const char *keep1, const char *keep2)
{
    DIR *d = opendir(images);
    if (!d)
        return;
    size_t nl = strlen(name);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        bool temp = s[0] == '.' && strncmp(s + 1, name, nl) == 0 &&
                    (strncmp(s + 1 + nl, ".tmp-", 5) == 0 || strncmp(s + 1 + nl, ".link-", 6) == 0);
        bool version = strncmp(s, name, nl) == 0 && s[nl] == '.' && s[nl + 1] &&
                       strspn(s + nl + 1, "0123456789abcdef") == strlen(s + nl + 1);
        if (!temp && !version)
            continue;
        if ((keep1 && strcmp(s, keep1) == 0) || (keep2 && strcmp(s, keep2) == 0))
            continue;
        char p[IC_PATH_MAX];
        if (ic_path_join(p, sizeof(p), NULL, "%s/%s", images, s) == 0)
            ic_rm_rf(p, NULL);
    }
    closedir(d);
}

/* Renames tmp to a fresh version dir and points <name> at it. */
static int publish(const char *images, const char *name, const char *tmp, ic_err *err)
{
    char link[IC_PATH_MAX], old[IC_PATH_MAX] = "", ver[IC_PATH_MAX], verpath[IC_PATH_MAX],
         newlink[IC_PATH_MAX];
    int r = ic_path_join(link, sizeof(link), err, "%s/%s", images, name);
    if (r < 0)
        return r;
    ssize_t n = readlink(link, old, sizeof(old) - 1);
    old[n > 0 ? n : 0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long stamp = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000;
    for (;; stamp++) {
        if ((r = ic_path_join(ver, sizeof(ver), err, "%s.%llx", name, stamp)) < 0 ||
            (r = ic_path_join(verpath, sizeof(verpath), err, "%s/%s", images, ver)) < 0)
            return r;
        if (!ic_path_exists(verpath))
            break;
    }
    if (rename(tmp, verpath) < 0)
        return ic_err_sys(err, errno, "cannot rename %s to %s", tmp, verpath);
    r = ic_path_join(newlink, sizeof(newlink), err, "%s/.%s.link-%d", images, name, (int)getpid());
    if (r < 0)
        return r;
    unlink(newlink);
    if (symlink(ver, newlink) < 0)
        return ic_err_sys(err, errno, "cannot create %s", newlink);
    if (rename(newlink, link) < 0) {
        /* <name> is a real directory (made by hand or by an older layout):
         * swap it out atomically, then remove it. */
        if (errno != EISDIR && errno != ENOTEMPTY && errno != EEXIST) {
            int e = errno;
            unlink(newlink);
            return ic_err_sys(err, e, "cannot replace %s", link);
        }
        if (renameat2(AT_FDCWD, newlink, AT_FDCWD, link, RENAME_EXCHANGE) < 0) {
            int e = errno;
            unlink(newlink);
            return ic_err_sys(err, e, "cannot replace %s", link);
        }
        ic_rm_rf(newlink, NULL);
    }
    fsync_dir(images);
    prune(images, name, ver, old[0] && !strchr(old, '/') ? old : NULL);
    return 0;
}

static int take_lock(const struct ic_image_build_opts *o, const char *images, int *fd_out, ic_err *err)
{
    char path[IC_PATH_MAX];
    int r = ic_path_join(path, sizeof(path), err, "%s/.lock", images);
    if (r < 0)
        return r;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        progress(o, "waiting for another image build to finish");
        while (flock(fd, LOCK_EX) < 0) {
            if (errno != EINTR) {
                int e = errno;
                close(fd);
                return ic_err_sys(err, e, "cannot lock %s", path);
            }
        }
    }
    *fd_out = fd;
    return 0;
}

int ic_image_build(const struct ic_image_build_opts *o, struct ic_image_build_result *res, ic_err *err)
{
    memset(res, 0, sizeof(*res));
    struct timespec ts0;
    clock_gettime(CLOCK_MONOTONIC, &ts0);
    double t0 = (double)ts0.tv_sec + (double)ts0.tv_nsec / 1e9;
    const char *name = o->name ? o->name : IC_IMAGE_DEFAULT;
    char data[IC_PATH_MAX], images[IC_PATH_MAX];
    int r = check_name(name, err);
    if (r == 0)
        r = data_dir_of(o->data_dir, data, sizeof(data), err);
    if (r == 0)
        r = ic_path_join(images, sizeof(images), err, "%s/images", data);
    if (r == 0)
        r = ic_mkdir_p(images, 0755, err);
    if (r < 0)
        return r;

    progress(o, "checking inputs");
    struct ic_image_inputs in;
    r = ic_image_inputs_gather(o, data, &in, err);
    if (r < 0)
        return r;
    progress(o, "kernel %s (%s)", in.release, in.kernel);
    progress(o, "guest agent %s", in.guest);
    progress(o, "%zu modules: %s%s", in.modules.n, in.modules.n ? in.modules.name[0] : "",
             in.modules.n > 1 ? " ..." : "");

    _cleanup_close_ int lock = -1;
    r = take_lock(o, images, &lock, err);
    json_t *manifest = NULL;
    /* Checked under the lock: a concurrent build may just have made it. */
    if (r == 0 && !o->force && up_to_date(data, name, &in, &manifest)) {
        progress(o, "image up to date");
    } else if (r == 0) {
        char tmp[IC_PATH_MAX];
        r = ic_path_join(tmp, sizeof(tmp), err, "%s/.%s.tmp-%d", images, name, (int)getpid());
        if (r == 0) {
            ic_rm_rf(tmp, NULL);
            if (mkdir(tmp, 0755) < 0)
                r = ic_err_sys(err, errno, "cannot create %s", tmp);
        }
        if (r == 0) {
            progress(o, "listing busybox applets");
            r = ic_image_inputs_applets(&in, err);
        }
        struct vmlinux_out vx = {0};
        if (r == 0) {
            progress(o, "writing initramfs and the vmlinux for Firecracker");
            r = build_into(tmp, name, &in, t0, &vx, &manifest, err);
        }
        if (r == 0 && vx.made)
            progress(o, "vmlinux: %s", vx.how);
        else if (r == 0)
            progress(o, "warning: no vmlinux, so Firecracker cannot boot this image: %s", vx.error);
        if (r == 0) {
            progress(o, "publishing");
            r = publish(images, name, tmp, err);
        }
        if (r < 0) {
            ic_rm_rf(tmp, NULL);
            json_decref(manifest);
            manifest = NULL;
        } else {
            res->rebuilt = true;
        }
    }
    ic_image_inputs_free(&in);
    if (r == 0)
        r = locate_in(data, name, &res->paths, err);
    if (r == 0) {
        res->manifest_json = json_dumps(manifest, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!res->manifest_json)
            r = ic_err_set(err, ENOMEM, "out of memory");
    }
    json_decref(manifest);
    return r;
}

/* ---- show ----------------------------------------------------------------- */

static void note_change(json_t *changed, const char *what, const char *path, const char *want_sha)
{
    char now[IC_SHA256_HEX];
    if (!path || !want_sha) {
        json_array_append_new(changed, json_string(what));
        return;
    }
    if (ic_sha256_file(path, now, NULL) < 0 || strcmp(now, want_sha) != 0)
        json_array_append_new(changed, json_string(what));
}

static json_t *file_info(const char *path)
{
    struct stat st;
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "size", stat(path, &st) == 0 ? json_integer((json_int_t)st.st_size) : json_null());
    return o;
}

int ic_image_show(const char *data_dir, const char *name, struct json_t **out, ic_err *err)
{
    *out = NULL;
    name = name ? name : IC_IMAGE_DEFAULT;
    char data[IC_PATH_MAX];
    struct ic_image_paths p = {0};
    int r = data_dir_of(data_dir, data, sizeof(data), err);
    if (r == 0)
        r = locate_in(data, name, &p, err);
    if (r < 0)
        return r;
    json_error_t je;
    json_t *m = json_load_file(p.manifest, 0, &je);
    if (!json_is_object(m)) {
        json_decref(m);
        return ic_err_set(err, EINVAL, "cannot parse %s: %s", p.manifest, je.text);
    }
    json_t *img = json_object();
    json_object_set_new(img, "dir", json_string(p.dir));
    json_object_set_new(img, "vmlinuz", file_info(p.kernel));
    json_object_set_new(img, "vmlinux", p.vmlinux[0] ? file_info(p.vmlinux) : json_null());
    json_object_set_new(img, "initrd", file_info(p.initrd));
    json_object_set_new(img, "manifest", file_info(p.manifest));
    json_object_set_new(m, "image", img);

    /* Re-hash the inputs at the paths the build used. */
    json_t *changed = json_array();
    json_t *inputs = json_object_get(m, "inputs");
    static const char *const single[] = {"kernel", "guest", "busybox", "modules_list",
                                         "kernel_config"};
    for (size_t i = 0; i < 5; i++) {
        json_t *o = json_object_get(inputs, single[i]);
        if (i == 4 && !json_is_object(o))
            continue; /* built without a kernel config */
        note_change(changed, single[i], json_string_value(json_object_get(o, "path")),
                    json_string_value(json_object_get(o, "sha256")));
    }
    const char *mdir = json_string_value(json_object_get(inputs, "modules_dir"));
    size_t i;
    json_t *mod;
    json_array_foreach(json_object_get(inputs, "modules"), i, mod) {
        const char *file = json_string_value(json_object_get(mod, "file"));
        const char *mname = json_string_value(json_object_get(mod, "name"));
        char path[IC_PATH_MAX];
        bool ok = mdir && file && ic_path_join(path, sizeof(path), NULL, "%s/%s", mdir, file) == 0;
        char what[192];
        snprintf(what, sizeof(what), "module %s", mname ? mname : "?");
        note_change(changed, what, ok ? path : NULL, json_string_value(json_object_get(mod, "sha256")));
    }
    json_object_set_new(m, "changed_inputs", changed);
    *out = m;
    return 0;
}
