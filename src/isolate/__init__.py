"""isolate: Linux containers from Python.

    import isolate
    r = isolate.run(["hostname"], capture_output=True, text=True)

    with isolate.Container(rootfs="/srv/busybox", network="none") as c:
        c.run(["sh", "-c", "echo $$"], capture_output=True, text=True)
"""
try:
    from . import _isolate  # noqa: F401
except ImportError as e:  # pragma: no cover
    raise ImportError(
        "isolate's C extension is not built: install with `pip install .` "
        "(needs a C compiler, Cython and a static libc)"
    ) from e

from ._call import call, isolated
from .container import CompletedProcess, Container, Process, run
from .errors import (ContainerDied, ContainerError, ContainerOOMError, IsolateError, NamespaceError,
                     RemoteTraceback, SerializationError)
from .mounts import Mount
from .pool import Pool

__version__ = "0.1.0"

__all__ = [
    "CompletedProcess",
    "Container",
    "ContainerOOMError",
    "ContainerDied",
    "ContainerError",
    "IsolateError",
    "Mount",
    "NamespaceError",
    "Pool",
    "Process",
    "RemoteTraceback",
    "SerializationError",
    "call",
    "isolated",
    "run",
]
