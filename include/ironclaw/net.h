/*
 * net.h - a VM's network: none (the default), or egress to an allow-list
 * of destinations, enforced on the host by a per-VM firewall chain.
 *
 * With `--net none` the VM has no network device and its VMM runs in a new,
 * empty network namespace (the launch trampoline, launch.c). With
 * `--net allow=...` the VM gets:
 *
 *   guest eth0 --- tap0 [per-VM netns, routes] veth0 ===veth=== icXXXX [host]
 *
 * addresses from a pool (one /30 per VM: host veth, netns veth, the guest's
 * gateway and the guest), and on the host a chain IRONCLAW_<16 hex of
 * SHA-256(VM id)> that allows replies, the allow-list and nothing else,
 * jumped to from the forward and input hooks, plus masquerading towards
 * the allowed destinations. Two firewall backends share one interface:
 * nftables (libnftables, one atomic transaction per VM and direction) and
 * iptables (`iptables-restore --noflush` batches). docs/network.md has the
 * whole design.
 *
 * Everything fails closed: a step that cannot be done (or a read-back that
 * does not find the jumps and the final drop) rolls back what was applied
 * and the VM does not start; the error names the step. Resources go into
 * the VM's state record (state.h) before they exist, and
 * ic_net_reap_record() removes whatever a record lists, so `ironclaw gc`
 * cleans up after a crashed owner.
 *
 * Threads: setup runs as a state machine on the caller's libuv loop;
 * blocking work (netlink, libnftables, locked files, and the iptables
 * tools, started with posix_spawn) goes to the thread pool: starting a
 * program with uv_spawn blocks the loop for the fork and the child's exec
 * (~5 ms each on this kind of host; docs/network.md).
 * The functions marked "blocking" are for the thread pool or the CLI.
 */
#ifndef IRONCLAW_NET_H
#define IRONCLAW_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ironclaw/err.h"

struct ic_state;

/* ---- what the user asked for --------------------------------------------- */

#define IC_NET_ALLOW_MAX 64

enum ic_net_mode { IC_NET_NONE = 0, IC_NET_ALLOW };
enum ic_fw_backend { IC_FW_AUTO = 0, IC_FW_NFT, IC_FW_IPTABLES };
enum ic_net_proto { IC_NET_PROTO_ANY = 0, IC_NET_PROTO_TCP, IC_NET_PROTO_UDP };

/* One allow-list entry: an IPv4 network, optionally one port of one protocol. */
struct ic_net_allow {
    uint32_t addr;            /* host byte order, host bits zero */
    uint8_t prefix;           /* 0..32 */
    uint16_t port;            /* 0: every port */
    enum ic_net_proto proto;  /* ANY only when port == 0 */
};

struct ic_net_spec {
    enum ic_net_mode mode;
    enum ic_fw_backend backend;
    size_t n_allow;
    struct ic_net_allow allow[IC_NET_ALLOW_MAX];
};

/* "none" or "allow=HOST[:PORT][/tcp|/udp],..." (HOST: a.b.c.d or a.b.c.d/N
 * with no host bits set; a port without a protocol means TCP and UDP).
 * Fills spec->mode and the list; spec->backend is left alone. */
int ic_net_spec_parse(const char *text, struct ic_net_spec *spec, ic_err *err);
/* "nft", "iptables" or "auto". */
int ic_fw_backend_parse(const char *text, enum ic_fw_backend *out, ic_err *err);
const char *ic_fw_backend_name(enum ic_fw_backend b);   /* "auto", "nft", "iptables" */
/* An entry back as text ("10.0.0.0/8:443/tcp"); 0 or -ENOSPC. */
int ic_net_allow_format(const struct ic_net_allow *a, char *out, size_t size);
/* a.b.c.d from a host-order address into out (16 bytes). */
void ic_net_ip_format(uint32_t addr, char out[16]);

/* ---- names, all derived from the internal VM id only --------------------- */

#define IC_NET_CHAIN_PREFIX "IRONCLAW_"
#define IC_NET_CHAIN_LEN 25           /* "IRONCLAW_" + 16 hex; iptables allows 28 */
#define IC_NET_CHAIN_SIZE (IC_NET_CHAIN_LEN + 1)
#define IC_NET_IFNAME_SIZE 16         /* IFNAMSIZ */
#define IC_NET_MAC_SIZE 18
#define IC_NET_TAP_NAME "tap0"        /* inside the VM's own netns */
#define IC_NET_NS_VETH_NAME "veth0"   /* the netns end of the veth pair */

/* IRONCLAW_ + the first 16 hex digits of SHA-256(id). */
void ic_net_chain_name(const char *id, char out[IC_NET_CHAIN_SIZE]);
/* The host end of the veth pair: "ic" + the same 13 hex digits (15 chars). */
void ic_net_veth_name(const char *id, char out[IC_NET_IFNAME_SIZE]);
/* A locally administered unicast MAC for the guest NIC, from the id's hash. */
void ic_net_mac(const char *id, char out[IC_NET_MAC_SIZE]);
/* True for names ic_net_chain_name can produce. */
bool ic_net_chain_valid(const char *name);

