/*
 * rules.c - what each firewall backend is told, and how its answer is
 * checked: the nft script and the iptables-restore input that add one VM's
 * isolation, the text that removes it, and the read-back checks that the
 * jumps and the final drop are in place. Pure text in, text out; applying
 * it is fw.c's job. docs/network.md shows the generated rules.
 */
#include "ironclaw/net.h"

#include "ironclaw/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* A chain that never exists: a jump to it makes the backend reject the
 * whole transaction (the test-only fault for the "firewall" step). */
#define FAULT_CHAIN "IRONCLAW_fault_injected"

struct text {
    ic_buf b;
    bool oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct text *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) || ic_buf_append(&t->b, line, (size_t)n) < 0)
        t->oom = true;
}

static char *text_take(struct text *t)
{
    if (t->oom || ic_buf_append_u8(&t->b, 0) < 0) {
        ic_buf_free(&t->b);
        return NULL;
    }
    return (char *)t->b.data; /* off is 0: nothing was consumed */
}

static void cidr(const struct ic_net_allow *a, char out[24])
{
    char ip[16];
    ic_net_ip_format(a->addr, ip);
    snprintf(out, 24, "%s/%u", ip, a->prefix);
}

void ic_fw_rules_init(struct ic_fw_rules *r, const char *vm_id, uint32_t guest,
                      const struct ic_net_allow *allow, size_t n_allow)
{
    memset(r, 0, sizeof(*r));
    ic_net_chain_name(vm_id, r->chain);
    ic_net_veth_name(vm_id, r->veth);
    r->guest = guest;
    r->n_allow = n_allow > IC_NET_ALLOW_MAX ? IC_NET_ALLOW_MAX : n_allow;
    memcpy(r->allow, allow, r->n_allow * sizeof(*allow));
}

/* ---- nftables ------------------------------------------------------------ */

#define T IC_FW_NFT_TABLE

/* The shared part: maps from interface to verdict (jump to the VM's
 * chain), the guests' addresses to masquerade, and the base chains. */
char *ic_fw_nft_skeleton_text(void)
{
    struct text t = {IC_BUF_INIT, false};
    put(&t, "create table inet " T "\n");
    put(&t, "add map inet " T " fwd_in { type ifname : verdict; }\n");
    put(&t, "add map inet " T " fwd_out { type ifname : verdict; }\n");
    put(&t, "add map inet " T " inp { type ifname : verdict; }\n");
    put(&t, "add set inet " T " guests { type ipv4_addr; }\n");
    put(&t, "add chain inet " T " forward { type filter hook forward priority filter - 10; policy accept; }\n");
    put(&t, "add chain inet " T " input { type filter hook input priority filter - 10; policy accept; }\n");
    put(&t, "add chain inet " T " postrouting { type nat hook postrouting priority srcnat; policy accept; }\n");
    put(&t, "add rule inet " T " forward iifname vmap @fwd_in\n");
    put(&t, "add rule inet " T " forward oifname vmap @fwd_out\n");
    put(&t, "add rule inet " T " input iifname vmap @inp\n");
    /* Only what the forward chain let through reaches postrouting. */
    put(&t, "add rule inet " T " postrouting ip saddr @guests masquerade\n");
    return text_take(&t);
}

static void nft_allow(struct text *t, const char *tc, const struct ic_net_allow *a)
{
    char net[24];
    cidr(a, net);
    const char *proto = a->proto == IC_NET_PROTO_TCP ? "tcp" : "udp";
    if (a->port && a->proto == IC_NET_PROTO_ANY)
        put(t, "add rule inet " T " %s ip daddr %s meta l4proto { tcp, udp } th dport %u accept\n",
            tc, net, a->port);
    else if (a->port)
        put(t, "add rule inet " T " %s ip daddr %s %s dport %u accept\n", tc, net, proto, a->port);
    else if (a->proto != IC_NET_PROTO_ANY)
        put(t, "add rule inet " T " %s ip daddr %s meta l4proto %s accept\n", tc, net, proto);
    else
        put(t, "add rule inet " T " %s ip daddr %s accept\n", tc, net);
}

