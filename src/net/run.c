/*
 * run.c - running the firewall tools (iptables-restore, iptables-save):
 * asynchronously through uv_spawn on the caller's loop, or blocking with
 * posix_spawn for the thread pool, the reaper and the CLI. Both feed a
 * text to stdin and collect stdout and stderr.
 */
#include "net/net_int.h"

#include "ironclaw/buf.h"
#include "ironclaw/cleanup.h"
#include "ironclaw/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUTPUT_MAX (64u << 20)
#define SBIN_DIRS "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"

extern char **environ;

int ic_net__find_program(const char *name, char *out, size_t size)
{
    const char *env = getenv("PATH");
    char paths[8192];
    snprintf(paths, sizeof(paths), "%s:%s", env ? env : "", SBIN_DIRS);
    for (char *save = NULL, *dir = strtok_r(paths, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        if (dir[0] != '/')
            continue;
        if (snprintf(out, size, "%s/%s", dir, name) >= (int)size)
            continue;
        if (access(out, X_OK) == 0)
            return 0;
    }
    out[0] = '\0';
    return -ENOENT;
}

void ic_net__first_line(const char *text, char *out, size_t size)
{
    out[0] = '\0';
    if (!text)
        return;
    while (*text == '\n' || *text == ' ')
        text++;
    size_t n = strcspn(text, "\n");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), text);
}

/* ---- blocking ----------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int read_into(int fd, ic_buf *b)
{
    if (ic_buf_size(b) >= OUTPUT_MAX)
        return -EFBIG;
    if (ic_buf_reserve(b, 65536) < 0)
        return -ENOMEM;
    size_t room;
    uint8_t *tail = ic_buf_tail(b, &room);
    ssize_t n = read(fd, tail, room);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : -errno;
    if (n == 0)
        return 0;
    ic_buf_commit(b, (size_t)n);
    return 1;
}

static char *buf_string(ic_buf *b)
{
    if (ic_buf_append_u8(b, 0) < 0)
        return NULL;
    char *s = strdup((const char *)ic_buf_head(b));
    ic_buf_free(b);
    return s;
}

struct child {
    pid_t pid;
    int in, out, err;      /* our ends, -1 when closed */
};

static int spawn_child(char *const argv[], struct child *c, ic_err *err)
{
    int p_in[2] = {-1, -1}, p_out[2] = {-1, -1}, p_err[2] = {-1, -1};
    if (pipe2(p_in, O_CLOEXEC) < 0 || pipe2(p_out, O_CLOEXEC) < 0 || pipe2(p_err, O_CLOEXEC) < 0) {
        int e = errno;
        int fds[] = {p_in[0], p_in[1], p_out[0], p_out[1], p_err[0], p_err[1]};
        for (size_t i = 0; i < 6; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return ic_err_sys(err, e, "cannot create pipes for %s", argv[0]);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p_in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, p_out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p_err[1], 2);
    int r = posix_spawn(&c->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p_in[0]);
    close(p_out[1]);
    close(p_err[1]);
    c->in = p_in[1];
    c->out = p_out[0];
    c->err = p_err[0];
    if (r != 0) {
        close(c->in), close(c->out), close(c->err);
        return ic_err_sys(err, r, "cannot run %s", argv[0]);
    }
    fcntl(c->in, F_SETFL, O_NONBLOCK);
    return 0;
}

/* Feeds input and drains both outputs until the child closes them. */
static int pump(struct child *c, const char *input, ic_buf *out, ic_buf *errb, uint64_t deadline)
{
    size_t left = input ? strlen(input) : 0;
    if (!left) {
        close(c->in);
        c->in = -1;
    }
    while (c->out >= 0 || c->err >= 0) {
        struct pollfd pf[3];
        int n = 0, io = -1, oo = -1, eo = -1;
        if (c->in >= 0)
            io = n, pf[n++] = (struct pollfd){.fd = c->in, .events = POLLOUT};
        if (c->out >= 0)
            oo = n, pf[n++] = (struct pollfd){.fd = c->out, .events = POLLIN};
        if (c->err >= 0)
            eo = n, pf[n++] = (struct pollfd){.fd = c->err, .events = POLLIN};
        uint64_t now = mono_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        if (poll(pf, (nfds_t)n, (int)(deadline - now)) < 0 && errno != EINTR)
            return -errno;
        if (io >= 0 && pf[io].revents) {
            ssize_t w = write(c->in, input, left);
            if (w > 0) {
                input += w;
                left -= (size_t)w;
            }
            if (left == 0 || (w < 0 && errno != EAGAIN && errno != EINTR)) {
                close(c->in);
                c->in = -1;
            }
        }
        int *ends[2] = {&c->out, &c->err};
        const int idx[2] = {oo, eo};
        ic_buf *bufs[2] = {out, errb};
        for (int k = 0; k < 2; k++) {
            if (idx[k] < 0 || !pf[idx[k]].revents)
                continue;
            int r = read_into(*ends[k], bufs[k]);
            if (r <= 0) {
                close(*ends[k]);
                *ends[k] = -1;
                if (r < 0)
                    return r;
            }
        }
    }
    return 0;
}

int ic_net__run_blocking(char *const argv[], const char *input, uint32_t timeout_ms, char **out,
                         char **errout, int *status, ic_err *err)
{
    struct child c;
    int r = spawn_child(argv, &c, err);
    if (r < 0)
        return r;
    ic_buf ob = IC_BUF_INIT, eb = IC_BUF_INIT;
    /* The child must not take ironclaw down with SIGPIPE if it exits early. */
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    r = pump(&c, input, &ob, &eb, mono_ms() + timeout_ms);
    /* A pending SIGPIPE for this thread is consumed, then the mask restored. */
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (c.in >= 0)
        close(c.in);
    if (c.out >= 0)
        close(c.out);
    if (c.err >= 0)
        close(c.err);
    if (r < 0)
        kill(c.pid, SIGKILL);
    int ws = 0;
    while (waitpid(c.pid, &ws, 0) < 0 && errno == EINTR)
        ;
    if (r < 0) {
        ic_buf_free(&ob);
        ic_buf_free(&eb);
        return r == -ETIMEDOUT ? ic_err_set(err, ETIMEDOUT, "%s did not finish within %u ms",
                                            argv[0], timeout_ms)
                               : ic_err_sys(err, -r, "talking to %s", argv[0]);
    }
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    char *o = buf_string(&ob), *e = buf_string(&eb);
    if (!o || !e) {
        free(o), free(e);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    if (out)
        *out = o;
    else
        free(o);
    if (errout)
        *errout = e;
    else
        free(e);
    return 0;
}

/* ---- on the loop ---------------------------------------------------------- */

struct run {
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_write_t wreq;
    char *input;
    ic_buf ob, eb;
    int open;            /* handles not yet closed */
    int pending;         /* exit + two EOFs still to come */
    int status;
    ic_err error;
    ic_net_run_fn done;
    void *ud;
};

static void run_free(struct run *r)
{
    ic_buf_free(&r->ob);
    ic_buf_free(&r->eb);
    free(r->input);
    free(r);
}

static void on_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    if (--r->open == 0)
        run_free(r);
}

static void run_close(struct run *r, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_closed);
}

