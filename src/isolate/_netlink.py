"""rtnetlink and nf_tables messages, for networks made outside a container's start.

What runs on every start (a container's veth) is C (csrc/net.c); bridges,
their addresses, the hosts that resolve on them and the firewall rules of a
network or of published ports are made here, once per network or per
container with ports, with the kernel's own netlink sockets: no process is
started (no `ip`, no `nft`), and an nf_tables table can be owned by the socket
that made it, so that the kernel removes it when its owner process ends.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 1, 2, 4, 8
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS = 18, 20
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
IFF_UP = 1

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_ATTR = struct.Struct("=HH")
_NFGEN = struct.Struct("=BBH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, value: bytes | str | int | Iterable[bytes], fmt: str = "") -> bytes:
    """One attribute: bytes as they are, str NUL-terminated, int packed as fmt
    (default native u32), an iterable of attributes nested."""
    if isinstance(value, str):
        data = value.encode() + b"\0"
    elif isinstance(value, int):
        data = struct.pack(fmt or "=I", value)
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        data = b"".join(value)
    n = _ATTR.size + len(data)
    return _ATTR.pack(n, kind) + data + b"\0" * (_align(n) - n)


def attrs(data: bytes, at: int = 0) -> dict[int, bytes]:
    """The attributes from data[at:], by kind (nested flags dropped)."""
    out = {}
    while at + _ATTR.size <= len(data):
        n, kind = _ATTR.unpack_from(data, at)
        if n < _ATTR.size:
            break
        out[kind & 0x3FFF] = data[at + _ATTR.size:at + n]
        at += _align(n)
    return out


def cstr(value: bytes | None) -> str | None:
    return None if value is None else value.split(b"\0", 1)[0].decode("utf-8", "replace")


class NetlinkError(OSError):
    pass


class Socket:
    """A netlink socket of the caller's network namespace (where it was made)."""

    def __init__(self, protocol: int = NETLINK_ROUTE):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  protocol)
        self.sock.bind((0, 0))
        self.sock.settimeout(10)        # the kernel answers at once; never hang on it
        self.seq = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def _next(self) -> int:
        self.seq = (self.seq + 1) & 0x7FFFFFFF
        return self.seq

    def _messages(self, seq: int) -> Iterator[tuple[int, int, bytes]]:
        while True:
            data = self.sock.recv(1 << 16)
            at = 0
            while at + _HDR.size <= len(data):
                n, kind, flags, s, _ = _HDR.unpack_from(data, at)
                body = data[at + _HDR.size:at + n]
                at += _align(n)
                if s == seq:
                    yield kind, flags, body

    def request(self, kind: int, flags: int, body: bytes, what: str = "") -> list[bytes]:
        """Send one request; return the bodies of its answers (a dump's
        parts), raising the kernel's error as NetlinkError naming what."""
        return self.batch([(kind, flags, body)], what)

    def batch(self, messages: list[tuple[int, int, bytes]], what: str = "") -> list[bytes]:
        """Send messages in one datagram, each acknowledged; return the
        bodies of what they answered; the first error is raised."""
        with self.lock:
            seqs = []
            out = bytearray()
            for kind, flags, body in messages:
                seq = self._next()
                seqs.append(seq)
                out += _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0)
                out += body + b"\0" * (_align(len(body)) - len(body))
            self.sock.send(bytes(out))
            answers: list[bytes] = []
            for seq, (kind, flags, _) in zip(seqs, messages):
                if not flags & (NLM_F_ACK | NLM_F_DUMP):
                    continue
                for mkind, mflags, body in self._messages(seq):
                    if mkind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", body)[0]
                        if code:        # a batch is then undone: the rest is not awaited
                            raise NetlinkError(code, f"{what}: {os.strerror(code)}" if what
                                               else os.strerror(code))
                        break
                    if mkind == NLMSG_DONE:
                        break
                    answers.append(body)
                    if not mflags & NLM_F_MULTI and not flags & NLM_F_DUMP:
                        break
            return answers


# ------------------------------------------------------------------ links

