/*
 * link.c - the VM's links, with rtnetlink and ioctls, no external tools:
 * its network namespace (bind-mounted into the VM directory), the tap the
 * VMM attaches to, the veth pair to the host, addresses, routes, and the
 * route lookups that find the uplinks. Blocking: runs in the thread pool.
 *
 * A namespace is entered by one short-lived thread of our own, which
 * creates it (unshare), bind-mounts it, makes the tap and opens a netlink
 * socket inside, and then ends. No thread ever switches back, so no pool
 * thread can be left in a VM's namespace; the socket keeps working in the
 * namespace it was opened in.
 */
#include "net/net_int.h"

#include "ironclaw/cleanup.h"
#include "ironclaw/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define NL_BUF 8192

/* ---- rtnetlink ------------------------------------------------------------- */

struct nlmsg {
    union {
        struct nlmsghdr h;
        char buf[NL_BUF];
    };
};

static int nl_open(ic_err *err)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot open a netlink socket");
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        return ic_err_sys(err, e, "cannot bind a netlink socket");
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void *nl_init(struct nlmsg *m, uint16_t type, uint16_t flags, size_t payload)
{
    memset(m, 0, sizeof(struct nlmsghdr) + NLMSG_ALIGN(payload));
    m->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(payload);
    m->h.nlmsg_type = type;
    m->h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    return NLMSG_DATA(&m->h);
}

static struct rtattr *nl_attr(struct nlmsg *m, uint16_t type, const void *data, size_t len)
{
    size_t at = NLMSG_ALIGN(m->h.nlmsg_len);
    if (at + RTA_SPACE(len) > sizeof(m->buf))
        return NULL;
    struct rtattr *a = (struct rtattr *)(m->buf + at);
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(a), data, len);
    m->h.nlmsg_len = (uint32_t)(at + RTA_SPACE(len));
    return a;
}

static void nl_nest_end(struct nlmsg *m, struct rtattr *nest)
{
    if (nest)
        nest->rta_len = (unsigned short)(m->buf + m->h.nlmsg_len - (char *)nest);
}

/* Sends one request; the answer (if `reply`) or the ack's error. */
static int nl_talk(int fd, struct nlmsg *m, struct nlmsg *reply)
{
    static const struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, m->buf, m->h.nlmsg_len, 0, (const struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return -errno;
    struct nlmsg in;
    for (;;) {
        ssize_t got = recv(fd, in.buf, sizeof(in.buf), 0);
        if (got < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        size_t left = (size_t)got;
        for (struct nlmsghdr *h = &in.h;
             left >= sizeof(*h) && h->nlmsg_len >= sizeof(*h) && h->nlmsg_len <= left;
             left -= NLMSG_ALIGN(h->nlmsg_len) < left ? NLMSG_ALIGN(h->nlmsg_len) : left,
             h = (struct nlmsghdr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len))) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error; /* 0: the ack */
            }
            if (reply && h->nlmsg_len <= sizeof(reply->buf))
                memcpy(reply->buf, h, h->nlmsg_len);
        }
    }
}

static int nl_link_index(int fd, const char *name)
{
    struct nlmsg m, reply;
    nl_init(&m, RTM_GETLINK, 0, sizeof(struct ifinfomsg));
    nl_attr(&m, IFLA_IFNAME, name, strlen(name) + 1);
    memset(&reply, 0, sizeof(struct nlmsghdr));
    int r = nl_talk(fd, &m, &reply);
    if (r < 0)
        return r;
    if (reply.h.nlmsg_type != RTM_NEWLINK)
        return -ENODEV;
    const struct ifinfomsg *ifi = NLMSG_DATA(&reply.h);
    return ifi->ifi_index;
}

