/*
 * internal.h - what sandbox.c and files.c share (private to src/sandbox/).
 */
#ifndef IRONCLAW_SANDBOX_INTERNAL_H
#define IRONCLAW_SANDBOX_INTERNAL_H

#include "ironclaw/rpc.h"
#include "ironclaw/sandbox.h"

/* Who receives a request's DATA stream and notifications. */
struct ic_route_ops {
    void (*data)(void *obj, uint8_t channel, const uint8_t *p, size_t n);
    void (*notify)(void *obj, const ic_msg *m);
    /* The sandbox is going away; the owner frees obj. */
    void (*abort)(void *obj, const ic_err *err);
};

struct ic_route {
    struct ic_route *next;
    uint32_t stream;
    const struct ic_route_ops *ops;
    void *obj;
};

enum ic_sb_phase { IC_SB_STARTING, IC_SB_READY, IC_SB_LOST, IC_SB_STOPPING, IC_SB_GONE };

struct ic_file_op;

struct ic_sandbox {
    uv_loop_t *loop;
    uint64_t t0;
    enum ic_sb_phase phase;
    ic_vm *vm;
    ic_rpc *rpc;
    uv_timer_t ready_timer;
    uint32_t ready_timeout_ms;
    struct ic_sandbox_timings timings;
    struct ic_route *routes;
    struct ic_file_op *puts;          /* uploads waiting for the queue to drain */
    ic_sandbox_ready_fn ready;
    ic_sandbox_lost_fn lost;
    void *ud;
    void (*drain_fn)(ic_sandbox *sb, void *ud);
    void *drain_ud;
    ic_sandbox_done_fn done;
    void *done_ud;
};

int ic_sandbox__route_add(ic_sandbox *sb, uint32_t stream, const struct ic_route_ops *ops, void *obj);
void ic_sandbox__route_del(ic_sandbox *sb, uint32_t stream);
int ic_sandbox__ready_rpc(ic_sandbox *sb, ic_rpc **out, ic_err *err);

/* files.c */
void ic_sandbox__files_drained(ic_sandbox *sb);
void ic_sandbox__files_abort(ic_sandbox *sb, const ic_err *err);

#endif
