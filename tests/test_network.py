"""Networks: bridges, addresses, names, published ports, and their cleanup.

The whole test session runs in a network namespace of its own (conftest), so
every bridge, veth and firewall table here is made there, and all traffic
goes to the containers made here or to 127.0.0.1.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import ipaddress
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

import isolate
from isolate import _netlink

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bridges need root")

#: a server for TCP and UDP, run on the host's root (its python3) in a container
SERVER = textwrap.dedent("""
    import socket, threading
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 5353))          # bound before "ready"
    def udp():
        while True:
            data, peer = u.recvfrom(100)
            u.sendto(b"udp:" + data, peer)
    threading.Thread(target=udp, daemon=True).start()
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("0.0.0.0", 5432))
    t.listen()
    print("ready", flush=True)
    while True:
        c, _ = t.accept()
        c.sendall(b"tcp:" + c.recv(100))
        c.close()
""")

#: a client: by name, TCP then UDP; prints what came back, or the error
CLIENT = textwrap.dedent("""
    import socket, sys, time
    name = sys.argv[1]
    end = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection((name, 5432), timeout=1) as c:
                c.sendall(b"hello")
                print(c.recv(100).decode())
            break
        except OSError as e:
            if time.monotonic() > end or isinstance(e, socket.gaierror):
                print("tcp failed:", type(e).__name__, e)
                sys.exit(1)
            time.sleep(0.05)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1)
    u.sendto(b"hello", (name, 5353))
    print(u.recvfrom(100)[0].decode())