def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def links(nl: Socket, master: int | None = None, kind: str | None = None) -> list[dict]:
    """The links of the namespace (the ports of master only, when given):
    dicts of index, name, alias, master, kind, address (its MAC, bytes)."""
    req = ifinfo()
    if master is not None:
        req += attr(IFLA_MASTER, master)
    if kind is not None:
        req += attr(IFLA_LINKINFO, [attr(IFLA_INFO_KIND, kind)])
    out = []
    for body in nl.request(RTM_GETLINK, NLM_F_DUMP, req, "list links"):
        _, _, index, flags, _ = _IFINFO.unpack_from(body)
        a = attrs(body, _IFINFO.size)
        info = attrs(a.get(IFLA_LINKINFO, b""))
        link = {"index": index, "name": cstr(a.get(IFLA_IFNAME)), "flags": flags,
                "alias": cstr(a.get(IFLA_IFALIAS)) or "",
                "master": struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0,
                "kind": cstr(info.get(IFLA_INFO_KIND)), "address": a.get(IFLA_ADDRESS, b"")}
        if master is not None and link["master"] != master:
            continue
        if kind is not None and link["kind"] != kind:
            continue
        out.append(link)
    return out


IFLA_INFO_DATA, IFLA_BR_MULTI_BOOLOPT, BR_BOOLOPT_NO_LL_LEARN = 2, 46, 0


def link_add(nl: Socket, name: str, kind: str, alias: str = "", up: bool = False,
             address: bytes = b"", no_linklocal_learn: bool = False) -> int:
    """Make a link of kind (bridge) named name (with MAC address, if given):
    its index. no_linklocal_learn: a bridge that learns no MAC from frames to
    the reserved 01:80:c2:00:00:0X addresses (which its filters never see)."""
    info = [attr(IFLA_INFO_KIND, kind)]
    if no_linklocal_learn:
        info.append(_no_linklocal_learn())
    body = ifinfo() + attr(IFLA_IFNAME, name) + attr(IFLA_LINKINFO, info)
    if address:
        body += attr(IFLA_ADDRESS, address)
    nl.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, f"make {kind} {name}")
    index = socket.if_nametoindex(name)
    if alias:
        link_set(nl, index, alias=alias)
    if up:
        link_set(nl, index, up=True)
    return index


def _no_linklocal_learn() -> bytes:
    bit = 1 << BR_BOOLOPT_NO_LL_LEARN
    return attr(IFLA_INFO_DATA, [attr(IFLA_BR_MULTI_BOOLOPT, struct.pack("=II", bit, bit))])


def bridge_no_linklocal_learn(nl: Socket, index: int) -> None:
    """A bridge made without no_linklocal_learn (see link_add): set now."""
    body = ifinfo(index) + attr(IFLA_LINKINFO, [attr(IFLA_INFO_KIND, "bridge"),
                                                _no_linklocal_learn()])
    nl.request(RTM_NEWLINK, NLM_F_ACK, body, f"set bridge {index}")


IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1


def link_set(nl: Socket, index: int, *, up: bool | None = None, alias: str | None = None,
             no_ipv6_ll: bool = False, address: bytes = b"") -> None:
    """Set a link's alias or MAC address, or turn off its IPv6 address
    generation (no link-local address: set before it comes up), or bring it
    up or down."""
    body = ifinfo(index, IFF_UP if up else 0, IFF_UP if up is not None else 0)
    if address:
        body += attr(IFLA_ADDRESS, address)
    if alias is not None:
        body += attr(IFLA_IFALIAS, alias.encode())
    if no_ipv6_ll:
        body += attr(IFLA_AF_SPEC, [attr(socket.AF_INET6, [
            attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))])])
    nl.request(RTM_NEWLINK, NLM_F_ACK, body, f"set link {index}")


def _delete(nl: Socket, kind: int, body: bytes, what: str) -> bool:
    """Send a removal: whether what it removes was there."""
    try:
        nl.request(kind, NLM_F_ACK, body, what)
    except NetlinkError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def link_del(nl: Socket, name: str, index: int = 0) -> bool:
    """Remove the link named name (or of ifindex index, where given: never
    another link that took the name): whether it was there."""
    body = ifinfo(index) if index else ifinfo() + attr(IFLA_IFNAME, name)
    return _delete(nl, RTM_DELLINK, body, f"remove {name}")