/* ---- the address pool ---------------------------------------------------- */

#define IC_NET_POOL_DEFAULT "10.213.0.0/16"
#define IC_NET_POOL_ENV "IRONCLAW_NET_POOL"

struct ic_net_pool {
    uint32_t base;     /* host order, aligned to prefix */
    uint8_t prefix;    /* 8..30 */
};

/* One VM's /30: [0] host veth, [1] netns veth, [2] the guest's gateway
 * (tap0 in the netns), [3] the guest. Two /31 links. */
struct ic_net_addrs {
    uint32_t block;
    uint32_t host, ns, gateway, guest;
};

int ic_net_pool_parse(const char *cidr, struct ic_net_pool *pool, ic_err *err);
/* $IRONCLAW_NET_POOL, else IC_NET_POOL_DEFAULT. */
int ic_net_pool_from_env(struct ic_net_pool *pool, ic_err *err);
uint32_t ic_net_pool_blocks(const struct ic_net_pool *pool);
void ic_net_pool_addrs(const struct ic_net_pool *pool, uint32_t index, struct ic_net_addrs *a);

/* Host-wide network bookkeeping in <runtime>/net/hosts.json under the flock
 * of <runtime>/net/lock: which pool blocks are taken by which VM, and which
 * interfaces' IPv4 forwarding ironclaw switched on (and for whom). Entries
 * of VMs whose directory is gone are stale and dropped. Blocking. */
int ic_net_pool_alloc(const char *runtime_dir, const struct ic_net_pool *pool, const char *vm_id,
                      struct ic_net_addrs *out, ic_err *err);
int ic_net_pool_release(const char *runtime_dir, const char *vm_id, ic_err *err);

/* ---- firewall: one VM's rules, two backends -------------------------------- */

#define IC_NET_GUARD_MAX 8

/* What a VM's rules are generated from. */
struct ic_fw_rules {
    char chain[IC_NET_CHAIN_SIZE];
    char veth[IC_NET_IFNAME_SIZE];        /* host end of the VM's veth */
    uint32_t guest;                       /* the guest's address (anti-spoofing, NAT) */
    size_t n_allow;
    struct ic_net_allow allow[IC_NET_ALLOW_MAX];
    /* Uplinks whose forwarding ironclaw switched on: only replies to the
     * VMs' flows may be forwarded from them (docs/network.md). */
    size_t n_guard;
    char guard[IC_NET_GUARD_MAX][IC_NET_IFNAME_SIZE];
};

/* Fills r for a VM (no guards). */
void ic_fw_rules_init(struct ic_fw_rules *r, const char *vm_id, uint32_t guest,
                      const struct ic_net_allow *allow, size_t n_allow);

/* nftables: every VM's chain lives in one table, `inet ironclaw`, whose
 * base chains dispatch on the interface through verdict maps (one lookup
 * per packet however many VMs run). The table's skeleton is created once
 * (`create table`, so only one ironclaw wins) and removed with the last
 * VM; each VM is then one transaction in and one out. */
#define IC_FW_NFT_TABLE "ironclaw"
/* Serialises creating/removing the shared table against VM additions
 * across every ironclaw on the host (flock: shared to add, exclusive to
 * remove the table). */
#define IC_FW_NFT_LOCK "/run/lock/ironclaw-nftables.lock"

/* The text each backend applies: nft script (one transaction) or
 * iptables-restore input. `fault` (test only) adds a rule the kernel or
 * the tool rejects. Returns a malloc'd string or NULL. */
char *ic_fw_nft_skeleton_text(void);
char *ic_fw_nft_add_text(const struct ic_fw_rules *r, bool fault);
/* Removes one VM: r->chain, r->veth and r->guest as read back from its
 * chain (ic_fw_nft_parse_chain); `guard`: its uplink guard chain exists. */
char *ic_fw_nft_del_text(const struct ic_fw_rules *r, bool guard);
/* The listing commands whose JSON ic_fw_nft_check reads. */
char *ic_fw_nft_check_cmds(const char *chain);
/* From `list chain` JSON of a VM's chain: its veth and guest address. */
int ic_fw_nft_parse_chain(const char *json, struct ic_fw_rules *r, ic_err *err);
char *ic_fw_ipt_add_text(const struct ic_fw_rules *r, bool fault);
/* iptables deletions for everything that names `chain` in the given
 * iptables-save output (jumps first, then the chains); "" if none. */
char *ic_fw_ipt_del_text(const char *save, const char *chain);