""")


def _serve(c: isolate.Container) -> subprocess.Popen:
    p = c.spawn([sys.executable, "-I", "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _stop(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


def _links() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def _eventually(probe, expected, timeout: float = 5.0) -> None:
    """probe() == expected within timeout: a closed container's veth is
    removed by a thread of the caller's, and by the kernel, a moment later."""
    deadline = time.monotonic() + timeout
    while (got := probe()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == expected


def _tables() -> set[str]:
    return {name for _, name in _netlink.tables()}


def test_two_containers_on_a_network_talk_tcp_and_udp_by_name():
    with isolate.Network("testnet", subnet="10.89.0.0/24") as net, \
            isolate.Container(network=net, hostname="db") as db, \
            isolate.Container(network=net, hostname="app") as app:
        assert ipaddress.ip_address(db.ip) in net.subnet and db.ip != app.ip
        server = _serve(db)
        r = app.run([sys.executable, "-I", "-c", CLIENT, "db"], capture_output=True, text=True)
        assert r.stdout.split() == ["tcp:hello", "udp:hello"], r
        # what the container sees: eth0 with its address, a default route
        # through the gateway, the network's names in /etc/hosts
        r = app.run(["sh", "-c", "cat /sys/class/net/eth0/operstate; ip -4 -o addr show eth0;"
                     " ip route; cat /etc/hosts"], capture_output=True, text=True, check=True)
        assert r.stdout.splitlines()[0] == "up"
        assert f"inet {app.ip}/24" in r.stdout
        assert "default via 10.89.0.1 dev eth0" in r.stdout
        hosts = [line.split("\t")[:2] for line in r.stdout.splitlines()
                 if line.startswith("10.89.") and "\t" in line]
        assert sorted(hosts) == sorted([[db.ip, "db"], [app.ip, "app"]])
        assert [(str(e.address), e.hostname) for e in net.containers()] == \
            sorted([(db.ip, "db"), (app.ip, "app")], key=lambda t: ipaddress.ip_address(t[0]))
        _stop(server)


def test_a_later_container_is_named_in_the_earlier_ones_hosts():
    with isolate.Network(subnet="10.89.1.0/24") as net, \
            isolate.Container(network=net, hostname="first") as first:
        with isolate.Container(network=net, hostname="second") as second:
            r = first.run(["cat", "/etc/hosts"], capture_output=True, text=True, check=True)
            assert f"{second.ip}\tsecond" in r.stdout
        r = first.run(["cat", "/etc/hosts"], capture_output=True, text=True, check=True)
        assert "second" not in r.stdout and f"{first.ip}\tfirst" in r.stdout


def test_containers_on_two_networks_cannot_reach_each_other():
    with isolate.Network("neta", subnet="10.89.2.0/24") as a, \
            isolate.Network("netb", subnet="10.89.3.0/24") as b, \
            isolate.Container(network=a, hostname="db") as db, \
            isolate.Container(network=b, hostname="other") as other, \
            isolate.Container(network=a, hostname="near") as near:
        server = _serve(db)
        # by name: not in the other network's hosts
        r = other.run([sys.executable, "-I", "-c", CLIENT, "db"], capture_output=True, text=True)
        assert r.returncode == 1 and "gaierror" in r.stdout, r
        # by address: the host would route it, the network's firewall drops it
        r = other.run([sys.executable, "-I", "-c", CLIENT, db.ip], capture_output=True, text=True)
        assert r.returncode == 1 and "tcp failed" in r.stdout, r
        r = near.run([sys.executable, "-I", "-c", CLIENT, db.ip], capture_output=True, text=True)
        assert r.stdout.split() == ["tcp:hello", "udp:hello"], r
        _stop(server)


def test_an_internal_network_has_no_way_out_or_in():
    with isolate.Network("inner", subnet="10.89.4.0/24", internal=True) as inner, \
            isolate.Network("outer", subnet="10.89.5.0/24") as outer, \
            isolate.Container(network=inner, hostname="db") as db, \
            isolate.Container(network=inner, hostname="peer") as peer, \
            isolate.Container(network=outer, hostname="out") as out:
        assert inner.gateway is None
        server = _serve(out)
        r = db.run(["ip", "route"], capture_output=True, text=True, check=True)
        assert "default" not in r.stdout
        r = db.run([sys.executable, "-I", "-c", CLIENT, out.ip], capture_output=True, text=True)
        assert r.returncode == 1, r
        _stop(server)
        server = _serve(db)
        r = peer.run([sys.executable, "-I", "-c", CLIENT, "db"], capture_output=True, text=True)
        assert r.stdout.split() == ["tcp:hello", "udp:hello"], r
        with pytest.raises(OSError):        # nor from the host: the bridge has no address
            socket.create_connection((db.ip, 5432), timeout=1).close()
        _stop(server)
        with pytest.raises(isolate.NetworkError, match="internal"):
            isolate.Container(network=inner, ports={8080: 80}).start()


def _fetch(url: str, deadline: float = 5.0) -> str:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


HTTPD = "mkdir -p /tmp/www && echo served by $(hostname) > /tmp/www/index.html && " \
        "exec httpd -f -p 80 -h /tmp/www"


def test_a_published_port_answers_on_the_hosts_loopback(rootfs):
    with isolate.Network(subnet="10.89.6.0/24") as net, \
            isolate.Container(rootfs, network=net, hostname="web", ports={18080: 80}) as web, \
            isolate.Container(rootfs, network=net, hostname="client") as client:
        p = web.spawn(["sh", "-c", HTTPD])
        assert _fetch("http://127.0.0.1:18080/") == "served by web\n"
        with isolate.Container(rootfs, network=net, ports=["0.0.0.0:18082:80"]) as any_addr:
            q = any_addr.spawn(["sh", "-c", HTTPD])
            assert _fetch("http://127.0.0.1:18082/").startswith("served by")
            q.kill()
            q.wait()
        # and from another container, by name, straight to port 80
        r = client.run(["wget", "-qO-", "http://web/"], capture_output=True, text=True)
        assert r.stdout == "served by web\n", r
        p.kill()
        p.wait()
    assert not any(t.startswith("isolate-iv") for t in _tables())


def test_udp_port_published(rootfs):
    with isolate.Network(subnet="10.89.7.0/24") as net, \
            isolate.Container(network=net, ports=["127.0.0.1:15353:5353/udp"]) as c:
        server = _serve(c)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(2)
                u.sendto(b"hi", ("127.0.0.1", 15353))
                assert u.recvfrom(100)[0] == b"udp:hi"
        finally:
            _stop(server)


def test_a_port_in_use_and_bad_ports_are_refused_leaving_nothing(rootfs):
    with isolate.Network(subnet="10.89.8.0/24") as net:
        holder = socket.socket()
        holder.bind(("0.0.0.0", 18090))
        try:
            before = (_links(), _tables(), net.containers())
            with pytest.raises(isolate.NetworkError, match="18090/tcp is in use"):
                isolate.Container(network=net, ports={18090: 80}).start()
            with isolate.Container(network=net, ports={18091: 80}) as c:
                assert c.ip
                with pytest.raises(isolate.NetworkError, match="in use"):
                    isolate.run(["true"], network=net, ports={18091: 80})
            _eventually(lambda: (_links(), _tables(), net.containers()), before)
        finally:
            holder.close()
        for bad in ({0: 80}, {70000: 80}, {8080: 0}, ["8080"], ["a:b"], ["1.2.3:80:80"],
                    ["80:80/sctp"], {"8080/udp": "80"}, "8080:80", [80, 80]):
            with pytest.raises((ValueError, TypeError)):
                isolate.Container(network=net, ports=bad)
        with pytest.raises(ValueError, match="given twice"):
            isolate.Container(network=net, ports=["80:80", "80:81"])
    for network in ("none", "host"):
        with pytest.raises(ValueError, match="needs a network"):
            isolate.Container(network=network, ports={8080: 80})


def test_bad_networks_are_refused_leaving_nothing():
    before = (_links(), _tables())
    for subnet in ("10.89.9.0/33", "10.89.9.1/24", "nonsense", "fd00::/64", "10.89.9.0/30",
                   "127.0.0.0/8"):
        with pytest.raises(ValueError, match="subnet"):
            isolate.Network(subnet=subnet)
    with pytest.raises(TypeError):
        isolate.Network(subnet=24)
    with pytest.raises(ValueError, match="gateway"):
        isolate.Network(subnet="10.89.9.0/24", gateway="10.89.10.1")
    for name in ("", "-x", "a/b", "none", "host", "slirp4netns", "x" * 65, "a b"):
        with pytest.raises(ValueError, match="network name"):
            isolate.Network(name)
    with isolate.Network("taken", subnet="10.89.9.0/24") as net:
        with pytest.raises(isolate.NetworkError, match="taken"):
            isolate.Network("taken", subnet="10.89.10.0/24")
        with pytest.raises(isolate.NetworkError, match="overlaps 10.89.9.0/24 .network 'taken'"):
            isolate.Network(subnet="10.89.0.0/16")
        with pytest.raises(isolate.NetworkError, match="no network named 'nosuch'"):
            isolate.Container(network="nosuch")
        with isolate.Container(network="taken") as c:     # by name
            with pytest.raises(isolate.NetworkError, match="in use by 1 container"):
                net.close()
            assert c.run(["cat", "/sys/class/net/eth0/operstate"], capture_output=True,
                         text=True).stdout == "up\n"
        assert [n.name for n in isolate.networks()] == ["taken"]
    assert isolate.networks() == []
    assert (_links(), _tables()) == before


def test_addresses_are_reused_after_close():
    with isolate.Network(subnet="10.89.11.0/29") as net:     # 5 addresses besides the gateway
        for _ in range(3):
            cs = [isolate.Container(network=net).start() for _ in range(5)]
            assert sorted(c.ip for c in cs) == [f"10.89.11.{i}" for i in range(2, 7)]
            with pytest.raises(isolate.NetworkError, match="no free address"):
                isolate.Container(network=net).start()
            for c in cs:
                c.close()
            assert net.containers() == []


def test_200_containers_from_4_threads_get_distinct_addresses():
    with isolate.Network(subnet="10.89.12.0/24") as net:
        def batch(i: int) -> list[isolate.Container]:
            return [isolate.Container(network=net, hostname=f"c{i}-{j}").start()
                    for j in range(50)]
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            containers = [c for cs in ex.map(batch, range(4)) for c in cs]
        try:
            ips = [c.ip for c in containers]
            assert len(set(ips)) == 200
            assert {str(e.address) for e in net.containers()} == set(ips)
            # each sees its own address on eth0, and every name in /etc/hosts
            for c in containers[::40]:
                r = c.run(["sh", "-c", "ip -4 -o addr show eth0; grep -c '^10\\.89' /etc/hosts"],
                          capture_output=True, text=True, check=True)
                assert f"inet {c.ip}/24" in r.stdout and r.stdout.split()[-1] == "200"
        finally:
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                list(ex.map(lambda c: c.close(), containers))
        assert net.containers() == []


def test_isolate_run_and_the_default_bridge():
    r = isolate.run(["sh", "-c", "ip -4 -o addr show eth0; ip route | grep default"],
                    network="bridge", capture_output=True, text=True, check=True)
    net = isolate.get_network("bridge")
    try:
        assert net.bridge == "ib-bridge" and net.subnet.prefixlen == 24
        assert f"via {net.gateway} dev eth0" in r.stdout
        ip = r.stdout.split()[3].split("/")[0]
        assert ipaddress.ip_address(ip) in net.subnet
        assert net.containers() == []       # ended with its command
    finally:
        net.close()


OWNER = textwrap.dedent("""
    import sys, time, isolate
    from isolate import network
    net = isolate.get_network(sys.argv[1])
    c = isolate.Container(sys.argv[2], network=net, hostname="owned", ports={18095: 80},
                          memory="64M")
    c.start()
    p = c.spawn(["sh", "-c", sys.argv[3]])
    isolate.run(["true"], rootfs=sys.argv[2], network=net)    # then a spare is made
    while not network._spares:
        time.sleep(0.01)
    print(c.ip, *(a for a, _, _ in network._spares.values()), flush=True)
    sys.stdin.read()
""")


def test_an_owner_sigkilled_leaves_no_veth_rule_lease_or_namespace(rootfs):
    with isolate.Network("killed", subnet="10.89.13.0/24") as net:
        before = (_links(), _tables())
        owner = subprocess.Popen([sys.executable, "-c", OWNER, "killed", rootfs, HTTPD],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ip, spare = owner.stdout.readline().split()
            assert ip == "10.89.13.2"
            assert f"iv{int(ipaddress.ip_address(ip)):08x}" in _links()
            assert f"iv{int(ipaddress.ip_address(spare)):08x}" in _links()    # its spare's
            assert any(t.startswith("isolate-iv") for t in _tables())
            assert _fetch("http://127.0.0.1:18095/") == "served by owned\n"
        finally:
            owner.kill()
            owner.wait()
            owner.stdin.close()
            owner.stdout.close()
        deadline = time.monotonic() + 10
        while (_links(), _tables()) != before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (_links(), _tables()) == before
        assert net.containers() == []
        s = socket.socket()
        s.bind(("0.0.0.0", 18095))          # the port is free again
        s.close()
        with isolate.Container(network=net) as c:   # and so is the address
            assert c.ip == ip
            r = c.run(["cat", "/etc/hosts"], capture_output=True, text=True)
            assert "owned" not in r.stdout


def _eth0() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[3].split("/")[0]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_pool_run_and_isolated_take_a_network():
    with isolate.Network(subnet="10.89.14.0/24") as net:
        with isolate.Pool(size=2, network=net, hostname="worker") as pool:
            r = pool.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True,
                         text=True, check=True)
            assert "inet 10.89.14." in r.stdout
            # a call's container (made by the pool's zygote) is on it too, named
            seen = {pool.call(_eth0) for _ in range(4)}
            assert all(ip.startswith("10.89.14.") for ip in seen), seen
            assert "worker" in pool.call(_read, "/etc/hosts")
        with pytest.raises(ValueError, match="publish"):
            isolate.Pool(network=net, ports={8080: 80})

        @isolate.isolated(network=net)
        def address() -> str:
            return socket.gethostbyname(socket.gethostname())
        assert address().startswith("10.89.14.")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isolate", *args], capture_output=True,
                          text=True, timeout=60)


