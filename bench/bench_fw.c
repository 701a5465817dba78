/*
 * bench_fw.c - the firewall benchmark (bench/run.sh, `make bench`): for
 * each backend, side by side in one run,
 *
 *   one VM       add (apply + read-back) and remove one VM's rules, --runs
 *                times; median and min
 *   many VMs     add --vms VMs' rules one after another (total, per VM,
 *                the last 10 % alone), then remove them all
 *   lateness     a 1 ms repeating uv timer on the loop while --concurrent
 *                VMs' rules are added at once through the asynchronous API;
 *                the timer's lateness (interval - 1 ms) p50/p99/max
 *
 * Rules only: the chains name veths that do not exist (fake VM ids), no
 * packet moves, no VM boots. Every chain it adds is removed before it
 * exits, whatever happened. Needs root. Prints one JSON line on stdout.
 */
#include "ironclaw/id.h"
#include "ironclaw/net.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

struct opts {
    int runs, vms, concurrent;
    bool nft, iptables;
};

struct added {
    struct ic_fw_rules *r;
    bool *live;
    size_t n;
};

static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* A VM's rules from a fake id: the guest address walks a /16 of its own. */
static void fake(struct ic_fw_rules *r, size_t i)
{
    char id[IC_ID_SIZE];
    if (ic_id_new(id, NULL) < 0)
        snprintf(id, sizeof(id), "%032zx", i);
    struct ic_net_spec s;
    memset(&s, 0, sizeof(s));
    ic_net_spec_parse("allow=10.214.1.2:8080/tcp,10.214.2.0/24:53,10.214.3.4", &s, NULL);
    uint32_t guest = (10u << 24 | 212u << 16) + (uint32_t)(4 * i + 3);
    ic_fw_rules_init(r, id, guest, s.allow, s.n_allow);
}

/* ---- one operation at a time ---------------------------------------------- */

struct one {
    bool done;
    ic_err err;
};

static void one_done(const ic_err *err, void *ud)
{
    struct one *o = ud;
    o->done = true;
    if (err)
        o->err = *err;
}

