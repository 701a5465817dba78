/*
 * err.h - the one way ironclaw reports errors.
 *
 * Every fallible function returns 0 on success or a negative errno, and
 * fills a caller-supplied ic_err with one human sentence saying what went
 * wrong. Callers may pass NULL when they only want the code. Nothing below
 * the CLI prints errors or exits; it hands them up in an ic_err.
 */
#ifndef IRONCLAW_ERR_H
#define IRONCLAW_ERR_H

#include <stddef.h>

#define IC_ERR_MSG_MAX 512

typedef struct ic_err {
    int code;                    /* positive errno, 0 when clear */
    char msg[IC_ERR_MSG_MAX];    /* one sentence, no trailing newline */
} ic_err;

/* Records code and message; returns -code so callers can `return ic_err_set(...)`. */
int ic_err_set(ic_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like ic_err_set, with ": <strerror(code)>" appended. */
int ic_err_sys(ic_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with more context ("starting qemu: ..."). */
int ic_err_wrap(ic_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void ic_err_clear(ic_err *err);

#endif
