/*
 * proc.c - the exec and signal methods: starting processes, moving their
 * stdin/stdout/stderr between pipes and the channel, noticing their end,
 * enforcing timeouts, and reporting `exit` (docs/protocol.md, 4).
 *
 * A process is done when it has been reaped AND both its outputs reached
 * end of file; only then is `exit` sent, so all output precedes it. The
 * process runs in its own session and process group; when it exits (or
 * times out) the whole group gets SIGKILL so that no descendant keeps the
 * pipes open. A descendant that escaped the group (setsid) cannot hold the
 * exit back either: once the main process is gone and its pipe is empty
 * for a short grace, the output is ended anyway.
 *
 * Everything between fork and exec is in child_setup(), which also
 * confines the child (rlimits, seccomp: confine.c).
 */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ironclaw/cleanup.h"

#define BASE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* After the main process exits, how long an output may stay open while
 * its pipe is empty before it is ended without an EOF from the pipe. */
#define DRAIN_GRACE_MS 200

struct ic_proc {
    struct ic_proc *next;
    uint32_t id;
    pid_t pid;
    int in_fd, out_fd, err_fd;   /* our ends of the pipes, -1 once closed */
    ic_buf in;                   /* stdin bytes not yet taken by the process */
    bool in_eof;                 /* the host ended stdin: close once drained */
    bool exited;
    bool timed_out;
    int status;
    uint64_t start_ms, deadline_ms, end_ms, drain_ms;
};

/* ---- lookup ----------------------------------------------------------- */

