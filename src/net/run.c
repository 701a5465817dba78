/*
 * run.c - running the firewall tools (iptables-restore, iptables-save)
 * with posix_spawn, blocking: from the thread pool (fw.c queues them
 * there), the reaper and the CLI. A text goes to stdin; stdout and stderr
 * are collected; a tool that hangs is killed after its timeout.
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
