/*
 * test_net_rules.c - the firewall text both backends are given, the text
 * that removes a VM's chain, and the read-back checks, on fixed inputs
 * shaped like nft's JSON and iptables-save's output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ironclaw/buf.h"
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

#define TB "inet " IC_FW_NFT_TABLE " "

static void test_nft_skeleton(void **state)
{
    char *t = ic_fw_nft_skeleton_text();
    assert_non_null(t);
    /* "create", not "add": of two ironclaws creating it, one fails and uses the other's. */
    want_line(t, "create table inet " IC_FW_NFT_TABLE);
    want_line(t, "add map " TB "fwd_in { type ifname : verdict; }");
    want_line(t, "add map " TB "fwd_out { type ifname : verdict; }");
    want_line(t, "add map " TB "inp { type ifname : verdict; }");
    want_line(t, "add set " TB "guests { type ipv4_addr; }");
    want_line(t, "add chain " TB "forward { type filter hook forward priority filter - 10; policy accept; }");
    want_line(t, "add chain " TB "input { type filter hook input priority filter - 10; policy accept; }");
    want_line(t, "add chain " TB "postrouting { type nat hook postrouting priority srcnat; policy accept; }");
    want_line(t, "add rule " TB "forward iifname vmap @fwd_in");
    want_line(t, "add rule " TB "forward oifname vmap @fwd_out");
    want_line(t, "add rule " TB "input iifname vmap @inp");
    want_line(t, "add rule " TB "postrouting ip saddr @guests masquerade");
    free(t);
}

static void test_nft_add(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2:8080/tcp,10.0.0.0/8:53,192.168.0.0/16/udp,1.2.3.4");
    char *t = ic_fw_nft_add_text(&r, false);
    assert_non_null(t);
    const char *C = r.chain;
    char line[256];
#define L(...) (snprintf(line, sizeof(line), __VA_ARGS__), line)
    want_line(t, L("add chain " TB "%s", C));
    want_line(t, L("add rule " TB "%s ct state established,related accept", C));
    want_line(t, L("add rule " TB "%s iifname != \"%s\" drop", C, r.veth));
    want_line(t, L("add rule " TB "%s ip saddr != 10.213.0.3 drop", C));
    want_line(t, L("add rule " TB "%s fib daddr type local drop", C));
    want_line(t, L("add rule " TB "%s ip daddr 10.214.1.2/32 tcp dport 8080 accept", C));
    want_line(t, L("add rule " TB "%s ip daddr 10.0.0.0/8 meta l4proto { tcp, udp } th dport 53 accept", C));
    want_line(t, L("add rule " TB "%s ip daddr 192.168.0.0/16 meta l4proto udp accept", C));
    want_line(t, L("add rule " TB "%s ip daddr 1.2.3.4/32 accept", C));
    want_line(t, L("add rule " TB "%s drop", C));
    want_line(t, L("add element " TB "fwd_in { \"%s\" : jump %s }", r.veth, C));
    want_line(t, L("add element " TB "fwd_out { \"%s\" : jump %s }", r.veth, C));
    want_line(t, L("add element " TB "inp { \"%s\" : jump %s }", r.veth, C));
    want_line(t, L("add element " TB "guests { 10.213.0.3 }"));
    /* Replies first, the drops that protect the allow-list before it, the
     * final drop last, and the elements (the hooks) after the chain. */
    char first[256], drop[256];
    snprintf(first, sizeof(first), "add rule " TB "%s ct state established,related accept", C);
    snprintf(drop, sizeof(drop), "add rule " TB "%s drop", C);
    want_order(t, first, L("add rule " TB "%s fib daddr type local drop", C));
    want_order(t, L("add rule " TB "%s fib daddr type local drop", C), L("add rule " TB "%s ip daddr 1.2.3.4/32 accept", C));
    want_order(t, L("add rule " TB "%s ip daddr 1.2.3.4/32 accept", C), drop);
    want_order(t, drop, L("add element " TB "fwd_in { \"%s\" : jump %s }", r.veth, C));
    assert_null(strstr(t, "_guard"));
    assert_null(strstr(t, "fault"));
    free(t);
    /* An uplink guard: a base chain of the VM's own. */
    snprintf(r.guard[r.n_guard++], IC_NET_IFNAME_SIZE, "eth0");
    t = ic_fw_nft_add_text(&r, false);
    want_line(t, L("add chain " TB "%s_guard { type filter hook forward priority filter - 11; policy accept; }", C));
    want_line(t, L("add rule " TB "%s_guard iifname \"eth0\" ct state established,related accept", C));
    want_line(t, L("add rule " TB "%s_guard iifname \"eth0\" drop", C));
    free(t);
    /* The fault: a jump to a chain that does not exist. */
    t = ic_fw_nft_add_text(&r, true);
    assert_non_null(strstr(t, "jump IRONCLAW_fault_injected\n"));
    free(t);
#undef L
}

