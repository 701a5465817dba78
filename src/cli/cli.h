/*
 * cli.h - the subcommands of the ironclaw executable and what they share.
 *
 * Each command lives in its own cmd_<name>.c, parses its own options with
 * getopt_long, answers --help, and returns the process exit status. Only
 * this layer prints to the user or chooses exit codes.
 */
#ifndef IRONCLAW_CLI_H
#define IRONCLAW_CLI_H

#include <stdbool.h>

#include "ironclaw/err.h"

/* Exit codes of ironclaw's own failures (documented in docs/ironclaw.1).
 * A command that ran exits with its own status (128+N for signal N); one
 * that could not be started in the guest (not found, not executable, bad
 * --workdir) exits 127, as a shell would. */
enum ic_exit {
    IC_EXIT_OK = 0,
    IC_EXIT_USAGE = 64,          /* bad command line */
    IC_EXIT_SETUP = 65,          /* missing image, bad configuration */
    IC_EXIT_BOOT = 66,           /* the VM could not be started */
    IC_EXIT_NO_GUEST = 67,       /* the guest agent never answered */
    IC_EXIT_TIMEOUT = 68,        /* --timeout expired; command and VM killed */
    IC_EXIT_GUEST_LOST = 69,     /* VM or channel died while the command ran */
    IC_EXIT_FILE = 70,           /* --put/--get failed */
    IC_EXIT_INTERNAL = 71,       /* anything else */
    IC_EXIT_SECCOMP = 72,        /* the VMM was stopped by its seccomp policy */
    IC_EXIT_NOT_RUN = 127,       /* CMD could not be started in the guest */
};

int ic_cmd_exec(int argc, char **argv);
int ic_cmd_ps(int argc, char **argv);
int ic_cmd_gc(int argc, char **argv);
int ic_cmd_doctor(int argc, char **argv);
int ic_cmd_image(int argc, char **argv);
int ic_cmd_seccomp(int argc, char **argv);
int ic_cmd_audit(int argc, char **argv);
int ic_cmd_fw(int argc, char **argv);

/* "ironclaw: <message>" on stderr. */
void ic_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints err's message and returns `code`. */
int ic_cli_fail(const ic_err *err, int code);

#endif