static int add_one(uv_loop_t *loop, enum ic_fw_backend b, const struct ic_fw_rules *r, double *ms)
{
    struct one o = {0};
    ic_err err = {0};
    uint64_t t0 = uv_hrtime();
    if (ic_fw_add(loop, b, r, NULL, one_done, &o, &err) < 0) {
        fprintf(stderr, "bench_fw: %s add: %s\n", ic_fw_backend_name(b), err.msg);
        return -1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    *ms = ms_since(t0);
    if (o.err.code) {
        fprintf(stderr, "bench_fw: %s add: %s\n", ic_fw_backend_name(b), o.err.msg);
        return -1;
    }
    return 0;
}

static int remove_one(uv_loop_t *loop, enum ic_fw_backend b, const char *chain, double *ms)
{
    struct one o = {0};
    ic_err err = {0};
    uint64_t t0 = uv_hrtime();
    if (ic_fw_remove(loop, b, chain, one_done, &o, &err) < 0) {
        fprintf(stderr, "bench_fw: %s remove: %s\n", ic_fw_backend_name(b), err.msg);
        return -1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    *ms = ms_since(t0);
    return o.err.code ? -1 : 0;
}

/* Whatever is still applied goes, blocking, before we exit. */
static void cleanup(enum ic_fw_backend b, struct added *a)
{
    for (size_t i = 0; i < a->n; i++) {
        if (!a->live[i])
            continue;
        ic_err err = {0};
        if (ic_fw_remove_blocking(b, a->r[i].chain, &err) < 0)
            fprintf(stderr, "bench_fw: cleanup of %s: %s\n", a->r[i].chain, err.msg);
        a->live[i] = false;
    }
}

/* ---- lateness under concurrent adds ---------------------------------------------- */

struct late {
    uv_timer_t timer;
    uint64_t last;
    double *samples;
    size_t n, cap;
    int pending;
    int failed;
    struct added *a;
};

struct late_op {
    struct late *l;
    size_t index;
};

static void on_tick(uv_timer_t *t)
{
    struct late *l = t->data;
    uint64_t now = uv_hrtime();
    if (l->last && l->n < l->cap) {
        double late_ms = (double)(now - l->last) / 1e6 - 1.0;
        l->samples[l->n++] = late_ms > 0 ? late_ms : 0;
    }
    l->last = now;
}

static void late_done(const ic_err *err, void *ud)
{
    struct late_op *op = ud;
    struct late *l = op->l;
    if (err) {
        l->failed++;
        fprintf(stderr, "bench_fw: concurrent add: %s\n", err->msg);
    } else {
        l->a->live[op->index] = true;
    }
    free(op);
    if (--l->pending == 0)
        uv_timer_stop(&l->timer);
}

static int lateness(uv_loop_t *loop, enum ic_fw_backend b, struct added *a, size_t from, int count,
                    double *p50, double *p99, double *max, double *total_ms)
{
    struct late l = {.cap = 200000, .a = a};
    l.samples = calloc(l.cap, sizeof(double));
    if (!l.samples)
        return -1;
    uv_timer_init(loop, &l.timer);
    l.timer.data = &l;
    uv_timer_start(&l.timer, on_tick, 1, 1);
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < count; i++) {
        struct late_op *op = malloc(sizeof(*op));
        ic_err err = {0};
        if (!op)
            break;
        *op = (struct late_op){&l, from + (size_t)i};
        l.pending++;
        if (ic_fw_add(loop, b, &a->r[from + (size_t)i], NULL, late_done, op, &err) < 0) {
            fprintf(stderr, "bench_fw: concurrent add: %s\n", err.msg);
            l.pending--;
            l.failed++;
            free(op);
        }
    }
    if (l.pending == 0)
        uv_timer_stop(&l.timer);
    uv_run(loop, UV_RUN_DEFAULT);
    *total_ms = ms_since(t0);
    uv_close((uv_handle_t *)&l.timer, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    *max = l.n ? pct(l.samples, l.n, 1.0) : 0;
    *p50 = pct(l.samples, l.n, 0.5);
    *p99 = pct(l.samples, l.n, 0.99);
    free(l.samples);
    return l.failed ? -1 : 0;
}

/* ---- one backend --------------------------------------------------------------------- */

static int bench_backend(const struct opts *o, enum ic_fw_backend b, FILE *json)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    size_t total = (size_t)o->runs + (size_t)o->vms + (size_t)o->concurrent;
    struct added a = {calloc(total, sizeof(struct ic_fw_rules)), calloc(total, sizeof(bool)), total};
    if (!a.r || !a.live) {
        free(a.r);
        free(a.live);
        return -1;
    }
    for (size_t i = 0; i < total; i++)
        fake(&a.r[i], i);
    const char *name = ic_fw_backend_name(b);
    int rc = 0;

    /* One VM at a time. */
    double *add = calloc((size_t)o->runs, sizeof(double)), *rem = calloc((size_t)o->runs, sizeof(double));
    int done = 0;
    for (int i = 0; i < o->runs && rc == 0; i++) {
        if (add_one(&loop, b, &a.r[i], &add[i]) < 0) {
            rc = -1;
            break;
        }
        a.live[i] = true;
        if (remove_one(&loop, b, a.r[i].chain, &rem[i]) < 0)
            rc = -1;
        else
            a.live[i] = false;
        done++;
    }
    double add_med = pct(add, (size_t)done, 0.5), add_min = pct(add, (size_t)done, 0.0);
    double rem_med = pct(rem, (size_t)done, 0.5), rem_min = pct(rem, (size_t)done, 0.0);
    free(add), free(rem);
    fprintf(stderr, "bench_fw: %s: one VM: add %.1f ms, remove %.1f ms (median of %d)\n", name,
            add_med, rem_med, done);

    /* Many VMs, one after another. */
    size_t base = (size_t)o->runs;
    uint64_t t0 = uv_hrtime(), t_last10 = 0;
    int added = 0;
    for (int i = 0; i < o->vms && rc == 0; i++) {
        double ms;
        if (i == o->vms - o->vms / 10)
            t_last10 = uv_hrtime();
        if (add_one(&loop, b, &a.r[base + (size_t)i], &ms) < 0) {
            rc = -1;
            break;
        }
        a.live[base + (size_t)i] = true;
        added++;
        if ((i + 1) % 100 == 0)
            fprintf(stderr, "bench_fw: %s: %d VMs' rules added (%.1f s)\n", name, i + 1, ms_since(t0) / 1000);
    }
    double many_ms = ms_since(t0);
    double last10_ms = t_last10 ? (double)(uv_hrtime() - t_last10) / 1e6 : 0;
    int last10_n = o->vms / 10 ? o->vms / 10 : 1;

    /* Lateness while `concurrent` more VMs' rules go in at once (on top
     * of the many already there: the host is as busy as it gets). */
    double p50 = 0, p99 = 0, max = 0, conc_ms = 0;
    if (rc == 0 && lateness(&loop, b, &a, base + (size_t)o->vms, o->concurrent, &p50, &p99, &max, &conc_ms) < 0)
        rc = -1;
    fprintf(stderr, "bench_fw: %s: %d concurrent adds in %.0f ms; timer lateness p50 %.3f ms, "
            "p99 %.3f ms, max %.3f ms\n", name, o->concurrent, conc_ms, p50, p99, max);

    /* Remove everything, one after another (timed for the many). */
    t0 = uv_hrtime();
    for (size_t i = 0; i < total; i++) {
        double ms;
        if (a.live[i] && remove_one(&loop, b, a.r[i].chain, &ms) == 0)
            a.live[i] = false;
    }
    double remove_all_ms = ms_since(t0);
    cleanup(b, &a);
    uv_loop_close(&loop);

    fprintf(json, "\"%s\": {\"ok\": %s, \"one_vm\": {\"add_ms_median\": %.2f, \"add_ms_min\": %.2f, "
            "\"remove_ms_median\": %.2f, \"remove_ms_min\": %.2f, \"runs\": %d}, "
            "\"many\": {\"vms\": %d, \"add_total_ms\": %.1f, \"add_per_vm_ms\": %.2f, "
            "\"add_last10pct_per_vm_ms\": %.2f, \"remove_all_ms\": %.1f}, "
            "\"lateness\": {\"concurrent\": %d, \"total_ms\": %.1f, \"timer_late_p50_ms\": %.3f, "
            "\"timer_late_p99_ms\": %.3f, \"timer_late_max_ms\": %.3f}}",
            name, rc == 0 ? "true" : "false", add_med, add_min, rem_med, rem_min, done, added,
            many_ms, added ? many_ms / added : 0, last10_ms / last10_n, remove_all_ms,
            o->concurrent, conc_ms, p50, p99, max);
    free(a.r);
    free(a.live);
    return rc;
}

/* iptables-nft creates its built-in tables on first use and leaves them,
 * empty, behind: the ones this run created go again if they hold no rule. */
static bool nft_table_exists(const char *fam_name)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "nft list table %s >/dev/null 2>&1", fam_name);
    return system(cmd) == 0;
}