static void run_step(struct run *r)
{
    if (--r->pending > 0)
        return;
    char *o = NULL, *e = NULL;
    if (ic_buf_append_u8(&r->ob, 0) == 0 && ic_buf_append_u8(&r->eb, 0) == 0) {
        o = (char *)ic_buf_head(&r->ob);
        e = (char *)ic_buf_head(&r->eb);
    } else if (!r->error.code) {
        ic_err_set(&r->error, ENOMEM, "out of memory");
    }
    int status = r->error.code ? -r->error.code : r->status;
    r->done(status, o ? o : "", e ? e : "", r->error.code ? &r->error : NULL, r->ud);
    run_close(r, (uv_handle_t *)&r->proc);
    run_close(r, (uv_handle_t *)&r->in);
    run_close(r, (uv_handle_t *)&r->out);
    run_close(r, (uv_handle_t *)&r->err);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    struct run *r = p->data;
    r->status = sig ? 128 + sig : (int)status;
    run_step(r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct run *r = h->data;
    ic_buf *b = h == (uv_handle_t *)&r->out ? &r->ob : &r->eb;
    size_t room = 0;
    uint8_t *tail = NULL;
    if (ic_buf_size(b) < OUTPUT_MAX && ic_buf_reserve(b, 65536) == 0)
        tail = ic_buf_tail(b, &room);
    *buf = uv_buf_init((char *)tail, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct run *r = s->data;
    ic_buf *b = s == (uv_stream_t *)&r->out ? &r->ob : &r->eb;
    if (n > 0) {
        ic_buf_commit(b, (size_t)n);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(s);
    if (n != UV_EOF && !r->error.code)
        ic_err_set(&r->error, (int)-n, "reading a tool's output: %s", uv_strerror((int)n));
    run_step(r);
}

static void on_written(uv_write_t *w, int status)
{
    struct run *r = w->data;
    /* EPIPE: the tool exited without reading all; its status says why. */
    run_close(r, (uv_handle_t *)&r->in);
}

int ic_net__run(uv_loop_t *loop, char *const argv[], const char *input, ic_net_run_fn done,
                void *ud, ic_err *err)
{
    struct run *r = calloc(1, sizeof(*r));
    if (!r || (input && !(r->input = strdup(input)))) {
        free(r);
        return ic_err_set(err, ENOMEM, "out of memory");
    }
    r->done = done;
    r->ud = ud;
    uv_pipe_t *pipes[3] = {&r->in, &r->out, &r->err};
    for (int i = 0; i < 3; i++) {
        uv_pipe_init(loop, pipes[i], 0);
        pipes[i]->data = r;
    }
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&r->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->err},
    };
    uv_process_options_t opts = {
        .exit_cb = on_exit_cb,
        .file = argv[0],
        .args = (char **)argv,
        .stdio_count = 3,
        .stdio = stdio,
    };
    r->proc.data = r;
    r->open = 4;
    int rc = uv_spawn(loop, &r->proc, &opts);
    if (rc < 0) {
        ic_err_set(err, -rc, "cannot run %s: %s", argv[0], uv_strerror(rc));
        for (int i = 0; i < 3; i++)
            uv_close((uv_handle_t *)pipes[i], on_closed);
        uv_close((uv_handle_t *)&r->proc, on_closed);
        return rc;
    }
    r->pending = 3;
    uv_read_start((uv_stream_t *)&r->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&r->err, on_alloc, on_read);
    size_t len = r->input ? strlen(r->input) : 0;
    if (len) {
        uv_buf_t b = uv_buf_init(r->input, (unsigned)len);
        r->wreq.data = r;
        if (uv_write(&r->wreq, (uv_stream_t *)&r->in, &b, 1, on_written) < 0)
            run_close(r, (uv_handle_t *)&r->in);
    } else {
        run_close(r, (uv_handle_t *)&r->in);
    }
    return 0;
}