def test_the_cli_makes_lists_uses_and_removes_networks(rootfs):
    r = _cli("network", "create", "--subnet", "10.89.15.0/24", "clinet")
    assert r.returncode == 0 and r.stdout == "clinet\n", r
    try:
        r = _cli("network", "ls")
        row = [line.split() for line in r.stdout.splitlines() if line.startswith("clinet")]
        assert row == [["clinet", "10.89.15.0/24", "10.89.15.1", "ib-clinet", "0"]], r
        r = _cli("network", "create", "--subnet", "10.89.15.0/25", "other")
        assert r.returncode == 1 and "overlaps 10.89.15.0/24" in r.stderr, r
        r = _cli("run", "--rootfs", rootfs, "--network", "clinet", "--hostname", "box", "--",
                 "sh", "-c", "ip -4 -o addr show eth0; grep box /etc/hosts")
        assert r.returncode == 0 and "inet 10.89.15.2/24" in r.stdout, r
        assert "10.89.15.2\tbox" in r.stdout
        r = _cli("run", "--network", "none", "-p", "8080:80", "--", "true")
        assert r.returncode == 125 and "needs a network" in r.stderr, r
        r = _cli("run", "--network", "nosuch", "--", "true")
        assert r.returncode == 125 and "no network named 'nosuch'" in r.stderr, r
        r = _cli("run", "--network", "clinet", "-p", "99999:80", "--", "true")
        assert r.returncode == 125 and "out of range" in r.stderr, r
    finally:
        r = _cli("network", "rm", "clinet")
    assert r.returncode == 0 and r.stdout == "clinet\n", r
    r = _cli("network", "rm", "clinet")
    assert r.returncode == 1 and "no network named 'clinet'" in r.stderr
    assert isolate.networks() == []


#: the Internet checksum (RFC 1071), for the packets the scripts below forge
CHECKSUM = r"""
import struct
def checksum(b):
    n = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while n >> 16:
        n = (n & 0xFFFF) + (n >> 16)
    return ~n & 0xFFFF
"""

#: a container's root, with CAP_NET_RAW (as Docker's default): a UDP packet
#: to 127.0.0.1 sent out of eth0 to the bridge's MAC address, as a raw frame
LOOPBACK_ATTACK = CHECKSUM + r"""
import socket, struct, sys
bridge_mac, src_ip, port = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
src_mac = s.getsockname()[4]
payload = b"escaped"
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton("127.0.0.1"))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
for _ in range(5):
    s.send(bridge_mac + src_mac + b"\x08\x00" + ip + udp)
print("sent")
"""


def _mac(ifname: str) -> str:
    import fcntl
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        info = fcntl.ioctl(s, 0x8927, struct.pack("256s", ifname.encode()))   # SIOCGIFHWADDR
    return info[18:24].hex()


def test_a_container_cannot_reach_the_hosts_loopback_through_the_bridge():
    """CVE-2020-8558: the bridge routes to 127.0.0.0/8 (for published ports
    reached from the host's loopback); a crafted packet must not get in."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(1.5)
    port = listener.getsockname()[1]
    try:
        with isolate.Network(subnet="10.89.16.0/24") as net, \
                isolate.Container(network=net) as c:
            r = c.run([sys.executable, "-I", "-c", LOOPBACK_ATTACK, _mac(net.bridge), c.ip,
                       str(port)], capture_output=True, text=True)
            assert r.stdout == "sent\n", r
            with pytest.raises(socket.timeout):
                print(listener.recvfrom(100))
    finally:
        listener.close()


IPV6_PROBE = r"""
import socket, sys
peer = sys.argv[1]
infos = socket.getaddrinfo(peer, 5432, socket.AF_INET6, socket.SOCK_STREAM)
with socket.create_connection(infos[0][4][:2], timeout=3) as c:
    c.sendall(b"six")
    print(infos[0][4][0], c.recv(100).decode())
"""


def test_an_ipv6_network_gives_addresses_names_and_routes_of_both_families():
    with isolate.Network("six", subnet="10.89.18.0/24", ipv6=True) as net, \
            isolate.Container(network=net, hostname="db") as db, \
            isolate.Container(network=net, hostname="app") as app:
        assert net.subnet6.prefixlen == 64 and str(net.subnet6).startswith("fd")
        assert db.ip6 == str(net.subnet6[2]) and app.ip6 == str(net.subnet6[3])
        r = app.run(["sh", "-c", "ip -6 -o addr show eth0 scope global; ip -6 route | "
                     "grep default; grep db /etc/hosts"], capture_output=True, text=True,
                    check=True)
        assert f"inet6 {app.ip6}/64" in r.stdout
        assert f"default via {net.gateway6} dev eth0" in r.stdout
        assert f"{db.ip6}\tdb" in r.stdout and f"{db.ip}\tdb" in r.stdout
        p = db.spawn([sys.executable, "-I", "-c",
                      "import socket; s = socket.socket(socket.AF_INET6); "
                      "s.bind(('::', 5432)); s.listen(); print('ready', flush=True); "
                      "c, _ = s.accept(); c.sendall(b'v6:' + c.recv(10))"],
                     stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        r = app.run([sys.executable, "-I", "-c", IPV6_PROBE, "db"], capture_output=True,
                    text=True)
        assert r.stdout.split() == [db.ip6, "v6:six"], r
        _stop(p)
    with isolate.Network("four", subnet="10.89.19.0/24") as net, \
            isolate.Container(network=net) as c:
        r = c.run(["sh", "-c", "ip -6 -o addr show eth0"], capture_output=True, text=True)
        assert r.stdout == "" and c.ip6 is None      # no IPv6 at all, link-local neither


#: an IPv6 router advertisement for 2001:db8:666::/64, as a raw frame out of
#: eth0 from a forged link-local address (CAP_NET_RAW, as Docker's default)
ROUTER_ADVERT = CHECKSUM + r"""
import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = s.getsockname()[4]
src = bytes.fromhex("fe80000000000000") + bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
dst = socket.inet_pton(socket.AF_INET6, "ff02::1")
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + struct.pack("!BB6s", 1, 1, mac)
ra += struct.pack("!BBBBIII16s", 3, 4, 64, 0xC0, 86400, 14400, 0,
                  socket.inet_pton(socket.AF_INET6, "2001:db8:666::"))
