/*
 * test_launch.c - the launch trampoline (src/vm/launch.c) run for real:
 * the ironclaw binary re-executed with the launch marker, as vm.c does.
 * Each failing step must report "<step>: <reason>" on the status pipe and
 * exec nothing; a good launch closes the pipe with no message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launch_run.h"

static int exit_code(const struct launched *l)
{
    return WIFEXITED(l->status) ? WEXITSTATUS(l->status) : -1;
}

static void test_good_launch_closes_pipe_silently(void **state)
{
    const char *extra[] = {NULL};
    const char *prog[] = {"/bin/sh", "-c", "echo ran; ls /proc/self/fd | wc -l", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 0);
    assert_string_equal(l.msg, "");
    /* stdin, stdout, stderr and the directory ls reads: no inherited fd. */
    assert_string_equal(l.out, "ran\n4\n");
}

static void test_missing_netns_fails_closed(void **state)
{
    const char *extra[] = {"--netns", "/nonexistent/netns", NULL};
    const char *prog[] = {"/bin/echo", "must-not-run", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 127);
    assert_string_equal(l.out, "");
    assert_non_null(strstr(l.msg, "network namespace: cannot open /nonexistent/netns"));
    assert_non_null(strstr(l.msg, "No such file or directory"));
}

static void test_bad_options_are_reported(void **state)
{
    const char *extra[] = {"--frobnicate", NULL};
    const char *prog[] = {"/bin/echo", "must-not-run", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 127);
    assert_string_equal(l.out, "");
    assert_non_null(strstr(l.msg, "options: unknown launch option '--frobnicate'"));

    const char *both[] = {"--new-netns", "--netns", "/proc/self/ns/net", NULL};
    launch_run(both, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 127);
    assert_non_null(strstr(l.msg, "exclude each other"));
}

static void test_exec_failure_is_reported(void **state)
{
    const char *extra[] = {NULL};
    const char *prog[] = {"/no/such/vmm", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 127);
    assert_non_null(strstr(l.msg, "exec: /no/such/vmm: No such file or directory"));
}

static void test_new_netns_is_empty(void **state)
{
    if (geteuid() != 0) {
        print_message("SKIP: an empty network namespace needs root\n");
        skip();
    }
    char ours[128] = "";
    ssize_t n = readlink("/proc/self/ns/net", ours, sizeof(ours) - 1);
    assert_true(n > 0);
    const char *extra[] = {"--new-netns", NULL};
    const char *prog[] = {"/bin/sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net", NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    assert_int_equal(exit_code(&l), 0);
    assert_string_equal(l.msg, "");
    /* Another namespace, holding nothing but loopback. */
    char want_not[160];
    snprintf(want_not, sizeof(want_not), "%s\n", ours);
    assert_null(strstr(l.out, want_not));
    assert_non_null(strstr(l.out, "net:["));
    assert_non_null(strstr(l.out, "\nlo\n"));
    const char *after_lo = strstr(l.out, "\nlo\n") + 4;
    assert_string_equal(after_lo, "");
}

/* A persistent tap in our own namespace, for the trampoline to open. */
static int make_tap(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    int r = ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static void drop_tap(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) == 0)
        ioctl(fd, TUNSETPERSIST, 0);
    close(fd);
}

/* --tap opens the tap for the VMM on fd 6 (a jailed VMM could not), and
 * --tap-owner hands it to the jail's user; a missing tap fails closed. */
static void test_tap_is_opened_and_handed_over(void **state)
{
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0) {
        print_message("SKIP: taps need root and /dev/net/tun\n");
        skip();
    }
    char name[IFNAMSIZ];
    snprintf(name, sizeof(name), "ictl%d", (int)getpid() % 100000);
    assert_int_equal(make_tap(name), 0);
    char script[256];
    snprintf(script, sizeof(script),
             "readlink /proc/self/fd/6; cat /sys/class/net/%s/owner /sys/class/net/%s/group", name,
             name);
    const char *extra[] = {"--tap", name, "--tap-owner", "4242:4343", NULL};
    const char *prog[] = {"/bin/sh", "-c", script, NULL};
    struct launched l;
    launch_run(extra, prog, NULL, &l);
    drop_tap(name);
    assert_int_equal(exit_code(&l), 0);
    assert_string_equal(l.msg, "");
    assert_string_equal(l.out, "/dev/net/tun\n4242\n4343\n");

    const char *missing[] = {"--new-netns", "--tap", name, NULL};
    const char *echo[] = {"/bin/echo", "must-not-run", NULL};
    launch_run(missing, echo, NULL, &l);
    assert_int_equal(exit_code(&l), 127);
    assert_string_equal(l.out, "");
    assert_non_null(strstr(l.msg, "tap: cannot attach to the tap"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_launch_closes_pipe_silently),
        cmocka_unit_test(test_missing_netns_fails_closed),
        cmocka_unit_test(test_bad_options_are_reported),
        cmocka_unit_test(test_exec_failure_is_reported),
        cmocka_unit_test(test_new_netns_is_empty),
        cmocka_unit_test(test_tap_is_opened_and_handed_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
