/*
 * policy.c - seccomp policies: the JSON format (parsing with error
 * messages that name the file, line and member), the checks every policy
 * must pass, user-space evaluation, and the two JSON renderings (our own
 * and Firecracker's seccompiler format). The format is documented in
 * docs/seccomp.md.
 */
#include "seccomp/internal.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <seccomp.h>

#define POLICY_FILE_MAX (4u << 20)

/* ---- names ------------------------------------------------------------ */

static const struct {
    const char *name;
    int value;
} errno_names[] = {
    {"EPERM", EPERM}, {"ENOENT", ENOENT}, {"ESRCH", ESRCH}, {"EINTR", EINTR},
    {"EIO", EIO}, {"ENXIO", ENXIO}, {"E2BIG", E2BIG}, {"ENOEXEC", ENOEXEC},
    {"EBADF", EBADF}, {"ECHILD", ECHILD}, {"EAGAIN", EAGAIN}, {"ENOMEM", ENOMEM},
    {"EACCES", EACCES}, {"EFAULT", EFAULT}, {"EBUSY", EBUSY}, {"EEXIST", EEXIST},
    {"EXDEV", EXDEV}, {"ENODEV", ENODEV}, {"ENOTDIR", ENOTDIR}, {"EISDIR", EISDIR},
    {"EINVAL", EINVAL}, {"ENFILE", ENFILE}, {"EMFILE", EMFILE}, {"ENOTTY", ENOTTY},
    {"EFBIG", EFBIG}, {"ENOSPC", ENOSPC}, {"ESPIPE", ESPIPE}, {"EROFS", EROFS},
    {"EPIPE", EPIPE}, {"ERANGE", ERANGE}, {"ENOSYS", ENOSYS}, {"ENOTSOCK", ENOTSOCK},
    {"EPROTONOSUPPORT", EPROTONOSUPPORT}, {"EOPNOTSUPP", EOPNOTSUPP},
    {"EAFNOSUPPORT", EAFNOSUPPORT}, {"ECONNREFUSED", ECONNREFUSED},
};

static const char *const op_names[] = {"eq", "ne", "lt", "le", "gt", "ge", "masked_eq"};

int ic_seccomp_syscall_nr(const char *name)
{
    int nr = seccomp_syscall_resolve_name(name);
    /* Negative numbers are libseccomp's pseudo-calls for other arches. */
    return nr == __NR_SCMP_ERROR || nr < 0 ? -1 : nr;
}

const char *ic_seccomp_syscall_name(int nr, char *buf, size_t size)
{
    char *n = nr >= 0 ? seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr) : NULL;
    if (n)
        snprintf(buf, size, "%s", n);
    else
        snprintf(buf, size, "syscall_%d", nr);
    free(n);
    return buf;
}

const char *ic_seccomp_action_str(struct ic_sc_action a, char *buf, size_t size)
{
    static const char *const kinds[] = {"allow", "errno", "kill", "trap", "log"};
    if (a.kind != IC_SC_ERRNO) {
        snprintf(buf, size, "%s", kinds[a.kind]);
        return buf;
    }
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
        if (errno_names[i].value == a.err) {
            snprintf(buf, size, "errno(%s)", errno_names[i].name);
            return buf;
        }
    snprintf(buf, size, "errno(%d)", a.err);
    return buf;
}

int ic_seccomp_action_parse(const char *s, struct ic_sc_action *out)
{
    static const struct {
        const char *name;
        enum ic_sc_act kind;
    } simple[] = {{"allow", IC_SC_ALLOW}, {"kill", IC_SC_KILL}, {"trap", IC_SC_TRAP},
                  {"log", IC_SC_LOG}};
    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
        if (strcmp(s, simple[i].name) == 0) {
            *out = (struct ic_sc_action){simple[i].kind, 0};
            return 0;
        }
    size_t len = strlen(s);
    if (strncmp(s, "errno(", 6) != 0 || len < 8 || s[len - 1] != ')')
        return -EINVAL;
    char arg[32];
    if (len - 7 >= sizeof(arg))
        return -EINVAL;
    memcpy(arg, s + 6, len - 7);
    arg[len - 7] = '\0';
    for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
        if (strcmp(arg, errno_names[i].name) == 0) {
            *out = (struct ic_sc_action){IC_SC_ERRNO, errno_names[i].value};
            return 0;
        }
    char *end = NULL;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || !end || *end || end == arg || v < 1 || v > 4095)
        return -ERANGE;
    *out = (struct ic_sc_action){IC_SC_ERRNO, (int)v};
    return 0;
}

