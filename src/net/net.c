/*
 * net.c - one VM's network as a state machine on the loop:
 *
 *   record -> [pool] links (pool, netns, tap, veth, addresses, uplinks,
 *   backend) -> firewall + verify (fw.c) -> record -> [pool] forwarding
 *   -> ready
 *
 * Each resource is written to the VM's state record on the loop thread
 * before the work that creates it is queued, so the thread pool never
 * touches the record. Any failure queues the teardown (the same one the
 * reaper runs) and then reports the failed step. Teardown order: the
 * veth (no path left from the VM), forwarding, the firewall chain, the
 * namespace, the pool block.
 */
#include "net/net_int.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"
#include "ironclaw/paths.h"
#include "ironclaw/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#define NSFS_MAGIC_NUMBER 0x6e736673
#define HOSTS_FILE "/net/hosts.json"

enum phase { PH_IDLE, PH_LINKS, PH_FIREWALL, PH_FORWARDING, PH_ROLLBACK, PH_READY, PH_FAILED };

/* Everything teardown needs, from the object or from a state record. */
struct teardown {
    char vm_id[40];
    char runtime[IC_PATH_MAX];      /* "" when no pool/forwarding was recorded */
    bool pool, forwarding;
    char veth[IC_NET_IFNAME_SIZE];
    char netns[IC_PATH_MAX];
    char chain[IC_NET_CHAIN_SIZE];
    enum ic_fw_backend backend;
};

struct ic_net {
    uv_loop_t *loop;
    ic_state *st;
    struct ic_net_spec spec;
    char id[40];
    char runtime[IC_PATH_MAX];
    char hosts[IC_PATH_MAX];
    char mac[IC_NET_MAC_SIZE];
    struct ic_net_pool pool;
    struct ic_net_links links;
    struct ic_fw_rules rules;
    enum ic_fw_backend backend;
    bool have_addrs, chain_recorded, fwd_recorded;
    bool cancelled;
    const char *fault;
    enum phase phase;
    uv_work_t work;
    const char *failed_step;
    ic_err err;             /* the setup failure */
    struct teardown td;
    ic_err td_err;
    ic_net_done_fn done;
    void *ud;
};

/* ---- teardown (shared with the reaper) --------------------------------------- */

static void keep_first(int r, const ic_err *e, int *first, ic_err *err)
{
    if (r < 0 && *first == 0) {
        *first = r;
        if (err)
            *err = *e;
    }
}

static int teardown_run(const struct teardown *t, ic_err *err)
{
    int first = 0;
    ic_err e = {0};
    if (t->veth[0])
        keep_first(ic_net__veth_del(t->veth, &e), &e, &first, err);
    if (t->forwarding && t->runtime[0])
        keep_first(ic_net__forwarding_release(t->runtime, t->vm_id, &e), &e, &first, err);
    if (t->chain[0])
        keep_first(ic_fw_remove_blocking(t->backend, t->chain, &e), &e, &first, err);
    if (t->netns[0])
        keep_first(ic_net__netns_del(t->netns, &e), &e, &first, err);
    if (t->pool && t->runtime[0])
        keep_first(ic_net_pool_release(t->runtime, t->vm_id, &e), &e, &first, err);
    return first;
}

/* ---- the object ------------------------------------------------------------------ */

