"""What comes back from a container is data: a function run inside must not
be able to run code in the caller through its result or its exception.

Written as an attacker would: each hostile function tries to make the caller
create a marker file on the host (under tmp_path, which the containers do
not see); the marker must never appear.
"""
from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import errno
import fractions
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import uuid

import pytest

import isolate
from isolate import (Container, ContainerDied, ContainerError, Pool, RemoteTraceback,
                     SerializationError, isolated)
from isolate.errors import RemoteError

#: what the busybox image lacks and the pool's workers then preload
PRELOAD = ["collections", "datetime", "decimal", "fractions", "uuid", "pathlib"]


# -- hostile objects (defined here: sent by value to a pool's workers) ------

class Evil:
    """Unpickles as os.system("touch MARKER")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ViaExec:
    """Unpickles as exec("open(MARKER, 'w').close()")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


class _ImportOs:
    def __reduce__(self):
        return (builtins.__import__, ("os",))


class _System:
    """Unpickles as getattr(__import__("os"), "system")."""

    def __call__(self, *args):
        raise AssertionError("only ever unpickled")

    def __reduce__(self):
        return (builtins.getattr, (_ImportOs(), "system"))


class ViaGetattr:
    """Unpickles as getattr(__import__("os"), "system")("touch MARKER")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_System(), (f"touch {self.marker}",))


class EvilError(Exception):
    """An exception that pickles as os.system("touch MARKER")."""

    def __reduce__(self):
        return (os.system, (f"touch {self.args[0]}",))


class InitTrap(Exception):
    """An exception whose __init__ has an effect: rebuilding it by calling the
    class (as pickle does) would create the marker in the caller."""

    def __init__(self, marker):
        super().__init__(marker)
        with open(marker, "w"):
            pass


class Custom(Exception):
    """An ordinary exception of this module, with an attribute of its own."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class Opaque:
    """An instance of a class of this module: only a trusting caller takes it."""

    def __init__(self, n):
        self.n = n


# -- the functions run inside (only builtins and what the worker preloads) --

def returns_system(marker):
    return Evil(marker)


def returns_exec(marker):
    return ViaExec(marker)


def returns_getattr_chain(marker):
    return ViaGetattr(marker)


def returns_nested(marker):
    return {"fine": [1, 2, (3, {"deeper": [Evil(marker)]})]}


def returns_defaultdict_of_system(marker):
    return collections.defaultdict(os.system, {"a": 1})


def raises_evil_subclass(marker):
    raise EvilError(marker)


def raises_evil_args(marker):
    raise ValueError("carries", Evil(marker))


def raises_evil_state(marker):
    e = ValueError("with state")
    e.payload = Evil(marker)
    raise e


def raises_init_trap(marker):
    e = InitTrap.__new__(InitTrap)      # made without __init__: no file inside
    e.args = (marker,)
    raise e


# -- how each front end runs a function ------------------------------------

@pytest.fixture(params=["isolate.call", "Container.call", "Pool.call", "@isolated"])
def run(request, rootfs):
    kind = request.param
    if kind == "isolate.call":
        yield isolate.call
    elif kind == "Container.call":
        with Container(rootfs=rootfs) as c:
            yield c.call
    elif kind == "Pool.call":
        with Pool(size=1, rootfs=rootfs, preload=PRELOAD) as p:
            yield p.call
    else:
        yield lambda fn, *args: isolated(rootfs=rootfs)(fn)(*args)


@pytest.fixture()
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield str(path)
    assert not path.exists(), "the container ran code in the caller"


# -- attacks ------------------------------------------------------------------

@pytest.mark.parametrize("fn, refused", [
    (returns_system, "posix.system"),
    (returns_exec, "builtins.exec"),
    (returns_getattr_chain, "builtins.getattr"),
    (returns_nested, "posix.system"),
    (returns_defaultdict_of_system, "posix.system"),
])
def test_a_hostile_result_is_refused(run, marker, fn, refused):
    with pytest.raises(SerializationError) as e:
        run(fn, marker)
    assert refused in str(e.value)
    assert "trusted=True" in str(e.value)


