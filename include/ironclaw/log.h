/*
 * log.h - leveled diagnostics on stderr.
 *
 * The level is the only process-wide setting: the CLI sets it once from
 * --verbose/--quiet or IRONCLAW_LOG, and libraries only read it.
 */
#ifndef IRONCLAW_LOG_H
#define IRONCLAW_LOG_H

enum ic_log_level { IC_LOG_ERROR = 0, IC_LOG_WARN, IC_LOG_INFO, IC_LOG_DEBUG };

void ic_log_set_level(enum ic_log_level level);
enum ic_log_level ic_log_get_level(void);

void ic_log(enum ic_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define ic_log_error(...) ic_log(IC_LOG_ERROR, __VA_ARGS__)
#define ic_log_warn(...)  ic_log(IC_LOG_WARN, __VA_ARGS__)
#define ic_log_info(...)  ic_log(IC_LOG_INFO, __VA_ARGS__)
#define ic_log_debug(...) ic_log(IC_LOG_DEBUG, __VA_ARGS__)

#endif