int ic_net_new(uv_loop_t *loop, const struct ic_net_spec *spec, ic_state *st, ic_net **out,
               ic_err *err)
{
    if (spec->mode != IC_NET_ALLOW || spec->n_allow == 0)
        return ic_err_set(err, EINVAL, "a network needs an allow-list");
    _cleanup_free_ ic_net *n = calloc(1, sizeof(*n));
    if (!n)
        return ic_err_set(err, ENOMEM, "out of memory");
    n->loop = loop;
    n->st = st;
    n->spec = *spec;
    snprintf(n->id, sizeof(n->id), "%s", ic_state_id(st));
    int r = ic_net_pool_from_env(&n->pool, err);
    if (r < 0)
        return r;
    /* The VM directory is <runtime>/vms/<id>. */
    char dir[IC_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", ic_state_dir(st));
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(dir, '/');
    if (!slash || strcmp(slash, "/vms") != 0)
        return ic_err_set(err, EINVAL, "unexpected VM directory %s", ic_state_dir(st));
    *slash = '\0';
    if ((r = ic_path_join(n->runtime, sizeof(n->runtime), err, "%s", dir)) < 0 ||
        (r = ic_path_join(n->hosts, sizeof(n->hosts), err, "%s" HOSTS_FILE, dir)) < 0 ||
        (r = ic_path_join(n->links.netns, sizeof(n->links.netns), err, "%s/netns",
                          ic_state_dir(st))) < 0)
        return r;
    snprintf(n->links.vm_id, sizeof(n->links.vm_id), "%s", n->id);
    ic_net_veth_name(n->id, n->links.veth);
    ic_net_mac(n->id, n->mac);
    n->links.allow = n->spec.allow;
    n->links.n_allow = n->spec.n_allow;
    const char *fault = ic_net__fault_step();
    if (fault) {
        snprintf(n->links.fault, sizeof(n->links.fault), "%s", fault);
        n->fault = n->links.fault;
    }
    if (n->fault)
        ic_log_warn("network: TEST-ONLY fault injection: step '%s' will fail (%s)", n->fault,
                    IC_NET_FAULT_ENV);
    *out = TAKE_PTR(n);
    return 0;
}

bool ic_net_busy(const ic_net *n)
{
    return n && (n->phase == PH_LINKS || n->phase == PH_FIREWALL || n->phase == PH_FORWARDING ||
                 n->phase == PH_ROLLBACK);
}

void ic_net_cancel(ic_net *n)
{
    if (n)
        n->cancelled = true;
}

/* Between steps: a VM destroyed meanwhile needs no more of its network. */
static bool stop_if_cancelled(ic_net *n, const char *next_step);

void ic_net_free(ic_net *n)
{
    free(n);
}

/* ---- failure and rollback ---------------------------------------------------------- */

static void teardown_from_net(const ic_net *n, struct teardown *t)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->vm_id, sizeof(t->vm_id), "%s", n->id);
    snprintf(t->runtime, sizeof(t->runtime), "%s", n->runtime);
    t->pool = true;
    t->forwarding = n->fwd_recorded;
    snprintf(t->veth, sizeof(t->veth), "%s", n->links.veth);
    snprintf(t->netns, sizeof(t->netns), "%s", n->links.netns);
    if (n->chain_recorded) {
        snprintf(t->chain, sizeof(t->chain), "%s", n->rules.chain);
        t->backend = n->backend;
    }
}

static void rollback_work(uv_work_t *w)
{
    ic_net *n = w->data;
    teardown_run(&n->td, &n->td_err);
}

static void rollback_after(uv_work_t *w, int status)
{
    ic_net *n = w->data;
    if (n->td_err.code)
        ic_log_error("network: rolling back: %s (`ironclaw gc` retries)", n->td_err.msg);
    n->phase = PH_FAILED;
    ic_err err = n->err;
    n->done(n, &err, n->ud);
}

/* Records the failure of `step` and undoes everything. */
static void fail(ic_net *n, const ic_err *cause)
{
    n->err = *cause;
    ic_err_wrap(&n->err, "network");
    ic_log_debug("%s", n->err.msg);
    n->phase = PH_ROLLBACK;
    teardown_from_net(n, &n->td);
    n->work.data = n;
    if (uv_queue_work(n->loop, &n->work, rollback_work, rollback_after) < 0) {
        rollback_work(&n->work);
        rollback_after(&n->work, 0);
    }
}

