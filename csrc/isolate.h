/* isolate: what runs between clone and exec.
 *
 * Python builds a plan (an ordered array of iso_op_t) and an exec spec; the
 * code here walks them in the child with raw syscalls only. No allocation,
 * no locks, no stdio after clone: the child shares the caller's memory.
 * Every failure is reported as (step, errno, path) and never exits the caller.
 */
#ifndef ISOLATE_H
#define ISOLATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/prctl.h>

/* What was being done when something failed. Names: iso_step_name(). */
enum iso_step {
    ISO_STEP_NONE = 0,
    ISO_STEP_CLONE,
    ISO_STEP_SETNS,
    ISO_STEP_MOUNT,
    ISO_STEP_BIND,
    ISO_STEP_REMOUNT,
    ISO_STEP_MKDIR,
    ISO_STEP_TOUCH,
    ISO_STEP_MKNOD,
    ISO_STEP_SYMLINK,
    ISO_STEP_PIVOT_ROOT,
    ISO_STEP_WRITE,
    ISO_STEP_SETHOSTNAME,
    ISO_STEP_LO_UP,
    ISO_STEP_UNSHARE,
    ISO_STEP_CHDIR,
    ISO_STEP_STDIO,
    ISO_STEP_CLOSE_FDS,
    ISO_STEP_SETSID,
    ISO_STEP_SETGROUPS,
    ISO_STEP_SETGID,
    ISO_STEP_SETUID,
    ISO_STEP_EXEC,
    ISO_STEP_EXEC_INIT,
    ISO_STEP_INIT,          /* the init died before it reported */
    ISO_STEP_MEMFD,
    ISO_STEP_SOCKET,
    ISO_STEP_WAIT,
    ISO_STEP_CAPS,
    ISO_STEP_RLIMIT,
    ISO_STEP_NO_NEW_PRIVS,
    ISO_STEP_SECCOMP,
    ISO_STEP_MASK,
    ISO_STEP_RESOLVE,       /* a mount target, inside its root */
    ISO_STEP_EXE,           /* a fork's executable: csrc/exe.c */
    ISO_STEP_NETIF,         /* the interface on a bridge: csrc/net.c */
    ISO_STEP_PERSONALITY,
    ISO_STEP_COUNT
};

typedef struct iso_error {
    int32_t step;
    int32_t err;            /* errno */
    char path[256];         /* the path or name the step acted on */
} iso_error_t;

/* Messages on the control socket, container side to caller side. */
enum iso_msg_kind {
    ISO_MSG_READY = 1,      /* init runs; status = pid of the command in run mode */
    ISO_MSG_ERROR = 2,      /* setup or exec failed: see error */
    ISO_MSG_EXIT = 3,       /* run mode: the command ended; status = wait status */
};

typedef struct iso_msg {
    int32_t kind;
    int32_t status;
    iso_error_t error;
} iso_msg_t;

/* The command of a container made ahead of it (isolate-init wait): this,
 * then its directory, file, PATH, argv and envp as NUL-terminated strings,
 * in one message of at most ISO_COMMAND_MAX bytes, with its stdin, stdout
 * and stderr as SCM_RIGHTS. */
#define ISO_COMMAND_MAX (256 * 1024)
typedef struct iso_command_msg {
    uint32_t argc, envc;
} iso_command_msg_t;

/* How a command's start went, on a pipe to the caller (join) or to the init
 * (run): the command's pid, or an error (step != 0). */
typedef struct iso_report {
    int32_t pid;
    iso_error_t error;
} iso_report_t;