static int nl_link_up(int fd, int index)
{
    struct nlmsg m;
    struct ifinfomsg *ifi = nl_init(&m, RTM_NEWLINK, 0, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    return nl_talk(fd, &m, NULL);
}

static int nl_link_del(int fd, const char *name)
{
    struct nlmsg m;
    struct ifinfomsg *ifi = nl_init(&m, RTM_DELLINK, 0, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    nl_attr(&m, IFLA_IFNAME, name, strlen(name) + 1);
    return nl_talk(fd, &m, NULL);
}

/* A veth pair: `name` here, `peer` created straight in the namespace ns_fd. */
static int nl_veth_add(int fd, const char *name, const char *peer, int ns_fd)
{
    struct nlmsg m;
    struct ifinfomsg *ifi = nl_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    nl_attr(&m, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *info = nl_attr(&m, IFLA_LINKINFO, NULL, 0);
    nl_attr(&m, IFLA_INFO_KIND, "veth", 4);
    struct rtattr *data = nl_attr(&m, IFLA_INFO_DATA, NULL, 0);
    struct rtattr *peer_attr = nl_attr(&m, VETH_INFO_PEER, NULL, 0);
    /* The peer's ifinfomsg sits at the start of VETH_INFO_PEER's payload. */
    struct ifinfomsg pifi = {.ifi_family = AF_UNSPEC};
    size_t at = NLMSG_ALIGN(m.h.nlmsg_len);
    if (at + sizeof(pifi) > sizeof(m.buf))
        return -E2BIG;
    memcpy(m.buf + at, &pifi, sizeof(pifi));
    m.h.nlmsg_len = (uint32_t)(at + NLMSG_ALIGN(sizeof(pifi)));
    nl_attr(&m, IFLA_IFNAME, peer, strlen(peer) + 1);
    uint32_t nsfd = (uint32_t)ns_fd;
    if (!nl_attr(&m, IFLA_NET_NS_FD, &nsfd, sizeof(nsfd)))
        return -E2BIG;
    nl_nest_end(&m, peer_attr);
    nl_nest_end(&m, data);
    nl_nest_end(&m, info);
    return nl_talk(fd, &m, NULL);
}

static int nl_addr_add(int fd, int index, uint32_t addr, uint8_t prefix)
{
    struct nlmsg m;
    struct ifaddrmsg *ifa = nl_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof(*ifa));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = prefix;
    ifa->ifa_index = (uint32_t)index;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    uint32_t be = htonl(addr);
    nl_attr(&m, IFA_LOCAL, &be, 4);
    nl_attr(&m, IFA_ADDRESS, &be, 4);
    return nl_talk(fd, &m, NULL);
}

/* dst/prefix via gw (0: directly on the link) out of oif. */
static int nl_route_add(int fd, uint32_t dst, uint8_t prefix, uint32_t gw, int oif)
{
    struct nlmsg m;
    struct rtmsg *rt = nl_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_dst_len = prefix;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_STATIC;
    rt->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    rt->rtm_type = RTN_UNICAST;
    uint32_t be = htonl(dst), gbe = htonl(gw), o = (uint32_t)oif;
    if (prefix)
        nl_attr(&m, RTA_DST, &be, 4);
    if (gw)
        nl_attr(&m, RTA_GATEWAY, &gbe, 4);
    nl_attr(&m, RTA_OIF, &o, 4);
    return nl_talk(fd, &m, NULL);
}

/* The route the host would use for dst: its type and output interface. */
static int nl_route_get(int fd, uint32_t dst, int *oif, int *type)
{
    struct nlmsg m, reply;
    struct rtmsg *rt = nl_init(&m, RTM_GETROUTE, 0, sizeof(*rt));
    rt->rtm_family = AF_INET;
    rt->rtm_dst_len = 32;
    uint32_t be = htonl(dst);
    nl_attr(&m, RTA_DST, &be, 4);
    memset(&reply, 0, sizeof(struct nlmsghdr));
    int r = nl_talk(fd, &m, &reply);
    if (r < 0)
        return r;
    if (reply.h.nlmsg_type != RTM_NEWROUTE)
        return -ENETUNREACH;
    const struct rtmsg *ans = NLMSG_DATA(&reply.h);
    *type = ans->rtm_type;
    *oif = 0;
    int len = (int)RTM_PAYLOAD(&reply.h);
    for (const struct rtattr *a = RTM_RTA(ans); RTA_OK(a, len); a = RTA_NEXT(a, len))
        if (a->rta_type == RTA_OIF)
            memcpy(oif, RTA_DATA(a), sizeof(*oif));
    return 0;
}

/* ---- sysctls ------------------------------------------------------------------ */

static int write_file(const char *path, const char *value)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, value, strlen(value));
    return n == (ssize_t)strlen(value) ? 0 : n < 0 ? -errno : -EIO;
}