static void fail_step(ic_net *n, const char *step, const ic_err *cause)
{
    ic_err e = *cause;
    /* Messages from the steps already start with their name when they
     * come from fault injection; everything else gets it here. */
    if (strncmp(e.msg, step, strlen(step)) != 0 || e.msg[strlen(step)] != ':')
        ic_err_wrap(&e, "%s", step);
    fail(n, &e);
}

/* ---- forwarding (last: the gate opens once the fence is verified) --------------------- */

static void forwarding_work(uv_work_t *w)
{
    ic_net *n = w->data;
    if (ic_net__fault(n->fault, "forwarding")) {
        ic_net__fault_err("forwarding", &n->err);
        n->failed_step = "forwarding";
        return;
    }
    if (ic_net__forwarding_acquire(n->runtime, n->id, n->links.veth, &n->links, &n->err) < 0)
        n->failed_step = "forwarding";
}

static bool stop_if_cancelled(ic_net *n, const char *next_step)
{
    if (!n->cancelled)
        return false;
    ic_err e = {0};
    ic_err_set(&e, ECANCELED, "%s: the VM was destroyed during its network set-up", next_step);
    fail(n, &e);
    return true;
}

static void forwarding_after(uv_work_t *w, int status)
{
    ic_net *n = w->data;
    if (n->failed_step) {
        ic_err e = n->err;
        fail_step(n, n->failed_step, &e);
        return;
    }
    n->phase = PH_READY;
    char guest[16];
    ic_net_ip_format(n->links.addrs.guest, guest);
    ic_log_info("vm %s: network ready: guest %s via %s, chain %s (%s)", n->id, guest,
                n->links.veth, n->rules.chain, ic_fw_backend_name(n->backend));
    n->done(n, NULL, n->ud);
}

static void on_firewall(const ic_err *err, void *ud)
{
    ic_net *n = ud;
    if (err) {
        ic_err e = *err;
        fail(n, &e);
        return;
    }
    if (stop_if_cancelled(n, "forwarding"))
        return;
    ic_err e = {0};
    if (ic_state_add(n->st, IC_RES_SYSCTL, "forwarding", n->hosts, &e) < 0) {
        fail_step(n, "forwarding", &e);
        return;
    }
    n->fwd_recorded = true;
    n->phase = PH_FORWARDING;
    n->work.data = n;
    int r = uv_queue_work(n->loop, &n->work, forwarding_work, forwarding_after);
    if (r < 0) {
        ic_err_set(&e, -r, "cannot queue work: %s", uv_strerror(r));
        fail_step(n, "forwarding", &e);
    }
}

/* ---- links ------------------------------------------------------------------------------ */

static void links_work(uv_work_t *w)
{
    ic_net *n = w->data;
    if (ic_net__fault(n->fault, "pool")) {
        ic_net__fault_err("pool", &n->err);
        n->failed_step = "pool";
        return;
    }
    if (ic_net_pool_alloc(n->runtime, &n->pool, n->id, &n->links.addrs, &n->err) < 0) {
        n->failed_step = "pool";
        return;
    }
    n->have_addrs = true;
    if (ic_net__links_up(&n->links, &n->failed_step, &n->err) < 0)
        return;
    /* An uplink needs its guard when its forwarding is off (the forwarding
     * step will switch it on) or was switched on by ironclaw for others. */
    for (size_t i = 0; i < n->links.n_uplinks; i++) {
        int val = 1;
        ic_err e = {0};
        if (ic_net__forwarding_get(n->links.uplinks[i], &val, &e) < 0)
            val = 0;
        n->links.uplink_off[i] = !val || ic_net__forwarding_ours(n->runtime, n->links.uplinks[i]);
    }
    if (ic_fw_resolve(n->spec.backend, &n->backend, &n->err) < 0)
        n->failed_step = "firewall";
}

static void record_addresses(ic_net *n)
{
    struct ic_net_info info;
    ic_net_info(n, &info);
    char text[40];
    snprintf(text, sizeof(text), "%s/31", info.guest_addr);
    ic_state_add(n->st, IC_RES_ADDRESS, "guest", text, NULL);
    snprintf(text, sizeof(text), "%s/31", info.host_addr);
    ic_state_add(n->st, IC_RES_ADDRESS, "host", text, NULL);
}

