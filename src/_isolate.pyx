# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin layer over csrc/: conversions, ownership, GIL release, errno to exception.

Policy lives in the isolate package; this module only carries a plan to C and
turns a failed step into the exception isolate.errors chooses.
"""
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from libc.stdint cimport int32_t, uint8_t, uint64_t
from posix.types cimport gid_t, mode_t, pid_t, uid_t


cdef extern from "isolate.h" nogil:
    int ISO_SESSION_TTY
    int ISO_RUN_GATED
    ctypedef struct iso_error_t:
        int32_t step
        int32_t err
        char path[256]

    ctypedef struct iso_msg_t:
        int32_t kind
        int32_t status
        iso_error_t error

    ctypedef struct iso_op_t:
        int kind
        const char *src
        const char *dst
        const char *fstype
        const char *data
        unsigned long flags
        unsigned long arg

    ctypedef struct iso_rlimit_t:
        int resource
        unsigned long long soft
        unsigned long long hard

    ctypedef struct iso_security_t:
        int restrict_caps
        unsigned long long caps
        int no_new_privs
        int nondumpable
        const iso_rlimit_t *rlimits
        size_t nrlimits
        const void *seccomp
        size_t seccomp_len

    ctypedef struct iso_exec_t:
        const char *file
        char *const *argv
        char *const *envp
        const char *path
        const char *cwd
        int stdio[3]
        const int *pass_fds
        size_t npass_fds
        int set_ids
        int set_groups
        uid_t uid
        gid_t gid
        const gid_t *groups
        size_t ngroups
        int new_session
        mode_t umask
        iso_security_t sec

    ctypedef struct iso_netif_t:
        char host[16]
        char name[16]
        char alias[128]
        int master
        int mtu
        uint8_t addr[4]
        uint8_t gateway[4]
        int prefix
        int has6
        uint8_t addr6[16]
        uint8_t gateway6[16]
        int prefix6
        int down
        int index
        uint8_t mac[6]
        uint8_t gateway_mac[6]

    ctypedef struct iso_container_t:
        unsigned long clone_flags
        const iso_op_t *ops
        size_t nops
        int init_fd
        int run
        iso_exec_t x
        int (*after_clone)(pid_t pid, void *arg)
        void *after_clone_arg
        int cgroup_fd
        int net_beside
        const iso_netif_t *netif
        int netns_fd
        int *netns_out

    enum:
        ISO_MSG_READY
        ISO_MSG_ERROR
        ISO_MSG_EXIT
        ISO_OP_MOUNT
        ISO_OP_BIND
        ISO_OP_RDONLY_REC
        ISO_OP_MKDIR
        ISO_OP_TOUCH
        ISO_OP_MKNOD
        ISO_OP_SYMLINK
        ISO_OP_PIVOT_ROOT
        ISO_OP_WRITE
        ISO_OP_HOSTNAME
        ISO_OP_LO_UP
        ISO_OP_UNSHARE
        ISO_OP_MASK
        ISO_OP_RO_IF_ANY
        ISO_OP_JOIN_NET
        ISO_OP_MOUNT_IN_ROOT
        ISO_OP_SETNS
        ISO_OP_PERSONALITY
        ISO_NET_BESIDE

    long iso_netns_make(const iso_netif_t *n, const char **what)
    int iso_container_start(const iso_container_t *c, pid_t *pid, int *pidfd, int *ctl,
                            iso_msg_t *first_msg, iso_error_t *err)
    int iso_enter(const iso_exec_t *x, const int *keep, size_t nkeep, iso_error_t *err)
    pid_t iso_exec_in(int pidfd, unsigned long nsflags, const iso_exec_t *x,
                      const iso_op_t *pre, size_t npre, int *status_fd, iso_error_t *err)
    int iso_exec_finish(int status_fd, pid_t child, iso_error_t *err)
    int iso_init_memfd(iso_error_t *err)
    pid_t iso_fork_container(unsigned long clone_flags, int pdeathsig, const iso_op_t *ops,
                             size_t nops, int adopt_ctl, const iso_netif_t *netif,
                             iso_error_t *err)
    const char *iso_step_name(int step)
    void iso_dumpable_hold()
    void iso_dumpable_release()
    int iso_close_fds(const int *keep, size_t nkeep)
    void iso_note_environ()
    void iso_forget_environ()


iso_note_environ()      # before any fork of ours (see iso_enter)


cdef extern from "<sched.h>" nogil:
    enum:
        CLONE_NEWNS
        CLONE_NEWUTS
        CLONE_NEWIPC
        CLONE_NEWUSER
        CLONE_NEWPID
        CLONE_NEWNET
        CLONE_NEWCGROUP
        CLONE_NEWTIME


cdef extern from "<sys/mount.h>" nogil:
    enum:
        MS_RDONLY
        MS_NOSUID
        MS_NODEV
        MS_NOEXEC
        MS_REC
        MS_PRIVATE
        MS_SLAVE
        MS_STRICTATIME
        MS_NOATIME
        MS_RELATIME
        MS_REMOUNT


# Plan steps (see iso_op_kind in csrc/isolate.h)
SESSION_TTY = ISO_SESSION_TTY
RUN_GATED = ISO_RUN_GATED
OP_MOUNT = ISO_OP_MOUNT
OP_BIND = ISO_OP_BIND
OP_RDONLY_REC = ISO_OP_RDONLY_REC
OP_MKDIR = ISO_OP_MKDIR
OP_TOUCH = ISO_OP_TOUCH
OP_MKNOD = ISO_OP_MKNOD
OP_SYMLINK = ISO_OP_SYMLINK
OP_PIVOT_ROOT = ISO_OP_PIVOT_ROOT
OP_WRITE = ISO_OP_WRITE
OP_HOSTNAME = ISO_OP_HOSTNAME
OP_LO_UP = ISO_OP_LO_UP
OP_UNSHARE = ISO_OP_UNSHARE
OP_MASK = ISO_OP_MASK
OP_RO_IF_ANY = ISO_OP_RO_IF_ANY
OP_JOIN_NET = ISO_OP_JOIN_NET
OP_MOUNT_IN_ROOT = ISO_OP_MOUNT_IN_ROOT
OP_SETNS = ISO_OP_SETNS
OP_PERSONALITY = ISO_OP_PERSONALITY
#: Whether start_container can make the network namespace beside the child.
NET_BESIDE = bool(ISO_NET_BESIDE)

MSG_READY = ISO_MSG_READY
MSG_ERROR = ISO_MSG_ERROR
MSG_EXIT = ISO_MSG_EXIT
MSG_SIZE = sizeof(iso_msg_t)

NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}


MS = {
    "rdonly": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
    "rec": MS_REC, "private": MS_PRIVATE, "slave": MS_SLAVE, "strictatime": MS_STRICTATIME,
    "noatime": MS_NOATIME, "relatime": MS_RELATIME, "remount": MS_REMOUNT,
}


cdef object _raise(iso_error_t *e):
    from isolate.errors import child_error
    path = e.path.decode("utf-8", "surrogateescape")
    raise child_error(iso_step_name(e.step).decode(), e.err, path)


cdef const char *_cstr(object b) except? NULL:
    if b is None:
        return NULL
    return <const char *>(<bytes>b)


cdef class Plan:
    """The ordered setup steps of a container, as C reads them.

    ops: a sequence of (kind, src, dst, fstype, data, flags, arg), strings as
    bytes or None. The Plan keeps them alive for as long as C may read them.
    """
    cdef iso_op_t *ops
    cdef size_t n
    cdef readonly tuple steps

    def __cinit__(self, steps):
        self.steps = tuple(steps)
        self.n = len(self.steps)
        self.ops = <iso_op_t *>calloc(self.n + 1, sizeof(iso_op_t))
        if self.ops == NULL:
            raise MemoryError()
        cdef size_t i = 0
        for kind, src, dst, fstype, data, flags, arg in self.steps:
            self.ops[i].kind = kind
            self.ops[i].src = _cstr(src)
            self.ops[i].dst = _cstr(dst)
            self.ops[i].fstype = _cstr(fstype)
            self.ops[i].data = _cstr(data)
            self.ops[i].flags = flags
            self.ops[i].arg = arg
            i += 1

    def __dealloc__(self):
        free(self.ops)

    def __len__(self):
        return self.n


cdef void _copy_name(char *dst, size_t size, bytes value, str what) except *:
    if len(value) >= size or b"\0" in value:
        raise ValueError(f"{what} {value!r}: at most {size - 1} bytes, no NUL")
    memset(dst, 0, size)
    memcpy(dst, <const char *>value, len(value))


cdef class NetIf:
    """A container's interface on a bridge (iso_netif_t): host, the bridge's
    end (in the caller's network namespace, a port of the bridge whose
    ifindex is master, with alias), name, the container's end, with addr/
    prefix and a default route through gateway (b"" for none); addr6,
    prefix6 and gateway6 likewise, or addr6=b"" for no IPv6. Addresses are
    packed (4 or 16 bytes). down: made, the bridge's end stays down (a
    namespace made ahead, see make_netns); index: the bridge end's ifindex,
    by which start_container brings such an end up. mac: name's MAC address,
    pinned in the bridge's neighbour table for its addresses; gateway_mac:
    the bridge's, pinned in the container's for the gateways (6 bytes, or
    b"" for neither)."""
    cdef iso_netif_t n

    def __cinit__(self, bytes host, bytes name, bytes alias, int master, int mtu,
                  bytes addr, int prefix, bytes gateway=b"", bytes addr6=b"", int prefix6=0,
                  bytes gateway6=b"", bint down=False, int index=0, bytes mac=b"",
                  bytes gateway_mac=b""):
        memset(&self.n, 0, sizeof(self.n))
        self.n.down = down
        self.n.index = index
        if len(mac) not in (0, 6) or len(gateway_mac) not in (0, 6):
            raise ValueError("MAC addresses are 6 bytes")
        if mac:
            memcpy(self.n.mac, <const char *>mac, 6)
        if gateway_mac:
            memcpy(self.n.gateway_mac, <const char *>gateway_mac, 6)
        _copy_name(self.n.host, 16, host, "interface name")
        _copy_name(self.n.name, 16, name, "interface name")
        _copy_name(self.n.alias, 128, alias, "interface alias")
        if len(addr) != 4 or len(gateway) not in (0, 4) or len(addr6) not in (0, 16) \
                or len(gateway6) not in (0, 16):
            raise ValueError("addresses are packed: 4 bytes (IPv4) or 16 (IPv6)")
        self.n.master = master
        self.n.mtu = mtu
        memcpy(self.n.addr, <const char *>addr, 4)
        if gateway:
            memcpy(self.n.gateway, <const char *>gateway, 4)
        self.n.prefix = prefix
        if addr6:
            self.n.has6 = 1
            memcpy(self.n.addr6, <const char *>addr6, 16)
            self.n.prefix6 = prefix6
            if gateway6:
                memcpy(self.n.gateway6, <const char *>gateway6, 16)


cdef char **_strv(list items) except NULL:
    cdef char **v = <char **>calloc(len(items) + 1, sizeof(char *))
    if v == NULL:
        raise MemoryError()
    for i, s in enumerate(items):
        v[i] = <char *>(<bytes>s)
    return v


cdef class ExecSpec:
    """How to start a process: argv, environment, stdio, fds, ids, directory,
    and security: (capability mask or None, no_new_privs, ((resource, soft,
    hard), ...), seccomp filter bytes or None[, nondumpable])."""
    cdef iso_exec_t x
    cdef list _keep
    cdef int *_pass
    cdef gid_t *_groups
    cdef iso_rlimit_t *_rlimits

    def __cinit__(self, bytes file, list argv, list envp, bytes path, bytes cwd, stdio,
                  pass_fds=(), ids=None, bint set_groups=True, int new_session=True,
                  int umask=0o022, security=None):
        self._keep = [file, argv, envp, path, cwd]
        self.x.file = file
        self.x.argv = _strv(argv)
        self.x.envp = _strv(envp)
        self.x.path = _cstr(path)
        self.x.cwd = _cstr(cwd)
        for i in range(3):
            self.x.stdio[i] = stdio[i]
        self._pass = <int *>calloc(len(pass_fds) + 1, sizeof(int))
        if self._pass == NULL:
            raise MemoryError()
        for i, fd in enumerate(pass_fds):
            self._pass[i] = fd
        self.x.pass_fds = self._pass
        self.x.npass_fds = len(pass_fds)
        if ids is not None:
            uid, gid, groups = ids
            self._groups = <gid_t *>calloc(len(groups) + 1, sizeof(gid_t))
            if self._groups == NULL:
                raise MemoryError()
            for i, g in enumerate(groups):
                self._groups[i] = g
            self.x.set_ids = 1
            self.x.set_groups = set_groups
            self.x.uid = uid
            self.x.gid = gid
            self.x.groups = self._groups
            self.x.ngroups = len(groups)
        self.x.new_session = new_session
        self.x.umask = umask
        if security is not None:
            caps, nnp, rlimits, seccomp = security[:4]
            self.x.sec.nondumpable = len(security) > 4 and security[4]
            if caps is not None:
                self.x.sec.restrict_caps = 1
                self.x.sec.caps = caps
            self.x.sec.no_new_privs = nnp
            self._rlimits = <iso_rlimit_t *>calloc(len(rlimits) + 1, sizeof(iso_rlimit_t))
            if self._rlimits == NULL:
                raise MemoryError()
            for i, (res, soft, hard) in enumerate(rlimits):
                self._rlimits[i].resource = res
                self._rlimits[i].soft = soft
                self._rlimits[i].hard = hard
            self.x.sec.rlimits = self._rlimits
            self.x.sec.nrlimits = len(rlimits)
            if seccomp is not None:
                self._keep.append(seccomp)
                self.x.sec.seccomp = <const char *>(<bytes>seccomp)
                self.x.sec.seccomp_len = len(seccomp) // 8

    def __dealloc__(self):
        free(<void *>self.x.argv)
        free(<void *>self.x.envp)
        free(self._pass)
        free(self._groups)
        free(self._rlimits)


cdef int _after_clone(pid_t pid, void *arg) noexcept with gil:
    box = <list>arg
    try:
        box[0](pid)
    except BaseException as e:
        box.append(e)
        return -1
    return 0


cdef iso_op_t *_joined(Plan pre, Plan plan, Plan post, size_t *n) except NULL:
    """The steps of pre, plan and post in one array (free it), so that the
    plan of many containers is built once and only what differs is not."""
    cdef size_t npre = pre.n if pre is not None else 0
    cdef size_t npost = post.n if post is not None else 0
    cdef iso_op_t *ops = <iso_op_t *>calloc(npre + plan.n + npost + 1, sizeof(iso_op_t))
    if ops == NULL:
        raise MemoryError()
    if npre:
        memcpy(ops, pre.ops, npre * sizeof(iso_op_t))
    memcpy(ops + npre, plan.ops, plan.n * sizeof(iso_op_t))
    if npost:
        memcpy(ops + npre + plan.n, post.ops, npost * sizeof(iso_op_t))
    n[0] = npre + plan.n + npost
    return ops


def start_container(Plan plan, unsigned long clone_flags, ExecSpec spec, int run,
                    after_clone=None, int cgroup_fd=-1, Plan pre=None, Plan post=None,
                    bint net_beside=False, NetIf netif=None, int netns=-1,
                    bint hold_netns=False):
    """Clone a container, walk its plan (after pre's steps and before post's)
    and exec its init with spec's stdio, fds, ids and directory; with run,
    spec's command first, as PID 2 (spec without a file: the command comes
    later, on the control socket). With run=RUN_GATED, the init takes its
    command on the control socket, with a gate fd, and execs it in its own
    place once the gate is readable (isolate-init oci).

    Returns (pid, pidfd, ctl_fd, status, netns_fd): the init's host pid, a
    pidfd for it, the caller's end of the control socket, the status of the
    init's first report (the command's pid inside, in run mode), and with
    hold_netns (and netif, without netns) an fd of the container's network
    namespace, opened before it could go (else -1). after_clone(pid)
    runs right after clone, the child waiting (to write its id maps); what
    it raises stops the start and is raised here. cgroup_fd (a cgroup v2
    directory) is where the child starts (CLONE_INTO_CGROUP). With
    net_beside, a helper makes the network namespace while the child walks
    the plan, which joins it at its OP_JOIN_NET step (clone_flags then
    without CLONE_NEWNET). netif: the container's interface on a bridge,
    made in the caller's network namespace and moved into the container's.
    netns (with net_beside): an fd of a network namespace made ahead of
    time (make_netns), which the child joins in place of one made beside it;
    with netif, its interface (made down), whose bridge end comes up, with
    netif's alias, while the child walks its plan.
    """
    cdef iso_container_t c
    cdef iso_error_t err
    cdef iso_msg_t msg
    cdef pid_t pid = -1
    cdef int pidfd = -1, ctl = -1, held = -1, r
    cdef iso_op_t *ops = NULL
    c.init_fd = iso_init_memfd(&err)
    if c.init_fd < 0:
        _raise(&err)
    c.clone_flags = clone_flags
    c.ops = plan.ops
    c.nops = plan.n
    if pre is not None or post is not None:
        ops = _joined(pre, plan, post, &c.nops)
        c.ops = ops
    c.run = run
    c.x = spec.x
    c.after_clone = NULL
    c.cgroup_fd = cgroup_fd
    c.net_beside = net_beside
    c.netif = &netif.n if netif is not None else NULL
    c.netns_fd = netns
    c.netns_out = &held if hold_netns else NULL
    box = [after_clone]
    if after_clone is not None:
        c.after_clone = _after_clone
        c.after_clone_arg = <void *>box
    err.step = 0
    with nogil:
        r = iso_container_start(&c, &pid, &pidfd, &ctl, &msg, &err)
    free(ops)
    if r < 0:
        if len(box) > 1:
            raise box[1]
        _raise(&err)
    return pid, pidfd, ctl, msg.status, held


def make_netns(NetIf netif not None):
    """A network namespace made ahead of a container, by the calling thread
    (which enters it and comes back): lo up, and netif made, attached and
    configured in it. Returns an fd of it (close-on-exec); the veth pair
    goes with the namespace once nothing holds it."""
    cdef const char *what = NULL
    cdef long r
    with nogil:
        r = iso_netns_make(&netif.n, &what)
    if r < 0:
        part = what.decode() if what != NULL else ""
        if part.startswith("return"):
            # the thread is left in the new namespace: no use of it is safe
            import os
            raise SystemError(f"{os.strerror(-r)}: {part}")
        from isolate.errors import child_error
        raise child_error("network interface", -r, f"{netif.n.host.decode()}: {part}")
    return r


def exec_in(int pidfd, unsigned long nsflags, ExecSpec spec, Plan pre=None):
    """Start spec's process inside the namespaces of the running container
    behind pidfd, after the steps of pre (run outside: joining cgroups).
    The process is a child of the caller. Returns (pid, status_fd): give
    both to exec_finish, which waits for its exec.
    """
    cdef iso_error_t err
    cdef pid_t pid
    cdef int status_fd = -1
    cdef const iso_op_t *pre_ops = NULL
    cdef size_t npre = 0
    if pre is not None:
        pre_ops = pre.ops
        npre = pre.n
    with nogil:
        pid = iso_exec_in(pidfd, nsflags, &spec.x, pre_ops, npre, &status_fd, &err)
    if pid < 0:
        _raise(&err)
    return pid, status_fd


def exec_finish(int status_fd, pid_t pid):
    """Wait until exec_in's process has exec'd; raise (the process reaped)
    when its exec failed. Closes status_fd."""
    cdef iso_error_t err
    cdef int r
    with nogil:
        r = iso_exec_finish(status_fd, pid, &err)
    if r < 0:
        _raise(&err)


def parse_msg(bytes data):
    """(kind, status, step, errno, path) of a control message."""
    cdef const iso_msg_t *m
    if len(data) != sizeof(iso_msg_t):
        raise ValueError("short control message")
    m = <const iso_msg_t *><const char *>data
    return (m.kind, m.status, iso_step_name(m.error.step).decode(), m.error.err,
            m.error.path.decode("utf-8", "surrogateescape"))


cdef extern from "Python.h":
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()


cdef extern from "<unistd.h>" nogil:
    int fork()
    int close(int fd)


cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags)
    enum:
        O_RDONLY
        O_WRONLY
        O_CLOEXEC


cdef extern from "<sched.h>" nogil:
    int setns(int fd, int nstype)


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EPERM
        ECHILD


cdef extern from "<signal.h>" nogil:
    enum:
        SIGCHLD


cdef extern from "<sched.h>" nogil:
    enum:
        CLONE_PARENT


cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long number, ...)
    enum:
        SYS_clone


cdef extern from "<sys/wait.h>" nogil:
    int waitpid(int pid, int *status, int options)


cdef extern from "<unistd.h>" nogil:
    int pipe2(int fds[2], int flags)
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)
    void _exit(int code)


cdef int _join_cgroups(list procs) noexcept:
    """In a fork: write "0" to each cgroup.procs (join); 0 or errno."""
    cdef int fd
    for path in procs:
        fd = open(<bytes>path, O_WRONLY | O_CLOEXEC)
        if fd < 0:
            return errno
        if write(fd, b"0", 1) != 1:
            close(fd)
            return errno
        close(fd)
    return 0


cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, ...)
    enum:
        PR_SET_DUMPABLE


cdef int _keep_array(object keep, int *fds, int extra) except -1:
    """keep's fds and extra (if >= 0), ascending, into fds (64 at most)."""
    cdef int n = 0
    for fd in sorted(set(keep) | ({extra} if extra >= 0 else set())):
        if n == 64:
            raise ValueError("too many fds to keep")
        fds[n] = fd
        n += 1
    return n