pseudo = src + dst + struct.pack("!I3xB", len(ra), 58)
ra = ra[:2] + struct.pack("!H", checksum(pseudo + ra)) + ra[4:]
ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(ra), 58, 255, src, dst)
for _ in range(3):
    s.send(b"\x33\x33\x00\x00\x00\x01" + mac + b"\x86\xdd" + ip6 + ra)
print("sent")
"""


@pytest.mark.parametrize("ipv6", [False, True])
def test_a_containers_router_advertisement_moves_no_route(ipv6):
    """CVE-2020-13401: neither the host (the bridge) nor the other containers
    take routes or addresses from what a container advertises."""
    def routes(run) -> str:
        return run(["sh", "-c", "ip -6 route; ip -6 addr"], capture_output=True, text=True).stdout
    host = lambda *a, **k: subprocess.run(*a, **k)      # noqa: E731
    with isolate.Network(subnet="10.89.21.0/24", ipv6=ipv6) as net, \
            isolate.Container(network=net) as evil, isolate.Container(network=net) as victim:
        r = evil.run([sys.executable, "-I", "-c", ROUTER_ADVERT], capture_output=True, text=True)
        assert r.stdout == "sent\n", r
        time.sleep(1)
        assert "2001:db8:666" not in routes(host) and "proto ra" not in routes(host)
        assert "2001:db8:666" not in routes(victim.run)
        assert "proto ra" not in routes(victim.run)


#: a UDP packet from a neighbour on another link of the host, to 127.0.0.1,
#: sent to the host's MAC address as a raw frame: argv ifname mac src dst port text
FORGED_UDP = CHECKSUM + r"""
import socket, struct, sys
ifname, mac, src, dst, port = sys.argv[1], bytes.fromhex(sys.argv[2]), *sys.argv[3:5], int(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
payload = sys.argv[6].encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
for _ in range(5):
    s.send(mac + s.getsockname()[4] + b"\x08\x00" + ip + udp)
"""


def test_ports_on_the_loopback_are_not_reached_from_a_neighbour():
    """CVE-2020-8558: a neighbour on another link (here a namespace of the
    test's, on a veth) sends to 127.0.0.1 and the port the host published
    there, or on all its addresses: neither reaches the container."""
    neighbour = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    pid = str(neighbour.pid)
    try:
        mine = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{pid}/ns/net") == mine:
            time.sleep(0.001)
        subprocess.run(["sh", "-c", f"ip link add lan0 type veth peer name lan1 netns {pid} && "
                        "ip addr add 192.0.2.1/24 dev lan0 && ip link set lan0 up && "
                        f"nsenter -t {pid} -n sh -c 'ip addr add 192.0.2.2/24 dev lan1 && "
                        "ip link set lan1 up && ip route add default via 192.0.2.1'"], check=True)
        with isolate.Network(subnet="10.89.22.0/24") as net, \
                isolate.Container(network=net, ports=["127.0.0.1:18084:5353/udp",
                                                      "18085:5354/udp"]) as c:
            p = c.spawn([sys.executable, "-I", "-u", "-c",
                         "import socket, select\n"
                         "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('', 5353))\n"
                         "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(('', 5354))\n"
                         "print('ready', flush=True)\n"
                         "while True:\n"
                         "    for s in select.select([a, b], [], [])[0]:\n"
                         "        print(s.recvfrom(100)[0].decode(), flush=True)\n"],
                        stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            mac = _mac("lan0")
            for dst, port, text in (("127.0.0.1", 18084, "loopback-only"),
                                    ("127.0.0.1", 18085, "loopback"),
                                    # to the host's own address: published on all of them
                                    ("192.0.2.1", 18085, "host-address")):
                subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, "-I", "-c", FORGED_UDP,
                                "lan1", mac, "192.0.2.2", dst, str(port), text], check=True)
            time.sleep(0.5)
            p.kill()
            p.wait()
            seen = p.stdout.read()
            p.stdout.close()
            assert set(seen.split()) == {"host-address"}, seen
    finally:
        neighbour.kill()
        neighbour.wait()


#: a UDP packet from a forged 127.0.0.2, out of eth0 to the gateway
FORGED_SOURCE = CHECKSUM + r"""
import socket, struct, sys
gateway_mac, gateway, port = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
payload = b"forged"
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton("127.0.0.2"), socket.inet_aton(gateway))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
for _ in range(5):
    s.send(gateway_mac + s.getsockname()[4] + b"\x08\x00" + ip + udp)
print("sent")
"""


def test_a_container_cannot_forge_a_loopback_source():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0", 0))
    listener.settimeout(1.5)
    try:
        with isolate.Network(subnet="10.89.23.0/24") as net, isolate.Container(network=net) as c:
            r = c.run([sys.executable, "-I", "-c", FORGED_SOURCE, _mac(net.bridge),
                       str(net.gateway), str(listener.getsockname()[1])],
                      capture_output=True, text=True)
            assert r.stdout == "sent\n", r
            with pytest.raises(socket.timeout):
                print(listener.recvfrom(100))
    finally:
        listener.close()


def test_a_network_of_the_same_name_in_another_namespace_has_its_own_files():
    code = textwrap.dedent("""
        import ctypes, subprocess, sys, isolate
        assert ctypes.CDLL(None).unshare(0x40000000) == 0
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        with isolate.Network("twin", subnet="10.89.25.0/24") as net:
            with isolate.Container(network=net, hostname="elsewhere"):
                pass
        print(net.hosts_file)
    """)
    with isolate.Network("twin", subnet="10.89.24.0/24") as net, \
            isolate.Container(network=net, hostname="here") as c:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() != net.hosts_file
        hosts = c.run(["cat", "/etc/hosts"], capture_output=True, text=True).stdout
        assert "here" in hosts and "elsewhere" not in hosts
        assert os.path.exists(net.hosts_file)


def _spare_of(net: isolate.Network, timeout: float = 10.0) -> str:
    """The address of this process's spare of net, once made."""
    from isolate import network
    deadline = time.monotonic() + timeout
    while (net.bridge, net.index) not in network._spares:
        assert time.monotonic() < deadline, "no spare was made"
        time.sleep(0.005)
    return str(network._spares[(net.bridge, net.index)][0])


def test_each_container_gets_a_namespace_of_its_own_also_one_made_ahead():
    """A process that starts containers on a network keeps a spare: a network
    namespace made ahead, with its interface, which the next container joins.
    Each container still has a namespace of its own, its address, its name
    and an interface that is up. (The containers compared are all alive: a
    namespace's inode number is reused once it is gone.)"""
    script = ("readlink /proc/self/ns/net; cat /sys/class/net/eth0/operstate;"
              " ip -4 -o addr show eth0; ip route; cat /etc/hosts")
    with isolate.Network(subnet="10.89.14.0/24") as net, contextlib.ExitStack() as alive:
        seen = {os.readlink("/proc/self/ns/net")}
        for i in range(4):
            isolate.run(["true"], network=net)      # ended: a spare is made
            spare = _spare_of(net)
            c = alive.enter_context(isolate.Container(network=net, hostname=f"h{i}"))
            r = c.run(["sh", "-c", script], capture_output=True, text=True, check=True)
            lines = r.stdout.splitlines()
            assert lines[0] not in seen, "a namespace was used twice"
            seen.add(lines[0])
            assert lines[1] == "up"
            address = lines[2].split()[3].split("/")[0]
            assert address == spare == c.ip         # it joined the spare
            assert "default via 10.89.14.1 dev eth0" in r.stdout
            assert f"{address}\th{i}" in r.stdout
            # its veth on the bridge bears its name, not the spare's
            names = [e.hostname for e in net.containers()]
            assert "isolate-spare" not in names and f"h{i}" in names


#: a neighbour with CAP_NET_RAW (as Docker's default): ARP requests for
#: TARGET that claim the gateway's address is at its own MAC, which would
#: poison the neighbour table of whatever answers at TARGET
ARP_POISON = r"""
import socket, struct, sys
target, claim = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
me = s.getsockname()[4]
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + me + socket.inet_aton(claim) \
    + b"\0" * 6 + socket.inet_aton(target)
for _ in range(5):
    s.send(b"\xff" * 6 + me + b"\x08\x06" + arp)
c = socket.socket()
c.settimeout(1)
try:
    c.connect((target, 9))
    print("connected")
except ConnectionRefusedError:
    print("answered")           # something there sent a reset
except OSError:
    print("silent")
print(me.hex(":"))
"""


def test_a_neighbour_cannot_reach_or_poison_a_spare_before_its_container():
    """A spare waits on the bridge with its address, but its bridge end stays
    down until a container has it: a hostile neighbour can neither reach it
    nor plant neighbour entries (the gateway at its own MAC) for the next
    container to use."""
    with isolate.Network(subnet="10.89.15.0/24") as net, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        isolate.run(["true"], network=net)      # ended: a spare is made
        spare = _spare_of(net)
        r = attacker.run([sys.executable, "-I", "-c", ARP_POISON, spare, "10.89.15.1"],
                         capture_output=True, text=True, check=True)
        reached, mac = r.stdout.split()
        assert reached == "silent"
        victim = isolate.run(["sh", "-c", "ip -4 -o addr show eth0; ip neigh"],
                             network=net, capture_output=True, text=True, check=True)
        assert f"inet {spare}/24" in victim.stdout          # the spare's namespace
        for line in victim.stdout.lower().splitlines():     # its own address only, if any
            if mac in line:
                assert line.startswith(attacker.ip + " "), victim.stdout


def test_a_container_killed_from_outside_keeps_its_address_until_closed():
    """A container's init killed from outside: its address, veth and pinned
    entry on the bridge stay its own until it is closed (the caller holds its
    network namespace), so that no successor takes the address meanwhile,
    and its close touches no successor's. Closed, they go, and the address
    is the next container's, with its own hosts line."""
    from isolate import network
    with isolate.Network(subnet="10.89.16.0/24") as net:
        first = isolate.Container(network=net, hostname="first")
        first.start()
        try:
            address, veth = first.ip, f"iv{int(ipaddress.ip_address(first.ip)):08x}"
            os.kill(first.pid, 9)
            time.sleep(0.3)
            assert veth in _links()
            assert address + " " in _neighbours(None, net.bridge)
            with isolate.Container(network=net, hostname="second") as second:
                assert second.ip != address
            first.close()
            network.drop_spares()
            _eventually(lambda: veth in _links(), False)
            _eventually(lambda: address + " " in _neighbours(None, net.bridge), False)
            network.wait_for_removals(net.bridge)   # the remover has seen them go
            with isolate.Container(network=net, hostname="third") as third:
                assert third.ip == address
                r = third.run(["sh", "-c", "cat /sys/class/net/eth0/operstate; cat /etc/hosts"],
                              capture_output=True, text=True, check=True)
                assert r.stdout.splitlines()[0] == "up"
                assert f"{address}\tthird" in r.stdout and "first" not in r.stdout
                pinned = [x for x in _neighbours(None, net.bridge).splitlines()
                          if x.startswith(address + " ")]
                assert pinned and "PERMANENT" in pinned[0]
        finally:
            first.close()


def test_a_fork_keeps_no_copy_of_the_parents_spare():
    """A fork's child closes its copies of the parent's spares (else it would
    hold their namespaces, veths and addresses while it lives), and starts
    containers of its own; the parent's spare is still the parent's."""
    with isolate.Network(subnet="10.89.17.0/24") as net:
        isolate.run(["true"], network=net)
        spare = _spare_of(net)
        from isolate import network
        theirs = set(network._netns_fds)
        assert theirs
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:        # the child: report what it holds, then start one
            status = 1
            try:
                ns = []
                for fd in os.listdir("/proc/self/fd"):
                    try:
                        if int(fd) in theirs and \
                                os.readlink(f"/proc/self/fd/{fd}").startswith("net:"):
                            ns.append(fd)
                    except OSError:
                        pass        # closed: the spare's, or the fd listdir used
                ip = isolate.run(["sh", "-c", "ip -4 -o addr show eth0"], network=net,
                                 capture_output=True, text=True, check=True).stdout.split()[3]
                os.write(w, f"{len(ns)} {ip}".encode())
                status = 0
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r) as f:
            report = f.read()
        assert os.waitpid(pid, 0)[1] == 0
        held, ip = report.split()
        assert held == "0"
        assert ip.split("/")[0] != spare        # the parent's spare was not joined
        out = isolate.run(["sh", "-c", "ip -4 -o addr show eth0"], network=net,
                          capture_output=True, text=True, check=True).stdout
        assert f"inet {spare}/" in out


