/*
 * hostreg.c - the network layer's host-wide bookkeeping, shared by every
 * ironclaw using one runtime directory: <runtime>/net/hosts.json, read and
 * written only under the flock of <runtime>/net/lock.
 *
 *   {"blocks": {"10.213.0.0": "<vm id>", ...},
 *    "forwarding": {"eth0": ["<vm id>", ...], ...}}
 *
 * "blocks" are the pool's /30s in use. "forwarding" lists the interfaces
 * whose IPv4 forwarding was off until ironclaw switched it on, with the VMs
 * that need it; the last one to go switches it off again. Entries whose VM
 * directory no longer exists are stale (the reaper removes a directory only
 * after everything else of the VM is gone) and are dropped. Blocking.
 */
#include "net/net_int.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/fsutil.h"
#include "ironclaw/id.h"
#include "ironclaw/log.h"
#include "ironclaw/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

struct reg {
    char runtime[IC_PATH_MAX];
    char path[IC_PATH_MAX];
    int lock_fd;
    json_t *root;
};

static int reg_open(struct reg *g, const char *runtime, ic_err *err)
{
    char dir[IC_PATH_MAX], lock[IC_PATH_MAX];
    g->lock_fd = -1;
    g->root = NULL;
    int r = ic_path_join(g->runtime, sizeof(g->runtime), err, "%s", runtime);
    if (r < 0 || (r = ic_path_join(dir, sizeof(dir), err, "%s/net", runtime)) < 0 ||
        (r = ic_path_join(g->path, sizeof(g->path), err, "%s/hosts.json", dir)) < 0 ||
        (r = ic_path_join(lock, sizeof(lock), err, "%s/lock", dir)) < 0)
        return r;
    if ((r = ic_mkdir_p(dir, 0700, err)) < 0)
        return r;
    g->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (g->lock_fd < 0)
        return ic_err_sys(err, errno, "cannot open %s", lock);
    while (flock(g->lock_fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return ic_err_sys(err, errno, "cannot lock %s", lock);
    json_error_t jerr;
    g->root = json_load_file(g->path, 0, &jerr);
    if (!g->root && access(g->path, F_OK) == 0)
        return ic_err_set(err, EINVAL, "unreadable %s: %s", g->path, jerr.text);
    if (!g->root)
        g->root = json_object();
    if (!json_is_object(g->root))
        return ic_err_set(err, EINVAL, "%s has the wrong shape", g->path);
    const char *keys[] = {"blocks", "forwarding"};
    for (int i = 0; i < 2; i++)
        if (!json_is_object(json_object_get(g->root, keys[i])))
            json_object_set_new(g->root, keys[i], json_object());
    return 0;
}

static int reg_save(struct reg *g, ic_err *err)
{
    _cleanup_free_ char *text = json_dumps(g->root, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return ic_err_set(err, ENOMEM, "cannot serialise %s", g->path);
    return ic_file_write_atomic(g->path, text, strlen(text), 0600, err);
}

static void reg_close(struct reg *g)
{
    json_decref(g->root);
    if (g->lock_fd >= 0)
        close(g->lock_fd); /* releases the flock */
}

/* Does the VM still have a directory (and so, possibly, resources)? */
static bool vm_exists(const struct reg *g, const char *id)
{
    char dir[IC_PATH_MAX];
    if (!ic_id_valid(id) || ic_path_join(dir, sizeof(dir), NULL, "%s/vms/%s", g->runtime, id) < 0)
        return false;
    struct stat sb;
    return stat(dir, &sb) == 0;
}

static void prune_blocks(struct reg *g)
{
    json_t *blocks = json_object_get(g->root, "blocks");
    const char *key;
    json_t *v, *tmp;
    json_object_foreach_safe(blocks, tmp, key, v) {
        if (!json_is_string(v) || !vm_exists(g, json_string_value(v)))
            json_object_del(blocks, key);
    }
}

/* ---- the pool ------------------------------------------------------------- */

int ic_net_pool_alloc(const char *runtime_dir, const struct ic_net_pool *pool, const char *vm_id,
                      struct ic_net_addrs *out, ic_err *err)
{
    struct reg g;
    int r = reg_open(&g, runtime_dir, err);
    if (r < 0) {
        reg_close(&g);
        return r;
    }
    prune_blocks(&g);
    json_t *blocks = json_object_get(g.root, "blocks");
    uint32_t n = ic_net_pool_blocks(pool);
    r = -ENOSPC;
    for (uint32_t i = 0; i < n; i++) {
        struct ic_net_addrs a;
        char key[16];
        ic_net_pool_addrs(pool, i, &a);
        ic_net_ip_format(a.block, key);
        if (json_object_get(blocks, key))
            continue;
        json_object_set_new(blocks, key, json_string(vm_id));
        r = reg_save(&g, err);
        if (r == 0)
            *out = a;
        break;
    }
    if (r == -ENOSPC) {
        char base[16];
        ic_net_ip_format(pool->base, base);
        ic_err_set(err, ENOSPC, "the address pool %s/%u is full (%u VMs); set %s to a larger one",
                   base, pool->prefix, n, IC_NET_POOL_ENV);
    }
    reg_close(&g);
    return r;
}

int ic_net_pool_release(const char *runtime_dir, const char *vm_id, ic_err *err)
{
    struct reg g;
    int r = reg_open(&g, runtime_dir, err);
    if (r == 0) {
        json_t *blocks = json_object_get(g.root, "blocks");
        const char *key;
        json_t *v, *tmp;
        bool changed = false;
        json_object_foreach_safe(blocks, tmp, key, v) {
            if (json_is_string(v) && strcmp(json_string_value(v), vm_id) == 0) {
                json_object_del(blocks, key);
                changed = true;
            }
        }
        if (changed)
            r = reg_save(&g, err);
    }
    reg_close(&g);
    return r;
}

/* ---- forwarding -------------------------------------------------------------- */

static bool users_has(json_t *users, const char *id)
{
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
        if (json_is_string(u) && strcmp(json_string_value(u), id) == 0)
            return true;
    return false;
}

bool ic_net__forwarding_ours(const char *runtime_dir, const char *ifname)
{
    struct reg g;
    bool ours = false;
    if (reg_open(&g, runtime_dir, NULL) == 0)
        ours = json_object_get(json_object_get(g.root, "forwarding"), ifname) != NULL;
    reg_close(&g);
    return ours;
}

static int acquire_uplink(struct reg *g, const char *vm_id, const char *ifname, bool guarded,
                          ic_err *err)
{
    json_t *fwd = json_object_get(g->root, "forwarding");
    json_t *users = json_object_get(fwd, ifname);
    if (users) {
        if (!users_has(users, vm_id))
            json_array_append_new(users, json_string(vm_id));
        return reg_save(g, err);
    }
    int val = 0;
    int r = ic_net__forwarding_get(ifname, &val, err);
    if (r < 0 || val)
        return r; /* on already, by someone else: not ours to touch */
    if (!guarded)
        return ic_err_set(err, EAGAIN, "IPv4 forwarding on %s was switched off meanwhile; "
                          "its guard rule is missing, so the VM does not start", ifname);
    /* Recorded first: whatever happens next, release switches it off. */
    users = json_array();
    json_array_append_new(users, json_string(vm_id));
    json_object_set_new(fwd, ifname, users);
    if ((r = reg_save(g, err)) < 0)
        return r;
    ic_log_info("network: switching on IPv4 forwarding on %s (it was off; ironclaw switches "
                "it off again after its last VM)", ifname);
    return ic_net__forwarding_set(ifname, 1, err);
}

int ic_net__forwarding_acquire(const char *runtime_dir, const char *vm_id, const char *veth,
                               const struct ic_net_links *l, ic_err *err)
{
    struct reg g;
    int r = reg_open(&g, runtime_dir, err);
    for (size_t i = 0; r == 0 && i < l->n_uplinks; i++)
        r = acquire_uplink(&g, vm_id, l->uplinks[i], l->uplink_off[i], err);
    reg_close(&g);
    /* The VM's own veth: interface-local, gone with the interface. */
    if (r == 0)
        r = ic_net__forwarding_set(veth, 1, err);
    return r;
}

int ic_net__forwarding_release(const char *runtime_dir, const char *vm_id, ic_err *err)
{
    struct reg g;
    int r = reg_open(&g, runtime_dir, err), first = r;
    if (r < 0) {
        reg_close(&g);
        return r;
    }
    json_t *fwd = json_object_get(g.root, "forwarding");
    const char *ifname;
    json_t *users, *tmp;
    bool changed = false;
    json_object_foreach_safe(fwd, tmp, ifname, users) {
        for (size_t i = json_array_size(users); i-- > 0;) {
            const char *u = json_string_value(json_array_get(users, i));
            if (!u || strcmp(u, vm_id) == 0 || !vm_exists(&g, u)) {
                json_array_remove(users, i);
                changed = true;
            }
        }
        if (json_array_size(users) > 0)
            continue;
        ic_err e = {0};
        r = ic_net__forwarding_set(ifname, 0, &e);
        if (r < 0 && r != -ENOENT) {
            if (first == 0 && err)
                *err = e;
            first = first ? first : r;
            continue; /* kept: the next release tries again */
        }
        ic_log_info("network: switched IPv4 forwarding on %s off again", ifname);
        json_object_del(fwd, ifname);
        changed = true;
    }
    if (changed) {
        ic_err e = {0};
        r = reg_save(&g, &e);
        if (r < 0 && first == 0) {
            first = r;
            if (err)
                *err = e;
        }
    }
    reg_close(&g);
    return first;
}
