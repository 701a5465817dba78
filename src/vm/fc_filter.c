/*
 * fc_filter.c - custom seccomp filters for Firecracker.
 *
 * A custom filter is written in seccompiler's JSON format and compiled by
 * the seccompiler-bin of the same release as the installed Firecracker
 * (the binary format changes between releases). Before anything is
 * compiled the file is checked here, so that a typo gives a sentence that
 * says where it is instead of a filter that silently means something else:
 * the top level maps the thread categories vmm, api and vcpu to filters;
 * each filter has default_action, filter_action and a list of rules; a
 * rule names a syscall and may hold and-bound argument conditions. Keys
 * are checked strictly. Condition keys are accepted in both spellings
 * Firecracker's releases used ("index"/"type" and "arg_index"/"arg_type").
 */
#include "vm/fc.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#define FILTER_FILE_MAX (4u << 20)

static const char *const THREADS[] = {"vmm", "api", "vcpu"};

static bool one_of(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Fails naming the first key of o that is not in `allowed`. */
static int only_keys(json_t *o, const char *const *allowed, const char *where, ic_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (!one_of(k, allowed))
            return ic_err_set(err, EINVAL, "seccomp filter: unknown key \"%s\" in %s", k, where);
    }
    return 0;
}

/* "allow", "kill_process", ... or {"errno": N} / {"trace": N}. */
static int check_action(json_t *a, const char *where, ic_err *err)
{
    static const char *const plain[] = {"allow", "kill", "kill_process", "kill_thread", "log",
                                        "trap", NULL};
    if (json_is_string(a)) {
        if (one_of(json_string_value(a), plain))
            return 0;
        return ic_err_set(err, EINVAL, "seccomp filter: %s is \"%s\", which is not an action "
                          "(allow, kill_process, kill_thread, log, trap, {\"errno\": N}, "
                          "{\"trace\": N})", where, json_string_value(a));
    }
    if (json_is_object(a) && json_object_size(a) == 1) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v) {
            if ((strcmp(k, "errno") == 0 || strcmp(k, "trace") == 0) && json_is_integer(v) &&
                json_integer_value(v) >= 0 && json_integer_value(v) <= 0xffff)
                return 0;
        }
    }
    return ic_err_set(err, EINVAL, "seccomp filter: %s must be an action such as \"allow\" or "
                      "{\"errno\": 1}", where);
}

static bool syscall_name_ok(const char *s)
{
    if (!*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* The value of whichever of the two spellings is present (not both). */
static json_t *either(json_t *o, const char *a, const char *b, const char *where, ic_err *err,
                      int *r)
{
    json_t *va = json_object_get(o, a), *vb = json_object_get(o, b);
    if (va && vb) {
        *r = ic_err_set(err, EINVAL, "seccomp filter: %s has both \"%s\" and \"%s\"", where, a, b);
        return NULL;
    }
    if (!va && !vb)
        *r = ic_err_set(err, EINVAL, "seccomp filter: %s lacks \"%s\"", where, a);
    return va ? va : vb;
}

static int check_condition(json_t *c, const char *where, ic_err *err)
{
    static const char *const keys[] = {"index", "arg_index", "type", "arg_type", "op", "val",
                                       "comment", NULL};
    static const char *const ops[] = {"eq", "ne", "lt", "le", "gt", "ge", NULL};
    if (!json_is_object(c))
        return ic_err_set(err, EINVAL, "seccomp filter: %s must be an object", where);
    int r = only_keys(c, keys, where, err);
    if (r < 0)
        return r;
    json_t *idx = either(c, "index", "arg_index", where, err, &r);
    if (r < 0)
        return r;
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 || json_integer_value(idx) > 5)
        return ic_err_set(err, EINVAL, "seccomp filter: %s: the argument index must be 0 to 5", where);
    json_t *type = either(c, "type", "arg_type", where, err, &r);
    if (r < 0)
        return r;
    const char *t = json_string_value(type);
    if (!t || (strcmp(t, "dword") != 0 && strcmp(t, "qword") != 0))
        return ic_err_set(err, EINVAL, "seccomp filter: %s: the argument type must be \"dword\" "
                          "or \"qword\"", where);
    json_t *op = json_object_get(c, "op");
    bool op_ok = json_is_string(op) && one_of(json_string_value(op), ops);
    json_t *mask = json_is_object(op) && json_object_size(op) == 1 ? json_object_get(op, "masked_eq")
                                                                   : NULL;
    if (!op_ok && !(json_is_integer(mask) && json_integer_value(mask) >= 0))
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"op\" must be eq, ne, lt, le, gt, ge "
                          "or {\"masked_eq\": MASK}", where);
    json_t *val = json_object_get(c, "val");
    if (!json_is_integer(val) || json_integer_value(val) < 0)
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"val\" must be a non-negative integer",
                          where);
    if (strcmp(t, "dword") == 0 && json_integer_value(val) > 0xffffffffLL)
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"val\" does not fit a dword", where);
    json_t *cm = json_object_get(c, "comment");
    if (cm && !json_is_string(cm))
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"comment\" must be a string", where);
    return 0;
}

