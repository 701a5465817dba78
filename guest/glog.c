/*
 * glog.c - the guest's log lines and clocks.
 *
 * Lines go to fd 2, which is /dev/console when the agent is PID 1, with
 * the prefix "ironclaw-guest: " so that they stand out in the VM's console
 * log next to the kernel's. The level is the shared one from log.h (set
 * once by main), so there is no separate global here.
 */
#include "guest.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void ic_glog(enum ic_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (level > ic_log_get_level())
        return;
    char line[1024];
    int n = snprintf(line, sizeof(line), IC_GUEST_NAME ": %s: ", names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* One write per line: no stdio buffering that could be lost at
     * poweroff or interleave with a child's output on the console. */
    ssize_t r = write(STDERR_FILENO, line, len);
    (void)r;
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t ic_now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
uint64_t ic_uptime_ms(void) { return clock_ms(CLOCK_BOOTTIME); }