RTM_DELNEIGH, NDA_DST = 29, 1
_NDMSG = struct.Struct("=BxxxiHBB")


def neigh_del(nl: Socket, index: int, address: str) -> bool:
    """Remove the neighbour entry of address on link index: whether it was there."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    body = _NDMSG.pack(family, index, 0, 0, 0) + attr(NDA_DST, socket.inet_pton(family, address))
    return _delete(nl, RTM_DELNEIGH, body, f"remove neighbour {address}")


def addr_add(nl: Socket, index: int, address: str, prefix: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    flags = IFA_F_NODAD if family == socket.AF_INET6 else 0
    body = _IFADDR.pack(family, prefix, flags, 0, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    if family == socket.AF_INET and prefix < 31:
        host = (1 << (32 - prefix)) - 1
        brd = struct.unpack("!I", packed)[0] | host
        body += attr(IFA_BROADCAST, struct.pack("!I", brd))
    nl.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body,
               f"add address {address}/{prefix}")


# --------------------------------------------------------------- nftables

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_DELTABLE = 0, 1, 2
NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 3, 6
NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM = 9, 12
NFTA_TABLE_NAME, NFTA_TABLE_FLAGS = 1, 2
NFT_TABLE_F_OWNER = 2
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY = 1, 3, 4, 5
NFTA_CHAIN_TYPE = 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM = 1
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_KEY_LEN, NFTA_SET_ID = 1, 2, 5, 10
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY = 1
NFTA_LOOKUP_SET, NFTA_LOOKUP_SREG, NFTA_LOOKUP_SET_ID, NFTA_LOOKUP_FLAGS = 1, 2, 4, 5
NFT_LOOKUP_F_INV = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE = 1
NF_ACCEPT, NF_DROP, NFT_RETURN = 1, 0, -5
NFT_REG_1, NFT_REG_2 = 1, 2
NFT_REG32_00, NFT_REG32_04 = 8, 12      # 4-byte registers: a concatenation's parts
NFT_CMP_EQ, NFT_CMP_NEQ = 0, 1
NFT_PAYLOAD_LL_HEADER, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER = 0, 1, 2
NFT_META_PROTOCOL = 1
NFT_META_L4PROTO, NFT_META_IIFNAME, NFT_META_OIFNAME, NFT_META_NFPROTO = 16, 6, 7, 15
NFT_NAT_DNAT = 1
NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR = 3, 2
RTN_LOCAL = 2
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
FAMILIES = {"inet": 1, "ip": 2, "bridge": 7, "ip6": 10}


def _nft(kind: int, family: int, *parts: bytes) -> tuple[int, int, bytes]:
    return ((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_ACK | NLM_F_CREATE,
            _NFGEN.pack(family, 0, 0) + b"".join(parts))


def _expr(name: str, *data: bytes) -> bytes:
    return attr(NFTA_LIST_ELEM, [attr(NFTA_EXPR_NAME, name), attr(NFTA_EXPR_DATA, list(data))])


def _be(n: int) -> bytes:
    return struct.pack("!I", n)


def _data(value: bytes) -> bytes:
    return attr(NFTA_DATA_VALUE, value)


class Expr:
    """nf_tables expressions, each bytes of one list element."""

    @staticmethod
    def meta(key: int, reg: int = NFT_REG_1) -> bytes:
        return _expr("meta", attr(1, _be(reg)), attr(2, _be(key)))   # DREG, KEY

    @staticmethod
    def cmp(value: bytes, op: int = NFT_CMP_EQ, reg: int = NFT_REG_1) -> bytes:
        return _expr("cmp", attr(1, _be(reg)), attr(2, _be(op)), attr(3, [_data(value)]))

    @staticmethod
    def payload(base: int, offset: int, length: int, reg: int = NFT_REG_1) -> bytes:
        return _expr("payload", attr(1, _be(reg)), attr(2, _be(base)), attr(3, _be(offset)),
                     attr(4, _be(length)))

    @staticmethod
    def bitwise(mask: bytes, reg: int = NFT_REG_1) -> bytes:
        # SREG, DREG, LEN, MASK, XOR: reg = (reg & mask) ^ 0
        return _expr("bitwise", attr(1, _be(reg)), attr(2, _be(reg)), attr(3, _be(len(mask))),
                     attr(4, [_data(mask)]), attr(5, [_data(b"\0" * len(mask))]))

    @staticmethod
    def immediate(value: bytes, reg: int) -> bytes:
        return _expr("immediate", attr(1, _be(reg)), attr(2, [_data(value)]))

    @staticmethod
    def verdict(code: int) -> bytes:
        return _expr("immediate", attr(1, _be(0)),
                     attr(2, [attr(NFTA_DATA_VERDICT, [attr(NFTA_VERDICT_CODE,
                                                             struct.pack("!i", code))])]))

    @staticmethod
    def fib_daddr_type(reg: int = NFT_REG_1) -> bytes:
        return _expr("fib", attr(1, _be(reg)), attr(2, _be(NFT_FIB_RESULT_ADDRTYPE)),
                     attr(3, _be(NFTA_FIB_F_DADDR)))

    @staticmethod
    def dnat(family: int, addr_reg: int, port_reg: int) -> bytes:
        return _expr("nat", attr(1, _be(NFT_NAT_DNAT)), attr(2, _be(family)),
                     attr(3, _be(addr_reg)), attr(5, _be(port_reg)))

    @staticmethod
    def masquerade() -> bytes:
        return _expr("masq")

    @staticmethod
    def exthdr6_present(kind: int, reg: int = NFT_REG_1) -> bytes:
        """Whether the IPv6 packet has an extension header of kind (44: a
        fragment header): 1 or 0, one byte."""
        return _expr("exthdr", attr(1, _be(reg)), attr(2, bytes([kind])), attr(3, _be(0)),
                     attr(4, _be(1)), attr(5, _be(1)), attr(6, _be(0)))   # present, IPv6

    @staticmethod
    def lookup(set_name: str, set_id: int, reg: int, invert: bool = False) -> bytes:
        """Whether the key in reg (and the registers after it, for a
        concatenation) is in the set; invert: whether it is not."""
        return _expr("lookup", attr(NFTA_LOOKUP_SET, set_name), attr(NFTA_LOOKUP_SET_ID, _be(set_id)),
                     attr(NFTA_LOOKUP_SREG, _be(reg)),
                     attr(NFTA_LOOKUP_FLAGS, _be(NFT_LOOKUP_F_INV if invert else 0)))


def ifname(name: str, prefix: bool = False) -> bytes:
    """An interface name as meta iifname/oifname compare it (16 bytes), or
    its first bytes only (a prefix, as nft's "name*")."""
    raw = name.encode()
    return raw if prefix else raw + b"\0" * (16 - len(raw))


class Table:
    """An nf_tables table, made in one batch with its chains and rules.
    owner: the table belongs to the netlink socket that made it (kept in
    self.nl), and the kernel removes it when that socket is closed, also
    by the end of its process."""

    def __init__(self, name: str, family: str = "inet", owner: bool = False,
                 exclusive: bool = False):
        """exclusive: its making fails (EEXIST) where the table is there
        already (else it is added to, as `nft add table` does)."""
        self.name, self.family, self.owner = name, FAMILIES[family], owner
        self.messages: list[tuple[int, int, bytes]] = []
        self.nl: Socket | None = None
        flags = NFT_TABLE_F_OWNER if owner else 0
        kind, nlflags, body = _nft(NFT_MSG_NEWTABLE, self.family, attr(NFTA_TABLE_NAME, name),
                                   attr(NFTA_TABLE_FLAGS, _be(flags)))
        self.messages.append((kind, nlflags | (NLM_F_EXCL if exclusive else 0), body))

    def replacing(self) -> Table:
        """The same table, made in place of the one of its name, which must
        be there (removed in the same transaction: nothing between is
        unfiltered)."""
        self.messages.insert(0, ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_ACK,
                                 _NFGEN.pack(self.family, 0, 0) + attr(NFTA_TABLE_NAME, self.name)))
        return self

    def also(self, other: Table) -> Table:
        """other made in the same transaction as this table: both, or neither."""
        self.messages += other.messages
        return self

    def chain(self, name: str, hook: str, priority: int, kind: str = "filter") -> None:
        self.messages.append(_nft(
            NFT_MSG_NEWCHAIN, self.family, attr(NFTA_CHAIN_TABLE, self.name),
            attr(NFTA_CHAIN_NAME, name),
            attr(NFTA_CHAIN_HOOK, [attr(NFTA_HOOK_HOOKNUM, _be(HOOKS[hook])),
                                   attr(NFTA_HOOK_PRIORITY, struct.pack("!i", priority))]),
            attr(NFTA_CHAIN_POLICY, _be(NF_ACCEPT)), attr(NFTA_CHAIN_TYPE, kind)))

    def set(self, name: str, key_len: int, set_id: int) -> None:
        """A set of keys of key_len bytes (a hash set; a rule of the same
        table refers to it by name and set_id)."""
        self.messages.append(_nft(NFT_MSG_NEWSET, self.family, attr(NFTA_SET_TABLE, self.name),
                                  attr(NFTA_SET_NAME, name), attr(NFTA_SET_KEY_LEN, _be(key_len)),
                                  attr(NFTA_SET_ID, _be(set_id))))

    def rule(self, chain: str, *exprs: bytes) -> None:
        """A rule, after the chain's others."""
        kind, flags, body = _nft(NFT_MSG_NEWRULE, self.family, attr(NFTA_RULE_TABLE, self.name),
                                 attr(NFTA_RULE_CHAIN, chain),
                                 attr(NFTA_RULE_EXPRESSIONS, list(exprs)))
        self.messages.append((kind, flags | NLM_F_APPEND, body))

    def commit(self) -> None:
        """Make it all, or nothing (one nf_tables transaction)."""
        nl = Socket(NETLINK_NETFILTER)
        try:
            _nft_batch(nl, self.messages, f"nftables table {self.name}")
        except BaseException:
            nl.close()
            raise
        if self.owner:
            self.nl = nl
        else:
            nl.close()

    def close(self) -> None:
        """An owned table: removed with its socket."""
        if self.nl is not None:
            self.nl.close()
            self.nl = None


