/*
 * guest.h - the internal interfaces of ironclaw-guest, the agent that runs
 * as PID 1 inside every microVM (docs/guest.md).
 *
 * Modules:
 *   main.c       command line, mode selection
 *   pid1.c       what init must do: mounts, modules, reaping, poweroff
 *   transport.c  opening the channel: virtio-serial, vsock, Unix socket
 *   agent.c      one connection: handshake, poll() loop, dispatch, output
 *   proc.c       exec: spawning, stdin/stdout/stderr, exit, timeouts
 *   confine.c    rlimits and the seccomp filter of every process started
 *   files.c      file.put, file.get, file.list
 *   net.c        the guest side of an opt-in network (address, route)
 *   glog.c       log lines "ironclaw-guest: ..." on stderr (the console)
 *
 * Everything is single-threaded and non-blocking around one poll() loop.
 * State lives in an ic_agent (process-wide: signalfd, the tools' filter) and
 * an ic_conn (per host connection: decoder, write queue, its processes
 * and file streams).
 */
#ifndef IRONCLAW_GUEST_H
#define IRONCLAW_GUEST_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "ironclaw/buf.h"
#include "ironclaw/err.h"
#include "ironclaw/log.h"
#include "ironclaw/proto.h"

#define IC_GUEST_NAME "ironclaw-guest"
#define IC_GUEST_AGENT IC_GUEST_NAME " " IC_VERSION

/* Process output and file.get bytes are read only while the write queue
 * holds less than this (docs/protocol.md, 5). */
#define IC_GUEST_OUT_HIGH (1u << 20)
/* The channel itself is not read while the write queue is above this: a
 * host that never reads cannot make the guest buffer without bound. */
#define IC_GUEST_OUT_MAX (8u << 20)
/* Per-process stdin bytes held beyond what the pipe took; at this much,
 * frames wait in the decoder and the channel is not read. */
#define IC_GUEST_STDIN_MAX IC_DATA_CHUNK
/* argv and env entries per exec. */
#define IC_GUEST_LIST_MAX 4096
/* Paths must be shorter than this (4095 bytes plus the NUL). */
#define IC_GUEST_PATH_MAX 4096
/* How big a command's stdin and stdout pipes are. */
#define IC_GUEST_PIPE_SIZE (1024 * 1024)
/* How much the connection reads per read() call, and per loop turn. */
#define IC_GUEST_READ_CHUNK (256u * 1024u)
#define IC_GUEST_READ_TURN ((size_t)256 * 1024)

/* ---- glog.c ------------------------------------------------------------ */

/* One line "ironclaw-guest: <level>: ..." on fd 2, filtered by the shared
 * log level (ic_log_set_level). */