#: a neighbour with CAP_NET_RAW: ARP requests and replies, to everyone and
#: to TARGET's MAC, saying that CLAIM is at its own MAC
ARP_SPOOF = r"""
import socket, struct, sys, time
target, target_mac, claim = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
me = s.getsockname()[4]
for _ in range(3):
    for op, dst in ((1, b"\xff" * 6), (2, target_mac), (2, b"\xff" * 6)):
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + me + socket.inet_aton(claim) \
            + (target_mac if op == 2 else b"\0" * 6) + socket.inet_aton(target)
        s.send(dst + me + b"\x08\x06" + arp)
    time.sleep(0.05)
print(me.hex())
"""


def _neighbours(where: isolate.Container | None, dev: str) -> str:
    cmd = ["ip", "neigh", "show", "dev", dev]
    if where is None:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return where.run(cmd, capture_output=True, text=True, check=True).stdout


def test_a_neighbour_cannot_take_over_the_gateway_or_a_containers_address():
    """ARP spoofing from a container (CAP_NET_RAW, as Docker's default): it
    claims the gateway's address to a neighbour, and the neighbour's address
    to the host. Each container's gateway and each container's address on
    the host are pinned (permanent entries, the bridge's MAC set for good),
    so neither moves to the attacker."""
    with isolate.Network(subnet="10.89.18.0/24") as net:
        bridge_mac = _mac(net.bridge)
        with isolate.Container(network=net, hostname="victim") as victim, \
                isolate.Container(network=net, hostname="attacker") as attacker:
            victim_mac = victim.run(["cat", "/sys/class/net/eth0/address"], capture_output=True,
                                    text=True, check=True).stdout.strip().replace(":", "")
            assert victim_mac == "0242" + ipaddress.ip_address(victim.ip).packed.hex()
            assert _mac(net.bridge) == bridge_mac       # the bridge kept its own
            gateway = str(net.gateway)
            r = attacker.run([sys.executable, "-I", "-c", ARP_SPOOF, victim.ip, victim_mac,
                              gateway], capture_output=True, text=True, check=True)
            attacker_mac = r.stdout.strip()
            attacker.run([sys.executable, "-I", "-c", ARP_SPOOF, gateway, bridge_mac,
                          victim.ip], capture_output=True, text=True, check=True)
            time.sleep(0.2)
            seen = _neighbours(victim, "eth0")
            assert f"{gateway} lladdr {':'.join(bridge_mac[i:i + 2] for i in range(0, 12, 2))}" \
                in seen and "PERMANENT" in seen, seen
            host = _neighbours(None, net.bridge)
            line = next(x for x in host.splitlines() if x.startswith(victim.ip + " "))
            assert victim_mac in line.replace(":", "") and "PERMANENT" in line, host
            for x in (seen + host).splitlines():     # only its own address is at its MAC
                if attacker_mac in x.replace(":", ""):
                    assert x.startswith(attacker.ip + " "), x


