/*
 * spec.c - the words of the network layer: parsing `--net` and
 * `--firewall`, allow-list entries as text, the names derived from a VM's
 * internal id (chain, veth, MAC), and the address pool's arithmetic.
 * Pure functions: nothing here touches the host.
 */
#include "ironclaw/net.h"

#include "ironclaw/fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small parsers -------------------------------------------------------- */

/* A decimal number of at most `digits` digits, no sign, no leading zero. */
static const char *parse_dec(const char *p, unsigned digits, unsigned long max, unsigned long *out)
{
    unsigned n = 0;
    unsigned long v = 0;
    while (p[n] >= '0' && p[n] <= '9') {
        if (n == digits)
            return NULL;
        v = v * 10 + (unsigned long)(p[n] - '0');
        n++;
    }
    if (n == 0 || (n > 1 && p[0] == '0') || v > max)
        return NULL;
    *out = v;
    return p + n;
}

/* a.b.c.d, strictly: four decimal octets. */
static const char *parse_ipv4(const char *p, uint32_t *out)
{
    uint32_t a = 0;
    for (int i = 0; i < 4; i++) {
        unsigned long o;
        p = parse_dec(p, 3, 255, &o);
        if (!p)
            return NULL;
        a = a << 8 | (uint32_t)o;
        if (i < 3) {
            if (*p != '.')
                return NULL;
            p++;
        }
    }
    *out = a;
    return p;
}

static uint32_t prefix_mask(unsigned prefix)
{
    return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
}

