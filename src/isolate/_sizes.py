"""Sizes as users write them: 1048576, "64M", "1.5G", "512k"."""
from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


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
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise TypeError(f"{name} must be an int or a str like '64M', not {type(value).__name__}")
    if n <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    return n