cdef extern from "isolate.h" nogil:
    ctypedef struct iso_exe_t:
        pass
    int iso_exe_prepare(iso_exe_t *x, int memfd, iso_error_t *err)
    int iso_exe_detach(iso_exe_t *x, iso_error_t *err)
    int iso_exe_set(iso_exe_t *x, iso_error_t *err)
    pid_t iso_hand_over(unsigned long flags, void (*leave)(void *, pid_t) noexcept nogil,
                        void *arg, iso_error_t *err)
    enum:
        ISO_STEP_SETNS
        ISO_STEP_CLONE
        ISO_STEP_CLOSE_FDS


cdef class Exe:
    """Where this process's binary is mapped, and memfd, a sealed copy of it
    that forks made by fork_into run as their executable (csrc/exe.c)."""
    cdef iso_exe_t x

    def __cinit__(self, int memfd):
        cdef iso_error_t e
        if iso_exe_prepare(&self.x, memfd, &e) < 0:
            raise _error(&e)

    def __reduce__(self):
        raise TypeError("an Exe belongs to its process")


def fork_into(int pidfd, unsigned long nsflags, list procs, keep, Exe exe not None):
    """fork() this process into the namespaces of the process behind pidfd.

    Returns (pid, None) in the parent and (0, error) in the child: error is
    an exception when the child could not join (it must report that, not
    raise into the caller's code). The child is a child of the caller, in
    the container's namespaces, and its executable (/proc/self/exe) is
    exe's sealed copy of the caller's binary (see csrc/exe.c), not the
    caller's. With a PID namespace in nsflags, a
    first child joins every namespace outside it (where the container cannot
    see it), makes itself non-dumpable, zeroes the caller's command line and
    environment (/proc/PID/cmdline, environ), closes every fd but keep, and
    then forks the second into it with CLONE_PARENT: the container never
    sees a process that holds the caller's fds, root, mounts, network or
    executable (/proc/PID/mountinfo and net/ are not guarded by
    dumpability). The child joins the cgroups whose cgroup.procs files
    procs names first.
    """
    cdef int pid, err = 0
    cdef iso_error_t e
    if nsflags & CLONE_NEWPID:
        return _fork_into_twice(pidfd, nsflags, procs, keep, exe)
    PyOS_BeforeFork()
    pid = fork()
    if pid == 0:
        PyOS_AfterFork_Child()
        if iso_exe_detach(&exe.x, &e) < 0:
            return 0, _error(&e)
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        err = _join_cgroups(procs)
        if err:
            return 0, _error_of("setns", err, "cgroup")
        if nsflags and setns(pidfd, nsflags) < 0:
            return 0, _error_of("setns", errno, "container")
        if iso_exe_set(&exe.x, &e) < 0:
            return 0, _error(&e)
        return 0, None
    err = errno
    PyOS_AfterFork_Parent()
    if pid < 0:
        raise _error_of("clone", err, "fork")
    return pid, None


