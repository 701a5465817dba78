/*
 * jail.c - the owner's part of a VMM's jail: choosing the VMM's per-VM uid
 * (from a configurable range, never one another VM record holds),
 * recording and creating its cgroups before the VMM starts, and removing
 * them again for the reaper (`ironclaw gc` included).
 */
#include "vm/jail.h"

#include "ironclaw/fsutil.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define UID_KEY "jail_uid"

struct uid_scan {
    uint32_t *used;
    size_t n, cap;
};

static int collect(ic_state *st, const char *dir, const ic_err *load_err, void *ud)
{
    struct uid_scan *s = ud;
    int64_t uid;
    if (!st || !ic_state_get_num(st, UID_KEY, &uid))
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint32_t *u = realloc(s->used, cap * sizeof(*u));
        if (!u)
            return -ENOMEM;
        s->used = u;
        s->cap = cap;
    }
    s->used[s->n++] = (uint32_t)uid;
    return 0;
}

int ic_jail_pick_uid(const char *runtime_dir, const char *id, uint32_t base, uint32_t count,
                     uint32_t *uid, ic_err *err)
{
    if (!count || base == 0 || (uint64_t)base + count > 0xfffffffeu)
        return ic_err_set(err, EINVAL, "bad jail uid range %u+%u", base, count);
    struct uid_scan s = {0};
    int r = ic_state_each(runtime_dir, collect, &s, err);
    if (r < 0) {
        free(s.used);
        return r;
    }
    /* Start where the id points, so that concurrent owners rarely meet. */
    char hex[9];
    memcpy(hex, id, 8);
    hex[8] = '\0';
    uint32_t start = (uint32_t)(strtoul(hex, NULL, 16) % count);
    for (uint32_t k = 0; k < count; k++) {
        uint32_t cand = base + (start + k) % count;
        bool taken = false;
        for (size_t i = 0; i < s.n && !taken; i++)
            taken = s.used[i] == cand;
        if (!taken) {
            free(s.used);
            *uid = cand;
            return 0;
        }
    }
    free(s.used);
    return ic_err_set(err, EAGAIN, "every uid of the jail range %u+%u is in use", base, count);
}

int ic_jail_cgroups(ic_state *st, const struct ic_cg_plan *plan, const struct ic_cg_limits *lim,
                    ic_err *err)
{
    for (size_t i = 0; i < plan->n; i++) {
        const struct ic_cg_dir *d = &plan->dir[i];
        int r = ic_state_add(st, IC_RES_CGROUP, d->controllers, d->path, err);
        if (r == 0)
            r = ic_cg_create(d, lim, err);
        if (r < 0) {
            for (size_t k = 0; k <= i; k++)
                ic_cg_remove(plan->dir[k].path, NULL);
            return r;
        }
    }
    return 0;
}

int ic_jail_reap(ic_state *st, ic_err *err)
{
    const char *paths[IC_CG_MAX_DIRS * 2];
    size_t n = ic_state_paths(st, IC_RES_CGROUP, paths, sizeof(paths) / sizeof(paths[0]));
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        ic_err local = {0};
        int r = ic_cg_remove(paths[i], &local);
        if (r < 0 && first == 0) {
            first = r;
            if (err)
                *err = local;
        }
    }
    return first;
}
