"""How a function's outcome travels out of a container: one framed pickle.

The process that ran the function writes ("ok", value) or, for an exception,
("raise", module, qualname, args, fields, state, message, tb) with a length
prefix; the caller reads exactly that, so processes the function left
behind (holding the fd) cannot stall it.

What comes out of a container is not trusted: `decode` unpickles it with
`safe_loads`, which rebuilds data types only (no global but a fixed list of
constructors), and rebuilds an exception from data without running its
class's code (`_rebuild`). Only a caller that trusts the function passes
trusted=True: a full pickle.loads, and ("raise", exc, tb) as pickled.
"""
from __future__ import annotations

import io
import collections
import functools
import importlib
import os
import pickle
import select
import struct
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import RemoteError, RemoteTraceback, SerializationError

if TYPE_CHECKING:
    from collections.abc import Iterator

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


def standard_dispatch_table(data_only: bool = True) -> dict:
    """copyreg's table for what goes between a caller and a container.
    data_only (an untrusted result): without any reducer registered for
    exceptions and tracebacks, which the caller would refuse as code;
    otherwise without tblib's (which Dask installs: it makes every exception
    pickle through a function of its own, which the other side would then
    have to import)."""
    import copyreg
    import types

    def kept(cls: Any, reduce: Any) -> bool:
        if not (isinstance(cls, type) and (issubclass(cls, BaseException)
                                           or cls is types.TracebackType)):
            return True
        return not data_only and not str(getattr(reduce, "__module__", "")).startswith("tblib")
    return {k: v for k, v in copyreg.dispatch_table.items() if kept(k, v)}


class StandardPickler(pickle.Pickler):
    """The C pickler, with copyreg's table as standard_dispatch_table gives it."""

    def __init__(self, file: Any, protocol: int | None = None, data_only: bool = True) -> None:
        self.dispatch_table = standard_dispatch_table(data_only)     # (read by __init__)
        super().__init__(file, protocol)


@functools.lru_cache(maxsize=1)
def standard_cloudpickler() -> type:
    """cloudpickle's Pickler, with the same table beneath its own."""
    import collections

    import cloudpickle  # type: ignore[import-untyped]
    own = cloudpickle.Pickler.dispatch_table
    own = own.maps[0] if isinstance(own, collections.ChainMap) else {}

    class Standard(cloudpickle.Pickler):
        def __init__(self, file: Any, protocol: int | None = None, data_only: bool = True) -> None:
            self.dispatch_table = collections.ChainMap(own, standard_dispatch_table(data_only))
            super().__init__(file, protocol)

    return Standard


def dumps(obj: Any, trusted: bool = False) -> bytes:
    """pickle, falling back to cloudpickle for what pickle cannot take by
    reference (lambdas, local classes); the plain pickler is much cheaper
    in a fresh fork, where every page it touches is copied. Untrusted, the
    standard library's way for exceptions (see standard_dispatch_table)."""
    out = io.BytesIO()
    try:
        StandardPickler(out, pickle.HIGHEST_PROTOCOL, not trusted).dump(obj)
    except Exception:
        out = io.BytesIO()
        standard_cloudpickler()(out, pickle.HIGHEST_PROTOCOL, not trusted).dump(obj)
    return out.getvalue()


def _outcome(fn, args, kwargs, trusted: bool = False) -> bytes:
    """The pickled outcome of fn(*args, **kwargs), whatever it is."""
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        e.__traceback__ = None
        return _raised(e, tb, trusted)
    try:
        return dumps(("ok", value), trusted)
    except Exception as pe:
        err = SerializationError(f"the result, a {type(value).__module__}.{type(value).__qualname__}, "
                                 f"cannot be pickled: {pe}")
        return _raised(err, "", trusted)


#: the type of the fields that built-in exceptions keep in C: SystemExit.code,
#: OSError.errno and .filename, ImportError.name, SyntaxError.lineno...
_MemberDescriptor = type(vars(OSError)["errno"])


