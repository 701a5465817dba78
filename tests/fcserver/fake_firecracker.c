/*
 * fake_firecracker.c - a test double of Firecracker, for the tests only.
 *
 * It is invoked the way Firecracker is (--api-sock P --id ID
 * [--seccomp-filter F], also through the fake jailer) and behaves as
 * Firecracker's documented API does, so that ironclaw's driver can be run
 * end to end on a host without KVM:
 *   - HTTP/1.1 on the API socket; strict JSON bodies (an unknown field or a
 *     missing required one is a 400 with a fault_message); pre-boot only
 *     resources refused after InstanceStart; InstanceStart only with a
 *     boot source, and only with an ELF kernel; files named in bodies must
 *     exist (and, in a jail, be usable by the jail user);
 *   - after InstanceStart, the hybrid vsock listener on uds_path: a
 *     "CONNECT <port>\n" (which must arrive in one piece) is answered
 *     "OK <hostport>\n" and spliced to the "guest", an ironclaw-guest in its
 *     --test-listen mode; while the guest does not listen yet, connections
 *     are closed, as Firecracker does; the process ends when the guest does.
 *
 * Knobs (environment):
 *   FAKE_FC_ARGV_FILE        write argv here, one argument per line
 *   FAKE_FC_REQUEST_LOG      append "METHOD PATH BODY" per API request
 *   FAKE_FC_VERSION          version to claim (default 1.7.0)
 *   FAKE_FC_GUEST            the ironclaw-guest binary (required to boot)
 *   FAKE_FC_GUEST_DELAY_MS   "boot time" before the guest listens (default 150)
 *   FAKE_FC_DIE_BEFORE_SOCKET=1   exit 1 before the API socket exists
 *   FAKE_FC_NO_SOCKET=1      never create the API socket
 *   FAKE_FC_NO_GUEST=1       boot, but no guest ever listens
 *   FAKE_FC_FAULT="PUT /path"  answer that request 400 with
 *   FAKE_FC_FAULT_MESSAGE    (default "fake fault")
 *   FAKE_FC_BAD_OK=1         answer CONNECT with garbage
 *   FAKE_FC_STAY_AFTER_GUEST=1  keep running when the guest ends, until
 *                            SendCtrlAltDel (a VM without a power-off device)
 * Set by the fake jailer: FAKE_FC_ROOT (absolute paths resolve under it),
 * FAKE_FC_JAIL_UID/GID (files must be usable by that user).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_API 16
#define MAX_VS 8
#define REQ_MAX ((size_t)64 * 1024)
#define SPLICE_BUF (64 * 1024)

struct api_conn {
    int fd;
    char *buf;
    size_t len;
};

struct half {
    char buf[SPLICE_BUF];
    size_t len, off;
    bool eof;
};

struct vs_conn {
    int host, guest;      /* guest < 0 until CONNECT was accepted */
    struct half to_guest, to_host;
    bool shut_guest, shut_host;
};

static struct {
    const char *api_path;
    const char *id;
    const char *root;     /* jail root, "" outside a jail */
    const char *version;
    long jail_uid, jail_gid;
    int api_fd, vs_fd, sig_fd;
    struct api_conn api[MAX_API];
    struct vs_conn vs[MAX_VS];
    bool logger, metrics, machine, boot, vsock, started;
    char kernel[4096], vs_uds[4000], guest_sock[4096];
    unsigned guest_port;
    pid_t guest;
    uint64_t guest_at_ms;    /* start the guest at this time, 0: not scheduled */
    unsigned connects;
    bool cad;             /* SendCtrlAltDel received */
} S;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void cleanup_and_exit(int code) __attribute__((noreturn));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fake-firecracker: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *env(const char *k, const char *def)
{
    const char *v = getenv(k);
    return v && *v ? v : def;
}

/* A path as Firecracker sees it, on the host: under the jail root. */
static void host_path(const char *p, char *out, size_t size)
{
    if (S.root[0] && p[0] == '/')
        snprintf(out, size, "%s%s", S.root, p);
    else
        snprintf(out, size, "%s", p);
}

