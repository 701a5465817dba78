/*
 * test_net.c - the network layer's words: --net and --firewall parsing,
 * names derived from VM ids (chain, veth, MAC), the address pool's
 * arithmetic, and pool allocation under concurrency.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/net.h"
#include "ironclaw/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char runtime[64];

static int make_runtime(void **state)
{
    snprintf(runtime, sizeof(runtime), "/tmp/ic-net-XXXXXX");
    assert_non_null(mkdtemp(runtime));
    return 0;
}

static int remove_runtime(void **state)
{
    ic_rm_rf(runtime, NULL);
    return 0;
}

static uint32_t ip(unsigned a, unsigned b, unsigned c, unsigned d)
{
    return a << 24 | b << 16 | c << 8 | d;
}

/* ---- parsing ------------------------------------------------------------- */

static void test_parse_good(void **state)
{
    struct ic_net_spec s = {.backend = IC_FW_IPTABLES};
    ic_err err = {0};
    assert_int_equal(ic_net_spec_parse("none", &s, &err), 0);
    assert_int_equal(s.mode, IC_NET_NONE);
    assert_int_equal(s.backend, IC_FW_IPTABLES); /* left alone */

    assert_int_equal(ic_net_spec_parse("allow=10.214.1.2:8080/tcp,10.0.0.0/8,192.168.1.0/24:53,"
                                       "1.2.3.4/udp,0.0.0.0/0:443/tcp", &s, &err), 0);
    assert_int_equal(s.mode, IC_NET_ALLOW);
    assert_int_equal(s.n_allow, 5);
    assert_int_equal(s.allow[0].addr, ip(10, 214, 1, 2));
    assert_int_equal(s.allow[0].prefix, 32);
    assert_int_equal(s.allow[0].port, 8080);
    assert_int_equal(s.allow[0].proto, IC_NET_PROTO_TCP);
    assert_int_equal(s.allow[1].addr, ip(10, 0, 0, 0));
    assert_int_equal(s.allow[1].prefix, 8);
    assert_int_equal(s.allow[1].port, 0);
    assert_int_equal(s.allow[1].proto, IC_NET_PROTO_ANY);
    assert_int_equal(s.allow[2].port, 53);
    assert_int_equal(s.allow[2].proto, IC_NET_PROTO_ANY);
    assert_int_equal(s.allow[3].proto, IC_NET_PROTO_UDP);
    assert_int_equal(s.allow[3].port, 0);
    assert_int_equal(s.allow[4].prefix, 0);

    /* Round trip through the text form. */
    const char *texts[] = {"10.214.1.2:8080/tcp", "10.0.0.0/8", "192.168.1.0/24:53", "1.2.3.4/udp",
                           "0.0.0.0/0:443/tcp"};
    for (size_t i = 0; i < 5; i++) {
        char out[48];
        assert_int_equal(ic_net_allow_format(&s.allow[i], out, sizeof(out)), 0);
        assert_string_equal(out, texts[i]);
    }
}