static void test_nft_del(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2");
    char *t = ic_fw_nft_del_text(&r, false);
    char want[1024];
    snprintf(want, sizeof(want),
             "delete element " TB "fwd_in { \"%1$s\" }\n"
             "delete element " TB "fwd_out { \"%1$s\" }\n"
             "delete element " TB "inp { \"%1$s\" }\n"
             "delete element " TB "guests { 10.213.0.3 }\n"
             "flush chain " TB "%2$s\ndelete chain " TB "%2$s\n", r.veth, r.chain);
    assert_string_equal(t, want);
    free(t);
    t = ic_fw_nft_del_text(&r, true);
    char g[128];
    snprintf(g, sizeof(g), "flush chain " TB "%s_guard\ndelete chain " TB "%s_guard\n", r.chain, r.chain);
    assert_non_null(strstr(t, g));
    free(t);
}

/* Listings like nft's, as the check reads them (several documents). */
static json_t *doc(json_t *items)
{
    json_array_insert_new(items, 0, json_pack("{s:{s:s}}", "metainfo", "version", "1.0.6"));
    return json_pack("{s:o}", "nftables", items);
}

static json_t *rule(const char *chain, json_t *expr)
{
    return json_pack("{s:{s:s, s:s, s:s, s:o}}", "rule", "family", "inet", "table", IC_FW_NFT_TABLE,
                     "chain", chain, "expr", expr);
}

static json_t *chain_item(const char *name, const char *hook)
{
    json_t *c = json_pack("{s:s, s:s, s:s}", "family", "inet", "table", IC_FW_NFT_TABLE, "name", name);
    if (hook) {
        json_object_set_new(c, "type", json_string("filter"));
        json_object_set_new(c, "hook", json_string(hook));
        json_object_set_new(c, "prio", json_integer(-10));
        json_object_set_new(c, "policy", json_string("accept"));
    }
    return json_pack("{s:o}", "chain", c);
}

static json_t *vmap_rule(const char *chain, const char *key, const char *map)
{
    char data[32];
    snprintf(data, sizeof(data), "@%s", map);
    return rule(chain, json_pack("[{s:{s:{s:{s:s}}, s:s}}]", "vmap", "key", "meta", "key", key, "data", data));
}

static json_t *map_item(const char *name, const struct ic_fw_rules *r, bool with_vm)
{
    json_t *elems = json_array();
    json_array_append_new(elems, json_pack("[s, {s:{s:s}}]", "icffffffffffff0", "jump", "target",
                                           "IRONCLAW_ffffffffffffffff"));
    if (with_vm)
        json_array_append_new(elems, json_pack("[s, {s:{s:s}}]", r->veth, "jump", "target", r->chain));
    return json_pack("{s:{s:s, s:s, s:s, s:s, s:s, s:o}}", "map", "family", "inet", "name", name,
                     "table", IC_FW_NFT_TABLE, "type", "ifname", "map", "verdict", "elem", elems);
}

enum { NO_FWD_IN = 1, NO_FWD_OUT = 2, NO_INP = 4, NO_DROP = 8, NO_INPUT_CHAIN = 16,
       NO_DISPATCH = 32, NO_CHAIN = 64, DROP_NOT_LAST = 128 };

