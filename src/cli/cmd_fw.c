/*
 * cmd_fw.c - `ironclaw fw`: the host firewall as ironclaw sees it.
 *
 *   fw list [--json]      every IRONCLAW_ chain on the host (nftables and
 *                         iptables), with the VM it belongs to and whether
 *                         that VM's owner is alive; chains with no record
 *                         under this runtime directory are orphans.
 *   fw verify VM [--json] reads a running VM's rules back (namespace, link,
 *                         the jumps from forward and input, the final drop).
 */
#include "cli/cli.h"

#include "ironclaw/net.h"
#include "ironclaw/paths.h"
#include "ironclaw/state.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_NOT_IN_PLACE 1

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw fw list [--json]\n"
            "       ironclaw fw verify VM [--json]\n"
            "\n"
            "list    shows every IRONCLAW_ chain on this host, from both firewall backends\n"
            "        (nftables tables and iptables chains), with the VM it belongs to and\n"
            "        whether that VM's owner is alive: 'live', 'dead' (its owner died;\n"
            "        'ironclaw gc' removes it) or 'orphan' (no VM record under this runtime\n"
            "        directory: another ironclaw's, or left over).\n"
            "verify  checks that a running VM's isolation is in place: its network\n"
            "        namespace and link exist and its chain is jumped to from the forward\n"
            "        and input hooks and ends with a drop. VM is an id, a unique id prefix\n"
            "        or a name. Exit status 0 when in place, 1 when not, 65 when there is\n"
            "        no such VM.\n"
            "\n"
            "Options:\n"
            "      --json   print JSON\n"
            "  -h, --help   this help\n");
}

/* ---- list ----------------------------------------------------------------- */

struct vm_rec {
    char id[40], name[80], chain[IC_NET_CHAIN_SIZE];
    bool alive;
};

struct listing {
    struct vm_rec *vms;
    size_t n_vms, cap;
    json_t *out;         /* --json array, else NULL */
    int count;
};

