/*
 * err.c - filling ic_err. See include/ironclaw/err.h for the convention.
 */
#include "ironclaw/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void err_vformat(ic_err *err, int code, const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int ic_err_set(ic_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err_vformat(err, code, fmt, ap);
        va_end(ap);
    }
    return -code;
}

int ic_err_sys(ic_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err_vformat(err, code, fmt, ap);
        va_end(ap);
        size_t used = strlen(err->msg);
        snprintf(err->msg + used, sizeof(err->msg) - used, ": %s", strerror(code));
    }
    return -code;
}

int ic_err_wrap(ic_err *err, const char *fmt, ...)
{
    if (!err)
        return 0;
    char prefix[IC_ERR_MSG_MAX];
    char old[IC_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    /* Truncation is acceptable: the message is for people, and the prefix
     * (the outermost context) comes first. */
    size_t plen = strnlen(prefix, sizeof(err->msg) - 1);
    memcpy(err->msg, prefix, plen);
    size_t used = plen;
    const char *parts[2] = {": ", old};
    for (int i = 0; i < 2; i++) {
        size_t n = strnlen(parts[i], sizeof(err->msg) - 1 - used);
        memcpy(err->msg + used, parts[i], n);
        used += n;
    }
    err->msg[used] = '\0';
    return -err->code;
}

void ic_err_clear(ic_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
