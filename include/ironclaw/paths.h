/*
 * paths.h - where ironclaw keeps things.
 *
 * data dir (images, kernels):   $IRONCLAW_DATA_DIR, else /var/lib/ironclaw
 *                               as root, else $XDG_DATA_HOME/ironclaw
 *                               (~/.local/share/ironclaw).
 * runtime dir (live VM state):  $IRONCLAW_RUNTIME_DIR, else /run/ironclaw as
 *                               root, else $XDG_RUNTIME_DIR/ironclaw
 *                               (/tmp/ironclaw-UID).
 * A VM's directory is <runtime>/vms/<internal id>; nothing user-supplied is
 * ever part of a path.
 */
#ifndef IRONCLAW_PATHS_H
#define IRONCLAW_PATHS_H

#include <stddef.h>

#include "ironclaw/err.h"

#define IC_PATH_MAX 4096

int ic_paths_data_dir(char *out, size_t size, ic_err *err);
int ic_paths_runtime_dir(char *out, size_t size, ic_err *err);
/* Directory holding the running ironclaw executable (for ironclaw-guest). */
int ic_paths_exe_dir(char *out, size_t size, ic_err *err);
/* snprintf into out; -ENAMETOOLONG with a clear message if it does not fit. */
int ic_path_join(char *out, size_t size, ic_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
