/*
 * sandbox.h - a running microVM with its guest agent: the orchestration
 * layer the CLI (and later the daemon and the agent loop) drive.
 *
 * A sandbox joins a VM (vm.h) and its channel (rpc.h): it starts the VM,
 * waits for the guest agent's HELLO within a deadline, runs commands
 * (ic_exec), copies files in and out, and shuts the VM down cleanly (guest
 * poweroff, then the VM's grace-then-kill, then teardown of every resource).
 * All of it on the caller's libuv loop, never blocking it.
 */
#ifndef IRONCLAW_SANDBOX_H
#define IRONCLAW_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ironclaw/err.h"
#include "ironclaw/vm.h"

typedef struct ic_sandbox ic_sandbox;
typedef struct ic_exec ic_exec;

/* Milliseconds since ic_sandbox_start, 0 when the step has not happened. */
struct ic_sandbox_timings {
    double vmm_started;      /* VMM process spawned */
    double channel_up;       /* VMM connected the channel */
    double guest_ready;      /* guest agent's HELLO arrived */
    double shutdown_begun;
    double destroyed;        /* every resource removed */
};

/* Start finished: err NULL means the guest agent is ready. */
typedef void (*ic_sandbox_ready_fn)(ic_sandbox *sb, const ic_err *err, void *ud);
/* The VM or its channel died while the sandbox was in use. */
typedef void (*ic_sandbox_lost_fn)(ic_sandbox *sb, const ic_err *err, void *ud);
/* Shutdown complete; the sandbox is freed. err: first cleanup failure. */
typedef void (*ic_sandbox_done_fn)(const struct ic_sandbox_timings *t, const ic_err *err, void *ud);

int ic_sandbox_start(uv_loop_t *loop, const struct ic_vm_config *cfg, uint32_t ready_timeout_ms,
                     ic_sandbox_ready_fn ready, ic_sandbox_lost_fn lost, void *ud,
                     ic_sandbox **out, ic_err *err);

const ic_vm *ic_sandbox_vm(const ic_sandbox *sb);
const struct ic_sandbox_timings *ic_sandbox_timings(const ic_sandbox *sb);

/* Back-pressure towards the guest: bytes queued on the channel, and a
 * callback when that queue drains. Writers stop above the high water. */
#define IC_SANDBOX_HIGH_WATER (1u << 20)
size_t ic_sandbox_queued(const ic_sandbox *sb);
void ic_sandbox_on_drain(ic_sandbox *sb, void (*fn)(ic_sandbox *sb, void *ud), void *ud);
/* Back-pressure from the host: stop/resume delivering guest output. */
void ic_sandbox_pause_output(ic_sandbox *sb, bool paused);

/* Clean shutdown: poweroff request, grace, kill, teardown, then done. */
void ic_sandbox_shutdown(ic_sandbox *sb, ic_sandbox_done_fn done, void *ud);
/* Immediate teardown without asking the guest (timeouts, errors). */
void ic_sandbox_kill(ic_sandbox *sb, ic_sandbox_done_fn done, void *ud);

/* ---- commands ------------------------------------------------------------ */

struct ic_exec_spec {
    const char *const *argv;      /* NULL-terminated, non-empty */
    const char *const *env;       /* "K=V" strings, NULL-terminated, or NULL */
    const char *cwd;              /* NULL: "/" */
    bool stdin_stream;            /* stdin sent with ic_exec_write_stdin */
    uint32_t timeout_ms;          /* 0: none; the guest kills the command */
};

struct ic_exec_status {
    int code;                     /* exit status */
    int signal;                   /* killing signal, 0 if it exited */
    bool timed_out;
    uint64_t duration_ms;         /* measured by the guest */
};

struct ic_exec_events {
    /* The command started (err NULL, pid in the guest) or could not. After
     * a failure no other event follows and the ic_exec is gone. */
    void (*started)(ic_exec *ex, int pid, const ic_err *err, void *ud);
    /* stdout (1) or stderr (2) bytes; n == 0 is that stream's end. */
    void (*output)(ic_exec *ex, int channel, const uint8_t *p, size_t n, void *ud);
    /* All output delivered and the command ended; the ic_exec is freed
     * after this returns. */
    void (*exited)(ic_exec *ex, const struct ic_exec_status *st, void *ud);
};

int ic_sandbox_exec(ic_sandbox *sb, const struct ic_exec_spec *spec,
                    const struct ic_exec_events *ev, void *ud, ic_exec **out, ic_err *err);
/* Queues stdin bytes (n == 0 ends stdin). Watch ic_sandbox_queued(). */
int ic_exec_write_stdin(ic_exec *ex, const void *p, size_t n, ic_err *err);
int ic_exec_signal(ic_exec *ex, int sig, ic_err *err);

/* ---- files ----------------------------------------------------------------- */

/* Done with a copy: err NULL on success, bytes copied. */
typedef void (*ic_sandbox_file_fn)(const ic_err *err, uint64_t bytes, void *ud);

/* Copies a local regular file to guest_path (parents created, mode kept). */
int ic_sandbox_put_file(ic_sandbox *sb, const char *local, const char *guest_path,
                        ic_sandbox_file_fn done, void *ud, ic_err *err);
/* Copies guest_path to a local file, written under a temporary name and
 * renamed into place only when complete. */
int ic_sandbox_get_file(ic_sandbox *sb, const char *guest_path, const char *local,
                        ic_sandbox_file_fn done, void *ud, ic_err *err);

#endif