static void links_after(uv_work_t *w, int status)
{
    ic_net *n = w->data;
    if (n->failed_step) {
        ic_err e = n->err;
        fail_step(n, n->failed_step, &e);
        return;
    }
    if (stop_if_cancelled(n, "firewall"))
        return;
    record_addresses(n);
    ic_fw_rules_init(&n->rules, n->id, n->links.addrs.guest, n->spec.allow, n->spec.n_allow);
    for (size_t i = 0; i < n->links.n_uplinks; i++)
        if (n->links.uplink_off[i])
            snprintf(n->rules.guard[n->rules.n_guard++], IC_NET_IFNAME_SIZE, "%s",
                     n->links.uplinks[i]);
    ic_err e = {0};
    if (ic_state_add(n->st, IC_RES_CHAIN, ic_fw_backend_name(n->backend), n->rules.chain, &e) < 0) {
        fail_step(n, "firewall", &e);
        return;
    }
    n->chain_recorded = true;
    n->phase = PH_FIREWALL;
    if (ic_fw_add(n->loop, n->backend, &n->rules, n->fault, on_firewall, n, &e) < 0)
        fail(n, &e);
}

int ic_net_setup(ic_net *n, ic_net_done_fn done, void *ud, ic_err *err)
{
    if (n->phase != PH_IDLE)
        return ic_err_set(err, EALREADY, "the network was already set up");
    n->done = done;
    n->ud = ud;
    /* Into the record before they exist. */
    int r = ic_state_add(n->st, IC_RES_ADDRESS, "pool", n->hosts, err);
    if (r == 0)
        r = ic_state_add(n->st, IC_RES_NETNS, "vm", n->links.netns, err);
    if (r == 0)
        r = ic_state_add(n->st, IC_RES_LINK, "veth", n->links.veth, err);
    if (r == 0)
        r = ic_state_add(n->st, IC_RES_LINK, "tap", IC_NET_TAP_NAME, err);
    if (r < 0)
        return ic_err_wrap(err, "network: recording its resources");
    n->phase = PH_LINKS;
    n->work.data = n;
    r = uv_queue_work(n->loop, &n->work, links_work, links_after);
    if (r < 0) {
        n->phase = PH_FAILED;
        return ic_err_set(err, -r, "network: cannot queue work: %s", uv_strerror(r));
    }
    return 0;
}

void ic_net_info(const ic_net *n, struct ic_net_info *info)
{
    memset(info, 0, sizeof(*info));
    info->mode = "allow";
    info->backend = n->phase >= PH_FIREWALL && n->backend != IC_FW_AUTO ? ic_fw_backend_name(n->backend) : "";
    info->chain = n->rules.chain[0] ? n->rules.chain : "";
    info->netns = n->links.netns;
    info->tap = IC_NET_TAP_NAME;
    info->mac = n->mac;
    info->host_if = n->links.veth;
    info->guest_prefix = 31;
    if (!n->have_addrs)
        return;
    const struct ic_net_addrs *a = &n->links.addrs;
    ic_net_ip_format(a->host, info->host_addr);
    ic_net_ip_format(a->ns, info->ns_addr);
    ic_net_ip_format(a->gateway, info->gateway);
    ic_net_ip_format(a->guest, info->guest_addr);
    snprintf(info->cmdline, sizeof(info->cmdline), "ironclaw.net=%s/31,%s", info->guest_addr,
             info->gateway);
}

/* ---- from a state record -------------------------------------------------------------------- */

struct rec {
    struct teardown t;
    bool any;
    uint32_t guest;
};

static void runtime_from_hosts(const char *path, char *out, size_t size)
{
    size_t n = strlen(path), s = strlen(HOSTS_FILE);
    if (n > s && strcmp(path + n - s, HOSTS_FILE) == 0)
        snprintf(out, size, "%.*s", (int)(n - s), path);
}