def test_an_exception_class_with_a_hostile_reduce_comes_back_without_running_it(run, marker):
    with pytest.raises(EvilError) as e:
        run(raises_evil_subclass, marker)
    assert e.value.args == (marker,)
    assert isinstance(e.value.__cause__, RemoteTraceback)
    assert "raises_evil_subclass" in str(e.value.__cause__)


def test_an_exception_whose_args_are_hostile_is_not_rebuilt(run, marker):
    with pytest.raises(RemoteError) as e:
        run(raises_evil_args, marker)
    assert e.value.type_name == "builtins.ValueError"
    assert "carries" in e.value.message
    assert "posix.system" in str(e.value)
    assert "raises_evil_args" in e.value.traceback
    assert isinstance(e.value.__cause__, RemoteTraceback)


def test_hostile_state_of_an_exception_is_left_out(run, marker):
    with pytest.raises(ValueError, match="with state") as e:
        run(raises_evil_state, marker)
    assert not hasattr(e.value, "payload")


def test_an_exception_is_rebuilt_without_calling_its_init(run, marker):
    with pytest.raises(InitTrap) as e:
        run(raises_init_trap, marker)
    assert e.value.args == (marker,)


# -- what a few bytes of pickle must not make the caller do ---------------------

class _Blowup:
    def __init__(self, reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


@pytest.mark.parametrize("reduced", [
    (list, (range(10**10),)),                   # what iterating it makes
    (bytes, (2**40,)),                          # a terabyte from an int
    (bytearray, (2**40,)),
    (fractions.Fraction, ("1e300000000",)),     # a power of ten for minutes
], ids=["list-range", "bytes-size", "bytearray-size", "fraction-exponent"])
def test_a_small_result_cannot_make_the_caller_allocate_or_compute_without_bound(reduced):
    with pytest.raises(SerializationError):
        isolate._wire.safe_loads(pickle.dumps(_Blowup(reduced), protocol=pickle.HIGHEST_PROTOCOL))
    with Container() as c:
        with pytest.raises(SerializationError):
            c.call(_Blowup, reduced)


# -- what must still come back ------------------------------------------------

DATA = {
    "nested": [1, (2, [3, {"k": (4,)}]), {5, 6}, frozenset({7})],
    "scalars": (None, True, False, 0, -1, 2**100, 1.5, float("inf"), 1 - 2j, "txt", b"\x00b",
                bytearray(b"ba"), Ellipsis, NotImplemented),
    "ranges": (range(1, 9, 2), slice(1, None, -1)),
    "dates": (datetime.date(2024, 2, 29), datetime.time(1, 2, 3, 4),
              datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
              datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-3),
                                                                     "X")),
              datetime.timedelta(days=1, microseconds=5)),
    "numbers": (decimal.Decimal("1.10"), decimal.Decimal("-Infinity"), fractions.Fraction(3, 7)),
    "ids": (uuid.UUID("12345678-1234-5678-1234-567812345678"), pathlib.PurePosixPath("/a/b"),
            pathlib.PosixPath("rel/c")),
    "collections": (collections.OrderedDict([("b", 1), ("a", 2)]),
                    collections.deque([1, 2, 3], maxlen=5), collections.Counter("abracadabra"),
                    collections.defaultdict(list, {"x": [1]})),
    "exception as a value": ValueError("as a value", 1),
}


def test_data_round_trips(run):
    def give():
        return DATA
    got = run(give)
    assert repr(got) == repr(DATA)
    assert got["collections"][1].maxlen == 5
    assert got["collections"][3]["missing"] == []


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_every_admitted_type_decodes_at_every_protocol(protocol):
    import io
    from isolate import _wire

    def dumps(value):       # as a container pickles (the standard library's way, tblib or not)
        out = io.BytesIO()
        _wire.StandardPickler(out, protocol=protocol).dump(value)
        return out.getvalue()

    for value in DATA.values():
        assert repr(_wire.safe_loads(dumps(value))) == repr(value)
    assert _wire.safe_loads(dumps(b"")) == b""


