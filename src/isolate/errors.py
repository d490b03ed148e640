"""Exceptions raised by isolate.

Setup failures inside a new container are `ContainerError` (an `OSError`) naming
the step and path; a command that cannot be run raises the same `OSError`
subclass that `subprocess` raises (`FileNotFoundError`, `PermissionError`).
"""
from __future__ import annotations

import errno as _errno
import os

__all__ = ["IsolateError", "ContainerError", "NamespaceError", "ContainerDied", "ContainerOOMError",
           "ImageError", "NetworkError", "SerializationError", "RemoteError", "RemoteTraceback", "child_error"]


class IsolateError(Exception):
    """Base class of isolate's own exceptions."""


class ContainerError(IsolateError, OSError):
    """A step of creating or entering a container failed.

    `step` names it ("pivot_root", "mount", ...), `filename` the path it acted
    on, `errno` the error the kernel gave.
    """

    step: str

    def __init__(self, err: int, message: str, filename: str | None = None, *, step: str = ""):
        super().__init__(err, message, filename)
        self.step = step

    def __reduce__(self):  # keep step when pickled
        return (_rebuild_container_error, (self.errno, self.strerror, self.filename, self.step))


def _rebuild_container_error(err, message, filename, step):
    return ContainerError(err, message, filename, step=step)


class NamespaceError(ContainerError):
    """A namespace could not be created or joined."""


class ContainerDied(IsolateError):
    """The process running a function ended without returning: a signal
    (`signal` is its number, as OOM kills and crashes give), or an exit."""

    def __init__(self, message: str, *, signal: int | None = None, exitcode: int | None = None):
        super().__init__(message)
        self.signal = signal
        self.exitcode = exitcode

    def __reduce__(self):
        return (_rebuild_died, (str(self), self.signal, self.exitcode))


def _rebuild_died(message, signal, exitcode):
    return ContainerDied(message, signal=signal, exitcode=exitcode)


class ContainerOOMError(ContainerDied):
    """The kernel's OOM killer ended it: the container's memory limit was hit."""

    def __reduce__(self):
        return (_rebuild_oom, (str(self), self.signal, self.exitcode))


def _rebuild_oom(message, signal, exitcode):
    return ContainerOOMError(message, signal=signal, exitcode=exitcode)


class NetworkError(IsolateError):
    """A network could not be made, found, used or removed (a name taken, a
    range that overlaps, a port in use, a network still in use); `network`
    names it."""

    def __init__(self, message: str, *, network: str = ""):
        super().__init__(message)
        self.network = network

    def __reduce__(self):
        return (_rebuild_network_error, (str(self), self.network))


def _rebuild_network_error(message, network):
    return NetworkError(message, network=network)


class ImageError(IsolateError):
    """An image could not be loaded, found, unpacked, saved or used.

    `ref` names the image (or the archive), `step` what failed ("parse
    reference", "read archive", "verify blob", "unpack layer", ...); the
    store is left as it was before the call."""

    def __init__(self, message: str, *, ref: str = "", step: str = ""):
        text = message
        if step:
            text = f"{step}: {text}"
        if ref:
            text = f"{ref}: {text}"
        super().__init__(text)
        self.ref = ref
        self.step = step

    def __reduce__(self):
        return (_rebuild_image_error, (str(self), self.ref, self.step))


def _rebuild_image_error(text, ref, step):
    e = ImageError("", ref=ref, step=step)
    e.args = (text,)
    return e


class SerializationError(IsolateError, TypeError):
    """A function, its arguments, its result or its exception could not be pickled."""


class RemoteError(IsolateError):
    """An exception raised inside a container that is not rebuilt in the
    caller as its own type: its class is not loaded here (isolate imports
    nothing for it), or its arguments are not plain data. `type_name` is
    its module and qualified name, `message` its str(), `traceback` the
    remote traceback's text (also its __cause__), `reason` why it stands in."""

    def __init__(self, type_name: str, message: str = "", traceback: str = "",
                 reason: str = ""):
        text = f"{type_name}: {message}" if message else type_name
        if reason:
            text += f" (raised in the container, not rebuilt here: {reason})"
        super().__init__(text)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.reason = reason

    def __reduce__(self):
        return (_rebuild_remote, (self.type_name, self.message, self.traceback, self.reason))


def _rebuild_remote(type_name, message, traceback, reason):
    return RemoteError(type_name, message, traceback, reason)


class RemoteTraceback(Exception):
    """The traceback of an exception raised inside a container (its __cause__)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


#: (sysctl, the value that turns user namespaces off, the fix)
USERNS_SWITCHES = (
    ("user.max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=15000"),
    ("kernel.unprivileged_userns_clone", "0", "sysctl -w kernel.unprivileged_userns_clone=1"),
    ("kernel.apparmor_restrict_unprivileged_userns", "1",
     "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile "
     "that allows userns for this program"),
)


def _userns_hint() -> str:
    """Which switch keeps user namespaces off here, and how to turn it on."""
    found = []
    for name, off, fix in USERNS_SWITCHES:
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as f:
                if f.read().strip() == off:
                    found.append(f"{name} is {off}: {fix}")
        except OSError:
            pass
    if found:
        return "; user namespaces are turned off here: " + "; ".join(found)
    return ("; creating namespaces needs root, or user namespaces enabled: check "
            + ", ".join(f"{name} (not {off})" for name, off, _ in USERNS_SWITCHES))


def _hint(step: str, err: int, path: str) -> str:
    if step == "clone" and err in (_errno.EPERM, _errno.ENOSPC, _errno.EINVAL):
        return _userns_hint()
    if step == "setns" and err == _errno.EINVAL:
        return "; the container has ended"
    if step in ("mkdir", "create mount target") and err == _errno.EROFS:
        return "; the root is read-only: create the mount target in the image first"
    if step == "resolve mount target" and err == _errno.ENOSYS:
        return "; mount targets are resolved inside the root with openat2 (Linux 5.6)"
    if step == "mount" and err == _errno.ENODEV:
        return "; the kernel lacks this filesystem type"
    if step == "mount" and path.endswith("/proc") and err == _errno.EPERM:
        return "; mounting /proc needs a new PID namespace when in a user namespace"
    return ""


def _user_path(path: str) -> str:
    """A path of the setup (see isolate._plan) as the user wrote it."""
    for prefix, where in (("/newroot", ""), ("/oldroot", " on the host"), ("/tmp/newroot", ""),
                          ("/tmp/oldroot", " on the host")):
        if path == prefix or path.startswith(prefix + "/"):
            return (path[len(prefix):] or "/") + where
    return path


def child_error(step: str, err: int, path: str) -> OSError:
    """The exception for a failed step reported by the container side."""
    path = _user_path(path)
    if step == "exec":
        # as subprocess reports it: FileNotFoundError(2, '...', 'cmd')
        return OSError(err, os.strerror(err), path)
    message = f"{step} {path}: {os.strerror(err)}" if path else f"{step}: {os.strerror(err)}"
    message += _hint(step, err, path)
    cls = NamespaceError if step in ("clone", "setns", "unshare") else ContainerError
    return cls(err, message, path or None, step=step)