/* ---- the policy object -------------------------------------------------- */

ic_seccomp_policy *sc_policy_new(const char *name, struct ic_sc_action def)
{
    ic_seccomp_policy *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->def = def;
    return p;
}

int sc_policy_add(ic_seccomp_policy *p, int nr, struct ic_sc_action act, unsigned ncond,
                  const struct ic_sc_cond *cond)
{
    if (p->n >= IC_SC_MAX_RULES || ncond > 6)
        return -E2BIG;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct sc_rule *r = realloc(p->rules, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        p->rules = r;
        p->cap = cap;
    }
    struct sc_rule *r = &p->rules[p->n++];
    memset(r, 0, sizeof(*r));
    r->nr = nr;
    r->act = act;
    r->ncond = ncond;
    if (ncond)
        memcpy(r->cond, cond, ncond * sizeof(*cond));
    return 0;
}

void ic_seccomp_policy_free(ic_seccomp_policy *p)
{
    if (!p)
        return;
    free(p->rules);
    free(p);
}

const char *ic_seccomp_policy_name(const ic_seccomp_policy *p) { return p->name; }
struct ic_sc_action ic_seccomp_policy_default(const ic_seccomp_policy *p) { return p->def; }
size_t ic_seccomp_policy_rule_count(const ic_seccomp_policy *p) { return p->n; }

bool ic_seccomp_policy_denies_nothing(const ic_seccomp_policy *p)
{
    if (p->def.kind != IC_SC_ALLOW && p->def.kind != IC_SC_LOG)
        return false;
    for (size_t i = 0; i < p->n; i++)
        if (p->rules[i].act.kind != IC_SC_ALLOW && p->rules[i].act.kind != IC_SC_LOG)
            return false;
    return true;
}

bool sc_action_eq(struct ic_sc_action a, struct ic_sc_action b)
{
    return a.kind == b.kind && (a.kind != IC_SC_ERRNO || a.err == b.err);
}

bool sc_cond_holds(const struct ic_sc_cond *c, const uint64_t args[6])
{
    uint64_t a = args[c->index], v = c->value;
    switch (c->op) {
    case IC_SC_EQ: return a == v;
    case IC_SC_NE: return a != v;
    case IC_SC_LT: return a < v;
    case IC_SC_LE: return a <= v;
    case IC_SC_GT: return a > v;
    case IC_SC_GE: return a >= v;
    case IC_SC_MASKED_EQ: return (a & c->mask) == v;
    }
    return false;
}

struct ic_sc_action ic_seccomp_policy_eval(const ic_seccomp_policy *p, int nr,
                                           const uint64_t args[6])
{
    for (size_t i = 0; i < p->n; i++) {
        const struct sc_rule *r = &p->rules[i];
        if (r->nr != nr)
            continue;
        bool all = true;
        for (unsigned k = 0; k < r->ncond && all; k++)
            all = sc_cond_holds(&r->cond[k], args);
        if (all)
            return r->act;
    }
    return p->def;
}

int sc_policy_check(const ic_seccomp_policy *p, const char *origin, ic_err *err)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct sc_rule *a = &p->rules[i];
        for (size_t j = 0; j < i; j++) {
            const struct sc_rule *b = &p->rules[j];
            if (b->nr != a->nr || sc_action_eq(a->act, b->act))
                continue;
            char name[64], x[32], y[32];
            return ic_err_set(err, EINVAL,
                              "%s: system call '%s' has rules with different actions (%s and "
                              "%s); the rules of one system call must share one action",
                              origin, ic_seccomp_syscall_name(a->nr, name, sizeof(name)),
                              ic_seccomp_action_str(b->act, x, sizeof(x)),
                              ic_seccomp_action_str(a->act, y, sizeof(y)));
        }
    }
    return 0;
}

/* ---- parsing JSON ----------------------------------------------------------- */

struct parse {
    const char *origin;
    const char *text;
    size_t len;
    ic_err *err;
};

/* Line of the first occurrence of "token" (with its quotes) in the text, 0
 * when not found: jansson keeps no positions for values it parsed. */