def _fields(e: BaseException) -> Iterator[tuple[str, Any]]:
    """The fields e's built-in exception types keep in C."""
    for base in type(e).__mro__:
        if base.__module__ == "builtins" and base is not BaseException:
            for k, d in vars(base).items():
                if type(d) is _MemberDescriptor and k != "obj":   # AttributeError's: any object
                    try:
                        yield k, d.__get__(e)
                    except Exception:
                        pass


def _pickled_items(items: Any) -> dict[str, bytes]:
    """{name: pickled value}, leaving out what cannot be pickled."""
    out = {}
    for k, v in items:
        if isinstance(k, str):
            try:
                out[k] = dumps(v)
            except Exception:
                pass
    return out


def _raised(e: BaseException, tb: str, trusted: bool) -> bytes:
    """The pickled outcome for an exception. For a trusting caller, the
    exception itself. For any other, what it is made of, as data: its class's
    module and qualified name; its args; the fields built-in exception types
    keep in C and the attributes of its __dict__, each pickled apart (one
    that is not data is then all the caller leaves out); its message and
    traceback."""
    if trusted:
        try:
            return dumps(("raise", e, tb), trusted=True)
        except Exception as pe:
            e = SerializationError(f"the exception {type(e).__module__}.{type(e).__qualname__} "
                                   f"raised in the container cannot be pickled: {pe}")
    cls = type(e)
    try:
        args = dumps(e.args)
    except Exception as pe:
        e = SerializationError(f"the exception {cls.__module__}.{cls.__qualname__} "
                               f"raised in the container cannot be pickled: {pe}")
        cls = SerializationError
        args = pickle.dumps(e.args, protocol=pickle.HIGHEST_PROTOCOL)
    fields = _pickled_items(_fields(e))
    attrs = getattr(e, "__dict__", None)
    state = _pickled_items(attrs.items()) if isinstance(attrs, dict) else {}
    try:
        message = str(e)
    except Exception:
        message = f"<unprintable {cls.__name__}>"
    return pickle.dumps(("raise", str(cls.__module__), str(cls.__qualname__), args, fields, state,
                         message, tb), protocol=pickle.HIGHEST_PROTOCOL)


def run_and_exit(fd: int, fn, args, kwargs, linger: bool = False,
                 trusted: bool = False) -> NoReturn:
    """In the process inside the container: run, report, and leave without
    running the caller's cleanup (atexit, finally blocks of the fork). With
    linger, wait until the reader has closed its end: the process's end (and
    its container's) then costs the reader nothing while it reads. trusted:
    the caller unpickles whatever comes (an exception goes as itself)."""
    code = 0
    try:
        data = _outcome(fn, args, kwargs, trusted)
        _flush()        # what it printed goes out before its result
        write_all(fd, _HEADER.pack(len(data)) + data)
        if linger:
            os.read(fd, 1)
    except BaseException:
        code = 70
    finally:
        try:
            _flush()
        finally:
            os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:       # the function's own streams: whatever they raise
            pass


def _wait_readable(fd: int, deadline: float | None) -> None:
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError


def result_limit(limits: Any) -> int | None:
    """The most bytes an honest result can take: what the container's memory
    (and swap) limit lets it hold, pickled, before it writes it; None
    without a limit."""
    values = dict(limits)
    memory, swap = values.get("memory"), values.get("memory_swap")
    if memory is None or swap == -1:
        return None
    return max(memory, swap or 0)


