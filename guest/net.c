/*
 * net.c - the guest's side of an opt-in network (docs/network.md): with
 * `ironclaw.net=ADDR/PREFIX,GATEWAY` on the kernel command line, the one
 * NIC (virtio-net, eth0) gets that address, is brought up and gets a
 * default route via the gateway. Plain ioctls, no userland tools: the
 * image's busybox is for the user's commands, not for init. Without the
 * key (`--net none`) the VM has no NIC and nothing is done.
 */
#include "guest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ironclaw/cleanup.h"

#define NIC_WAIT_MS 3000

int ic_guest_net_parse(const char *spec, uint32_t *addr, unsigned *prefix, uint32_t *gw)
{
    char buf[64];
    if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
        return -EINVAL;
    char *slash = strchr(buf, '/'), *comma = strchr(buf, ',');
    if (!slash || !comma || comma < slash)
        return -EINVAL;
    *slash = *comma = '\0';
    struct in_addr a, g;
    char *end;
    unsigned long p = strtoul(slash + 1, &end, 10);
    if (inet_pton(AF_INET, buf, &a) != 1 || inet_pton(AF_INET, comma + 1, &g) != 1 || *end ||
        end == slash + 1 || p < 1 || p > 32)
        return -EINVAL;
    *addr = ntohl(a.s_addr);
    *gw = ntohl(g.s_addr);
    *prefix = (unsigned)p;
    return 0;
}

/* The first interface that is not loopback, waiting for the driver. */
static int find_nic(char name[IF_NAMESIZE])
{
    uint64_t until = ic_now_ms() + NIC_WAIT_MS;
    for (;;) {
        DIR *d = opendir("/sys/class/net");
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.' || strcmp(de->d_name, "lo") == 0 ||
                strlen(de->d_name) >= IF_NAMESIZE)
                continue;
            snprintf(name, IF_NAMESIZE, "%s", de->d_name);
            closedir(d);
            return 0;
        }
        if (d)
            closedir(d);
        if (ic_now_ms() >= until)
            return -ENODEV;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void set_in(struct sockaddr *sa, uint32_t addr)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(addr);
    memcpy(sa, &sin, sizeof(sin));
}

static int configure(int s, const char *nic, uint32_t addr, unsigned prefix, uint32_t gw)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", nic);
    set_in(&ifr.ifr_addr, addr);
    if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
        return -errno;
    uint32_t mask = prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
    set_in(&ifr.ifr_netmask, mask);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
        return -errno;
    /* SIOCSIFADDR left a classful broadcast; a /31 has none (RFC 3021). */
    set_in(&ifr.ifr_broadaddr, prefix >= 31 ? 0 : (addr | ~mask));
    if (ioctl(s, SIOCSIFBRDADDR, &ifr) < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -errno;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        return -errno;
    struct rtentry rt;
    memset(&rt, 0, sizeof(rt));
    set_in(&rt.rt_dst, 0);
    set_in(&rt.rt_genmask, 0);
    set_in(&rt.rt_gateway, gw);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = ifr.ifr_name;
    return ioctl(s, SIOCADDRT, &rt) < 0 ? -errno : 0;
}

void ic_guest_net_up(const char *spec)
{
    uint32_t addr, gw;
    unsigned prefix;
    if (ic_guest_net_parse(spec, &addr, &prefix, &gw) < 0) {
        glog_error("ignoring bad ironclaw.net=%s", spec);
        return;
    }
    char nic[IF_NAMESIZE];
    if (find_nic(nic) < 0) {
        glog_error("ironclaw.net=%s: no network interface appeared", spec);
        return;
    }
    _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int r = s < 0 ? -errno : configure(s, nic, addr, prefix, gw);
    if (r < 0)
        glog_error("configuring %s for ironclaw.net=%s: %s", nic, spec, strerror(-r));
    else
        glog_debug("%s: %s", nic, spec);
}