static int line_of(const struct parse *ps, const char *token)
{
    char quoted[160];
    if (snprintf(quoted, sizeof(quoted), "\"%s\"", token) >= (int)sizeof(quoted))
        return 0;
    const char *hit = memmem(ps->text, ps->len, quoted, strlen(quoted));
    if (!hit)
        return 0;
    int line = 1;
    for (const char *c = ps->text; c < hit; c++)
        line += *c == '\n';
    return line;
}

static int bad(const struct parse *ps, const char *token, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(const struct parse *ps, const char *token, const char *fmt, ...)
{
    char msg[IC_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    int line = token ? line_of(ps, token) : 0;
    if (line > 0)
        return ic_err_set(ps->err, EINVAL, "%s:%d: %s", ps->origin, line, msg);
    return ic_err_set(ps->err, EINVAL, "%s: %s", ps->origin, msg);
}

static int only_keys(const struct parse *ps, json_t *obj, const char *where,
                     const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (const char *const *p = keys; *p && !known; p++)
            known = strcmp(k, *p) == 0;
        if (!known)
            return bad(ps, k, "%s: unknown member \"%s\"", where, k);
    }
    return 0;
}

static int parse_action(const struct parse *ps, json_t *v, const char *where,
                        struct ic_sc_action *out)
{
    if (!json_is_string(v))
        return bad(ps, NULL, "%s must be a string such as \"allow\" or \"errno(EPERM)\"", where);
    const char *s = json_string_value(v);
    int r = ic_seccomp_action_parse(s, out);
    if (r == -ERANGE)
        return bad(ps, s, "%s: \"%s\": the errno must be 1 to 4095 or a name such as EPERM",
                   where, s);
    if (r < 0)
        return bad(ps, s, "%s: unknown action \"%s\" (want allow, errno(N), kill, log or trap)",
                   where, s);
    return 0;
}

static int parse_u64(const struct parse *ps, json_t *v, const char *where, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return bad(ps, NULL, "%s must not be negative (got %lld)", where, (long long)i);
        *out = (uint64_t)i;
        return 0;
    }
    if (!json_is_string(v))
        return bad(ps, NULL, "%s must be an integer or a string such as \"0x5401\"", where);
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 0);
    if (!*s || strchr(s, '-') || !end || *end || end == s)
        return bad(ps, s, "%s: \"%s\" is not a number", where, s);
    if (errno == ERANGE)
        return bad(ps, s, "%s: \"%s\" is larger than 64 bits (0xffffffffffffffff)", where, s);
    *out = x;
    return 0;
}

static int parse_cond(const struct parse *ps, json_t *c, const char *where, struct ic_sc_cond *out)
{
    static const char *const keys[] = {"index", "op", "value", "mask", "comment", NULL};
    if (!json_is_object(c))
        return bad(ps, NULL, "%s must be an object {\"index\", \"op\", \"value\"}", where);
    int r = only_keys(ps, c, where, keys);
    if (r < 0)
        return r;
    json_t *idx = json_object_get(c, "index"), *op = json_object_get(c, "op");
    json_t *val = json_object_get(c, "value"), *mask = json_object_get(c, "mask");
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 || json_integer_value(idx) > 5)
        return bad(ps, NULL, "%s.index must be an argument number from 0 to 5", where);
    out->index = (unsigned)json_integer_value(idx);
    if (!json_is_string(op))
        return bad(ps, NULL, "%s.op must be one of eq, ne, lt, le, gt, ge, masked_eq", where);
    size_t i = 0;
    for (; i < sizeof(op_names) / sizeof(op_names[0]); i++)
        if (strcmp(json_string_value(op), op_names[i]) == 0)
            break;
    if (i == sizeof(op_names) / sizeof(op_names[0]))
        return bad(ps, json_string_value(op),
                   "%s.op: unknown comparison \"%s\" (want eq, ne, lt, le, gt, ge, masked_eq)",
                   where, json_string_value(op));
    out->op = (enum ic_sc_op)i;
    char sub[96];
    if (!val)
        return bad(ps, NULL, "%s has no \"value\"", where);
    snprintf(sub, sizeof(sub), "%s.value", where);
    if ((r = parse_u64(ps, val, sub, &out->value)) < 0)
        return r;
    out->mask = 0;
    if (out->op == IC_SC_MASKED_EQ) {
        if (!mask)
            return bad(ps, NULL, "%s: masked_eq needs a \"mask\"", where);
        snprintf(sub, sizeof(sub), "%s.mask", where);
        return parse_u64(ps, mask, sub, &out->mask);
    }
    if (mask)
        return bad(ps, NULL, "%s: \"mask\" only goes with op masked_eq", where);
    return 0;
}