/* Could the jail user open this file for reading (writing)? */
static bool jail_can(const struct stat *st, bool write)
{
    if (S.jail_uid < 0)
        return true;
    mode_t r = write ? S_IWUSR : S_IRUSR, g = write ? S_IWGRP : S_IRGRP, o = write ? S_IWOTH : S_IROTH;
    if ((long)st->st_uid == S.jail_uid)
        return st->st_mode & r;
    if ((long)st->st_gid == S.jail_gid)
        return st->st_mode & g;
    return st->st_mode & o;
}

/* "" when the file is usable, else Firecracker-like words on why not. */
static const char *file_problem(const char *p, bool write, char *buf, size_t size)
{
    char hp[4096];
    struct stat st;
    host_path(p, hp, sizeof(hp));
    if (stat(hp, &st) < 0) {
        snprintf(buf, size, "%s (os error %d)", strerror(errno), errno);
        return buf;
    }
    if (!jail_can(&st, write)) {
        snprintf(buf, size, "Permission denied (os error 13): the jail user %ld cannot %s it",
                 S.jail_uid, write ? "write" : "read");
        return buf;
    }
    return "";
}

/* ---- HTTP answers ------------------------------------------------------------ */

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, 1000);
            continue;
        }
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void answer(int fd, int status, const char *json)
{
    char head[256];
    int n;
    if (json)
        n = snprintf(head, sizeof(head), "HTTP/1.1 %d \r\nServer: Firecracker API\r\nConnection: "
                     "keep-alive\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     status, strlen(json));
    else
        n = snprintf(head, sizeof(head), "HTTP/1.1 %d \r\nServer: Firecracker API\r\nConnection: "
                     "keep-alive\r\n\r\n", status);
    send_all(fd, head, (size_t)n);
    if (json)
        send_all(fd, json, strlen(json));
}

static void fault(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fault(int fd, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "fault_message", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    answer(fd, 400, s);
    free(s);
    json_decref(o);
}

/* ---- strict bodies --------------------------------------------------------------- */

enum ftype { T_STR, T_INT, T_BOOL, T_OBJ };

struct field {
    const char *name;
    enum ftype type;
    bool required;
};

static bool type_ok(json_t *v, enum ftype t)
{
    switch (t) {
    case T_STR: return json_is_string(v);
    case T_INT: return json_is_integer(v) && json_integer_value(v) >= 0;
    case T_BOOL: return json_is_boolean(v);
    case T_OBJ: return json_is_object(v);
    }
    return false;
}

/* Parses body against the field list; answers 400 and returns NULL if bad. */
static json_t *strict(int fd, const char *body, size_t len, const struct field *fields)
{
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    if (!json_is_object(o)) {
        fault(fd, "An error occurred when deserializing the json body of a request: %s.",
              o ? "expected a JSON object" : je.text);
        json_decref(o);
        return NULL;
    }
    char expected[512] = "";
    for (const struct field *f = fields; f->name; f++) {
        size_t l = strlen(expected);
        snprintf(expected + l, sizeof(expected) - l, "%s`%s`", l ? ", " : "", f->name);
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        const struct field *f = fields;
        while (f->name && strcmp(f->name, k) != 0)
            f++;
        if (!f->name) {
            fault(fd, "An error occurred when deserializing the json body of a request: unknown "
                  "field `%s`, expected one of %s.", k, expected);
            json_decref(o);
            return NULL;
        }
        if (!type_ok(v, f->type)) {
            fault(fd, "An error occurred when deserializing the json body of a request: invalid "
                  "type for field `%s`.", k);
            json_decref(o);
            return NULL;
        }
    }
    for (const struct field *f = fields; f->name; f++) {
        if (f->required && !json_object_get(o, f->name)) {
            fault(fd, "An error occurred when deserializing the json body of a request: missing "
                  "field `%s`.", f->name);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* ---- endpoints ------------------------------------------------------------------- */

static const char AFTER_START[] = "The requested operation is not supported after starting the microVM.";

static void put_logger(int fd, json_t *o)
{
    char why[512];
    const char *p = str(o, "log_path");
    const char *lvl = str(o, "level");
    static const char *const levels[] = {"error", "warning", "info", "debug", "trace", "off"};
    bool ok = !lvl;
    for (size_t i = 0; lvl && i < 6; i++)
        ok |= strcasecmp(lvl, levels[i]) == 0;
    if (S.logger)
        fault(fd, "Logger error: Reinitialization of logger not allowed.");
    else if (!ok)
        fault(fd, "An error occurred when deserializing the json body of a request: unknown "
              "variant `%s`.", lvl);
    else if (p && *file_problem(p, true, why, sizeof(why)))
        fault(fd, "Logger error: Failed to open target file: %s", why);
    else {
        S.logger = true;
        answer(fd, 204, NULL);
    }
}

static void put_metrics(int fd, json_t *o)
{
    char why[512];
    if (S.metrics)
        fault(fd, "Metrics error: Reinitialization of metrics not allowed.");
    else if (*file_problem(str(o, "metrics_path"), true, why, sizeof(why)))
        fault(fd, "Metrics error: Failed to open target file: %s", why);
    else {
        S.metrics = true;
        answer(fd, 204, NULL);
    }
}

static void put_machine(int fd, json_t *o)
{
    json_int_t v = json_integer_value(json_object_get(o, "vcpu_count"));
    json_int_t m = json_integer_value(json_object_get(o, "mem_size_mib"));
    bool smt = json_is_true(json_object_get(o, "smt"));
    if (S.started)
        fault(fd, "%s", AFTER_START);
    else if (v < 1 || v > 32 || (smt && v > 1 && v % 2))
        fault(fd, "The vCPU number is invalid! The vCPU number can only be 1 or an even number "
              "when SMT is enabled.");
    else if (m < 1)
        fault(fd, "The memory size (MiB) is invalid.");
    else {
        S.machine = true;
        answer(fd, 204, NULL);
    }
}

static void put_boot(int fd, json_t *o)
{
    char why[512];
    const char *k = str(o, "kernel_image_path"), *i = str(o, "initrd_path");
    if (S.started)
        fault(fd, "%s", AFTER_START);
    else if (*file_problem(k, false, why, sizeof(why)))
        fault(fd, "The kernel file cannot be opened: %s", why);
    else if (i && *file_problem(i, false, why, sizeof(why)))
        fault(fd, "The initrd file cannot be opened due to invalid permissions or missing file: %s",
              why);
    else {
        S.boot = true;
        host_path(k, S.kernel, sizeof(S.kernel));
        const char *args = str(o, "boot_args") ?: "";
        const char *p = strstr(args, "ironclaw.vsock_port=");
        S.guest_port = p ? (unsigned)strtoul(p + 20, NULL, 10) : 1024;
        printf("[fake-firecracker] boot source %s, args: %s\n", k, args);
        fflush(stdout);
        answer(fd, 204, NULL);
    }
}

static void put_drive(int fd, const char *id, json_t *o)
{
    char why[512];
    const char *p = str(o, "path_on_host");
    bool ro = json_is_true(json_object_get(o, "is_read_only"));
    if (S.started)
        fault(fd, "%s", AFTER_START);
    else if (strcmp(id, str(o, "drive_id")) != 0)
        fault(fd, "The id from the path [%s] does not match the id from the body [%s]!", id,
              str(o, "drive_id"));
    else if (!p)
        fault(fd, "Unable to create the block device: path_on_host is required for virtio-block.");
    else if (*file_problem(p, !ro, why, sizeof(why)))
        fault(fd, "Unable to create the block device: %s", why);
    else
        answer(fd, 204, NULL);
}

static void put_vsock(int fd, json_t *o)
{
    if (S.started)
        fault(fd, "%s", AFTER_START);
    else if (json_integer_value(json_object_get(o, "guest_cid")) < 3)
        fault(fd, "Cannot create vsock device: the guest CID must be at least 3.");
    else {
        host_path(str(o, "uds_path"), S.vs_uds, sizeof(S.vs_uds));
        S.vsock = true;
        answer(fd, 204, NULL);
    }
}

static void put_net(int fd, const char *id, json_t *o)
{
    if (S.started)
        fault(fd, "%s", AFTER_START);
    else if (strcmp(id, str(o, "iface_id")) != 0)
        fault(fd, "The id from the path [%s] does not match the id from the body [%s]!", id,
              str(o, "iface_id"));
    else
        answer(fd, 204, NULL);
}

static bool is_elf(const char *path)
{
    unsigned char m[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, m, 4) == 4 && memcmp(m, "\177ELF", 4) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void instance_start(int fd)
{
    if (S.started) {
        fault(fd, "%s", AFTER_START);
        return;
    }
    if (!S.boot) {
        fault(fd, "Cannot start microvm without kernel configuration.");
        return;
    }
    if (!is_elf(S.kernel)) {
        fault(fd, "Start microvm error: Cannot load kernel due to invalid memory configuration or "
              "invalid kernel image: Kernel Loader: failed to load ELF kernel image");
        return;
    }
    if (S.vsock) {
        S.vs_fd = listen_unix(S.vs_uds);
        if (S.vs_fd < 0) {
            fault(fd, "Start microvm error: Cannot create vsock device: %s (os error %d)",
                  strerror(errno), errno);
            return;
        }
        snprintf(S.guest_sock, sizeof(S.guest_sock), "%s.guest", S.vs_uds);
    }
    S.started = true;
    printf("[fake-firecracker] InstanceStart: the guest boots (%s)\n", S.kernel);
    fflush(stdout);
    if (S.vsock && !getenv("FAKE_FC_NO_GUEST"))
        S.guest_at_ms = now_ms() + (uint64_t)strtoul(env("FAKE_FC_GUEST_DELAY_MS", "150"), NULL, 10);
    answer(fd, 204, NULL);
}

static void put_actions(int fd, json_t *o)
{
    const char *t = str(o, "action_type");
    if (strcmp(t, "InstanceStart") == 0) {
        instance_start(fd);
    } else if (strcmp(t, "SendCtrlAltDel") == 0) {
        if (!S.started) {
            fault(fd, "The requested operation is not supported before starting the microVM.");
            return;
        }
        S.cad = true;
        printf("[fake-firecracker] SendCtrlAltDel\n");
        fflush(stdout);
        answer(fd, 204, NULL);
        /* The guest kernel resets; Firecracker exits. */
        if (S.guest > 0)
            kill(S.guest, SIGTERM);
        else
            cleanup_and_exit(0);
    } else if (strcmp(t, "FlushMetrics") == 0) {
        answer(fd, 204, NULL);
    } else {
        fault(fd, "An error occurred when deserializing the json body of a request: unknown "
              "variant `%s`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`.", t);
    }
}

static void get_info(int fd, bool version_only)
{
    json_t *o = version_only
                    ? json_pack("{s:s}", "firecracker_version", S.version)
                    : json_pack("{s:s,s:s,s:s,s:s}", "app_name", "Firecracker", "id", S.id, "state",
                                S.started ? "Running" : "Not started", "vmm_version", S.version);
    char *s = json_dumps(o, JSON_COMPACT);
    answer(fd, 200, s);
    free(s);
    json_decref(o);
}

static const struct field F_LOGGER[] = {{"log_path", T_STR, false}, {"level", T_STR, false},
    {"show_level", T_BOOL, false}, {"show_log_origin", T_BOOL, false}, {"module", T_STR, false}, {0}};
static const struct field F_METRICS[] = {{"metrics_path", T_STR, true}, {0}};
static const struct field F_MACHINE[] = {{"vcpu_count", T_INT, true}, {"mem_size_mib", T_INT, true},
    {"smt", T_BOOL, false}, {"track_dirty_pages", T_BOOL, false}, {"cpu_template", T_STR, false},
    {"huge_pages", T_STR, false}, {0}};
static const struct field F_BOOT[] = {{"kernel_image_path", T_STR, true}, {"boot_args", T_STR, false},
    {"initrd_path", T_STR, false}, {0}};
static const struct field F_DRIVE[] = {{"drive_id", T_STR, true}, {"is_root_device", T_BOOL, true},
    {"path_on_host", T_STR, false}, {"is_read_only", T_BOOL, false}, {"partuuid", T_STR, false},
    {"cache_type", T_STR, false}, {"rate_limiter", T_OBJ, false}, {"io_engine", T_STR, false},
    {"socket", T_STR, false}, {0}};
static const struct field F_VSOCK[] = {{"guest_cid", T_INT, true}, {"uds_path", T_STR, true},
    {"vsock_id", T_STR, false}, {0}};
static const struct field F_NET[] = {{"iface_id", T_STR, true}, {"host_dev_name", T_STR, true},
    {"guest_mac", T_STR, false}, {"rx_rate_limiter", T_OBJ, false},
    {"tx_rate_limiter", T_OBJ, false}, {"mtu", T_INT, false}, {0}};
static const struct field F_ACTION[] = {{"action_type", T_STR, true}, {0}};

static void log_request(const char *method, const char *path, const char *body, size_t len)
{
    const char *f = getenv("FAKE_FC_REQUEST_LOG");
    if (!f)
        return;
    FILE *out = fopen(f, "ae");
    if (!out)
        return;
    fprintf(out, "%s %s %.*s\n", method, path, (int)len, body);
    fclose(out);
}

static void route(int fd, const char *method, const char *path, const char *body, size_t len)
{
    log_request(method, path, body, len);
    char want[256];
    snprintf(want, sizeof(want), "%s %s", method, path);
    const char *inject = getenv("FAKE_FC_FAULT");
    if (inject && strcmp(inject, want) == 0) {
        fault(fd, "%s", env("FAKE_FC_FAULT_MESSAGE", "fake fault"));
        return;
    }
    if (strcmp(method, "GET") == 0 && (strcmp(path, "/") == 0 || strcmp(path, "/version") == 0)) {
        get_info(fd, strcmp(path, "/version") == 0);
        return;
    }
    static const struct {
        const char *prefix;
        bool has_id;
        const struct field *fields;
    } routes[] = {
        {"/logger", false, F_LOGGER},         {"/metrics", false, F_METRICS},
        {"/machine-config", false, F_MACHINE}, {"/boot-source", false, F_BOOT},
        {"/drives/", true, F_DRIVE},           {"/vsock", false, F_VSOCK},
        {"/network-interfaces/", true, F_NET}, {"/actions", false, F_ACTION},
    };
    for (size_t i = 0; strcmp(method, "PUT") == 0 && i < sizeof(routes) / sizeof(routes[0]); i++) {
        size_t pl = strlen(routes[i].prefix);
        const char *id = path + pl;
        bool match = routes[i].has_id ? strncmp(path, routes[i].prefix, pl) == 0 && *id &&
                                            !strchr(id, '/')
                                      : strcmp(path, routes[i].prefix) == 0;
        if (!match)
            continue;
        json_t *o = strict(fd, body, len, routes[i].fields);
        if (!o)
            return;
        switch (i) {
        case 0: put_logger(fd, o); break;
        case 1: put_metrics(fd, o); break;
        case 2: put_machine(fd, o); break;
        case 3: put_boot(fd, o); break;
        case 4: put_drive(fd, id, o); break;
        case 5: put_vsock(fd, o); break;
        case 6: put_net(fd, id, o); break;
        default: put_actions(fd, o); break;
        }
        json_decref(o);
        return;
    }
    fault(fd, "Invalid request method and/or path: %s %s.", method, path);
}

/* ---- HTTP connections ------------------------------------------------------------- */

static void api_close(struct api_conn *c)
{
    close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* Handles every complete request in the buffer; false: close the connection. */
static bool api_process(struct api_conn *c)
{
    for (;;) {
        char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end)
            return c->len < REQ_MAX;
        size_t head = (size_t)(end - c->buf) + 4;
        char method[16], path[256], proto[16];
        if (sscanf(c->buf, "%15s %255s %15s", method, path, proto) != 3 ||
            strcmp(proto, "HTTP/1.1") != 0) {
            fault(c->fd, "Invalid HTTP request line.");
            return false;
        }
        size_t clen = 0;
        for (char *h = strstr(c->buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
            if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
                clen = strtoul(h + 17, NULL, 10);
            if (strncasecmp(h + 2, "Transfer-Encoding:", 18) == 0) {
                fault(c->fd, "Transfer-Encoding is not supported.");
                return false;
            }
            if (strncasecmp(h + 2, "Expect:", 7) == 0 && strcasestr(h + 2, "100-continue")) {
                fault(c->fd, "Expect: 100-continue is not supported.");
                return false;
            }
        }
        if (clen > REQ_MAX) {
            fault(c->fd, "Request payload too large.");
            return false;
        }
        if (c->len < head + clen)
            return true;
        route(c->fd, method, path, c->buf + head, clen);
        memmove(c->buf, c->buf + head + clen, c->len - head - clen);
        c->len -= head + clen;
    }
}

static void api_read(struct api_conn *c)
{
    char *nb = realloc(c->buf, REQ_MAX + 1);
    if (!nb) {
        api_close(c);
        return;
    }
    c->buf = nb;
    ssize_t n = recv(c->fd, c->buf + c->len, REQ_MAX - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        api_close(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!api_process(c))
        api_close(c);
}

/* ---- the guest and hybrid vsock ------------------------------------------------------ */

static void start_guest(void)
{
    S.guest_at_ms = 0;
    const char *bin = getenv("FAKE_FC_GUEST");
    if (!bin) {
        say("FAKE_FC_GUEST is not set: no guest");
        return;
    }
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execl(bin, "ironclaw-guest", "--test-listen", S.guest_sock, "--once", (char *)NULL);
        _exit(127);
    }
    S.guest = pid;
}

static void vs_close(struct vs_conn *v)
{
    if (v->host >= 0)
        close(v->host);
    if (v->guest >= 0)
        close(v->guest);
    memset(v, 0, sizeof(*v));
    v->host = v->guest = -1;
}

static int connect_guest(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(S.guest_sock) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, S.guest_sock, strlen(S.guest_sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* The first read must hold the whole "CONNECT <port>\n". */
static void vs_connect(struct vs_conn *v)
{
    char buf[64];
    ssize_t n = recv(v->host, buf, sizeof(buf) - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        vs_close(v);
        return;
    }
    buf[n] = '\0';
    unsigned port;
    char nl;
    if (sscanf(buf, "CONNECT %u%c", &port, &nl) != 2 || nl != '\n' || buf[n - 1] != '\n') {
        say("bad or split CONNECT command: \"%.*s\"", (int)n, buf);
        vs_close(v);
        return;
    }
    S.connects++;
    if (getenv("FAKE_FC_BAD_OK")) {
        send_all(v->host, "HELLO THERE\n", 12);
        return;
    }
    if (port != S.guest_port || (v->guest = connect_guest()) < 0) {
        /* Nothing listens on that port in the guest: Firecracker drops it. */
        vs_close(v);
        return;
    }
    char ok[32];
    int len = snprintf(ok, sizeof(ok), "OK %u\n", 1073741824u + S.connects);
    send_all(v->host, ok, (size_t)len);
}

/* Reads from fd into an empty h. */
static void pump_in(int fd, struct half *h)
{
    if (h->eof || h->len)
        return;
    ssize_t n = recv(fd, h->buf, sizeof(h->buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0)
        h->eof = true;
    else {
        h->len = (size_t)n;
        h->off = 0;
    }
}

static void pump_out(int fd, struct half *h, bool *shut)
{
    while (h->off < h->len) {
        ssize_t w = send(fd, h->buf + h->off, h->len - h->off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (w <= 0) {
            h->eof = true;
            h->len = h->off = 0;
            return;
        }
        h->off += (size_t)w;
    }
    h->len = h->off = 0;
    if (h->eof && !*shut) {
        shutdown(fd, SHUT_WR);
        *shut = true;
    }
}

/* Moves what can move in both directions; ends the pair when both are done. */
static void vs_service(struct vs_conn *v)
{
    pump_in(v->host, &v->to_guest);
    pump_out(v->guest, &v->to_guest, &v->shut_guest);
    pump_in(v->guest, &v->to_host);
    pump_out(v->host, &v->to_host, &v->shut_host);
    if (v->to_guest.eof && v->to_host.eof && !v->to_guest.len && !v->to_host.len)
        vs_close(v);
}

/* ---- main loop ---------------------------------------------------------------------- */

static void cleanup_and_exit(int code)
{
    if (S.guest > 0)
        kill(S.guest, SIGKILL);
    if (S.vs_uds[0])
        unlink(S.vs_uds);
    if (S.guest_sock[0])
        unlink(S.guest_sock);
    char hp[4096];
    host_path(S.api_path, hp, sizeof(hp));
    unlink(hp);
    exit(code);
}

static void on_signal(void)
{
    struct signalfd_siginfo si;
    while (read(S.sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo != SIGCHLD) {
            say("killed by signal %u", si.ssi_signo);
            cleanup_and_exit(128 + (int)si.ssi_signo);
        }
    }
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
        if (p == S.guest) {
            S.guest = 0;
            if (getenv("FAKE_FC_STAY_AFTER_GUEST") && !S.cad) {
                printf("[fake-firecracker] the guest halted; no power-off device\n");
                fflush(stdout);
                continue;
            }
            printf("[fake-firecracker] the guest powered off\n");
            fflush(stdout);
            cleanup_and_exit(0);
        }
    }
}

static void loop(void)
{
    for (;;) {
        struct pollfd pfd[2 + MAX_API + 2 * MAX_VS + 1];
        void *who[sizeof(pfd) / sizeof(pfd[0])];
        int kind[sizeof(pfd) / sizeof(pfd[0])];
        nfds_t n = 0;
        pfd[n] = (struct pollfd){.fd = S.sig_fd, .events = POLLIN}, kind[n++] = 0;
        pfd[n] = (struct pollfd){.fd = S.api_fd, .events = POLLIN}, kind[n++] = 1;
        if (S.vs_fd >= 0)
            pfd[n] = (struct pollfd){.fd = S.vs_fd, .events = POLLIN}, kind[n++] = 2;
        for (int i = 0; i < MAX_API; i++)
            if (S.api[i].fd > 0)
                pfd[n] = (struct pollfd){.fd = S.api[i].fd, .events = POLLIN}, who[n] = &S.api[i],
                kind[n++] = 3;
        for (int i = 0; i < MAX_VS; i++) {
            struct vs_conn *v = &S.vs[i];
            if (v->host <= 0)
                continue;
            short he = (v->to_guest.len == 0 && !v->to_guest.eof ? POLLIN : 0) |
                       (v->to_host.len ? POLLOUT : 0);
            pfd[n] = (struct pollfd){.fd = v->host, .events = he}, who[n] = v, kind[n++] = 4;
            if (v->guest >= 0) {
                short ge = (v->to_host.len == 0 && !v->to_host.eof ? POLLIN : 0) |
                           (v->to_guest.len ? POLLOUT : 0);
                pfd[n] = (struct pollfd){.fd = v->guest, .events = ge}, who[n] = v, kind[n++] = 5;
            }
        }
        int timeout = -1;
        if (S.guest_at_ms) {
            uint64_t t = now_ms();
            timeout = S.guest_at_ms > t ? (int)(S.guest_at_ms - t) : 0;
        }
        if (poll(pfd, n, timeout) < 0 && errno != EINTR)
            cleanup_and_exit(1);
        if (S.guest_at_ms && now_ms() >= S.guest_at_ms)
            start_guest();
        for (nfds_t i = 0; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            if (kind[i] == 0) {
                on_signal();
            } else if (kind[i] == 1 || kind[i] == 2) {
                int c = accept4(pfd[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                bool placed = false;
                for (int k = 0; k < (kind[i] == 1 ? MAX_API : MAX_VS) && !placed; k++) {
                    if (kind[i] == 1 && S.api[k].fd <= 0) {
                        S.api[k].fd = c;
                        placed = true;
                    } else if (kind[i] == 2 && S.vs[k].host <= 0) {
                        S.vs[k].host = c;
                        S.vs[k].guest = -1;
                        placed = true;
                    }
                }
                if (!placed)
                    close(c);
            } else if (kind[i] == 3) {
                api_read(who[i]);
            } else {
                struct vs_conn *v = who[i];
                if (v->host <= 0)
                    continue;
                if (v->guest < 0) {
                    if (kind[i] == 4)
                        vs_connect(v);
                    continue;
                }
                vs_service(v);
            }
        }
    }
}

static void record_argv(int argc, char **argv)
{
    const char *f = getenv("FAKE_FC_ARGV_FILE");
    if (!f)
        return;
    FILE *out = fopen(f, "we");
    if (!out)
        return;
    for (int i = 0; i < argc; i++)
        fprintf(out, "%s\n", argv[i]);
    fclose(out);
}

/* "--opt value" or "--opt=value". */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static void check_filter(const char *path)
{
    char hp[4096], buf[128] = "", want[128];
    host_path(path, hp, sizeof(hp));
    int fd = open(hp, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    snprintf(want, sizeof(want), "FAKEBPF v%s\n", S.version);
    if (n <= 0) {
        say("error: cannot read the seccomp filter %s", path);
        exit(1);
    }
    if (strncmp(buf, want, strlen(want)) != 0) {
        say("error: Seccomp error: the filter %s was not compiled for this Firecracker (v%s)",
            path, S.version);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    S.root = env("FAKE_FC_ROOT", "");
    S.version = env("FAKE_FC_VERSION", "1.7.0");
    const char *uid = getenv("FAKE_FC_JAIL_UID"), *gid = getenv("FAKE_FC_JAIL_GID");
    S.jail_uid = uid ? atol(uid) : -1;
    S.jail_gid = gid ? atol(gid) : -1;
    S.vs_fd = -1;
    for (int i = 0; i < MAX_VS; i++)
        S.vs[i].host = S.vs[i].guest = -1;
    record_argv(argc, argv);
    const char *filter = NULL;
    S.id = "anonymous-instance";
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--version") == 0) {
            printf("Firecracker v%s\n\nSupported snapshot data format versions: 1.0.0\n", S.version);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--api-sock"))) {
            S.api_path = v;
        } else if ((v = opt_value(argc, argv, &i, "--id"))) {
            S.id = v;
        } else if ((v = opt_value(argc, argv, &i, "--seccomp-filter"))) {
            filter = v;
        } else if ((v = opt_value(argc, argv, &i, "--start-time-us")) ||
                   (v = opt_value(argc, argv, &i, "--start-time-cpu-us"))) {
            (void)v;
        } else if (strcmp(argv[i], "--no-seccomp") == 0) {
            say("warning: seccomp disabled");
        } else {
            say("error: unexpected argument '%s'", argv[i]);
            return 1;
        }
    }
    if (!S.api_path) {
        S.api_path = "/run/firecracker.socket";
    }
    if (filter)
        check_filter(filter);
    if (getenv("FAKE_FC_DIE_BEFORE_SOCKET")) {
        say("error: simulated crash before the API socket exists");
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    S.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (getenv("FAKE_FC_NO_SOCKET")) {
        say("not creating the API socket (FAKE_FC_NO_SOCKET)");
        for (;;) {
            struct pollfd p = {.fd = S.sig_fd, .events = POLLIN};
            poll(&p, 1, -1);
            on_signal();
        }
    }
    char hp[4096];
    host_path(S.api_path, hp, sizeof(hp));
    S.api_fd = listen_unix(hp);
    if (S.api_fd < 0) {
        say("error: cannot bind the API socket %s: %s", hp, strerror(errno));
        return 1;
    }
    loop();
    return 0;
}
