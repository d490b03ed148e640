/* A container's interface on a bridge: a veth pair made with rtnetlink.
 *
 * Both halves run where Python cannot: iso_netif_make in the caller's
 * network namespace (the helper that makes the container's namespace beside
 * the child, or the caller's thread right after clone), iso_netif_configure
 * inside the container's namespace (that helper, or the child). Both make
 * raw system calls only and touch no memory but their own stack and the
 * iso_netif_t they are given, since the helper shares the caller's memory,
 * thread-local errno included. iso_netns_make, which makes a namespace with
 * its interface ahead of a container, runs in a thread of the caller's and
 * may use libc. What the interface is (names, addresses, routes) Python
 * decides; here the messages are built and sent in order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#include "isolate.h"

/* One request and its answer: requests here are a few hundred bytes. */
struct nlbuf {
    size_t len;
    union {
        struct nlmsghdr h;
        char b[1024];
    } u;
};

/* Append len bytes (zeros without data), aligned; an overflow is kept in
 * m->len, which nl_call then refuses. */
static void *nl_put(struct nlbuf *m, const void *data, size_t len)
{
    size_t at = NLMSG_ALIGN(m->len);
    if (m->len > sizeof m->u.b || at + len > sizeof m->u.b) {
        m->len = sizeof m->u.b + 1;
        return NULL;
    }
    memset(m->u.b + m->len, 0, at - m->len);
    char *p = m->u.b + at;
    if (data != NULL)
        memcpy(p, data, len);
    else
        memset(p, 0, len);
    m->len = at + len;
    return p;
}

static struct rtattr *attr_put(struct nlbuf *m, unsigned short type, const void *data,
                               size_t len)
{
    struct rtattr *a = nl_put(m, NULL, RTA_LENGTH(len));
    if (a == NULL)
        return NULL;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    a->rta_type = type;
    if (len > 0)
        memcpy(RTA_DATA(a), data, len);
    return a;
}

static struct rtattr *nest_begin(struct nlbuf *m, unsigned short type)
{
    return attr_put(m, type, NULL, 0);
}

static void nest_end(struct nlbuf *m, struct rtattr *nest)
{
    if (nest != NULL && m->len <= sizeof m->u.b)
        nest->rta_len = (unsigned short)(m->u.b + m->len - (char *)nest);
}

static void *nl_begin(struct nlbuf *m, unsigned short type, unsigned short flags, size_t hdr)
{
    memset(&m->u.h, 0, sizeof m->u.h);
    m->u.h.nlmsg_type = type;
    m->u.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    m->u.h.nlmsg_seq = 1;
    m->len = sizeof m->u.h;
    return nl_put(m, NULL, hdr);
}

/* Send m on nl and read the kernel's answer: 0, or -errno. */
static long nl_call(int nl, struct nlbuf *m)
{
    if (m->len > sizeof m->u.b)
        return -EMSGSIZE;
    m->u.h.nlmsg_len = (uint32_t)m->len;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    long r = iso_raw_syscall(SYS_sendto, nl, (long)m->u.b, (long)m->len, 0, (long)&kernel,
                             sizeof kernel);
    if (r < 0)
        return r;
    for (;;) {
        union {
            struct nlmsghdr h;
            char b[1024];
        } ans;
        r = iso_raw_syscall(SYS_recvfrom, nl, (long)ans.b, sizeof ans.b, 0, 0, 0);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return r;
        for (struct nlmsghdr *h = &ans.h; NLMSG_OK(h, (unsigned long)r); h = NLMSG_NEXT(h, r)) {
            if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)))
                return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
        }
    }
}

static long nl_socket(void)
{
    return iso_raw_syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE, 0,
                           0, 0);
}

static int nonzero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 1;
    return 0;
}