static int conf_path(char *out, size_t size, const char *family, const char *ifname, const char *key)
{
    if (!ifname[0] || strchr(ifname, '/') || strcmp(ifname, ".") == 0 || strcmp(ifname, "..") == 0)
        return -EINVAL;
    int n = snprintf(out, size, "/proc/sys/net/%s/conf/%s/%s", family, ifname, key);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int ic_net__forwarding_get(const char *ifname, int *val, ic_err *err)
{
    char path[128], buf[8] = "";
    int r = conf_path(path, sizeof(path), "ipv4", ifname, "forwarding");
    if (r < 0)
        return ic_err_set(err, -r, "bad interface name '%s'", ifname);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ic_err_sys(err, errno, "cannot read %s", path);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return ic_err_sys(err, n < 0 ? errno : EIO, "cannot read %s", path);
    *val = buf[0] == '1';
    return 0;
}

int ic_net__forwarding_set(const char *ifname, int val, ic_err *err)
{
    char path[128];
    int r = conf_path(path, sizeof(path), "ipv4", ifname, "forwarding");
    if (r == 0)
        r = write_file(path, val ? "1" : "0");
    return r < 0 ? ic_err_sys(err, -r, "cannot set %s to %d", path, val) : 0;
}

/* IPv6 is off on every link of a VM: the firewall speaks IPv4. */
static int ipv6_off(const char *ifname)
{
    char path[128];
    int r = conf_path(path, sizeof(path), "ipv6", ifname, "disable_ipv6");
    if (r == 0)
        r = write_file(path, "1");
    return r == -ENOENT ? 0 : r; /* a kernel without IPv6 */
}

bool ic_net__link_exists(const char *ifname)
{
    return if_nametoindex(ifname) != 0;
}

/* ---- the namespace thread ---------------------------------------------------------- */

struct ns_job {
    const char *path;
    const char *fault;
    int nl_fd, ns_fd;       /* results: netlink socket inside, namespace fd */
    const char *step;       /* the failed step */
    ic_err err;
};

static int ns_fail(struct ns_job *j, const char *step, int code, const char *fmt, const char *arg)
{
    j->step = step;
    return ic_err_sys(&j->err, code, fmt, arg);
}

static int tap_create(const char *name)
{
    _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    /* What QEMU and Firecracker ask for when they attach by name. */
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETPERSIST, 1) < 0)
        return -errno;
    return 0;
}

static void *ns_thread(void *arg)
{
    struct ns_job *j = arg;
    if (ic_net__fault(j->fault, "netns")) {
        ic_net__fault_err("netns", &j->err);
        j->step = "netns";
        return NULL;
    }
    if (unshare(CLONE_NEWNET) < 0) {
        ns_fail(j, "netns", errno, "cannot create a network namespace%s", "");
        return NULL;
    }
    int fd = open(j->path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        ns_fail(j, "netns", errno, "cannot create %s", j->path);
        return NULL;
    }
    close(fd);
    if (mount("/proc/thread-self/ns/net", j->path, NULL, MS_BIND, NULL) < 0) {
        ns_fail(j, "netns", errno, "cannot bind-mount the namespace on %s", j->path);
        return NULL;
    }
    /* Inside the namespace (this thread's): it routes between tap0 and
     * veth0, and has no IPv6 on links created from now on. */
    int r = write_file("/proc/sys/net/ipv4/ip_forward", "1");
    if (r == 0 && write_file("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") == -ENOENT)
        r = 0;
    if (r < 0) {
        ns_fail(j, "netns", -r, "cannot configure forwarding in the namespace%s", "");
        return NULL;
    }
    if (ic_net__fault(j->fault, "tap")) {
        ic_net__fault_err("tap", &j->err);
        j->step = "tap";
        return NULL;
    }
    if ((r = tap_create(IC_NET_TAP_NAME)) < 0) {
        ns_fail(j, "tap", -r, "cannot create the tap device %s", IC_NET_TAP_NAME);
        return NULL;
    }
    j->nl_fd = nl_open(&j->err);
    if (j->nl_fd < 0) {
        j->step = "tap";
        return NULL;
    }
    j->ns_fd = open(j->path, O_RDONLY | O_CLOEXEC);
    if (j->ns_fd < 0)
        ns_fail(j, "netns", errno, "cannot open %s", j->path);
    return NULL;
}

/* ---- the steps ------------------------------------------------------------------------ */

static int step_err(const char **step, const char *name, ic_err *err, int code, const char *fmt,
                    const char *arg)
{
    *step = name;
    return ic_err_set(err, code < 0 ? -code : code, fmt, arg, strerror(code < 0 ? -code : code));
}

/* The host end: no IPv6, its /31, up, and the route to the guest's link. */
static int host_side(int nl, struct ic_net_links *l, const char **step, ic_err *err)
{
    const struct ic_net_addrs *a = &l->addrs;
    int idx = nl_link_index(nl, l->veth);
    if (idx < 0)
        return step_err(step, "veth", err, idx, "cannot find %s: %s", l->veth);
    int r = ipv6_off(l->veth);
    if (r < 0)
        return step_err(step, "veth", err, r, "cannot disable IPv6 on %s: %s", l->veth);
    if (ic_net__fault(l->fault, "addresses"))
        return *step = "addresses", ic_net__fault_err("addresses", err);
    if ((r = nl_addr_add(nl, idx, a->host, 31)) < 0 || (r = nl_link_up(nl, idx)) < 0)
        return step_err(step, "addresses", err, r, "cannot configure %s: %s", l->veth);
    if ((r = nl_route_add(nl, a->gateway, 31, a->ns, idx)) < 0)
        return step_err(step, "addresses", err, r, "cannot route the guest's link via %s: %s", l->veth);
    return 0;
}

