"""JSON for isolate-runc's commands, without importing the json package: it
imports re, enum and functools, several milliseconds of every call an engine
makes of the runtime. CPython's C scanner and string encoder (which the json
package wraps) do the work; the json package is used where they are missing.
Values are what json gives and takes: dict, list, str, int, float, bool and
None."""
from __future__ import annotations

try:
    import _json
except ImportError:     # pragma: no cover (not CPython)
    _json = None    # type: ignore[assignment]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _constant(name: str) -> float:
    return float(name.lower().replace("infinity", "inf"))


class _Decoding:
    """What the C scanner reads of a json.JSONDecoder: its defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_constant)


_WHITESPACE = " \t\n\r"
_scan = _json.make_scanner(_Decoding()) if _json is not None else None  # type: ignore[arg-type]


def loads(text: str | bytes) -> Any:
    """json.loads(text): ValueError (json.JSONDecodeError) on bad input."""
    if isinstance(text, bytes) or _scan is None:    # (its encodings are json's to detect)
        import json
        return json.loads(text)
    n = len(text)
    i = 0
    while i < n and text[i] in _WHITESPACE:
        i += 1
    try:
        value, end = _scan(text, i)
    except StopIteration as e:
        import json
        raise json.JSONDecodeError("Expecting value", text, e.value) from None
    while end < n and text[end] in _WHITESPACE:
        end += 1
    if end != n:
        import json
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def dumps(value: Any, indent: int | str | None = None) -> str:
    """json.dumps(value, indent=indent) for dicts with str keys, lists,
    tuples, str, int, float, bool and None."""
    if _json is None:    # pragma: no cover
        import json
        return json.dumps(value, indent=indent)
    out: list[str] = []
    try:
        _encode(value, out, " " * indent if isinstance(indent, int) else indent, 0)
    except RecursionError:      # nested deeper than Python's stack: json's C encoder goes on
        import json
        return json.dumps(value, indent=indent)
    return "".join(out)


def _encode(v: Any, out: list[str], indent: str | None, level: int) -> None:
    if isinstance(v, str):
        out.append(_json.encode_basestring_ascii(v))
    elif v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(int.__repr__(v))
    elif isinstance(v, float):
        out.append("NaN" if v != v else "Infinity" if v == float("inf")
                   else "-Infinity" if v == -float("inf") else float.__repr__(v))
    elif isinstance(v, (dict, list, tuple)):
        items = list(v.items()) if isinstance(v, dict) else list(v)
        first, last = ("{", "}") if isinstance(v, dict) else ("[", "]")
        if not items:
            out.append(first + last)
            return
        if indent is None:
            sep, pad, end = ", ", "", ""
        else:
            pad = "\n" + indent * (level + 1)
            sep, end = "," + pad, "\n" + indent * level
        out.append(first + pad)
        for k, item in enumerate(items):
            if k:
                out.append(sep)
            if isinstance(v, dict):
                key, item = item
                if not isinstance(key, str):
                    raise TypeError(f"keys must be str, not {type(key).__name__}")
                out.append(_json.encode_basestring_ascii(key) + ": ")
            _encode(item, out, indent, level + 1)
        out.append(end + last)
    else:
        raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")