void ic_glog(enum ic_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define glog_error(...) ic_glog(IC_LOG_ERROR, __VA_ARGS__)
#define glog_warn(...) ic_glog(IC_LOG_WARN, __VA_ARGS__)
#define glog_info(...) ic_glog(IC_LOG_INFO, __VA_ARGS__)
#define glog_debug(...) ic_glog(IC_LOG_DEBUG, __VA_ARGS__)

/* CLOCK_MONOTONIC and CLOCK_BOOTTIME in milliseconds. */
uint64_t ic_now_ms(void);
uint64_t ic_uptime_ms(void);

/* ---- agent.c: process-wide state and one connection -------------------- */

/* ---- confine.c --------------------------------------------------------- */

/* The seccomp filter of the processes the agent starts, as BPF. */
struct sock_filter;
struct ic_guest_filter {
    struct sock_filter *insns;   /* NULL: building it failed; commands are refused */
    unsigned short len;
};
/* Resource limits of those processes (never above the agent's own). */
#define IC_GUEST_TOOL_NOFILE 65536
#define IC_GUEST_TOOL_NPROC 4096

int ic_guest_filter_build(struct ic_guest_filter *f, ic_err *err);
void ic_guest_filter_free(struct ic_guest_filter *f);
/* In the child between fork and exec: rlimits, no_new_privs, the filter.
 * 0 or a negative errno. */
int ic_guest_confine_child(const struct ic_guest_filter *f);

typedef struct ic_agent {
    bool vm;              /* PID 1 in a VM: poweroff really powers off */
    int sigfd;            /* signalfd for SIGCHLD (blocked otherwise) */
    struct ic_guest_filter tools;   /* confines every process it starts */
} ic_agent;

/* Blocks SIGCHLD, ignores SIGPIPE, opens the signalfd. */
int ic_agent_init(ic_agent *a, bool vm, ic_err *err);
void ic_agent_free(ic_agent *a);

struct ic_proc;
struct ic_put;
struct ic_get;

typedef struct ic_conn {
    ic_agent *agent;
    int fd;                 /* the channel; read and written, non-blocking */
    ic_decoder *dec;
    ic_buf out;             /* write queue of whole frames */
    bool got_hello;         /* the host's HELLO arrived */
    bool await_host;        /* virtio-serial: EOF means "host not there yet" */
    uint64_t await_until;   /* ... until this time */
    bool eof;               /* the host closed the channel */
    bool poweroff;          /* poweroff answered: flush, then end */
    int error;              /* <0: the connection must end with this error */
    ic_err err;             /* its message */
    struct ic_proc *procs;
    struct ic_put *puts;
    struct ic_get *gets;
} ic_conn;

/* How a connection ended (ic_conn_serve returns these or a negative errno
 * for a protocol or transport error, with err filled). */
enum { IC_END_CLOSED = 0, IC_END_POWEROFF = 1 };

/* Serves one connection until the host closes it, asks for poweroff, or
 * breaks the protocol. await_host: see ic_conn.await_host. The fd is not
 * closed here. The connection's processes are killed on the way out. */
int ic_conn_serve(ic_agent *a, int fd, bool await_host, ic_err *err);

/* Reads the signalfd and reaps every child that has exited; statuses of
 * the connection's processes go to them (c may be NULL), others are
 * discarded: as init, the agent inherits every orphan. */
void ic_agent_reap(ic_agent *a, ic_conn *c);

/* Replies. Each takes ownership of the json_t it is given (NULL = {}).
 * Encoding failures mark the connection failed. */
void ic_conn_reply(ic_conn *c, uint32_t id, json_t *result);
void ic_conn_error(ic_conn *c, uint32_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void ic_conn_notify(ic_conn *c, const char *method, json_t *params);
void ic_conn_data(ic_conn *c, uint32_t stream, uint8_t channel, const void *data, size_t len);
/* One read() of up to IC_DATA_CHUNK bytes from fd straight into a DATA
 * frame at the tail of the write queue (queued only when n > 0); returns
 * what read() returned, errno intact. A queue that cannot grow fails the
 * connection and reads as EAGAIN. */
ssize_t ic_conn_data_read(ic_conn *c, uint32_t stream, uint8_t channel, int fd);
/* Marks the connection failed (first error wins). */
void ic_conn_fail(ic_conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* True when a stream id is taken by a running exec or an open file stream. */
bool ic_conn_id_busy(const ic_conn *c, uint32_t id);

/* Parameter helpers: 0, or -EINVAL after answering the request with an
 * EINVAL error naming the member. Absent optional members leave *out. */
int ic_param_string(ic_conn *c, uint32_t id, json_t *params, const char *key, bool required,
                    const char **out);
int ic_param_path(ic_conn *c, uint32_t id, json_t *params, const char *key, const char **out);
int ic_param_int(ic_conn *c, uint32_t id, json_t *params, const char *key, bool required,
                 long long min, long long max, long long *out);
int ic_param_bool(ic_conn *c, uint32_t id, json_t *params, const char *key, bool *out);

/* ---- poll set shared by the modules ------------------------------------ */

enum ic_poll_tag {
    IC_POLL_SIGNAL = 1,
    IC_POLL_CONN,
    IC_POLL_STDIN,
    IC_POLL_STDOUT,
    IC_POLL_STDERR,
};

typedef struct ic_pollset {
    struct pollfd *pfd;
    void **owner;
    uint8_t *tag;
    size_t n, cap;
} ic_pollset;

int ic_pollset_add(ic_pollset *ps, int fd, short events, void *owner, uint8_t tag);
void ic_pollset_free(ic_pollset *ps);

/* ---- proc.c: exec ------------------------------------------------------- */

void ic_proc_exec(ic_conn *c, uint32_t id, json_t *params);
void ic_proc_signal(ic_conn *c, uint32_t id, json_t *params);
/* DATA on channel 0 for `stream`. */
void ic_proc_stdin(ic_conn *c, uint32_t stream, const uint8_t *data, size_t len);
/* True while some process's stdin buffer is full: the channel waits. */
bool ic_proc_stdin_full(const ic_conn *c);
bool ic_proc_has(const ic_conn *c, uint32_t id);
/* Adds the processes' pipes; outputs only when out_ok (queue not full). */
int ic_proc_poll_add(ic_conn *c, ic_pollset *ps, bool out_ok);
void ic_proc_poll_event(ic_conn *c, void *owner, uint8_t tag, short revents);
/* Records an exit status; false when the pid is not one of c's processes. */
bool ic_proc_reaped(ic_conn *c, pid_t pid, int status);
/* Timeouts and output drains; returns ms until the next deadline (-1 none). */
int ic_proc_timers(ic_conn *c);
/* Sends `exit` for processes that are completely done, and frees them. */
void ic_proc_sweep(ic_conn *c);
/* Connection end: SIGKILL every process group, free everything. */
void ic_proc_close_all(ic_conn *c);

/* ---- files.c ------------------------------------------------------------ */

void ic_files_put(ic_conn *c, uint32_t id, json_t *params);
void ic_files_get(ic_conn *c, uint32_t id, json_t *params);
void ic_files_list(ic_conn *c, uint32_t id, json_t *params);
/* DATA on channel 3 for `stream` (an empty payload ends it). */
void ic_files_data(ic_conn *c, uint32_t stream, const uint8_t *data, size_t len);
bool ic_files_has(const ic_conn *c, uint32_t id);
/* Streams file.get bytes while the write queue is below IC_GUEST_OUT_HIGH;
 * true when some file.get still has bytes to send. */
bool ic_files_pump(ic_conn *c);
/* Connection end: unlink partial uploads, close everything. */
void ic_files_close_all(ic_conn *c);
/* mkdir -p of the directory part of path; 0 or -errno. */
int ic_files_mkparents(const char *path);

/* ---- pid1.c ------------------------------------------------------------- */

typedef struct ic_boot_cfg {
    char transport[32];     /* "virtio-serial" or "vsock" */
    unsigned vsock_port;
    bool debug;
    bool poweroff_reset;    /* ironclaw.poweroff=reset: end the VM with a reset (Firecracker
                             * exits on it; it has no power-off device) */
    char net[64];           /* ironclaw.net=ADDR/PREFIX,GATEWAY, "" for none */
} ic_boot_cfg;

/* Parses the ironclaw.* keys of a kernel command line. */
void ic_boot_cfg_parse(ic_boot_cfg *cfg, const char *cmdline);
/* Mounts, console, command line, hostname, loopback, kernel modules.
 * Failures are logged; init keeps going so that the host hears from it. */
void ic_pid1_setup(ic_boot_cfg *cfg);
/* Loads the modules listed in `order_file`; returns how many failed. */
int ic_pid1_load_modules(const char *order_file);
/* Kills everything, syncs, powers off (or resets, see ic_boot_cfg). Never
 * returns. */
void ic_pid1_poweroff(const ic_boot_cfg *cfg) __attribute__((noreturn));

/* ---- net.c ------------------------------------------------------------------ */

/* "10.213.0.3/31,10.213.0.2" into host-order address, prefix and gateway. */
int ic_guest_net_parse(const char *spec, uint32_t *addr, unsigned *prefix, uint32_t *gw);
/* Configures the VM's NIC from such a spec; failures are logged. */
void ic_guest_net_up(const char *spec);

/* ---- transport.c -------------------------------------------------------- */

/* Waits up to timeout_ms for the virtio-serial port named `name` and opens
 * it non-blocking. */
int ic_transport_virtio(const char *name, unsigned timeout_ms, int *fd, ic_err *err);
/* A listening AF_VSOCK socket on VMADDR_CID_ANY:port (retries while the
 * vsock transport module is not there yet). */
int ic_transport_vsock_listen(unsigned port, unsigned timeout_ms, int *fd, ic_err *err);
/* A listening Unix socket at path (a stale socket file is replaced). */
int ic_transport_unix_listen(const char *path, int *fd, ic_err *err);
/* Waits for one connection on a listening socket, reaping children while
 * it waits; the result is non-blocking and close-on-exec. */
int ic_transport_accept(ic_agent *a, int lfd, int *fd, ic_err *err);

#endif
