/*
 * init_echo.c - PID 1 of the raw transport baseline (bench/run.sh).
 *
 * Boots like ironclaw's guest as far as the channel goes (devtmpfs, sysfs,
 * the modules in /etc/ironclaw/modules.order loaded in order, the
 * virtio-serial port named "ironclaw" found through sysfs), then echoes
 * every byte it reads from the port back to it, with no framing and no
 * other process in between. bench_echo on the host measures the result.
 * When the host closes its end the port reads EOF and the VM powers off.
 *
 * The echo uses the port as well as it can be used: non-blocking, reads
 * until the port is dry (it gives at most a page per read) and writes as
 * much as it holds (the port takes up to 32 KiB per write). A blocking
 * page-by-page echo would be a slower baseline than the transport allows.
 *
 * With bench.via=cat on the kernel command line the bytes instead take the
 * path a command's stdin and stdout take under the guest agent: port ->
 * pipe -> cat -> pipe -> port (pipes of the agent's size), still with no
 * framing: the baseline for what ironclaw itself adds to `exec -- cat`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MODULES_ORDER "/etc/ironclaw/modules.order"
#define PORT_NAME "ironclaw"
#define READY_MARKER "IC-ECHO-READY\n"
#define BUF_SIZE ((size_t)256 * 1024)
#define PORT_WAIT_MS 20000
#define PIPE_SIZE (1024 * 1024)   /* as the guest agent's (guest/guest.h) */

static char buf[BUF_SIZE];

static void say(const char *what, int code)
{
    fprintf(stderr, "init_echo: %s: %s\n", what, strerror(code));
}

static void power_off(void)
{
    sync();
    reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    for (;;)
        pause();
}

static void mount_fs(const char *src, const char *target, const char *type)
{
    mkdir(target, 0755);
    if (mount(src, target, type, 0, NULL) < 0 && errno != EBUSY)
        say(target, errno);
}

static void console_open(void)
{
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0)
            dup2(fd, i);
    if (fd > 2)
        close(fd);
}

static void load_modules(void)
{
    FILE *f = fopen(MODULES_ORDER, "re");
    if (!f) {
        say(MODULES_ORDER, errno);
        return;
    }
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
            say(line, errno);
        if (fd >= 0)
            close(fd);
    }
    fclose(f);
}

/* "/dev/vportNpM" of the port whose sysfs name is PORT_NAME. */
static bool port_find(char *dev, size_t size)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        char path[512], name[64] = "";
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, name, sizeof(name) - 1);
        close(fd);
        name[n > 0 ? n : 0] = '\0';
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, PORT_NAME) == 0) {
            snprintf(dev, size, "/dev/%s", de->d_name);
            found = true;
        }
    }
    closedir(d);
    return found;
}

static int port_open(void)
{
    char dev[300];
    struct timespec pause_ts = {0, 10 * 1000000L};
    for (int waited = 0; waited < PORT_WAIT_MS; waited += 10) {
        if (port_find(dev, sizeof(dev))) {
            int fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC);
            if (fd >= 0)
                return fd;
        }
        nanosleep(&pause_ts, NULL);
    }
    say("no virtio-serial port named " PORT_NAME, ENODEV);
    return -1;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static bool via_cat(void)
{
    char line[4096] = "";
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, line, sizeof(line) - 1);
    close(fd);
    line[n > 0 ? n : 0] = '\0';
    return strstr(line, "bench.via=cat") != NULL;
}

/* One direction of the relay: bytes read from `from`, not yet written to `to`. */
struct leg {
    int from, to;
    char *buf;
    size_t have, off;
    bool eof;
};

/* Moves what it can without blocking: reads until the buffer is full or
 * the source is dry (a virtio port gives at most a page per read), writes
 * until the sink is full. The buffer empties only once everything in it is
 * written, so a leg that polls for nothing always has bytes pending.
 * False on a hard error. */
static bool leg_step(struct leg *l, short rev_from)
{
    while (!l->eof && l->have < BUF_SIZE && (rev_from & (POLLIN | POLLHUP))) {
        ssize_t n = read(l->from, l->buf + l->have, BUF_SIZE - l->have);
        if (n > 0)
            l->have += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            l->eof = true;
        else
            break;
    }
    while (l->off < l->have && l->to >= 0) {
        ssize_t w = write(l->to, l->buf + l->off, l->have - l->off);
        if (w > 0)
            l->off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        else
            break;
    }
    if (l->off == l->have) /* all passed on: the whole buffer is free again */
        l->off = l->have = 0;
    return true;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void echo_direct(int port)
{
    set_nonblock(port);
    struct leg back = {port, port, buf, 0, 0, false};
    while (!back.eof || back.off < back.have) {
        struct pollfd pf = {port, (short)((!back.eof && back.have < BUF_SIZE ? POLLIN : 0) |
                                          (back.off < back.have ? POLLOUT : 0)), 0};
        if (poll(&pf, 1, -1) < 0 && errno != EINTR)
            break;
        if (!leg_step(&back, pf.revents))
            break;
    }
}

/* port -> pipe -> cat -> pipe -> port, relayed by one process with poll()
 * on non-blocking descriptors, as the guest agent does, minus the frames. */
static void echo_via_cat(int port)
{
    static char back[BUF_SIZE];
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        say("pipe", errno);
        return;
    }
    fcntl(in[1], F_SETPIPE_SZ, PIPE_SIZE);
    fcntl(out[1], F_SETPIPE_SZ, PIPE_SIZE);
    pid_t cat = fork();
    if (cat == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl("/bin/cat", "cat", (char *)NULL);
        say("/bin/cat", errno);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    set_nonblock(port);
    set_nonblock(in[1]);
    set_nonblock(out[0]);
    struct leg to_cat = {port, in[1], buf, 0, 0, false};
    struct leg from_cat = {out[0], port, back, 0, 0, false};
    while (!from_cat.eof || from_cat.off < from_cat.have) {
        /* Once the host's bytes are all in cat's stdin, close it. */
        if (to_cat.eof && to_cat.off == to_cat.have && to_cat.to >= 0) {
            close(to_cat.to);
            to_cat.to = -1;
        }
        struct pollfd pf[3] = {
            {port, (short)((to_cat.have < BUF_SIZE && !to_cat.eof ? POLLIN : 0) |
                           (from_cat.off < from_cat.have ? POLLOUT : 0)), 0},
            {to_cat.to, to_cat.off < to_cat.have ? POLLOUT : 0, 0},
            {out[0], from_cat.have < BUF_SIZE && !from_cat.eof ? POLLIN : 0, 0},
        };
        if (poll(pf, 3, -1) < 0 && errno != EINTR)
            break;
        if (!leg_step(&to_cat, pf[0].revents) || !leg_step(&from_cat, pf[2].revents))
            break;
    }
    waitpid(cat, NULL, 0);
}

int main(void)
{
    mount_fs("devtmpfs", "/dev", "devtmpfs");
    console_open();
    mount_fs("proc", "/proc", "proc");
    mount_fs("sysfs", "/sys", "sysfs");
    load_modules();
    int fd = port_open();
    if (fd < 0)
        power_off();
    if (write_all(fd, READY_MARKER, strlen(READY_MARKER)) < 0)
        power_off();
    if (via_cat())
        echo_via_cat(fd);
    else
        echo_direct(fd);
    power_off();
}
