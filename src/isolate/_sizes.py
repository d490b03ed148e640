"""Sizes as users write them: 1048576, "64M", "1.5G", "512k"."""
from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*", re.IGNORECASE | re.ASCII)

#: The largest size taken, 2**63 - 1 bytes: the kernel's bound. cgroup memory
#: limits (v1 and v2) count pages up to LONG_MAX bytes' worth (PAGE_COUNTER_MAX),
#: and its parser (memparse) wraps numbers from 2**64 on, so that 10**30 would
#: become an arbitrary limit; tmpfs sizes and io.max byte rates go through the
#: same parser or a u64. Physical memory is no bound: as with Docker, a limit
#: above it is accepted.
MAX_SIZE = (1 << 63) - 1


def parse_size(value: int | str, name: str = "size") -> int:
    """Bytes from an int or a string with an optional K/M/G/T suffix (powers of 1024)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a str like '64M', not bool")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m is None:
            raise ValueError(f"{name}={value!r} is not a size: use bytes or a number with K, M, G or T")
        # exact: a float would round integers above 2**53
        whole, _, frac = m.group(1).partition(".")
        scale = 10 ** len(frac)
        n = (int(whole) * scale + int(frac or 0)) * _UNITS[(m.group(2) or "").lower()] // scale
    else:
        raise TypeError(f"{name} must be an int or a str like '64M', not {type(value).__name__}")
    if n <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    if n > MAX_SIZE:
        raise ValueError(f"{name}={value!r} is above the kernel's limit of 2**63 - 1 bytes")
    return n
