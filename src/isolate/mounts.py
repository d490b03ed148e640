"""Mounts a container gets besides its root: `Mount.bind` and `Mount.tmpfs`."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ._sizes import parse_size

__all__ = ["Mount"]


@dataclass(frozen=True)
class Mount:
    """One mount in the container. Build with `Mount.bind` or `Mount.tmpfs`.

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

    def __post_init__(self) -> None:
        if self.kind not in ("bind", "tmpfs"):
            raise ValueError(f"unknown mount kind {self.kind!r}: use Mount.bind or Mount.tmpfs")
        if not isinstance(self.target, str) or not self.target:
            raise TypeError("a mount target is a non-empty str")
        if not self.target.startswith("/"):
            raise ValueError(f"mount target {self.target!r} is relative: give an absolute path")
        if "\0" in self.target:
            raise ValueError("mount target contains a NUL byte")

    @classmethod
    def bind(cls, source: str | os.PathLike[str], target: str | None = None, *,
             readonly: bool = False) -> Mount:
        """Bind the host path `source` at `target` (default: the same path)."""
        src = os.fspath(source)
        if not isinstance(src, str):
            raise TypeError("a bind source is a str path")
        if not os.path.isabs(src):
            raise ValueError(f"bind source {src!r} is relative: give an absolute path")
        return cls("bind", src if target is None else target, source=src, readonly=bool(readonly))

    @classmethod
    def tmpfs(cls, target: str, *, size: int | str | None = None, mode: int = 0o1777) -> Mount:
        """A fresh, empty tmpfs at `target`; `size` in bytes or as "64M"."""
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ValueError(f"tmpfs mode {mode!r} is not a file mode")
        return cls("tmpfs", target, size=None if size is None else parse_size(size, "size"),
                   mode=mode)