static int check_rule(json_t *rule, const char *where, ic_err *err)
{
    static const char *const keys[] = {"syscall", "comment", "args", NULL};
    if (!json_is_object(rule))
        return ic_err_set(err, EINVAL, "seccomp filter: %s must be an object", where);
    int r = only_keys(rule, keys, where, err);
    if (r < 0)
        return r;
    const char *sc = json_string_value(json_object_get(rule, "syscall"));
    if (!sc)
        return ic_err_set(err, EINVAL, "seccomp filter: %s lacks \"syscall\"", where);
    if (!syscall_name_ok(sc))
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"%s\" is not a syscall name", where,
                          sc);
    json_t *cm = json_object_get(rule, "comment");
    if (cm && !json_is_string(cm))
        return ic_err_set(err, EINVAL, "seccomp filter: %s: \"comment\" must be a string", where);
    json_t *args = json_object_get(rule, "args");
    if (!args)
        return 0;
    if (!json_is_array(args) || json_array_size(args) == 0 || json_array_size(args) > 6)
        return ic_err_set(err, EINVAL, "seccomp filter: %s (%s): \"args\" must be a list of 1 to 6 "
                          "conditions", where, sc);
    size_t i;
    json_t *c;
    json_array_foreach(args, i, c) {
        char w[256];
        snprintf(w, sizeof(w), "%s (%s) condition %zu", where, sc, i);
        if ((r = check_condition(c, w, err)) < 0)
            return r;
    }
    return 0;
}

static int check_filter(json_t *f, const char *thread, ic_err *err)
{
    static const char *const keys[] = {"default_action", "filter_action", "filter", NULL};
    char where[96];
    snprintf(where, sizeof(where), "\"%s\"", thread);
    if (!json_is_object(f))
        return ic_err_set(err, EINVAL, "seccomp filter: %s must be an object", where);
    int r = only_keys(f, keys, where, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < 2; i++) {
        const char *k = keys[i];
        json_t *a = json_object_get(f, k);
        char w[128];
        snprintf(w, sizeof(w), "%s.%s", where, k);
        if (!a)
            return ic_err_set(err, EINVAL, "seccomp filter: %s lacks \"%s\"", where, k);
        if ((r = check_action(a, w, err)) < 0)
            return r;
    }
    json_t *rules = json_object_get(f, "filter");
    if (!json_is_array(rules))
        return ic_err_set(err, EINVAL, "seccomp filter: %s.filter must be a list of rules", where);
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule) {
        char w[128];
        snprintf(w, sizeof(w), "%s.filter[%zu]", where, i);
        if ((r = check_rule(rule, w, err)) < 0)
            return r;
    }
    return 0;
}

int ic_fc_filter_validate(const char *text, size_t len, ic_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ic_err_set(err, EINVAL, "seccomp filter is not valid JSON: %s (line %d, column %d)",
                          je.text, je.line, je.column);
    int r = 0;
    static const char *const threads[] = {"vmm", "api", "vcpu", NULL};
    if (!json_is_object(root))
        r = ic_err_set(err, EINVAL, "seccomp filter: the top level must be an object mapping "
                       "vmm, api and vcpu to filters");
    if (r == 0)
        r = only_keys(root, threads, "the top level (only vmm, api and vcpu)", err);
    for (size_t i = 0; r == 0 && i < sizeof(THREADS) / sizeof(THREADS[0]); i++) {
        json_t *f = json_object_get(root, THREADS[i]);
        if (!f)
            r = ic_err_set(err, EINVAL, "seccomp filter: no filter for the \"%s\" threads "
                           "(Firecracker needs vmm, api and vcpu)", THREADS[i]);
        else
            r = check_filter(f, THREADS[i], err);
    }
    json_decref(root);
    return r;
}

int ic_fc_filter_validate_file(const char *path, ic_err *err)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = ic_file_read(path, FILTER_FILE_MAX, &text, &len, err);
    if (r < 0)
        return ic_err_wrap(err, "reading the seccomp filter");
    r = ic_fc_filter_validate(text, len, err);
    return r < 0 ? ic_err_wrap(err, "%s", path) : 0;
}

/* ---- versions ----------------------------------------------------------------- */

int ic_fc_version_parse(const char *out, char *ver, size_t size)
{
    for (const char *p = out; *p; p++) {
        bool boundary = p == out || !isalnum((unsigned char)p[-1]) || p[-1] == 'v';
        if (!boundary || !isdigit((unsigned char)*p))
            continue;
        /* digits.digits.digits, then an optional -suffix ("-rc1", "-dev") */
        const char *q = p;
        int dots = 0;
        while (isdigit((unsigned char)*q) || (*q == '.' && isdigit((unsigned char)q[1]))) {
            dots += *q == '.';
            q++;
        }
        if (dots != 2) {
            p = q - 1;
            continue;
        }
        if (*q == '-' && isalnum((unsigned char)q[1])) {
            q++;
            while (isalnum((unsigned char)*q) || *q == '.' ||
                   (*q == '-' && isalnum((unsigned char)q[1])))
                q++;
        }
        size_t n = (size_t)(q - p);
        if (n >= size)
            return -ENAMETOOLONG;
        memcpy(ver, p, n);
        ver[n] = '\0';
        return 0;
    }
    return -ENOENT;
}

int ic_fc_versions_match(const char *fc_out, const char *seccompiler_out, ic_err *err)
{
    char a[64], b[64];
    if (ic_fc_version_parse(fc_out, a, sizeof(a)) < 0)
        return ic_err_set(err, EINVAL, "cannot tell Firecracker's version from `firecracker "
                          "--version`");
    if (ic_fc_version_parse(seccompiler_out, b, sizeof(b)) < 0)
        return ic_err_set(err, EINVAL, "cannot tell seccompiler-bin's version from "
                          "`seccompiler-bin --version`");
    if (strcmp(a, b) != 0)
        return ic_err_set(err, EINVAL, "seccompiler-bin is version %s but Firecracker is %s: a "
                          "filter compiled by another release may not load; install the "
                          "seccompiler-bin of Firecracker %s", b, a, a);
    return 0;
}
