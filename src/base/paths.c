/*
 * paths.c - the data and runtime directories (see paths.h for the rules).
 */
#include "ironclaw/paths.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ic_path_join(char *out, size_t size, ic_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return ic_err_set(err, ENAMETOOLONG, "path too long (over %zu bytes)", size - 1);
    return 0;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int ic_paths_data_dir(char *out, size_t size, ic_err *err)
{
    const char *v = env_nonempty("IRONCLAW_DATA_DIR");
    if (v)
        return ic_path_join(out, size, err, "%s", v);
    if (geteuid() == 0)
        return ic_path_join(out, size, err, "/var/lib/ironclaw");
    if ((v = env_nonempty("XDG_DATA_HOME")))
        return ic_path_join(out, size, err, "%s/ironclaw", v);
    if ((v = env_nonempty("HOME")))
        return ic_path_join(out, size, err, "%s/.local/share/ironclaw", v);
    return ic_err_set(err, ENOENT, "no data directory: set IRONCLAW_DATA_DIR or HOME");
}

int ic_paths_runtime_dir(char *out, size_t size, ic_err *err)
{
    const char *v = env_nonempty("IRONCLAW_RUNTIME_DIR");
    if (v)
        return ic_path_join(out, size, err, "%s", v);
    if (geteuid() == 0)
        return ic_path_join(out, size, err, "/run/ironclaw");
    if ((v = env_nonempty("XDG_RUNTIME_DIR")))
        return ic_path_join(out, size, err, "%s/ironclaw", v);
    return ic_path_join(out, size, err, "/tmp/ironclaw-%u", (unsigned)geteuid());
}

int ic_paths_exe_dir(char *out, size_t size, ic_err *err)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n < 0)
        return ic_err_sys(err, errno, "cannot find the ironclaw executable");
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
    return 0;
}