static int collect_vm(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct listing *l = ud;
    if (!st)
        return 0;
    if (l->n_vms == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct vm_rec *v = realloc(l->vms, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->vms = v;
        l->cap = cap;
    }
    struct vm_rec *v = &l->vms[l->n_vms++];
    snprintf(v->id, sizeof(v->id), "%s", ic_state_id(st));
    snprintf(v->name, sizeof(v->name), "%s", ic_state_name(st));
    ic_net_chain_name(v->id, v->chain);
    v->alive = ic_state_owner_alive(st);
    return 0;
}

static int show_chain(enum ic_fw_backend b, const char *chain, void *ud)
{
    struct listing *l = ud;
    const struct vm_rec *vm = NULL;
    for (size_t i = 0; i < l->n_vms && !vm; i++)
        if (strcmp(l->vms[i].chain, chain) == 0)
            vm = &l->vms[i];
    const char *status = !vm ? "orphan" : vm->alive ? "live" : "dead";
    l->count++;
    if (l->out) {
        json_array_append_new(l->out, json_pack("{s:s, s:s, s:s?, s:s?, s:b, s:b, s:s}", "chain",
                                                chain, "backend", ic_fw_backend_name(b), "vm",
                                                vm ? vm->id : NULL, "name", vm ? vm->name : NULL,
                                                "owner_alive", vm && vm->alive, "orphan", !vm,
                                                "status", status));
        return 0;
    }
    printf("%-25s  %-8s  %-32s  %-16.16s  %s\n", chain, ic_fw_backend_name(b),
           vm ? vm->id : "-", vm && vm->name[0] ? vm->name : "-", status);
    return 0;
}

static int cmd_list(bool json)
{
    ic_err err = {0};
    char runtime[IC_PATH_MAX];
    if (ic_paths_runtime_dir(runtime, sizeof(runtime), &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    struct listing l = {0};
    if (ic_state_each(runtime, collect_vm, &l, &err) < 0) {
        free(l.vms);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    if (json)
        l.out = json_array();
    else
        printf("%-25s  %-8s  %-32s  %-16s  %s\n", "CHAIN", "BACKEND", "VM", "NAME", "STATUS");
    int code = 0;
    const enum ic_fw_backend backends[] = {IC_FW_NFT, IC_FW_IPTABLES};
    for (size_t i = 0; i < 2; i++) {
        ic_err e = {0};
        if (ic_fw_list(backends[i], show_chain, &l, &e) < 0) {
            ic_cli_error("fw list (%s): %s", ic_fw_backend_name(backends[i]), e.msg);
            code = IC_EXIT_SETUP;
        }
    }
    if (l.out) {
        json_dumpf(l.out, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(l.out);
    }
    free(l.vms);
    return code;
}

/* ---- verify --------------------------------------------------------------------- */

struct find {
    const char *want;
    char dir[IC_PATH_MAX];
    int matches;
    bool exact;
};

static int find_vm(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct find *f = ud;
    if (!st)
        return 0;
    const char *id = ic_state_id(st), *name = ic_state_name(st);
    bool exact = strcmp(id, f->want) == 0;
    bool match = exact || strncmp(id, f->want, strlen(f->want)) == 0 ||
                 (name[0] && strcmp(name, f->want) == 0);
    if (!match || (f->exact && !exact))
        return 0;
    if (exact && !f->exact)
        f->matches = 0; /* an exact id beats prefixes and names */
    f->exact |= exact;
    f->matches++;
    snprintf(f->dir, sizeof(f->dir), "%s", dir);
    return 0;
}

static int cmd_verify(const char *want, bool json)
{
    ic_err err = {0};
    char runtime[IC_PATH_MAX];
    if (ic_paths_runtime_dir(runtime, sizeof(runtime), &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    struct find f = {.want = want};
    if (ic_state_each(runtime, find_vm, &f, &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    if (f.matches > 1)
        return ic_cli_error("'%s' names %d VMs; give more of the id", want, f.matches), IC_EXIT_SETUP;
    if (f.matches == 0)
        return ic_cli_error("no VM '%s' under %s", want, runtime), IC_EXIT_SETUP;
    ic_state *st = NULL;
    if (ic_state_load(f.dir, &st, &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    char chain[IC_NET_CHAIN_SIZE] = "", backend[16] = "";
    int r = ic_net_verify_record(st, chain, backend, &err);
    bool alive = ic_state_owner_alive(st);
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:s?}", "vm", ic_state_id(st),
                              "name", ic_state_name(st), "chain", chain, "backend", backend,
                              "owner_alive", alive, "ok", r == 0, "error", r < 0 ? err.msg : NULL);
        json_dumpf(o, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(o);
    } else if (r == 0) {
        printf("%s: %s (%s) is in place: forward and input jumps, final drop\n",
               ic_state_id(st), chain, backend);
    } else {
        ic_cli_error("%s: %s", ic_state_id(st), err.msg);
    }
    ic_state_free(st);
    return r == 0 ? 0 : EXIT_NOT_IN_PLACE;
}

int ic_cmd_fw(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            json = true;
        else if (c == 'h')
            return usage(stdout), 0;
        else
            return ic_cli_error("see 'ironclaw fw --help'"), IC_EXIT_USAGE;
    }
    const char *sub = optind < argc ? argv[optind] : NULL;
    int rest = argc - optind - 1;
    if (sub && strcmp(sub, "list") == 0 && rest == 0)
        return cmd_list(json);
    if (sub && strcmp(sub, "verify") == 0 && rest == 1)
        return cmd_verify(argv[optind + 1], json);
    if (sub && (strcmp(sub, "list") == 0 || strcmp(sub, "verify") == 0))
        return ic_cli_error("usage: ironclaw fw list [--json] | ironclaw fw verify VM [--json]"),
               IC_EXIT_USAGE;
    return ic_cli_error(sub ? "unknown fw command '%s' (list, verify)" : "fw wants a command: "
                        "list or verify%s", sub ? sub : ""), IC_EXIT_USAGE;
}
