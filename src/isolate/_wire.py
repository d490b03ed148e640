"""How a function's outcome travels out of a container: one framed pickle.

The process that ran the function writes ("ok", value) or ("raise", exc, tb)
with a length prefix; the caller reads exactly that, so processes the
function left behind (holding the fd) cannot stall it.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import sys
import time
import traceback
from typing import Any, NoReturn

from .errors import RemoteTraceback, SerializationError

_HEADER = struct.Struct("<Q")
_FIRST_READ = 1 << 16


def write_all(fd: int, data: bytes) -> None:
    n = os.write(fd, data)          # all of it, but for big data on a full pipe
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


def frame(data: bytes) -> bytes:
    return _HEADER.pack(len(data)) + data


def load_pickler() -> None:
    """Import cloudpickle here, before a fork: the fork joins the container's
    mount namespace, where the import would look in the container's files."""
    import cloudpickle  # type: ignore[import-untyped]  # noqa: F401


def dumps(obj: Any) -> bytes:
    """pickle, falling back to cloudpickle for what pickle cannot take by
    reference (lambdas, local classes); the plain pickler is much cheaper
    in a fresh fork, where every page it touches is copied."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle  # type: ignore[import-untyped]
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _outcome(fn, args, kwargs) -> bytes:
    """The pickled outcome of fn(*args, **kwargs), whatever it is."""
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        e.__traceback__ = None
        try:
            return dumps(("raise", e, tb))
        except Exception as pe:
            err = SerializationError(f"the exception {type(e).__module__}.{type(e).__qualname__} "
                                     f"raised in the container cannot be pickled: {pe}")
            return pickle.dumps(("raise", err, tb))
    try:
        return dumps(("ok", value))
    except Exception as pe:
        err = SerializationError(f"the result, a {type(value).__module__}.{type(value).__qualname__}, "
                                 f"cannot be pickled: {pe}")
        return pickle.dumps(("raise", err, ""))


def run_and_exit(fd: int, fn, args, kwargs, linger: bool = False) -> NoReturn:
    """In the process inside the container: run, report, and leave without
    running the caller's cleanup (atexit, finally blocks of the fork). With
    linger, wait until the reader has closed its end: the process's end (and
    its container's) then costs the reader nothing while it reads."""
    code = 0
    try:
        data = _outcome(fn, args, kwargs)
        write_all(fd, _HEADER.pack(len(data)) + data)
        if linger:
            os.read(fd, 1)
    except BaseException:
        code = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _wait_readable(fd: int, deadline: float | None) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError


def receive(fd: int, deadline: float | None = None) -> bytes | None:
    """The framed payload, or None when the writer ended without sending one.
    Raises TimeoutError once deadline (time.monotonic) passes.

    A frame that fits comes in one read (the writer sends it with one write);
    bytes past the frame, from processes the function left behind, are
    dropped."""
    _wait_readable(fd, deadline)
    data = os.read(fd, _FIRST_READ)
    if len(data) < _HEADER.size:
        if not data:
            return None
        rest = _read_exactly(fd, _HEADER.size - len(data), deadline)
        if rest is None:
            return None
        data += rest
    size = _HEADER.unpack_from(data)[0]
    end = _HEADER.size + size
    if len(data) >= end:
        return data[_HEADER.size:end]
    return _read_exactly(fd, end - len(data), deadline, data[_HEADER.size:])


def _read_exactly(fd: int, n: int, deadline: float | None, first: bytes = b"") -> bytes | None:
    """n bytes (after first, which they are joined to), or None at end of file."""
    chunks = [first]
    while n > 0:
        _wait_readable(fd, deadline)
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def decode(payload: bytes) -> Any:
    """Return the value, or raise the exception with its remote traceback."""
    kind, *rest = pickle.loads(payload)
    if kind == "ok":
        return rest[0]
    exc, tb = rest
    if tb:
        exc.__cause__ = RemoteTraceback(tb)
    raise exc
