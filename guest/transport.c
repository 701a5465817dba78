/*
 * transport.c - getting a byte stream to the host: the virtio-serial port
 * named "ironclaw" (QEMU), a vsock listener (Firecracker's hybrid vsock,
 * QEMU's vhost-vsock), or a Unix socket (test mode only).
 *
 * All descriptors returned are non-blocking and close-on-exec: the
 * connection loop is the only reader, and no child may inherit the channel.
 */
#include "guest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "ironclaw/cleanup.h"

#define VPORTS "/sys/class/virtio-ports"
#define RETRY_MS 20

static void sleep_retry(void)
{
    struct timespec ts = {0, RETRY_MS * 1000000L};
    nanosleep(&ts, NULL);
}

/* Does /sys/class/virtio-ports/<entry>/name hold `name`? */
static bool port_named(int dfd, const char *entry, const char *name)
{
    char rel[300], buf[256];
    snprintf(rel, sizeof(rel), "%s/name", entry);
    _cleanup_close_ int fd = openat(dfd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return strcmp(buf, name) == 0;
}

/* Fills dev with "/dev/<entry>" of the port called `name`; false if none. */
static bool port_find(const char *name, char *dev, size_t size)
{
    DIR *d = opendir(VPORTS);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.' || !port_named(dirfd(d), de->d_name, name))
            continue;
        snprintf(dev, size, "/dev/%s", de->d_name);
        found = true;
    }
    closedir(d);
    return found;
}

int ic_transport_virtio(const char *name, unsigned timeout_ms, int *fd, ic_err *err)
{
    uint64_t until = ic_now_ms() + timeout_ms;
    char dev[300] = "";
    for (;;) {
        /* The port shows up in sysfs when virtio_console binds it, and in
         * /dev a moment later: both are waited for. */
        if (port_find(name, dev, sizeof(dev))) {
            *fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
            if (*fd >= 0) {
                glog_debug("channel: %s", dev);
                return 0;
            }
            if (errno != ENOENT && errno != ENXIO && errno != ENODEV)
                return ic_err_sys(err, errno, "opening %s", dev);
        }
        if (ic_now_ms() >= until)
            break;
        sleep_retry();
    }
    if (dev[0])
        return ic_err_set(err, ENODEV, "virtio-serial port \"%s\" is %s but cannot be opened", name,
                          dev);
    return ic_err_set(err, ENODEV, "no virtio-serial port named \"%s\" after %u ms", name,
                      timeout_ms);
}

int ic_transport_vsock_listen(unsigned port, unsigned timeout_ms, int *fd, ic_err *err)
{
    uint64_t until = ic_now_ms() + timeout_ms;
    int s;
    /* EAFNOSUPPORT until the vsock transport module has loaded. */
    while ((s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        if (errno != EAFNOSUPPORT || ic_now_ms() >= until)
            return ic_err_sys(err, errno, "vsock socket");
        sleep_retry();
    }
    _cleanup_close_ int sfd = s;
    struct sockaddr_vm sa = {
        .svm_family = AF_VSOCK,
        .svm_cid = VMADDR_CID_ANY,
        .svm_port = port,
    };
    if (bind(sfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return ic_err_sys(err, errno, "binding vsock port %u", port);
    if (listen(sfd, 1) < 0)
        return ic_err_sys(err, errno, "listening on vsock port %u", port);
    glog_debug("channel: vsock port %u", port);
    *fd = TAKE_FD(sfd);
    return 0;
}

int ic_transport_unix_listen(const char *path, int *fd, ic_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len >= sizeof(sa.sun_path))
        return ic_err_set(err, ENAMETOOLONG, "socket path \"%s\" is too long", path);
    memcpy(sa.sun_path, path, len + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return ic_err_set(err, EEXIST, "%s exists and is not a socket", path);
        unlink(path);
    }
    _cleanup_close_ int sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sfd < 0)
        return ic_err_sys(err, errno, "socket");
    if (bind(sfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return ic_err_sys(err, errno, "binding %s", path);
    if (listen(sfd, 8) < 0)
        return ic_err_sys(err, errno, "listening on %s", path);
    *fd = TAKE_FD(sfd);
    return 0;
}

int ic_transport_accept(ic_agent *a, int lfd, int *fd, ic_err *err)
{
    for (;;) {
        struct pollfd pfd[2] = {{.fd = lfd, .events = POLLIN}, {.fd = a->sigfd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return ic_err_sys(err, errno, "poll");
        }
        /* Processes of an earlier connection may still be dying. */
        if (pfd[1].revents)
            ic_agent_reap(a, NULL);
        if (!pfd[0].revents)
            continue;
        int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            *fd = c;
            return 0;
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            return ic_err_sys(err, errno, "accept");
    }
}