static int parse_conds(const struct parse *ps, json_t *args, const char *where,
                       struct ic_sc_cond *conds, unsigned *n)
{
    *n = 0;
    if (!args)
        return 0;
    if (!json_is_array(args) || json_array_size(args) > 6)
        return bad(ps, NULL, "%s.args must be an array of at most 6 conditions", where);
    size_t i;
    json_t *c;
    json_array_foreach(args, i, c) {
        char sub[80];
        snprintf(sub, sizeof(sub), "%s.args[%zu]", where, i);
        int r = parse_cond(ps, c, sub, &conds[i]);
        if (r < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (conds[j].index == conds[i].index)
                return bad(ps, NULL, "%s: argument %u is already compared in this rule; "
                           "write a second rule instead", sub, conds[i].index);
    }
    *n = (unsigned)json_array_size(args);
    return 0;
}

static int add_named(const struct parse *ps, ic_seccomp_policy *p, json_t *name,
                     const char *where, struct ic_sc_action act, unsigned ncond,
                     const struct ic_sc_cond *conds)
{
    if (!json_is_string(name) || !json_string_value(name)[0])
        return bad(ps, NULL, "%s must be a system call name", where);
    const char *s = json_string_value(name);
    int nr = ic_seccomp_syscall_nr(s);
    if (nr < 0)
        return bad(ps, s, "%s: unknown system call '%s' on this architecture", where, s);
    int r = sc_policy_add(p, nr, act, ncond, conds);
    if (r == -E2BIG)
        return bad(ps, NULL, "more than %d rules", IC_SC_MAX_RULES);
    return r < 0 ? ic_err_set(ps->err, -r, "out of memory") : 0;
}

static int parse_rule(const struct parse *ps, ic_seccomp_policy *p, json_t *rule, size_t i)
{
    static const char *const keys[] = {"syscall", "syscalls", "action", "args", "comment", NULL};
    char where[48];
    snprintf(where, sizeof(where), "rules[%zu]", i);
    if (!json_is_object(rule))
        return bad(ps, NULL, "%s must be an object", where);
    int r = only_keys(ps, rule, where, keys);
    if (r < 0)
        return r;
    json_t *one = json_object_get(rule, "syscall"), *many = json_object_get(rule, "syscalls");
    if (!!one == !!many)
        return bad(ps, NULL, "%s needs exactly one of \"syscall\" and \"syscalls\"", where);
    struct ic_sc_action act;
    char sub[80];
    snprintf(sub, sizeof(sub), "%s.action", where);
    json_t *ja = json_object_get(rule, "action");
    if (!ja)
        return bad(ps, NULL, "%s has no \"action\"", where);
    if ((r = parse_action(ps, ja, sub, &act)) < 0)
        return r;
    struct ic_sc_cond conds[6];
    unsigned ncond;
    if ((r = parse_conds(ps, json_object_get(rule, "args"), where, conds, &ncond)) < 0)
        return r;
    if (one) {
        snprintf(sub, sizeof(sub), "%s.syscall", where);
        return add_named(ps, p, one, sub, act, ncond, conds);
    }
    if (!json_is_array(many) || json_array_size(many) == 0)
        return bad(ps, NULL, "%s.syscalls must be a non-empty array of names", where);
    size_t k;
    json_t *name;
    json_array_foreach(many, k, name) {
        snprintf(sub, sizeof(sub), "%s.syscalls[%zu]", where, k);
        if ((r = add_named(ps, p, name, sub, act, ncond, conds)) < 0)
            return r;
    }
    return 0;
}

static int parse_doc(const struct parse *ps, json_t *root, ic_seccomp_policy **out)
{
    static const char *const keys[] = {"name", "description", "default_action", "rules",
                                       "comment", NULL};
    if (!json_is_object(root))
        return bad(ps, NULL, "a policy must be a JSON object");
    int r = only_keys(ps, root, "the policy", keys);
    if (r < 0)
        return r;
    json_t *name = json_object_get(root, "name"), *desc = json_object_get(root, "description");
    if ((name && !json_is_string(name)) || (desc && !json_is_string(desc)))
        return bad(ps, NULL, "\"name\" and \"description\" must be strings");
    json_t *def = json_object_get(root, "default_action"), *rules = json_object_get(root, "rules");
    if (!def)
        return bad(ps, NULL, "no \"default_action\"");
    if (!json_is_array(rules))
        return bad(ps, NULL, "\"rules\" must be an array");
    struct ic_sc_action da;
    if ((r = parse_action(ps, def, "default_action", &da)) < 0)
        return r;
    ic_seccomp_policy *p = sc_policy_new(name ? json_string_value(name) : ps->origin, da);
    if (!p)
        return ic_err_set(ps->err, ENOMEM, "out of memory");
    if (desc)
        snprintf(p->description, sizeof(p->description), "%s", json_string_value(desc));
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule) {
        if ((r = parse_rule(ps, p, rule, i)) < 0)
            break;
    }
    if (r == 0)
        r = sc_policy_check(p, ps->origin, ps->err);
    if (r < 0) {
        ic_seccomp_policy_free(p);
        return r;
    }
    *out = p;
    return 0;
}