long iso_netif_make(int nl, const iso_netif_t *n, pid_t pid)
{
    struct nlbuf m;
    struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    uint32_t mtu = (uint32_t)n->mtu, target = (uint32_t)pid;
    attr_put(&m, IFLA_IFNAME, n->host, strlen(n->host) + 1);
    if (mtu)
        attr_put(&m, IFLA_MTU, &mtu, sizeof mtu);
    struct rtattr *info = nest_begin(&m, IFLA_LINKINFO);
    attr_put(&m, IFLA_INFO_KIND, "veth", 5);
    struct rtattr *data = nest_begin(&m, IFLA_INFO_DATA);
    struct rtattr *peer = nest_begin(&m, VETH_INFO_PEER);
    struct ifinfomsg peer_ifi = {.ifi_family = AF_UNSPEC};
    nl_put(&m, &peer_ifi, sizeof peer_ifi);
    attr_put(&m, IFLA_IFNAME, n->name, strlen(n->name) + 1);
    if (nonzero(n->mac, 6))
        attr_put(&m, IFLA_ADDRESS, n->mac, 6);
    attr_put(&m, IFLA_NET_NS_PID, &target, sizeof target);
    if (mtu)
        attr_put(&m, IFLA_MTU, &mtu, sizeof mtu);
    nest_end(&m, peer);
    nest_end(&m, data);
    nest_end(&m, info);
    return nl_call(nl, &m);
}

/* IPv6 address generation in mode: NONE (no link-local address, no
 * duplicate detection or router solicitation when it comes up) for a
 * bridge's port, and for a container's interface on a network without IPv6;
 * EUI64 for one with IPv6, whatever the namespace's default (the bridge's
 * guard knows its link-local address by its MAC) */
static void put_ipv6_gen_mode(struct nlbuf *m, uint8_t mode)
{
    struct rtattr *spec = nest_begin(m, IFLA_AF_SPEC);
    struct rtattr *inet6 = nest_begin(m, AF_INET6);
    attr_put(m, IFLA_INET6_ADDR_GEN_MODE, &mode, 1);
    nest_end(m, inet6);
    nest_end(m, spec);
}

static void put_no_ipv6_ll(struct nlbuf *m)
{
    put_ipv6_gen_mode(m, IN6_ADDR_GEN_MODE_NONE);
}

/* A permanent neighbour entry on index: addr (len bytes, of family) at mac. */
static long pin_neighbour(int nl, int family, int index, const uint8_t *addr, size_t len,
                          const uint8_t *mac)
{
    struct nlbuf m;
    struct ndmsg *nd = nl_begin(&m, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, sizeof *nd);
    nd->ndm_family = (unsigned char)family;
    nd->ndm_ifindex = index;
    nd->ndm_state = NUD_PERMANENT;
    attr_put(&m, NDA_DST, addr, len);
    attr_put(&m, NDA_LLADDR, mac, 6);
    return nl_call(nl, &m);
}

static long unpin_neighbour(int nl, int family, int index, const uint8_t *addr, size_t len)
{
    struct nlbuf m;
    struct ndmsg *nd = nl_begin(&m, RTM_DELNEIGH, 0, sizeof *nd);
    nd->ndm_family = (unsigned char)family;
    nd->ndm_ifindex = index;
    attr_put(&m, NDA_DST, addr, len);
    long r = nl_call(nl, &m);
    return r == -ENOENT ? 0 : r;
}

long iso_netif_unpin(int nl, const iso_netif_t *n)
{
    if (!nonzero(n->mac, 6) || !nonzero(n->gateway, 4))
        return 0;
    long r = unpin_neighbour(nl, AF_INET, n->master, n->addr, 4);
    if (n->has6) {
        long r6 = unpin_neighbour(nl, AF_INET6, n->master, n->addr6, 16);
        if (r == 0)
            r = r6;
    }
    return r;
}

long iso_netif_attach(int nl, const iso_netif_t *n)
{
    struct nlbuf m;
    struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    uint32_t master = (uint32_t)n->master;
    attr_put(&m, IFLA_IFNAME, n->host, strlen(n->host) + 1);
    if (n->alias[0] != '\0')       /* the name the container answers to */
        attr_put(&m, IFLA_IFALIAS, n->alias, strlen(n->alias));
    attr_put(&m, IFLA_MASTER, &master, sizeof master);
    put_no_ipv6_ll(&m);
    long r = nl_call(nl, &m);
    if (r == -EAFNOSUPPORT) {       /* a kernel without IPv6: the same without it */
        ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
        ifi->ifi_family = AF_UNSPEC;
        attr_put(&m, IFLA_IFNAME, n->host, strlen(n->host) + 1);
        if (n->alias[0] != '\0')
            attr_put(&m, IFLA_IFALIAS, n->alias, strlen(n->alias));
        attr_put(&m, IFLA_MASTER, &master, sizeof master);
        r = nl_call(nl, &m);
    }
    if (r == 0 && nonzero(n->mac, 6) && nonzero(n->gateway, 4)) {
        /* the host's side: the container's addresses at its MAC for good */
        r = pin_neighbour(nl, AF_INET, n->master, n->addr, 4, n->mac);
        if (r == 0 && n->has6)
            r = pin_neighbour(nl, AF_INET6, n->master, n->addr6, 16, n->mac);
    }
    if (r < 0 || n->down)
        return r;
    ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    attr_put(&m, IFLA_IFNAME, n->host, strlen(n->host) + 1);
    return nl_call(nl, &m);
}

