/*
 * test_audit.c - the audit ring and its counters (src/seccomp/audit.c):
 * order and wrap-around, exact counters after a million records, memory
 * that does not grow, the JSON document, bad sizes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "ironclaw/audit.h"

static struct ic_audit_entry entry(int nr, enum ic_sc_act kind, int err, int64_t t)
{
    struct ic_audit_entry e = {.time_ms = t, .pid = 42, .nr = nr, .action = {kind, err}};
    e.args[0] = (uint64_t)t;
    return e;
}

static void test_bad_sizes(void **state)
{
    ic_audit *a = NULL;
    ic_err err = {0};
    assert_int_equal(ic_audit_new(0, &a, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "1 to 1000000"));
    assert_int_equal(ic_audit_new(IC_AUDIT_RING_MAX + 1, &a, &err), -EINVAL);
    assert_int_equal(ic_audit_new(1, &a, &err), 0);
    ic_audit_free(a);
}

static void test_ring_order_and_wrap(void **state)
{
    ic_audit *a = NULL;
    assert_int_equal(ic_audit_new(3, &a, NULL), 0);
    struct ic_audit_entry e;
    assert_int_equal(ic_audit_entry(a, 0, &e), -ENOENT);
    for (int i = 1; i <= 5; i++) {
        struct ic_audit_entry in = entry(100 + i, IC_SC_ERRNO, 1, i);
        ic_audit_record(a, &in);
    }
    assert_int_equal(ic_audit_len(a), 3);
    assert_int_equal(ic_audit_capacity(a), 3);
    assert_int_equal(ic_audit_total(a), 5);
    /* Oldest kept first: records 3, 4, 5. */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ic_audit_entry(a, i, &e), 0);
        assert_int_equal(e.nr, 103 + (int)i);
        assert_int_equal(e.time_ms, 3 + (int64_t)i);
        assert_int_equal(e.args[0], 3 + i);
    }
    assert_int_equal(ic_audit_entry(a, 3, &e), -ENOENT);
    ic_audit_free(a);
}

/* A flood of a million violations: the ring keeps the newest entries, the
 * counters stay exact, the memory stays what it was. */
static void test_million_violations_bounded_and_exact(void **state)
{
    ic_audit *a = NULL;
    assert_int_equal(ic_audit_new(IC_AUDIT_RING_DEFAULT, &a, NULL), 0);
    size_t mem = ic_audit_memory(a);
    const uint64_t n = 1000000;
    for (uint64_t i = 0; i < n; i++) {
        int nr = (int)(i % 3);                     /* read, write, open */
        enum ic_sc_act k = i % 10 == 0 ? IC_SC_LOG : IC_SC_ERRNO;
        struct ic_audit_entry e = entry(nr, k, EPERM, (int64_t)i);
        ic_audit_record(a, &e);
    }
    struct ic_audit_entry big = entry(5000, IC_SC_KILL, 0, (int64_t)n);   /* shares "other" */
    ic_audit_record(a, &big);
    assert_int_equal(ic_audit_memory(a), mem);
    assert_int_equal(ic_audit_total(a), n + 1);
    assert_int_equal(ic_audit_len(a), IC_AUDIT_RING_DEFAULT);
    uint64_t per[3][2] = {{0}};
    for (uint64_t i = 0; i < n; i++)
        per[i % 3][i % 10 == 0]++;
    for (int nr = 0; nr < 3; nr++) {
        assert_int_equal(ic_audit_count(a, nr, IC_SC_ERRNO), per[nr][0]);
        assert_int_equal(ic_audit_count(a, nr, IC_SC_LOG), per[nr][1]);
        assert_int_equal(ic_audit_count(a, nr, IC_SC_KILL), 0);
    }
    assert_int_equal(ic_audit_count(a, 5000, IC_SC_KILL), 1);
    assert_int_equal(ic_audit_violations(a), n - n / 10 + 1);
    struct ic_audit_entry e;
    assert_int_equal(ic_audit_entry(a, IC_AUDIT_RING_DEFAULT - 1, &e), 0);
    assert_int_equal(e.nr, 5000);
    assert_int_equal(ic_audit_entry(a, 0, &e), 0);
    assert_int_equal(e.time_ms, (int64_t)(n + 1 - IC_AUDIT_RING_DEFAULT));
    ic_audit_free(a);
}

static void test_json_document(void **state)
{
    ic_audit *a = NULL;
    assert_int_equal(ic_audit_new(2, &a, NULL), 0);
    ic_audit_set_policy(a, "default");
    struct ic_audit_entry e1 = entry(165 /* mount */, IC_SC_ERRNO, EPERM, 1000);
    struct ic_audit_entry e2 = entry(165, IC_SC_ERRNO, EPERM, 2000);
    struct ic_audit_entry e3 = entry(39 /* getpid */, IC_SC_LOG, 0, 3000);
    ic_audit_record(a, &e1);
    ic_audit_record(a, &e2);
    ic_audit_record(a, &e3);
    assert_string_equal(ic_audit_stop_reason(a), "");
    ic_audit_set_stop(a, "first reason");
    ic_audit_set_stop(a, "second reason");
    json_t *doc = ic_audit_to_json(a, true);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "policy")), "default");
    assert_int_equal(json_integer_value(json_object_get(doc, "total")), 3);
    assert_int_equal(json_integer_value(json_object_get(doc, "violations")), 2);
    json_t *ring = json_object_get(doc, "ring");
    assert_int_equal(json_integer_value(json_object_get(ring, "kept")), 2);
    assert_int_equal(json_integer_value(json_object_get(ring, "lost")), 1);
    assert_string_equal(json_string_value(json_object_get(doc, "stopped")), "first reason");
    json_t *counts = json_object_get(doc, "counts");
    assert_int_equal(json_array_size(counts), 2);
    json_t *c0 = json_array_get(counts, 0);
    assert_string_equal(json_string_value(json_object_get(c0, "syscall")), "getpid");
    assert_string_equal(json_string_value(json_object_get(c0, "action")), "log");
    json_t *c1 = json_array_get(counts, 1);
    assert_string_equal(json_string_value(json_object_get(c1, "syscall")), "mount");
    assert_string_equal(json_string_value(json_object_get(c1, "action")), "errno");
    assert_int_equal(json_integer_value(json_object_get(c1, "count")), 2);
    json_t *entries = json_object_get(doc, "entries");
    assert_int_equal(json_array_size(entries), 2);
    json_t *last = json_array_get(entries, 1);
    assert_string_equal(json_string_value(json_object_get(last, "syscall")), "getpid");
    assert_int_equal(json_integer_value(json_object_get(last, "pid")), 42);
    json_t *first = json_array_get(entries, 0);
    assert_string_equal(json_string_value(json_object_get(first, "action")), "errno(EPERM)");
    assert_string_equal(json_string_value(json_array_get(json_object_get(first, "args"), 0)), "0x7d0");
    json_decref(doc);
    doc = ic_audit_to_json(a, false);
    assert_null(json_object_get(doc, "entries"));
    json_decref(doc);
    ic_audit_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_ring_order_and_wrap),
        cmocka_unit_test(test_million_violations_bounded_and_exact),
        cmocka_unit_test(test_json_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