static int parse_guest(const char *text, uint32_t *out)
{
    unsigned a, b, c, d;
    if (sscanf(text, "%u.%u.%u.%u", &a, &b, &c, &d) != 4 || a > 255 || b > 255 || c > 255 || d > 255)
        return -1;
    *out = a << 24 | b << 16 | c << 8 | d;
    return 0;
}

static int rec_visit(const char *kind, const char *role, const char *path, void *ud)
{
    struct rec *r = ud;
    struct teardown *t = &r->t;
    if (!path)
        return 0;
    if (strcmp(kind, IC_RES_LINK) == 0 && strcmp(role, "veth") == 0) {
        snprintf(t->veth, sizeof(t->veth), "%s", path);
    } else if (strcmp(kind, IC_RES_NETNS) == 0) {
        snprintf(t->netns, sizeof(t->netns), "%s", path);
    } else if (strcmp(kind, IC_RES_CHAIN) == 0) {
        snprintf(t->chain, sizeof(t->chain), "%s", path);
        ic_fw_backend_parse(role, &t->backend, NULL);
    } else if (strcmp(kind, IC_RES_ADDRESS) == 0 && strcmp(role, "pool") == 0) {
        t->pool = true;
        runtime_from_hosts(path, t->runtime, sizeof(t->runtime));
    } else if (strcmp(kind, IC_RES_ADDRESS) == 0 && strcmp(role, "guest") == 0) {
        parse_guest(path, &r->guest);
        return 0;
    } else if (strcmp(kind, IC_RES_SYSCTL) == 0 && strcmp(role, "forwarding") == 0) {
        t->forwarding = true;
        runtime_from_hosts(path, t->runtime, sizeof(t->runtime));
    } else {
        return 0;
    }
    r->any = true;
    return 0;
}

static void rec_load(const ic_state *st, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->t.vm_id, sizeof(r->t.vm_id), "%s", ic_state_id(st));
    ic_state_each_resource(st, NULL, rec_visit, r);
}

int ic_net_reap_record(ic_state *st, ic_err *err)
{
    struct rec r;
    rec_load(st, &r);
    if (!r.any)
        return 0;
    ic_log_debug("vm %s: removing its network (chain %s)", r.t.vm_id, r.t.chain[0] ? r.t.chain : "-");
    int rc = teardown_run(&r.t, err);
    return rc < 0 ? ic_err_wrap(err, "removing the network of VM %s", r.t.vm_id) : 0;
}

int ic_net_verify_record(const ic_state *st, char *chain_out, char *backend_out, ic_err *err)
{
    struct rec r;
    rec_load(st, &r);
    if (!r.t.chain[0])
        return ic_err_set(err, ENOENT, "VM %s has no firewall chain (it runs with --net none)",
                          r.t.vm_id);
    snprintf(chain_out, IC_NET_CHAIN_SIZE, "%s", r.t.chain);
    snprintf(backend_out, 16, "%s", ic_fw_backend_name(r.t.backend));
    struct statfs sfs;
    if (r.t.netns[0] && (statfs(r.t.netns, &sfs) < 0 || (unsigned long)sfs.f_type != NSFS_MAGIC_NUMBER))
        return ic_err_set(err, ENOENT, "the VM's network namespace %s is not mounted", r.t.netns);
    if (r.t.veth[0] && !ic_net__link_exists(r.t.veth))
        return ic_err_set(err, ENOENT, "the VM's link %s does not exist", r.t.veth);
    struct ic_fw_rules rules;
    memset(&rules, 0, sizeof(rules));
    snprintf(rules.chain, sizeof(rules.chain), "%s", r.t.chain);
    snprintf(rules.veth, sizeof(rules.veth), "%s", r.t.veth);
    rules.guest = r.guest;
    return ic_fw_verify_blocking(r.t.backend, &rules, err);
}