long iso_netif_up(int nl, const iso_netif_t *n)
{
    struct nlbuf m;
    struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    ifi->ifi_index = n->index;
    if (n->index == 0)
        attr_put(&m, IFLA_IFNAME, n->host, strlen(n->host) + 1);
    if (n->alias[0] != '\0')
        attr_put(&m, IFLA_IFALIAS, n->alias, strlen(n->alias));
    uint32_t master = (uint32_t)n->master;     /* a port of it still, whatever happened */
    attr_put(&m, IFLA_MASTER, &master, sizeof master);
    return nl_call(nl, &m);
}

static long link_up(int nl, int index)
{
    struct nlbuf m;
    struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    return nl_call(nl, &m);
}

static long add_addr(int nl, int family, int index, const uint8_t *addr, size_t len, int prefix)
{
    struct nlbuf m;
    struct ifaddrmsg *ifa = nl_begin(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof *ifa);
    ifa->ifa_family = (unsigned char)family;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_index = (unsigned)index;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    if (family == AF_INET6)
        ifa->ifa_flags = IFA_F_NODAD;       /* usable at once: the bridge's range is ours */
    attr_put(&m, IFA_LOCAL, addr, len);
    attr_put(&m, IFA_ADDRESS, addr, len);
    if (family == AF_INET && prefix < 31) {
        uint8_t brd[4];
        uint32_t host = prefix == 0 ? 0xffffffffu : (1u << (32 - prefix)) - 1;
        for (int i = 0; i < 4; i++)
            brd[i] = (uint8_t)(addr[i] | (host >> (8 * (3 - i))));
        attr_put(&m, IFA_BROADCAST, brd, 4);
    }
    return nl_call(nl, &m);
}

static long add_default_route(int nl, int family, int index, const uint8_t *gw, size_t len)
{
    struct nlbuf m;
    struct rtmsg *rt = nl_begin(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof *rt);
    rt->rtm_family = (unsigned char)family;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_BOOT;
    rt->rtm_scope = RT_SCOPE_UNIVERSE;
    rt->rtm_type = RTN_UNICAST;
    uint32_t oif = (uint32_t)index;
    attr_put(&m, RTA_GATEWAY, gw, len);
    attr_put(&m, RTA_OIF, &oif, sizeof oif);
    return nl_call(nl, &m);
}

/* Write value to /proc/sys/net/ipv6/conf/<name>/<key> of the calling
 * task's network namespace: 0 or -errno (-ENOENT: a kernel without IPv6). */
static long ipv6_conf(const char *name, const char *key, const char *value)
{
    char path[96] = "/proc/sys/net/ipv6/conf/";
    size_t at = strlen(path);
    for (const char *p = name; *p != '\0' && at < sizeof path - 1; p++)
        path[at++] = *p;
    if (at < sizeof path - 1)
        path[at++] = '/';
    for (const char *p = key; *p != '\0' && at < sizeof path - 1; p++)
        path[at++] = *p;
    path[at] = '\0';
    long fd = iso_raw_syscall(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0, 0, 0);
    if (fd < 0)
        return fd;
    long r = iso_raw_syscall(SYS_write, fd, (long)value, (long)strlen(value), 0, 0, 0);
    iso_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    return r < 0 ? r : 0;
}

