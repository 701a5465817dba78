/*
 * audit.c - the audit trail of one VM: a fixed-size ring of the latest
 * blocked or logged system calls and counters per system call and action
 * that never wrap (see include/ironclaw/audit.h). All memory is taken at
 * creation; recording never allocates.
 */
#include "ironclaw/audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

struct ic_audit {
    struct ic_audit_entry *ring;
    size_t cap;
    size_t head;                 /* next slot to write */
    size_t len;
    uint64_t total;
    uint64_t violations;
    /* [nr][action]; system calls >= IC_AUDIT_NR_MAX share the last row */
    uint64_t counts[IC_AUDIT_NR_MAX + 1][IC_SC_ACT_COUNT];
    char policy[64];
    char stop[256];
};

int ic_audit_new(size_t ring_size, ic_audit **out, ic_err *err)
{
    if (ring_size < 1 || ring_size > IC_AUDIT_RING_MAX)
        return ic_err_set(err, EINVAL, "the audit ring holds 1 to %d entries (got %zu)",
                          IC_AUDIT_RING_MAX, ring_size);
    ic_audit *a = calloc(1, sizeof(*a));
    if (!a)
        return ic_err_set(err, ENOMEM, "out of memory");
    a->ring = calloc(ring_size, sizeof(*a->ring));
    if (!a->ring) {
        free(a);
        return ic_err_set(err, ENOMEM, "out of memory for an audit ring of %zu entries", ring_size);
    }
    a->cap = ring_size;
    *out = a;
    return 0;
}

void ic_audit_free(ic_audit *a)
{
    if (!a)
        return;
    free(a->ring);
    free(a);
}

static size_t row(int nr)
{
    return nr >= 0 && nr < IC_AUDIT_NR_MAX ? (size_t)nr : IC_AUDIT_NR_MAX;
}

void ic_audit_record(ic_audit *a, const struct ic_audit_entry *e)
{
    a->ring[a->head] = *e;
    a->head = (a->head + 1) % a->cap;
    if (a->len < a->cap)
        a->len++;
    a->total++;
    if (e->action.kind != IC_SC_LOG)
        a->violations++;
    unsigned k = (unsigned)e->action.kind < IC_SC_ACT_COUNT ? (unsigned)e->action.kind : IC_SC_KILL;
    a->counts[row(e->nr)][k]++;
}

uint64_t ic_audit_total(const ic_audit *a) { return a->total; }
uint64_t ic_audit_violations(const ic_audit *a) { return a->violations; }
size_t ic_audit_capacity(const ic_audit *a) { return a->cap; }
size_t ic_audit_len(const ic_audit *a) { return a->len; }
size_t ic_audit_memory(const ic_audit *a) { return sizeof(*a) + a->cap * sizeof(*a->ring); }

uint64_t ic_audit_count(const ic_audit *a, int nr, enum ic_sc_act act)
{
    if ((unsigned)act >= IC_SC_ACT_COUNT)
        return 0;
    return a->counts[row(nr)][act];
}

int ic_audit_entry(const ic_audit *a, size_t i, struct ic_audit_entry *out)
{
    if (i >= a->len)
        return -ENOENT;
    size_t oldest = (a->head + a->cap - a->len) % a->cap;
    *out = a->ring[(oldest + i) % a->cap];
    return 0;
}

void ic_audit_set_stop(ic_audit *a, const char *reason)
{
    if (!a->stop[0])
        snprintf(a->stop, sizeof(a->stop), "%s", reason);
}

const char *ic_audit_stop_reason(const ic_audit *a) { return a->stop; }

void ic_audit_set_policy(ic_audit *a, const char *name)
{
    snprintf(a->policy, sizeof(a->policy), "%s", name);
}

static json_t *counts_json(const ic_audit *a)
{
    json_t *list = json_array();
    char name[64];
    for (size_t nr = 0; nr <= IC_AUDIT_NR_MAX; nr++) {
        for (unsigned k = 0; k < IC_SC_ACT_COUNT; k++) {
            uint64_t c = a->counts[nr][k];
            if (!c)
                continue;
            /* errno codes are counted together; each entry has its own. */
            static const char *const kinds[IC_SC_ACT_COUNT] = {"allow", "errno", "kill",
                                                              "trap", "log"};
            const char *an = kinds[k];
            json_array_append_new(
                list, json_pack("{s:s, s:i, s:s, s:I}", "syscall",
                                nr < IC_AUDIT_NR_MAX ? ic_seccomp_syscall_name((int)nr, name, sizeof(name))
                                                     : "other",
                                "nr", nr < IC_AUDIT_NR_MAX ? (int)nr : -1, "action", an, "count",
                                (json_int_t)c));
        }
    }
    return list;
}

static json_t *entry_json(const struct ic_audit_entry *e)
{
    char name[64], act[32];
    json_t *args = json_array();
    for (int i = 0; i < 6; i++) {
        char hex[24];
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)e->args[i]);
        json_array_append_new(args, json_string(hex));
    }
    return json_pack("{s:I, s:i, s:s, s:i, s:s, s:o}", "time_ms", (json_int_t)e->time_ms, "pid",
                     (int)e->pid, "syscall", ic_seccomp_syscall_name(e->nr, name, sizeof(name)),
                     "nr", (int)e->nr, "action", ic_seccomp_action_str(e->action, act, sizeof(act)),
                     "args", args);
}

json_t *ic_audit_to_json(const ic_audit *a, bool with_entries)
{
    json_t *doc = json_pack("{s:s, s:I, s:I, s:{s:I, s:I, s:I}, s:o, s:s?}", "policy", a->policy,
                            "total", (json_int_t)a->total, "violations",
                            (json_int_t)a->violations, "ring", "capacity", (json_int_t)a->cap,
                            "kept", (json_int_t)a->len, "lost",
                            (json_int_t)(a->total - a->len), "counts", counts_json(a),
                            "stopped", a->stop[0] ? a->stop : NULL);
    if (!doc || !with_entries)
        return doc;
    json_t *entries = json_array();
    struct ic_audit_entry e;
    for (size_t i = 0; ic_audit_entry(a, i, &e) == 0; i++)
        json_array_append_new(entries, entry_json(&e));
    json_object_set_new(doc, "entries", entries);
    return doc;
}