static void test_parse_bad(void **state)
{
    const char *bad[][2] = {
        {"", "none"},                       /* neither none nor allow= */
        {"allow", "none"},
        {"allow=", "at least one"},
        {"allow=,10.0.0.1", "empty"},
        {"allow=10.0.0.1,", "empty"},
        {"allow=example.com", "IPv4"},
        {"allow=10.0.0", "IPv4"},
        {"allow=10.0.0.256", "IPv4"},
        {"allow=010.0.0.1", "IPv4"},
        {"allow=10.0.0.1/33", "prefix"},
        {"allow=10.0.0.1/8", "host bits"},
        {"allow=10.0.0.1:0", "port"},
        {"allow=10.0.0.1:65536", "port"},
        {"allow=10.0.0.1:http", "port"},
        {"allow=10.0.0.1/icmp", "protocol"},
        {"allow=10.0.0.1:80/tcp/udp", "unexpected"},
        {"allow= 10.0.0.1", "IPv4"},
        {"allow=::1", "IPv4"},
        {"deny=10.0.0.1", "none"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ic_net_spec s;
        memset(&s, 0, sizeof(s));
        ic_err err = {0};
        int r = ic_net_spec_parse(bad[i][0], &s, &err);
        if (r != -EINVAL)
            fail_msg("'%s' gave %d, want -EINVAL", bad[i][0], r);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("'%s': message '%s' does not mention '%s'", bad[i][0], err.msg, bad[i][1]);
    }
    /* The suggestion for host bits. */
    struct ic_net_spec s;
    ic_err err = {0};
    ic_net_spec_parse("allow=10.1.2.3/16", &s, &err);
    assert_non_null(strstr(err.msg, "10.1.0.0/16"));
    /* Too many entries. */
    char big[IC_NET_ALLOW_MAX * 16 + 64] = "allow=";
    for (int i = 0; i <= IC_NET_ALLOW_MAX; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s10.0.%d.1", i ? "," : "", i);
    assert_int_equal(ic_net_spec_parse(big, &s, &err), -E2BIG);
}

static void test_backend_parse(void **state)
{
    enum ic_fw_backend b;
    ic_err err = {0};
    assert_int_equal(ic_fw_backend_parse("nft", &b, &err), 0);
    assert_int_equal(b, IC_FW_NFT);
    assert_int_equal(ic_fw_backend_parse("iptables", &b, &err), 0);
    assert_int_equal(b, IC_FW_IPTABLES);
    assert_int_equal(ic_fw_backend_parse("auto", &b, &err), 0);
    assert_int_equal(b, IC_FW_AUTO);
    assert_int_equal(ic_fw_backend_parse("pf", &b, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "nft, iptables or auto"));
    assert_string_equal(ic_fw_backend_name(IC_FW_NFT), "nft");
    assert_string_equal(ic_fw_backend_name(IC_FW_IPTABLES), "iptables");
}

/* ---- names ----------------------------------------------------------------- */

static void test_chain_names(void **state)
{
    char a[IC_NET_CHAIN_SIZE], b[IC_NET_CHAIN_SIZE];
    ic_net_chain_name("0123456789abcdef0123456789abcdef", a);
    assert_int_equal(strlen(a), IC_NET_CHAIN_LEN);
    assert_true(IC_NET_CHAIN_LEN <= 28); /* iptables' limit */
    assert_true(strncmp(a, "IRONCLAW_", 9) == 0);
    assert_true(ic_net_chain_valid(a));
    /* SHA-256("0123456789abcdef0123456789abcdef") starts with these digits. */
    char hex[IC_SHA256_HEX];
    ic_sha256_hex("0123456789abcdef0123456789abcdef", 32, hex);
    assert_memory_equal(a + 9, hex, 16);
    /* Same id, same name; neighbouring ids, different names. */
    ic_net_chain_name("0123456789abcdef0123456789abcdef", b);
    assert_string_equal(a, b);
    ic_net_chain_name("0123456789abcdef0123456789abcdee", b);
    assert_string_not_equal(a, b);
    /* Many random ids: all distinct and valid. */
    enum { N = 2000 };
    static char names[N][IC_NET_CHAIN_SIZE];
    for (int i = 0; i < N; i++) {
        char id[IC_ID_SIZE];
        assert_int_equal(ic_id_new(id, NULL), 0);
        ic_net_chain_name(id, names[i]);
        assert_true(ic_net_chain_valid(names[i]));
        for (int k = 0; k < i; k++)
            assert_string_not_equal(names[i], names[k]);
    }
    assert_false(ic_net_chain_valid("IRONCLAW_0123"));
    assert_false(ic_net_chain_valid("IRONCLAW_0123456789ABCDEF"));
    assert_false(ic_net_chain_valid("FORWARD"));
    assert_false(ic_net_chain_valid(NULL));
}

/* Chains come from the internal id alone: VMs named vm-1 and vm_1, two
 * with 200-character names, or two with the same name, get distinct chains
 * of 25 characters; the name never reaches the firewall. */
static void test_chain_independent_of_names(void **state)
{
    char long_a[201], long_b[201];
    memset(long_a, 'x', 200);
    long_a[200] = '\0';
    memcpy(long_b, long_a, sizeof(long_b));
    long_b[199] = 'y';
    assert_int_equal(ic_name_validate(long_a, NULL), 0);
    const char *labels[] = {"vm-1", "vm_1", "same", "same", long_a, long_b};
    enum { N = sizeof(labels) / sizeof(labels[0]) };
    char chains[N][IC_NET_CHAIN_SIZE];
    for (int i = 0; i < N; i++) {
        char id[IC_ID_SIZE];
        ic_state *st = NULL;
        assert_int_equal(ic_id_new(id, NULL), 0);
        assert_int_equal(ic_state_create(runtime, id, labels[i], "qemu", &st, NULL), 0);
        ic_net_chain_name(ic_state_id(st), chains[i]);
        assert_int_equal(strlen(chains[i]), IC_NET_CHAIN_LEN);
        assert_null(strstr(chains[i], labels[i]));
        for (int k = 0; k < i; k++)
            assert_string_not_equal(chains[i], chains[k]);
        assert_string_equal(ic_state_name(st), labels[i]);
        assert_int_equal(ic_state_reap(st, NULL), 0);
        ic_state_free(st);
    }
}

static void test_veth_and_mac(void **state)
{
    char v[IC_NET_IFNAME_SIZE], c[IC_NET_CHAIN_SIZE], m[IC_NET_MAC_SIZE];
    const char *id = "fedcba9876543210fedcba9876543210";
    ic_net_veth_name(id, v);
    ic_net_chain_name(id, c);
    assert_int_equal(strlen(v), 15);   /* IFNAMSIZ - 1 */
    assert_memory_equal(v, "ic", 2);
    assert_memory_equal(v + 2, c + 9, 13);
    ic_net_mac(id, m);
    assert_int_equal(strlen(m), 17);
    assert_memory_equal(m, "02:", 3);  /* locally administered, unicast */
    for (int i = 2; i < 17; i += 3)
        assert_int_equal(m[i], ':');
}

/* ---- the pool ----------------------------------------------------------------- */

static void test_pool_math(void **state)
{
    struct ic_net_pool p;
    ic_err err = {0};
    assert_int_equal(ic_net_pool_parse("10.213.0.0/16", &p, &err), 0);
    assert_int_equal(p.base, ip(10, 213, 0, 0));
    assert_int_equal(ic_net_pool_blocks(&p), 16384);
    struct ic_net_addrs a;
    ic_net_pool_addrs(&p, 0, &a);
    assert_int_equal(a.host, ip(10, 213, 0, 0));
    assert_int_equal(a.ns, ip(10, 213, 0, 1));
    assert_int_equal(a.gateway, ip(10, 213, 0, 2));
    assert_int_equal(a.guest, ip(10, 213, 0, 3));
    ic_net_pool_addrs(&p, 16383, &a);
    assert_int_equal(a.guest, ip(10, 213, 255, 255));
    assert_int_equal(ic_net_pool_parse("10.213.0.0/30", &p, &err), 0);
    assert_int_equal(ic_net_pool_blocks(&p), 1);
    const char *bad[] = {"10.213.0.0", "10.213.0.0/31", "10.0.0.0/7", "10.213.0.1/16", "x/16",
                         "10.213.0.0/16x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ic_net_pool_parse(bad[i], &p, &err), -EINVAL);
    setenv(IC_NET_POOL_ENV, "10.99.0.0/24", 1);
    assert_int_equal(ic_net_pool_from_env(&p, &err), 0);
    assert_int_equal(p.base, ip(10, 99, 0, 0));
    unsetenv(IC_NET_POOL_ENV);
    assert_int_equal(ic_net_pool_from_env(&p, &err), 0);
    assert_int_equal(p.base, ip(10, 213, 0, 0));
}

/* A VM that holds a block must have a directory (stale entries are dropped). */
static void make_vm_dir(const char *id)
{
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/vms/%s", runtime, id);
    assert_int_equal(ic_mkdir_p(dir, 0700, NULL), 0);
}

static void test_pool_alloc_release(void **state)
{
    struct ic_net_pool p;
    assert_int_equal(ic_net_pool_parse("10.213.0.0/29", &p, NULL), 0); /* two blocks */
    const char *ids[] = {"00000000000000000000000000000001", "00000000000000000000000000000002",
                         "00000000000000000000000000000003"};
    for (int i = 0; i < 3; i++)
        make_vm_dir(ids[i]);
    struct ic_net_addrs a, b, c;
    ic_err err = {0};
    assert_int_equal(ic_net_pool_alloc(runtime, &p, ids[0], &a, &err), 0);
    assert_int_equal(ic_net_pool_alloc(runtime, &p, ids[1], &b, &err), 0);
    assert_int_not_equal(a.block, b.block);
    assert_int_equal(ic_net_pool_alloc(runtime, &p, ids[2], &c, &err), -ENOSPC);
    assert_non_null(strstr(err.msg, IC_NET_POOL_ENV));
    /* Release frees the block for the next VM; releasing twice is fine. */
    assert_int_equal(ic_net_pool_release(runtime, ids[0], &err), 0);
    assert_int_equal(ic_net_pool_release(runtime, ids[0], &err), 0);
    assert_int_equal(ic_net_pool_alloc(runtime, &p, ids[2], &c, &err), 0);
    assert_int_equal(c.block, a.block);
    /* A VM whose directory is gone (reaped) holds nothing any more. */
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/vms/%s", runtime, ids[1]);
    assert_int_equal(ic_rm_rf(dir, NULL), 0);
    assert_int_equal(ic_net_pool_alloc(runtime, &p, ids[0], &a, &err), 0);
    assert_int_equal(a.block, b.block);
}

/* Concurrent ironclaws (processes) never get the same block. */
static void test_pool_concurrent(void **state)
{
    enum { KIDS = 8, EACH = 8 };
    struct ic_net_pool p;
    assert_int_equal(ic_net_pool_parse("10.213.0.0/24", &p, NULL), 0); /* 64 blocks */
    int fds[KIDS][2];
    pid_t pids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        assert_int_equal(pipe(fds[k]), 0);
        pids[k] = fork();
        assert_true(pids[k] >= 0);
        if (pids[k] == 0) {
            close(fds[k][0]);
            for (int i = 0; i < EACH; i++) {
                char id[IC_ID_SIZE];
                struct ic_net_addrs a;
                if (ic_id_new(id, NULL) < 0)
                    _exit(2);
                make_vm_dir(id);
                if (ic_net_pool_alloc(runtime, &p, id, &a, NULL) < 0)
                    _exit(1);
                if (write(fds[k][1], &a.block, sizeof(a.block)) != sizeof(a.block))
                    _exit(3);
            }
            _exit(0);
        }
        close(fds[k][1]);
    }
    uint32_t seen[KIDS * EACH];
    size_t n = 0;
    for (int k = 0; k < KIDS; k++) {
        uint32_t blk;
        while (read(fds[k][0], &blk, sizeof(blk)) == sizeof(blk) && n < (size_t)KIDS * EACH)
            seen[n++] = blk;
        close(fds[k][0]);
        int st;
        assert_int_equal(waitpid(pids[k], &st, 0), pids[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    assert_int_equal(n, KIDS * EACH);
    for (size_t i = 0; i < n; i++) {
        assert_true(seen[i] >= p.base && seen[i] < p.base + 256 && seen[i] % 4 == 0);
        for (size_t k = 0; k < i; k++)
            assert_int_not_equal(seen[i], seen[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_backend_parse),
        cmocka_unit_test(test_chain_names),
        cmocka_unit_test_setup_teardown(test_chain_independent_of_names, make_runtime, remove_runtime),
        cmocka_unit_test(test_veth_and_mac),
        cmocka_unit_test(test_pool_math),
        cmocka_unit_test_setup_teardown(test_pool_alloc_release, make_runtime, remove_runtime),
        cmocka_unit_test_setup_teardown(test_pool_concurrent, make_runtime, remove_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
