/*
 * cmd_ps.c - `ironclaw ps`: every VM that has a state record, whether its
 * owner and VMM are still alive. Read-only: it never takes a VM's lock.
 */
#include "cli/cli.h"

#include "ironclaw/paths.h"
#include "ironclaw/state.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct ps {
    bool json;
    json_t *list;
    int count;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw ps [--json]\n"
            "\n"
            "Lists the VMs that have state records under the runtime directory, live or\n"
            "dead. STATUS is 'live' while the ironclaw process that owns the VM runs, and\n"
            "'dead' when the owner is gone (then 'ironclaw gc' removes what it left).\n"
            "\n"
            "Options:\n"
            "  --json      one JSON array, one object per VM\n"
            "  -h, --help  this help\n");
}

static const char *age(int64_t created_ms, char *buf, size_t size)
{
    int64_t s = (int64_t)time(NULL) - created_ms / 1000;
    if (s < 0)
        s = 0;
    if (s < 120)
        snprintf(buf, size, "%llds", (long long)s);
    else if (s < 7200)
        snprintf(buf, size, "%lldm", (long long)(s / 60));
    else
        snprintf(buf, size, "%lldh", (long long)(s / 3600));
    return buf;
}

static int visit(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct ps *ps = ud;
    ps->count++;
    if (!st) {
        if (ps->json)
            json_array_append_new(ps->list, json_pack("{s:s, s:s}", "dir", dir, "error",
                                                      load_err ? load_err->msg : "unreadable"));
        else
            printf("%-12.12s  %-16s  %-6s  %-10s  %-6s  %7s  %5s  (%s)\n", strrchr(dir, '/') + 1,
                   "?", "?", "?", "?", "-", "-", load_err ? load_err->msg : "unreadable");
        return 0;
    }
    bool owner = ic_state_owner_alive(st);
    pid_t vmm = ic_state_live_pid(st, "vmm");
    if (ps->json) {
        json_array_append_new(
            ps->list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:I}", "id",
                                ic_state_id(st), "name", ic_state_name(st), "vmm",
                                ic_state_driver(st), "phase", ic_state_phase(st), "dir", dir,
                                "owner_alive", owner, "owner_pid", (int)ic_state_owner_pid(st),
                                "vmm_pid", (int)vmm, "created_ms",
                                (json_int_t)ic_state_created_ms(st)));
        return 0;
    }
    char pidbuf[16] = "-", agebuf[32];
    if (vmm > 0)
        snprintf(pidbuf, sizeof(pidbuf), "%d", (int)vmm);
    printf("%-12.12s  %-16.16s  %-6s  %-10s  %-6s  %7s  %5s\n", ic_state_id(st),
           ic_state_name(st)[0] ? ic_state_name(st) : "-", ic_state_driver(st),
           ic_state_phase(st), owner ? "live" : "dead", pidbuf,
           age(ic_state_created_ms(st), agebuf, sizeof(agebuf)));
    return 0;
}

int ic_cmd_ps(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct ps ps = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            ps.json = true;
        else if (c == 'h')
            return usage(stdout), 0;
        else
            return ic_cli_error("see 'ironclaw ps --help'"), IC_EXIT_USAGE;
    }
    if (optind < argc)
        return ic_cli_error("ps takes no arguments"), IC_EXIT_USAGE;
    ic_err err = {0};
    char runtime[IC_PATH_MAX];
    if (ic_paths_runtime_dir(runtime, sizeof(runtime), &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    if (ps.json)
        ps.list = json_array();
    else
        printf("%-12s  %-16s  %-6s  %-10s  %-6s  %7s  %5s\n", "ID", "NAME", "VMM", "PHASE",
               "STATUS", "PID", "AGE");
    if (ic_state_each(runtime, visit, &ps, &err) < 0) {
        json_decref(ps.list);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    if (ps.json) {
        json_dumpf(ps.list, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(ps.list);
    }
    return 0;
}
