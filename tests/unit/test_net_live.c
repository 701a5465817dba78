/*
 * test_net_live.c - the network layer against the real kernel, under the
 * sanitizers: both firewall backends add, verify, list and remove a VM's
 * rules through the asynchronous API; a whole VM network (namespace, tap,
 * veth, addresses, firewall, forwarding) is set up from a state record and
 * reaped; a failure injected at every step leaves nothing behind.
 *
 * Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): skipped otherwise, saying so.
 * No packet is sent. The allow-list names 127.0.0.2 (a local address), so
 * no uplink's forwarding is touched. Everything is named from random VM
 * ids (IRONCLAW_..., ic...) and removed on every path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/net.h"
#include "ironclaw/state.h"
#include "ironclaw/vm.h"
#include "net/net_int.h"

#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#define POOL "10.213.250.0/24"   /* apart from the default pool the suites use */

static char runtime[64];
static bool had_ip_filter, had_ip_nat;

static bool table_exists(const char *family_name)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "list table %s", family_name);
    return ic_net__nft_run(cmd, false, NULL, NULL) == 0;
}

static bool live_ok(void)
{
    return geteuid() == 0 && ic_net__nft_run("list tables", false, NULL, NULL) == 0;
}

static int setup(void **state)
{
    snprintf(runtime, sizeof(runtime), "/tmp/ic-netlive-XXXXXX");
    assert_non_null(mkdtemp(runtime));
    setenv(IC_NET_POOL_ENV, POOL, 1);
    unsetenv(IC_NET_FAULT_ENV);
    if (live_ok()) {
        had_ip_filter = table_exists("ip filter");
        had_ip_nat = table_exists("ip nat");
    }
    return 0;
}

/* iptables-nft creates the built-in tables on first use and leaves them
 * behind empty; the test removes them again if it was the one to create
 * them and they hold no rule. */
static void drop_empty_table(const char *family_name, bool had)
{
    char cmd[64];
    char *json = NULL;
    snprintf(cmd, sizeof(cmd), "list table %s", family_name);
    if (had || ic_net__nft_run(cmd, true, &json, NULL) < 0)
        return;
    if (!strstr(json, "\"rule\"")) {
        snprintf(cmd, sizeof(cmd), "delete table %s", family_name);
        ic_net__nft_run(cmd, false, NULL, NULL);
    }
    free(json);
}

/* Whatever a failed test left in its records goes, as `ironclaw gc` would. */
static int reap_left(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    if (st)
        ic_vm_reap_record(st, NULL);
    return 0;
}

static int teardown(void **state)
{
    unsetenv(IC_NET_FAULT_ENV);
    ic_state_each(runtime, reap_left, NULL, NULL);
    if (live_ok()) {
        drop_empty_table("ip filter", had_ip_filter);
        drop_empty_table("ip nat", had_ip_nat);
    }
    ic_rm_rf(runtime, NULL);
    return 0;
}

static bool have_iptables(void)
{
    char path[4096];
    return ic_net__find_program("iptables-restore", path, sizeof(path)) == 0;
}

/* ---- firewall only --------------------------------------------------------- */

struct wait {
    bool done;
    ic_err err;
};

static void on_done(const ic_err *err, void *ud)
{
    struct wait *w = ud;
    w->done = true;
    if (err)
        w->err = *err;
}

struct count {
    const char *want;
    int n;
};

static int count_chain(enum ic_fw_backend b, const char *chain, void *ud)
{
    struct count *c = ud;
    if (strcmp(chain, c->want) == 0)
        c->n++;
    return 0;
}

static int listed(enum ic_fw_backend b, const char *chain)
{
    struct count c = {chain, 0};
    assert_int_equal(ic_fw_list(b, count_chain, &c, NULL), 0);
    return c.n;
}