long iso_netif_configure(const iso_netif_t *n, const char **what)
{
    /* No router advertisements taken from the bridge: a container could
     * otherwise give its neighbours routes and addresses (CVE-2020-13401) */
    *what = "IPv6 accept_ra";
    long r0 = ipv6_conf(n->name, "accept_ra", "0");
    if (r0 == 0)
        r0 = ipv6_conf(n->name, "autoconf", "0");
    if (r0 < 0 && r0 != -ENOENT)
        return r0;

    *what = "index";
    long s = iso_raw_syscall(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0, 0, 0);
    if (s < 0)
        return s;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, n->name, sizeof ifr.ifr_name - 1);
    long r = iso_raw_syscall(SYS_ioctl, s, SIOCGIFINDEX, (long)&ifr, 0, 0, 0);
    iso_raw_syscall(SYS_close, s, 0, 0, 0, 0, 0);
    if (r < 0)
        return r;
    int index = ifr.ifr_ifindex;
    long nl = nl_socket();
    if (nl < 0)
        return nl;
    struct nlbuf m;
    *what = "address";
    r = add_addr((int)nl, AF_INET, index, n->addr, 4, n->prefix);
    if (r == 0 && n->has6) {
        *what = "IPv6 address";
        r = add_addr((int)nl, AF_INET6, index, n->addr6, 16, n->prefix6);
    }
    if (r == 0) {
        /* no IPv6 on the network: no link-local address either, nor its
         * duplicate detection and router solicitations when it comes up;
         * with IPv6, the link-local address of its MAC (EUI-64) */
        *what = "IPv6 address generation";
        struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof *ifi);
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = index;
        put_ipv6_gen_mode(&m, n->has6 ? IN6_ADDR_GEN_MODE_EUI64 : IN6_ADDR_GEN_MODE_NONE);
        r = nl_call((int)nl, &m);
        if (r == -EAFNOSUPPORT && !n->has6)     /* a kernel without IPv6 */
            r = 0;
    }
    if (r == 0) {
        *what = "up";
        r = link_up((int)nl, index);
    }
    if (r == 0 && nonzero(n->gateway, 4) && nonzero(n->gateway_mac, 6)) {
        *what = "gateway's neighbour entry";
        r = pin_neighbour((int)nl, AF_INET, index, n->gateway, 4, n->gateway_mac);
        if (r == 0 && n->has6 && nonzero(n->gateway6, 16))
            r = pin_neighbour((int)nl, AF_INET6, index, n->gateway6, 16, n->gateway_mac);
    }
    if (r == 0 && nonzero(n->gateway, 4)) {
        *what = "default route";
        r = add_default_route((int)nl, AF_INET, index, n->gateway, 4);
    }
    if (r == 0 && n->has6 && nonzero(n->gateway6, 16)) {
        *what = "IPv6 default route";
        r = add_default_route((int)nl, AF_INET6, index, n->gateway6, 16);
    }
    iso_raw_syscall(SYS_close, nl, 0, 0, 0, 0, 0);
    return r;
}

long iso_netif_socket(void)
{
    return nl_socket();
}

long iso_netns_make(const iso_netif_t *n, const char **what)
{
    *what = "network namespace";
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return -errno;
    long nl = nl_socket();          /* the caller's namespace's, where the bridge is */
    if (nl < 0) {
        close(self);
        return nl;
    }
    long r = unshare(CLONE_NEWNET) < 0 ? -errno : 0;
    int entered = r == 0;
    if (r == 0) {
        *what = "lo";
        long inner = nl_socket();
        r = inner < 0 ? inner : link_up((int)inner, 1);     /* lo is 1 in a new namespace */
        if (inner >= 0)
            close((int)inner);
    }
    int made = 0;
    if (r == 0) {
        *what = "veth";
        r = iso_netif_make((int)nl, n, (pid_t)syscall(SYS_gettid));
        made = r == 0;
    }
    if (r == 0) {
        *what = "bridge port";
        r = iso_netif_attach((int)nl, n);
    }
    if (r == 0)
        r = iso_netif_configure(n, what);
    long fd = -1;
    if (r == 0 && (fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
        r = -errno;
    if (r < 0 && made)      /* attach's pins, while the veth is still there (ours) */
        iso_netif_unpin((int)nl, n);
    /* back to the thread's own namespace; without a reference left, a
     * namespace that failed halfway goes, with its veth pair */
    if (entered && setns(self, CLONE_NEWNET) < 0) {
        *what = "return to the thread's network namespace";
        r = -errno;
        if (fd >= 0)
            close((int)fd);
        fd = -1;
    }
    close(self);
    close((int)nl);
    return r < 0 ? r : fd;
}