/* One step of a container's plan. Field use depends on kind:
 *   MOUNT      mount(src, dst, fstype, flags, data)
 *   BIND       bind src on dst (flags & MS_REC: recursive); then, if flags has
 *              MS_RDONLY/NOSUID/NODEV/NOEXEC, remount with them, keeping the
 *              flags the source mount already has
 *   RDONLY_REC make dst and every mount below it read-only (and nodev, with
 *              MS_NODEV in flags)
 *   MKDIR      mkdir -p dst, mode = arg
 *   TOUCH      create an empty file dst (a bind target)
 *   MKNOD      mknod dst, mode = flags (a character device unless flags has a
 *              file type: S_IFREG makes an empty file), device number = arg
 *   SYMLINK    symlink(src, dst)
 *   PIVOT_ROOT with src: pivot_root(dst, src), chdir /
 *              without: chdir dst, pivot_root(".", "."), detach the old root
 *   WRITE      write data to the existing file dst
 *   HOSTNAME   sethostname(data)
 *   LO_UP      bring the loopback interface up
 *   UNSHARE    unshare(flags)
 *   MASK       if dst exists: bind over it the empty directory data or the
 *              empty file src, both on a read-only mount (whose flags the
 *              bind takes)
 *   RO_IF_ANY  if dst exists: bind src on it, src being on a read-only mount
 *              (whose flags the bind takes); without src: bind dst on
 *              itself, then remount it read-only
 *   JOIN_NET   join the network namespace made beside the child (see
 *              iso_container_t.net_beside), waiting for it if need be
 *   SETNS      join the namespace of the file src (/proc/PID/ns/net, a
 *              bind of one) of kind flags (CLONE_NEWNET...)
 *   MOUNT_IN_ROOT  mount on a path inside a root: dst is the root (its first
 *              component) then the path (/newroot/a/b: a/b in /newroot),
 *              resolved now as the root's own lookup would (openat2
 *              RESOLVE_IN_ROOT: no symlink or ".." leaves it), what is
 *              missing made there (directories, and an empty file for a bind
 *              of a file), and mounted on by fd: a bind of src (recursive),
 *              or without src a new fstype with data's "key=value,flag"
 *              options. flags: MS_RDONLY/NOSUID/NODEV/NOEXEC of the new
 *              mount (recursive for a bind). Failures name dst.
 */
enum iso_op_kind {
    ISO_OP_MOUNT = 1,
    ISO_OP_BIND,
    ISO_OP_RDONLY_REC,
    ISO_OP_MKDIR,
    ISO_OP_TOUCH,
    ISO_OP_MKNOD,
    ISO_OP_SYMLINK,
    ISO_OP_PIVOT_ROOT,
    ISO_OP_WRITE,
    ISO_OP_HOSTNAME,
    ISO_OP_LO_UP,
    ISO_OP_UNSHARE,
    ISO_OP_MASK,
    ISO_OP_RO_IF_ANY,
    ISO_OP_JOIN_NET,
    ISO_OP_MOUNT_IN_ROOT,
    ISO_OP_SETNS,
    ISO_OP_PERSONALITY,
};

typedef struct iso_op {
    int kind;
    const char *src;
    const char *dst;
    const char *fstype;
    const char *data;
    unsigned long flags;
    unsigned long arg;
} iso_op_t;

/* What a container process may do, applied last before exec. */
typedef struct iso_rlimit {
    int resource;
    uint64_t soft, hard;
} iso_rlimit_t;

typedef struct iso_security {
    int restrict_caps;          /* apply caps (else keep the caller's) */
    uint64_t caps;              /* bounding, permitted, effective (for uid 0) */
    int no_new_privs;
    int nondumpable;            /* for processes that run the caller's code (call) */
    const iso_rlimit_t *rlimits;
    size_t nrlimits;
    const void *seccomp;        /* struct sock_filter[], or NULL */
    size_t seccomp_len;         /* in filter instructions */
} iso_security_t;

