/*
 * cpio.c - writer for the "newc" cpio format the kernel unpacks as an
 * initramfs.
 *
 * Each entry is a 110-byte ASCII header ("070701" then 13 eight-digit hex
 * fields: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
 * rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded so
 * that header+name is a multiple of 4, then the data padded to 4. The
 * archive ends with an entry named "TRAILER!!!".
 *
 * Everything is owned by root and has mtime 0, so the same inputs give the
 * same bytes (the image's hash then depends only on what went in).
 */
#include "ironclaw/image.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CPIO_MAGIC "070701"
#define CPIO_HDR_LEN 110
#define CPIO_TRAILER "TRAILER!!!"

struct ic_cpio {
    int fd;
    uint64_t off;      /* bytes written so far */
    uint32_t next_ino;
};

static int write_all(ic_cpio *c, const void *data, size_t len, ic_err *err)
{
    int r = ic_write_all(c->fd, data, len);
    if (r < 0)
        return ic_err_sys(err, -r, "cannot write the cpio archive");
    c->off += len;
    return 0;
}

static int pad4(ic_cpio *c, ic_err *err)
{
    static const char zeros[4];
    size_t n = (4 - (c->off & 3)) & 3;
    return n ? write_all(c, zeros, n, err) : 0;
}

/* Archive names are relative ("bin/sh"); a leading '/' is dropped. Names
 * that could climb out of the root or are empty are refused. */
static int clean_name(const char *path, const char **out, ic_err *err)
{
    while (*path == '/')
        path++;
    *out = path;   /* on every path: the analyzer cannot see ic_err_set() is < 0 */
    if (!*path)
        return ic_err_set(err, EINVAL, "cpio: empty entry name");
    for (const char *p = path; *p;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.') || (n == 1 && p[0] == '.'))
            return ic_err_set(err, EINVAL, "cpio: bad entry name '%s'", path);
        p += n + (slash ? 1 : 0);
        if (slash && !*p)
            return ic_err_set(err, EINVAL, "cpio: bad entry name '%s'", path);
    }
    return 0;
}

static int put_header(ic_cpio *c, const char *name, uint32_t mode, uint32_t nlink,
                      uint64_t size, unsigned rmajor, unsigned rminor, ic_err *err)
{
    if (size > 0xffffffffu)
        return ic_err_set(err, EFBIG, "cpio: %s is larger than newc allows (4 GiB)", name);
    size_t namesize = strlen(name) + 1;
    char hdr[CPIO_HDR_LEN + 1];
    uint32_t ino = strcmp(name, CPIO_TRAILER) == 0 ? 0 : c->next_ino++;
    snprintf(hdr, sizeof(hdr),
             "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", CPIO_MAGIC,
             ino, mode, 0u, 0u, nlink, 0u, (uint32_t)size, 0u, 0u, rmajor, rminor,
             (uint32_t)namesize, 0u);
    int r = write_all(c, hdr, CPIO_HDR_LEN, err);
    if (r == 0)
        r = write_all(c, name, namesize, err);
    if (r == 0)
        r = pad4(c, err);
    return r;
}

int ic_cpio_open(int fd, ic_cpio **out, ic_err *err)
{
    ic_cpio *c = calloc(1, sizeof(*c));
    if (!c)
        return ic_err_set(err, ENOMEM, "out of memory");
    c->fd = fd;
    c->next_ino = 1;
    *out = c;
    return 0;
}

int ic_cpio_add_dir(ic_cpio *c, const char *path, mode_t perm, ic_err *err)
{
    const char *name;
    int r = clean_name(path, &name, err);
    return r < 0 ? r : put_header(c, name, S_IFDIR | (perm & 07777), 2, 0, 0, 0, err);
}

int ic_cpio_add_file(ic_cpio *c, const char *path, mode_t perm, const void *data, size_t len,
                     ic_err *err)
{
    const char *name;
    int r = clean_name(path, &name, err);
    if (r == 0)
        r = put_header(c, name, S_IFREG | (perm & 07777), 1, len, 0, 0, err);
    if (r == 0)
        r = write_all(c, data, len, err);
    if (r == 0)
        r = pad4(c, err);
    return r;
}

int ic_cpio_add_host_file(ic_cpio *c, const char *path, mode_t perm, const char *host_path,
                          ic_err *err)
{
    const char *name;
    int r = clean_name(path, &name, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(host_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", host_path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ic_err_sys(err, errno, "cannot stat %s", host_path);
    if (!S_ISREG(st.st_mode))
        return ic_err_set(err, EINVAL, "%s is not a regular file", host_path);
    uint64_t want = (uint64_t)st.st_size;
    r = put_header(c, name, S_IFREG | (perm & 07777), 1, want, 0, 0, err);
    char chunk[65536];
    uint64_t done = 0;
    while (r == 0) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ic_err_sys(err, errno, "cannot read %s", host_path);
        if (n == 0)
            break;
        /* The header already promised st_size bytes: a file that grows or
         * shrinks underneath would corrupt every later entry. */
        if (done + (uint64_t)n > want)
            return ic_err_set(err, EAGAIN, "%s changed while it was being copied", host_path);
        r = write_all(c, chunk, (size_t)n, err);
        done += (uint64_t)n;
    }
    if (r == 0 && done != want)
        return ic_err_set(err, EAGAIN, "%s changed while it was being copied", host_path);
    return r < 0 ? r : pad4(c, err);
}

int ic_cpio_add_symlink(ic_cpio *c, const char *path, const char *target, ic_err *err)
{
    const char *name;
    int r = clean_name(path, &name, err);
    if (r < 0)
        return r;
    size_t len = strlen(target);
    if (len == 0)
        return ic_err_set(err, EINVAL, "cpio: empty symlink target for %s", name);
    /* The symlink's data is its target, without a NUL. */
    r = put_header(c, name, S_IFLNK | 0777, 1, len, 0, 0, err);
    if (r == 0)
        r = write_all(c, target, len, err);
    return r < 0 ? r : pad4(c, err);
}

int ic_cpio_add_chardev(ic_cpio *c, const char *path, mode_t perm, unsigned major,
                        unsigned minor, ic_err *err)
{
    const char *name;
    int r = clean_name(path, &name, err);
    return r < 0 ? r : put_header(c, name, S_IFCHR | (perm & 07777), 1, 0, major, minor, err);
}

int ic_cpio_finish(ic_cpio *c, uint64_t *size, ic_err *err)
{
    int r = put_header(c, CPIO_TRAILER, 0, 1, 0, 0, 0, err);
    if (r == 0 && size)
        *size = c->off;
    free(c);
    return r;
}

void ic_cpio_abort(ic_cpio *c)
{
    free(c);
}
