/*
 * test_net_rules.c - the firewall text both backends are given, the text
 * that removes a VM's chain, and the read-back checks, on fixed inputs
 * shaped like nft's JSON and iptables-save's output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define ID "0123456789abcdef0123456789abcdef"

static void rules_for(struct ic_fw_rules *r, const char *allow)
{
    struct ic_net_spec s;
    memset(&s, 0, sizeof(s));
    assert_int_equal(ic_net_spec_parse(allow, &s, NULL), 0);
    ic_fw_rules_init(r, ID, 10u << 24 | 213u << 16 | 3, s.allow, s.n_allow);
}

/* Index of a line in text, or -1. */
static long line_at(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p += n)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return p - text;
    return -1;
}

static void want_line(const char *text, const char *line)
{
    if (line_at(text, line) < 0)
        fail_msg("missing line '%s' in:\n%s", line, text);
}

static void want_order(const char *text, const char *first, const char *second)
{
    long a = line_at(text, first), b = line_at(text, second);
    if (a < 0 || b < 0 || a > b)
        fail_msg("'%s' must come before '%s' in:\n%s", first, second, text);
}

/* ---- nft ----------------------------------------------------------------- */

static void test_nft_add(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2:8080/tcp,10.0.0.0/8:53,192.168.0.0/16/udp,1.2.3.4");
    snprintf(r.guard[r.n_guard++], IC_NET_IFNAME_SIZE, "eth0");
    char *t = ic_fw_nft_add_text(&r, false);
    assert_non_null(t);
    const char *T = r.chain;
    char line[256];
#define L(...) (snprintf(line, sizeof(line), __VA_ARGS__), line)
    want_line(t, L("add table inet %s", T));
    want_line(t, L("add chain inet %s forward { type filter hook forward priority filter - 10; policy accept; }", T));
    want_line(t, L("add chain inet %s input { type filter hook input priority filter - 10; policy accept; }", T));
    want_line(t, L("add chain inet %s postrouting { type nat hook postrouting priority srcnat; policy accept; }", T));
    want_line(t, L("add rule inet %s %s ct state established,related accept", T, T));
    want_line(t, L("add rule inet %s %s iifname != \"%s\" drop", T, T, r.veth));
    want_line(t, L("add rule inet %s %s ip saddr != 10.213.0.3 drop", T, T));
    want_line(t, L("add rule inet %s %s fib daddr type local drop", T, T));
    want_line(t, L("add rule inet %s %s ip daddr 10.214.1.2/32 tcp dport 8080 accept", T, T));
    want_line(t, L("add rule inet %s %s ip daddr 10.0.0.0/8 meta l4proto { tcp, udp } th dport 53 accept", T, T));
    want_line(t, L("add rule inet %s %s ip daddr 192.168.0.0/16 meta l4proto udp accept", T, T));
    want_line(t, L("add rule inet %s %s ip daddr 1.2.3.4/32 accept", T, T));
    want_line(t, L("add rule inet %s %s drop", T, T));
    want_line(t, L("add rule inet %s forward iifname \"%s\" jump %s", T, r.veth, T));
    want_line(t, L("add rule inet %s forward oifname \"%s\" jump %s", T, r.veth, T));
    want_line(t, L("add rule inet %s forward iifname \"eth0\" jump %s", T, T));
    want_line(t, L("add rule inet %s input iifname \"%s\" jump %s", T, r.veth, T));
    want_line(t, L("add rule inet %s postrouting ip saddr 10.213.0.3 ip daddr 10.214.1.2/32 masquerade", T));
    /* Replies first, the allow-list after the drops that protect it, the
     * final drop last in the chain, and jumps only to a complete chain. */
    char first[256], drop[256];
    snprintf(first, sizeof(first), "add rule inet %s %s ct state established,related accept", T, T);
    snprintf(drop, sizeof(drop), "add rule inet %s %s drop", T, T);
    want_order(t, first, L("add rule inet %s %s fib daddr type local drop", T, T));
    want_order(t, L("add rule inet %s %s fib daddr type local drop", T, T),
               L("add rule inet %s %s ip daddr 1.2.3.4/32 accept", T, T));
    want_order(t, L("add rule inet %s %s ip daddr 1.2.3.4/32 accept", T, T), drop);
    want_order(t, drop, L("add rule inet %s forward iifname \"%s\" jump %s", T, r.veth, T));
    assert_null(strstr(t, "fault"));
    free(t);
    /* The fault: a jump to a chain that does not exist, at the end. */
    t = ic_fw_nft_add_text(&r, true);
    assert_non_null(strstr(t, "jump IRONCLAW_fault_injected\n"));
    free(t);
#undef L
}