/* One VM, one transaction: its chain (replies; nothing towards the VM or
 * from a guarded uplink; no spoofing; nothing for the host itself; the
 * allow-list; drop), its uplink guard if any, and the map elements that
 * hook it in. */
char *ic_fw_nft_add_text(const struct ic_fw_rules *r, bool fault)
{
    struct text t = {IC_BUF_INIT, false};
    const char *tc = r->chain, *v = r->veth;
    char guest[16];
    ic_net_ip_format(r->guest, guest);
    put(&t, "add chain inet " T " %s\n", tc);
    put(&t, "add rule inet " T " %s ct state established,related accept\n", tc);
    put(&t, "add rule inet " T " %s iifname != \"%s\" drop\n", tc, v);
    put(&t, "add rule inet " T " %s ip saddr != %s drop\n", tc, guest);
    put(&t, "add rule inet " T " %s fib daddr type local drop\n", tc);
    for (size_t i = 0; i < r->n_allow; i++)
        nft_allow(&t, tc, &r->allow[i]);
    put(&t, "add rule inet " T " %s drop\n", tc);
    /* An uplink is shared by VMs, so its guard cannot be a map element:
     * a base chain of the VM's own drops what arrives there unasked. */
    if (r->n_guard) {
        put(&t, "add chain inet " T " %s_guard { type filter hook forward priority filter - 11; "
            "policy accept; }\n", tc);
        for (size_t i = 0; i < r->n_guard; i++) {
            put(&t, "add rule inet " T " %s_guard iifname \"%s\" ct state established,related accept\n",
                tc, r->guard[i]);
            put(&t, "add rule inet " T " %s_guard iifname \"%s\" drop\n", tc, r->guard[i]);
        }
    }
    put(&t, "add element inet " T " fwd_in { \"%s\" : jump %s }\n", v, tc);
    put(&t, "add element inet " T " fwd_out { \"%s\" : jump %s }\n", v, tc);
    put(&t, "add element inet " T " inp { \"%s\" : jump %s }\n", v, tc);
    put(&t, "add element inet " T " guests { %s }\n", guest);
    if (fault)
        put(&t, "add rule inet " T " %s jump " FAULT_CHAIN "\n", tc);
    return text_take(&t);
}

char *ic_fw_nft_del_text(const struct ic_fw_rules *r, bool guard)
{
    struct text t = {IC_BUF_INIT, false};
    char guest[16];
    ic_net_ip_format(r->guest, guest);
    put(&t, "delete element inet " T " fwd_in { \"%s\" }\n", r->veth);
    put(&t, "delete element inet " T " fwd_out { \"%s\" }\n", r->veth);
    put(&t, "delete element inet " T " inp { \"%s\" }\n", r->veth);
    put(&t, "delete element inet " T " guests { %s }\n", guest);
    if (guard)
        put(&t, "flush chain inet " T " %s_guard\ndelete chain inet " T " %s_guard\n", r->chain, r->chain);
    put(&t, "flush chain inet " T " %s\ndelete chain inet " T " %s\n", r->chain, r->chain);
    return text_take(&t);
}

char *ic_fw_nft_check_cmds(const char *chain)
{
    struct text t = {IC_BUF_INIT, false};
    put(&t, "list chain inet " T " %s\n", chain);
    put(&t, "list chain inet " T " forward\nlist chain inet " T " input\n");
    put(&t, "list map inet " T " fwd_in\nlist map inet " T " fwd_out\nlist map inet " T " inp\n");
    return text_take(&t);
}

/* ---- iptables ------------------------------------------------------------- */

static void ipt_allow(struct text *t, const char *tc, const struct ic_net_allow *a)
{
    char net[24];
    cidr(a, net);
    if (a->port && a->proto == IC_NET_PROTO_ANY) {
        put(t, "-A %s -d %s -p tcp -m tcp --dport %u -j ACCEPT\n", tc, net, a->port);
        put(t, "-A %s -d %s -p udp -m udp --dport %u -j ACCEPT\n", tc, net, a->port);
    } else if (a->port) {
        const char *p = a->proto == IC_NET_PROTO_TCP ? "tcp" : "udp";
        put(t, "-A %s -d %s -p %s -m %s --dport %u -j ACCEPT\n", tc, net, p, p, a->port);
    } else if (a->proto != IC_NET_PROTO_ANY) {
        put(t, "-A %s -d %s -p %s -j ACCEPT\n", tc, net, a->proto == IC_NET_PROTO_TCP ? "tcp" : "udp");
    } else {
        put(t, "-A %s -d %s -j ACCEPT\n", tc, net);
    }
}