#: a container that listens for UDP datagrams on port 9999 for a few
#: seconds, and prints each one's text and source address
LISTEN_UDP = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(2)
print("ready", flush=True)
try:
    while True:
        data, addr = s.recvfrom(100)
        print(data.decode(), addr[0], flush=True)
except socket.timeout:
    pass
"""

#: a neighbour with CAP_NET_RAW: UDP datagrams to VICTIM (at its MAC) that
#: claim to come from OTHER: from OTHER's address at the sender's own MAC,
#: and at OTHER's MAC (which would also teach the bridge that OTHER is
#: behind the sender's port); and one from its own address, which arrives
FORGE_UDP = r"""
import socket, struct, sys
victim, victim_mac, other, other_mac, mine = sys.argv[1:]
victim_mac, other_mac = bytes.fromhex(victim_mac), bytes.fromhex(other_mac)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
me = s.getsockname()[4]

def checksum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    n = (n >> 16) + (n & 0xFFFF)
    return ~(n + (n >> 16)) & 0xFFFF

def frame(src_mac, src_ip, text):
    udp = struct.pack("!HHHH", 4000, 9999, 8 + len(text), 0) + text
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(victim))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return victim_mac + src_mac + b"\x08\x00" + ip + udp

for _ in range(3):
    s.send(frame(me, other, b"forged-address"))
    s.send(frame(other_mac, other, b"forged-mac"))
    s.send(frame(me, mine, b"genuine"))
"""

#: a neighbour with CAP_NET_RAW: IPv6 neighbour advertisements to VICTIM
#: saying that CLAIM is at the sender's own MAC (solicited, override)
FORGE_NA = r"""
import socket, struct, sys
victim, victim_mac, claim, source = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
me = s.getsockname()[4]
src, dst, target = (socket.inet_pton(socket.AF_INET6, a) for a in (source, victim, claim))

def checksum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16:
        n = (n >> 16) + (n & 0xFFFF)
    return ~n & 0xFFFF

icmp = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + target + bytes([2, 1]) + me
pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
ip = struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + src + dst
for _ in range(3):
    s.send(victim_mac + me + b"\x86\xdd" + ip + icmp)
print(me.hex())
"""


def _mac_of(c: isolate.Container) -> str:
    return c.run(["cat", "/sys/class/net/eth0/address"], capture_output=True, text=True,
                 check=True).stdout.strip().replace(":", "")


#: a datagram to ADDRESS (which has it resolved), then the MAC it was sent to
RESOLVE = r"""
import socket, subprocess, sys, time
address = sys.argv[1]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
socket.socket(family, socket.SOCK_DGRAM).sendto(b"x", (address, 9))
for _ in range(100):
    out = subprocess.run(["ip", "neigh", "show", address.split("%")[0], "dev", "eth0"],
                         capture_output=True, text=True).stdout
    if "lladdr" in out:
        break
    time.sleep(0.02)