/* How to start a process: stdio, fds, directory, ids, then exec. */
typedef struct iso_exec {
    const char *file;           /* argv[0] or the executable; searched in path */
    char *const *argv;
    char *const *envp;
    const char *path;           /* colon-separated directories for the search */
    const char *cwd;            /* NULL: leave as it is */
    int stdio[3];               /* fd to become 0, 1, 2; -1: keep */
    const int *pass_fds;        /* kept open across exec (numbers unchanged) */
    size_t npass_fds;
    int set_ids;                /* apply uid, gid, groups */
    int set_groups;             /* call setgroups (not allowed in some user namespaces) */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t ngroups;
    int new_session;            /* setsid(); ISO_SESSION_TTY: and stdin, a
                                 * terminal, becomes the controlling one */
    mode_t umask;
    iso_security_t sec;
} iso_exec_t;

/* A container: namespaces, the plan, then the init as PID 1 with x's stdio,
 * fds, ids and directory. In run mode, the init starts x's command, a fork
 * of its own, and the container ends when the command does. */
#define ISO_SESSION_TTY 2
/* iso_container_t.run: the command comes later, and waits for a word on a
 * gate before it is exec'd in the init's place (isolate-init oci) */
#define ISO_RUN_GATED 2

/* A container's interface on a bridge: a veth pair, host in the caller's
 * network namespace (a port of the bridge master, up, with alias as its
 * IFLA_IFALIAS), name in the container's, with its addresses and default
 * routes (a gateway of zeros: none). csrc/net.c. */
typedef struct iso_netif {
    char host[16];
    char name[16];
    char alias[128];
    int master;
    int mtu;                    /* 0: the kernel's */
    uint8_t addr[4], gateway[4];
    int prefix;
    int has6;
    uint8_t addr6[16], gateway6[16];
    int prefix6;
    int down;                   /* attach leaves host down (see iso_netns_make) */
    int index;                  /* host's ifindex, for iso_netif_up (0: by name) */
    /* name's MAC address (zeros: the kernel's), which attach pins in the
     * master's neighbour table for addr and addr6; and the master's, which
     * configure pins for gateway and gateway6 (zeros: none). A neighbour
     * cannot then take over the container's or the gateway's address by
     * ARP or NDP. */
    uint8_t mac[6], gateway_mac[6];
} iso_netif_t;

/* With raw system calls only (see iso_raw_syscall), for the helper that
 * shares the caller's memory: 0 or -errno. make: in the caller's network
 * namespace, on nl (a NETLINK_ROUTE socket of it), the pair, with name in
 * the network namespace of pid and host down, not yet a port (the least
 * the container's namespace needs to be joined: it shows name). attach:
 * then host gets its alias, no IPv6 address of its own, joins master and
 * comes up. configure: in the container's namespace; *what names the part
 * that failed. */
long iso_netif_socket(void);
long iso_netif_make(int nl, const iso_netif_t *n, pid_t pid);
long iso_netif_attach(int nl, const iso_netif_t *n);
/* The host's pinned neighbour entries for n's addresses on its bridge
 * (iso_netif_attach's) go: for an interface of the caller's that failed,
 * while it is still there (so that the entries cannot be a successor's). */
long iso_netif_unpin(int nl, const iso_netif_t *n);
long iso_netif_configure(const iso_netif_t *n, const char **what);
/* host, left down by attach, gets alias and comes up (on nl, as make): by
 * index where given, so that another interface of its name (it was removed
 * meanwhile) is never touched. */
long iso_netif_up(int nl, const iso_netif_t *n);
/* A network namespace made ahead of a container by a thread of the caller's
 * (not after clone: libc), which enters it and comes back: lo up, and n
 * made, attached and configured in it. Returns an fd of the namespace
 * (O_CLOEXEC; the pair goes with the namespace), or -errno with *what
 * naming the part that failed. With n->down, the bridge's end stays down
 * until iso_netif_up: nothing on the bridge reaches the namespace (nor
 * fills its neighbour table) before a container has it. */
long iso_netns_make(const iso_netif_t *n, const char **what);