cdef object _error(iso_error_t *e):
    from isolate.errors import child_error
    e.path[sizeof(e.path) - 1] = 0
    return child_error(iso_step_name(e.step).decode(), e.err,
                       e.path.decode("utf-8", "surrogateescape"))


cdef object _error_of(str step, int err, str path):
    from isolate.errors import child_error
    return child_error(step, err, path)


def exit_after(f):
    """In a process that must never return into the code it was forked
    from (a call's or a pool's process): run f(), then _exit, whatever f
    raised; an exception a signal handler raises at any point of f ends
    here too, for no Python runs between f's end and the _exit."""
    try:
        f()
    except BaseException:
        pass
    _exit(70)


cdef void _report_and_exit(void *fd, pid_t child) noexcept nogil:
    """The first child of a call, once it has handed over to the second: it
    reports the second's pid and ends, leaving it the memory."""
    cdef long pid = child
    cdef iso_error_t e
    memset(&e, 0, sizeof(e))
    write((<int *>fd)[0], &pid, sizeof(pid))
    write((<int *>fd)[0], &e, sizeof(e))
    _exit(0)


cdef object _fork_into_twice(int pidfd, unsigned long nsflags, list procs, keep, Exe exe):
    cdef int p[2]
    cdef int fds[64]
    cdef int nfds
    cdef int mid, status
    cdef long child = 0
    cdef iso_error_t e
    if pipe2(p, O_CLOEXEC) < 0:
        raise _error_of("clone", errno, "pipe")
    try:
        nfds = _keep_array(keep, fds, p[1])
    except BaseException:
        close(p[0])
        close(p[1])
        raise
    memset(&e, 0, sizeof(e))
    PyOS_BeforeFork()
    mid = fork()
    if mid == 0:
        # the first child, outside the container's PID namespace: no Python
        # here, syscalls only; what the second inherits is stripped first
        # (the executable while /proc/self/pagemap is still its own to read)
        close(p[0])
        if iso_exe_detach(&exe.x, &e) < 0:
            pass
        else:
            prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            iso_forget_environ()
            e.err = _join_cgroups(procs)
            if e.err:
                e.step = ISO_STEP_SETNS
            elif setns(pidfd, nsflags) < 0:
                e.step, e.err = ISO_STEP_SETNS, errno
            elif iso_exe_set(&exe.x, &e) < 0:
                pass
            elif iso_close_fds(fds, nfds) < 0:
                e.step, e.err = ISO_STEP_CLOSE_FDS, errno
            elif iso_hand_over(CLONE_PARENT, _report_and_exit, &p[1], &e) == 0:
                PyOS_AfterFork_Child()      # the second: the caller's child, inside
                close(p[1])
                return 0, None
        write(p[1], &child, sizeof(child))
        write(p[1], &e, sizeof(e))
        _exit(0)
    PyOS_AfterFork_Parent()
    close(p[1])
    if mid < 0:
        close(p[0])
        raise _error_of("clone", errno, "fork")
    with nogil:
        waitpid(mid, &status, 0)
        if read(p[0], &child, sizeof(child)) != sizeof(child):
            child = 0
        if read(p[0], &e, sizeof(e)) != sizeof(e):
            e.step, e.err = ISO_STEP_CLONE, ECHILD
    close(p[0])
    if child <= 0:
        if e.step == ISO_STEP_SETNS and e.path[0] == 0:
            raise _error_of("setns", e.err, "container")
        if e.step == 0:
            e.step, e.err = ISO_STEP_CLONE, ECHILD
        raise _error(&e)
    return child, None