static char *nft_json(const struct ic_fw_rules *r, int missing)
{
    json_t *docs[6];
    json_t *c = json_array();
    if (!(missing & NO_CHAIN)) {
        json_array_append_new(c, chain_item(r->chain, NULL));
        json_array_append_new(c, rule(r->chain, json_pack("[{s:{s:s, s:{s:{s:s}}, s:[s,s]}}, {s:n}]",
                                                          "match", "op", "in", "left", "ct", "key", "state",
                                                          "right", "established", "related", "accept")));
        json_array_append_new(c, rule(r->chain, json_pack("[{s:{s:s, s:{s:{s:s}}, s:s}}, {s:n}]", "match", "op",
                                                          "!=", "left", "meta", "key", "iifname", "right",
                                                          r->veth, "drop")));
        json_array_append_new(c, rule(r->chain, json_pack("[{s:{s:s, s:{s:{s:s, s:s}}, s:s}}, {s:n}]", "match",
                                                          "op", "!=", "left", "payload", "protocol", "ip",
                                                          "field", "saddr", "right", "10.213.0.3", "drop")));
        if (!(missing & NO_DROP))
            json_array_append_new(c, rule(r->chain, json_pack("[{s:n}]", "drop")));
        if (missing & DROP_NOT_LAST)
            json_array_append_new(c, rule(r->chain, json_pack("[{s:n}]", "accept")));
    }
    docs[0] = doc(c);
    json_t *f = json_array();
    json_array_append_new(f, chain_item("forward", "forward"));
    if (!(missing & NO_DISPATCH))
        json_array_append_new(f, vmap_rule("forward", "iifname", "fwd_in"));
    json_array_append_new(f, vmap_rule("forward", "oifname", "fwd_out"));
    docs[1] = doc(f);
    json_t *in = json_array();
    if (!(missing & NO_INPUT_CHAIN)) {
        json_array_append_new(in, chain_item("input", "input"));
        json_array_append_new(in, vmap_rule("input", "iifname", "inp"));
    }
    docs[2] = doc(in);
    json_t *m1 = json_array(), *m2 = json_array(), *m3 = json_array();
    json_array_append_new(m1, map_item("fwd_in", r, !(missing & NO_FWD_IN)));
    json_array_append_new(m2, map_item("fwd_out", r, !(missing & NO_FWD_OUT)));
    json_array_append_new(m3, map_item("inp", r, !(missing & NO_INP)));
    docs[3] = doc(m1), docs[4] = doc(m2), docs[5] = doc(m3);
    ic_buf all = IC_BUF_INIT;
    for (int i = 0; i < 6; i++) {
        char *text = json_dumps(docs[i], 0);
        ic_buf_append(&all, text, strlen(text));
        ic_buf_append_u8(&all, '\n');
        free(text);
        json_decref(docs[i]);
    }
    ic_buf_append_u8(&all, 0);
    return (char *)all.data;
}

static void test_nft_check(void **state)
{
    struct ic_fw_rules r;
    rules_for(&r, "allow=10.214.1.2");
    ic_err err = {0};
    char *j = nft_json(&r, 0);
    assert_int_equal(ic_fw_nft_check(j, &r, &err), 0);
    /* The chain's listing also gives the veth and guest back (removal). */
    struct ic_fw_rules back;
    memset(&back, 0, sizeof(back));
    snprintf(back.chain, sizeof(back.chain), "%s", r.chain);
    assert_int_equal(ic_fw_nft_parse_chain(j, &back, &err), 0);
    assert_string_equal(back.veth, r.veth);
    assert_int_equal(back.guest, r.guest);
    free(j);
    struct { int missing; const char *want; } cases[] = {
        {NO_FWD_IN, "forward iifname jump"},
        {NO_FWD_OUT, "forward oifname jump"},
        {NO_INP, "input iifname jump"},
        {NO_DROP, "does not end with drop"},
        {DROP_NOT_LAST, "does not end with drop"},
        {NO_INPUT_CHAIN, "no input base chain"},
        {NO_DISPATCH, "forward iifname dispatch"},
        {NO_CHAIN, "does not exist"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        j = nft_json(&r, cases[i].missing);
        ic_err_clear(&err);
        assert_int_equal(ic_fw_nft_check(j, &r, &err), -ENOENT);
        if (!strstr(err.msg, cases[i].want))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg, cases[i].want);
        free(j);
    }
    /* Another VM's elements do not count for this one. */
    struct ic_fw_rules other = r;
    snprintf(other.veth, sizeof(other.veth), "ic0000000000000");
    j = nft_json(&r, 0);
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
        cmocka_unit_test(test_nft_skeleton),
        cmocka_unit_test(test_nft_add),
        cmocka_unit_test(test_nft_del),
        cmocka_unit_test(test_nft_check),
        cmocka_unit_test(test_ipt_add),
        cmocka_unit_test(test_ipt_del),
        cmocka_unit_test(test_ipt_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
