/*
 * log.c - leveled messages on stderr, prefixed "ironclaw: ".
 */
#include "ironclaw/log.h"

#include <stdarg.h>
#include <stdio.h>

static enum ic_log_level current_level = IC_LOG_WARN;

void ic_log_set_level(enum ic_log_level level) { current_level = level; }
enum ic_log_level ic_log_get_level(void) { return current_level; }

void ic_log(enum ic_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (level > current_level)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One fputs per line keeps concurrent writers' lines whole. */
    char out[2100];
    snprintf(out, sizeof(out), "ironclaw: %s: %s\n", names[level], line);
    fputs(out, stderr);
}