def receive(fd: int, deadline: float | None = None, limit: int | None = None) -> bytes | None:
    """The framed payload, or None when the writer ended without sending one.
    Raises TimeoutError once deadline (time.monotonic) passes, and
    SerializationError for a frame over limit bytes (a container could
    otherwise stream more than the caller can hold).

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
    if limit is not None and size > limit:
        raise SerializationError(f"the result would take {size} bytes, more than the container's "
                                 f"memory limit ({limit}) lets it hold: refused unread")
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


def decode(payload: bytes, trusted: bool = False) -> Any:
    """Return the value, or raise the exception with its remote traceback.

    Unless trusted, nothing the container chose runs here: the payload is
    unpickled by safe_loads and an exception rebuilt by _rebuild. trusted:
    pickle.loads, with which the function can run any code in the caller."""
    outcome = pickle.loads(payload) if trusted else safe_loads(payload, "the result")
    if type(outcome) is tuple and outcome:
        kind = outcome[0]
        if kind == "ok" and len(outcome) == 2:
            return outcome[1]
        exc: BaseException | None = None
        if kind == "raise" and len(outcome) == 8:
            exc, tb = _rebuild(*outcome[1:])
        elif kind == "raise" and len(outcome) == 3 and trusted:
            exc, tb = outcome[1], outcome[2]
        if isinstance(exc, BaseException) and isinstance(tb, str):
            if tb:
                _CAUSE.__set__(exc, RemoteTraceback(tb))
            raise exc
    raise SerializationError("what came back from the container is not an outcome: "
                             f"a {type(outcome).__qualname__}")


# -- unpickling what a container sends ------------------------------------

_REFUSED_HINT = ("unpickling it could run code in the caller, so isolate does not. Return "
                 "plain data (builtins, collections, datetime, Decimal, Fraction, UUID, "
                 "paths), or, if the function is trusted, pass trusted=True to Pool, "
                 "Container or @isolated (the function can then run code in the caller)")

#: the globals safe_loads admits: constructors of data types, whose code is
#: the standard library's and takes data (builtins' exception classes too)
_DATA_TYPES = {
    "builtins": frozenset({"int", "float", "complex", "str", "bytes", "bytearray", "bool", "list",
                           "tuple", "dict", "set", "frozenset", "slice", "range", "Ellipsis",
                           "NotImplemented"}),
    "collections": frozenset({"OrderedDict", "deque", "Counter", "defaultdict"}),
    "datetime": frozenset({"date", "time", "datetime", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID"}),
    "pathlib": frozenset({"PurePosixPath", "PosixPath"}),
}

#: (module, name) as found in pickles -> what it was admitted as
_admitted: dict[tuple[str, str], Any] = {}


def _latin1(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode as pickle's protocols 2 and below use it (bytes as a
    latin-1 str), and only so: no codec the pickle would choose."""
    if type(obj) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise SerializationError(f"_codecs.encode({encoding!r}) is admitted for latin-1 only")
    return obj.encode("latin-1")


def _sized_bytes(kind: type) -> Any:
    """bytes or bytearray from data only: bytes(2**40), a few bytes of
    pickle, would make the caller allocate a terabyte."""
    def make(*args: Any) -> Any:
        if args and type(args[0]) in (int, bool):
            raise SerializationError(f"{{what}} asks for {kind.__name__}(size): not data")
        return kind(*args)
    return make


def _plain_fraction(*args: Any) -> Any:
    """Fraction from "n/d" as it pickles, or ints: not from "1e30000000",
    whose power of ten would take the caller minutes to compute."""
    import fractions
    import re
    if args and type(args[0]) is str and not re.fullmatch(r"\s*-?\d+(/\d+)?\s*", args[0]):
        raise SerializationError("{what} holds a Fraction from a string that is not n/d")
    if any(type(a) not in (int, str) for a in args):
        raise SerializationError("{what} holds a Fraction of something else than ints")
    return fractions.Fraction(*args)


#: admitted constructors that check what they are given: a pickle a few
#: bytes long must not make the caller compute or allocate without bound
#: (every other admitted constructor takes objects the pickle holds, and
#: makes at most a few times their size)
_GUARDED = {("builtins", "bytes"): _sized_bytes(bytes),
            ("builtins", "bytearray"): _sized_bytes(bytearray),
            ("fractions", "Fraction"): _plain_fraction}