static void drop_empty_table(const char *fam_name)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "nft list table %s 2>/dev/null | grep -qE 'jump|accept |drop|masquerade' "
             "|| nft delete table %s 2>/dev/null", fam_name, fam_name);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_fw: could not remove the empty table %s\n", fam_name);
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 100000)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.runs = 20, .vms = 1000, .concurrent = 100, .nft = true, .iptables = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int *num = strcmp(a, "--runs") == 0 ? &o.runs : strcmp(a, "--vms") == 0 ? &o.vms
                 : strcmp(a, "--concurrent") == 0 ? &o.concurrent : NULL;
        if (num && v && parse_int(v, num) == 0) {
            i++;
        } else if (strcmp(a, "--backend") == 0 && v) {
            o.nft = strcmp(v, "nft") == 0 || strcmp(v, "both") == 0;
            o.iptables = strcmp(v, "iptables") == 0 || strcmp(v, "both") == 0;
            i++;
        } else {
            fprintf(stderr, "usage: bench_fw [--runs N] [--vms N] [--concurrent N] "
                            "[--backend nft|iptables|both]\n");
            return 2;
        }
    }
    if (geteuid() != 0) {
        fprintf(stderr, "bench_fw: needs root (it adds and removes firewall rules)\n");
        return 2;
    }
    /* Ctrl-C waits for the current step; the cleanup then runs. */
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    bool had_filter = nft_table_exists("ip filter"), had_nat = nft_table_exists("ip nat");
    printf("{");
    bool first = true;
    enum ic_fw_backend list[2] = {IC_FW_NFT, IC_FW_IPTABLES};
    const bool want[2] = {o.nft, o.iptables};
    for (int k = 0; k < 2; k++) {
        if (!want[k])
            continue;
        if (!first)
            printf(", ");
        first = false;
        if (bench_backend(&o, list[k], stdout) < 0)
            rc = 1;
        fflush(stdout);
    }
    printf("}\n");
    if (o.iptables && !had_filter && nft_table_exists("ip filter"))
        drop_empty_table("ip filter");
    if (o.iptables && !had_nat && nft_table_exists("ip nat"))
        drop_empty_table("ip nat");
    return rc;
}
