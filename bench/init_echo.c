/*
 * init_echo.c - PID 1 of the raw transport baseline (bench/run.sh).
 *
 * Boots like ironclaw's guest as far as the channel goes (devtmpfs, sysfs,
 * the modules in /etc/ironclaw/modules.order loaded in order, the
 * virtio-serial port named "ironclaw" found through sysfs), then echoes
 * every byte it reads from the port back to it, with no framing and no
 * other process in between. bench_echo on the host measures the result.
 * When the host closes its end the port reads EOF and the VM powers off.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MODULES_ORDER "/etc/ironclaw/modules.order"
#define PORT_NAME "ironclaw"
#define READY_MARKER "IC-ECHO-READY\n"
#define BUF_SIZE (256u * 1024u)
#define PORT_WAIT_MS 20000

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
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the host closed its end (or the port failed) */
        if (write_all(fd, buf, (size_t)n) < 0)
            break;
    }
    power_off();
}