static void test_nft_del(void **state)
{
    char *t = ic_fw_nft_del_text("IRONCLAW_0123456789abcdef");
    assert_string_equal(t, "add table inet IRONCLAW_0123456789abcdef\n"
                           "delete table inet IRONCLAW_0123456789abcdef\n");
    free(t);
}

/* A listing like `nft -j list table inet T`, with parts left out on request. */
static json_t *if_jump(const struct ic_fw_rules *r, const char *chain, const char *key, int handle)
{
    return json_pack("{s:{s:s, s:s, s:s, s:i, s:[{s:{s:s, s:{s:{s:s}}, s:s}}, {s:{s:s}}]}}", "rule",
                     "family", "inet", "table", r->chain, "chain", chain, "handle", handle, "expr",
                     "match", "op", "==", "left", "meta", "key", key, "right", r->veth, "jump",
                     "target", r->chain);
}

static json_t *base_chain(const struct ic_fw_rules *r, const char *name)
{
    return json_pack("{s:{s:s, s:s, s:s, s:s, s:s, s:i, s:s}}", "chain", "family", "inet", "table",
                     r->chain, "name", name, "type", "filter", "hook", name, "prio", -10, "policy",
                     "accept");
}

static json_t *chain_rule(const struct ic_fw_rules *r, json_t *expr, int handle)
{
    return json_pack("{s:{s:s, s:s, s:s, s:i, s:o}}", "rule", "family", "inet", "table", r->chain,
                     "chain", r->chain, "handle", handle, "expr", expr);
}

static char *nft_json(const struct ic_fw_rules *r, bool fwd_in, bool fwd_out, bool input,
                      bool final_drop, bool input_chain)
{
    json_t *l = json_array();
    json_array_append_new(l, json_pack("{s:{s:s}}", "metainfo", "version", "1.0.6"));
    json_array_append_new(l, json_pack("{s:{s:s, s:s}}", "table", "family", "inet", "name", r->chain));
    json_array_append_new(l, json_pack("{s:{s:s, s:s, s:s}}", "chain", "family", "inet", "table",
                                       r->chain, "name", r->chain));
    json_array_append_new(l, base_chain(r, "forward"));
    if (input_chain)
        json_array_append_new(l, base_chain(r, "input"));
    json_array_append_new(l, chain_rule(r, json_pack("[{s:{s:s, s:{s:{s:s}}, s:[s,s]}}, {s:n}]",
                                                     "match", "op", "in", "left", "ct", "key", "state",
                                                     "right", "established", "related", "accept"), 5));
    json_array_append_new(l, chain_rule(r, json_pack("[{s:{s:s, s:{s:{s:s, s:s}}, s:s}}, {s:n}]",
                                                     "match", "op", "==", "left", "payload", "protocol",
                                                     "ip", "field", "daddr", "right", "10.214.1.2",
                                                     "accept"), 9));
    if (final_drop)
        json_array_append_new(l, chain_rule(r, json_pack("[{s:n}]", "drop"), 11));
    if (fwd_in)
        json_array_append_new(l, if_jump(r, "forward", "iifname", 12));
    if (fwd_out)
        json_array_append_new(l, if_jump(r, "forward", "oifname", 13));
    if (input)
        json_array_append_new(l, if_jump(r, "input", "iifname", 14));
    json_t *root = json_pack("{s:o}", "nftables", l);
    char *text = json_dumps(root, 0);
    json_decref(root);
    assert_non_null(text);
    return text;
}