@pytest.mark.parametrize("blob", [
    b"cbuiltins\neval\n(S'1'\ntR.",
    b"c__builtin__\neval\n(S'1'\ntR.",          # protocol 2's names
    b"cos\nsystem\n(S'true'\ntR.",
    b"ccopyreg\n_reconstructor\n(cbuiltins\nlist\ncbuiltins\nlist\nNtR.",
    b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.",  # only latin1, as pickle writes it
    b"cbuiltins\ngetattr\n(cbuiltins\nlist\nS'append'\ntR.",
    b"cbuiltins\ntype\n(NtR.",
])
def test_crafted_pickles_are_refused(blob):
    from isolate import _wire
    with pytest.raises(SerializationError):
        _wire.safe_loads(blob)


def opens_a_missing_file():
    open("/no/such/file")


def test_os_errors_keep_errno_and_filename(run):
    with pytest.raises(FileNotFoundError) as e:
        run(opens_a_missing_file)
    assert e.value.errno == errno.ENOENT
    assert e.value.filename == "/no/such/file"
    assert e.value.strerror
    assert "opens_a_missing_file" in str(e.value.__cause__)


def raises_isolates_own():
    raise ContainerError(errno.EROFS, "mkdir /x: read-only", "/x", step="mkdir")


def raises_died():
    raise ContainerDied("gone", signal=9)


def raises_custom():
    raise Custom("custom message", 7)


def raises_key_error():
    raise KeyError("missing-key")


def test_exceptions_keep_type_args_and_attributes(run):
    with pytest.raises(ContainerError) as e:
        run(raises_isolates_own)
    assert (e.value.step, e.value.errno, e.value.filename) == ("mkdir", errno.EROFS, "/x")
    assert "read-only" in str(e.value)
    with pytest.raises(ContainerDied) as d:
        run(raises_died)
    assert (d.value.signal, d.value.exitcode, str(d.value)) == (9, None, "gone")
    with pytest.raises(Custom) as c:
        run(raises_custom)
    assert c.value.args == ("custom message",) and c.value.code == 7
    with pytest.raises(KeyError) as k:
        run(raises_key_error)
    assert k.value.args == ("missing-key",)
    assert isinstance(k.value.__cause__, RemoteTraceback)
    assert "in raises_key_error" in str(k.value.__cause__)


def exits():
    raise SystemExit(3)


def imports_what_is_not_there():
    import isolate_test_no_such_module  # noqa: F401


def decodes_badly():
    b"\xff".decode("utf-8")


def raises_a_group():
    raise ExceptionGroup("several", [ValueError(1), KeyError("k")])


def test_fields_built_in_exceptions_keep_in_c(run):
    with pytest.raises(ContainerDied) as x:     # (not SystemExit: see below)
        run(exits)
    assert x.value.exitcode == 3 and "SystemExit(3)" in str(x.value)
    with pytest.raises(ModuleNotFoundError) as m:
        run(imports_what_is_not_there)
    assert m.value.name == "isolate_test_no_such_module"
    with pytest.raises(UnicodeDecodeError) as u:
        run(decodes_badly)
    assert (u.value.encoding, u.value.object, u.value.start, u.value.end) == ("utf-8", b"\xff", 0, 1)
    with pytest.raises(ExceptionGroup) as g:
        run(raises_a_group)
    assert repr(g.value.exceptions) == repr((ValueError(1), KeyError("k")))


def test_an_exception_class_the_caller_lacks_gives_remote_error(run):
    def local():
        class Unknown(Exception):
            pass
        raise Unknown("not from around here")

    with pytest.raises(RemoteError) as e:
        run(local)
    assert e.value.type_name.endswith("<locals>.Unknown")
    assert e.value.message == "not from around here"
    assert "not from around here" in str(e.value)
    assert "in local" in e.value.traceback
    assert isinstance(e.value, isolate.IsolateError)


def test_the_caller_imports_nothing_to_rebuild_an_exception(run):
    def elsewhere():
        class Elsewhere(Exception):
            pass
        Elsewhere.__module__, Elsewhere.__qualname__ = "isolate_test_never_imported", "Elsewhere"
        raise Elsewhere("x")

    with pytest.raises(RemoteError) as e:
        run(elsewhere)
    assert e.value.type_name == "isolate_test_never_imported.Elsewhere"


