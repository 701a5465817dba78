/*
 * pid1.c - what the agent does because it is init: the filesystems every
 * program expects, the console, the kernel command line, hostname,
 * loopback, kernel modules, and a clean poweroff (docs/guest.md).
 *
 * Nothing here is fatal: a step that fails is logged and the next one
 * runs, because the best outcome of a broken boot is still a host that
 * hears the guest's HELLO or sees the console explain why not. Reaping
 * orphans is done by the connection loop (ic_agent_reap).
 */
#include "guest.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ironclaw/cleanup.h"

#define MODULES_ORDER "/etc/ironclaw/modules.order"
#define HOSTNAME "ironclaw"

/* ---- kernel command line ---------------------------------------------------- */

static void cfg_set(ic_boot_cfg *cfg, const char *key, const char *val)
{
    if (strcmp(key, "ironclaw.transport") == 0) {
        snprintf(cfg->transport, sizeof(cfg->transport), "%s", val);
    } else if (strcmp(key, "ironclaw.vsock_port") == 0) {
        char *end;
        unsigned long port = strtoul(val, &end, 10);
        if (*val && !*end && port > 0 && port <= 0xffffffffUL)
            cfg->vsock_port = (unsigned)port;
        else
            glog_error("ignoring bad ironclaw.vsock_port=%s", val);
    } else if (strcmp(key, "ironclaw.debug") == 0) {
        cfg->debug = strcmp(val, "0") != 0;
    } else if (strcmp(key, "ironclaw.poweroff") == 0) {
        cfg->poweroff_reset = strcmp(val, "reset") == 0;
    } else if (strcmp(key, "ironclaw.net") == 0) {
        snprintf(cfg->net, sizeof(cfg->net), "%s", val);
    }
}

void ic_boot_cfg_parse(ic_boot_cfg *cfg, const char *cmdline)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->transport, sizeof(cfg->transport), "virtio-serial");
    cfg->vsock_port = 1024;
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        /* One word, with "double quotes" grouping as the kernel does. */
        char word[512];
        size_t n = 0;
        bool quoted = false;
        for (; *p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n')); p++) {
            if (*p == '"')
                quoted = !quoted;
            else if (n + 1 < sizeof(word))
                word[n++] = *p;
        }
        word[n] = '\0';
        char *eq = strchr(word, '=');
        if (eq) {
            *eq = '\0';
            cfg_set(cfg, word, eq + 1);
        }
    }
}

static void read_cmdline(ic_boot_cfg *cfg)
{
    char buf[4096] = "";
    _cleanup_close_ int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
    } else {
        glog_error("cannot read /proc/cmdline: %s", strerror(errno));
    }
    ic_boot_cfg_parse(cfg, buf);
}

/* ---- filesystems and console ------------------------------------------------- */

static void mount_one(const char *src, const char *target, const char *type,
                      unsigned long flags, const char *data)
{
    if (mkdir(target, 0755) < 0 && errno != EEXIST)
        glog_error("mkdir %s: %s", target, strerror(errno));
    if (mount(src, target, type, flags, data) < 0 && errno != EBUSY)
        glog_error("mounting %s on %s: %s", type, target, strerror(errno));
}

static void mount_all(void)
{
    const unsigned long nosuid_nodev_noexec = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    mount_one("proc", "/proc", "proc", nosuid_nodev_noexec, NULL);
    mount_one("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, NULL);
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
    mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    /* The conventional links shells and programs expect in /dev. */
    static const char *const links[][2] = {
        {"/proc/self/fd", "/dev/fd"},
        {"/proc/self/fd/0", "/dev/stdin"},
        {"/proc/self/fd/1", "/dev/stdout"},
        {"/proc/self/fd/2", "/dev/stderr"},
    };
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
            glog_debug("symlink %s: %s", links[i][1], strerror(errno));
}

/* The kernel gives init /dev/console as fds 0-2 only when the initramfs
 * has the node; after devtmpfs is mounted it exists for sure. */
static void console_open(void)
{
    if (fcntl(STDERR_FILENO, F_GETFD) >= 0)
        return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0)
            dup2(fd, i);
    if (fd > 2)
        close(fd);
}

/* ---- network and modules ---------------------------------------------------- */

static void loopback_up(void)
{
    _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        glog_error("loopback: %s", strerror(errno));
        return;
    }
    /* The kernel assigns 127.0.0.1/8 and ::1 when lo comes up. */
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        glog_error("bringing lo up: %s", strerror(errno));
}

static int load_module(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int ic_pid1_load_modules(const char *order_file)
{
    _cleanup_fclose_ FILE *f = fopen(order_file, "re");
    if (!f) {
        if (errno != ENOENT)
            glog_error("%s: %s", order_file, strerror(errno));
        return errno == ENOENT ? 0 : 1;
    }
    char line[IC_GUEST_PATH_MAX];
    int failed = 0;
    while (fgets(line, sizeof(line), f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, "\r\n");
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        s[n] = '\0';
        if (!*s || *s == '#')
            continue;
        int r = load_module(s);
        if (r < 0) {
            glog_error("loading module %s: %s", s, strerror(-r));
            failed++;
        } else {
            glog_debug("loaded %s", s);
        }
    }
    return failed;
}

void ic_pid1_setup(ic_boot_cfg *cfg)
{
    mount_all();
    console_open();
    read_cmdline(cfg);
    ic_log_set_level(cfg->debug ? IC_LOG_DEBUG : IC_LOG_ERROR);
    glog_debug("%s starting as PID 1", IC_GUEST_AGENT);
    if (sethostname(HOSTNAME, strlen(HOSTNAME)) < 0)
        glog_error("sethostname: %s", strerror(errno));
    loopback_up();
    ic_pid1_load_modules(MODULES_ORDER);
    if (cfg->net[0])
        ic_guest_net_up(cfg->net);
}

/* ---- poweroff --------------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Reaps until no child is left or the time is up; true when none is left. */
static bool reap_for(uint64_t ms)
{
    uint64_t until = ic_now_ms() + ms;
    for (;;) {
        pid_t pid;
        while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
            ;
        if (pid < 0 && errno == ECHILD)
            return true;
        if (ic_now_ms() >= until)
            return false;
        sleep_ms(10);
    }
}

void ic_pid1_poweroff(const ic_boot_cfg *cfg)
{
    glog_debug("powering off");
    /* kill(-1) reaches every process but init itself. */
    kill(-1, SIGTERM);
    if (!reap_for(1000)) {
        kill(-1, SIGKILL);
        reap_for(1000);
    }
    sync();
    if (!cfg->poweroff_reset)
        reboot(RB_POWER_OFF);
    /* Without ACPI poweroff a reset ends the VM (QEMU runs -no-reboot). */
    reboot(RB_AUTOBOOT);
    glog_error("cannot power off: %s", strerror(errno));
    for (;;)
        pause();
}