def _admit(module: str, name: str) -> Any:
    """The global a safe pickle may name, or SerializationError."""
    import _compat_pickle
    m, n = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))   # protocol 2's names
    m = _compat_pickle.IMPORT_MAPPING.get(m, m)
    found: Any = None
    if (m, n) == ("_codecs", "encode"):
        found = _latin1
    elif (m, n) in _GUARDED:
        found = _GUARDED[m, n]
    elif n in _DATA_TYPES.get(m, ()):
        found = getattr(sys.modules.get(m) or __import__(m), n)
    elif m == "builtins":
        import builtins
        obj: Any = vars(builtins).get(n)
        if issubclass(type(obj), type) and issubclass(obj, BaseException):
            found = obj             # C code that keeps its arguments, nothing more
    if found is None:
        raise SerializationError(f"{{what}} holds {module}.{name}: {_REFUSED_HINT}")
    _admitted[module, name] = found
    return found


#: the admitted constructors that copy or iterate what they are given (a
#: pickle can ask for them again and again on one big memoized object):
#: charged. A data pickle of protocol 5 calls none of them but for these
#: collections' own, and defaultdict's factory; a type among them returned
#: as a value comes back as its charged stand-in (__wrapped__ is the type).
_COPYING = frozenset({("builtins", n) for n in ("list", "tuple", "set", "frozenset", "dict",
                                                 "bytes", "bytearray", "str", "int")}
                     | {("collections", n) for n in ("deque", "Counter", "OrderedDict",
                                                     "defaultdict")}
                     | {("decimal", "Decimal"), ("pathlib", "PosixPath"),
                        ("pathlib", "PurePosixPath"), ("__builtin__", "unicode"),
                        ("__builtin__", "bytearray"), ("__builtin__", "set"),
                        ("__builtin__", "frozenset"), ("__builtin__", "list"),
                        ("__builtin__", "dict"), ("__builtin__", "tuple"),
                        ("__builtin__", "int"), ("__builtin__", "str"), ("__builtin__", "long")})


def _cost(args: tuple) -> int:
    """What a constructor called with args may make, in bytes, at most: a
    few times the sizes of what it is given (a range: what iterating it
    makes; an int: bytes(n))."""
    total = 64
    for a in args:
        if type(a) in (int, bool):
            total += abs(a) if abs(a) < 1 << 62 else 1 << 62
        elif type(a) is range:
            total += 64 * len(a)
        else:
            try:
                total += 64 * len(a)
            except TypeError:
                total += 64
    return total


