/*
 * main.c - ironclaw's entry point: global options, then one subcommand.
 */
#include "cli/cli.h"
#include "ironclaw/log.h"
#include "ironclaw/vm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"exec", ic_cmd_exec, "boot a fresh microVM, run a command in it, destroy it"},
    {"ps", ic_cmd_ps, "list VMs that have state records, live or dead"},
    {"gc", ic_cmd_gc, "remove everything left by VMs whose owner died"},
    {"doctor", ic_cmd_doctor, "say what this host offers and which VMM 'auto' picks"},
    {"image", ic_cmd_image, "build or show the guest image"},
    {"seccomp", ic_cmd_seccomp, "show, check or export a VMM seccomp policy"},
    {"audit", ic_cmd_audit, "show the system calls a VM's seccomp policy blocked or logged"},
    {"fw", ic_cmd_fw, "list ironclaw's firewall chains, verify a VM's rules"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw [-v|-q] COMMAND [OPTIONS] [ARGS]\n"
            "\n"
            "Runs commands in disposable, hardened microVMs.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Global options:\n"
            "  -v, --verbose   more diagnostics (repeat for debug)\n"
            "  -q, --quiet     errors only\n"
            "  -h, --help      this help; 'ironclaw COMMAND --help' for a command\n"
            "      --version   print the version\n"
            "\n"
            "Environment: IRONCLAW_DATA_DIR, IRONCLAW_RUNTIME_DIR, IRONCLAW_LOG\n"
            "(error|warn|info|debug). See ironclaw(1).\n");
}

void ic_cli_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "ironclaw: %s\n", line);
}

int ic_cli_fail(const ic_err *err, int code)
{
    ic_cli_error("%s", err->msg[0] ? err->msg : "unknown error");
    return code;
}

static void level_from_env(void)
{
    const char *v = getenv("IRONCLAW_LOG");
    if (!v)
        return;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0)
            ic_log_set_level((enum ic_log_level)i);
}

int main(int argc, char **argv)
{
    /* When ironclaw re-executes itself to launch a VMM, nothing else runs. */
    ic_vm_launch_main(argc, argv);
    level_from_env();
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("ironclaw %s\n", IC_VERSION);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            enum ic_log_level l = ic_log_get_level();
            ic_log_set_level(l < IC_LOG_DEBUG ? l + 1 : l);
        } else if (strcmp(a, "-vv") == 0) {
            ic_log_set_level(IC_LOG_DEBUG);
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            ic_log_set_level(IC_LOG_ERROR);
        } else {
            ic_cli_error("unknown option '%s' (see 'ironclaw --help')", a);
            return IC_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return IC_EXIT_USAGE;
    }
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++)
        if (strcmp(argv[i], commands[c].name) == 0)
            return commands[c].run(argc - i, argv + i);
    ic_cli_error("unknown command '%s' (see 'ironclaw --help')", argv[i]);
    return IC_EXIT_USAGE;
}
