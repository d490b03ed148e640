"""Mounts a container gets besides its root: `Mount.bind`, `Mount.overlay`,
`Mount.tmpfs` and `Mount.mqueue`."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ._sizes import parse_size

__all__ = ["Mount"]


@dataclass(frozen=True)
class Mount:
    """One mount in the container. Build with `Mount.bind`, `Mount.overlay` or
    `Mount.tmpfs`.

    Targets are paths inside the container; they are resolved inside the root
    (a symlink in the image cannot point a mount out of it) and created when
    missing and the root is writable.
    """

    kind: str
    target: str
    source: str | None = None
    readonly: bool = False
    size: int | None = None
    mode: int = 0o1777
    #: no set-user-ID programs, no programs at all (every mount is nodev)
    nosuid: bool = False
    noexec: bool = False

    def __post_init__(self) -> None:
        # every field, also when the dataclass is built directly (bypassing
        # bind's and tmpfs's parsing): size and mode go into the mount options
        if not isinstance(self.kind, str) or self.kind not in ("bind", "overlay", "tmpfs",
                                                                "mqueue"):
            raise ValueError(f"unknown mount kind {self.kind!r}: use Mount.bind, "
                             "Mount.overlay, Mount.tmpfs or Mount.mqueue")
        if not isinstance(self.target, str) or not self.target:
            raise TypeError("a mount target is a non-empty str")
        if not self.target.startswith("/"):
            raise ValueError(f"mount target {self.target!r} is relative: give an absolute path")
        if "\0" in self.target:
            raise ValueError("mount target contains a NUL byte")
        for name in ("readonly", "nosuid", "noexec"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"a mount's {name} is True or False, not "
                                f"{getattr(self, name)!r}")
        if self.kind in ("bind", "overlay"):
            if not isinstance(self.source, str):
                raise TypeError(f"a bind source is a str path, not {self.source!r}")
            if not os.path.isabs(self.source):
                raise ValueError(f"bind source {self.source!r} is relative: give an absolute path")
            if "\0" in self.source:
                raise ValueError("bind source contains a NUL byte")
            if self.size is not None or self.mode != 0o1777:
                raise ValueError("size and mode are a tmpfs's: a bind mount has the source's")
            if self.kind == "overlay":
                # overlayfs options take "," and ":" as separators
                if any(c in self.source for c in ",:\\"):
                    raise ValueError(f"overlay source {self.source!r}: overlayfs cannot take "
                                     "a path with ',', ':' or '\\'")
                if self.readonly:
                    raise ValueError("an overlay is the source made writable: for a read-only "
                                     "view, use Mount.bind(..., readonly=True)")
            return
        if self.source is not None:
            raise ValueError(f"a {self.kind} has no source (got {self.source!r}): use Mount.bind")
        if self.kind == "mqueue" and (self.size is not None or self.mode != 0o1777):
            raise ValueError("size and mode are a tmpfs's")
        if self.size is not None:
            if not isinstance(self.size, int) or isinstance(self.size, bool):
                raise TypeError(f"tmpfs size is None or bytes as an int, not {self.size!r} "
                                "(Mount.tmpfs takes sizes like '64M')")
            parse_size(self.size, "size")       # positive, and within the kernel's limit
        if not isinstance(self.mode, int) or isinstance(self.mode, bool) \
                or not 0 <= self.mode <= 0o7777:
            raise ValueError(f"tmpfs mode {self.mode!r} is not a file mode (0 to 0o7777)")

    @classmethod
    def bind(cls, source: str | os.PathLike[str], target: str | None = None, *,
             readonly: bool = False, nosuid: bool = False, noexec: bool = False) -> Mount:
        """Bind the host path `source` at `target` (default: the same path)."""
        src = os.fspath(source)
        if not isinstance(src, str):
            raise TypeError("a bind source is a str path")
        return cls("bind", src if target is None else target, source=src, readonly=bool(readonly),
                   nosuid=bool(nosuid), noexec=bool(noexec))

    @classmethod
    def overlay(cls, source: str | os.PathLike[str], target: str | None = None) -> Mount:
        """The host directory `source` at `target` (default: the same path),
        copy-on-write: the container reads it and may write it, and its writes
        go to a layer of its own (in RAM, within the container's storage_size)
        that ends with it; the host's directory is never written. Mounts below
        `source` on the host are not part of it (overlayfs's lower layer)."""
        src = os.fspath(source)
        if not isinstance(src, str):
            raise TypeError("an overlay source is a str path")
        return cls("overlay", src if target is None else target, source=src)

    @classmethod
    def tmpfs(cls, target: str, *, size: int | str | None = None, mode: int = 0o1777,
              readonly: bool = False, noexec: bool = False) -> Mount:
        """A fresh, empty tmpfs at `target`; `size` in bytes or as "64M"."""
        return cls("tmpfs", target, size=None if size is None else parse_size(size, "size"),
                   mode=mode, readonly=bool(readonly), noexec=bool(noexec))

    @classmethod
    def mqueue(cls, target: str = "/dev/mqueue") -> Mount:
        """The POSIX message queues of the container's IPC namespace, as files."""
        return cls("mqueue", target, nosuid=True, noexec=True)