static void fake_rules(struct ic_fw_rules *r)
{
    char id[IC_ID_SIZE];
    assert_int_equal(ic_id_new(id, NULL), 0);
    struct ic_net_spec s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(ic_net_spec_parse("allow=127.0.0.2:9/tcp,10.214.250.0/24", &s, NULL), 0);
    ic_fw_rules_init(r, id, 10u << 24 | 213u << 16 | 251u << 8 | 3, s.allow, s.n_allow);
}

static void add_wait(uv_loop_t *loop, enum ic_fw_backend b, const struct ic_fw_rules *r,
                     const char *fault, struct wait *w)
{
    memset(w, 0, sizeof(*w));
    ic_err err = {0};
    assert_int_equal(ic_fw_add(loop, b, r, fault, on_done, w, &err), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_true(w->done);
}

static void fw_roundtrip(enum ic_fw_backend b)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ic_fw_rules r;
    fake_rules(&r);
    struct wait w;
    add_wait(&loop, b, &r, NULL, &w);
    if (w.err.code)
        fail_msg("%s: add failed: %s", ic_fw_backend_name(b), w.err.msg);
    ic_err err = {0};
    assert_int_equal(ic_fw_verify_blocking(b, &r, &err), 0);
    assert_int_equal(listed(b, r.chain), 1);
    /* Asynchronous removal, then blocking removal again (idempotent). */
    memset(&w, 0, sizeof(w));
    assert_int_equal(ic_fw_remove(&loop, b, r.chain, on_done, &w, &err), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(w.done);
    assert_int_equal(w.err.code, 0);
    assert_int_equal(ic_fw_remove_blocking(b, r.chain, &err), 0);
    assert_int_not_equal(ic_fw_verify_blocking(b, &r, &err), 0);
    assert_int_equal(listed(b, r.chain), 0);

    /* A rejected transaction and a failed read-back: named, rolled back. */
    const char *faults[] = {"firewall", "verify"};
    for (int i = 0; i < 2; i++) {
        add_wait(&loop, b, &r, faults[i], &w);
        assert_int_not_equal(w.err.code, 0);
        if (strncmp(w.err.msg, faults[i], strlen(faults[i])) != 0)
            fail_msg("%s: '%s' does not name step %s", ic_fw_backend_name(b), w.err.msg, faults[i]);
        assert_int_equal(listed(b, r.chain), 0);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_fw_nft(void **state)
{
    if (!live_ok())
        skip(); /* needs root and nf_tables */
    fw_roundtrip(IC_FW_NFT);
}

static void test_fw_iptables(void **state)
{
    if (!live_ok() || !have_iptables())
        skip(); /* needs root and iptables-restore */
    fw_roundtrip(IC_FW_IPTABLES);
}

/* ---- a whole VM network ------------------------------------------------------- */

struct net_wait {
    bool done;
    ic_err err;
};

static void on_net(ic_net *n, const ic_err *err, void *ud)
{
    struct net_wait *w = ud;
    w->done = true;
    if (err)
        w->err = *err;
}

static void assert_nothing_left(const char *id, const char *vm_dir, enum ic_fw_backend b)
{
    char chain[IC_NET_CHAIN_SIZE], veth[IC_NET_IFNAME_SIZE], ns[256], hosts[256];
    ic_net_chain_name(id, chain);
    ic_net_veth_name(id, veth);
    if (if_nametoindex(veth))
        fail_msg("link %s left", veth);
    if (listed(IC_FW_NFT, chain) || (have_iptables() && listed(IC_FW_IPTABLES, chain)))
        fail_msg("chain %s left", chain);
    snprintf(ns, sizeof(ns), "%s/netns", vm_dir);
    struct stat sb;
    if (stat(ns, &sb) == 0)
        fail_msg("namespace file %s left", ns);
    snprintf(hosts, sizeof(hosts), "%s/net/hosts.json", runtime);
    char *text = NULL;
    if (ic_file_read(hosts, 1 << 20, &text, NULL, NULL) == 0) {
        if (strstr(text, id))
            fail_msg("%s still names the VM: %s", hosts, text);
        free(text);
    }
}

static void whole_network(enum ic_fw_backend b, const char *fault)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char id[IC_ID_SIZE];
    assert_int_equal(ic_id_new(id, NULL), 0);
    ic_state *st = NULL;
    ic_err err = {0};
    assert_int_equal(ic_state_create(runtime, id, "live", "qemu", &st, &err), 0);
    char vm_dir[256];
    snprintf(vm_dir, sizeof(vm_dir), "%s", ic_state_dir(st));
    struct ic_net_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.backend = b;
    assert_int_equal(ic_net_spec_parse("allow=127.0.0.2:9/tcp", &spec, &err), 0);
    if (fault)
        setenv(IC_NET_FAULT_ENV, fault, 1);
    ic_net *n = NULL;
    assert_int_equal(ic_net_new(&loop, &spec, st, &n, &err), 0);
    unsetenv(IC_NET_FAULT_ENV);
    struct net_wait w = {0};
    assert_int_equal(ic_net_setup(n, on_net, &w, &err), 0);
    assert_true(ic_net_busy(n));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(w.done);
    assert_false(ic_net_busy(n));
    if (fault) {
        if (!w.err.code || !strstr(w.err.msg, fault))
            fail_msg("fault at %s: error '%s' does not name the step", fault, w.err.msg);
        assert_nothing_left(id, vm_dir, b);
    } else {
        if (w.err.code)
            fail_msg("%s: setup failed: %s", ic_fw_backend_name(b), w.err.msg);
        struct ic_net_info in;
        ic_net_info(n, &in);
        assert_string_equal(in.backend, ic_fw_backend_name(b));
        assert_true(strncmp(in.guest_addr, "10.213.250.", 11) == 0);
        assert_non_null(strstr(in.cmdline, "ironclaw.net="));
        assert_true(if_nametoindex(in.host_if) > 0);
        char chain[IC_NET_CHAIN_SIZE], backend[16];
        if (ic_net_verify_record(st, chain, backend, &err) < 0)
            fail_msg("verify: %s", err.msg);
        assert_string_equal(chain, in.chain);
        /* The veth forwards; IPv6 is off on it. */
        int fwd = 0;
        assert_int_equal(ic_net__forwarding_get(in.host_if, &fwd, &err), 0);
        assert_int_equal(fwd, 1);
    }
    ic_net_free(n);
    /* The reaper removes whatever the record lists; twice is harmless. */
    if (ic_net_reap_record(st, &err) < 0)
        fail_msg("reap: %s", err.msg);
    assert_int_equal(ic_net_reap_record(st, &err), 0);
    assert_nothing_left(id, vm_dir, b);
    assert_int_equal(ic_state_reap(st, &err), 0);
    ic_state_free(st);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_network_nft(void **state)
{
    if (!live_ok())
        skip();
    whole_network(IC_FW_NFT, NULL);
}

static void test_network_iptables(void **state)
{
    if (!live_ok() || !have_iptables())
        skip();
    whole_network(IC_FW_IPTABLES, NULL);
}

static void test_network_faults(void **state)
{
    if (!live_ok())
        skip();
    char steps[] = IC_NET_STEPS;
    for (char *save = NULL, *s = strtok_r(steps, " ", &save); s; s = strtok_r(NULL, " ", &save)) {
        whole_network(IC_FW_NFT, s);
        if (have_iptables())
            whole_network(IC_FW_IPTABLES, s);
    }
}

int main(void)
{
    if (geteuid() != 0)
        fprintf(stderr, "test_net_live: not root: the live network tests are skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fw_nft),
        cmocka_unit_test(test_fw_iptables),
        cmocka_unit_test(test_network_nft),
        cmocka_unit_test(test_network_iptables),
        cmocka_unit_test(test_network_faults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