int ic_seccomp_policy_parse(const char *text, size_t len, const char *origin,
                            ic_seccomp_policy **out, ic_err *err)
{
    struct parse ps = {origin, text, len, err};
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ic_err_set(err, EINVAL, "%s:%d:%d: not valid JSON: %s", origin, jerr.line,
                          jerr.column, jerr.text);
    int r = parse_doc(&ps, root, out);
    json_decref(root);
    return r;
}

int ic_seccomp_policy_load(const char *spec, ic_seccomp_policy **out, ic_err *err)
{
    if (!spec || !*spec)
        spec = IC_SC_LEVEL_DEFAULT;
    int r = sc_level_build(spec, out, err);
    if (r != -ENOENT)
        return r;
    if (!strchr(spec, '/') && !strstr(spec, ".json"))
        return ic_err_set(err, ENOENT, "no seccomp level '%s' (want strict, default, "
                          "permissive, learn, or the path of a JSON policy file)", spec);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    r = ic_file_read(spec, POLICY_FILE_MAX, &text, &len, err);
    if (r < 0)
        return r;
    return ic_seccomp_policy_parse(text, len, spec, out, err);
}

/* ---- rendering -------------------------------------------------------------- */

static json_t *value_json(uint64_t v)
{
    if (v <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)v);
    char hex[24];
    snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)v);
    return json_string(hex);
}

static json_t *conds_json(const struct sc_rule *r)
{
    json_t *a = json_array();
    for (unsigned k = 0; k < r->ncond; k++) {
        const struct ic_sc_cond *c = &r->cond[k];
        json_t *o = json_pack("{s:i, s:s, s:o}", "index", (int)c->index, "op", op_names[c->op],
                              "value", value_json(c->value));
        if (c->op == IC_SC_MASKED_EQ)
            json_object_set_new(o, "mask", value_json(c->mask));
        json_array_append_new(a, o);
    }
    return a;
}

json_t *ic_seccomp_policy_to_json(const ic_seccomp_policy *p)
{
    char act[32], name[64];
    json_t *rules = json_array();
    /* Unconditional rules of one action are listed together, in the order
     * their first member appeared; the order of rules carries no meaning. */
    json_t *groups = json_object();
    for (size_t i = 0; i < p->n; i++) {
        const struct sc_rule *r = &p->rules[i];
        ic_seccomp_action_str(r->act, act, sizeof(act));
        ic_seccomp_syscall_name(r->nr, name, sizeof(name));
        if (r->ncond) {
            json_array_append_new(rules, json_pack("{s:s, s:s, s:o}", "syscall", name, "action",
                                                   act, "args", conds_json(r)));
            continue;
        }
        json_t *g = json_object_get(groups, act);
        if (!g) {
            g = json_pack("{s:[], s:s}", "syscalls", "action", act);
            json_array_append_new(rules, g);
            json_object_set(groups, act, g);
        }
        json_array_append_new(json_object_get(g, "syscalls"), json_string(name));
    }
    json_decref(groups);
    json_t *doc = json_pack("{s:s, s:s, s:o}", "name", p->name, "default_action",
                            ic_seccomp_action_str(p->def, act, sizeof(act)), "rules", rules);
    if (doc && p->description[0])
        json_object_set_new(doc, "description", json_string(p->description));
    return doc;
}