cdef extern from "<stdlib.h>" nogil:
    int clearenv()
    int setenv(const char *name, const char *value, int overwrite)


def replace_environ(list items):
    """Make the C environment exactly items, a list of (name, value) bytes.

    os.environ is left to the caller: in a fork, rebuilding both wholesale
    touches far fewer copy-on-write pages than changing them key by key.
    """
    clearenv()
    for name, value in items:
        if setenv(<bytes>name, <bytes>value, 1) < 0:
            raise OSError(errno, "setenv")


def fork_container(Plan plan, unsigned long clone_flags, int pdeathsig=0, Plan pre=None,
                   Plan post=None, bint python_hooks=True, int adopt_ctl=-1,
                   NetIf netif=None):
    """Fork this (single-threaded) process into a new container built by the
    steps of pre, plan and post (pre and post: the few steps that differ from
    one fork to the next, so that plan is built once).

    Returns (pid, None) in the parent and (0, error) in the child, which is
    PID 1 of its container and goes on running this program; error is None,
    or the exception for the setup step that failed (to be reported by the
    child, not raised into the caller's code). The child gets pdeathsig
    when this process ends.

    python_hooks=False leaves out what Python does around a fork: its locks
    re-made and the handlers of os.register_at_fork run. They exist for a
    process with other threads, which may hold locks at the fork, and they
    run Python code in the child, whose every touched page is then copied
    (0.5 ms of a fresh fork's CPU). A caller with a single thread, holding
    no lock, finds the child consistent without them, and runs in the child
    the handlers it needs (reseeding random, for one).

    With adopt_ctl (an fd), the child is not PID 1: the first process of the
    container hands this program over to a second (which returns here) and
    becomes the container's init, which reaps and, once the second has
    ended, sends its wait status on adopt_ctl (isolate-init adopt) and ends
    the container. The pid returned is the init's.

    netif: the container's interface on a bridge, made by this process once
    the child is forked (the child waits for it) and configured by the child.
    """
    cdef iso_error_t err
    cdef pid_t pid
    cdef size_t n
    cdef iso_op_t *ops = _joined(pre, plan, post, &n)
    if python_hooks:
        PyOS_BeforeFork()
    pid = iso_fork_container(clone_flags, pdeathsig, ops, n, adopt_ctl,
                             &netif.n if netif is not None else NULL, &err)
    free(ops)
    if pid == 0:
        if python_hooks:
            PyOS_AfterFork_Child()
        if err.step == 0:
            return 0, None
        from isolate.errors import child_error
        return 0, child_error(iso_step_name(err.step).decode(), err.err,
                              err.path.decode("utf-8", "surrogateescape"))
    if python_hooks:
        PyOS_AfterFork_Parent()
    if pid < 0:
        _raise(&err)
    return pid, None


