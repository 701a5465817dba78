/*
 * audit.h - one VM's audit trail: every system call its VMM made that the
 * seccomp policy blocked or asked to log.
 *
 * A bounded ring holds the most recent entries (time, pid, system call,
 * arguments, action); when it is full the oldest entry is overwritten.
 * Counters per system call and action keep counting for ever, so totals
 * stay exact however many entries the ring has lost. The memory an audit
 * uses is fixed when it is created (ic_audit_memory).
 *
 * An audit is filled by the seccomp listener (seccomp.h) on the owner's
 * event loop; it is not thread-safe.
 */
#ifndef IRONCLAW_AUDIT_H
#define IRONCLAW_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ironclaw/err.h"
#include "ironclaw/seccomp.h"

typedef struct ic_audit ic_audit;

#define IC_AUDIT_RING_DEFAULT 10000
#define IC_AUDIT_RING_MAX 1000000
/* Counters exist for system call numbers below this; others share one. */
#define IC_AUDIT_NR_MAX 1024

struct ic_audit_entry {
    int64_t time_ms;           /* CLOCK_REALTIME, milliseconds */
    int32_t pid;               /* thread id as seen by the owner */
    int32_t nr;                /* system call number */
    struct ic_sc_action action;
    uint64_t args[6];
};

int ic_audit_new(size_t ring_size, ic_audit **out, ic_err *err);
void ic_audit_free(ic_audit *a);

void ic_audit_record(ic_audit *a, const struct ic_audit_entry *e);

uint64_t ic_audit_total(const ic_audit *a);       /* every recorded call */
uint64_t ic_audit_violations(const ic_audit *a);  /* every action but log */
uint64_t ic_audit_count(const ic_audit *a, int nr, enum ic_sc_act act);
size_t ic_audit_capacity(const ic_audit *a);
size_t ic_audit_len(const ic_audit *a);           /* entries in the ring */
/* Entry i of the ring, 0 = oldest kept. -ENOENT past the end. */
int ic_audit_entry(const ic_audit *a, size_t i, struct ic_audit_entry *out);
/* Bytes held, constant for the audit's life. */
size_t ic_audit_memory(const ic_audit *a);

/* Why the VM was ended because of its system calls (once; later calls
 * are ignored). "" when it was not. */
void ic_audit_set_stop(ic_audit *a, const char *reason);
const char *ic_audit_stop_reason(const ic_audit *a);

/* Names the policy in the JSON document. */
void ic_audit_set_policy(ic_audit *a, const char *name);

struct json_t;
/* {"policy", "total", "violations", "ring": {capacity, kept, lost},
 *  "counts": [{syscall, nr, action, count}], "entries": [...], "stopped"} */
struct json_t *ic_audit_to_json(const ic_audit *a, bool with_entries);

#endif
