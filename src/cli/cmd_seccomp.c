/*
 * cmd_seccomp.c - `ironclaw seccomp show|check|export POLICY`: print a
 * policy (a level name or a JSON file), validate policies, and export the
 * BPF program (or Firecracker's seccompiler JSON) built from one.
 */
#include "cli/cli.h"

#include "ironclaw/fsutil.h"
#include "ironclaw/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw seccomp show [--json] POLICY\n"
            "       ironclaw seccomp check POLICY...\n"
            "       ironclaw seccomp export [--format bpf|firecracker] [--notify] [-o FILE] POLICY\n"
            "\n"
            "POLICY is a level (strict, default, permissive, learn) or the path of a JSON\n"
            "policy file (format in docs/seccomp.md).\n"
            "\n"
            "  show     print the policy: default action, then the rules by action\n"
            "  check    validate policies (unknown system calls, bad actions, bad argument\n"
            "           conditions are errors); exit 0 when all are valid\n"
            "  export   write the filter: raw BPF (struct sock_filter[], for seccomp(2)) or\n"
            "           Firecracker's seccompiler JSON (thread categories vmm, api, vcpu)\n"
            "\n"
            "Options:\n"
            "  --json            show: the policy in its JSON format\n"
            "  --format FMT      export: bpf (default) or firecracker\n"
            "  --notify          export: the program ironclaw installs in a VMM (every action\n"
            "                    but allow becomes a user notification for the audit)\n"
            "  -o, --output FILE export: write to FILE instead of stdout\n"
            "  -h, --help        this help\n");
}

static int load(const char *spec, ic_seccomp_policy **p)
{
    ic_err err = {0};
    if (ic_seccomp_policy_load(spec, p, &err) < 0)
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    return 0;
}

static void print_group(const ic_seccomp_policy *p, json_t *rule)
{
    const char *act = json_string_value(json_object_get(rule, "action"));
    json_t *names = json_object_get(rule, "syscalls");
    if (names) {
        printf("%s (%zu):\n   ", act, json_array_size(names));
        size_t i, col = 3;
        json_t *n;
        json_array_foreach(names, i, n) {
            const char *s = json_string_value(n);
            if (col > 3 && col + strlen(s) + 1 > 78) {
                printf("\n   ");
                col = 3;
            }
            printf(" %s", s);
            col += strlen(s) + 1;
        }
        printf("\n");
        return;
    }
    printf("%s: %s when", act, json_string_value(json_object_get(rule, "syscall")));
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(rule, "args"), i, c) {
        json_t *v = json_object_get(c, "value"), *m = json_object_get(c, "mask");
        char val[32], mask[32] = "";
        if (json_is_integer(v))
            snprintf(val, sizeof(val), "%lld", (long long)json_integer_value(v));
        else
            snprintf(val, sizeof(val), "%s", json_string_value(v));
        if (m && json_is_integer(m))
            snprintf(mask, sizeof(mask), " & %lld", (long long)json_integer_value(m));
        else if (m)
            snprintf(mask, sizeof(mask), " & %s", json_string_value(m));
        printf("%s arg%lld%s %s %s", i ? " and" : "", (long long)json_integer_value(json_object_get(c, "index")),
               mask, json_string_value(json_object_get(c, "op")), val);
    }
    printf("\n");
}

static int cmd_show(const char *spec, bool as_json)
{
    ic_seccomp_policy *p = NULL;
    int r = load(spec, &p);
    if (r)
        return r;
    json_t *doc = ic_seccomp_policy_to_json(p);
    if (as_json) {
        json_dumpf(doc, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        printf("policy: %s\n", ic_seccomp_policy_name(p));
        const char *d = json_string_value(json_object_get(doc, "description"));
        if (d)
            printf("  %s\n", d);
        printf("default action: %s\n", json_string_value(json_object_get(doc, "default_action")));
        size_t i;
        json_t *rule;
        json_array_foreach(json_object_get(doc, "rules"), i, rule) {
            print_group(p, rule);
        }
    }
    json_decref(doc);
    ic_seccomp_policy_free(p);
    return 0;
}

static int cmd_check(char **specs, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        ic_seccomp_policy *p = NULL;
        ic_err err = {0};
        if (ic_seccomp_policy_load(specs[i], &p, &err) < 0) {
            ic_cli_error("%s", err.msg);
            bad++;
            continue;
        }
        char act[32];
        printf("%s: ok (%zu rules, default %s)\n", specs[i], ic_seccomp_policy_rule_count(p),
               ic_seccomp_action_str(ic_seccomp_policy_default(p), act, sizeof(act)));
        ic_seccomp_policy_free(p);
    }
    return bad ? IC_EXIT_SETUP : 0;
}

