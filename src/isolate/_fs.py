"""Small pieces on processes and files that several modules share, with
nothing but os imported: isolate-runc imports them on every command."""
from __future__ import annotations

import os
import stat


def start_time(pid: int) -> int | None:
    """The pid's start time (clock ticks since boot), or None when it has
    ended (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def reopen_regular(path_fd: int, flags: int = os.O_RDONLY) -> int | None:
    """An fd (flags, close-on-exec) of the very inode the O_PATH fd path_fd
    names, if it is a regular file; else None. What a hostile tree put
    there, a FIFO or a device, is never opened: an open may wait for ever,
    or have effects of its own. path_fd stays open."""
    if not stat.S_ISREG(os.fstat(path_fd).st_mode):
        return None
    # the magic link reopens that inode: no path is looked up again
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC)