static void test_nft_check(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2");
    ic_err err = {0};
    char *j = nft_json(&r, true, true, true, true, true);
    assert_int_equal(ic_fw_nft_check(j, &r, &err), 0);
    free(j);
    struct { bool in, out, input, drop, ichain; const char *want; } cases[] = {
        {false, true, true, true, true, "forward iifname"},
        {true, false, true, true, true, "forward oifname"},
        {true, true, false, true, true, "input iifname"},
        {true, true, true, false, true, "does not end with drop"},
        {true, true, true, true, false, "no input base chain"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        j = nft_json(&r, cases[i].in, cases[i].out, cases[i].input, cases[i].drop, cases[i].ichain);
        ic_err_clear(&err);
        assert_int_equal(ic_fw_nft_check(j, &r, &err), -ENOENT);
        if (!strstr(err.msg, cases[i].want))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, cases[i].want);
        free(j);
    }
    /* Someone else's veth in the jump does not count. */
    struct ic_fw_rules other = r;
    snprintf(other.veth, sizeof(other.veth), "icffffffffffff0");
    j = nft_json(&r, true, true, true, true, true);
    assert_int_equal(ic_fw_nft_check(j, &other, &err), -ENOENT);
    free(j);
    assert_int_equal(ic_fw_nft_check("not json", &r, &err), -EINVAL);
    assert_int_equal(ic_fw_nft_check("{\"nftables\": []}", &r, &err), -ENOENT);
}

/* ---- iptables ---------------------------------------------------------------- */

static void test_ipt_add(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2:8080/tcp,10.0.0.0/8:53,192.168.0.0/16/udp");
    snprintf(r.guard[r.n_guard++], IC_NET_IFNAME_SIZE, "eth0");
    char *t = ic_fw_ipt_add_text(&r, false);
    assert_non_null(t);
    const char *T = r.chain;
    char line[256];
#define L(...) (snprintf(line, sizeof(line), __VA_ARGS__), line)
    want_line(t, "*filter");
    want_line(t, L(":%s - [0:0]", T));
    want_line(t, L("-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", T));
    want_line(t, L("-A %s ! -i %s -j DROP", T, r.veth));
    want_line(t, L("-A %s ! -s 10.213.0.3/32 -j DROP", T));
    want_line(t, L("-A %s -m addrtype --dst-type LOCAL -j DROP", T));
    want_line(t, L("-A %s -d 10.214.1.2/32 -p tcp -m tcp --dport 8080 -j ACCEPT", T));
    want_line(t, L("-A %s -d 10.0.0.0/8 -p tcp -m tcp --dport 53 -j ACCEPT", T));
    want_line(t, L("-A %s -d 10.0.0.0/8 -p udp -m udp --dport 53 -j ACCEPT", T));
    want_line(t, L("-A %s -d 192.168.0.0/16 -p udp -j ACCEPT", T));
    want_line(t, L("-A %s -j DROP", T));
    want_line(t, L("-I FORWARD 1 -i %s -j %s", r.veth, T));
    want_line(t, L("-I FORWARD 1 -o %s -j %s", r.veth, T));
    want_line(t, L("-I FORWARD 1 -i eth0 -j %s", T));
    want_line(t, L("-I INPUT 1 -i %s -j %s", r.veth, T));
    want_line(t, "*nat");
    want_line(t, L("-A %s -d 10.214.1.2/32 -j MASQUERADE", T));
    want_line(t, L("-I POSTROUTING 1 -s 10.213.0.3/32 -j %s", T));
    /* The filter table (the drops) is committed before nat. */
    want_order(t, "*filter", "*nat");
    char drop[64];
    snprintf(drop, sizeof(drop), "-A %s -j DROP", T);
    want_order(t, drop, L("-I FORWARD 1 -i %s -j %s", r.veth, T));
    free(t);
    t = ic_fw_ipt_add_text(&r, true);
    assert_non_null(strstr(t, "-j IRONCLAW_fault_injected\nCOMMIT\n"));
    free(t);
#undef L
}