/* Read-back checks: the jumps from forward (in and out of the veth) and
 * input, and the chain's final drop. nft: the JSON documents that
 * ic_fw_nft_check_cmds lists (the chain, the base chains, the maps);
 * iptables: `iptables-save -t filter` text. 0, or -ENOENT naming what is
 * missing. */
int ic_fw_nft_check(const char *json, const struct ic_fw_rules *r, ic_err *err);
int ic_fw_ipt_check(const char *save, const struct ic_fw_rules *r, ic_err *err);

/* Picks the backend for `auto`: nft when nf_tables answers through
 * libnftables, else iptables when iptables-restore is installed. Blocking. */
int ic_fw_resolve(enum ic_fw_backend requested, enum ic_fw_backend *out, ic_err *err);

/* Applies a VM's rules in one transaction (in the thread pool: nft
 * through libnftables, iptables through iptables-restore), then reads
 * them back.
 * On failure whatever was applied is removed again before done runs;
 * err names the step ("firewall" or "verify"). fault_step: the test-only
 * IRONCLAW_TEST_FAIL_NET_STEP value, or NULL. */
typedef void (*ic_fw_done_fn)(const ic_err *err, void *ud);
int ic_fw_add(uv_loop_t *loop, enum ic_fw_backend b, const struct ic_fw_rules *r,
              const char *fault_step, ic_fw_done_fn done, void *ud, ic_err *err);
/* Removes a chain and everything jumping to it, asynchronously. */
int ic_fw_remove(uv_loop_t *loop, enum ic_fw_backend b, const char *chain, ic_fw_done_fn done,
                 void *ud, ic_err *err);

/* Blocking forms, for the reaper and the CLI. Removal is idempotent. */
int ic_fw_remove_blocking(enum ic_fw_backend b, const char *chain, ic_err *err);
int ic_fw_verify_blocking(enum ic_fw_backend b, const struct ic_fw_rules *r, ic_err *err);

/* Every IRONCLAW_ chain on the host, per backend. Blocking. */
typedef int (*ic_fw_chain_fn)(enum ic_fw_backend b, const char *chain, void *ud);
int ic_fw_list(enum ic_fw_backend b, ic_fw_chain_fn fn, void *ud, ic_err *err);

/* ---- one VM's network ------------------------------------------------------- */

typedef struct ic_net ic_net;

/* Test-only fault injection: the step named here fails as if it had
 * (docs/network.md). Never set it outside tests. */
#define IC_NET_FAULT_ENV "IRONCLAW_TEST_FAIL_NET_STEP"

/* The steps, in order; their names appear in errors and in the fault
 * injection variable. */
#define IC_NET_STEPS "pool netns tap veth addresses uplinks firewall verify forwarding"

/* Prepares a network for the VM whose state record is `st` (nothing is
 * created yet). spec->mode must be IC_NET_ALLOW. */
int ic_net_new(uv_loop_t *loop, const struct ic_net_spec *spec, struct ic_state *st, ic_net **out,
               ic_err *err);
/* Sets everything up; done runs once on the loop: err NULL when the
 * network is ready, else after everything was rolled back. */
typedef void (*ic_net_done_fn)(ic_net *net, const ic_err *err, void *ud);
int ic_net_setup(ic_net *net, ic_net_done_fn done, void *ud, ic_err *err);
/* True while setup or its rollback is in flight (the net must not be
 * freed, nor its record reaped). done reports the end. */
bool ic_net_busy(const ic_net *net);
/* The VM is going away: setup stops at its next step and rolls back
 * (done still runs, with ECANCELED). Harmless when idle. */
void ic_net_cancel(ic_net *net);
/* Frees the object; the resources stay until ic_net_reap_record(). */
void ic_net_free(ic_net *net);

struct ic_net_info {
    const char *mode;          /* "none" or "allow" */
    const char *backend;       /* "nft", "iptables"; "" before it is chosen */
    const char *chain;
    const char *netns;         /* nsfs file the VMM joins */
    const char *tap;           /* tap device inside netns */
    const char *mac;           /* the guest NIC's MAC */
    const char *host_if;       /* host end of the veth pair */
    char host_addr[16], ns_addr[16], gateway[16], guest_addr[16];
    int guest_prefix;          /* 31 */
    /* The guest agent's kernel command-line word ("ironclaw.net=A/31,GW"). */
    char cmdline[64];
};
/* Valid once setup succeeded (addresses are "" before). */
void ic_net_info(const ic_net *net, struct ic_net_info *info);

/* Removes what a VM record lists of the network (links, forwarding,
 * firewall chain, namespace, pool block), in that order. Idempotent;
 * keeps going past failures and reports the first. Blocking. */
int ic_net_reap_record(struct ic_state *st, ic_err *err);
/* Reads back a live VM's network from its record: the namespace, the
 * link, and (through the recorded backend) the jumps and the drop. */
int ic_net_verify_record(const struct ic_state *st, char *chain_out, char *backend_out, ic_err *err);

#endif