void ic_net_ip_format(uint32_t a, char out[16])
{
    snprintf(out, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

/* ---- --net ------------------------------------------------------------------ */

static int parse_entry(const char *text, size_t len, struct ic_net_allow *a, ic_err *err)
{
    char buf[64];
    if (len == 0)
        return ic_err_set(err, EINVAL, "--net allow=: an entry is empty (stray comma?)");
    if (len >= sizeof(buf))
        return ic_err_set(err, EINVAL, "--net allow=: entry '%.*s...' is too long", 20, text);
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(a, 0, sizeof(*a));
    uint32_t addr;
    const char *p = parse_ipv4(buf, &addr);
    if (!p)
        return ic_err_set(err, EINVAL, "--net allow=%s: the host must be an IPv4 address "
                          "(a.b.c.d) or network (a.b.c.d/N); names are not resolved", buf);
    a->prefix = 32;
    unsigned long v;
    if (p[0] == '/' && p[1] >= '0' && p[1] <= '9') {
        p = parse_dec(p + 1, 2, 32, &v);
        if (!p)
            return ic_err_set(err, EINVAL, "--net allow=%s: the prefix length must be 0 to 32", buf);
        a->prefix = (uint8_t)v;
    }
    if ((addr & ~prefix_mask(a->prefix)) != 0) {
        char net[16];
        ic_net_ip_format(addr & prefix_mask(a->prefix), net);
        return ic_err_set(err, EINVAL, "--net allow=%s: the address has host bits set "
                          "(did you mean %s/%u?)", buf, net, a->prefix);
    }
    a->addr = addr;
    if (*p == ':') {
        p = parse_dec(p + 1, 5, 65535, &v);
        if (!p || v == 0)
            return ic_err_set(err, EINVAL, "--net allow=%s: the port must be 1 to 65535", buf);
        a->port = (uint16_t)v;
    }
    if (*p == '/') {
        if (strncmp(p, "/tcp", 4) == 0)
            a->proto = IC_NET_PROTO_TCP;
        else if (strncmp(p, "/udp", 4) == 0)
            a->proto = IC_NET_PROTO_UDP;
        else
            return ic_err_set(err, EINVAL, "--net allow=%s: the protocol must be /tcp or /udp", buf);
        p += 4;
    }
    if (*p)
        return ic_err_set(err, EINVAL, "--net allow=%s: unexpected '%s' (the form is "
                          "HOST[:PORT][/tcp|/udp])", buf, p);
    return 0;
}

int ic_net_spec_parse(const char *text, struct ic_net_spec *spec, ic_err *err)
{
    enum ic_fw_backend keep = spec->backend;
    memset(spec, 0, sizeof(*spec));
    spec->backend = keep;
    if (strcmp(text, "none") == 0)
        return 0;
    if (strncmp(text, "allow=", 6) != 0)
        return ic_err_set(err, EINVAL, "--net wants 'none' or 'allow=HOST[:PORT][/tcp|/udp],...', "
                          "got '%s'", text);
    const char *p = text + 6;
    if (!*p)
        return ic_err_set(err, EINVAL, "--net allow= needs at least one destination");
    for (;;) {
        size_t len = strcspn(p, ",");
        if (spec->n_allow >= IC_NET_ALLOW_MAX)
            return ic_err_set(err, E2BIG, "--net allow=: at most %d entries", IC_NET_ALLOW_MAX);
        int r = parse_entry(p, len, &spec->allow[spec->n_allow], err);
        if (r < 0)
            return r;
        spec->n_allow++;
        if (!p[len])
            break;
        p += len + 1;
    }
    spec->mode = IC_NET_ALLOW;
    return 0;
}

int ic_fw_backend_parse(const char *text, enum ic_fw_backend *out, ic_err *err)
{
    if (strcmp(text, "auto") == 0)
        *out = IC_FW_AUTO;
    else if (strcmp(text, "nft") == 0 || strcmp(text, "nftables") == 0)
        *out = IC_FW_NFT;
    else if (strcmp(text, "iptables") == 0)
        *out = IC_FW_IPTABLES;
    else
        return ic_err_set(err, EINVAL, "--firewall wants nft, iptables or auto, got '%s'", text);
    return 0;
}

const char *ic_fw_backend_name(enum ic_fw_backend b)
{
    switch (b) {
    case IC_FW_NFT:
        return "nft";
    case IC_FW_IPTABLES:
        return "iptables";
    default:
        return "auto";
    }
}

int ic_net_allow_format(const struct ic_net_allow *a, char *out, size_t size)
{
    char ip[16], port[8] = "";
    ic_net_ip_format(a->addr, ip);
    if (a->port)
        snprintf(port, sizeof(port), ":%u", a->port);
    const char *proto = a->proto == IC_NET_PROTO_TCP ? "/tcp" : a->proto == IC_NET_PROTO_UDP ? "/udp" : "";
    int n = a->prefix == 32 ? snprintf(out, size, "%s%s%s", ip, port, proto)
                            : snprintf(out, size, "%s/%u%s%s", ip, a->prefix, port, proto);
    return n < 0 || (size_t)n >= size ? -ENOSPC : 0;
}

/* ---- names ------------------------------------------------------------------- */

static void id_hash(const char *id, char hex[IC_SHA256_HEX])
{
    ic_sha256_hex(id, strlen(id), hex);
}

void ic_net_chain_name(const char *id, char out[IC_NET_CHAIN_SIZE])
{
    char hex[IC_SHA256_HEX];
    id_hash(id, hex);
    snprintf(out, IC_NET_CHAIN_SIZE, IC_NET_CHAIN_PREFIX "%.16s", hex);
}

void ic_net_veth_name(const char *id, char out[IC_NET_IFNAME_SIZE])
{
    char hex[IC_SHA256_HEX];
    id_hash(id, hex);
    snprintf(out, IC_NET_IFNAME_SIZE, "ic%.13s", hex);
}

void ic_net_mac(const char *id, char out[IC_NET_MAC_SIZE])
{
    char hex[IC_SHA256_HEX];
    id_hash(id, hex);
    /* 02: locally administered, unicast; then 5 bytes of the hash. */
    snprintf(out, IC_NET_MAC_SIZE, "02:%.2s:%.2s:%.2s:%.2s:%.2s", hex + 16, hex + 18, hex + 20,
             hex + 22, hex + 24);
}

bool ic_net_chain_valid(const char *name)
{
    size_t plen = strlen(IC_NET_CHAIN_PREFIX);
    if (!name || strlen(name) != IC_NET_CHAIN_LEN || strncmp(name, IC_NET_CHAIN_PREFIX, plen) != 0)
        return false;
    for (const char *p = name + plen; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* ---- the pool ------------------------------------------------------------------- */

int ic_net_pool_parse(const char *cidr, struct ic_net_pool *pool, ic_err *err)
{
    uint32_t addr;
    unsigned long prefix;
    const char *p = parse_ipv4(cidr, &addr);
    if (!p || *p != '/' || !(p = parse_dec(p + 1, 2, 32, &prefix)) || *p)
        return ic_err_set(err, EINVAL, "%s: the address pool must be an IPv4 network "
                          "a.b.c.d/N, got '%s'", IC_NET_POOL_ENV, cidr);
    if (prefix < 8 || prefix > 30)
        return ic_err_set(err, EINVAL, "%s=%s: the prefix must be 8 to 30 (one /30 per VM)",
                          IC_NET_POOL_ENV, cidr);
    if (addr & ~prefix_mask((unsigned)prefix))
        return ic_err_set(err, EINVAL, "%s=%s: the address has host bits set", IC_NET_POOL_ENV, cidr);
    pool->base = addr;
    pool->prefix = (uint8_t)prefix;
    return 0;
}

int ic_net_pool_from_env(struct ic_net_pool *pool, ic_err *err)
{
    const char *v = getenv(IC_NET_POOL_ENV);
    return ic_net_pool_parse(v && *v ? v : IC_NET_POOL_DEFAULT, pool, err);
}

uint32_t ic_net_pool_blocks(const struct ic_net_pool *pool)
{
    return 1u << (30 - pool->prefix);
}

void ic_net_pool_addrs(const struct ic_net_pool *pool, uint32_t index, struct ic_net_addrs *a)
{
    a->block = pool->base + 4 * index;
    a->host = a->block;
    a->ns = a->block + 1;
    a->gateway = a->block + 2;
    a->guest = a->block + 3;
}
