"""Networks: bridges that containers share, with addresses, names and ports.

A `Network` is a Linux bridge in the caller's network namespace with an
IPv4 range (and, on request, an IPv6 one). A container on it gets a veth
pair: one end a port of the bridge, the other `eth0` inside, with an address
of the range and a default route through the bridge's own address (the
gateway). Containers on one network reach each other, by address and by
hostname; containers on different networks do not; traffic out of the
network is masqueraded, as Docker's bridge does, unless the network is
`internal`.

Everything a network is lives in the kernel, so that nothing of it depends
on the process that made it, and nothing is left when a container ends,
however it ends:
- the network is the bridge itself, its settings in the bridge's alias
  (`ip -d link show` shows them), its firewall an nf_tables table
  (`isolate-<bridge>`);
- a container's address is leased by the name of its veth's bridge end
  (`iv` and the address in hex): making the pair is the allocation, atomic
  across processes, and the pair goes with the container's network
  namespace, so the lease ends with the container even when its owner was
  SIGKILLed;
- published ports are a table of the owner's, owned by a netlink socket
  (NFT_TABLE_F_OWNER): the kernel removes it when the container is closed
  or its owner ends; the host port is held by a bound socket meanwhile, so
  that a port in use is refused and no other program takes it.
Names resolve through `/etc/hosts`, a file of the network's (under
/run/isolate/networks) bound read-only into each of its containers and
rewritten in place, under a lock, whenever a container joins or leaves: a
line stays while its container's veth is there (or while a live process is
starting it), so the lines of containers whose owner was killed go at the
next rewrite. Each veth's alias on the bridge is its container's hostname too.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import itertools
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import _netlink as nl
from .errors import NetworkError

__all__ = ["Network", "NetworkError", "networks", "get_network"]

#: the network `network="bridge"` means, made on first use
DEFAULT = "bridge"
#: where ranges are taken from when none is given: /24s of 10.88.0.0/16
AUTO_RANGE = ipaddress.ip_network("10.88.0.0/16")
STATE = "/run/isolate/networks"     # then the namespace's cookie, then the bridge
ALIAS = "isolate-network"
#: the alias of a spare's veth: a namespace made ahead, no container's yet
SPARE_ALIAS = "isolate-spare"
#: how long spares are kept when no container is started on their network, s
SPARE_IDLE = 2.0
#: how long an ended container's veth is left to go with its namespace before
#: it is removed by itself, s
VETH_GRACE = 2.0
BRIDGE_PREFIX = "ib-"
VETH_PREFIX = "iv"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,12}", re.ASCII)
#: in-process, by bridge: addresses being started (not yet a veth), and
#: addresses whose container has ended, their veth being removed
_pending: dict[str, set[int]] = {}
_ending: dict[str, set[int]] = {}
_pending_lock = threading.Condition()


def _route() -> nl.Socket:
    """A rtnetlink socket of this thread's network namespace (made per use:
    a socket belongs to the namespace it was made in)."""
    return nl.Socket(nl.NETLINK_ROUTE)


def _bridge_name(name: str) -> str:
    if _IFNAME.fullmatch(name):
        return BRIDGE_PREFIX + name
    return BRIDGE_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:12]


#: the sets of a bridge's guard (Network._guard): name, key length and id;
#: a key is a port's name (16 bytes) and its MAC (padded to 8), its IPv4
#: address, or its IPv6 address; or its name alone (the bridge's ports)
_GUARD_SETS = (("ports", 24, 1), ("addrs", 20, 2), ("addrs6", 32, 3), ("names", 16, 4))
_guarded: set[tuple[str, int, int]] = set()     # (bridge, its index, address): keys added


def _link_local(mac: bytes) -> bytes:
    """The IPv6 link-local address of an interface of MAC mac (EUI-64, as
    the kernel makes it in the mode a container's interface has)."""
    return bytes.fromhex("fe80000000000000") + bytes([mac[0] ^ 2]) + mac[1:3] + \
        b"\xff\xfe" + mac[3:]


def container_mac(address: ipaddress.IPv4Address) -> bytes:
    """The MAC address of the container at address (02:42 and the address,
    as Docker's): the bridge pins it for the address, so that no neighbour
    takes the address over by ARP or NDP; and the next holder of the address
    has it too."""
    return b"\x02\x42" + address.packed


def veth_name(address: ipaddress.IPv4Address) -> str:
    """The bridge end of the veth of the container at address: its lease."""
    return f"{VETH_PREFIX}{int(address):08x}"


def _veth_index(n: int) -> int:
    """The ifindex of the veth that holds address n now, or 0."""
    try:
        return socket.if_nametoindex(veth_name(ipaddress.IPv4Address(n)))
    except OSError:
        return 0


def _netif(net: Network, address: ipaddress.IPv4Address, alias: str, mtu: int = 0,
           **more: Any) -> Any:
    """The NetIf (see _isolate.NetIf) of the container at address on net, its
    veth's bridge end aliased alias."""
    from . import _isolate as _c
    a6 = net.address6(address)
    return _c.NetIf(veth_name(address).encode(), b"eth0", alias.encode(), net.index, mtu,
                    address.packed, net.subnet.prefixlen,
                    net.gateway.packed if net.gateway is not None else b"",
                    a6.packed if a6 is not None else b"", 64 if a6 is not None else 0,
                    net.gateway6.packed if net.gateway6 is not None else b"",
                    mac=container_mac(address),
                    gateway_mac=net.mac if net.gateway is not None else b"", **more)


def _write_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
        f.write(value)


SO_NETNS_COOKIE = 71


def _netns_dir() -> str:
    """The files of this thread's network namespace's networks: under its
    cookie (unique while the machine runs; Linux 5.14), else its inode. A
    network of the same name in another namespace has files of its own."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            cookie = struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
        return f"{STATE}/{cookie}"
    except OSError:
        return f"{STATE}/ino-{os.stat('/proc/thread-self/ns/net').st_ino}"


def _state_dir(name: str) -> str:
    return f"{_netns_dir()}/{_bridge_name(name)}"


@contextlib.contextmanager
def _locked(path: str, made: bool = False) -> Iterator[None]:
    """An exclusive flock of path (its directory made first, unless made)."""
    if not made:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:       # /run emptied under a network: made again
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _host_routes() -> list[Any]:
    """The IPv4 routes of this thread's network namespace, default excluded."""
    out = []
    try:
        with open("/proc/thread-self/net/route") as f:
            next(f)
            for line in f:
                parts = line.split()
                dest, mask = (socket.inet_ntoa(struct.pack("=I", int(x, 16))) for x in
                              (parts[1], parts[7]))
                if mask != "0.0.0.0":
                    out.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return out


def _need_net_admin() -> None:
    if os.geteuid() != 0:
        raise NetworkError("a network (a bridge, its veths and firewall rules) needs root "
                           "(CAP_NET_ADMIN in the host's network namespace); without it use "
                           "network='slirp4netns' or network='pasta' (user-mode networking)")


@dataclass(frozen=True)
class Endpoint:
    """A container on a network: its address and hostname."""

    address: ipaddress.IPv4Address
    hostname: str
    address6: ipaddress.IPv6Address | None = None


class Network:
    """A bridge with an address range that containers join with
    `Container(network=net)` (or its name).

    name        the network's name (default: a random one); "bridge" is the
                default network that `network="bridge"` makes on first use
    subnet      its IPv4 range, like "10.89.0.0/24" (default: a free /24 of
                10.88.0.0/16); it must not overlap another network or a route
    gateway     the bridge's own address (default: the range's first)
    internal    no route out and none in: its containers reach each other only
    ipv6        an IPv6 range too (a unique local /64), addresses beside the IPv4 ones

    Made at once; `close()` (or leaving a `with` block) removes it, which
    is refused while containers are on it. `isolate.networks()` lists the
    networks, `isolate.get_network(name)` finds one by name.
    """

    name: str
    bridge: str
    index: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    internal: bool
    subnet6: Any        # ipaddress.IPv6Network, or None
    gateway6: Any

    def __init__(self, name: str | None = None, *, subnet: str | None = None,
                 gateway: str | None = None, internal: bool = False, ipv6: bool = False):
        if name is None:
            name = "net-" + os.urandom(4).hex()
        _check_name(name)
        if not isinstance(internal, bool) or not isinstance(ipv6, bool):
            raise TypeError("internal and ipv6 are True or False")
        net = _parse_subnet(subnet) if subnet is not None else None
        gw = _parse_gateway(gateway, net) if gateway is not None else None
        if gw is not None and internal:
            raise ValueError("an internal network has no gateway: give gateway or internal, not both")
        _need_net_admin()
        self.name = name
        self.bridge = _bridge_name(name)
        self._removed = False
        self.mac, self.mac_set = b"", False
        with _locked(f"{STATE}/.lock"):
            self._make(net, gw, internal, ipv6)

    def _make(self, net, gw, internal: bool, ipv6: bool) -> None:
        sock = _route()
        try:
            existing = _list(sock)
            if any(n.name == self.name for n in existing) or \
                    any(link["name"] == self.bridge for link in nl.links(sock)):
                raise NetworkError(f"network name {self.name!r} is taken (bridge "
                                   f"{self.bridge})", network=self.name)
            taken = [n.subnet for n in existing] + _host_routes()
            if net is None:
                net = next((c for c in AUTO_RANGE.subnets(new_prefix=24)
                            if not any(c.overlaps(t) for t in taken)), None)
                if net is None:
                    raise NetworkError(f"no free /24 left in {AUTO_RANGE}: give subnet=",
                                       network=self.name)
            else:
                for t in taken:
                    if net.overlaps(t):
                        owner = next((n.name for n in existing if n.subnet == t), None)
                        raise NetworkError(f"subnet {net} overlaps {t} (" + (
                            f"network {owner!r}" if owner else "a route of this host") + ")",
                            network=self.name)
            if gw is None and not internal:
                gw = next(net.hosts())
            self.subnet = net
            self.gateway = gw
            self.internal = internal
            self.subnet6 = self.gateway6 = None
            if ipv6:
                digest = hashlib.sha256(self.name.encode()).digest()
                self.subnet6 = ipaddress.ip_network(
                    (b"\xfd" + digest[:7] + b"\0" * 8, 64))
                self.gateway6 = None if internal else self.subnet6[1]
            self._create(sock)
        finally:
            sock.close()

    def _alias(self) -> str:
        parts = [ALIAS, f"name={self.name}", f"subnet={self.subnet}",
                 f"gateway={self.gateway or ''}", f"internal={int(self.internal)}"]
        if self.subnet6 is not None:
            parts.append(f"subnet6={self.subnet6}")
        if self.mac_set:
            parts.append("mac=set")
        return " ".join(parts)

    def _create(self, sock: nl.Socket) -> None:
        """The bridge, its addresses, its firewall and its files: all, or
        nothing (what was made is removed on failure)."""
        # Its MAC is set, not the kernel's random one, which a bridge trades
        # for its lowest port's as ports come and go: containers pin it as
        # their gateway's. Locally administered, and never 02:42:..., the
        # containers' (see container_mac).
        self.mac = bytes([0x0E]) + os.urandom(5)
        self.mac_set = True
        # It learns no MAC from frames to the reserved link-local addresses
        # (01:80:c2:00:00:0X), which the bridge takes before any filter: a
        # container could otherwise take a neighbour's MAC over on its port.
        index = nl.link_add(sock, self.bridge, "bridge", alias=self._alias(), address=self.mac,
                            no_linklocal_learn=True)
        try:
            self.index = index
            # it takes no router advertisements (its containers could send
            # them, CVE-2020-13401), and without IPv6 it has no IPv6 at all
            with contextlib.suppress(FileNotFoundError):        # a kernel without IPv6
                _write_sysctl(f"net.ipv6.conf.{self.bridge}.accept_ra", "0")
                _write_sysctl(f"net.ipv6.conf.{self.bridge}.autoconf", "0")
            if self.subnet6 is None:
                with contextlib.suppress(nl.NetlinkError):
                    nl.link_set(sock, index, no_ipv6_ll=True)
            if self.gateway is not None:
                nl.addr_add(sock, index, str(self.gateway), self.subnet.prefixlen)
            if self.gateway6 is not None:
                nl.addr_add(sock, index, str(self.gateway6), 64)
            if not self.internal:
                _write_sysctl("net.ipv4.ip_forward", "1")
                _write_sysctl(f"net.ipv4.conf.{self.bridge}.route_localnet", "1")
                if self.subnet6 is not None:
                    _write_sysctl("net.ipv6.conf.all.forwarding", "1")
            self._firewall().commit()
            with contextlib.suppress(OSError):      # a stale one: its bridge was not there
                nl.delete_table(self._table_name(), "bridge")
            try:
                self._guard().commit()
            except nl.NetlinkError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.ENOENT):
                    raise
                raise self._unguardable(e) from None
            self._write_files()
            nl.link_set(sock, index, up=True)
        except BaseException:
            nl.link_del(sock, self.bridge)
            with contextlib.suppress(OSError):
                nl.delete_table(self._table_name())
            with contextlib.suppress(OSError):
                nl.delete_table(self._table_name(), "bridge")
            _remove_files(self.bridge)
            raise

    def _table_name(self) -> str:
        return f"isolate-{self.bridge}"

    def _firewall(self) -> nl.Table:
        """Its nf_tables table: traffic between networks dropped (and, when
        internal, all traffic in or out); traffic out masqueraded, and what
        the host's loopback sends to a published port too."""
        E, br = nl.Expr, nl.ifname(self.bridge)
        iif = E.meta(nl.NFT_META_IIFNAME)
        oif = E.meta(nl.NFT_META_OIFNAME)
        t = nl.Table(self._table_name())
        # The bridge has route_localnet (a published port reached from the
        # host's loopback is DNATed out of it): then nothing may come in on
        # it addressed to 127.0.0.0/8, or a container that crafts such a
        # packet (CAP_NET_RAW) reaches the host's loopback services
        # (CVE-2020-8558). Dropped first, before any DNAT.
        t.chain("prerouting", "prerouting", -300)
        # What comes in on a container's port itself, not on the bridge: the
        # frames to the reserved link-local addresses, which the bridge hands
        # to the host on the port past its own filters (a forged source, a
        # router advertisement for the host's routes).
        t.rule("prerouting", iif, E.cmp(nl.ifname(VETH_PREFIX, prefix=True)), E.verdict(nl.NF_DROP))
        for offset in (16, 12):      # to 127.0.0.0/8, and from it (a forged source)
            t.rule("prerouting", iif, E.cmp(br), E.meta(nl.NFT_META_NFPROTO),
                   E.cmp(bytes([nl.NFPROTO_IPV4])),
                   E.payload(nl.NFT_PAYLOAD_NETWORK_HEADER, offset, 4),
                   E.bitwise(bytes([255, 0, 0, 0])), E.cmp(bytes([127, 0, 0, 0])),
                   E.verdict(nl.NF_DROP))
        t.chain("forward", "forward", 0)
        if self.internal:
            t.rule("forward", iif, E.cmp(br), oif, E.cmp(br, nl.NFT_CMP_NEQ), E.verdict(nl.NF_DROP))
            t.rule("forward", oif, E.cmp(br), iif, E.cmp(br, nl.NFT_CMP_NEQ), E.verdict(nl.NF_DROP))
            return t
        t.rule("forward", iif, E.cmp(br), oif, E.cmp(br, nl.NFT_CMP_NEQ),
               E.cmp(nl.ifname(BRIDGE_PREFIX, prefix=True)), E.verdict(nl.NF_DROP))
        t.chain("postrouting", "postrouting", 100, "nat")
        v4 = (E.meta(nl.NFT_META_NFPROTO), E.cmp(bytes([nl.NFPROTO_IPV4])))
        saddr = E.payload(nl.NFT_PAYLOAD_NETWORK_HEADER, 12, 4)
        t.rule("postrouting", *v4, saddr, E.bitwise(self.subnet.netmask.packed),
               E.cmp(self.subnet.network_address.packed), oif, E.cmp(br, nl.NFT_CMP_NEQ),
               E.masquerade())
        t.rule("postrouting", *v4, saddr, E.bitwise(bytes([255, 0, 0, 0])),
               E.cmp(bytes([127, 0, 0, 0])), oif, E.cmp(br), E.masquerade())
        if self.subnet6 is not None:
            saddr6 = E.payload(nl.NFT_PAYLOAD_NETWORK_HEADER, 8, 16)
            t.rule("postrouting", E.meta(nl.NFT_META_NFPROTO), E.cmp(bytes([nl.NFPROTO_IPV6])),
                   saddr6,
                   E.bitwise(self.subnet6.netmask.packed),
                   E.cmp(self.subnet6.network_address.packed), oif, E.cmp(br, nl.NFT_CMP_NEQ),
                   E.masquerade())
        return t

    def _guard(self) -> nl.Table:
        """Its bridge's guard: an nf_tables table of the bridge family (named
        as its firewall) that drops what a container's port (a veth named
        VETH_PREFIX...) sends unless it comes from the container's own MAC
        and addresses: in the frame, in ARP, in IPv4 and IPv6 sources, and
        in IPv6 neighbour advertisements. So no container speaks as another,
        or teaches its neighbours (or the bridge's forwarding table) that
        another's address or MAC is at its port: no ARP or NDP spoofing, no
        forged sources. A container is no router either: its router
        advertisements and redirects go. Its IPv6 addresses are its global
        one and its link-local one (EUI-64 of its MAC, as its interface is
        made); the unspecified address (::) only for duplicate address
        detection and multicast listener reports; on a network without IPv6
        it sends none. Neighbour discovery in fragments goes too: nothing
        could read its target before a host reassembled it (br_netfilter).
        A port's name, its MAC (container_mac) and its addresses all follow
        from its address: the sets hold them per address (guard_address),
        added as addresses are first used, and stay valid for every later
        holder of the address."""
        E, NH, TH = nl.Expr, nl.NFT_PAYLOAD_NETWORK_HEADER, nl.NFT_PAYLOAD_TRANSPORT_HEADER
        t = nl.Table(self._table_name(), "bridge", exclusive=True)
        for name, key_len, set_id in _GUARD_SETS:
            t.set(name, key_len, set_id)
        t.chain("prerouting", "prerouting", -300)
        port = (E.meta(nl.NFT_META_IIFNAME), E.cmp(nl.ifname(VETH_PREFIX, prefix=True)))
        proto = E.meta(nl.NFT_META_PROTOCOL)
        arp, ip4, ip6 = (struct.pack("!H", p) for p in (0x0806, 0x0800, 0x86DD))
        icmp6 = (E.meta(nl.NFT_META_L4PROTO), E.cmp(bytes([58])))

        def not_in(set_name: str) -> bytes:
            set_id = next(i for n, _, i in _GUARD_SETS if n == set_name)
            return E.lookup(set_name, set_id, nl.NFT_REG32_00, invert=True)

        def unknown(set_name: str, base: int, offset: int, length: int) -> tuple[bytes, ...]:
            """The port's name and a field (a concatenation) not in the set."""
            return (E.meta(nl.NFT_META_IIFNAME, nl.NFT_REG32_00),
                    E.payload(base, offset, length, nl.NFT_REG32_04), not_in(set_name))

        drop = E.verdict(nl.NF_DROP)
        # a chain of the bridge family sees the frames of every bridge: those
        # of another network's ports are its guard's (and a kernel may lack
        # meta ibrname, CONFIG_NFT_BRIDGE_META)
        t.rule("prerouting", *port, E.meta(nl.NFT_META_IIFNAME, nl.NFT_REG32_00),
               not_in("names"), E.verdict(nl.NFT_RETURN))
        t.rule("prerouting", *port, proto, *(E.cmp(p, nl.NFT_CMP_NEQ) for p in (arp, ip4, ip6)),
               drop)
        t.rule("prerouting", *port, *unknown("ports", nl.NFT_PAYLOAD_LL_HEADER, 6, 6), drop)
        # ARP: Ethernet and IPv4 only, from its MAC and address
        t.rule("prerouting", *port, proto, E.cmp(arp), E.payload(NH, 0, 6),
               E.cmp(bytes.fromhex("000108000604"), nl.NFT_CMP_NEQ), drop)
        t.rule("prerouting", *port, proto, E.cmp(arp), *unknown("ports", NH, 8, 6), drop)
        t.rule("prerouting", *port, proto, E.cmp(arp), *unknown("addrs", NH, 14, 4), drop)
        t.rule("prerouting", *port, proto, E.cmp(ip4), *unknown("addrs", NH, 12, 4), drop)
        v6 = (*port, proto, E.cmp(ip6))
        if self.subnet6 is None:        # its containers have no IPv6
            t.rule("prerouting", *v6, drop)
            return t
        # a fragment with a hop limit of 255: neighbour discovery, in pieces
        t.rule("prerouting", *v6, E.exthdr6_present(44), E.cmp(b"\x01"), E.payload(NH, 7, 1),
               E.cmp(b"\xff"), drop)
        unspecified = (E.payload(NH, 8, 16), E.cmp(bytes(16)))
        t.rule("prerouting", *v6, *unspecified, E.meta(nl.NFT_META_L4PROTO),
               E.cmp(bytes([58]), nl.NFT_CMP_NEQ), drop)
        t.rule("prerouting", *v6, *unspecified, *icmp6, E.payload(TH, 0, 1),
               *(E.cmp(bytes([k]), nl.NFT_CMP_NEQ) for k in (135, 131, 143)), drop)
        t.rule("prerouting", *v6, E.payload(NH, 8, 16), E.cmp(bytes(16), nl.NFT_CMP_NEQ),
               *unknown("addrs6", NH, 8, 16), drop)
        for kind in (134, 137):         # router advertisement, redirect
            t.rule("prerouting", *v6, *icmp6, E.payload(TH, 0, 1), E.cmp(bytes([kind])), drop)
        t.rule("prerouting", *v6, *icmp6, E.payload(TH, 0, 1), E.cmp(bytes([136])),
               *unknown("addrs6", TH, 8, 16), drop)
        return t

    def guard_address(self, address: ipaddress.IPv4Address) -> None:
        """The keys of the container at address in its bridge's guard (see
        _guard): its port may send from its MAC and addresses. Added once
        per process and address (and again by any other process: adding
        what is there is no error)."""
        key = (self.bridge, self.index, int(address))
        if key in _guarded:
            return
        name = nl.ifname(veth_name(address))
        mac = container_mac(address)
        keys = {"names": [name], "ports": [name + mac + bytes(2)],
                "addrs": [name + address.packed],
                "addrs6": [name + self.address6(address).packed, name + _link_local(mac)]
                if self.subnet6 else []}
        try:
            nl.set_add(self._table_name(), "bridge", keys)
        except nl.NetlinkError as e:
            if e.errno != errno.ENOENT:
                raise
            self._upgrade()
            nl.set_add(self._table_name(), "bridge", keys)
        _guarded.add(key)

    def _upgrade(self) -> None:
        """A bridge made by an earlier isolate, without a guard: brought up to
        what a bridge is made with now, no MAC learnt from link-local frames,
        then its guard and its firewall (replaced) in one transaction, by one
        process (another's, made meanwhile, is EEXIST: no error). Its running
        containers' ports have no keys yet: they are let through until their
        addresses are used again."""
        if not self._present():
            raise NetworkError(f"network {self.name!r} was removed", network=self.name)
        sock = _route()
        try:
            nl.bridge_no_linklocal_learn(sock, self.index)
        finally:
            sock.close()
        try:
            self._guard().also(self._firewall().replacing()).commit()
        except nl.NetlinkError as e:
            if e.errno == errno.EEXIST:
                return
            if e.errno in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
                raise self._unguardable(e) from None
            raise

    def _present(self) -> bool:
        """Whether its bridge is still there (not removed, nor made again)."""
        try:
            return socket.if_nametoindex(self.bridge) == self.index
        except OSError:
            return False

    def _unguardable(self, e: OSError) -> NetworkError:
        return NetworkError(f"network {self.name!r}: this kernel cannot filter what is bridged "
                            f"(nftables of the bridge family, CONFIG_NF_TABLES_BRIDGE: "
                            f"{e.strerror}), without which a container could speak as another",
                            network=self.name)

    def _dir(self) -> str:
        """Its files' directory: of the network namespace it is first used in
        (kept: finding the namespace costs a socket)."""
        d = self.__dict__.get("_files")
        if d is None:
            d = self._files = _state_dir(self.name)
        return d

    def _write_files(self) -> None:
        d = self._dir()
        os.makedirs(d, mode=0o755, exist_ok=True)
        with open(f"{d}/resolv.conf", "w") as f:
            f.write(_resolv_conf())
        update_hosts(self)

    # -- what it is ---------------------------------------------------------

    @classmethod
    def _from_link(cls, link: dict) -> Network | None:
        fields = dict(p.split("=", 1) for p in link["alias"].split()[1:] if "=" in p)
        try:
            self = cls.__new__(cls)
            self.name = fields["name"]
            self.bridge = link["name"]
            self.index = link["index"]
            self.subnet = ipaddress.IPv4Network(fields["subnet"])
            self.gateway = ipaddress.IPv4Address(fields["gateway"]) if fields.get("gateway") \
                else None
            self.internal = fields.get("internal") == "1"
            self.subnet6 = ipaddress.ip_network(fields["subnet6"]) if "subnet6" in fields \
                else None
            self.gateway6 = None if self.subnet6 is None or self.internal else self.subnet6[1]
            self.mac = link.get("address") or b""
            self.mac_set = fields.get("mac") == "set"
            self._removed = False
        except (KeyError, ValueError):
            return None
        return self

    def containers(self) -> list[Endpoint]:
        """The containers on it now, by address."""
        sock = _route()
        try:
            return self._endpoints(sock)
        finally:
            sock.close()

    def _endpoints(self, sock: nl.Socket) -> list[Endpoint]:
        """Its containers: its ports, but those of this process's ended
        containers whose veth is being removed."""
        out = []
        with _pending_lock:
            ending = set(_ending.get(self.bridge, ()))
        for link in nl.links(sock, master=self.index):
            name = link["name"] or ""
            if not name.startswith(VETH_PREFIX):
                continue
            try:
                address = ipaddress.IPv4Address(int(name[len(VETH_PREFIX):], 16))
            except ValueError:
                continue
            if int(address) not in ending and link["alias"] != SPARE_ALIAS:
                out.append(Endpoint(address, link["alias"], self.address6(address)))
        return sorted(out, key=lambda e: e.address)

    def address6(self, address: ipaddress.IPv4Address) -> Any:
        """The IPv6 address beside address (IPv6Address), or None."""
        if self.subnet6 is None:
            return None
        return self.subnet6[int(address) - int(self.subnet.network_address)]

    @property
    def hosts_file(self) -> str:
        return f"{self._dir()}/hosts"

    @property
    def resolv_conf(self) -> str:
        return f"{self._dir()}/resolv.conf"

    def __repr__(self) -> str:
        extra = " internal" if self.internal else ""
        if self.subnet6 is not None:
            extra += f" {self.subnet6}"
        return f"<Network {self.name!r} {self.subnet} bridge={self.bridge}{extra}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and (self.name, self.bridge) == (other.name, other.bridge)

    def __hash__(self) -> int:
        return hash((self.name, self.bridge))

    # -- removal ------------------------------------------------------------

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the network: its bridge, firewall table and files. Refused
        (NetworkError) while a container is on it. Idempotent."""
        if self._removed:
            return
        _need_net_admin()
        with _locked(f"{STATE}/.lock"):
            sock = _route()
            try:
                links = {link["name"]: link for link in nl.links(sock)}
                link = links.get(self.bridge)
                if link is None or not link["alias"].startswith(ALIAS + " "):
                    self._removed = True
                    return
                wait_for_removals(self.bridge)
                # containers that ended a moment ago (of another process, a
                # pool's zygote) leave their veth to the kernel, which removes
                # it with their network namespace soon after
                deadline = time.monotonic() + 2
                while (on := self._endpoints(sock)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if on:
                    raise NetworkError(
                        f"network {self.name!r} is in use by {len(on)} container(s) ("
                        + ", ".join(f"{e.hostname} {e.address}" for e in on[:5])
                        + "): close them first", network=self.name)
                # spares (this process's, and any other's) are no containers
                with _pending_lock:
                    _closed.add((self.bridge, link["index"]))
                drop_spares(self.bridge)
                for port in nl.links(sock, master=link["index"]):
                    if port["alias"] == SPARE_ALIAS:
                        nl.link_del(sock, port["name"] or "", port["index"])
                nl.link_del(sock, self.bridge)
                nl.delete_table(self._table_name())
                try:
                    nl.delete_table(self._table_name(), "bridge")
                except nl.NetlinkError as e:      # a kernel without them has none
                    if e.errno not in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT):
                        raise
                _remove_files(self.bridge)
                self._removed = True
            finally:
                sock.close()

    remove = close


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"a network's name is a str, not {name!r}")
    if name in ("none", "host", "slirp4netns", "pasta") or not _NAME.fullmatch(name):
        raise ValueError(f"network name {name!r}: 1 to 64 letters, digits, '_', '.' or '-', "
                         "not first '_', '.' or '-', and not 'none', 'host', 'slirp4netns' "
                         "or 'pasta'")


def _parse_subnet(subnet: Any) -> ipaddress.IPv4Network:
    if not isinstance(subnet, str):
        raise TypeError(f"subnet is a str like '10.89.0.0/24', not {subnet!r}")
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as e:
        raise ValueError(f"subnet {subnet!r} is malformed: {e} (give it like '10.89.0.0/24')") \
            from None
    if net.version != 4:
        raise ValueError(f"subnet {subnet!r}: an IPv4 range (ipv6=True adds an IPv6 one)")
    if net.prefixlen > 29:
        raise ValueError(f"subnet {subnet!r} is too small: at most /29 (6 addresses)")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise ValueError(f"subnet {subnet!r}: not a loopback, link-local or multicast range")
    return net


def _parse_gateway(gateway: Any, net: ipaddress.IPv4Network | None) -> ipaddress.IPv4Address:
    if not isinstance(gateway, str):
        raise TypeError(f"gateway is a str like '10.89.0.1', not {gateway!r}")
    if net is None:
        raise ValueError("gateway needs subnet")
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise ValueError(f"gateway {gateway!r} is not an IPv4 address") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise ValueError(f"gateway {gateway} is not a host address of {net}")
    return gw


def _list(sock: nl.Socket) -> list[Network]:
    out = []
    for link in nl.links(sock, kind="bridge"):
        if link["alias"].startswith(ALIAS + " "):
            n = Network._from_link(link)
            if n is not None:
                out.append(n)
    return out


def networks() -> list[Network]:
    """The networks of this network namespace, by name."""
    sock = _route()
    try:
        return sorted(_list(sock), key=lambda n: n.name)
    finally:
        sock.close()


def get_network(name: str) -> Network:
    """The network named name (NetworkError if there is none); "bridge" is
    made on first use."""
    _check_name(name)
    for n in networks():
        if n.name == name:
            return n
    if name == DEFAULT:
        try:
            return Network(DEFAULT)
        except NetworkError:        # made meanwhile by another process
            for n in networks():
                if n.name == name:
                    return n
            raise
    raise NetworkError(f"no network named {name!r} (isolate.networks() lists them; "
                       "isolate.Network(name) makes one)", network=name)


def _resolv_conf() -> str:
    """The host's resolv.conf without what a container cannot reach: its
    loopback nameservers (the host's own resolver, on 127.0.0.53 and the like)."""
    try:
        with open("/etc/resolv.conf") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    out = []
    for line in lines:
        parts = line.split()
        if parts[:1] == ["nameserver"] and len(parts) > 1:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(parts[1].split("%")[0]).is_loopback:
                    continue
        out.append(line)
    return "\n".join(out) + "\n"


def _remove_files(bridge: str) -> None:
    """A network's files; and its namespace's directory once it holds no
    other network's. (Called under the lock of all networks, STATE/.lock.)"""
    top = _netns_dir()
    d = f"{top}/{bridge}"
    for name in ("hosts", "resolv.conf", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{d}/{name}")
    with contextlib.suppress(OSError):
        os.rmdir(d)
    with contextlib.suppress(OSError):
        os.rmdir(top)


def _alive(n: int, live: set[int]) -> bool:
    if n in live:
        return True
    try:
        socket.if_nametoindex(f"{VETH_PREFIX}{n:08x}")
        return True
    except OSError:
        return False


def update_hosts(net: Network, add: Endpoint | None = None,
                 remove: tuple[int, str, int] | None = None) -> None:
    """Rewrite the network's /etc/hosts, in place (containers have it bound):
    its lines for containers whose veth is still there (or that a live
    process is starting, marked "# starting PID"), with add and without
    remove: (address, hostname, ifindex of its veth, or 0), whose line stays
    if a veth of another index has the address now (a successor's). One
    lock, one read, one write, and no netlink dump: a start pays for it."""
    d = net._dir()
    base, mask = int(net.subnet.network_address), int(net.subnet.netmask)
    with _locked(f"{d}/.lock", made=True):
        gone = None
        if remove is not None:
            holder = _veth_index(remove[0]) if remove[2] else 0
            if holder in (0, remove[2]):        # else a successor's veth has the address
                gone = remove[:2]
        fd = os.open(f"{d}/hosts", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            old = os.pread(fd, 1 << 20, 0).decode("utf-8", "replace")
            with _pending_lock:
                live = set(_pending.get(net.bridge, ()))
            entries: dict[int, tuple[str, str]] = {}
            for line in old.splitlines():
                parts = line.split("\t")
                if len(parts) < 2 or line.startswith("#"):
                    continue
                try:
                    n = int.from_bytes(socket.inet_aton(parts[0]), "big")
                except OSError:
                    continue            # an IPv6 line (made again below), or not ours
                if n & mask != base or "." not in parts[0] or (n, parts[1]) == gone:
                    continue
                mark = parts[2] if len(parts) > 2 else ""
                if _alive(n, live):
                    entries[n] = (parts[1], "")
                    continue
                starter = mark.split()[-1] if mark.startswith("# starting ") else ""
                if starter.isdigit() and os.path.exists(f"/proc/{starter}"):
                    entries[n] = (parts[1], mark)       # being started by a live process
            if add is not None:
                entries[int(add.address)] = (add.hostname, f"# starting {os.getpid()}")
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"# isolate network {net.name}"]
            for n in sorted(entries):
                name, mark = entries[n]
                lines.append(f"{socket.inet_ntoa(n.to_bytes(4, 'big'))}\t{name}"
                             + (f"\t{mark}" if mark else ""))
                if net.subnet6 is not None:
                    lines.append(f"{net.address6(ipaddress.IPv4Address(n))}\t{name}")
            data = ("\n".join(lines) + "\n").encode()
            if data != old.encode():
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


# ---------------------------------------------------------- containers on one

@dataclass(frozen=True)
class Port:
    host_ip: str            # "" : every address of the host
    host_port: int
    port: int
    proto: str              # "tcp" or "udp"

    def __str__(self) -> str:
        ip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{ip}{self.host_port}:{self.port}/{self.proto}"


def parse_ports(ports: Any) -> tuple[Port, ...]:
    """ports= as Ports: {HOST_PORT: CONTAINER_PORT} (a key may also be
    "HOST_PORT/udp" or "IP:HOST_PORT[/proto]"), or a list of Docker's -p
    strings "[IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"."""
    if ports is None:
        return ()
    if isinstance(ports, tuple) and all(isinstance(p, Port) for p in ports):
        return ports        # parsed already
    if isinstance(ports, (str, bytes)):
        raise TypeError("ports is a dict {host_port: container_port} or a list of "
                        "'[IP:]HOST:CONTAINER[/proto]' strings")
    specs: list[str] = []
    if isinstance(ports, Mapping):
        for k, v in ports.items():
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"ports: container port {v!r} is not an int")
            key = str(k) if isinstance(k, int) and not isinstance(k, bool) else k
            if not isinstance(key, str):
                raise TypeError(f"ports: host port {k!r} is not an int or str")
            head, _, proto = key.partition("/")
            specs.append(f"{head}:{v}" + (f"/{proto}" if proto else ""))
    else:
        for p in ports:
            if not isinstance(p, str):
                raise TypeError(f"ports: {p!r} is not a '[IP:]HOST:CONTAINER[/proto]' string")
            specs.append(p)
    out = []
    for spec in specs:
        body, _, proto = spec.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise ValueError(f"ports: {spec!r}: the protocol is tcp or udp")
        parts = body.rsplit(":", 2)
        if len(parts) == 2:
            host_ip, hp, cp = "", parts[0], parts[1]
        elif len(parts) == 3:
            host_ip, hp, cp = parts
            try:
                if ipaddress.ip_address(host_ip).version != 4:
                    raise ValueError
            except ValueError:
                raise ValueError(f"ports: {spec!r}: {host_ip!r} is not an IPv4 address") from None
        else:
            raise ValueError(f"ports: {spec!r}: give HOST_PORT:CONTAINER_PORT")
        if host_ip == "0.0.0.0":
            host_ip = ""        # every address, as docker -p 0.0.0.0:H:C
        nums = []
        for n in (hp, cp):
            if not n.isdigit() or not 1 <= int(n) <= 65535:
                raise ValueError(f"ports: {spec!r}: port {n!r} is out of range (1 to 65535)")
            nums.append(int(n))
        out.append(Port(host_ip, nums[0], nums[1], proto))
    keys = [(p.host_ip, p.host_port, p.proto) for p in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"ports: a host port is given twice in {ports!r}")
    return tuple(out)


_cache: dict[str, tuple[int, Network]] = {}


def attached_network(name: str) -> Network:
    """The network named name, checked to be there (cached per process while
    its bridge keeps its index)."""
    hit = _cache.get(name)
    if hit is not None:
        try:
            if socket.if_nametoindex(hit[1].bridge) == hit[0]:
                return hit[1]
        except OSError:
            pass
    net = get_network(name)
    if net.mac and not net.mac_set:
        # set, so that it stays (a bridge made before its MAC was set), and
        # marked so: set again, unchanged, the kernel would flush the
        # bridge's neighbour entries, the running containers' pins among them
        net.mac_set = True
        with contextlib.suppress(OSError):
            sock = _route()
            try:
                nl.link_set(sock, net.index, address=net.mac, alias=net._alias())
            finally:
                sock.close()
    _cache[name] = (net.index, net)
    return net


def _reserve(net: Network, tried: set[int], previous: ipaddress.IPv4Address | None = None,
             wait: bool = True) -> ipaddress.IPv4Address:
    """The lowest free address of net, not in tried (to which it is added),
    marked as being started (_pending) until its veth is there. When all are
    taken, but containers of this process have ended and their veths are
    being removed, it waits for those (with wait). previous is no longer
    being started."""
    with _pending_lock:
        if previous is not None:
            _pending.get(net.bridge, set()).discard(int(previous))
        busy = _pending.setdefault(net.bridge, set())
        while True:
            ending = _ending.get(net.bridge, set())
            for address in net.subnet.hosts():
                n = int(address)
                if address == net.gateway or n in busy or n in tried or n in ending:
                    continue
                try:
                    socket.if_nametoindex(veth_name(address))
                    continue
                except OSError:
                    pass
                busy.add(n)
                tried.add(n)
                return address
            tried.intersection_update(busy)
            if wait and ending and _pending_lock.wait(5):
                continue
            raise NetworkError(f"network {net.name!r} has no free address left in "
                               f"{net.subnet}", network=net.name)


# ------------------------------------------------------------------ spares
#
# What a start on a network costs most is the kernel's: a network namespace
# and a veth pair in it, made, attached and configured (about 1.5 ms on 2
# cores). A process that starts containers on a network keeps one spare per
# network: a namespace made ahead by a thread of its own, with its interface
# configured for an address it holds and its bridge end down, which the next
# container joins as it is (its bridge end then comes up). The spare's veth
# has the alias SPARE_ALIAS (no container's: listings and Network.close pass
# over it). It is made again when a container on its network ends, and
# dropped once none has for SPARE_IDLE seconds. It is held only by an fd of
# this process, so that it goes with the process, veth and address
# included, however the process ends; a fork's child closes its copies.

_spares: dict[tuple[str, int], tuple[ipaddress.IPv4Address, int, int]] = {}
_netns_fds: set[int] = set()    # every network namespace's fd held here: spares (kept, or
                                # being taken) and running containers' (see Lease.started)
_spare_maker: Any = None        # the queue of the thread that makes them
_spare_making = threading.Lock()    # held by that thread while it makes one
_closed: set[tuple[str, int]] = set()   # networks closed by this process: no spares
_wants = itertools.count(1)     # numbers the wants, in order
_dropped: dict[str | None, int] = {}    # bridge (None: all) -> the last want drop_spares undid


def close_netns(fd: int) -> None:
    """A network namespace's fd held here (a spare's, or a container's), no
    longer wanted. A fork's child, which closed its copies, closes nothing."""
    with _pending_lock:
        if fd not in _netns_fds:
            return
        _netns_fds.discard(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def take_spare(net: Network) -> tuple[ipaddress.IPv4Address, int, int] | None:
    """A spare of net's, made ahead for the next container: (its address, an
    fd of its namespace, its bridge end's ifindex), now the caller's (to give
    to close_netns, or to keep); or None."""
    with _pending_lock:
        made = _spares.pop((net.bridge, net.index), None)
    if made is None:
        return None
    address, fd, index = made
    if _veth_index(int(address)) == index:     # else gone meanwhile (the network was closed)
        return made
    close_netns(fd)
    return None


def drop_spares(bridge: str | None = None, *, wanted: bool = True) -> int:
    """Drop this process's spares (of one bridge, or all), one being made
    included: their namespaces and veths go (by the thread that removes
    ended containers' veths; their addresses are free once they have gone),
    and (wanted) those asked for but not begun are not made. Before a leak
    check, or a measure that wants none, or when a container needs the
    address a spare holds. Returns how many were dropped."""
    with _spare_making, _pending_lock:
        gone = [(k, _spares.pop(k)) for k in list(_spares) if bridge is None or k[0] == bridge]
        if wanted:
            _dropped[bridge] = next(_wants)
    for (_, bridge_index), (address, fd, index) in gone:
        net = next((net for _, net in _cache.values() if net.index == bridge_index), None)
        if net is None:
            close_netns(fd)     # (not held: its network has gone)
        else:
            _end_later(net, int(address), index, fd)
    return len(gone)


def _end_later(net: Network, n: int, index: int, ns: int) -> None:
    """The veth of address n on net (ifindex index) goes, and with it the
    namespace whose fd ns is held here, by the thread that removes them (see
    _end_veths); the address waits for that (see _reserve)."""
    with _pending_lock:
        _ending.setdefault(net.bridge, set()).add(n)
    _remover().put(("end", net, (n, index, ns)))


def _after_fork_in_child() -> None:
    """In a fork's child: the parent's spares are the parent's, and so are
    the addresses its threads were starting or ending; the locks, perhaps
    held by a thread of the parent's at the fork, are new."""
    global _spare_maker, _pending_lock, _spare_making, _removals
    _pending_lock = threading.Condition()
    _spare_making = threading.Lock()
    for fd in _netns_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _netns_fds.clear()
    _spares.clear()
    _pending.clear()
    _ending.clear()
    _spare_maker = None
    _removals = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _want_spare(net: Network) -> None:
    """Have a spare of net made, unless there is one."""
    global _spare_maker
    import queue
    with _pending_lock:
        if (net.bridge, net.index) in _spares:
            return
        if _spare_maker is None:
            q: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_make_spares, args=(q,), daemon=True,
                             name="isolate-spare-maker").start()
            _spare_maker = q
        _spare_maker.put((net, next(_wants)))


def _make_spares(q: Any) -> None:
    """The thread: a spare for each network asked for; all dropped when
    none was asked for during SPARE_IDLE. Should it fail, it ends (and the
    next want starts another)."""
    global _spare_maker
    import queue
    from . import _isolate as _c
    _background()
    try:
        while True:
            try:
                net, want = q.get(timeout=SPARE_IDLE)
            except queue.Empty:
                drop_spares(wanted=False)
                continue
            with _spare_making:
                with _pending_lock:
                    if want <= max(_dropped.get(None, 0), _dropped.get(net.bridge, 0)):
                        continue        # asked for before a drop_spares
                _make_spare(q, net, (net.bridge, net.index), _c)
    finally:
        with _pending_lock:
            if _spare_maker is q:
                _spare_maker = None
        drop_spares(wanted=False)


def _make_spare(q: Any, net: Network, key: tuple[str, int], _c: Any) -> None:
    """One spare of net's, kept under key, unless there is one or net is gone."""
    with _pending_lock:
        if key in _spares or key in _closed:
            return
    if not net._present():
        return                  # removed (and perhaps made again) meanwhile
    tried: set[int] = set()
    for _ in range(16):
        try:
            address = _reserve(net, tried, wait=False)
        except NetworkError:
            return              # none free: the containers get what there is
        fd = -1
        try:
            net.guard_address(address)
            fd = _c.make_netns(_netif(net, address, SPARE_ALIAS, down=True))
            with _pending_lock:
                _netns_fds.add(fd)
            index = socket.if_nametoindex(veth_name(address))
        except OSError as e:
            if fd >= 0:
                close_netns(fd)
            with _pending_lock:
                _pending.get(net.bridge, set()).discard(int(address))
            if e.errno == errno.EEXIST:     # taken by another process meanwhile
                continue
            return
        with _pending_lock:
            _pending.get(net.bridge, set()).discard(int(address))
            if _spare_maker is q and key not in _spares and key not in _closed:
                _spares[key] = (address, fd, index)
                return
        _end_later(net, int(address), index, fd)     # not wanted after all
        return


class Lease:
    """What a container on a network holds while it runs: its address (the
    veth, made at its start), its published ports (bound sockets and an
    owned nf_tables table) and its line in the network's hosts file."""

    def __init__(self, net: Network, hostname: str, ports: tuple[Port, ...],
                 mtu: int = 0, thread: bool = True, spare: bool = False) -> None:
        """thread=False: no work is left to a thread of this process (a
        pool's zygote, which must stay single-threaded to fork): the hosts
        file is tidied and the pins are removed at once, and veths are left
        to the kernel, which removes them with their containers' network
        namespaces. spare: the
        container can join a network namespace made ahead of it (see
        take_spare); then .netns is its fd, else -1."""
        self._thread = thread
        self.net = net
        self.hostname = hostname
        self.ports = ports
        self.mtu = mtu
        self.address: ipaddress.IPv4Address | None = None
        self.netns = -1
        self._ns = -1           # its namespace, held until its veth is removed
        self._index = 0         # its veth's bridge end's ifindex, once known
        self._spares = spare and thread and mtu == 0
        self._tried: set[int] = set()
        self._held: list[socket.socket] = []
        self._table: nl.Table | None = None
        self._done = False
        if ports and net.internal:
            raise NetworkError(f"ports= on internal network {net.name!r}: it has no way in",
                               network=net.name)
        try:
            self._reserve_ports()
            made = take_spare(net) if self._spares else None
            if made is None:
                try:
                    self.pick()
                except NetworkError:
                    # the last free address may be a spare's: this container
                    # takes it (once made, if it is being made), or it goes
                    if self._spares:
                        with _spare_making:
                            made = take_spare(net)
                    if made is None:
                        if not drop_spares(net.bridge, wanted=False):
                            raise
                        self.pick()
            if made is not None:
                self.address, self.netns, self._index = made
                self._tried.add(int(self.address))
                self._publish(None)
        except BaseException:
            self.release()
            raise

    def _reserve_ports(self) -> None:
        for p in self.ports:
            s = socket.socket(socket.AF_INET,
                              socket.SOCK_STREAM if p.proto == "tcp" else socket.SOCK_DGRAM)
            try:
                s.bind((p.host_ip or "0.0.0.0", p.host_port))
            except OSError as e:
                s.close()
                raise NetworkError(f"port {p}: host port {p.host_port}/{p.proto} is in use "
                                   f"({e.strerror})" if e.errno == errno.EADDRINUSE else
                                   f"port {p}: {e.strerror}", network=self.net.name) from None
            self._held.append(s)

    def pick(self) -> None:
        """The lowest free address (one not tried before): the container's.
        When all are taken, but containers of this process have ended and
        their veths are being removed, it waits for those."""
        if self.netns >= 0:     # a spare that failed to come up: made anew
            self._drop_spare()
        self._index = 0
        previous = self.address
        self.address = None
        self.address = _reserve(self.net, self._tried, previous)
        self.net.guard_address(self.address)
        self._publish(previous)

    def _drop_spare(self) -> None:
        """The spare taken is not joined after all: it goes as an ended
        container's does (its pins while its namespace is still held)."""
        assert self.address is not None
        _end_later(self.net, int(self.address), self._index, self.netns)
        self.netns = -1

    def _publish(self, previous: ipaddress.IPv4Address | None) -> None:
        """Its address taken: its ports lead to it, its hosts line is written."""
        net = self.net
        assert self.address is not None
        self.address6 = net.address6(self.address)
        if self.ports:      # published to this address, from before its start
            if self._table is not None:
                self._table.close()
            self._table = self._port_table()
            self._table.commit()
        update_hosts(net, Endpoint(self.address, self.hostname, self.address6),
                     None if previous is None else (int(previous), self.hostname, 0))

    def netif(self) -> Any:
        assert self.address is not None
        return _netif(self.net, self.address, self.hostname, self.mtu,
                      index=self._index if self.netns >= 0 else 0)

    def started(self, netns: int = -1) -> None:
        """The veth is made: the address is the kernel's to hold; the ports
        lead to it. The container's namespace (the spare it joined, or the
        fd netns, from its start) is held here until its veth is removed: so
        that the veth, and the address, stay the container's until its
        entries on the bridge are gone, however soon it ends."""
        assert self.address is not None
        with _pending_lock:
            _pending.get(self.net.bridge, set()).discard(int(self.address))
            if netns >= 0:
                _netns_fds.add(netns)
        if self.netns >= 0:     # joined
            self._ns, self.netns = self.netns, -1
        else:
            self._ns = netns
            # its veth, removed by that index (a successor's of the same name
            # is never touched); 0 once gone already, with its namespace
            self._index = _veth_index(int(self.address))
        if self._thread:
            _remover().put(("tidy", self.net, None))    # its line, tidied of "starting", off our path
        else:
            with contextlib.suppress(OSError):
                update_hosts(self.net)

    def _port_table(self) -> nl.Table:
        E = nl.Expr
        assert self.address is not None
        t = nl.Table(f"isolate-{veth_name(self.address)}", "ip", owner=True)
        t.chain("prerouting", "prerouting", -100, "nat")
        t.chain("output", "output", -100, "nat")
        daddr = E.payload(nl.NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
        not_loopback = [daddr, E.bitwise(bytes([255, 0, 0, 0])),
                        E.cmp(bytes([127, 0, 0, 0]), nl.NFT_CMP_NEQ)]
        for p in self.ports:
            match = [E.fib_daddr_type(), E.cmp(struct.pack("=I", nl.RTN_LOCAL))]
            if p.host_ip:
                match = [daddr, E.cmp(socket.inet_aton(p.host_ip))]
            proto = socket.IPPROTO_TCP if p.proto == "tcp" else socket.IPPROTO_UDP
            rule = [E.meta(nl.NFT_META_L4PROTO), E.cmp(bytes([proto])),
                    E.payload(nl.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
                    E.cmp(struct.pack("!H", p.host_port)),
                    E.immediate(self.address.packed, nl.NFT_REG_1),
                    E.immediate(struct.pack("!H", p.port), nl.NFT_REG_2),
                    E.dnat(socket.AF_INET, nl.NFT_REG_1, nl.NFT_REG_2)]
            # From outside, never to 127.0.0.0/8: such a packet only comes from
            # a neighbour that forged it, and the host's loopback is its own
            # (CVE-2020-8558); a port on a loopback address is for the host only.
            if not ipaddress.IPv4Address(p.host_ip or "0.0.0.0").is_loopback:
                t.rule("prerouting", *match, *not_loopback, *rule)
            t.rule("output", *match, *rule)
        return t

    def release(self) -> None:
        """The container has ended (or never started): its veth, ports and
        hosts line go. Idempotent."""
        if self._done:
            return
        remove_veth = self._thread
        self._done = True
        if self.netns >= 0:     # a spare never joined: removed as a container's
            self._ns, self.netns = self.netns, -1
        if self._table is not None:
            self._table.close()
        for s in self._held:
            s.close()
        self._held.clear()
        if self.address is None:
            if self._spares:
                _want_spare(self.net)
            return
        n = int(self.address)
        if not (remove_veth and self._index) and self._ns >= 0:
            if not remove_veth and self._index:
                _unpin_now(self.net, n, self._index)
            close_netns(self._ns)
            self._ns = -1
        with _pending_lock:
            _pending.get(self.net.bridge, set()).discard(n)
            if remove_veth and self._index:
                _ending.setdefault(self.net.bridge, set()).add(n)
        if self._spares:
            _want_spare(self.net)       # for the next start, made while this one ends
        # Its line, unless a successor has its address (the container ended
        # a while ago: its veth went with its namespace): once closed, its
        # name resolves no more.
        with contextlib.suppress(OSError):     # else a stale line goes with the next write
            update_hosts(self.net, remove=(n, self.hostname, self._index))
        # Removing a veth waits for the kernel to let go of it (tens of ms):
        # done by a thread, off the caller's path, by its index. (The kernel
        # removes it anyway with the container's network namespace, as lazily.)
        if remove_veth and self._index:
            _remover().put(("end", self.net, (n, self._index, self._ns)))
            self._ns = -1


_removals: Any = None


def _remover() -> Any:
    """The queue of this process's veth removals (and hosts files to tidy),
    and its thread."""
    global _removals
    import queue
    with _pending_lock:
        if _removals is None or _removals[1] != os.getpid():    # none yet, or a fork's
            q: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_remove_veths, args=(q,), daemon=True,
                             name="isolate-veth-remover").start()
            _removals = (q, os.getpid())
        return _removals[0]


def _background() -> None:
    """This thread's work yields to everything else (nice 19): containers
    starting and running come first."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _remove_veths(q: Any) -> None:
    """The thread: ("end", net, (n, index, ns)): the veth of the container
    at address n (of ifindex index) goes, and its namespace's fd ns (or -1)
    is closed; ("tidy", net, None): the hosts file is tidied of lines whose
    veth is gone and of "starting" marks. What has been asked meanwhile is
    done together."""
    import queue
    _background()
    while True:
        items = [q.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(q.get_nowait())
        for kind, net, arg in items:
            if kind == "tidy":
                with contextlib.suppress(Exception):
                    update_hosts(net)
        ends = [(net, *arg) for kind, net, arg in items if kind == "end"]
        try:
            if ends:
                _end_veths(ends)
        except Exception:       # never the thread's end: later ends would wait for good
            with _pending_lock:
                for net, n, _, ns in ends:
                    _ending.get(net.bridge, set()).discard(n)
                _pending_lock.notify_all()
            for _, _, _, ns in ends:
                close_netns(ns)


def _end_veths(ends: list[tuple[Network, int, int, int]]) -> None:
    """Containers' veths, (net, n, index, ns) each, gone: the entries on the
    bridge for address n first, while its veth still holds it (no successor's
    can be there yet: its namespace ns is held; without it, the veth may have
    gone already, and the entries be a successor's); then the namespace is
    let go, and the veth with it (the kernel removes many namespaces at once
    in the time one veth removed alone takes: tens of ms); one still there
    after VETH_GRACE seconds is removed by its index. Each address is free
    again once its veth has gone."""
    waiting = []
    try:
        sock = _route()
    except OSError:
        sock = None
    try:
        for net, n, index, ns in ends:
            if sock is not None and _veth_index(n) == index:
                _unpin(sock, net, n)
            if ns >= 0:
                close_netns(ns)
            waiting.append((net, n, index))
        deadline = time.monotonic() + VETH_GRACE
        while waiting:
            gone = [w for w in waiting if _veth_index(w[1]) != w[2]]
            if time.monotonic() > deadline:
                gone = waiting
                for net, n, index in waiting:
                    with contextlib.suppress(OSError):
                        if sock is not None:
                            nl.link_del(sock, veth_name(ipaddress.IPv4Address(n)), index)
            if gone:
                waiting = [w for w in waiting if w not in gone]
                with _pending_lock:
                    for net, n, _ in gone:
                        _ending.get(net.bridge, set()).discard(n)
                    _pending_lock.notify_all()
            if waiting:
                time.sleep(0.005)
    finally:
        if sock is not None:
            sock.close()


def _unpin(sock: nl.Socket, net: Network, n: int) -> None:
    """The bridge's permanent neighbour entries for address n (see
    container_mac) go: else a device of another runtime given the address
    later would not be reached."""
    if net.gateway is None:
        return
    address = ipaddress.IPv4Address(n)
    with contextlib.suppress(OSError):
        nl.neigh_del(sock, net.index, str(address))
        if net.subnet6 is not None:
            nl.neigh_del(sock, net.index, str(net.address6(address)))


def _unpin_now(net: Network, n: int, index: int) -> None:
    """Address n's entries on the bridge gone, by the caller (no thread: a
    pool's zygote), while its veth, of ifindex index, still holds it: its
    namespace is held until this is done."""
    if _veth_index(n) != index:
        return
    try:
        sock = _route()
    except OSError:
        return
    try:
        _unpin(sock, net, n)
    finally:
        sock.close()


def wait_for_removals(bridge: str, timeout: float = 10.0) -> None:
    """Until the veths of this process's ended containers on bridge are gone."""
    with _pending_lock:
        _pending_lock.wait_for(lambda: not _ending.get(bridge), timeout)


class Held:
    """A container's cgroups (or None) and its network lease, released
    together: what `_start` returns in place of the cgroups alone."""

    def __init__(self, cgroups: Any, lease: Lease) -> None:
        self.cgroups = cgroups
        self.lease = lease

    def remove(self, wait: float = 2.0) -> None:
        try:
            if self.cgroups is not None:
                self.cgroups.remove(wait=wait)
        finally:
            self.lease.release()

    def oom_kills(self) -> int:
        return self.cgroups.oom_kills() if self.cgroups is not None else 0

    def procs(self) -> list[str]:
        return self.cgroups.procs() if self.cgroups is not None else []

    def __getattr__(self, name: str) -> Any:
        cgroups = self.__dict__.get("cgroups")
        if cgroups is None:
            raise AttributeError(name)
        return getattr(cgroups, name)