def test_trusted_pool_and_container_return_anything(rootfs):
    def make():
        return Opaque(5)

    def fail():
        class Local(Exception):
            pass
        raise Local("kept")

    with Pool(size=1, rootfs=rootfs, trusted=True) as p:
        assert p.call(make).n == 5
        with pytest.raises(Exception, match="kept") as e:
            p.call(fail)
        assert type(e.value).__name__ == "Local"
    with Container(rootfs=rootfs, trusted=True) as c:
        assert c.call(make).n == 5
        assert c.submit(make).result(30).n == 5
    assert isolated(rootfs=rootfs, trusted=True)(make)().n == 5
    with Container(rootfs=rootfs) as c:
        with pytest.raises(SerializationError, match="Opaque"):
            c.call(make)


HOSTILE_TEST = '''
import os
import pytest

class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

@pytest.mark.isolated
def test_reports_a_hostile_property(record_property):
    record_property("evil", Evil())

@pytest.mark.isolated
def test_plain():
    pass
'''


def test_an_isolated_test_cannot_run_code_in_the_session_through_its_reports(pytester, marker):
    pytester.makepyfile(HOSTILE_TEST.format(marker=marker))
    r = pytester.runpytest_subprocess("-rA")
    r.assert_outcomes(passed=1, failed=1)
    assert "reports cannot be brought back" in r.stdout.str()
    assert "posix.system" in r.stdout.str()


def test_a_memoized_object_asked_for_again_and_again_is_refused():
    """One 1 MB string, then list() of it a thousand times through the memo:
    about 1 MB of pickle asking for 8 GB."""
    big = "x" * (1 << 20)
    ops = [pickle.PROTO + b"\x05", pickle.GLOBAL + b"builtins\nlist\n", pickle.BINPUT + b"\x00",
           pickle.BINUNICODE + len(big).to_bytes(4, "little") + big.encode(),
           pickle.BINPUT + b"\x01", pickle.POP, pickle.EMPTY_LIST]
    for _ in range(1000):
        ops += [pickle.BINGET + b"\x00", pickle.BINGET + b"\x01", pickle.TUPLE1, pickle.REDUCE,
                pickle.APPEND]
    data = b"".join(ops) + pickle.STOP
    with pytest.raises(SerializationError, match="more than its size"):
        isolate._wire.safe_loads(data)
    assert isolate._wire.safe_loads(pickle.dumps(collections.defaultdict(list, {"a": [1]}))
                                    ).default_factory is list


def interrupts():
    raise KeyboardInterrupt


class Escapes(BaseException):
    pass


def raises_a_base_exception():
    raise Escapes("past except Exception")


def test_what_is_not_an_exception_cannot_pass_the_callers_except_exception(run):
    """A function that raises SystemExit, KeyboardInterrupt or another
    BaseException that is not an Exception would, were it raised as itself,
    pass `except Exception` in the caller and could end it (a Dask worker
    re-raises both): its process exited (ContainerDied), or a RemoteError."""
    for fn, name in ((interrupts, "KeyboardInterrupt"), (raises_a_base_exception, "Escapes")):
        try:
            run(fn)
        except Exception as e:
            assert isinstance(e, RemoteError) and name in e.type_name
        else:
            raise AssertionError("it returned")
    try:
        run(exits)
    except Exception as e:
        assert isinstance(e, ContainerDied) and e.exitcode == 3


def test_exceptions_travel_as_data_where_a_library_pickles_them_its_own_way():
    """tblib (which Dask installs) registers a reducer of its own for every
    exception class: values and exceptions from a container still come back
    as the standard library pickles them, data the caller rebuilds."""
    pytest.importorskip("tblib")
    code = textwrap.dedent("""
        import tblib.pickling_support
        tblib.pickling_support.install()
        import isolate
        from isolate import Pool

        def returns_one():
            return [ValueError("as a value"), KeyError("k")]

        def raises():
            raise KeyError("raised")

        for run in (isolate.call, Pool(size=1).call):
            value = run(returns_one)
            assert type(value[0]) is ValueError and value[0].args == ("as a value",), value
            try:
                run(raises)
            except KeyError as e:
                assert e.args == ("raised",)
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]