class _SafeUnpickler(pickle.Unpickler):
    """pickle's "Restricting Globals": the C unpickler, admitting only the
    globals of _DATA_TYPES (and builtins' exception classes). Every other
    way a pickle runs code goes through these: REDUCE, NEWOBJ, INST, OBJ
    and BUILD call or set up only objects that find_class gave or data.

    Each call of an admitted constructor is charged what it may make
    (_cost) against a budget in proportion to the pickle's size: a few
    bytes of pickle (list(range(10**10)), or one big string's list() asked
    for a thousand times through the memo) cannot make the caller allocate
    or compute without bound."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self.budget = 16 * len(data) + (1 << 20)

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _admitted[module, name]
        except (KeyError, TypeError):
            found = _admit(module, name)
        if (module, name) not in _COPYING:
            return found        # makes an object of constant size (NEWOBJ needs UUID itself)

        def charged(*args: Any, **kwargs: Any) -> Any:
            self.budget -= _cost(args) + _cost(tuple(kwargs.values()))
            if self.budget < 0:
                raise SerializationError("{what} asks for more than its size warrants "
                                         f"(calls of {module}.{name})")
            if found is collections.defaultdict and args:   # its factory: the type itself
                args = (getattr(args[0], "__wrapped__", args[0]), *args[1:])
            return found(*args, **kwargs)
        charged.__wrapped__ = found         # type: ignore[attr-defined]
        return charged

    def persistent_load(self, pid: Any) -> Any:
        raise SerializationError("{what} holds a persistent id: not data")


def safe_loads(data: bytes, what: str = "the data", shared: list[int] | None = None) -> Any:
    """pickle.loads for what a container sends: data types only; anything
    else raises SerializationError, naming the global it refused. shared:
    a budget that several pickles of one outcome draw from (the parts of an
    exception), instead of one each."""
    unpickler = _SafeUnpickler(data)
    if shared is not None:
        unpickler.budget = shared[0]
    try:
        return unpickler.load()
    except SerializationError as e:
        raise SerializationError(str(e).replace("{what}", what)) from None
    except Exception as e:
        raise SerializationError(f"{what} could not be unpickled: {type(e).__name__}: {e}") from None
    finally:
        if shared is not None:
            shared[0] = unpickler.budget


# -- exceptions, rebuilt from data -----------------------------------------

# descriptors of the built-in types, called directly: no override runs
_ModuleType = type(sys)
_module_dict: Any = vars(_ModuleType)["__dict__"].__get__   # the module's dict: no __getattr__
_class_dict: Any = vars(type)["__dict__"].__get__           # no metaclass's code either
_mro: Any = vars(type)["__mro__"].__get__
_ARGS: Any = vars(BaseException)["args"]
_CAUSE: Any = vars(BaseException)["__cause__"]
_EXC_DICT: Any = vars(BaseException)["__dict__"]


_OWN_MODULES = frozenset({"isolate._cgroups", "isolate._config", "isolate.errors"})


def _exception_class(module: str, qualname: str) -> type[BaseException] | None:
    """The class module.qualname if the caller has it loaded: looked up in
    sys.modules and the dicts of the module and its classes, importing
    nothing and running no module's or class's code (isolate's own modules
    excepted: the exceptions of isolate raised in a worker, its cgroups'
    among them, come back as themselves)."""
    mod = sys.modules.get(module)
    if mod is None and module in _OWN_MODULES:
        mod = importlib.import_module(module)
    if mod is None or not issubclass(type(mod), _ModuleType):
        return None
    ns: Any = _module_dict(mod)
    obj: Any = None
    for part in qualname.split("."):
        if ns is None or not part.isidentifier():       # "<locals>": not reachable
            return None
        obj = ns.get(part)
        ns = _class_dict(obj) if issubclass(type(obj), type) else None
    if issubclass(type(obj), type) and issubclass(obj, BaseException):
        return obj
    return None


def _builtin_new(cls: type) -> Any:
    """The __new__ in C of cls's nearest base that has one: it only keeps
    its arguments (a __new__ in Python, the class's own code, is passed over)."""
    for base in _mro(cls):
        new = _class_dict(base).get("__new__")
        if new is not None and type(new) is type(object.__new__):
            return new
    return BaseException.__new__


def _not_an_exception(cls: type, name: str, args: Any, message: str, tb: str) -> BaseException:
    """What stands in the caller for a BaseException that is not an
    Exception (SystemExit, KeyboardInterrupt, GeneratorExit, ...): raised
    as itself it would pass the caller's `except Exception` and could end
    the caller (or a Dask worker). A SystemExit is the function's process
    exiting: ContainerDied with its status; anything else a RemoteError."""
    from .errors import ContainerDied
    if issubclass(cls, SystemExit):
        code: Any = None
        try:
            if type(args) is bytes:
                values = safe_loads(args, f"the arguments of {name}")
                code = values[0] if type(values) is tuple and len(values) == 1 else None
        except Exception:
            pass
        status = 0 if code is None else code if type(code) is int else 1
        return ContainerDied(f"the function exited with status {status} (it raised {name}"
                             f"{'(' + repr(code) + ')' if code is not None else ''})",
                             exitcode=status)
    return RemoteError(name, message, tb, "it is not an Exception: raised here, it would pass "
                                          "the caller's `except Exception`")


def _rebuild(module: Any, qualname: Any, args: Any, fields: Any, state: Any, message: Any,
             tb: Any) -> tuple[BaseException, str]:
    """The exception an untrusted container reported, and its traceback text.

    Its class, if the caller has it loaded, made with the C __new__ of its
    bases from its args (no __init__ runs); then its args, the C fields of
    its built-in bases and the attributes that are data set directly, through
    the built-in types' descriptors. Otherwise, or if its args are not
    data, a RemoteError naming it."""
    if not all(type(v) is str for v in (module, qualname, message, tb)):
        raise SerializationError("what came back from the container is not an outcome")
    name = f"{module}.{qualname}"
    cls = _exception_class(module, qualname)
    if cls is not None and not issubclass(cls, Exception):
        return _not_an_exception(cls, name, args, message, tb), tb
    if cls is None:
        if "<locals>" in qualname:
            why = "its class is local to a function, where it cannot be looked up"
        elif module not in sys.modules:
            why = f"module {module} is not imported in the caller (isolate imports nothing)"
        else:
            why = f"the caller has no exception class {name}"
        return RemoteError(name, message, tb, why), tb
    # one budget for all its parts, in proportion to their size, as for one pickle
    size = sum(len(v) for part in (fields, state) if type(part) is dict
               for v in list(part.values())[:_MAX_ITEMS] if type(v) is bytes)
    shared = [16 * (size + (len(args) if type(args) is bytes else 0)) + (1 << 20)]
    try:
        if type(args) is not bytes:
            raise SerializationError("its arguments are not a pickle")
        args = safe_loads(args, f"the arguments of {name}", shared)
        if type(args) is not tuple:
            raise SerializationError("its arguments are not a tuple")
        exc = _builtin_new(cls)(cls, *args)
        if not issubclass(type(exc), BaseException):
            raise SerializationError(f"{name}.__new__ made no exception")
    except Exception as e:
        return RemoteError(name, message, tb, str(e)), tb
    _ARGS.__set__(exc, args)
    if type(fields) is dict and fields:
        members = {}
        for base in reversed(_mro(type(exc))):      # the nearest base's, where two have one
            if base.__module__ == "builtins":
                for k, d in _class_dict(base).items():
                    if type(d) is _MemberDescriptor:
                        members[k] = d
        for k, v in _data_items(fields, shared):
            if k in members:
                try:
                    members[k].__set__(exc, v)
                except (TypeError, ValueError, AttributeError, OverflowError):
                    pass            # a read-only field, or not of its C type
    if isinstance(exc, UnicodeError) and not _consistent_unicode_error(exc, members if (
            type(fields) is dict and fields) else {}):
        return RemoteError(name, message, tb, "its object, start and end do not agree (its "
                           "str() would read past its object)"), tb
    if type(state) is dict and state:
        attrs = _EXC_DICT.__get__(exc)
        for k, v in _data_items(state, shared):
            attrs[k] = v
    return exc, tb


def _consistent_unicode_error(exc: BaseException, members: dict) -> bool:
    """Whether a UnicodeError's C fields are as its own __init__ would make
    them: its str() indexes its object by start and end unchecked (a crash
    of the caller's Python, gh-123378), and reads the object as bytes for a
    decode error, as str for the others."""
    if not members:
        return True
    obj = members["object"].__get__(exc) if "object" in members else None
    if obj is None:
        return True         # (never set: str() gives "")
    want = bytes if isinstance(exc, UnicodeDecodeError) else str
    start = members["start"].__get__(exc) if "start" in members else 0
    end = members["end"].__get__(exc) if "end" in members else 0
    return (type(obj) is want and type(start) is int and type(end) is int
            and 0 <= start <= len(obj) and 0 <= end <= len(obj)
            and all(type(members[k].__get__(exc)) in (str, type(None))
                    for k in ("encoding", "reason") if k in members))


#: the most fields and attributes an exception from a container brings back
_MAX_ITEMS = 256


def _data_items(pickled: dict, shared: list[int]) -> Iterator[tuple[str, Any]]:
    """The items of {name: pickled value} whose value is data (the first
    _MAX_ITEMS), decoded against one budget."""
    for n, (k, v) in enumerate(pickled.items()):
        if n >= _MAX_ITEMS:
            return
        if type(k) is str and type(v) is bytes:
            try:
                yield k, safe_loads(v, shared=shared)
            except SerializationError:
                pass                # not data (or over the budget): left out
