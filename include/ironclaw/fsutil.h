/*
 * fsutil.h - small filesystem helpers for the host: whole-file reads and
 * atomic writes, writes that finish, small reads of /proc and /sys files,
 * copies, recursive mkdir/remove, SHA-256 of files and strings.
 */
#ifndef IRONCLAW_FSUTIL_H
#define IRONCLAW_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "ironclaw/err.h"

/* Reads a whole file (at most max bytes) into a NUL-terminated malloc'd buffer. */
int ic_file_read(const char *path, size_t max, char **out, size_t *len, ic_err *err);
/* Reads at most size-1 bytes of a small file (a /proc or /sys entry) into
 * buf, NUL-terminated. Returns the length, or -errno (buf is then ""). */
ssize_t ic_file_read_small(const char *path, char *buf, size_t size);
/* Copies a regular file to a new file `to` (created with mode, never
 * replacing one): a reflink where the filesystem can, else
 * copy_file_range, else read/write; then fsync. A partial copy is removed. */
int ic_file_copy(const char *from, const char *to, mode_t mode, ic_err *err);
/* Writes via a temporary file, fsync and rename, so readers see old or new, never half. */
int ic_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, ic_err *err);
/* write() until all of data is written (EINTR retried): 0 or -errno. */
int ic_write_all(int fd, const void *data, size_t len);
int ic_mkdir_p(const char *path, mode_t mode, ic_err *err);
/* Removes a tree without following symlinks; a missing path is success. */
int ic_rm_rf(const char *path, ic_err *err);
int ic_path_exists(const char *path);

/* Lowercase hex SHA-256 (65 bytes with NUL). */
#define IC_SHA256_HEX 65
int ic_sha256_file(const char *path, char hex[IC_SHA256_HEX], ic_err *err);
void ic_sha256_hex(const void *data, size_t len, char hex[IC_SHA256_HEX]);

#endif
