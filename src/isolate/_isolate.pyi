# Types of the Cython layer (src/_isolate.pyx).
from typing import Any, Callable, Iterable, NoReturn, Sequence

SESSION_TTY: int
RUN_GATED: int
OP_MOUNT: int
OP_BIND: int
OP_RDONLY_REC: int
OP_MKDIR: int
OP_TOUCH: int
OP_MKNOD: int
OP_SYMLINK: int
OP_PIVOT_ROOT: int
OP_WRITE: int
OP_HOSTNAME: int
OP_LO_UP: int
OP_UNSHARE: int
OP_MASK: int
OP_RO_IF_ANY: int
OP_JOIN_NET: int
OP_MOUNT_IN_ROOT: int
OP_SETNS: int
OP_PERSONALITY: int
NET_BESIDE: bool
MSG_READY: int
MSG_ERROR: int
MSG_EXIT: int
MSG_SIZE: int
NAMESPACE_FLAGS: dict[str, int]
MS: dict[str, int]

class Plan:
    steps: tuple[tuple[Any, ...], ...]
    def __init__(self, steps: Sequence[tuple[Any, ...]]) -> None: ...
    def __len__(self) -> int: ...

class ExecSpec:
    def __init__(self, file: bytes, argv: list[bytes], envp: list[bytes], path: bytes | None,
                 cwd: bytes | None, stdio: Sequence[int], pass_fds: Sequence[int] = ...,
                 ids: tuple[int, int, Sequence[int]] | None = ..., set_groups: bool = ...,
                 new_session: int = ..., umask: int = ...,
                 security: tuple[Any, ...] | None = ...) -> None: ...

class NetIf:
    def __init__(self, host: bytes, name: bytes, alias: bytes, master: int, mtu: int,
                 addr: bytes, prefix: int, gateway: bytes = ..., addr6: bytes = ...,
                 prefix6: int = ..., gateway6: bytes = ..., down: bool = ...,
                 index: int = ..., mac: bytes = ..., gateway_mac: bytes = ...) -> None: ...
def start_container(plan: Plan, clone_flags: int, spec: ExecSpec, run: int,
                    after_clone: Any = ..., cgroup_fd: int = ..., pre: Plan | None = ...,
                    post: Plan | None = ...,
                    net_beside: bool = ..., netif: NetIf | None = ..., netns: int = ...,
                    hold_netns: bool = ...) -> tuple[int, int, int, int, int]: ...
def make_netns(netif: NetIf) -> int: ...
def exec_in(pidfd: int, nsflags: int, spec: ExecSpec, pre: Plan | None = ...) -> tuple[int, int]: ...
def exec_finish(status_fd: int, pid: int) -> None: ...
def parse_msg(data: bytes) -> tuple[int, int, str, int, str]: ...
class Exe:
    def __init__(self, memfd: int) -> None: ...
def fork_into(pidfd: int, nsflags: int, procs: list[bytes], keep: Iterable[int], exe: Exe
              ) -> tuple[int, BaseException | None]: ...
def exit_after(f: Callable[[], object]) -> NoReturn: ...
def replace_environ(items: list[tuple[bytes, bytes]]) -> None: ...
def fork_container(plan: Plan, clone_flags: int, pdeathsig: int = ..., pre: Plan | None = ...,
                   post: Plan | None = ...,
                   python_hooks: bool = ..., adopt_ctl: int = ..., netif: NetIf | None = ...
                   ) -> tuple[int, BaseException | None]: ...
def close_fds(keep: Iterable[int]) -> None: ...
def set_namespace(fd: int, nstype: int) -> None: ...
def set_process_name(name: bytes) -> None: ...
def enter(spec: ExecSpec, keep: Iterable[int]) -> None: ...
RESOLVE_NO_XDEV: int
RESOLVE_NO_MAGICLINKS: int
RESOLVE_NO_SYMLINKS: int
RESOLVE_BENEATH: int
RESOLVE_IN_ROOT: int
def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = ..., resolve: int = ...) -> int: ...
def fs_magic(fd: int) -> int: ...