cdef extern from "<sys/prctl.h>" nogil:
    enum:
        PR_SET_NAME


def close_fds(keep):
    """Close every fd from 3 up but those in keep (csrc's iso_close_fds)."""
    cdef int fds[64]
    if iso_close_fds(fds, _keep_array(keep, fds, -1)) < 0:
        import os
        raise OSError(errno, os.strerror(errno))


def set_namespace(int fd, int nstype):
    """setns(2) of the calling thread: for CLONE_NEWPID, the PID namespace
    of the processes it makes from now on."""
    if setns(fd, nstype) < 0:
        import os
        raise OSError(errno, os.strerror(errno))


def set_process_name(bytes name):
    """The name ps and /proc/PID/comm give this process (15 bytes kept)."""
    prctl(PR_SET_NAME, <const char *>name, 0, 0, 0)


def enter(ExecSpec spec, keep):
    """In a fork that runs Python inside a container: close every fd from 3
    up but those in keep, then apply spec's session, directory, umask, ids
    and security. In C: in a fresh fork, each Python line run copies pages."""
    cdef iso_error_t err
    cdef int fds[64]
    if iso_enter(&spec.x, fds, _keep_array(keep, fds, -1), &err) < 0:
        _raise(&err)


cdef struct open_how_t:
    uint64_t flags
    uint64_t mode
    uint64_t resolve

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def openat2(int dirfd, path, int flags, int mode=0, int resolve=0):
    """openat2(2) (Linux 5.6): path opened relative to dirfd under the
    RESOLVE_* rules given; the new fd, or OSError naming the path."""
    import os
    cdef bytes p = os.fsencode(path)
    cdef const char *cp = p
    cdef open_how_t how
    cdef long fd
    how.flags = <uint64_t>flags
    how.mode = <uint64_t>mode
    how.resolve = <uint64_t>resolve
    with nogil:
        fd = syscall(437, dirfd, cp, &how, sizeof(how))
    if fd < 0:
        err = errno
        raise OSError(err, os.strerror(err), os.fsdecode(p))
    return <int>fd


cdef extern from "<sys/vfs.h>" nogil:
    struct statfs:
        long f_type
    int fstatfs(int fd, statfs *buf)


def fs_magic(int fd):
    """The magic number of the filesystem that holds fd (fstatfs f_type)."""
    cdef statfs buf
    if fstatfs(fd, &buf) < 0:
        err = errno
        raise OSError(err, "fstatfs")
    return <unsigned long>buf.f_type & 0xffffffff