static const char *save_fmt =
    "# Generated by iptables-save v1.8.9 (nf_tables)\n"
    "*filter\n"
    ":INPUT ACCEPT [0:0]\n"
    ":FORWARD DROP [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":%1$s - [0:0]\n"
    ":IRONCLAW_ffffffffffffffff - [0:0]\n"
    "-A INPUT -i %2$s -j %1$s\n"
    "-A INPUT -i lo -j ACCEPT\n"
    "-A FORWARD -o %2$s -j %1$s\n"
    "-A FORWARD -i %2$s -j %1$s\n"
    "-A FORWARD -i eth0 -j %1$s\n"
    "-A FORWARD -i icffffffffffff0 -j IRONCLAW_ffffffffffffffff\n"
    "-A %1$s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
    "-A %1$s ! -i %2$s -j DROP\n"
    "-A %1$s -d 10.214.1.2/32 -p tcp -m tcp --dport 8080 -j ACCEPT\n"
    "%3$s"
    "-A IRONCLAW_ffffffffffffffff -j DROP\n"
    "COMMIT\n"
    "# Completed\n"
    "*nat\n"
    ":PREROUTING ACCEPT [0:0]\n"
    ":POSTROUTING ACCEPT [0:0]\n"
    ":%1$s - [0:0]\n"
    "-A POSTROUTING -s 10.213.0.3/32 -j %1$s\n"
    "-A POSTROUTING -o eth0 -j MASQUERADE\n"
    "-A %1$s -d 10.214.1.2/32 -j MASQUERADE\n"
    "COMMIT\n";

static char *save_text(const struct ic_fw_rules *r, const char *tail)
{
    char *s = malloc(4096);
    snprintf(s, 4096, save_fmt, r->chain, r->veth, tail);
    return s;
}

static void test_ipt_del(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2:8080/tcp");
    char *save = save_text(&r, "-A IRONCLAW_0 -j DROP\n");
    char *d = ic_fw_ipt_del_text(save, r.chain);
    assert_non_null(d);
    char want[2048];
    snprintf(want, sizeof(want),
             "*filter\n"
             "-D INPUT -i %2$s -j %1$s\n"
             "-D FORWARD -o %2$s -j %1$s\n"
             "-D FORWARD -i %2$s -j %1$s\n"
             "-D FORWARD -i eth0 -j %1$s\n"
             "-F %1$s\n-X %1$s\n"
             "COMMIT\n"
             "*nat\n"
             "-D POSTROUTING -s 10.213.0.3/32 -j %1$s\n"
             "-F %1$s\n-X %1$s\n"
             "COMMIT\n", r.chain, r.veth);
    assert_string_equal(d, want);
    free(d);
    /* Nothing of the chain left: nothing to do (idempotent removal). */
    d = ic_fw_ipt_del_text("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n", r.chain);
    assert_string_equal(d, "");
    free(d);
    free(save);
}

static void test_ipt_check(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2:8080/tcp");
    char drop[64];
    snprintf(drop, sizeof(drop), "-A %s -j DROP\n", r.chain);
    char *save = save_text(&r, drop);
    ic_err err = {0};
    assert_int_equal(ic_fw_ipt_check(save, &r, &err), 0);
    free(save);
    /* The drop is missing, or not last. */
    save = save_text(&r, "");
    assert_int_equal(ic_fw_ipt_check(save, &r, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "-j DROP"));
    free(save);
    /* Only the filter table counts: nat's rules of the chain do not. */
    save = save_text(&r, drop);
    char *nat = strstr(save, "*nat");
    assert_non_null(nat);
    *nat = '\0';
    assert_int_equal(ic_fw_ipt_check(save, &r, &err), 0);
    free(save);
    char tail[160];
    snprintf(tail, sizeof(tail), "%s-A %s -j ACCEPT\n", drop, r.chain);
    save = save_text(&r, tail);
    assert_int_equal(ic_fw_ipt_check(save, &r, &err), -ENOENT);
    free(save);
    /* A jump is missing. */
    save = save_text(&r, drop);
    char line[128];
    snprintf(line, sizeof(line), "-A INPUT -i %s -j %s\n", r.veth, r.chain);
    char *p = strstr(save, line);
    assert_non_null(p);
    memmove(p, p + strlen(line), strlen(p + strlen(line)) + 1);
    assert_int_equal(ic_fw_ipt_check(save, &r, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "INPUT"));
    free(save);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nft_add),
        cmocka_unit_test(test_nft_del),
        cmocka_unit_test(test_nft_check),
        cmocka_unit_test(test_ipt_add),
        cmocka_unit_test(test_ipt_del),
        cmocka_unit_test(test_ipt_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
