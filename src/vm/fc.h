/*
 * fc.h - the pieces of the Firecracker driver (private to src/vm/).
 *
 *   firecracker.c  the driver: start sequence, stop, release
 *   fc_api.c       HTTP/1.1 over Firecracker's API socket with libcurl, and
 *                  the JSON bodies of the requests (blocking: thread pool only)
 *   fc_vsock.c     the host end of Firecracker's hybrid vsock (event loop)
 *   fc_jailer.c    the jailer's command line, the chroot's contents, the
 *                  real Firecracker pid behind the jailer
 *   fc_filter.c    custom seccomp filters in seccompiler's JSON format, and
 *                  matching seccompiler-bin's version to Firecracker's
 *   fc_run.c       running a helper program with its output captured
 *
 * Facts taken from Firecracker's documentation (swagger firecracker.yaml,
 * docs/vsock.md, docs/jailer.md, docs/seccompiler.md), never from its code.
 */
#ifndef IRONCLAW_VM_FC_H
#define IRONCLAW_VM_FC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "ironclaw/err.h"
#include "ironclaw/host.h"
#include "ironclaw/paths.h"

/* The guest agent listens on this vsock port; the guest's CID. */
#define IC_FC_VSOCK_PORT 1024u
#define IC_FC_GUEST_CID 3u
/* One API request, and the wait for the API socket to appear. */
#define IC_FC_API_TIMEOUT_MS 5000L
#define IC_FC_SOCKET_WAIT_MS 5000u
/* Largest answer body kept from the API (fault messages are short). */
#define IC_FC_API_BODY_MAX ((size_t)64 * 1024)

/* ---- fc_api.c ------------------------------------------------------------ */

/* vcpu_count 1 or an even number up to 32 (the rule Firecracker documents),
 * mem_size_mib at least 128 is not required: 64..65536 as ironclaw allows. */
int ic_fc_check_machine(unsigned vcpus, unsigned mem_mib, ic_err *err);

/* Request bodies (malloc'd JSON text; NULL when out of memory). */
char *ic_fc_body_logger(const char *log_path);
char *ic_fc_body_metrics(const char *metrics_path);
char *ic_fc_body_machine(unsigned vcpus, unsigned mem_mib);
char *ic_fc_body_boot_source(const char *kernel, const char *initrd, const char *boot_args);
char *ic_fc_body_drive(const char *drive_id, const char *path, bool read_only);
char *ic_fc_body_vsock(unsigned guest_cid, const char *uds_path);
char *ic_fc_body_net(const char *iface_id, const char *tap, const char *guest_mac);
char *ic_fc_body_action(const char *action_type);

/* Drive and interface ids go into a URL path: [A-Za-z0-9_-], 1..64. */
bool ic_fc_id_ok(const char *id);

/* One PUT with `body` to `path` ("/boot-source") over the Unix socket
 * `sock`. Blocking: thread pool only. 0 on 2xx. A 4xx/5xx answer gives a
 * sentence quoting Firecracker's fault_message verbatim; a malformed or
 * missing answer says so. */
int ic_fc_api_put(const char *sock, const char *path, const char *body, long timeout_ms,
                  ic_err *err);

/* The sentence for an error answer (exposed for tests): "Firecracker
 * refused PUT /x (HTTP 400): <fault_message>". Non-printable bytes of the
 * message are shown as \xNN; a body without fault_message is quoted. */
int ic_fc_api_describe_error(const char *method, const char *path, long status,
                             const char *body, size_t len, ic_err *err);

/* ---- fc_vsock.c ---------------------------------------------------------- */

typedef struct ic_fc_vsock ic_fc_vsock;

/* Success: a connected, malloc'd uv_pipe_t positioned right after the
 * "OK <port>\n" line (nothing the guest sent is lost); err NULL. Failure:
 * channel NULL and err set (ETIMEDOUT when the guest never accepted). The
 * connector frees itself after the callback. */
typedef void (*ic_fc_vsock_fn)(uv_stream_t *channel, const ic_err *err, void *ud);

struct ic_fc_vsock_opts {
    const char *uds_path;     /* Firecracker's vsock uds_path on the host */
    uint32_t port;            /* guest port for CONNECT */
    uint32_t deadline_ms;     /* give up after this long */
    uint32_t handshake_ms;    /* per attempt: OK line within this long */
};

int ic_fc_vsock_connect(uv_loop_t *loop, const struct ic_fc_vsock_opts *o, ic_fc_vsock_fn cb,
                        void *ud, ic_fc_vsock **out, ic_err *err);
/* Stops without calling back; frees itself once its handles are closed. */
void ic_fc_vsock_cancel(ic_fc_vsock *c);

