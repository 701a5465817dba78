/*
 * cmd_audit.c - `ironclaw audit [VM] [--json]`: the system calls a VM's
 * seccomp policy blocked or logged. The owner of a running VM keeps
 * <vm dir>/audit.json up to date (at most a second behind); the file stays
 * until the VM's directory goes (destroy, or `ironclaw gc` for a VM whose
 * owner died). A finished `ironclaw exec --json` carries the same document.
 */
#include "cli/cli.h"

#include "ironclaw/fsutil.h"
#include "ironclaw/paths.h"
#include "ironclaw/state.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SHOW_ENTRIES 20

struct audit_cmd {
    const char *want;      /* id, id prefix or name; NULL = every VM */
    bool json;
    bool all;
    json_t *docs;          /* --json: array of {id, name, audit} */
    int found;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw audit [--json] [--all] [VM]\n"
            "\n"
            "Shows the system calls that the seccomp policy of a VM's VMM blocked or logged:\n"
            "counters per system call and action (exact, however many calls were made) and\n"
            "the latest entries of the audit ring (time, pid, system call, action,\n"
            "arguments). VM is an id, a unique id prefix or a name; without it every VM\n"
            "that has a state record is summarised.\n"
            "\n"
            "Options:\n"
            "  --json      the audit documents as JSON (an array without VM)\n"
            "  --all       every entry of the ring, not only the last %d\n"
            "  -h, --help  this help\n",
            SHOW_ENTRIES);
}

static json_t *load_audit(const char *dir)
{
    char path[IC_PATH_MAX];
    if (ic_path_join(path, sizeof(path), NULL, "%s/audit.json", dir) < 0)
        return NULL;
    json_error_t jerr;
    return json_load_file(path, 0, &jerr);
}

static bool matches(const struct audit_cmd *a, ic_state *st)
{
    if (!a->want)
        return true;
    const char *id = ic_state_id(st);
    return strcmp(ic_state_name(st), a->want) == 0 ||
           (strlen(a->want) >= 4 && strncmp(id, a->want, strlen(a->want)) == 0);
}

static void print_counts(json_t *doc)
{
    size_t i;
    json_t *c;
    printf("  %10s  %-7s %s\n", "COUNT", "ACTION", "SYSCALL");
    json_array_foreach(json_object_get(doc, "counts"), i, c) {
        printf("  %10lld  %-7s %s (%lld)\n", (long long)json_integer_value(json_object_get(c, "count")),
               json_string_value(json_object_get(c, "action")),
               json_string_value(json_object_get(c, "syscall")),
               (long long)json_integer_value(json_object_get(c, "nr")));
    }
}

static void print_entries(json_t *doc, bool all)
{
    json_t *entries = json_object_get(doc, "entries");
    size_t n = json_array_size(entries);
    size_t from = all || n <= SHOW_ENTRIES ? 0 : n - SHOW_ENTRIES;
    if (!n)
        return;
    printf("  %s:\n", from ? "latest entries" : "entries");
    for (size_t i = from; i < n; i++) {
        json_t *e = json_array_get(entries, i);
        time_t t = (time_t)(json_integer_value(json_object_get(e, "time_ms")) / 1000);
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_t *args = json_object_get(e, "args");
        printf("  %s  pid %-7lld %s(%s, %s, %s, ...) -> %s\n", when,
               (long long)json_integer_value(json_object_get(e, "pid")),
               json_string_value(json_object_get(e, "syscall")),
               json_string_value(json_array_get(args, 0)), json_string_value(json_array_get(args, 1)),
               json_string_value(json_array_get(args, 2)),
               json_string_value(json_object_get(e, "action")));
    }
}

static void print_one(const struct audit_cmd *a, ic_state *st, json_t *doc)
{
    printf("%s%s%s%s  policy %s: %lld recorded, %lld violations; ring %lld/%lld kept, %lld lost\n",
           ic_state_id(st), ic_state_name(st)[0] ? " (" : "", ic_state_name(st),
           ic_state_name(st)[0] ? ")" : "", json_string_value(json_object_get(doc, "policy")) ?: "?",
           (long long)json_integer_value(json_object_get(doc, "total")),
           (long long)json_integer_value(json_object_get(doc, "violations")),
           (long long)json_integer_value(json_object_get(json_object_get(doc, "ring"), "kept")),
           (long long)json_integer_value(json_object_get(json_object_get(doc, "ring"), "capacity")),
           (long long)json_integer_value(json_object_get(json_object_get(doc, "ring"), "lost")));
    const char *stopped = json_string_value(json_object_get(doc, "stopped"));
    if (stopped)
        printf("  stopped: %s\n", stopped);
    if (!a->want)
        return;
    if (json_array_size(json_object_get(doc, "counts")))
        print_counts(doc);
    print_entries(doc, a->all);
}

static int visit(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct audit_cmd *a = ud;
    if (!st || !matches(a, st))
        return 0;
    a->found++;
    json_t *doc = load_audit(dir);
    if (a->json) {
        json_array_append_new(a->docs, json_pack("{s:s, s:s, s:o}", "id", ic_state_id(st), "name",
                                                 ic_state_name(st), "audit",
                                                 doc ? doc : json_null()));
        return 0;
    }
    if (!doc) {
        printf("%s: no audit yet\n", ic_state_id(st));
        return 0;
    }
    print_one(a, st, doc);
    json_decref(doc);
    return 0;
}

int ic_cmd_audit(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"all", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct audit_cmd a = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            a.json = true;
        else if (c == 'a')
            a.all = true;
        else if (c == 'h')
            return usage(stdout), 0;
        else
            return ic_cli_error("see 'ironclaw audit --help'"), IC_EXIT_USAGE;
    }
    if (argc - optind > 1)
        return ic_cli_error("audit takes at most one VM"), IC_EXIT_USAGE;
    a.want = optind < argc ? argv[optind] : NULL;
    ic_err err = {0};
    char runtime[IC_PATH_MAX];
    if (ic_paths_runtime_dir(runtime, sizeof(runtime), &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    a.docs = json_array();
    if (ic_state_each(runtime, visit, &a, &err) < 0) {
        json_decref(a.docs);
        return ic_cli_fail(&err, IC_EXIT_INTERNAL);
    }
    int code = 0;
    if (a.want && a.found == 0) {
        ic_cli_error("no VM '%s' (see 'ironclaw ps')", a.want);
        code = IC_EXIT_USAGE;
    } else if (a.want && a.found > 1) {
        ic_cli_error("'%s' names %d VMs; give more of the id", a.want, a.found);
        code = IC_EXIT_USAGE;
    } else if (a.json) {
        json_t *out = a.want ? json_object_get(json_array_get(a.docs, 0), "audit") : a.docs;
        json_dumpf(out, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else if (!a.want && a.found == 0) {
        printf("no VMs\n");
    }
    json_decref(a.docs);
    return code;
}