print(out.split("lladdr")[1].split()[0].replace(":", "") if "lladdr" in out else out)
"""


def _resolved(c: isolate.Container, address: str) -> str:
    """The MAC at which container c reaches address."""
    return c.run([sys.executable, "-I", "-c", RESOLVE, address], capture_output=True, text=True,
                 check=True).stdout.strip()


def test_a_container_cannot_forge_its_neighbours_address_or_mac():
    """A container (CAP_NET_RAW, as Docker's default) sends datagrams to a
    neighbour as if from another neighbour: from its address, and from its
    address and MAC. Neither arrives (each port of the bridge takes frames
    only from its own container's MAC and addresses), and the bridge does
    not learn the other's MAC on the attacker's port; its genuine datagram
    arrives."""
    with isolate.Network(subnet="10.89.27.0/24") as net, \
            isolate.Container(network=net, hostname="victim") as victim, \
            isolate.Container(network=net, hostname="other") as other, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        listener = victim.spawn([sys.executable, "-I", "-c", LISTEN_UDP], stdout=subprocess.PIPE,
                                text=True)
        assert listener.stdout.readline().strip() == "ready"
        attacker.run([sys.executable, "-I", "-c", FORGE_UDP, victim.ip, _mac_of(victim),
                      other.ip, _mac_of(other), attacker.ip], check=True)
        got = listener.stdout.read()
        listener.stdout.close()
        listener.wait()
        assert f"genuine {attacker.ip}" in got, got       # the way is open: not a vacuous test
        assert "forged" not in got, got
        # the other is still reached, behind its own port
        assert _resolved(victim, other.ip) == _mac_of(other)
        assert _resolved(other, victim.ip) == _mac_of(victim)


def test_a_container_cannot_take_its_neighbours_address_over_by_arp():
    """ARP from a container that claims another container's address, to a
    third: the third's neighbour table keeps the other at its own MAC, and
    it still reaches it."""
    with isolate.Network(subnet="10.89.28.0/24") as net, \
            isolate.Container(network=net, hostname="victim") as victim, \
            isolate.Container(network=net, hostname="other") as other, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        other_mac = _mac_of(other)
        assert _resolved(victim, other.ip) == other_mac
        r = attacker.run([sys.executable, "-I", "-c", ARP_SPOOF, victim.ip, _mac_of(victim),
                          other.ip], capture_output=True, text=True, check=True)
        attacker_mac = r.stdout.strip()
        time.sleep(0.2)
        seen = _neighbours(victim, "eth0")
        assert not any(attacker_mac in x.replace(":", "") and not x.startswith(attacker.ip + " ")
                       for x in seen.splitlines()), seen
        assert _resolved(victim, other.ip) == other_mac


def test_a_container_cannot_take_its_neighbours_ipv6_address_over():
    """IPv6 neighbour advertisements from a container that claim another
    container's address, to a third, sent from the attacker's own address
    and from the other's: the third keeps the other at its own MAC."""
    with isolate.Network(subnet="10.89.29.0/24", ipv6=True) as net, \
            isolate.Container(network=net, hostname="victim") as victim, \
            isolate.Container(network=net, hostname="other") as other, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        other_mac = _mac_of(other)
        assert _resolved(victim, other.ip6) == other_mac
        for source in (attacker.ip6, other.ip6):
            r = attacker.run([sys.executable, "-I", "-c", FORGE_NA, victim.ip6, _mac_of(victim),
                              other.ip6, source], capture_output=True, text=True, check=True)
        attacker_mac = r.stdout.strip()
        time.sleep(0.2)
        seen = victim.run(["ip", "-6", "neigh", "show", "dev", "eth0"], capture_output=True,
                          text=True, check=True).stdout
        assert not any(attacker_mac in x.replace(":", "") and not x.startswith(attacker.ip6 + " ")
                       for x in seen.splitlines()), seen
        assert _resolved(victim, other.ip6) == other_mac


#: a neighbour with CAP_NET_RAW: the frames given (hex), sent as they are
SEND_FRAMES = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    for frame in sys.argv[1:]:
        s.send(bytes.fromhex(frame))
    time.sleep(0.02)
"""


def _checksum(b: bytes) -> int:
    b += b"\0" * (len(b) % 2)
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while n >> 16:
        n = (n >> 16) + (n & 0xFFFF)
    return ~n & 0xFFFF


def _udp4_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, text: bytes) -> str:
    udp = struct.pack("!HHHH", 4000, 9999, 8 + len(text), 0) + text
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return (dst_mac + src_mac + b"\x08\x00" + ip + udp).hex()


def _icmp6(src: str, dst: str, body: bytes) -> bytes:
    a6 = lambda x: socket.inet_pton(socket.AF_INET6, x)     # noqa: E731
    pseudo = a6(src) + a6(dst) + struct.pack("!I3xB", len(body), 58)
    return body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]


def _ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    a6 = lambda x: socket.inet_pton(socket.AF_INET6, x)     # noqa: E731
    return struct.pack("!IHBB", 0x60000000, len(payload), next_header, 255) + a6(src) + a6(dst) \
        + payload


def _na(src: str, dst: str, target: str, mac: bytes) -> bytes:
    """A solicited, overriding neighbour advertisement: target is at mac."""
    return _icmp6(src, dst, struct.pack("!BBHI", 136, 0, 0, 0x60000000)
                  + socket.inet_pton(socket.AF_INET6, target) + bytes([2, 1]) + mac)


def _link_local(mac: bytes) -> str:
    return str(ipaddress.IPv6Address(bytes.fromhex("fe80000000000000") + bytes([mac[0] ^ 2])
                                     + mac[1:3] + b"\xff\xfe" + mac[3:]))


def test_frames_to_reserved_link_local_addresses_neither_move_a_mac_nor_reach_the_host():
    """Frames to 01:80:c2:00:00:0X are the bridge's own (past every bridge
    filter): sent from a neighbour's MAC, the bridge does not learn it on the
    attacker's port; and what such frames carry (a datagram from a forged
    source, a router advertisement) does not reach the host on the port."""
    with isolate.Network(subnet="10.89.31.0/24") as net, \
            isolate.Container(network=net, hostname="victim") as victim, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        vmac, amac = bytes.fromhex(_mac_of(victim)), bytes.fromhex(_mac_of(attacker))
        gateway = str(net.gateway)
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind((gateway, 9999))
        listener.settimeout(1)
        routes = subprocess.run(["ip", "-6", "route"], capture_output=True, text=True).stdout
        frames = []
        for last in (0x02, 0x03, 0x0E):
            dst = bytes.fromhex("0180c20000") + bytes([last])
            frames.append((dst + vmac + b"\x88\xcc" + bytes(46)).hex())
            frames.append(_udp4_frame(dst, amac, victim.ip, gateway, b"forged"))
            src = _link_local(amac)
            ra = _icmp6(src, "ff02::1", struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
                        + bytes([1, 1]) + amac + struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600,
                                                              3600, 0)
                        + socket.inet_pton(socket.AF_INET6, "2001:db8:bad::"))
            frames.append((dst + amac + b"\x86\xdd" + _ipv6(src, "ff02::1", 58, ra)).hex())
        frames.append(_udp4_frame(net.mac, amac, attacker.ip, gateway, b"genuine"))
        assert _resolved(victim, gateway) == net.mac.hex()     # the bridge learns its MAC
        attacker.run([sys.executable, "-I", "-c", SEND_FRAMES, *frames], check=True)
        got = []
        with contextlib.suppress(socket.timeout):
            while True:
                got.append(listener.recvfrom(100)[0])
        listener.close()
        assert b"genuine" in got and b"forged" not in got, got
        fdb = subprocess.run(["bridge", "fdb", "show", "br", net.bridge], capture_output=True,
                             text=True, check=True).stdout
        from isolate.network import veth_name
        victim_port = veth_name(ipaddress.IPv4Address(victim.ip))
        learnt = [x for x in fdb.splitlines() if vmac.hex(":") in x]
        assert learnt and all(victim_port in x for x in learnt), fdb
        assert subprocess.run(["ip", "-6", "route"], capture_output=True,
                              text=True).stdout == routes


def test_a_container_cannot_spoof_ipv6_neighbours_in_fragments_or_by_link_local_address():
    """A neighbour advertisement split in fragments (the target in the second:
    a host that reassembles bridged traffic, br_netfilter, would pass it on
    whole), and advertisements and solicitations that claim another's
    link-local address: the victim keeps the other at its own MAC."""
    with isolate.Network(subnet="10.89.32.0/24", ipv6=True) as net, \
            isolate.Container(network=net, hostname="victim") as victim, \
            isolate.Container(network=net, hostname="other") as other, \
            isolate.Container(network=net, hostname="attacker") as attacker:
        vmac, omac, amac = (bytes.fromhex(_mac_of(c)) for c in (victim, other, attacker))
        other_ll = _link_local(omac)
        assert _resolved(victim, other.ip6) == omac.hex()
        assert _resolved(victim, f"{other_ll}%eth0") == omac.hex()
        body = _na(attacker.ip6, victim.ip6, other.ip6, amac)
        frag = lambda offset, more, part: _ipv6(attacker.ip6, victim.ip6, 44, bytes(  # noqa: E731
            [58, 0]) + struct.pack("!HI", offset | more, 7) + part)
        e6 = vmac + amac + b"\x86\xdd"
        frames = [(e6 + frag(0, 1, body[:8])).hex(), (e6 + frag(8, 0, body[8:])).hex(),
                  (e6 + _ipv6(_link_local(amac), victim.ip6, 58,
                              _na(_link_local(amac), victim.ip6, other_ll, amac))).hex(),
                  (e6 + _ipv6(other_ll, victim.ip6, 58,
                              _na(other_ll, victim.ip6, other_ll, amac))).hex()]
        attacker.run([sys.executable, "-I", "-c", SEND_FRAMES, *frames], check=True)
        time.sleep(0.2)
        seen = victim.run(["ip", "-6", "neigh", "show", "dev", "eth0"], capture_output=True,
                          text=True, check=True).stdout
        assert not any(amac.hex(":") in x and not x.startswith((attacker.ip6 + " ",
                                                                _link_local(amac) + " "))
                       for x in seen.splitlines()), seen
        assert _resolved(victim, other.ip6) == omac.hex()


def test_a_network_made_before_guards_gets_one_when_used():
    """A bridge made by an earlier isolate (no guard, MACs learnt from
    link-local frames, a firewall without the rule for its ports) is brought
    up to date by the first container on it, in place."""
    from isolate import _netlink, network
    with isolate.Network(subnet="10.89.33.0/24") as net:
        # as an earlier isolate left it
        _netlink.delete_table(f"isolate-{net.bridge}", "bridge")
        subprocess.run(["ip", "link", "set", net.bridge, "type", "bridge",
                        "no_linklocal_learn", "0"], check=True)
        subprocess.run(["nft", "flush", "chain", "inet", f"isolate-{net.bridge}", "prerouting"],
                       check=True)
        network._guarded.clear()
        with isolate.Container(network=net) as c:
            assert c.run(["true"]).returncode == 0
        guard = subprocess.run(["nft", "list", "table", "bridge", f"isolate-{net.bridge}"],
                               capture_output=True, text=True).stdout
        assert "chain prerouting" in guard, guard
        link = subprocess.run(["ip", "-d", "link", "show", net.bridge], capture_output=True,
                              text=True, check=True).stdout
        assert "no_linklocal_learn 1" in link, link
        firewall = subprocess.run(["nft", "list", "chain", "inet", f"isolate-{net.bridge}",
                                   "prerouting"], capture_output=True, text=True).stdout
        assert 'iifname "iv*" drop' in firewall, firewall
        # another process's upgrade, come late, adds nothing
        net._upgrade()
        assert subprocess.run(["nft", "list", "table", "bridge", f"isolate-{net.bridge}"],
                              capture_output=True, text=True).stdout == guard


def test_a_kernel_that_cannot_guard_a_bridge_gets_no_network(monkeypatch):
    """Without nftables for bridges (CONFIG_NF_TABLES_BRIDGE) a network
    would let its containers speak as each other: it is refused, with the
    reason, and nothing of it is left."""
    from isolate import _netlink, network

    class Unsupported:
        def commit(self):
            raise _netlink.NetlinkError(errno.EOPNOTSUPP, "nftables table x: not supported")

    monkeypatch.setattr(network.Network, "_guard", lambda self: Unsupported())
    before = (_links(), _tables())
    with pytest.raises(isolate.errors.NetworkError, match="CONFIG_NF_TABLES_BRIDGE"):
        isolate.Network(subnet="10.89.30.0/24")
    assert (_links(), _tables()) == before


def test_a_containers_pinned_address_goes_with_it():
    """The bridge's permanent entry for a container's address goes with the
    container (and a spare's with the spare): a device given the address
    later, by another runtime, is reached."""
    from isolate import network
    with isolate.Network(subnet="10.89.19.0/24") as net:
        with isolate.Container(network=net) as c:
            assert c.ip in _neighbours(None, net.bridge)
        for _ in range(3):      # commands that end before their start has returned
            isolate.run(["true"], network=net)
        network.drop_spares()
        _eventually(lambda: "10.89.19." in _neighbours(None, net.bridge), False)


def test_a_pools_containers_take_their_pins_with_them():
    """The containers of a pool on a network (made by its zygote) remove
    their pinned entries on the bridge as they end, as a Container's do."""
    with isolate.Network(subnet="10.89.26.0/24") as net:
        with isolate.Pool(size=2, network=net) as pool:
            for _ in range(6):
                assert pool.call(_eth0).startswith("10.89.26.")
            # the ended ones' pins are gone; the two ready ones keep theirs
            _eventually(lambda: _neighbours(None, net.bridge).count("PERMANENT"), 2)
        _eventually(lambda: "10.89.26." in _neighbours(None, net.bridge), False)


def test_a_pool_worker_that_got_no_container_holds_none_of_the_others():
    """A pool worker whose container could not be made (no address left)
    waits to report that to its first call: meanwhile it holds none of the
    zygote's fds (the other containers' network namespaces among them)."""
    with isolate.Network(subnet="10.89.34.0/29") as net:       # five addresses
        with isolate.Pool(size=6, network=net) as pool:
            zygote = pool._zygote.pid

            def children(pid: int) -> list[int]:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    return [int(p) for p in f.read().split()]

            def namespaces(pid: int) -> list[str]:
                out = []
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                return [x for x in out if x.startswith("net:")]

            deadline = time.monotonic() + 10
            while len(children(zygote)) < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            # the bare child is the one in the zygote's own network namespace
            mine = os.readlink(f"/proc/{zygote}/ns/net")
            bare = [p for p in children(zygote) if os.readlink(f"/proc/{p}/ns/net") == mine]
            assert bare, children(zygote)
            time.sleep(0.3)
            for p in bare:
                assert namespaces(p) == [], namespaces(p)
            with pytest.raises(isolate.errors.NetworkError):
                for _ in range(6):
                    pool.call(_eth0)


def test_another_process_using_the_network_leaves_the_pins_alone():
    """A process's first use of a network checks the bridge's MAC: setting it
    again, unchanged, would have the kernel flush every neighbour entry on
    the bridge, the running containers' pins with them."""
    with isolate.Network(subnet="10.89.21.0/24") as net:
        with isolate.Container(network=net) as c:
            subprocess.run([sys.executable, "-c", "import sys, isolate\n"
                            "isolate.run(['true'], network=sys.argv[1])", net.name], check=True)
            line = [x for x in _neighbours(None, net.bridge).splitlines()
                    if x.startswith(c.ip + " ")]
            assert line and "PERMANENT" in line[0], _neighbours(None, net.bridge)


def test_a_start_that_fails_leaves_no_pin():
    """A start that fails after its interface was attached (a command that
    does not exist) takes the interface's pinned entries on the bridge with
    it, cold or from a spare."""
    from isolate import network
    with isolate.Network(subnet="10.89.22.0/24") as net:
        for _ in range(3):
            with pytest.raises(FileNotFoundError):
                isolate.run(["/nonexistent"], network=net)
        network.drop_spares()
        _eventually(lambda: "10.89.22." in _neighbours(None, net.bridge), False)


def test_spares_asked_for_before_a_drop_are_not_made():
    """drop_spares also undoes the spares asked for and not yet begun (a
    container's end asks for one): none is made after it returns."""
    from isolate import network
    with isolate.Network(subnet="10.89.20.0/24") as net:
        isolate.run(["true"], network=net)      # the thread that makes spares runs
        for _ in range(5):
            network._want_spare(net)
            network.drop_spares()
            time.sleep(0.3)
            assert not network._spares
        _eventually(lambda: "10.89.20." in _neighbours(None, net.bridge), False)


LOOPER = textwrap.dedent("""
    import sys, isolate
    net = isolate.get_network(sys.argv[1])
    print("go", flush=True)
    while True:
        isolate.run(["true"], network=net)
""")


def test_owners_sigkilled_mid_start_leave_nothing():
    """Owners SIGKILLed at any moment of their starts (spares made and
    joined, veths being made and configured): no child of a start that was
    under way is left waiting for them, holding an address or a spare."""
    import random
    with isolate.Network("killedmid", subnet="10.89.20.0/24") as net:
        before = _links()
        for _ in range(12):
            owners = [subprocess.Popen([sys.executable, "-c", LOOPER, "killedmid"],
                                       stdout=subprocess.PIPE, text=True) for _ in range(2)]
            for p in owners:
                assert p.stdout.readline().strip() == "go"
            time.sleep(random.uniform(0.05, 0.3))
            for p in owners:
                p.kill()
                p.wait()
                p.stdout.close()
        _eventually(_links, before, timeout=10)
        assert net.containers() == []
