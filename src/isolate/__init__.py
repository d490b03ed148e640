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

from .errors import (ContainerDied, ContainerError, ContainerOOMError, ImageError, IsolateError,
                     NamespaceError, NetworkError, RemoteError, RemoteTraceback,
                     SerializationError)

TYPE_CHECKING = False       # typing's own costs milliseconds: isolate-runc starts often
if TYPE_CHECKING:
    from ._call import call, isolated
    from .container import CompletedProcess, Container, Process, run
    from ._images import Image, get_image, images, load, prune, rmi, save
    from ._registry import pull, push
    from .mounts import Mount
    from .network import Network, get_network, networks
    from .pool import Pool

# Imported when first used: a Pool's zygote, which imports isolate too, then
# holds only what it needs (each page it holds costs every fork of it); and
# isolate-runc, whose start-up is on every container's path.
_LAZY = {"call": "_call", "isolated": "_call", "CompletedProcess": "container",
         "Container": "container", "Process": "container", "run": "container", "Pool": "pool",
         "Mount": "mounts", "Image": "_images", "images": "_images", "load": "_images",
         "prune": "_images", "rmi": "_images", "save": "_images", "get_image": "_images",
         "pull": "_registry", "push": "_registry", "Network": "network",
         "networks": "network", "get_network": "network"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'isolate' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "CompletedProcess",
    "Container",
    "ContainerOOMError",
    "ContainerDied",
    "ContainerError",
    "Image",
    "ImageError",
    "IsolateError",
    "Mount",
    "NamespaceError",
    "Network",
    "NetworkError",
    "Pool",
    "Process",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "call",
    "get_image",
    "get_network",
    "images",
    "isolated",
    "load",
    "networks",
    "prune",
    "pull",
    "push",
    "rmi",
    "run",
    "save",
]