static json_t *fc_action(struct ic_sc_action a)
{
    switch (a.kind) {
    case IC_SC_ALLOW: return json_string("allow");
    case IC_SC_ERRNO: return json_pack("{s:i}", "errno", a.err);
    case IC_SC_KILL: return json_string("kill_process");
    case IC_SC_TRAP: return json_string("trap");
    case IC_SC_LOG: return json_string("log");
    }
    return NULL;
}

/* The one action seccompiler applies on a match: that of every rule whose
 * action differs from the default. */
static int fc_match_action(const ic_seccomp_policy *p, struct ic_sc_action *out, ic_err *err)
{
    bool have = false;
    char x[32], y[32];
    for (size_t i = 0; i < p->n; i++) {
        struct ic_sc_action a = p->rules[i].act;
        if (sc_action_eq(a, p->def))
            continue;
        if (have && !sc_action_eq(a, *out))
            return ic_err_set(err, ENOTSUP, "Firecracker's seccompiler format has one match "
                              "action per filter, but this policy uses %s and %s besides its "
                              "default %s",
                              ic_seccomp_action_str(*out, x, sizeof(x)),
                              ic_seccomp_action_str(a, y, sizeof(y)),
                              ic_seccomp_action_str(p->def, y, sizeof(y)));
        *out = a;
        have = true;
    }
    if (!have)
        *out = p->def.kind == IC_SC_ALLOW ? (struct ic_sc_action){IC_SC_KILL, 0}
                                          : (struct ic_sc_action){IC_SC_ALLOW, 0};
    return 0;
}

static int fc_filter(const ic_seccomp_policy *p, struct ic_sc_action match, json_t **out,
                     ic_err *err)
{
    json_t *rules = json_array();
    char name[64];
    for (size_t i = 0; i < p->n; i++) {
        const struct sc_rule *r = &p->rules[i];
        if (!sc_action_eq(r->act, match))
            continue;
        json_t *o = json_pack("{s:s}", "syscall", ic_seccomp_syscall_name(r->nr, name, sizeof(name)));
        if (r->ncond) {
            json_t *args = json_array();
            for (unsigned k = 0; k < r->ncond; k++) {
                const struct ic_sc_cond *c = &r->cond[k];
                if (c->value > (uint64_t)INT64_MAX || c->mask > (uint64_t)INT64_MAX) {
                    json_decref(args);
                    json_decref(o);
                    json_decref(rules);
                    return ic_err_set(err, ERANGE, "%s: a value above 2^63-1 does not fit "
                                      "the seccompiler format", name);
                }
                json_t *op = c->op == IC_SC_MASKED_EQ
                                 ? json_pack("{s:I}", "masked_eq", (json_int_t)c->mask)
                                 : json_string(op_names[c->op]);
                json_array_append_new(args, json_pack("{s:i, s:s, s:o, s:I}", "index",
                                                      (int)c->index, "type", "qword", "op", op,
                                                      "val", (json_int_t)c->value));
            }
            json_object_set_new(o, "args", args);
        }
        json_array_append_new(rules, o);
    }
    *out = json_pack("{s:o, s:o, s:o}", "default_action", fc_action(p->def), "filter_action",
                     fc_action(match), "filter", rules);
    return *out ? 0 : ic_err_set(err, ENOMEM, "out of memory");
}

int ic_seccomp_policy_to_firecracker(const ic_seccomp_policy *p, json_t **out, ic_err *err)
{
    struct ic_sc_action match;
    int r = fc_match_action(p, &match, err);
    if (r < 0)
        return r;
    json_t *doc = json_object();
    static const char *const threads[] = {"vmm", "api", "vcpu"};
    for (size_t i = 0; i < 3; i++) {
        json_t *f = NULL;
        if ((r = fc_filter(p, match, &f, err)) < 0) {
            json_decref(doc);
            return r;
        }
        json_object_set_new(doc, threads[i], f);
    }
    *out = doc;
    return 0;
}
