"""User-mode networking for callers without CAP_NET_ADMIN: slirp4netns.

A rootless caller cannot make a bridge or a veth in the host's network
namespace. Its containers (each in a user namespace of its own) get a tap
device instead, eth0, served by slirp4netns, a user-mode TCP/IP stack run as
the caller, as rootless podman and Docker do. Their traffic leaves as the
caller's own sockets; published ports are host sockets of slirp4netns that
forward into the container.

slirp4netns is started for the container's first process right after clone,
while it waits (the caller writes its single id map first, so that the tool
enters the user namespace as its root), and the container goes on once
slirp4netns says the interface is configured (its ready fd): the command
never runs without its network. It ends when the caller closes its exit fd:
at the container's end, or when the caller ends, however it ends.

pasta (passt) is not used: it cannot be tied to its caller's life (it has no
exit fd, daemonizes, and keeps the namespace it serves alive, so it would
outlive an owner that was SIGKILLed).
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
from typing import Any

from .errors import ContainerError, NetworkError

TOOLS = ("slirp4netns",)
#: what slirp4netns gives the container (its built-in defaults)
SLIRP_ADDRESS, SLIRP_GATEWAY, SLIRP_DNS = "10.0.2.100", "10.0.2.2", "10.0.2.3"
READY_TIMEOUT = 10.0


def choose(requested: str) -> str:
    """The tool for network=requested: "slirp4netns", or "bridge" from a
    caller without root."""
    if requested == "pasta":
        raise NetworkError("network='pasta' is not supported: pasta cannot be tied to the "
                           "container's life; use 'slirp4netns'", network=requested)
    if shutil.which("slirp4netns") is None:
        raise NetworkError(f"network={requested!r} from a caller without root needs a "
                           "user-mode stack: install slirp4netns", network=requested)
    return "slirp4netns"


class UserMode:
    """A container's user-mode stack; release() ends it."""

    def __init__(self, tool: str, ports: tuple[Any, ...]) -> None:
        self.tool = tool
        self.ports = ports
        self.address: str | None = None
        self.address6: str | None = None
        self._proc: subprocess.Popen | None = None
        self._log: Any = None
        self._exit_w = -1

    def start(self, pid: int) -> None:
        """Attach to pid's network namespace; return once its interface is up."""
        self._slirp(pid)

    def _slirp(self, pid: int) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exit_r, self._exit_w = os.pipe2(os.O_CLOEXEC)
        api = None
        if self.ports:
            import tempfile
            api = os.path.join(tempfile.mkdtemp(prefix="isolate-slirp-"), "api.sock")
        # its own mount namespace with nothing but what it needs, and a
        # seccomp filter of its own: libslirp parses what the container sends
        args = ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                "--enable-sandbox", "--enable-seccomp",
                "--ready-fd", str(ready_w), "--exit-fd", str(exit_r),
                *(["--api-socket", api] if api else []), str(pid), "eth0"]
        import tempfile
        self._log = tempfile.TemporaryFile()        # never a pipe nobody reads
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
                pass_fds=(ready_w, exit_r), start_new_session=True)
        finally:
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready = select.select([ready_r], [], [], READY_TIMEOUT)[0]
            data = os.read(ready_r, 1) if ready else b""
        finally:
            os.close(ready_r)
        if data != b"1":
            err = self._stop()
            raise ContainerError(1, f"slirp4netns did not start: {err or 'no answer'}", None,
                                 step="network")
        self.address = SLIRP_ADDRESS
        try:
            for p in self.ports:
                self._hostfwd(api, p)
        except BaseException:
            self._stop()
            raise
        finally:
            if api is not None:
                with contextlib.suppress(OSError):
                    os.unlink(api)
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(api))

    def _hostfwd(self, api: str | None, p: Any) -> None:
        import json
        import socket
        assert api is not None
        request = {"execute": "add_hostfwd", "arguments": {
            "proto": p.proto, "host_addr": p.host_ip or "0.0.0.0", "host_port": p.host_port,
            "guest_port": p.port}}
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(READY_TIMEOUT)
            s.connect(api)
            s.sendall(json.dumps(request).encode())
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        reply = json.loads(answer or b"{}")
        if "error" in reply:
            desc = reply["error"].get("desc", reply["error"])
            raise NetworkError(f"port {p}: {desc}", network="slirp4netns")

    def _stop(self) -> str:
        if self._exit_w >= 0:
            os.close(self._exit_w)
            self._exit_w = -1
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = ""
        if self._log is not None:
            self._log.seek(0)
            err = self._log.read(4096).decode(errors="replace").strip()
            self._log.close()
            self._log = None
        return err

    def release(self) -> None:
        self._stop()
