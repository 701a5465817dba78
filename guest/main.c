/*
 * main.c - ironclaw-guest's entry point: picks the mode and runs it.
 *
 * As PID 1 (the only mode used in a VM) it sets the system up, opens the
 * channel named on the kernel command line, serves the host, and powers
 * the VM off when the host is gone. The test modes serve the same protocol
 * on a socket outside any VM so that the agent can be tested on the build
 * host; they refuse to run as PID 1 and say loudly that nothing is
 * isolated. See docs/guest.md.
 */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct opts {
    int test_fd;               /* --test-fd N, -1 when absent */
    const char *test_listen;   /* --test-listen PATH */
    bool once;
    bool debug;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ironclaw-guest                    (as PID 1 of an ironclaw microVM)\n"
            "       ironclaw-guest --test-fd N [--debug]\n"
            "       ironclaw-guest --test-listen PATH [--once] [--debug]\n"
            "\n"
            "The guest agent of ironclaw. As PID 1 it mounts the basic filesystems,\n"
            "loads the modules in /etc/ironclaw/modules.order, opens the channel chosen\n"
            "by ironclaw.transport= on the kernel command line and serves the host.\n"
            "\n"
            "Test modes (no VM isolation: processes run on this machine):\n"
            "  --test-fd N           serve the connected stream socket N, exit when it closes\n"
            "  --test-listen PATH    serve connections on a Unix socket, one at a time\n"
            "  --once                with --test-listen: exit after the first connection\n"
            "  --debug               log everything on stderr\n"
            "  -h, --help            this help\n"
            "      --version         print the version\n");
}

/* 0, 1 to exit successfully (--help), or -1 on a usage error. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof(*o));
    o->test_fd = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--test-fd") == 0 && i + 1 < argc) {
            char *end;
            long fd = strtol(argv[++i], &end, 10);
            if (!*argv[i] || *end || fd < 0 || fd > 1 << 20) {
                fprintf(stderr, IC_GUEST_NAME ": bad --test-fd value \"%s\"\n", argv[i]);
                return -1;
            }
            o->test_fd = (int)fd;
        } else if (strcmp(a, "--test-listen") == 0 && i + 1 < argc) {
            o->test_listen = argv[++i];
        } else if (strcmp(a, "--once") == 0) {
            o->once = true;
        } else if (strcmp(a, "--debug") == 0) {
            o->debug = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--version") == 0) {
            printf("%s\n", IC_GUEST_AGENT);
            return 1;
        } else {
            fprintf(stderr, IC_GUEST_NAME ": unknown argument \"%s\"\n", a);
            usage(stderr);
            return -1;
        }
    }
    if ((o->test_fd >= 0) == (o->test_listen != NULL)) {
        fprintf(stderr, IC_GUEST_NAME ": give exactly one of --test-fd and --test-listen "
                        "(without them it only runs as PID 1)\n");
        return -1;
    }
    return 0;
}

/* ---- PID 1 ------------------------------------------------------------------ */

static bool argv_has_test_flag(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--test", 6) == 0)
            return true;
    return false;
}

static void serve_vm(ic_agent *a, const ic_boot_cfg *cfg)
{
    ic_err err = {0};
    int fd = -1;
    bool vsock = strcmp(cfg->transport, "vsock") == 0;
    int r;
    if (vsock) {
        int lfd = -1;
        r = ic_transport_vsock_listen(cfg->vsock_port, 10000, &lfd, &err);
        if (r == 0) {
            /* One host connection; the listener is closed once it is there. */
            r = ic_transport_accept(a, lfd, &fd, &err);
            close(lfd);
        }
    } else {
        if (strcmp(cfg->transport, "virtio-serial") != 0)
            glog_error("unknown ironclaw.transport=%s, using virtio-serial", cfg->transport);
        r = ic_transport_virtio("ironclaw", 10000, &fd, &err);
    }
    if (r < 0) {
        glog_error("no channel to the host: %s", err.msg);
        return;
    }
    r = ic_conn_serve(a, fd, !vsock, &err);
    if (r < 0)
        glog_error("connection ended: %s", err.msg);
    else
        glog_debug(r == IC_END_POWEROFF ? "poweroff requested" : "the host closed the channel");
    close(fd);
}

static int run_pid1(int argc, char **argv)
{
    ic_log_set_level(IC_LOG_ERROR);
    ic_boot_cfg cfg;
    ic_pid1_setup(&cfg);
    if (argv_has_test_flag(argc, argv)) {
        glog_error("test modes are refused as PID 1");
        ic_pid1_poweroff(&cfg);
    }
    ic_agent a;
    ic_err err;
    if (ic_agent_init(&a, true, &err) < 0)
        glog_error("%s", err.msg);
    else
        serve_vm(&a, &cfg);
    /* Every way out ends the VM: init must never exit. */
    ic_pid1_poweroff(&cfg);
}

/* ---- test modes ----------------------------------------------------------- */

/* Child processes get 0-2 whatever happens; make sure those numbers are
 * taken so no pipe of ours lands on them. */
static void stdio_ensure(void)
{
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) != i)
            break;
}

static int serve_test_fd(ic_agent *a, int fd)
{
    ic_err err = {0};
    if (fcntl(fd, F_GETFD) < 0) {
        glog_error("--test-fd %d: %s", fd, strerror(errno));
        return 1;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int r = ic_conn_serve(a, fd, false, &err);
    close(fd);
    if (r < 0) {
        glog_error("connection ended: %s", err.msg);
        return 1;
    }
    return 0;
}

static int serve_test_listen(ic_agent *a, const char *path, bool once)
{
    ic_err err = {0};
    int lfd;
    if (ic_transport_unix_listen(path, &lfd, &err) < 0) {
        glog_error("%s", err.msg);
        return 1;
    }
    int status = 0;
    do {
        int fd;
        if (ic_transport_accept(a, lfd, &fd, &err) < 0) {
            glog_error("%s", err.msg);
            status = 1;
            break;
        }
        int r = ic_conn_serve(a, fd, false, &err);
        close(fd);
        status = r < 0;
        if (r < 0)
            glog_error("connection ended: %s", err.msg);
    } while (!once);
    close(lfd);
    unlink(path);
    return status;
}

static int run_test(const struct opts *o)
{
    ic_log_set_level(o->debug ? IC_LOG_DEBUG : IC_LOG_WARN);
    stdio_ensure();
    if (o->test_listen)
        fprintf(stderr, IC_GUEST_NAME ": TEST MODE on %s (no VM isolation)\n", o->test_listen);
    else
        fprintf(stderr, IC_GUEST_NAME ": TEST MODE on fd %d (no VM isolation)\n", o->test_fd);
    ic_agent a;
    ic_err err;
    int status;
    if (ic_agent_init(&a, false, &err) < 0) {
        glog_error("%s", err.msg);
        status = 1;
    } else if (o->test_listen) {
        status = serve_test_listen(&a, o->test_listen, o->once);
    } else {
        status = serve_test_fd(&a, o->test_fd);
    }
    ic_agent_free(&a);
    return status;
}

int main(int argc, char **argv)
{
    if (getpid() == 1)
        return run_pid1(argc, argv);
    struct opts o;
    int r = parse_args(argc, argv, &o);
    if (r != 0)
        return r > 0 ? 0 : 2;
    return run_test(&o);
}
