/*
 * cleanup.h - scope-bound ownership, systemd style.
 *
 * `_cleanup_free_ char *p = ...;` frees p on every path out of the scope;
 * TAKE_PTR(p) hands ownership to someone else and disarms the cleanup.
 */
#ifndef IRONCLAW_CLEANUP_H
#define IRONCLAW_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>

static inline void ic_freep(void *p) { free(*(void **)p); }
static inline void ic_closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void ic_fclosep(FILE **f) { if (*f) fclose(*f); }

#define _cleanup_(fn) __attribute__((cleanup(fn)))
#define _cleanup_free_ _cleanup_(ic_freep)
#define _cleanup_close_ _cleanup_(ic_closep)
#define _cleanup_fclose_ _cleanup_(ic_fclosep)

#define TAKE_PTR(p) ({ __typeof__(p) _tp = (p); (p) = NULL; _tp; })
#define TAKE_FD(fd) ({ int _tf = (fd); (fd) = -1; _tf; })

#endif
