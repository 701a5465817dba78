/*
 * bench_echo.c - host side of the raw transport baseline (bench/run.sh).
 *
 *   bench_echo SOCK MIB BOOT_SECS -- QEMU [ARG...]
 *
 * Listens on the Unix socket SOCK, starts QEMU (whose virtio-serial
 * chardev connects to SOCK, exactly as ironclaw's qemu driver sets it up),
 * waits for the guest's init_echo to announce itself, then writes MIB MiB
 * while reading the echo back at the same time. The throughput is bytes
 * echoed over the time from the first byte written to the last byte read
 * back; every byte is checked. Prints one JSON object on stdout. No
 * ironclaw code is involved: this is the ceiling ironclaw's own transport
 * is compared against.
 */
#include "ironclaw/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_MARKER "IC-ECHO-READY\n"
#define CHUNK ((size_t)64 * 1024)
#define READ_BUF ((size_t)256 * 1024)
#define STALL_TIMEOUT_MS 30000
#define EXIT_TIMEOUT_MS 10000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_echo: %s: %s\n", what, strerror(errno));
    return -1;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return fail(path);
    }
    memcpy(sa.sun_path, path, len + 1);
    unlink(path);
    _cleanup_close_ int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return fail("socket");
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 1) < 0)
        return fail(path);
    return TAKE_FD(s);
}

/* QEMU dies with us, so an interrupted benchmark leaves no VM behind. */
static pid_t spawn(char **argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execvp(argv[0], argv);
        fprintf(stderr, "bench_echo: %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r;
    while ((r = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    if (r < 0)
        return fail("poll");
    if (r == 0) {
        errno = ETIMEDOUT;
        return -1;
    }
    return 0;
}

static int accept_qemu(int lfd, int boot_ms)
{
    if (wait_fd(lfd, POLLIN, boot_ms) < 0)
        return fail("QEMU did not connect");
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    return c < 0 ? fail("accept") : c;
}

/* Reads until the guest's marker has arrived; nothing may follow it. */
static int wait_marker(int fd, int boot_ms)
{
    char got[sizeof(READY_MARKER)] = "";
    size_t have = 0, want = strlen(READY_MARKER);
    while (have < want) {
        if (wait_fd(fd, POLLIN, boot_ms) < 0)
            return fail("the guest did not announce itself");
        ssize_t n = read(fd, got + have, want - have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            errno = n == 0 ? EPIPE : errno;
            return fail("reading the guest's marker");
        }
        have += (size_t)n;
    }
    if (memcmp(got, READY_MARKER, want) != 0) {
        errno = EPROTO;
        return fail("unexpected bytes instead of the guest's marker");
    }
    return 0;
}

static uint8_t pattern[CHUNK];

/* Byte i of the stream is pattern[i % CHUNK]: the echo is checked. */
static bool echo_ok(const uint8_t *p, size_t n, uint64_t pos)
{
    while (n > 0) {
        size_t off = (size_t)(pos % CHUNK), len = CHUNK - off;
        if (len > n)
            len = n;
        if (memcmp(p, pattern + off, len) != 0)
            return false;
        p += len, n -= len, pos += len;
    }
    return true;
}

struct result {
    uint64_t bytes, ns;
};

static int transfer(int fd, uint64_t total, struct result *res)
{
    _cleanup_free_ uint8_t *in = malloc(READ_BUF);
    if (!in)
        return fail("malloc");
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
        return fail("fcntl"); // NOLINT(clang-analyzer-unix.Malloc): freed by _cleanup_free_
    uint64_t sent = 0, got = 0, t0 = now_ns();
    while (got < total) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent < total ? POLLOUT : 0)};
        int r = poll(&p, 1, STALL_TIMEOUT_MS);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            errno = r == 0 ? ETIMEDOUT : errno;
            return fail("echo stalled");
        }
        if ((p.revents & POLLOUT) && sent < total) {
            size_t off = (size_t)(sent % CHUNK), len = CHUNK - off;
            if (len > total - sent)
                len = (size_t)(total - sent);
            ssize_t n = write(fd, pattern + off, len);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return fail("writing to the guest");
            if (n > 0)
                sent += (uint64_t)n;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(fd, in, READ_BUF);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return fail("reading the echo");
            if (n == 0) {
                errno = EPIPE;
                return fail("the guest closed the channel early");
            }
            if (n > 0) {
                if (!echo_ok(in, (size_t)n, got)) {
                    errno = EILSEQ;
                    return fail("the echo differs from what was sent");
                }
                got += (uint64_t)n;
            }
        }
    }
    res->bytes = got;
    res->ns = now_ns() - t0;
    return 0;
}

/* The guest powers off when the channel closes; kill QEMU if it does not. */
static void reap(pid_t pid)
{
    for (int waited = 0; waited < EXIT_TIMEOUT_MS; waited += 10) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "bench_echo: QEMU did not exit; killing it\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: bench_echo SOCK MIB BOOT_SECS -- QEMU [ARG...]\n");
        return 2;
    }
    const char *sock = argv[1];
    uint64_t total = strtoull(argv[2], NULL, 10) << 20;
    long boot_secs = strtol(argv[3], NULL, 10);
    if (total == 0 || boot_secs <= 0 || boot_secs > 3600) {
        fprintf(stderr, "bench_echo: MIB and BOOT_SECS must be positive numbers\n");
        return 2;
    }
    int boot_ms = (int)boot_secs * 1000;
    for (size_t i = 0; i < CHUNK; i++)
        pattern[i] = (uint8_t)(i * 7 + i / 251);
    signal(SIGPIPE, SIG_IGN);

    _cleanup_close_ int lfd = listen_on(sock);
    if (lfd < 0)
        return 1;
    uint64_t t_spawn = now_ns();
    pid_t qemu = spawn(argv + 5);
    if (qemu < 0)
        return 1;
    int rc = 1;
    struct result res = {0};
    uint64_t ready_ns = 0;
    _cleanup_close_ int fd = accept_qemu(lfd, boot_ms);
    unlink(sock);
    if (fd >= 0 && wait_marker(fd, boot_ms) == 0) {
        ready_ns = now_ns() - t_spawn;
        if (transfer(fd, total, &res) == 0)
            rc = 0;
    }
    if (fd >= 0)
        close(TAKE_FD(fd));
    reap(qemu);
    if (rc == 0) {
        double secs = (double)res.ns / 1e9;
        printf("{\"bytes\": %" PRIu64 ", \"seconds\": %.6f, \"mib_s\": %.2f, \"ready_ms\": %.1f}\n",
               res.bytes, secs, (double)res.bytes / (1024.0 * 1024.0) / secs,
               (double)ready_ns / 1e6);
    }
    return rc;
}