/* filter first (the drops), then nat: a table whose commit fails leaves
 * the earlier one applied, and rollback removes it. The chain is filled
 * before anything jumps to it; jumps go first in their built-in chains so
 * that the chain's accepts hold even under a DROP policy. */
char *ic_fw_ipt_add_text(const struct ic_fw_rules *r, bool fault)
{
    struct text t = {IC_BUF_INIT, false};
    const char *tc = r->chain, *v = r->veth;
    char guest[16];
    ic_net_ip_format(r->guest, guest);
    put(&t, "*filter\n:%s - [0:0]\n", tc);
    put(&t, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", tc);
    put(&t, "-A %s ! -i %s -j DROP\n", tc, v);
    put(&t, "-A %s ! -s %s/32 -j DROP\n", tc, guest);
    put(&t, "-A %s -m addrtype --dst-type LOCAL -j DROP\n", tc);
    for (size_t i = 0; i < r->n_allow; i++)
        ipt_allow(&t, tc, &r->allow[i]);
    put(&t, "-A %s -j DROP\n", tc);
    for (size_t i = 0; i < r->n_guard; i++)
        put(&t, "-I FORWARD 1 -i %s -j %s\n", r->guard[i], tc);
    put(&t, "-I FORWARD 1 -o %s -j %s\n", v, tc);
    put(&t, "-I FORWARD 1 -i %s -j %s\n", v, tc);
    put(&t, "-I INPUT 1 -i %s -j %s\n", v, tc);
    put(&t, "COMMIT\n*nat\n:%s - [0:0]\n", tc);
    for (size_t i = 0; i < r->n_allow; i++) {
        char net[24];
        cidr(&r->allow[i], net);
        put(&t, "-A %s -d %s -j MASQUERADE\n", tc, net);
    }
    put(&t, "-I POSTROUTING 1 -s %s/32 -j %s\n", guest, tc);
    if (fault)
        put(&t, "-A %s -j " FAULT_CHAIN "\n", tc);
    put(&t, "COMMIT\n");
    return text_take(&t);
}

/* True when an iptables-save rule line jumps to chain (ends "-j CHAIN"). */
static bool line_jumps_to(const char *line, size_t len, const char *chain)
{
    char tail[IC_NET_CHAIN_SIZE + 4];
    int n = snprintf(tail, sizeof(tail), "-j %s", chain);
    return n > 0 && len >= (size_t)n && memcmp(line + len - (size_t)n, tail, (size_t)n) == 0 &&
           (len == (size_t)n || line[len - (size_t)n - 1] == ' ');
}

/* One table's deletions: every jump to chain (as "-D ..."), then -F/-X. */
static void ipt_del_table(struct text *t, const char *table, const char *body, size_t blen,
                          const char *chain)
{
    bool has_chain = false, any = false;
    size_t clen = strlen(chain);
    struct text dels = {IC_BUF_INIT, false};
    for (const char *p = body; p < body + blen;) {
        const char *nl = memchr(p, '\n', (size_t)(body + blen - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(body + blen - p);
        if (len > clen + 1 && p[0] == ':' && memcmp(p + 1, chain, clen) == 0 && p[1 + clen] == ' ')
            has_chain = true;
        else if (len > 3 && strncmp(p, "-A ", 3) == 0 && line_jumps_to(p, len, chain) &&
                 !(strncmp(p + 3, chain, clen) == 0 && p[3 + clen] == ' ')) {
            put(&dels, "-D %.*s\n", (int)(len - 3), p + 3);
            any = true;
        }
        p += len + 1;
    }
    if (any || has_chain) {
        put(t, "*%s\n", table);
        if (any && ic_buf_append(&t->b, ic_buf_head(&dels.b), ic_buf_size(&dels.b)) < 0)
            t->oom = true;
        if (has_chain)
            put(t, "-F %s\n-X %s\n", chain, chain);
        put(t, "COMMIT\n");
    }
    t->oom |= dels.oom;
    ic_buf_free(&dels.b);
}

char *ic_fw_ipt_del_text(const char *save, const char *chain)
{
    struct text t = {IC_BUF_INIT, false};
    const char *p = save;
    while ((p = strchr(p, '*'))) {
        if (p != save && p[-1] != '\n') {
            p++;
            continue;
        }
        char table[32];
        size_t nlen = strcspn(p + 1, "\n");
        snprintf(table, sizeof(table), "%.*s", (int)(nlen < 31 ? nlen : 31), p + 1);
        const char *body = p + 1 + nlen;
        const char *end = strstr(body, "\nCOMMIT");
        size_t blen = end ? (size_t)(end - body) : strlen(body);
        ipt_del_table(&t, table, body, blen, chain);
        p = body + blen;
    }
    char *s = text_take(&t);
    return s ? s : (t.oom ? NULL : strdup(""));
}

/* ---- read-back checks -------------------------------------------------------- */

static bool ipt_has_line(const char *save, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = save; (p = strstr(p, want)); p += n)
        if ((p == save || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

/* The *filter section of an iptables-save text (all of it if none). */
static char *filter_section(const char *save)
{
    const char *start = strstr(save, "*filter\n");
    if (start && start != save && start[-1] != '\n')
        start = NULL;
    if (!start)
        return strdup(save);
    const char *end = strstr(start, "\nCOMMIT");
    return strndup(start, end ? (size_t)(end - start + 1) : strlen(start));
}

static int ipt_check_filter(const char *save, const struct ic_fw_rules *r, ic_err *err);

int ic_fw_ipt_check(const char *save, const struct ic_fw_rules *r, ic_err *err)
{
    char *filter = filter_section(save);
    if (!filter)
        return ic_err_set(err, ENOMEM, "out of memory");
    int rc = ipt_check_filter(filter, r, err);
    free(filter);
    return rc;
}

static int ipt_check_filter(const char *save, const struct ic_fw_rules *r, ic_err *err)
{
    char want[128];
    const char *jumps[][2] = {{"FORWARD", "-i"}, {"FORWARD", "-o"}, {"INPUT", "-i"}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(want, sizeof(want), "-A %s %s %s -j %s", jumps[i][0], jumps[i][1], r->veth, r->chain);
        if (!ipt_has_line(save, want))
            return ic_err_set(err, ENOENT, "the jump '%s' is not in the filter table", want);
    }
    /* The chain's last rule must be the unconditional drop. */
    char prefix[64];
    int plen = snprintf(prefix, sizeof(prefix), "-A %s ", r->chain);
    const char *last = NULL;
    for (const char *p = save; (p = strstr(p, prefix)); p += plen)
        if (p == save || p[-1] == '\n')
            last = p;
    snprintf(want, sizeof(want), "-A %s -j DROP", r->chain);
    if (!last || strncmp(last, want, strlen(want)) != 0 ||
        (last[strlen(want)] != '\n' && last[strlen(want)] != '\0'))
        return ic_err_set(err, ENOENT, "chain %s does not end with '-j DROP'", r->chain);
    return 0;
}

/* nft JSON: one or more documents {"nftables": [{"chain": ...}, {"rule":
 * ...}, {"map": ...}]}, concatenated. */

typedef void (*nft_item_fn)(json_t *item, void *ud);

static int nft_each_item(const char *json, nft_item_fn fn, void *ud, ic_err *err)
{
    size_t len = strlen(json), off = 0;
    int docs = 0;
    while (off < len) {
        while (off < len && (json[off] == ' ' || json[off] == '\n' || json[off] == '\t'))
            off++;
        if (off >= len)
            break;
        json_error_t jerr;
        json_t *root = json_loadb(json + off, len - off, JSON_DISABLE_EOF_CHECK, &jerr);
        json_t *list = json_object_get(root, "nftables");
        if (!json_is_array(list)) {
            json_decref(root);
            return ic_err_set(err, EINVAL, "cannot read nft's listing: %s",
                              root ? "unexpected shape" : jerr.text);
        }
        size_t i;
        json_t *item;
        json_array_foreach(list, i, item)
            fn(item, ud);
        json_decref(root);
        off += jerr.position;
        docs++;
    }
    return docs ? 0 : ic_err_set(err, EINVAL, "nft listed nothing");
}

static const char *match_right(json_t *expr_item, const char *op, const char *meta_key,
                               const char *payload_field)
{
    json_t *m = json_object_get(expr_item, "match");
    const char *o = json_string_value(json_object_get(m, "op"));
    json_t *left = json_object_get(m, "left");
    if (!o || strcmp(o, op) != 0)
        return NULL;
    if (meta_key) {
        const char *k = json_string_value(json_object_get(json_object_get(left, "meta"), "key"));
        if (!k || strcmp(k, meta_key) != 0)
            return NULL;
    } else {
        json_t *pl = json_object_get(left, "payload");
        const char *f = json_string_value(json_object_get(pl, "field"));
        const char *pr = json_string_value(json_object_get(pl, "protocol"));
        if (!f || !pr || strcmp(pr, "ip") != 0 || strcmp(f, payload_field) != 0)
            return NULL;
    }
    return json_string_value(json_object_get(m, "right"));
}

static bool expr_is_drop(json_t *expr)
{
    json_t *e = json_array_get(expr, 0);
    return json_array_size(expr) == 1 && json_is_object(e) && json_object_size(e) == 1 &&
           json_object_get(e, "drop");
}

static bool expr_is_vmap(json_t *expr, const char *key, const char *map)
{
    json_t *v = json_object_get(json_array_get(expr, 0), "vmap");
    const char *k = json_string_value(json_object_get(json_object_get(json_object_get(v, "key"), "meta"), "key"));
    const char *d = json_string_value(json_object_get(v, "data"));
    char want[32];
    snprintf(want, sizeof(want), "@%s", map);
    return json_array_size(expr) == 1 && k && d && strcmp(k, key) == 0 && strcmp(d, want) == 0;
}

/* Does a map's element list hold ifname -> jump target? */
static bool map_has(json_t *map, const char *ifname, const char *target)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(map, "elem"), i, e) {
        const char *k = json_string_value(json_array_get(e, 0));
        const char *t = json_string_value(json_object_get(json_object_get(json_array_get(e, 1), "jump"), "target"));
        if (k && t && strcmp(k, ifname) == 0 && strcmp(t, target) == 0)
            return true;
    }
    return false;
}

struct nft_seen {
    const struct ic_fw_rules *r;
    bool forward_hook, input_hook;
    bool fwd_in_rule, fwd_out_rule, inp_rule;
    bool fwd_in, fwd_out, inp;
    bool chain;
    bool last_is_drop;
};

static void nft_see(json_t *item, void *ud)
{
    struct nft_seen *s = ud;
    const struct ic_fw_rules *r = s->r;
    json_t *c = json_object_get(item, "chain");
    const char *table;
    if (c) {
        table = json_string_value(json_object_get(c, "table")) ?: "";
        const char *name = json_string_value(json_object_get(c, "name")) ?: "";
        const char *hook = json_string_value(json_object_get(c, "hook")) ?: "";
        if (strcmp(table, IC_FW_NFT_TABLE) != 0)
            return;
        s->forward_hook |= strcmp(name, "forward") == 0 && strcmp(hook, "forward") == 0;
        s->input_hook |= strcmp(name, "input") == 0 && strcmp(hook, "input") == 0;
        s->chain |= strcmp(name, r->chain) == 0;
        return;
    }
    json_t *m = json_object_get(item, "map");
    if (m) {
        const char *name = json_string_value(json_object_get(m, "name")) ?: "";
        if (strcmp(json_string_value(json_object_get(m, "table")) ?: "", IC_FW_NFT_TABLE) != 0)
            return;
        if (strcmp(name, "fwd_in") == 0)
            s->fwd_in = map_has(m, r->veth, r->chain);
        else if (strcmp(name, "fwd_out") == 0)
            s->fwd_out = map_has(m, r->veth, r->chain);
        else if (strcmp(name, "inp") == 0)
            s->inp = map_has(m, r->veth, r->chain);
        return;
    }
    json_t *rule = json_object_get(item, "rule");
    if (!rule || strcmp(json_string_value(json_object_get(rule, "table")) ?: "", IC_FW_NFT_TABLE) != 0)
        return;
    const char *chain = json_string_value(json_object_get(rule, "chain")) ?: "";
    json_t *expr = json_object_get(rule, "expr");
    if (strcmp(chain, r->chain) == 0) {
        s->last_is_drop = expr_is_drop(expr);
    } else if (strcmp(chain, "forward") == 0) {
        s->fwd_in_rule |= expr_is_vmap(expr, "iifname", "fwd_in");
        s->fwd_out_rule |= expr_is_vmap(expr, "oifname", "fwd_out");
    } else if (strcmp(chain, "input") == 0) {
        s->inp_rule |= expr_is_vmap(expr, "iifname", "inp");
    }
}

int ic_fw_nft_check(const char *json, const struct ic_fw_rules *r, ic_err *err)
{
    struct nft_seen s = {.r = r};
    int rc = nft_each_item(json, nft_see, &s, err);
    if (rc < 0)
        return rc;
    if (!s.forward_hook || !s.input_hook)
        return ic_err_set(err, ENOENT, "table inet %s has no %s base chain", IC_FW_NFT_TABLE,
                          s.forward_hook ? "input" : "forward");
    if (!s.fwd_in_rule || !s.fwd_out_rule || !s.inp_rule)
        return ic_err_set(err, ENOENT, "table inet %s lacks its %s dispatch rule", IC_FW_NFT_TABLE,
                          !s.fwd_in_rule ? "forward iifname" : !s.fwd_out_rule ? "forward oifname"
                                                                                : "input iifname");
    if (!s.chain)
        return ic_err_set(err, ENOENT, "chain %s does not exist", r->chain);
    if (!s.fwd_in || !s.fwd_out || !s.inp)
        return ic_err_set(err, ENOENT, "the %s jump for %s to %s is not in its map", !s.fwd_in ?
                          "forward iifname" : !s.fwd_out ? "forward oifname" : "input iifname",
                          r->veth, r->chain);
    if (!s.last_is_drop)
        return ic_err_set(err, ENOENT, "chain %s does not end with drop", r->chain);
    return 0;
}

struct nft_parse {
    struct ic_fw_rules *r;
    bool veth, guest;
};

static void nft_parse_see(json_t *item, void *ud)
{
    struct nft_parse *p = ud;
    json_t *rule = json_object_get(item, "rule");
    if (!rule || strcmp(json_string_value(json_object_get(rule, "chain")) ?: "", p->r->chain) != 0)
        return;
    json_t *e = json_array_get(json_object_get(rule, "expr"), 0);
    const char *v = match_right(e, "!=", "iifname", NULL);
    if (v && strlen(v) < IC_NET_IFNAME_SIZE) {
        snprintf(p->r->veth, sizeof(p->r->veth), "%s", v);
        p->veth = true;
    }
    const char *g = match_right(e, "!=", NULL, "saddr");
    unsigned a, b, c, d;
    if (g && sscanf(g, "%u.%u.%u.%u", &a, &b, &c, &d) == 4 && a < 256 && b < 256 && c < 256 && d < 256) {
        p->r->guest = a << 24 | b << 16 | c << 8 | d;
        p->guest = true;
    }
}

int ic_fw_nft_parse_chain(const char *json, struct ic_fw_rules *r, ic_err *err)
{
    struct nft_parse p = {.r = r};
    int rc = nft_each_item(json, nft_parse_see, &p, err);
    if (rc < 0)
        return rc;
    if (!p.veth || !p.guest)
        return ic_err_set(err, EINVAL, "chain %s does not look like an ironclaw VM chain "
                          "(no veth or guest address in it)", r->chain);
    return 0;
}
