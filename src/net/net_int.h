/*
 * net_int.h - what the files of src/net share and nobody else sees:
 * running programs (blocking: for the thread pool and the CLI),
 * libnftables, netlink and namespace helpers,
 * the host-wide registry, and the test-only fault injection.
 */
#ifndef IRONCLAW_NET_INT_H
#define IRONCLAW_NET_INT_H

#include "ironclaw/net.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- programs (run.c) --------------------------------------------------- */

/* Finds a program in $PATH and the sbin directories; 0 or -ENOENT. */
int ic_net__find_program(const char *name, char *out, size_t size);

/* Runs argv (argv[0] absolute) with `input` on stdin; *out and *errout
 * (may be NULL) get its stdout and stderr; *status its exit status (or
 * 128+signal). Kills it after timeout_ms. Blocking. */
int ic_net__run_blocking(char *const argv[], const char *input, uint32_t timeout_ms, char **out,
                         char **errout, int *status, ic_err *err);

/* One line of a tool's error output for a message (first non-empty line). */
void ic_net__first_line(const char *text, char *out, size_t size);

/* ---- libnftables (fw.c) ------------------------------------------------------ */

/* Runs an nft script in one transaction; *out (may be NULL) gets the
 * output (JSON when json). libnftables keeps process-wide state that is
 * not thread-safe, so calls are serialised. Blocking. */
int ic_net__nft_run(const char *script, bool json, char **out, ic_err *err);

/* ---- test-only fault injection (fw.c) ----------------------------------------- */

/* The step named in IRONCLAW_TEST_FAIL_NET_STEP, or NULL. Read once per
 * VM network (ic_net_new) and handed down to the steps. */
const char *ic_net__fault_step(void);
/* True when `fault` (the value read above, may be NULL) names `step`. */
bool ic_net__fault(const char *fault, const char *step);
/* Fails `step` with a message saying it was injected. */
int ic_net__fault_err(const char *step, ic_err *err);

/* ---- links and namespaces (link.c) -------------------------------------------- */

/* Everything the links phase creates, and what it needs to know. */
struct ic_net_links {
    char vm_id[40];
    char fault[32];               /* test-only fault step, "" for none */
    char netns[4096];             /* nsfs bind mount */
    char veth[IC_NET_IFNAME_SIZE];
    struct ic_net_addrs addrs;
    const struct ic_net_allow *allow;
    size_t n_allow;
    /* Found: the uplinks the allow-list routes through. */
    size_t n_uplinks;
    char uplinks[IC_NET_GUARD_MAX][IC_NET_IFNAME_SIZE];
    bool uplink_off[IC_NET_GUARD_MAX];   /* forwarding off there (would be switched on) */
};

/* Steps "netns", "tap", "veth", "addresses" and "uplinks": the VM's
 * namespace (bind-mounted at l->netns), its tap, the veth pair, addresses,
 * routes and links up, and the uplinks found by route lookups. On failure
 * *step names the step that failed; what exists stays for the teardown. */
int ic_net__links_up(struct ic_net_links *l, const char **step, ic_err *err);
/* Removes the veth pair (the host end; the peer goes with it). Idempotent. */
int ic_net__veth_del(const char *veth, ic_err *err);
/* Unmounts and removes the namespace file (its tap and veth end go with
 * the namespace). Idempotent. */
int ic_net__netns_del(const char *path, ic_err *err);
/* True when an interface of that name exists in the host namespace. */
bool ic_net__link_exists(const char *ifname);
/* IPv4 forwarding of one host interface: read ("0"/"1" into val) or write. */
int ic_net__forwarding_get(const char *ifname, int *val, ic_err *err);
int ic_net__forwarding_set(const char *ifname, int val, ic_err *err);

/* ---- host-wide registry (hostreg.c) --------------------------------------------- */

/* Switches IPv4 forwarding on for the VM's veth and for each uplink,
 * recording the uplinks whose forwarding was off (ironclaw turned them on;
 * they are turned off again when their last VM is gone). Blocking. */
int ic_net__forwarding_acquire(const char *registry_dir, const char *vm_id, const char *veth,
                               const struct ic_net_links *l, ic_err *err);
/* Drops the VM from every uplink it used; restores forwarding where it
 * was the last user. Idempotent. Blocking. */
int ic_net__forwarding_release(const char *registry_dir, const char *vm_id, ic_err *err);
/* True when ironclaw switched forwarding on for that interface. */
bool ic_net__forwarding_ours(const char *registry_dir, const char *ifname);

#endif
