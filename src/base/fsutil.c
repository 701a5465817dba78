/*
 * fsutil.c - whole-file I/O, small reads, copies, atomic replace, recursive mkdir/remove, and
 * SHA-256 (OpenSSL EVP) for content-addressing image inputs.
 */
#include "ironclaw/fsutil.h"
#include "ironclaw/cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

int ic_file_read(const char *path, size_t max, char **out, size_t *len, ic_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    size_t cap = 4096, n = 0;
    _cleanup_free_ char *buf = malloc(cap + 1);
    if (!buf)
        return ic_err_set(err, ENOMEM, "out of memory reading %s", path);
    for (;;) {
        if (n == cap) {
            if (cap >= max)
                return ic_err_set(err, EFBIG, "%s is larger than %zu bytes", path, max);
            cap = cap * 2 > max ? max : cap * 2;
            char *p = realloc(buf, cap + 1);
            if (!p)
                return ic_err_set(err, ENOMEM, "out of memory reading %s", path);
            buf = p;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ic_err_sys(err, errno, "cannot read %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    *out = TAKE_PTR(buf);
    return 0;
}

int ic_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

ssize_t ic_file_read_small(const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = read(fd, buf, size - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return n;
}

/* Reflink, then copy_file_range, then plain read/write. */
static int copy_fd(int in, int out)
{
    if (ioctl(out, FICLONE, in) == 0)
        return 0;
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n == 0)
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
    }
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return -errno;
    if (lseek(in, 0, SEEK_SET) < 0 || ftruncate(out, 0) < 0 || lseek(out, 0, SEEK_SET) < 0)
        return -errno;
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        int r = ic_write_all(out, buf, (size_t)n);
        if (r < 0)
            return r;
    }
}

int ic_file_copy(const char *from, const char *to, mode_t mode, ic_err *err)
{
    _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return ic_err_sys(err, errno, "cannot open %s", from);
    _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out < 0)
        return ic_err_sys(err, errno, "cannot create %s", to);
    int r = copy_fd(in, out);
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    if (r < 0) {
        unlink(to);
        return ic_err_sys(err, -r, "cannot copy %s to %s", from, to);
    }
    return 0;
}

int ic_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, ic_err *err)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= sizeof(tmp))
        return ic_err_set(err, ENAMETOOLONG, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot create %s", tmp);
    int r = ic_write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return ic_err_sys(err, -r, "cannot write %s", path);
    }
    return 0;
}

int ic_mkdir_p(const char *path, mode_t mode, ic_err *err)
{
    char buf[PATH_MAX];
    if ((size_t)snprintf(buf, sizeof(buf), "%s", path) >= sizeof(buf))
        return ic_err_set(err, ENAMETOOLONG, "path too long: %s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return ic_err_sys(err, errno, "cannot create directory %s", buf);
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return ic_err_set(err, ENOTDIR, "%s exists and is not a directory", path);
    return 0;
}

static int rm_rf_at(int parent, const char *name, ic_err *err)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : ic_err_sys(err, errno, "cannot stat %s", name);
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) < 0 && errno != ENOENT)
            return ic_err_sys(err, errno, "cannot remove %s", name);
        return 0;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open directory %s", name);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return ic_err_sys(err, errno, "cannot read directory %s", name);
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        r = rm_rf_at(dirfd(d), de->d_name, err);
    }
    closedir(d);
    if (r == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        r = ic_err_sys(err, errno, "cannot remove directory %s", name);
    return r;
}

int ic_rm_rf(const char *path, ic_err *err)
{
    return rm_rf_at(AT_FDCWD, path, err);
}

int ic_path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void to_hex(const unsigned char *md, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * n] = '\0';
}

void ic_sha256_hex(const void *data, size_t len, char hex[IC_SHA256_HEX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    to_hex(md, n, hex);
}

int ic_sha256_file(const char *path, char hex[IC_SHA256_HEX], ic_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return ic_err_set(err, ENOMEM, "cannot start SHA-256");
    }
    unsigned char chunk[65536];
    int r = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = ic_err_sys(err, errno, "cannot read %s", path);
            break;
        }
        if (n == 0)
            break;
        EVP_DigestUpdate(ctx, chunk, (size_t)n);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (r == 0)
        to_hex(md, mdlen, hex);
    return r;
}