def _nft_batch(nl: Socket, messages: list[tuple[int, int, bytes]], what: str) -> None:
    """messages in one nf_tables transaction: all take effect, or none."""
    begin = (NFNL_MSG_BATCH_BEGIN, 0, _NFGEN.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)))
    end = (NFNL_MSG_BATCH_END, 0, _NFGEN.pack(0, 0, socket.htons(NFNL_SUBSYS_NFTABLES)))
    nl.batch([begin, *messages, end], what)


def set_add(table: str, family: str, keys: dict[str, list[bytes]]) -> None:
    """Keys added to sets of a table ({set name: keys}), in one transaction;
    keys already there stay, without error."""
    messages = [_nft(NFT_MSG_NEWSETELEM, FAMILIES[family], attr(NFTA_SET_ELEM_LIST_TABLE, table),
                     attr(NFTA_SET_ELEM_LIST_SET, name),
                     attr(NFTA_SET_ELEM_LIST_ELEMENTS, [
                         attr(NFTA_LIST_ELEM, [attr(NFTA_SET_ELEM_KEY, [_data(key)])])
                         for key in elements]))
                for name, elements in keys.items() if elements]
    nl = Socket(NETLINK_NETFILTER)
    try:
        _nft_batch(nl, messages, f"add to the sets of nftables table {table}")
    finally:
        nl.close()


def tables() -> list[tuple[int, str]]:
    """The nf_tables tables of this network namespace: (family, name)."""
    nl = Socket(NETLINK_NETFILTER)
    try:
        bodies = nl.request((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_DUMP,
                            _NFGEN.pack(0, 0, 0), "list nftables tables")
    finally:
        nl.close()
    return sorted((body[0], cstr(attrs(body, _NFGEN.size).get(NFTA_TABLE_NAME)) or "")
                  for body in bodies)


def delete_table(name: str, family: str = "inet") -> bool:
    nl = Socket(NETLINK_NETFILTER)
    try:
        msg = ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, NLM_F_ACK,
               _NFGEN.pack(FAMILIES[family], 0, 0) + attr(NFTA_TABLE_NAME, name))
        _nft_batch(nl, [msg], f"remove nftables table {name}")
        return True
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    finally:
        nl.close()