/* Parses the answer to CONNECT in buf[0..n): 0 with *line_len (bytes of
 * the line including '\n') and *hostport for "OK <digits>\n"; -EAGAIN when
 * more bytes are needed; -EPROTO (err set) for anything else. */
int ic_fc_vsock_parse_ok(const char *buf, size_t n, size_t *line_len, uint32_t *hostport,
                         ic_err *err);

/* ---- fc_jailer.c --------------------------------------------------------- */

struct ic_fc_jail {
    char base[IC_PATH_MAX];      /* --chroot-base-dir: <runtime>/jail */
    char dir[IC_PATH_MAX];       /* <base>/<exec name>/<id>: removed whole on destroy */
    char root[IC_PATH_MAX];      /* <dir>/root: "/" for the jailed Firecracker */
    char exec_name[256];         /* last component of the Firecracker binary */
    char cgroup[IC_PATH_MAX];    /* the v2 cgroup the jailer may create, "" if none */
    uid_t uid;
    gid_t gid;
};

/* Fills j for VM `id` whose directory is vm_dir (<runtime>/vms/<id>). The
 * jail's uid/gid are $IRONCLAW_JAILER_UID/GID, else a per-VM unprivileged
 * pair derived from the id (see docs/firecracker.md). */
int ic_fc_jail_plan(const char *vm_dir, const char *id, const char *firecracker,
                    const struct ic_host *h, struct ic_fc_jail *j, ic_err *err);

/* The jailer's argv (malloc'd vector and strings; free with
 * ic_fc_argv_free): jailer --id --exec-file --uid --gid --chroot-base-dir
 * [--cgroup-version 2] [--netns P] --new-pid-ns -- fc_args... */
int ic_fc_jail_argv(const struct ic_fc_jail *j, const char *jailer, const char *firecracker,
                    const char *id, bool cgroup_v2, const char *netns, char *const fc_args[],
                    char ***argv, ic_err *err);
void ic_fc_argv_free(char **argv);

/* Blocking (thread pool). Creates <root> and puts `src` there as `name`:
 * a hard link when possible and the jail user may read it, else a copy.
 * `writable`: always a private copy owned by the jail user. */
int ic_fc_jail_install(const struct ic_fc_jail *j, const char *src, const char *name,
                       bool writable, ic_err *err);
/* Creates an empty file `name` in the root, owned by the jail user. */
int ic_fc_jail_touch(const struct ic_fc_jail *j, const char *name, ic_err *err);

/* Blocking (thread pool). The pid the jailer wrote to <root>/<exec>.pid,
 * checked to be a process running the exec file (by its name) whose parent
 * (or grandparent, while the jailer still runs) is `supervisor`. */
int ic_fc_jail_read_pid(const struct ic_fc_jail *j, pid_t supervisor, pid_t *pid, ic_err *err);


/* ---- fc_filter.c --------------------------------------------------------- */

/* Checks a filter in seccompiler's JSON format: an object mapping the
 * thread categories vmm, api and vcpu to {default_action, filter_action,
 * filter: [{syscall, comment?, args?: [{index|arg_index, type|arg_type,
 * op, val, comment?}]}]}. Unknown keys, bad actions and wrong types are
 * errors naming where they are. */
int ic_fc_filter_validate(const char *text, size_t len, ic_err *err);
/* Same for a file (at most 4 MiB). Blocking. */
int ic_fc_filter_validate_file(const char *path, ic_err *err);

/* The first version number ("1.7.0", "1.10.1-rc1") in a --version output. */
int ic_fc_version_parse(const char *out, char *ver, size_t size);
/* 0 when both outputs name the same version; -EINVAL naming both if not. */
int ic_fc_versions_match(const char *fc_out, const char *seccompiler_out, ic_err *err);

/* ---- fc_run.c ------------------------------------------------------------ */

typedef struct ic_fc_runner ic_fc_runner;

/* The program ended (status/sig) with stdout+stderr in out[0..len) (NUL
 * terminated, at most 16 KiB kept), or could not be run / timed out (err). */
typedef void (*ic_fc_run_fn)(int64_t status, int sig, const char *out, size_t len,
                             const ic_err *err, void *ud);

/* Runs argv (argv[0] an absolute path) with stdin /dev/null; kills it
 * after timeout_ms. */
int ic_fc_run(uv_loop_t *loop, char *const argv[], uint32_t timeout_ms, ic_fc_run_fn cb,
              void *ud, ic_fc_runner **out, ic_err *err);
/* Kills the program if still running; no callback afterwards. */
void ic_fc_run_cancel(ic_fc_runner *r);

#endif