typedef struct iso_container {
    unsigned long clone_flags;  /* CLONE_NEW* */
    const iso_op_t *ops;
    size_t nops;
    int init_fd;                /* memfd holding the init program */
    int run;                    /* run x's command; otherwise serve until closed;
                                 * ISO_RUN_GATED: see isolate-init oci */
    iso_exec_t x;
    /* If set, called in the caller right after clone with the child's pid,
     * while the child waits (to write its id maps from outside); non-zero
     * stops the start. */
    int (*after_clone)(pid_t pid, void *arg);
    void *after_clone_arg;
    /* If >= 0, a cgroup v2 directory: the child starts in it (clone3's
     * CLONE_INTO_CGROUP), or joins it first thing where clone3 is missing. */
    int cgroup_fd;
    /* If set (where ISO_NET_BESIDE), the container's network namespace is
     * made beside the child: a helper cloned just before it unshares one and
     * brings lo up while the child walks its plan, and the child joins it at
     * its ISO_OP_JOIN_NET step (a plan without one fails). clone_flags then
     * lacks CLONE_NEWNET. The namespace belongs to the caller's user
     * namespace, as with CLONE_NEWNET from the caller. */
    int net_beside;
    /* If set, the container's interface on a bridge: made and configured by
     * the helper with net_beside; else made by the caller right after clone
     * (after after_clone), the child waiting, and configured by the child
     * after its plan. */
    const iso_netif_t *netif;
    /* If >= 0 (with net_beside), a network namespace made ahead of time
     * (iso_netns_make): the child joins it at its ISO_OP_JOIN_NET step, and
     * no helper is cloned. With netif, its interface, whose bridge end the
     * caller brings up (iso_netif_up) while the child walks its plan; the
     * child waits for that before it execs. */
    int netns_fd;
    /* If not NULL (with netif, without netns_fd): receives an fd of the
     * container's network namespace (close-on-exec), opened while the
     * namespace cannot have gone yet, for the caller to hold: the container's
     * interface stays while it does, however soon the container ends. -1
     * where there is none. */
    int *netns_out;
} iso_container_t;

/* Whether net_beside is supported (the helper needs raw system calls). */
#if defined(__x86_64__)
#define ISO_NET_BESIDE 1
#else
#define ISO_NET_BESIDE 0
#endif

/* System calls that leave errno alone, returning -errno on failure: for code
 * that runs beside the caller's thread (its errno is the caller's). */
#if ISO_NET_BESIDE
static inline long iso_raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#else
#include <errno.h>
#include <unistd.h>
long syscall(long n, ...);
static inline long iso_raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}
#endif

/* Start a container. On success returns 0 with *pid (host pid of its init),
 * *pidfd and *ctl (the caller's end of the control socket, close-on-exec);
 * first_msg receives the init's READY message (status: the command's pid
 * in the container's PID namespace, in run mode). */
int iso_container_start(const iso_container_t *c, pid_t *pid, int *pidfd, int *ctl,
                        iso_msg_t *first_msg, iso_error_t *err);

/* Start a process inside a running container, as `docker exec`: a child of
 * the caller runs the pre steps (joining the container's cgroups), joins the
 * namespaces in nsflags of the process behind pidfd (setns on a pidfd: Linux
 * 5.8), takes x's stdio, fds, directory, ids and security, and execs the
 * sealed init, which forks x's command into the container's PID namespace.
 * Only that fork is ever visible in the container, and it holds nothing of
 * the caller. The command is a child of the caller. Returns its pid, with
 * *status_fd, where iso_exec_finish learns how its exec went; or -1 with err
 * set. Kept apart, so that a caller waits for the exec (which a process in
 * the container can delay, stopping the command) without holding a lock. */
pid_t iso_exec_in(int pidfd, unsigned long nsflags, const iso_exec_t *x, const iso_op_t *pre,
                  size_t npre, int *status_fd, iso_error_t *err);

/* 0 once child has exec'd (or ended); -1 with err set, child reaped, when
 * its exec failed. Closes status_fd. */
int iso_exec_finish(int status_fd, pid_t child, iso_error_t *err);

/* In a fork of the caller that goes on running the caller's code inside a
 * container (Pool workers, call): close every fd from 3 up but those in keep
 * (ascending), then x's session, directory, umask, ids and security. */