/* The namespace: veth0 and tap0 addressed and up, lo up, default route. */
static int ns_side(int nl, struct ic_net_links *l, const char **step, ic_err *err)
{
    const struct ic_net_addrs *a = &l->addrs;
    int veth = nl_link_index(nl, IC_NET_NS_VETH_NAME), tap = nl_link_index(nl, IC_NET_TAP_NAME);
    int lo = nl_link_index(nl, "lo");
    if (veth < 0 || tap < 0 || lo < 0)
        return step_err(step, "addresses", err, veth < 0 ? veth : tap < 0 ? tap : lo,
                        "cannot find the namespace's links (%s): %s", "veth0, tap0, lo");
    int r;
    if ((r = nl_addr_add(nl, veth, a->ns, 31)) < 0 || (r = nl_link_up(nl, veth)) < 0 ||
        (r = nl_addr_add(nl, tap, a->gateway, 31)) < 0 || (r = nl_link_up(nl, tap)) < 0 ||
        (r = nl_link_up(nl, lo)) < 0 || (r = nl_route_add(nl, 0, 0, a->host, veth)) < 0)
        return step_err(step, "addresses", err, r, "cannot configure the namespace's links: %s%s", "");
    return 0;
}

static bool uplink_known(const struct ic_net_links *l, const char *name)
{
    for (size_t i = 0; i < l->n_uplinks; i++)
        if (strcmp(l->uplinks[i], name) == 0)
            return true;
    return false;
}

/* The interface each allow-list entry leaves the host by (its first
 * address's route). Local destinations and VM links are not uplinks. */
static int find_uplinks(int nl, struct ic_net_links *l, const char **step, ic_err *err)
{
    if (ic_net__fault(l->fault, "uplinks"))
        return *step = "uplinks", ic_net__fault_err("uplinks", err);
    for (size_t i = 0; i < l->n_allow; i++) {
        const struct ic_net_allow *e = &l->allow[i];
        uint32_t probe = e->prefix < 31 ? e->addr + 1 : e->addr;
        int oif = 0, type = 0;
        char name[IF_NAMESIZE];
        if (nl_route_get(nl, probe, &oif, &type) < 0 || type != RTN_UNICAST || oif <= 0 ||
            !if_indextoname((unsigned)oif, name))
            continue; /* unreachable or local: nothing to forward to */
        if (strcmp(name, l->veth) == 0 || (strncmp(name, "ic", 2) == 0 && strlen(name) == 15) ||
            uplink_known(l, name))
            continue;
        if (l->n_uplinks >= IC_NET_GUARD_MAX) {
            *step = "uplinks";
            return ic_err_set(err, E2BIG, "the allow-list leaves the host by more than %d "
                              "interfaces", IC_NET_GUARD_MAX);
        }
        snprintf(l->uplinks[l->n_uplinks++], IC_NET_IFNAME_SIZE, "%s", name);
    }
    return 0;
}

int ic_net__links_up(struct ic_net_links *l, const char **step, ic_err *err)
{
    struct ns_job job = {.path = l->netns, .fault = l->fault, .nl_fd = -1, .ns_fd = -1};
    pthread_t th;
    int r = pthread_create(&th, NULL, ns_thread, &job);
    if (r != 0)
        return step_err(step, "netns", err, r, "cannot start the namespace thread: %s%s", "");
    pthread_join(th, NULL);
    _cleanup_close_ int ns_nl = job.nl_fd, ns_fd = job.ns_fd;
    if (job.step) {
        *step = job.step;
        *err = job.err;
        return -err->code;
    }
    _cleanup_close_ int nl = nl_open(err);
    if (nl < 0)
        return *step = "veth", nl;
    if (ic_net__fault(l->fault, "veth"))
        return *step = "veth", ic_net__fault_err("veth", err);
    if ((r = nl_veth_add(nl, l->veth, IC_NET_NS_VETH_NAME, ns_fd)) < 0)
        return step_err(step, "veth", err, r, "cannot create the veth pair %s: %s", l->veth);
    if ((r = host_side(nl, l, step, err)) < 0 || (r = ns_side(ns_nl, l, step, err)) < 0)
        return r;
    return find_uplinks(nl, l, step, err);
}

int ic_net__veth_del(const char *veth, ic_err *err)
{
    /* Looking needs no privilege; deleting does, and may not be needed. */
    if (!ic_net__link_exists(veth))
        return 0;
    _cleanup_close_ int nl = nl_open(err);
    if (nl < 0)
        return nl;
    int r = nl_link_del(nl, veth);
    if (r == -ENODEV || r == -ENOENT)
        return 0;
    return r < 0 ? ic_err_set(err, -r, "cannot delete %s: %s", veth, strerror(-r)) : 0;
}

int ic_net__netns_del(const char *path, ic_err *err)
{
    if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        return ic_err_sys(err, errno, "cannot unmount %s", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return ic_err_sys(err, errno, "cannot remove %s", path);
    return 0;
}