static int export_firecracker(const ic_seccomp_policy *p, int fd, ic_err *err)
{
    json_t *doc = NULL;
    int r = ic_seccomp_policy_to_firecracker(p, &doc, err);
    if (r < 0)
        return r;
    char *text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    if (!text)
        return ic_err_set(err, ENOMEM, "out of memory");
    r = ic_write_all(fd, text, strlen(text));
    if (r == 0)
        r = ic_write_all(fd, "\n", 1);
    free(text);
    return r < 0 ? ic_err_sys(err, -r, "cannot write the export") : 0;
}

static int cmd_export(const char *spec, const char *format, bool notify, const char *output)
{
    bool fc = strcmp(format, "firecracker") == 0;
    if (!fc && strcmp(format, "bpf") != 0)
        return ic_cli_error("--format wants bpf or firecracker"), IC_EXIT_USAGE;
    if (!fc && !output && isatty(STDOUT_FILENO))
        return ic_cli_error("refusing to write binary BPF to a terminal; use -o FILE"),
               IC_EXIT_USAGE;
    ic_seccomp_policy *p = NULL;
    int r = load(spec, &p);
    if (r)
        return r;
    int fd = STDOUT_FILENO;
    ic_err err = {0};
    if (output) {
        fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            ic_err_sys(&err, errno, "cannot create %s", output);
            ic_seccomp_policy_free(p);
            return ic_cli_fail(&err, IC_EXIT_SETUP);
        }
    }
    struct ic_sc_compile_opts o = {
        .flags = notify ? IC_SC_NOTIFY : 0,
        .handoff_fd = notify ? IC_SC_HANDOFF_FD : -1,
    };
    r = fc ? export_firecracker(p, fd, &err) : ic_seccomp_export_bpf(p, &o, fd, &err);
    if (output && close(fd) < 0 && r == 0)
        r = ic_err_sys(&err, errno, "cannot write %s", output);
    ic_seccomp_policy_free(p);
    if (r < 0) {
        if (output)
            unlink(output);
        return ic_cli_fail(&err, IC_EXIT_SETUP);
    }
    return 0;
}

int ic_cmd_seccomp(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"format", required_argument, NULL, 'f'},
        {"notify", no_argument, NULL, 'N'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool as_json = false, notify = false;
    const char *format = "bpf", *output = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = true; break;
        case 'f': format = optarg; break;
        case 'N': notify = true; break;
        case 'o': output = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return ic_cli_error("see 'ironclaw seccomp --help'"), IC_EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return ic_cli_error("seccomp wants show, check or export (see 'ironclaw seccomp --help')"),
               IC_EXIT_USAGE;
    const char *verb = argv[optind++];
    int rest = argc - optind;
    if (strcmp(verb, "check") == 0) {
        if (rest < 1)
            return ic_cli_error("seccomp check wants at least one POLICY"), IC_EXIT_USAGE;
        return cmd_check(argv + optind, rest);
    }
    if (strcmp(verb, "show") != 0 && strcmp(verb, "export") != 0)
        return ic_cli_error("unknown seccomp command '%s' (show, check, export)", verb),
               IC_EXIT_USAGE;
    if (rest != 1)
        return ic_cli_error("seccomp %s wants exactly one POLICY", verb), IC_EXIT_USAGE;
    if (strcmp(verb, "show") == 0)
        return cmd_show(argv[optind], as_json);
    return cmd_export(argv[optind], format, notify, output);
}