int iso_enter(const iso_exec_t *x, const int *keep, size_t nkeep, iso_error_t *err);

/* Fork the caller into new namespaces (clone_flags) and walk ops in the child,
 * which then returns 0 like fork(); the parent gets the child's pid. For a
 * single-threaded caller only: the child is a full copy that goes on running
 * the caller's code as PID 1 of its container; with adopt_ctl >= 0, as PID 2,
 * PID 1 becoming the init (adopt mode, reporting on adopt_ctl) once the plan
 * is walked (iso_hand_over). A failed step leaves err set in the child
 * (err->step != 0). pdeathsig (if not 0) is sent to the child when the
 * caller ends. With netif, the caller makes that interface once the child
 * is forked (which waits for it), and the child configures it after ops. */
pid_t iso_fork_container(unsigned long clone_flags, int pdeathsig, const iso_op_t *ops,
                         size_t nops, int adopt_ctl, const iso_netif_t *netif,
                         iso_error_t *err);

/* A fork that copies no page table: a child (flags: CLONE_PARENT, or 0)
 * that shares this process's memory waits until leave(arg, child) has
 * exec'd or ended this process, and then returns 0 from this call, alone in
 * the memory. This process returns only on failure (-1). For a process
 * with a single thread, one hand-over at a time. */
pid_t iso_hand_over(unsigned long flags, void (*leave)(void *, pid_t), void *arg,
                    iso_error_t *err);

/* Put the init program into a sealed memfd (once per process). */
int iso_init_memfd(iso_error_t *err);

const char *iso_step_name(int step);

/* exec file with envp, searching path when file has no '/', as execvpe does.
 * Returns only on failure, with -errno. buf holds PATH_MAX bytes. (In the
 * init: csrc/exec.c.) */
long iso_exec_search(const char *file, char *const argv[], char *const envp[],
                     const char *path, char *buf);
/* The file iso_exec_search would exec, into buf, without running it: 0, or
 * what execve would fail with (but for the file's format). */
long iso_exec_find(const char *file, const char *path, char *buf);

/* Around a start, in the caller: a child that shares the caller's memory and
 * changes its uid makes that memory non-dumpable, which would leave the
 * caller so; the last start to end puts back what the first one found. */
void iso_dumpable_hold(void);
void iso_dumpable_release(void);

/* In a fork: close every fd from 3 up but those in keep (ascending). */
int iso_close_fds(const int *keep, size_t nkeep);

/* Note where this process's command line and environment strings lie, for
 * iso_enter to zero them in a fork whose security says nondumpable (its
 * /proc/PID/cmdline and environ). */
void iso_note_environ(void);
/* In a fork, zero them now (what iso_enter does). */
void iso_forget_environ(void);

/* A fork of the caller that the container can see runs as its executable a
 * sealed memfd copy of the caller's binary (csrc/exe.c). iso_exe_prepare, in
 * the caller, once: where the binary is mapped. In the fork:
 * iso_exe_detach replaces those mappings, keeping every written page, and
 * names the copy as the executable (/proc/self/exe) where this process may
 * (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in its user namespace); else
 * iso_exe_set does, once the fork has joined the container's user
 * namespace. */
#define ISO_EXE_MAX_VMAS 32
struct iso_exe_vma {
    unsigned long start, end, offset;
    unsigned long long dev, ino;
    int prot, written, shared;
};
typedef struct iso_exe {
    int memfd, done, pending, nvmas;
    unsigned long long memfd_dev, memfd_ino, dev, ino;
    struct prctl_mm_map map;
    struct iso_exe_vma vmas[ISO_EXE_MAX_VMAS];
} iso_exe_t;
int iso_exe_prepare(iso_exe_t *x, int memfd, iso_error_t *err);
int iso_exe_detach(iso_exe_t *x, iso_error_t *err);
int iso_exe_set(iso_exe_t *x, iso_error_t *err);

#endif