static struct ic_proc *proc_find(const ic_conn *c, uint32_t id)
{
    for (struct ic_proc *p = c->procs; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

bool ic_proc_has(const ic_conn *c, uint32_t id) { return proc_find(c, id) != NULL; }

bool ic_proc_stdin_full(const ic_conn *c)
{
    for (struct ic_proc *p = c->procs; p; p = p->next)
        if (ic_buf_size(&p->in) >= IC_GUEST_STDIN_MAX)
            return true;
    return false;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void proc_free(struct ic_proc *p)
{
    close_fd(&p->in_fd);
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    ic_buf_free(&p->in);
    free(p);
}

/* ---- request parsing --------------------------------------------------- */

struct exec_req {
    char **argv;       /* NULL-terminated; strings borrowed from the request */
    char **envp;       /* base environment with the additions applied */
    const char *cwd;
    bool want_stdin;
    long long timeout_ms;
};

static void exec_req_free(struct exec_req *rq)
{
    free(rq->argv);
    free(rq->envp);
}

/* Copies a JSON array of strings into a NULL-terminated vector. */
static int string_array(ic_conn *c, uint32_t id, json_t *arr, const char *key, char ***out)
{
    if (!json_is_array(arr)) {
        ic_conn_error(c, id, EINVAL, "\"%s\" must be an array of strings", key);
        return -EINVAL;
    }
    size_t n = json_array_size(arr);
    if (n > IC_GUEST_LIST_MAX) {
        ic_conn_error(c, id, EINVAL, "\"%s\" has %zu entries, more than %d", key, n,
                      IC_GUEST_LIST_MAX);
        return -EINVAL;
    }
    char **v = calloc(n + 1, sizeof(*v));
    if (!v) {
        ic_conn_error(c, id, ENOMEM, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            free(v);
            ic_conn_error(c, id, EINVAL, "\"%s\"[%zu] must be a string without NUL", key, i);
            return -EINVAL;
        }
        v[i] = (char *)json_string_value(s);
    }
    *out = v;
    return 0;
}

/* Index of the entry with the same KEY= as kv, or -1. */
static ssize_t env_index(char **env, size_t n, const char *kv)
{
    size_t klen = (size_t)(strchr(kv, '=') - kv) + 1;
    for (size_t i = 0; i < n; i++)
        if (strncmp(env[i], kv, klen) == 0)
            return (ssize_t)i;
    return -1;
}

/* Base environment plus the request's additions, later keys replacing
 * earlier ones. */
static int build_env(ic_conn *c, uint32_t id, json_t *jenv, char ***out)
{
    static const char *const base[] = {"PATH=" BASE_PATH, "HOME=/root"};
    const size_t nbase = sizeof(base) / sizeof(base[0]);
    char **add = NULL;
    json_t *empty = NULL;
    if (!jenv)
        jenv = empty = json_array();
    int r = string_array(c, id, jenv, "env", &add);
    /* Counted first: the decref frees jenv when it is our empty array. */
    size_t nadd = json_array_size(jenv);
    json_decref(empty);
    if (r < 0)
        return r;
    _cleanup_free_ char **addv = add;
    char **env = calloc(nbase + nadd + 1, sizeof(*env));
    if (!env) {
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): addv is freed by _cleanup_free_ */
        ic_conn_error(c, id, ENOMEM, "out of memory");
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < nbase; i++)
        env[n++] = (char *)base[i];
    for (size_t i = 0; i < nadd; i++) {
        const char *eq = strchr(addv[i], '=');
        if (!eq || eq == addv[i]) {
            free(env);
            ic_conn_error(c, id, EINVAL, "\"env\"[%zu] is not KEY=VALUE", i);
            return -EINVAL;
        }
        ssize_t at = env_index(env, n, addv[i]);
        if (at >= 0)
            env[at] = addv[i];
        else
            env[n++] = addv[i];
    }
    *out = env;
    return 0;
}

static int parse_exec(ic_conn *c, uint32_t id, json_t *params, struct exec_req *rq)
{
    memset(rq, 0, sizeof(*rq));
    rq->cwd = "/";
    json_t *jargv = json_object_get(params, "argv");
    if (!jargv || (json_is_array(jargv) && json_array_size(jargv) == 0)) {
        ic_conn_error(c, id, EINVAL, "\"argv\" must be a non-empty array of strings");
        return -EINVAL;
    }
    int r = string_array(c, id, jargv, "argv", &rq->argv);
    if (r == 0)
        r = build_env(c, id, json_object_get(params, "env"), &rq->envp);
    if (r == 0)
        r = ic_param_string(c, id, params, "cwd", false, &rq->cwd);
    if (r == 0 && strlen(rq->cwd) >= IC_GUEST_PATH_MAX) {
        ic_conn_error(c, id, EINVAL, "\"cwd\" is longer than 4095 bytes");
        r = -EINVAL;
    }
    if (r == 0)
        r = ic_param_bool(c, id, params, "stdin", &rq->want_stdin);
    if (r == 0)
        r = ic_param_int(c, id, params, "timeout_ms", false, 0, INT64_MAX / 2, &rq->timeout_ms);
    if (r < 0)
        exec_req_free(rq);
    return r;
}

/* ---- the child --------------------------------------------------------- */

enum { STAGE_SETUP = 1, STAGE_CWD, STAGE_EXEC };

struct child_err {
    int stage;
    int code;
};

struct spawn {
    const struct exec_req *rq;
    const struct ic_guest_filter *filter;
    int fds[3];     /* becomes the child's 0, 1, 2; fds[0] -1 = /dev/null */
    int errpipe;    /* close-on-exec: EOF on it means exec succeeded */
};

static void __attribute__((noreturn)) child_fail(int errpipe, int stage, int code)
{
    struct child_err ce = {stage, code};
    ssize_t r = write(errpipe, &ce, sizeof(ce));
    (void)r;
    _exit(127);
}

static const char *env_get(char **envp, const char *key)
{
    size_t klen = strlen(key);
    for (; *envp; envp++)
        if (strncmp(*envp, key, klen) == 0 && (*envp)[klen] == '=')
            return *envp + klen + 1;
    return NULL;
}

/* execve with PATH taken from the child's own environment (execvpe would
 * use the agent's). Returns the errno worth reporting. */
static int child_exec(char **argv, char **envp)
{
    const char *file = argv[0];
    if (!*file)
        return ENOENT;
    if (strchr(file, '/')) {
        execve(file, argv, envp);
        return errno;
    }
    const char *path = env_get(envp, "PATH");
    if (!path)
        path = BASE_PATH;
    size_t flen = strlen(file);
    bool denied = false;
    for (const char *p = path;;) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        char buf[IC_GUEST_PATH_MAX];
        if (dlen + 1 + flen < sizeof(buf)) {
            /* An empty PATH element means the current directory. */
            memcpy(buf, dlen ? p : ".", dlen ? dlen : 1);
            size_t at = dlen ? dlen : 1;
            buf[at++] = '/';
            memcpy(buf + at, file, flen + 1);
            execve(buf, argv, envp);
            if (errno == EACCES)
                denied = true;
            else if (errno != ENOENT && errno != ENOTDIR)
                return errno;
        }
        if (!*end)
            break;
        p = end + 1;
    }
    return denied ? EACCES : ENOENT;
}

/* Marks every descriptor from 3 up close-on-exec (the error pipe must stay
 * open until the exec itself). */
static void child_cloexec_rest(void)
{
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void __attribute__((noreturn)) child_setup(const struct spawn *s)
{
    /* Own session and process group: signals and kills address the group. */
    if (setsid() < 0)
        child_fail(s->errpipe, STAGE_SETUP, errno);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);

    int fds[3] = {s->fds[0], s->fds[1], s->fds[2]};
    if (fds[0] < 0 && (fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
        child_fail(s->errpipe, STAGE_SETUP, errno);
    /* Sources below 3 would be clobbered by the dup2s: move them up. */
    for (int i = 0; i < 3; i++)
        if (fds[i] < 3 && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3)) < 0)
            child_fail(s->errpipe, STAGE_SETUP, errno);
    for (int i = 0; i < 3; i++)
        if (dup2(fds[i], i) < 0)
            child_fail(s->errpipe, STAGE_SETUP, errno);
    child_cloexec_rest();
    umask(022);

    /* Confinement of the child (rlimits, seccomp: confine.c), after the
     * descriptors are in place and before the exec; it fails closed. */
    int r = ic_guest_confine_child(s->filter);
    if (r < 0)
        child_fail(s->errpipe, STAGE_SETUP, -r);

    if (chdir(s->rq->cwd) < 0)
        child_fail(s->errpipe, STAGE_CWD, errno);
    child_fail(s->errpipe, STAGE_EXEC, child_exec(s->rq->argv, s->rq->envp));
}

/* ---- spawning -------------------------------------------------------------- */

static void close_pair(int p[2])
{
    close_fd(&p[0]);
    close_fd(&p[1]);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Waits for the child to exec or to report why it could not. This blocks
 * only for the few steps between fork and exec. */
static int wait_exec(int errpipe, struct child_err *ce)
{
    for (;;) {
        ssize_t n = read(errpipe, ce, sizeof(*ce));
        if (n == (ssize_t)sizeof(*ce)) {
            if (ce->code <= 0)
                ce->code = EIO;
            return -ce->code;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return 0;
    }
}

static void report_spawn_error(ic_conn *c, uint32_t id, const struct exec_req *rq,
                               const struct child_err *ce)
{
    if (ce->stage == STAGE_CWD)
        ic_conn_error(c, id, ce->code, "cwd \"%s\": %s", rq->cwd, strerror(ce->code));
    else if (ce->stage == STAGE_EXEC)
        ic_conn_error(c, id, ce->code, "\"%s\": %s", rq->argv[0], strerror(ce->code));
    else
        ic_conn_error(c, id, ce->code, "setting up the process: %s", strerror(ce->code));
}

static int proc_spawn(ic_conn *c, uint32_t id, const struct exec_req *rq, struct ic_proc *p)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1};
    int r = 0;
    if ((rq->want_stdin && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
        pipe2(err, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        r = -errno;
        ic_conn_error(c, id, -r, "pipe: %s", strerror(-r));
        goto out;
    }
    /* Bigger pipes: fewer wake-ups between the agent and a streaming
     * command (each costs a context switch, dear under emulation). */
    if (in[0] >= 0)
        fcntl(in[1], F_SETPIPE_SZ, IC_GUEST_PIPE_SIZE);
    fcntl(out[1], F_SETPIPE_SZ, IC_GUEST_PIPE_SIZE);
    struct spawn s = {.rq = rq, .filter = &c->agent->tools, .fds = {in[0], out[1], err[1]},
                      .errpipe = ep[1]};
    pid_t pid = fork();
    if (pid < 0) {
        r = -errno;
        ic_conn_error(c, id, -r, "fork: %s", strerror(-r));
        goto out;
    }
    if (pid == 0)
        child_setup(&s);
    p->start_ms = ic_now_ms();
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&ep[1]);
    struct child_err ce;
    r = wait_exec(ep[0], &ce);
    if (r < 0) {
        waitpid(pid, NULL, 0);
        report_spawn_error(c, id, rq, &ce);
        goto out;
    }
    /* Only our ends are non-blocking; the child's stay as programs expect. */
    if ((in[1] >= 0 && set_nonblock(in[1]) < 0) || set_nonblock(out[0]) < 0 ||
        set_nonblock(err[0]) < 0) {
        r = -errno;
        kill(-pid, SIGKILL);
        ic_conn_error(c, id, -r, "fcntl: %s", strerror(-r));
        goto out;
    }
    p->pid = pid;
    p->in_fd = TAKE_FD(in[1]);
    p->out_fd = TAKE_FD(out[0]);
    p->err_fd = TAKE_FD(err[0]);
out:
    close_pair(in);
    close_pair(out);
    close_pair(err);
    close_pair(ep);
    return r;
}

void ic_proc_exec(ic_conn *c, uint32_t id, json_t *params)
{
    if (ic_conn_id_busy(c, id)) {
        ic_conn_error(c, id, EEXIST, "stream %u is already in use", id);
        return;
    }
    struct exec_req rq;
    if (parse_exec(c, id, params, &rq) < 0)
        return;
    struct ic_proc *p = calloc(1, sizeof(*p));
    if (!p) {
        exec_req_free(&rq);
        ic_conn_error(c, id, ENOMEM, "out of memory");
        return;
    }
    p->id = id;
    p->in_fd = p->out_fd = p->err_fd = -1;
    if (proc_spawn(c, id, &rq, p) < 0) {
        exec_req_free(&rq);
        proc_free(p);
        return;
    }
    if (rq.timeout_ms > 0)
        p->deadline_ms = p->start_ms + (uint64_t)rq.timeout_ms;
    glog_debug("request %u: started \"%s\" as pid %d", id, rq.argv[0], (int)p->pid);
    exec_req_free(&rq);
    p->next = c->procs;
    c->procs = p;
    ic_conn_reply(c, id, json_pack("{s:i}", "pid", (int)p->pid));
}

/* ---- signal ---------------------------------------------------------------- */

void ic_proc_signal(ic_conn *c, uint32_t id, json_t *params)
{
    long long target = 0, sig = 0;
    if (ic_param_int(c, id, params, "id", true, 1, UINT32_MAX, &target) < 0 ||
        ic_param_int(c, id, params, "signal", true, 0, SIGRTMAX, &sig) < 0)
        return;
    struct ic_proc *p = proc_find(c, (uint32_t)target);
    if (!p || p->exited) {
        ic_conn_error(c, id, ESRCH, "no running process for request %lld", target);
        return;
    }
    if (kill(-p->pid, (int)sig) < 0) {
        ic_conn_error(c, id, errno, "kill: %s", strerror(errno));
        return;
    }
    ic_conn_reply(c, id, NULL);
}

/* ---- stdin ----------------------------------------------------------------- */

static void stdin_close(struct ic_proc *p)
{
    close_fd(&p->in_fd);
    ic_buf_free(&p->in);
}

/* Writes what the pipe takes now; returns how much, or -1 once stdin is
 * closed (the process closed its end: the rest has no reader). */
static ssize_t stdin_write(struct ic_proc *p, const uint8_t *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(p->in_fd, data + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        glog_debug("request %u: stdin dropped: %s", p->id, strerror(errno));
        stdin_close(p);
        return -1;
    }
    return (ssize_t)done;
}

static void stdin_flush(struct ic_proc *p)
{
    if (ic_buf_size(&p->in) > 0) {
        ssize_t n = stdin_write(p, ic_buf_head(&p->in), ic_buf_size(&p->in));
        if (n < 0)
            return;
        ic_buf_consume(&p->in, (size_t)n);
    }
    if (p->in_eof && ic_buf_size(&p->in) == 0)
        stdin_close(p);
}

void ic_proc_stdin(ic_conn *c, uint32_t stream, const uint8_t *data, size_t len)
{
    struct ic_proc *p = proc_find(c, stream);
    if (!p || p->in_fd < 0 || p->in_eof) {
        glog_debug("discarding %zu stdin bytes for stream %u", len, stream);
        return;
    }
    if (len == 0) {
        p->in_eof = true;
        stdin_flush(p);
        return;
    }
    /* Straight from the frame into the pipe when nothing is waiting; only
     * what the pipe does not take now is copied, to wait for POLLOUT. */
    size_t done = 0;
    bool queued = ic_buf_size(&p->in) > 0;
    if (!queued) {
        ssize_t n = stdin_write(p, data, len);
        if (n < 0)
            return;
        done = (size_t)n;
    }
    if (done < len && ic_buf_append(&p->in, data + done, len - done) < 0) {
        ic_conn_fail(c, ENOMEM, "out of memory buffering stdin");
        return;
    }
    if (queued)
        stdin_flush(p);
}

/* ---- outputs --------------------------------------------------------------- */

static void output_eof(ic_conn *c, struct ic_proc *p, int *fd, uint8_t chan)
{
    close_fd(fd);
    ic_conn_data(c, p->id, chan, NULL, 0);
}

/* Reads while the pipe has bytes, the write queue is below its high water
 * and this turn's share (IC_GUEST_READ_TURN) is not used up: a process
 * that writes fast gets its output out in few loop turns without starving
 * the others. */
static void output_read(ic_conn *c, struct ic_proc *p, int *fd, uint8_t chan)
{
    size_t got = 0;
    while (got < IC_GUEST_READ_TURN && ic_buf_size(&c->out) < IC_GUEST_OUT_HIGH) {
        ssize_t n = ic_conn_data_read(c, p->id, chan, *fd);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n < 0)
            glog_warn("request %u: reading output: %s", p->id, strerror(errno));
        output_eof(c, p, fd, chan);
        return;
    }
}

int ic_proc_poll_add(ic_conn *c, ic_pollset *ps, bool out_ok)
{
    for (struct ic_proc *p = c->procs; p; p = p->next) {
        if (p->in_fd >= 0 && ic_buf_size(&p->in) > 0 &&
            ic_pollset_add(ps, p->in_fd, POLLOUT, p, IC_POLL_STDIN) < 0)
            return -ENOMEM;
        if (!out_ok)
            continue;
        if (p->out_fd >= 0 && ic_pollset_add(ps, p->out_fd, POLLIN, p, IC_POLL_STDOUT) < 0)
            return -ENOMEM;
        if (p->err_fd >= 0 && ic_pollset_add(ps, p->err_fd, POLLIN, p, IC_POLL_STDERR) < 0)
            return -ENOMEM;
    }
    return 0;
}

void ic_proc_poll_event(ic_conn *c, void *owner, uint8_t tag, short revents)
{
    struct ic_proc *p = owner;
    switch (tag) {
    case IC_POLL_STDIN:
        if (p->in_fd < 0)
            break;
        if (revents & POLLOUT)
            stdin_flush(p);
        else if (revents & (POLLERR | POLLHUP))
            stdin_close(p);
        break;
    case IC_POLL_STDOUT:
        if (p->out_fd >= 0)
            output_read(c, p, &p->out_fd, IC_CHAN_STDOUT);
        break;
    case IC_POLL_STDERR:
        if (p->err_fd >= 0)
            output_read(c, p, &p->err_fd, IC_CHAN_STDERR);
        break;
    default:
        break;
    }
}

/* ---- end of a process -------------------------------------------------- */

bool ic_proc_reaped(ic_conn *c, pid_t pid, int status)
{
    struct ic_proc *p = c->procs;
    while (p && (p->pid != pid || p->exited))
        p = p->next;
    if (!p)
        return false;
    p->exited = true;
    p->status = status;
    p->end_ms = ic_now_ms();
    p->drain_ms = p->end_ms + DRAIN_GRACE_MS;
    /* Descendants must not keep the outputs open, nor stdin matter. */
    kill(-pid, SIGKILL);
    stdin_close(p);
    return true;
}

/* An output still open after the main process is gone: when its pipe is
 * empty, only an escaped descendant can be holding it; end it. */
static void drain_check(ic_conn *c, struct ic_proc *p, int *fd, uint8_t chan)
{
    int avail = 0;
    if (*fd >= 0 && ioctl(*fd, FIONREAD, &avail) == 0 && avail == 0) {
        glog_debug("request %u: ending output %u held open by a descendant", p->id, chan);
        output_eof(c, p, fd, chan);
    }
}

static void next_timer(int *next, uint64_t at, uint64_t now)
{
    uint64_t left = at > now ? at - now : 0;
    int ms = left > 60000 ? 60000 : (int)left;
    if (*next < 0 || ms < *next)
        *next = ms;
}

int ic_proc_timers(ic_conn *c)
{
    uint64_t now = ic_now_ms();
    int next = -1;
    for (struct ic_proc *p = c->procs; p; p = p->next) {
        if (!p->exited && p->deadline_ms && !p->timed_out) {
            if (now >= p->deadline_ms) {
                glog_info("request %u: timed out, killing process group %d", p->id, (int)p->pid);
                kill(-p->pid, SIGKILL);
                p->timed_out = true;
            } else {
                next_timer(&next, p->deadline_ms, now);
            }
        }
        if (p->exited && (p->out_fd >= 0 || p->err_fd >= 0)) {
            if (now >= p->drain_ms) {
                drain_check(c, p, &p->out_fd, IC_CHAN_STDOUT);
                drain_check(c, p, &p->err_fd, IC_CHAN_STDERR);
                p->drain_ms = now + DRAIN_GRACE_MS;
            }
            if (p->out_fd >= 0 || p->err_fd >= 0)
                next_timer(&next, p->drain_ms, now);
        }
    }
    return next;
}

static void send_exit(ic_conn *c, const struct ic_proc *p)
{
    int code = WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 0;
    int sig = WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0;
    json_t *params = json_pack("{s:I,s:i,s:i,s:b,s:I}", "id", (json_int_t)p->id, "code", code,
                               "signal", sig, "timed_out", p->timed_out, "duration_ms",
                               (json_int_t)(p->end_ms - p->start_ms));
    if (!params) {
        ic_conn_fail(c, ENOMEM, "out of memory");
        return;
    }
    glog_debug("request %u: exit code %d signal %d", p->id, code, sig);
    ic_conn_notify(c, IC_N_EXIT, params);
}

void ic_proc_sweep(ic_conn *c)
{
    for (struct ic_proc **pp = &c->procs; *pp;) {
        struct ic_proc *p = *pp;
        if (p->exited && p->out_fd < 0 && p->err_fd < 0) {
            send_exit(c, p);
            *pp = p->next;
            proc_free(p);
        } else {
            pp = &p->next;
        }
    }
}

void ic_proc_close_all(ic_conn *c)
{
    while (c->procs) {
        struct ic_proc *p = c->procs;
        c->procs = p->next;
        /* The zombie is collected later by ic_agent_reap, as an orphan. */
        if (!p->exited)
            kill(-p->pid, SIGKILL);
        proc_free(p);
    }
}
