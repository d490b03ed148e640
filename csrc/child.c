/* Clone, walk the plan, exec: the part of isolate that runs where Python cannot.
 *
 * The child is created with CLONE_VM, so it costs the same whatever the
 * caller's memory, and it shares the caller's memory until it execs. Hence,
 * after clone: no malloc, no locks, no glibc functions that touch thread state
 * (ids change with raw syscalls, never setuid(3), which signals every thread),
 * signal handlers reset before anything is unblocked.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "isolate.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#define ISO_MOUNT_ATTR_RDONLY 0x00000001
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#define ISO_OPEN_TREE_CLONE 1
#define ISO_MOVE_MOUNT_EMPTY_PATHS (0x04 | 0x40)    /* F_EMPTY_PATH | T_EMPTY_PATH */
#define ISO_FSCONFIG_SET_FLAG 0
#define ISO_FSCONFIG_SET_STRING 1
#define ISO_FSCONFIG_CMD_CREATE 6
#define ISO_RESOLVE_IN_ROOT_NO_MAGICLINKS (0x10 | 0x02)
#define ISO_MOUNT_ATTR_NODEV 0x00000004

#define STACK_SIZE (256 * 1024)

/* ---------------------------------------------------------------- errors */

static const char *const step_names[ISO_STEP_COUNT] = {
    [ISO_STEP_NONE] = "none",
    [ISO_STEP_CLONE] = "clone",
    [ISO_STEP_SETNS] = "setns",
    [ISO_STEP_MOUNT] = "mount",
    [ISO_STEP_BIND] = "bind mount",
    [ISO_STEP_REMOUNT] = "remount",
    [ISO_STEP_MKDIR] = "mkdir",
    [ISO_STEP_TOUCH] = "create mount target",
    [ISO_STEP_MKNOD] = "mknod",
    [ISO_STEP_SYMLINK] = "symlink",
    [ISO_STEP_PIVOT_ROOT] = "pivot_root",
    [ISO_STEP_WRITE] = "write",
    [ISO_STEP_SETHOSTNAME] = "sethostname",
    [ISO_STEP_LO_UP] = "bring up lo",
    [ISO_STEP_UNSHARE] = "unshare",
    [ISO_STEP_CHDIR] = "chdir",
    [ISO_STEP_STDIO] = "set up stdio",
    [ISO_STEP_CLOSE_FDS] = "close fds",
    [ISO_STEP_SETSID] = "setsid",
    [ISO_STEP_SETGROUPS] = "setgroups",
    [ISO_STEP_SETGID] = "setgid",
    [ISO_STEP_SETUID] = "setuid",
    [ISO_STEP_EXEC] = "exec",
    [ISO_STEP_EXEC_INIT] = "exec init",
    [ISO_STEP_INIT] = "container init",
    [ISO_STEP_MEMFD] = "memfd_create",
    [ISO_STEP_SOCKET] = "socketpair",
    [ISO_STEP_WAIT] = "wait",
    [ISO_STEP_CAPS] = "capabilities",
    [ISO_STEP_RLIMIT] = "setrlimit",
    [ISO_STEP_NO_NEW_PRIVS] = "no_new_privs",
    [ISO_STEP_SECCOMP] = "seccomp",
    [ISO_STEP_MASK] = "mask",
    [ISO_STEP_RESOLVE] = "resolve mount target",
    [ISO_STEP_EXE] = "executable",
    [ISO_STEP_NETIF] = "network interface",
    [ISO_STEP_PERSONALITY] = "personality",
};

const char *iso_step_name(int step)
{
    if (step < 0 || step >= ISO_STEP_COUNT || step_names[step] == NULL)
        return "unknown step";
    return step_names[step];
}

static int fail(iso_error_t *e, int step, const char *path)
{
    e->step = step;
    e->err = errno;
    size_t i = 0;
    if (path != NULL)
        for (; path[i] != '\0' && i < sizeof e->path - 1; i++)
            e->path[i] = path[i];
    e->path[i] = '\0';
    return -1;
}

/* ------------------------------------------------------------ clone3/clone */

struct iso_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

#if defined(__x86_64__)
/* clone3 with a new stack: the child cannot return into C frames of the
 * parent, so it calls fn(arg) on its stack and exits (as glibc's own does). */
long iso_raw_clone3(struct iso_clone_args *args, size_t size, int (*fn)(void *), void *arg);
__asm__(".text\n"
        ".globl iso_raw_clone3\n"
        ".hidden iso_raw_clone3\n"
        ".type iso_raw_clone3,@function\n"
        "iso_raw_clone3:\n"
        "    mov %rdx, %r9\n"        /* fn: kept across syscall */
        "    mov %rcx, %r8\n"        /* arg */
        "    mov $435, %eax\n"       /* SYS_clone3 */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n"
        "    mov %r8, %rdi\n"
        "    call *%r9\n"
        "    mov %eax, %edi\n"
        "    mov $60, %eax\n"        /* SYS_exit */
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n"
        ".size iso_raw_clone3, .-iso_raw_clone3\n");
#define HAVE_RAW_CLONE3 1
#endif

static int clone3_missing;

/* Start fn(arg) in a child sharing our memory, on the given stack, with the
 * given exit signal (0: none; then only waitpid with __WALL reaps it). With
 * pidfd, a pidfd for it is stored there. */
static pid_t clone_vm(int (*fn)(void *), void *arg, char *stack, size_t size,
                      unsigned long flags, int *pidfd, int cgroup_fd, int exit_signal)
{
    flags |= CLONE_VM;
    if (pidfd != NULL)
        flags |= CLONE_PIDFD;
#ifdef HAVE_RAW_CLONE3
    if (!clone3_missing) {
        struct iso_clone_args a;
        memset(&a, 0, sizeof a);
        a.flags = flags;
        a.pidfd = (uint64_t)(uintptr_t)pidfd;
        a.exit_signal = (uint64_t)exit_signal;
        a.stack = (uint64_t)(uintptr_t)stack;
        a.stack_size = size;
        if (cgroup_fd >= 0) {
            a.flags |= CLONE_INTO_CGROUP;
            a.cgroup = (uint64_t)cgroup_fd;
        }
        long r = iso_raw_clone3(&a, sizeof a, fn, arg);
        if (r >= 0)
            return (pid_t)r;
        if (r != -ENOSYS && r != -E2BIG) {
            errno = (int)-r;
            return -1;
        }
        clone3_missing = 1;
    }
#endif
    (void)cgroup_fd;    /* the child joins itself: see into_cgroup_fallback */
    return clone(fn, stack + size, (int)(flags | (unsigned long)exit_signal), arg, pidfd);
}

/* In a child started with a cgroup_fd: whether clone3 did not put it there. */
static int into_cgroup_fallback(void)
{
#ifdef HAVE_RAW_CLONE3
    return clone3_missing;
#else
    return 1;
#endif
}

/* Stacks for children, kept for reuse: a stack is back in the pool only once
 * its child has exec'd or been reaped. The pool is touched by callers only. */
#define POOL_SIZE 4
static struct {
    char *stack;
    size_t size;
} pool[POOL_SIZE];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

static char *stack_alloc(size_t size)
{
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SIZE; i++)
        if (pool[i].stack != NULL && pool[i].size == size) {
            char *s = pool[i].stack;
            pool[i].stack = NULL;
            pthread_mutex_unlock(&pool_lock);
            return s;
        }
    pthread_mutex_unlock(&pool_lock);
    /* one guard page below the stack */
    char *p = mmap(NULL, size + 4096, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    mprotect(p, 4096, PROT_NONE);
    return p + 4096;
}

static void stack_free(char *stack, size_t size)
{
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SIZE; i++)
        if (pool[i].stack == NULL) {
            pool[i].stack = stack;
            pool[i].size = size;
            pthread_mutex_unlock(&pool_lock);
            return;
        }
    pthread_mutex_unlock(&pool_lock);
    munmap(stack - 4096, size + 4096);
}

static void block_all(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    /* the raw call: glibc's wrapper leaves its own internal signals open */
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, old, _NSIG / 8);
}

static void restore_mask(const sigset_t *old)
{
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, old, NULL, _NSIG / 8);
}

/* In the child: handlers set by the caller (Python's among them) must not
 * run here, and ignored signals must not stay ignored in the container. */
static void reset_signals_in_child(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
}

static void unblock_all_in_child(void)
{
    sigset_t none;
    sigemptyset(&none);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, _NSIG / 8);
}

/* ------------------------------------------------------------------- plan */

static int mkdir_p(const char *path, mode_t mode, iso_error_t *e)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return fail(e, ISO_STEP_MKDIR, path);
    }
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return fail(e, ISO_STEP_MKDIR, path);
    memcpy(buf, path, n + 1);       /* a parent is missing */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return fail(e, ISO_STEP_MKDIR, buf);
        buf[i] = c;
    }
    return 0;
}

/* Flags of the mount at path that a remount inside a user namespace must keep. */
static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return 0;
    return sv.f_flag & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME |
                        MS_NODIRATIME | MS_RELATIME);
}

#define RAW(n, a, b, c, d) iso_raw_syscall(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

/* Bring up lo in the network namespace of the calling task: 0 or -errno. */
static long lo_up_raw(void)
{
    long s = RAW(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0);
    if (s < 0)
        return s;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    long r = RAW(SYS_ioctl, s, SIOCGIFFLAGS, &ifr, 0);
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        r = RAW(SYS_ioctl, s, SIOCSIFFLAGS, &ifr, 0);
    }
    RAW(SYS_close, s, 0, 0, 0);
    return r;
}

static int lo_up(iso_error_t *e)
{
    long r = lo_up_raw();
    if (r == 0)
        return 0;
    errno = (int)-r;
    return fail(e, ISO_STEP_LO_UP, "lo");
}

/* ------------------------------------------- the network namespace beside */

/* Of all a container's parts, a new network namespace costs most to make
 * (the kernel registers its devices and sysctls: hundreds of µs), and none
 * of it depends on the child's mounts. With net_beside, a helper cloned just
 * before the child makes it: it unshares a network namespace and brings lo up
 * while the child mounts; the child joins it with setns on the helper's pidfd
 * (ISO_OP_JOIN_NET), which lets the helper end. The helper runs while the
 * caller's thread goes on: it makes raw system calls only, which leave the
 * caller's errno alone. With an interface on a bridge (netif), the helper
 * makes it before the namespace is ready to join (so /sys shows it), and
 * configures it (addresses, up, routes) while the child goes on with its
 * mounts; the child waits for that before it execs (net_wait_configured).
 * The helper ends when the caller is done with the start (net_end): until
 * then, the namespace can be opened through it (netns_out). */
enum { NET_WORKING, NET_READY, NET_FAILED, NET_DONE };

struct net_beside {
    int state;              /* NET_*; changed atomically, waited on as a futex */
    int joined;             /* the child has joined the namespace */
    int pidfd;              /* the helper's */
    pid_t parent;           /* the caller's pid */
    const iso_netif_t *netif;   /* an interface on a bridge, or NULL */
    iso_error_t err;        /* NET_FAILED: what failed */
    int configured;         /* netif: NET_WORKING, NET_READY or NET_FAILED (futex) */
    iso_error_t conf_err;   /* configured == NET_FAILED: what failed */
};

static void futex_set(int *word, int value)
{
    __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
    RAW(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, 0);
}

static void futex_wait_while(int *word, int value)
{
    while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == value)
        RAW(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, 0);
}

static void net_wake(struct net_beside *b)
{
    RAW(SYS_futex, &b->state, FUTEX_WAKE_PRIVATE, INT_MAX, 0);
}

static void net_wait_while(struct net_beside *b, int state)
{
    futex_wait_while(&b->state, state);
}

/* what failed, into e: step, -errno r, and path (then ": " and more, if given) */
static void net_helper_fail(iso_error_t *e, int step, long r, const char *path,
                            const char *more)
{
    e->step = step;
    e->err = (int)-r;
    size_t i = 0, n = sizeof e->path - 1;
    for (; *path != '\0' && i < n; path++)
        e->path[i++] = *path;
    if (more != NULL)
        for (const char *p = ": "; *p != '\0' && i < n; p++)
            e->path[i++] = *p;
    for (; more != NULL && *more != '\0' && i < n; more++)
        e->path[i++] = *more;
    e->path[i] = '\0';
}

/* The container's interface on its bridge, attached and configured (see
 * iso_netif_t), the helper being in the new namespace and nl a socket of the
 * caller's: configured is set. */
static void net_helper_configure(struct net_beside *b, long nl)
{
    const char *what = NULL;
    long r = iso_netif_attach((int)nl, b->netif);
    if (r < 0)
        net_helper_fail(&b->conf_err, ISO_STEP_NETIF, r, b->netif->host, NULL);
    else if ((r = iso_netif_configure(b->netif, &what)) < 0)
        net_helper_fail(&b->conf_err, ISO_STEP_NETIF, r, b->netif->name, what);
    futex_set(&b->configured, r < 0 ? NET_FAILED : NET_READY);
}

/* The child, before it execs: the interface is configured, or what failed. */
static int net_wait_configured(struct net_beside *b, iso_error_t *e)
{
    if (b == NULL || b->netif == NULL)
        return 0;
    futex_wait_while(&b->configured, NET_WORKING);
    if (__atomic_load_n(&b->configured, __ATOMIC_SEQ_CST) == NET_READY)
        return 0;
    *e = b->conf_err;
    return -1;
}

static int net_helper(void *arg)
{
    struct net_beside *b = arg;
    /* never outlive the caller, even waiting (SIGKILL cannot be blocked) */
    RAW(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
    if (RAW(SYS_getppid, 0, 0, 0, 0) != b->parent)
        return 0;
    /* a copy of the caller's fds, the control socket's two ends among them:
     * held here, they would keep a child that died, or a caller that did,
     * from being seen as gone */
    RAW(SYS_close_range, 3, ~0U, 0, 0);
    int done = NET_FAILED;
    /* a socket of the caller's network namespace, where the bridge is */
    long nl = b->netif != NULL ? iso_netif_socket() : -1;
    long r = RAW(SYS_unshare, CLONE_NEWNET, 0, 0, 0);
    if (r < 0)
        net_helper_fail(&b->err, ISO_STEP_UNSHARE, r, "net", NULL);
    else if ((r = lo_up_raw()) < 0)
        net_helper_fail(&b->err, ISO_STEP_LO_UP, r, "lo", NULL);
    else if (b->netif != NULL &&
             (r = nl < 0 ? nl : iso_netif_make((int)nl, b->netif,
                                               (pid_t)RAW(SYS_getpid, 0, 0, 0, 0))) < 0)
        net_helper_fail(&b->err, ISO_STEP_NETIF, r, b->netif->host, NULL);
    else
        done = NET_READY;
    int expected = NET_WORKING;
    if (!__atomic_compare_exchange_n(&b->state, &expected, done, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
        if (nl >= 0)
            RAW(SYS_close, nl, 0, 0, 0);
        return 0;           /* released before it was needed */
    }
    net_wake(b);
    if (done == NET_READY && b->netif != NULL)
        net_helper_configure(b, nl);      /* while the child mounts */
    if (nl >= 0)
        RAW(SYS_close, nl, 0, 0, 0);
    net_wait_while(b, NET_READY);     /* the namespace lives with us until net_end */
    return 0;
}

/* No longer needed: by the caller, once the start has succeeded or failed. */
static void net_release(struct net_beside *b)
{
    __atomic_store_n(&b->state, NET_DONE, __ATOMIC_SEQ_CST);
    net_wake(b);
}

static int join_net(struct net_beside *b, iso_error_t *e)
{
    if (b == NULL) {
        errno = EINVAL;
        return fail(e, ISO_STEP_SETNS, "net (no namespace made beside)");
    }
    net_wait_while(b, NET_WORKING);
    int state = __atomic_load_n(&b->state, __ATOMIC_SEQ_CST);
    if (state == NET_FAILED) {
        *e = b->err;
        return -1;
    }
    if (state != NET_READY) {
        errno = ECHILD;
        return fail(e, ISO_STEP_SETNS, "net");
    }
    if (setns(b->pidfd, CLONE_NEWNET) < 0)
        return fail(e, ISO_STEP_SETNS, "net");
    b->joined = 1;
    return 0;
}


/* The caller, for a start that failed with its interface made (by the
 * helper, b; or by the caller): the interface's pinned entries on the bridge
 * go while the namespace that holds it (the helper's, or the child's) is
 * still there, so that they cannot be a successor's. */
static void unpin_failed(const iso_netif_t *n, struct net_beside *b)
{
    if (b != NULL)          /* attached by the helper: once it is done */
        futex_wait_while(&b->configured, NET_WORKING);
    long nl = iso_netif_socket();
    if (nl >= 0) {
        iso_netif_unpin((int)nl, n);
        close((int)nl);
    }
}

/* The caller, once the start has succeeded or failed: the helper ends. */
static void net_end(struct net_beside *b, pid_t helper)
{
    net_release(b);
    while (waitpid(helper, NULL, __WALL) < 0 && errno == EINTR)
        ;
    close(b->pidfd);
}

/* ------------------------------------------------ mounts inside a root */

/* path, opened O_PATH inside root as the root's own lookup would open it:
 * no symlink or ".." leaves the root (openat2, Linux 5.6) */
static int open_in_root(int root, const char *path)
{
    struct { uint64_t flags, mode, resolve; } how = {
        O_PATH | O_CLOEXEC, 0, ISO_RESOLVE_IN_ROOT_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, root, *path != '\0' ? path : ".", &how, sizeof how);
}

static int new_fs(const iso_op_t *op, uint64_t attr);

static char *fmt_int(char *buf, long v)
{
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    for (int i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

/* The caller: an fd of the network namespace of process pid (close-on-exec),
 * or -1. */
static int open_netns(pid_t pid)
{
    char path[48], num[24];
    stpcpy(stpcpy(stpcpy(path, "/proc/"), fmt_int(num, (long)pid)), "/ns/net");
    return open(path, O_RDONLY | O_CLOEXEC);
}

#define SHADOW_MAX_ENTRIES 4096

/* A mount target missing from a read-only root (the host's, readonly=True),
 * as Docker makes one in any image: over the nearest directory that exists,
 * parent (inside root), a small tmpfs that shows what the directory holds,
 * each entry bound back (with its submounts and flags) or, a symlink, made
 * again, and takes the new entries. Only this container's mount namespace
 * sees it, and the root is never written. The tmpfs is made read-only by
 * shadow_seal once the target is made; its mount fd goes in *mnt. Returns
 * an O_PATH fd of the tmpfs's root. */
static int shadow(int root, const char *rootpath, const char *parent, int *mnt)
{
    int old = open_in_root(root, parent), list = -1, tm = -1, top = -1, err = 0;
    struct stat st;
    if (old < 0 || fstat(old, &st) < 0 || (list = openat(old, ".", O_RDONLY | O_DIRECTORY |
                                                          O_CLOEXEC)) < 0)
        goto out;
    /* the directory's mode (octal), owner and group; room for the entries */
    char data[128], *p = data, *ids, num[24];
    unsigned m = st.st_mode & 07777;
    p = stpcpy(p, "mode=0");
    for (int shift = 9; shift >= 0; shift -= 3)
        *p++ = (char)('0' + ((m >> shift) & 7));
    /* (a symlink's target longer than 127 bytes takes a page of its own) */
    p = stpcpy(stpcpy(p, ",size=32m,nr_inodes="), fmt_int(num, 2 * SHADOW_MAX_ENTRIES));
    ids = p;
    p = stpcpy(stpcpy(p, ",uid="), fmt_int(num, (long)st.st_uid));
    p = stpcpy(stpcpy(p, ",gid="), fmt_int(num, (long)st.st_gid));
    iso_op_t fs = {ISO_OP_MOUNT, "tmpfs", NULL, "tmpfs", data, 0, 0};
    if ((tm = new_fs(&fs, ISO_MOUNT_ATTR_NODEV | MS_NOSUID)) < 0) {
        *ids = '\0';           /* an owner this user namespace does not map */
        if ((tm = new_fs(&fs, ISO_MOUNT_ATTR_NODEV | MS_NOSUID)) < 0)
            goto out;
    }
    if (syscall(SYS_move_mount, tm, "", old, "", ISO_MOVE_MOUNT_EMPTY_PATHS) < 0)
        goto out;
    /* now the tmpfs (the root's own fd is of what it covers) */
    top = parent[strspn(parent, "/")] == '\0' ? open(rootpath, O_PATH | O_DIRECTORY | O_CLOEXEC)
                                              : open_in_root(root, parent);
    if (top < 0)
        goto out;
    char buf[4096], link[PATH_MAX];
    int entries = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, list, buf, sizeof buf);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        for (long at = 0; at < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type;
                     char name[]; } *d = (void *)(buf + at);
            at += d->reclen;
            const char *name = d->name;
            if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))
                continue;
            if (++entries > SHADOW_MAX_ENTRIES) {
                errno = E2BIG;
                goto out;
            }
            unsigned char type = d->type;
            struct stat es;
            if (type == DT_UNKNOWN) {
                if (fstatat(old, name, &es, AT_SYMLINK_NOFOLLOW) < 0)
                    goto out;
                type = S_ISDIR(es.st_mode) ? DT_DIR : S_ISLNK(es.st_mode) ? DT_LNK : DT_REG;
            }
            if (type == DT_LNK) {
                ssize_t k = readlinkat(old, name, link, sizeof link - 1);
                if (k < 0)
                    goto out;
                link[k] = '\0';
                if (symlinkat(link, top, name) < 0)
                    goto out;
                continue;
            }
            if ((type == DT_DIR ? mkdirat(top, name, 0755)
                                : mknodat(top, name, S_IFREG | 0644, 0)) < 0)
                goto out;
            int sub = (int)syscall(SYS_open_tree, old, name, ISO_OPEN_TREE_CLONE | O_CLOEXEC |
                                   AT_RECURSIVE | AT_SYMLINK_NOFOLLOW);
            if (sub < 0)
                goto out;
            long r = syscall(SYS_move_mount, sub, "", top, name, 0x04 /* F_EMPTY_PATH */);
            err = errno;
            close(sub);
            errno = err;
            if (r < 0)
                goto out;
        }
    }
    *mnt = tm;
    tm = -1;
    err = 0;
    goto done;
out:
    err = errno;
    if (top >= 0)
        close(top);
    top = -1;
done:
    if (tm >= 0)
        close(tm);
    if (list >= 0)
        close(list);
    if (old >= 0)
        close(old);
    errno = err;
    return top;
}

/* The shadows made for a target: read-only, as the root they stand in. */
static int shadow_seal(int *mnts, int n)
{
    int r = 0;
    uint64_t attr[4] = {ISO_MOUNT_ATTR_RDONLY, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        if (syscall(SYS_mount_setattr, mnts[i], "", AT_EMPTY_PATH, attr, sizeof attr) < 0)
            r = -1;
        close(mnts[i]);
    }
    return r;
}

/* dst (see ISO_OP_MOUNT_IN_ROOT) opened O_PATH inside its root, what is
 * missing of it made there, each piece by name relative to the fd of its
 * resolved parent: directories, and with file the last one as an empty file.
 * A dangling symlink on the way leads where a lookup would, inside the root. */
static int open_target(const char *dst, int file, iso_error_t *e)
{
    char path[PATH_MAX], link[PATH_MAX];
    size_t n = strlen(dst), r = 1 + strcspn(dst + 1, "/");
    if (n >= sizeof path) {
        errno = ENAMETOOLONG;
        return fail(e, ISO_STEP_RESOLVE, dst);
    }
    char rootpath[PATH_MAX];
    memcpy(rootpath, dst, r);
    rootpath[r] = '\0';
    int root = open(rootpath, O_PATH | O_DIRECTORY | O_CLOEXEC), links = 0, fd = -1, step = 0;
    int shadows[4], nshadows = 0;
    if (root < 0)
        return fail(e, ISO_STEP_RESOLVE, dst);
    memcpy(path, dst + r, n - r + 1);   /* the path inside the root */
    if ((fd = open_in_root(root, path)) >= 0 || errno != ENOENT)
        goto out;
walk:   /* down from the root, making the first piece missing, and on */
    for (size_t i = 0, last = 0; !last;) {
        int dir = fd < 0 ? root : fd;
        size_t start = (i += strspn(path + i, "/"));
        i += strcspn(path + i, "/");
        last = path[i + strspn(path + i, "/")] == '\0';
        char c = path[i];
        path[i] = '\0';
        if ((fd = open_in_root(root, path)) < 0 && errno == ENOENT) {
            ssize_t k = readlinkat(dir, path + start, link, sizeof link);
            if (k >= 0) {       /* dangling: what it points to takes its place */
                path[i] = c;
                size_t keep = link[0] == '/' ? 0 : start, tail = strlen(path + i);
                if (dir != root)
                    close(dir);
                errno = ++links > 40 ? ELOOP : ENAMETOOLONG;
                if (links > 40 || keep + (size_t)k + tail >= sizeof path)
                    goto out;
                memmove(path + keep + k, path + i, tail + 1);
                memcpy(path + keep, link, (size_t)k);
                fd = -1;
                goto walk;
            }
            int made = file && last ? openat(dir, path + start, O_WRONLY | O_CREAT | O_EXCL |
                                             O_NOFOLLOW | O_CLOEXEC, 0644)
                                    : mkdirat(dir, path + start, 0755);
            if (made < 0 && errno == EROFS && nshadows < 4) {
                /* a read-only root: a shadow of the parent takes the piece */
                char p0 = path[start];
                path[start] = '\0';
                int top = shadow(root, rootpath, path, &shadows[nshadows]);
                path[start] = p0;
                if (top < 0) {
                    step = ISO_STEP_MKDIR;
                } else {
                    nshadows++;
                    if (dir != root)
                        close(dir);
                    dir = top;
                    if (start == strspn(path, "/")) {
                        /* the root itself: its fd is of what the shadow covers */
                        close(root);
                        root = top;
                    }
                    made = file && last ? openat(dir, path + start, O_WRONLY | O_CREAT |
                                                 O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)
                                        : mkdirat(dir, path + start, 0755);
                }
            }
            if (step)
                ;
            else if (made < 0 && errno != EEXIST)
                step = file && last ? ISO_STEP_TOUCH : ISO_STEP_MKDIR;
            else if (file && last && made >= 0)
                close(made);
            fd = step ? -1 : open_in_root(root, path);
        }
        path[i] = c;
        if (dir != root)
            close(dir);
        if (fd < 0)
            break;
    }
out:
    close(root);
    if (nshadows > 0 && shadow_seal(shadows, nshadows) < 0 && fd >= 0) {
        close(fd);
        fd = -1;
        step = ISO_STEP_REMOUNT;
    }
    return fd >= 0 ? fd : fail(e, step ? step : ISO_STEP_RESOLVE, dst);
}

/* A new mount, detached, of op's fstype with op->data's "key=value,flag"
 * options and the MOUNT_ATTR_ flags attr. */
static int new_fs(const iso_op_t *op, uint64_t attr)
{
    char opts[512];
    size_t n = op->data != NULL ? strlen(op->data) : 0;
    int fs = (int)syscall(SYS_fsopen, op->fstype, 1 /* FSOPEN_CLOEXEC */), m = -1, err;
    if (fs < 0 || n >= sizeof opts) {
        errno = fs < 0 ? errno : EINVAL;
        goto out;
    }
    memcpy(opts, n > 0 ? op->data : "", n + 1);
    /* what /proc/mounts shows as its source, as mount(2) with the type's name */
    if (syscall(SYS_fsconfig, fs, ISO_FSCONFIG_SET_STRING, "source", op->fstype, 0) < 0)
        goto out;
    for (char *k = opts, *next; *k != '\0'; k = next) {
        size_t len = strcspn(k, ",");
        next = k + len + (k[len] != '\0');
        k[len] = '\0';
        char *v = strchr(k, '=');
        if (v != NULL)
            *v++ = '\0';
        if (len > 0 && syscall(SYS_fsconfig, fs, v != NULL ? ISO_FSCONFIG_SET_STRING
                                                          : ISO_FSCONFIG_SET_FLAG, k, v, 0) < 0)
            goto out;
    }
    if (syscall(SYS_fsconfig, fs, ISO_FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        m = (int)syscall(SYS_fsmount, fs, 1 /* FSMOUNT_CLOEXEC */, attr);
out:
    err = errno;
    if (fs >= 0)
        close(fs);
    errno = err;
    return m;
}

/* A bind's source, a tree of its own: the caller made its path real (no
 * symlink in it, see _plan); one found in it now (a component swapped since,
 * by whoever may write a directory on the way) is refused, not followed to
 * where the swap points. */
static int source_tree(const char *src, int recursive)
{
    struct { uint64_t flags, mode, resolve; } how = {
        O_PATH | O_CLOEXEC, 0, 0x04 | 0x02 /* RESOLVE_NO_SYMLINKS, RESOLVE_NO_MAGICLINKS */};
    /* a directory first: O_PATH alone would not trigger an automount there */
    how.flags |= O_DIRECTORY;
    int fd = (int)syscall(SYS_openat2, AT_FDCWD, src, &how, sizeof how);
    if (fd < 0 && errno == ENOTDIR) {
        how.flags &= ~(uint64_t)O_DIRECTORY;
        fd = (int)syscall(SYS_openat2, AT_FDCWD, src, &how, sizeof how);
    }
    if (fd < 0)
        return -1;
    int tree = (int)syscall(SYS_open_tree, fd, "", ISO_OPEN_TREE_CLONE | O_CLOEXEC | AT_EMPTY_PATH |
                            (recursive ? AT_RECURSIVE : 0));
    int err = errno;
    close(fd);
    errno = err;
    return tree;
}

static int mount_in_root(const iso_op_t *op, iso_error_t *e)
{
    /* MOUNT_ATTR_RDONLY, NOSUID, NODEV, NOEXEC have the values of the MS_ flags */
    uint64_t attr[4] = {op->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), 0, 0, 0};
    int bind = op->src != NULL, step = bind ? ISO_STEP_BIND : ISO_STEP_MOUNT, r = -1;
    int tree = bind ? source_tree(op->src, 1) : new_fs(op, attr[0]);
    if (tree < 0)
        return fail(e, step, bind ? op->src : op->dst);
    /* a bind's flags, on the tree before anyone sees it */
    if (bind && attr[0] != 0 && syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE,
                                        attr, sizeof attr) < 0) {
        if (errno != ENOSYS) {
            close(tree);
            return fail(e, ISO_STEP_REMOUNT, op->dst);
        }
        /* before Linux 5.12: src bound on itself (in this namespace alone)
         * and remounted with them, a copy of it taken, then it is undone
         * (the top mount only gets them) */
        close(tree);
        tree = -1;
        if (mount(op->src, op->src, NULL, MS_BIND | MS_REC, NULL) < 0)
            return fail(e, ISO_STEP_BIND, op->src);
        if (mount(NULL, op->src, NULL, MS_REMOUNT | MS_BIND | attr[0] | locked_flags(op->src),
                  NULL) == 0)
            tree = (int)syscall(SYS_open_tree, AT_FDCWD, op->src,
                                ISO_OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE);
        if (tree < 0)
            fail(e, ISO_STEP_REMOUNT, op->src);
        umount2(op->src, MNT_DETACH);
        if (tree < 0)
            return -1;
    }
    struct stat st;
    int file = bind && fstat(tree, &st) == 0 && !S_ISDIR(st.st_mode);
    int target = open_target(op->dst, file, e);
    if (target >= 0) {
        if (syscall(SYS_move_mount, tree, "", target, "", ISO_MOVE_MOUNT_EMPTY_PATHS) == 0)
            r = 0;
        else
            fail(e, step, op->dst);
        close(target);
    }
    close(tree);
    return r;
}

/* dst, /ROOT/PATH: PATH opened O_PATH inside /ROOT (see open_in_root), or -1 */
static int open_dst_in_root(const char *dst)
{
    char rootpath[PATH_MAX];
    size_t r = 1 + strcspn(dst + 1, "/");
    if (r >= sizeof rootpath) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(rootpath, dst, r);
    rootpath[r] = '\0';
    int root = open(rootpath, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return -1;
    int fd = open_in_root(root, dst + r + strspn(dst + r, "/")), err = errno;
    close(root);
    errno = err;
    return fd;
}

static int close_keep_errno(int fd, int r)
{
    int err = errno;
    close(fd);
    errno = err;
    return r;
}

/* A clone of the mount tree at src (a path of the setup namespace) or, with
 * src NULL, at the fd from: recursive with how >= 1, made read-only with
 * how 2; attached onto the fd target. */
static int attach_clone(const char *src, int from, int target, int how)
{
    unsigned flags = ISO_OPEN_TREE_CLONE | O_CLOEXEC | (how >= 1 ? AT_RECURSIVE : 0);
    int tree = src != NULL ? (int)syscall(SYS_open_tree, AT_FDCWD, src, flags)
                           : (int)syscall(SYS_open_tree, from, "", flags | AT_EMPTY_PATH);
    if (tree < 0)
        return -1;
    if (how == 2) {
        uint64_t attr[4] = {ISO_MOUNT_ATTR_RDONLY, 0, 0, 0};
        if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, attr,
                    sizeof attr) < 0)
            return close_keep_errno(tree, -1);
    }
    int r = (int)syscall(SYS_move_mount, tree, "", target, "", ISO_MOVE_MOUNT_EMPTY_PATHS);
    return close_keep_errno(tree, r);
}

/* ---------------------------------------------------------- plan steps */

static int run_op(const iso_op_t *op, struct net_beside *net, iso_error_t *e)
{
    switch (op->kind) {
    case ISO_OP_MOUNT:
        if (mount(op->src, op->dst, op->fstype, op->flags, op->data) < 0)
            return fail(e, ISO_STEP_MOUNT, op->dst);
        return 0;

    case ISO_OP_BIND: {
        int tree = source_tree(op->src, (op->flags & MS_REC) != 0);
        if (tree < 0)
            return fail(e, ISO_STEP_BIND, op->src);
        /* a recursive bind's flags, on every mount of the tree before it is
         * attached (the remount below reaches the top one only; before
         * Linux 5.12, that is all there is) */
        uint64_t attr[4] = {op->flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), 0, 0, 0};
        if ((op->flags & MS_REC) && attr[0] != 0 &&
            syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, attr,
                    sizeof attr) < 0 && errno != ENOSYS) {
            int err = errno;
            close(tree);
            errno = err;
            return fail(e, ISO_STEP_REMOUNT, op->dst);
        }
        int r = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, op->dst, 0x04 /* F_EMPTY_PATH */);
        int err = errno;
        close(tree);
        errno = err;
        if (r < 0)
            return fail(e, ISO_STEP_BIND, op->dst);
        unsigned long extra = op->flags & ~(unsigned long)MS_REC;
        if (extra == 0)
            return 0;
        extra |= locked_flags(op->dst);
        if (mount(NULL, op->dst, NULL, MS_REMOUNT | MS_BIND | extra, NULL) < 0)
            return fail(e, ISO_STEP_REMOUNT, op->dst);
        return 0;
    }

    case ISO_OP_RDONLY_REC: {
        uint64_t nodev = (op->flags & MS_NODEV) ? ISO_MOUNT_ATTR_NODEV : 0;
        uint64_t attr[4] = {ISO_MOUNT_ATTR_RDONLY | nodev, 0, 0, 0};
        if (syscall(SYS_mount_setattr, AT_FDCWD, op->dst, AT_RECURSIVE, attr, sizeof attr) == 0)
            return 0;
        if (errno != ENOSYS)
            return fail(e, ISO_STEP_REMOUNT, op->dst);
        /* before Linux 5.12: the top mount only */
        if (mount(NULL, op->dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | (op->flags & MS_NODEV) |
                  locked_flags(op->dst), NULL) < 0)
            return fail(e, ISO_STEP_REMOUNT, op->dst);
        return 0;
    }

    case ISO_OP_MKDIR:
        return mkdir_p(op->dst, (mode_t)op->arg, e);

    case ISO_OP_TOUCH: {
        struct stat st;
        if (lstat(op->dst, &st) == 0)
            return 0;
        int fd = open(op->dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
            return fail(e, ISO_STEP_TOUCH, op->dst);
        close(fd);
        return 0;
    }

    case ISO_OP_MKNOD: {
        mode_t mode = (mode_t)op->flags;
        if (mknod(op->dst, (mode & S_IFMT) ? mode : (S_IFCHR | mode), (dev_t)op->arg) < 0)
            return fail(e, ISO_STEP_MKNOD, op->dst);
        return 0;
    }

    case ISO_OP_SYMLINK:
        if (symlink(op->src, op->dst) < 0 && errno != EEXIST)
            return fail(e, ISO_STEP_SYMLINK, op->dst);
        return 0;

    case ISO_OP_PIVOT_ROOT:
        if (op->src != NULL) {
            if (syscall(SYS_pivot_root, op->dst, op->src) < 0)
                return fail(e, ISO_STEP_PIVOT_ROOT, op->dst);
            if (chdir("/") < 0)
                return fail(e, ISO_STEP_CHDIR, "/");
            return 0;
        }
        if (chdir(op->dst) < 0)
            return fail(e, ISO_STEP_CHDIR, op->dst);
        if (syscall(SYS_pivot_root, ".", ".") < 0)
            return fail(e, ISO_STEP_PIVOT_ROOT, op->dst);
        if (umount2(".", MNT_DETACH) < 0)
            return fail(e, ISO_STEP_PIVOT_ROOT, "old root");
        if (chdir("/") < 0)
            return fail(e, ISO_STEP_CHDIR, "/");
        return 0;

    case ISO_OP_WRITE: {
        int fd = open(op->dst, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return fail(e, ISO_STEP_WRITE, op->dst);
        size_t n = strlen(op->data);
        ssize_t w = write(fd, op->data, n);
        if (w != (ssize_t)n) {
            if (w >= 0)
                errno = EIO;
            fail(e, ISO_STEP_WRITE, op->dst);
            close(fd);
            return -1;
        }
        close(fd);
        return 0;
    }

    case ISO_OP_HOSTNAME:
        if (sethostname(op->data, strlen(op->data)) < 0)
            return fail(e, ISO_STEP_SETHOSTNAME, op->data);
        return 0;

    case ISO_OP_PERSONALITY:
        if (personality(op->arg) < 0)
            return fail(e, ISO_STEP_PERSONALITY, "");
        return 0;

    case ISO_OP_LO_UP:
        return lo_up(e);

    case ISO_OP_JOIN_NET:
        return join_net(net, e);

    case ISO_OP_MOUNT_IN_ROOT:
        return mount_in_root(op, e);

    case ISO_OP_UNSHARE:
        if (unshare((int)op->flags) < 0)
            return fail(e, ISO_STEP_UNSHARE, op->data);
        return 0;

    case ISO_OP_SETNS: {
        int fd = open(op->src, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            return fail(e, ISO_STEP_SETNS, op->src);
        int r = setns(fd, (int)op->flags), err = errno;
        close(fd);
        errno = err;
        return r < 0 ? fail(e, ISO_STEP_SETNS, op->src) : 0;
    }

    case ISO_OP_MASK: {
        /* after every mount: the target resolved inside the root, as the
         * container's own lookup would (no symlink of an image or a volume
         * leads out), and the mask attached to it by fd */
        struct stat st;
        int target = open_dst_in_root(op->dst);
        if (target < 0)
            return errno == ENOENT ? 0 : fail(e, ISO_STEP_MASK, op->dst);
        /* src, data: an empty file and directory on a read-only mount */
        int r = fstat(target, &st);
        if (r == 0)
            r = attach_clone(S_ISDIR(st.st_mode) ? op->data : op->src, -1, target, 0);
        return close_keep_errno(target, r) < 0 ? fail(e, ISO_STEP_MASK, op->dst) : 0;
    }

    case ISO_OP_RO_IF_ANY: {
        int target = open_dst_in_root(op->dst);
        if (target < 0)
            return errno == ENOENT ? 0 : fail(e, ISO_STEP_BIND, op->dst);
        /* with src: read-only as its source's mount; without, the target's
         * own tree, made read-only before it is attached over itself */
        int r = op->src != NULL ? attach_clone(op->src, -1, target, 1)
                                : attach_clone(NULL, target, target, 2);
        if (r < 0 && errno == ENOENT && op->src != NULL)
            r = 0;          /* nothing of it in this /proc */
        return close_keep_errno(target, r) < 0 ? fail(e, ISO_STEP_BIND, op->dst) : 0;
    }
    }
    errno = EINVAL;
    return fail(e, ISO_STEP_NONE, "unknown plan step");
}

/* ------------------------------------------------------------------- exec */

/* Close every fd from `from` up but those in keep (ascending), or with
 * cloexec mark them close-on-exec instead. */
static int fds_from(int from, const int *keep, size_t nkeep, int cloexec)
{
    unsigned flags = cloexec ? CLOSE_RANGE_CLOEXEC : 0, low = (unsigned)from;
    int ok = 1;
    for (size_t i = 0; i < nkeep && ok; i++) {
        if (keep[i] < (int)low)
            continue;
        if ((unsigned)keep[i] > low && syscall(SYS_close_range, low, (unsigned)keep[i] - 1, flags) < 0)
            ok = 0;
        low = (unsigned)keep[i] + 1;
    }
    if (ok && syscall(SYS_close_range, low, ~0U, flags) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL)
        return -1;
    /* before Linux 5.9 (5.11 for close-on-exec): each fd /proc/self/fd lists */
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    char buf[1024];
    long n;
    while ((n = syscall(SYS_getdents64, dir, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            unsigned short reclen = *(unsigned short *)(buf + off + 16);
            const char *name = buf + off + 19;
            int fd = 0, digits = 0, kept = 0;
            for (; *name >= '0' && *name <= '9'; name++, digits++)
                fd = fd * 10 + (*name - '0');
            for (size_t i = 0; i < nkeep; i++)
                kept |= keep[i] == fd;
            if (digits > 0 && *name == '\0' && fd >= from && fd != dir && !kept) {
                if (cloexec)
                    fcntl(fd, F_SETFD, FD_CLOEXEC);
                else
                    close(fd);
            }
            off += reclen;
        }
    }
    close(dir);
    return n < 0 ? -1 : 0;
}

static int restrict_self(const iso_exec_t *x, iso_error_t *e);

/* Everything between the plan and execve: stdio, fds, session, directory,
 * ids, umask, security. keep (if >= 0) is moved to keep_at and stays open
 * across exec. With for_init, the command's controlling terminal is left to
 * the init, which forks the command (see csrc/init.c). */
static int prepare_exec(const iso_exec_t *x, int keep, int keep_at, int for_init, iso_error_t *e)
{
    int tmp[3];
    for (int i = 0; i < 3; i++) {
        tmp[i] = -1;
        if (x->stdio[i] >= 0 && (tmp[i] = fcntl(x->stdio[i], F_DUPFD_CLOEXEC, 10)) < 0)
            return fail(e, ISO_STEP_STDIO, "stdio");
    }
    if (keep >= 0 && (keep = fcntl(keep, F_DUPFD_CLOEXEC, 10)) < 0)
        return fail(e, ISO_STEP_STDIO, "control socket");
    for (int i = 0; i < 3; i++)
        if (tmp[i] >= 0 && dup2(tmp[i], i) < 0)
            return fail(e, ISO_STEP_STDIO, "stdio");
    if (keep >= 0 && dup2(keep, keep_at) < 0)
        return fail(e, ISO_STEP_STDIO, "control socket");

    if (fds_from(3, NULL, 0, 1) < 0)
        return fail(e, ISO_STEP_CLOSE_FDS, "");
    if (keep >= 0)
        fcntl(keep_at, F_SETFD, 0);
    for (size_t i = 0; i < x->npass_fds; i++)
        if (fcntl(x->pass_fds[i], F_SETFD, 0) < 0)
            return fail(e, ISO_STEP_CLOSE_FDS, "pass_fds");

    if (x->new_session && setsid() < 0)
        return fail(e, ISO_STEP_SETSID, "");
    if (x->new_session == ISO_SESSION_TTY && !for_init && ioctl(0, TIOCSCTTY, 0) < 0)
        return fail(e, ISO_STEP_SETSID, "controlling terminal (stdin)");
    if (x->cwd != NULL) {
        if (chdir(x->cwd) < 0)
            return fail(e, ISO_STEP_CHDIR, x->cwd);
        /* a cwd reached through an fd still open here (/proc/self/fd/N) can
         * lie outside the root (runc CVE-2024-21626): the kernel then gives
         * no path for it */
        char buf[PATH_MAX];
        long n = syscall(SYS_getcwd, buf, sizeof buf);
        if (n < 0 || buf[0] != '/') {
            errno = n < 0 ? (int)-n : EACCES;
            if (errno == ENOENT)
                errno = EACCES;
            return fail(e, ISO_STEP_CHDIR, x->cwd);
        }
    }
    umask(x->umask);
    return restrict_self(x, e);
}

/* Capability sets as capset(2) takes them: two 32-bit halves. */
struct cap_header {
    uint32_t version;
    int pid;
};
struct cap_data {
    uint32_t effective, permitted, inheritable;
};

/* Ids, then capabilities, rlimits, no_new_privs and seccomp: the last steps
 * before exec, or before a fork of the caller runs its code (iso_enter). A
 * change of uid makes the memory this process may share with the caller
 * non-dumpable: the caller puts that back (iso_dumpable_release). */
static int set_seccomp(const iso_security_t *s, iso_error_t *e)
{
    struct sock_fprog prog = {(unsigned short)s->seccomp_len, (struct sock_filter *)s->seccomp};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        return fail(e, ISO_STEP_SECCOMP, "");
    return 0;
}

static int restrict_self(const iso_exec_t *x, iso_error_t *e)
{
    const iso_security_t *s = &x->sec;
    /* Without no_new_privs, only CAP_SYS_ADMIN may install a filter: then
     * first, while this process has it, as runc does (an OCI config that
     * leaves noNewPrivileges off); the filter must then allow what follows
     * (Docker's profile does). Otherwise last. */
    int early = s->seccomp != NULL && !s->no_new_privs;
    if (early && set_seccomp(s, e) < 0)
        return -1;
    if (s->restrict_caps) {
        /* the bounding set first, while CAP_SETPCAP is there; keep the
         * permitted set across the change of ids, as runc does */
        for (unsigned long cap = 0; cap < 64; cap++) {
            if ((s->caps & (1ULL << cap)) || prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
                continue;
            if (errno == EINVAL)
                break;      /* past the kernel's last capability */
            return fail(e, ISO_STEP_CAPS, "bounding set");
        }
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            return fail(e, ISO_STEP_CAPS, "keepcaps");
    }
    if (x->set_ids) {
        if (x->set_groups && syscall(SYS_setgroups, x->ngroups, x->groups) < 0)
            return fail(e, ISO_STEP_SETGROUPS, "");
        if (syscall(SYS_setresgid, x->gid, x->gid, x->gid) < 0)
            return fail(e, ISO_STEP_SETGID, "");
        if (syscall(SYS_setresuid, x->uid, x->uid, x->uid) < 0)
            return fail(e, ISO_STEP_SETUID, "");
    }
    if (s->restrict_caps) {
        /* root gets the set; another user none, as Docker gives them */
        uint64_t have = (x->set_ids && x->uid != 0) ? 0 : s->caps;
        struct cap_header h = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
        struct cap_data d[2] = {{(uint32_t)have, (uint32_t)have, 0},
                                {(uint32_t)(have >> 32), (uint32_t)(have >> 32), 0}};
        if (syscall(SYS_capset, &h, d) < 0)
            return fail(e, ISO_STEP_CAPS, "capset");
        prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
            return fail(e, ISO_STEP_CAPS, "ambient");
    }
    for (size_t i = 0; i < s->nrlimits; i++) {
        struct rlimit rl = {(rlim_t)s->rlimits[i].soft, (rlim_t)s->rlimits[i].hard};
        if (setrlimit(s->rlimits[i].resource, &rl) < 0)
            return fail(e, ISO_STEP_RLIMIT, "");
    }
    if (s->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return fail(e, ISO_STEP_NO_NEW_PRIVS, "");
    /* a fork of the caller runs the caller's binary: keep the rest of the
     * container from opening it through /proc/PID/exe (runc CVE-2019-5736) */
    if (s->nondumpable && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return fail(e, ISO_STEP_CAPS, "dumpable");
    if (s->seccomp != NULL && !early && set_seccomp(s, e) < 0)
        return -1;
    return 0;
}

/* Where this process's command line and environment strings lie, noted by
 * the caller once (iso_note_environ): a fork that goes on running the
 * caller's code in a container zeroes them, so that its /proc/PID/cmdline
 * and environ, which show that memory (cmdline to anyone), hold nothing of
 * the caller's. */
static uintptr_t area_start[2], area_end[2];

void iso_note_environ(void)
{
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return;
    p += 2;                                 /* at field 3 */
    for (int field = 3; field < 48 && p != NULL; field++)
        if ((p = strchr(p, ' ')) != NULL)
            p++;
    if (p == NULL)
        return;
    for (int i = 0; i < 2; i++) {           /* arg_start, arg_end, env_start, env_end */
        unsigned long long start = strtoull(p, &p, 10);
        unsigned long long stop = strtoull(p, &p, 10);
        if (start > 0 && stop > start && stop - start < (1ULL << 24)) {
            area_start[i] = (uintptr_t)start;
            area_end[i] = (uintptr_t)stop;
        }
    }
}

int iso_enter(const iso_exec_t *x, const int *keep, size_t nkeep, iso_error_t *e)
{
    if (fds_from(3, keep, nkeep, 0) < 0)
        return fail(e, ISO_STEP_CLOSE_FDS, "");
    if (x->sec.nondumpable)
        iso_forget_environ();
    return prepare_exec(x, -1, -1, 0, e);
}

void iso_forget_environ(void)
{
    for (int i = 0; i < 2; i++)
        if (area_end[i] > area_start[i])
            memset((void *)area_start[i], 0, area_end[i] - area_start[i]);
}

int iso_close_fds(const int *keep, size_t nkeep)
{
    return fds_from(3, keep, nkeep, 0);
}

/* -------------------------------------------------------------- container */

/* The init's command line (see csrc/init.c): made by the caller before the
 * clone, since nothing is allocated after it. */
struct init_args {
    char fd[24];
    char session[4];
    char **argv;            /* malloc'd: free with init_args_free */
};


/* mode "serve", "wait", "oci": the init alone; "run", "join": with x's command */
static int init_args_make(struct init_args *a, const char *mode, int fd, const iso_exec_t *x,
                          iso_error_t *e)
{
    int command = mode[0] == 'r' || mode[0] == 'j';
    size_t n = 0;
    while (command && x->argv[n] != NULL)
        n++;
    a->argv = calloc(7 + n, sizeof *a->argv);
    if (a->argv == NULL)
        return fail(e, ISO_STEP_EXEC_INIT, "argv");
    fmt_int(a->fd, fd);
    fmt_int(a->session, x->new_session);
    char **v = a->argv;
    *v++ = "isolate-init";
    *v++ = (char *)mode;
    *v++ = a->fd;
    if (mode[0] == 'w' || mode[0] == 'o')
        *v++ = a->session;
    if (command) {
        *v++ = a->session;
        *v++ = (char *)x->file;
        *v++ = (char *)(x->path != NULL ? x->path : "");
        for (size_t i = 0; i < n; i++)
            *v++ = x->argv[i];
    }
    *v = NULL;
    return 0;
}

static void init_args_free(struct init_args *a)
{
    free(a->argv);
    a->argv = NULL;
}

struct start_ctx {
    const iso_container_t *c;
    int ctl;                /* the child's end of the control socket */
    int ctl_at;             /* where the init finds it */
    char *const *init_argv;
    struct net_beside *net; /* with net_beside */
    int caller_pidfd;       /* the caller's own, or -1 */
};

static int container_child(void *arg)
{
    struct start_ctx *s = arg;
    const iso_container_t *c = s->c;
    int ctl = s->ctl;
    iso_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.kind = ISO_MSG_ERROR;

    reset_signals_in_child();
    /* Until it execs, the child ends with the caller (whose thread waits in
     * iso_container_start meanwhile): what it waits for (the caller's word,
     * the helper's work, which ends with the caller) would never come, and
     * copies of the caller's fds would keep what they hold (a spare's
     * namespace, control sockets) open. Unless the caller ended already. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (s->caller_pidfd >= 0) {
        struct pollfd p = {s->caller_pidfd, POLLIN, 0};
        if (poll(&p, 1, 0) != 0)
            _exit(127);
    }
    if (c->cgroup_fd >= 0 && into_cgroup_fallback()) {
        int fd = openat(c->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            fail(&msg.error, ISO_STEP_WRITE, "cgroup.procs");
            goto out;
        }
        close(fd);
    }
    if (c->after_clone != NULL || (c->netif != NULL && !c->net_beside)) {
        char go;
        if (recv(ctl, &go, 1, 0) != 1)      /* the caller's word to go on */
            _exit(127);
        /* the maps are written: become the namespace's root (credentials
         * made at clone still hold the caller's ids, perhaps unmapped) */
        if ((c->clone_flags & CLONE_NEWUSER) &&
            (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)) {
            fail(&msg.error, ISO_STEP_SETUID, "0 in the user namespace");
            goto out;
        }
    }
    if (c->netif != NULL && !c->net_beside) {
        /* made by the caller after clone; configured before the plan, while
         * /proc is the host's and writable (its IPv6 settings) */
        const char *what = NULL;
        long r = iso_netif_configure(c->netif, &what);
        if (r < 0) {
            errno = (int)-r;
            fail(&msg.error, ISO_STEP_NETIF, what);
            goto out;
        }
    }
    umask(0);
    for (size_t i = 0; i < c->nops; i++)
        if (run_op(&c->ops[i], s->net, &msg.error) < 0)
            goto out;
    if (s->net != NULL && !s->net->joined) {
        errno = EINVAL;
        fail(&msg.error, ISO_STEP_SETNS, "net (the plan never joins it)");
        goto out;
    }
    if (net_wait_configured(s->net, &msg.error) < 0)
        goto out;

    if (prepare_exec(&c->x, ctl, s->ctl_at, 1, &msg.error) < 0)
        goto out;
    ctl = s->ctl_at;

    /* In run mode the init forks the command: nothing in the container ever
     * runs beside this process, which shares the caller's memory. */
    char *envp[] = {NULL};
    /* the init outlives the thread that started it (its control socket
     * tells it when the caller has gone) */
    prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    unblock_all_in_child();
    syscall(SYS_execveat, c->init_fd, "", s->init_argv, c->run ? c->x.envp : envp,
            AT_EMPTY_PATH);
    fail(&msg.error, ISO_STEP_EXEC_INIT, "isolate-init");
out:
    send(ctl, &msg, sizeof msg, MSG_NOSIGNAL);
    _exit(127);
}

static int fd_above_stdio(int fd)
{
    if (fd >= 3)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return n;
}

/* ------------------------------------------------------------ dumpable */

static pthread_mutex_t dump_lock = PTHREAD_MUTEX_INITIALIZER;
static int dump_holders, dump_saved;

void iso_dumpable_hold(void)
{
    pthread_mutex_lock(&dump_lock);
    if (dump_holders++ == 0)
        dump_saved = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    pthread_mutex_unlock(&dump_lock);
}

void iso_dumpable_release(void)
{
    pthread_mutex_lock(&dump_lock);
    if (--dump_holders == 0 && (dump_saved == 0 || dump_saved == 1) &&
        prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dump_saved)
        prctl(PR_SET_DUMPABLE, dump_saved, 0, 0, 0);
    pthread_mutex_unlock(&dump_lock);
}

int iso_container_start(const iso_container_t *c, pid_t *pid_out, int *pidfd_out, int *ctl_out,
                        iso_msg_t *first, iso_error_t *err)
{
    if ((c->net_beside && (!ISO_NET_BESIDE || (c->clone_flags & CLONE_NEWNET))) ||
        (c->netns_fd >= 0 && !c->net_beside)) {
        errno = EINVAL;
        return fail(err, ISO_STEP_CLONE, "net_beside");
    }
    /* the init's control socket: the first fd from 3 that pass_fds leaves free */
    int at = 3;
    for (size_t i = 0; i < c->x.npass_fds; i++)
        if (c->x.pass_fds[i] == at) {
            at++;
            i = (size_t)-1;
        }
    struct init_args args;
    /* run without a file: the command comes later (wait) */
    const char *mode = !c->run ? "serve" : c->run == ISO_RUN_GATED ? "oci"
                       : c->x.file[0] ? "run" : "wait";
    if (init_args_make(&args, mode, at, &c->x, err) < 0)
        return -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        init_args_free(&args);
        return fail(err, ISO_STEP_SOCKET, "control socket");
    }
    sv[0] = fd_above_stdio(sv[0]);
    sv[1] = fd_above_stdio(sv[1]);
    /* the child's and the network helper's */
    char *stack = stack_alloc(2 * STACK_SIZE);
    if (stack == NULL) {
        fail(err, ISO_STEP_CLONE, "stack");
        close(sv[0]);
        close(sv[1]);
        init_args_free(&args);
        return -1;
    }

    struct start_ctx s;
    memset(&s, 0, sizeof s);
    s.c = c;
    s.ctl = sv[1];
    s.ctl_at = at;
    s.init_argv = args.argv;
    s.caller_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);    /* -1 before Linux 5.3 */
    struct net_beside net;
    memset(&net, 0, sizeof net);
    net.state = NET_WORKING;
    net.pidfd = -1;
    net.parent = getpid();
    net.netif = c->netif;
    pid_t helper = -1;
    int pidfd = -1, netns = -1, made = 0;
    pid_t pid = -1;
    sigset_t old;
    iso_dumpable_hold();
    block_all(&old);
    if (c->net_beside && c->netns_fd >= 0) {
        net.state = NET_READY;      /* made ahead: joined as it is */
        net.pidfd = c->netns_fd;
        s.net = &net;
    } else if (c->net_beside) {
        helper = clone_vm(net_helper, &net, stack + STACK_SIZE, STACK_SIZE, 0, &net.pidfd,
                          -1, 0);
        if (helper < 0) {
            fail(err, ISO_STEP_CLONE, "network namespace helper");
            restore_mask(&old);
            close(sv[1]);
            goto failed;
        }
        s.net = &net;
    }
    pid = clone_vm(container_child, &s, stack, STACK_SIZE, c->clone_flags, &pidfd,
                   c->cgroup_fd, SIGCHLD);
    int clone_errno = errno;
    restore_mask(&old);
    close(sv[1]);
    if (s.caller_pidfd >= 0)
        close(s.caller_pidfd);      /* the child has its copy */
    if (pid < 0) {
        errno = clone_errno;
        fail(err, ISO_STEP_CLONE, "");
        goto failed;
    }

    if (c->after_clone != NULL && c->after_clone(pid, c->after_clone_arg) != 0) {
        if (err->step == 0)
            fail(err, ISO_STEP_CLONE, "after clone");
        goto failed;
    }
    if (c->netif != NULL && c->netns_fd >= 0) {
        /* made ahead, its bridge end down: up now, while the child mounts */
        long nl = iso_netif_socket();
        long r = nl < 0 ? nl : iso_netif_up((int)nl, c->netif);
        if (nl >= 0)
            close((int)nl);
        if (r < 0)
            net_helper_fail(&net.conf_err, ISO_STEP_NETIF, r, c->netif->host, "up");
        futex_set(&net.configured, r < 0 ? NET_FAILED : NET_READY);
    }
    if (c->netif != NULL && !c->net_beside) {
        long nl = iso_netif_socket();
        long r = nl < 0 ? nl : iso_netif_make((int)nl, c->netif, pid);
        if (r == 0) {
            made = 1;
            r = iso_netif_attach((int)nl, c->netif);
        }
        if (nl >= 0)
            close((int)nl);
        if (r < 0) {
            errno = (int)-r;
            fail(err, ISO_STEP_NETIF, c->netif->host);
            goto failed;
        }
        if (c->netns_out != NULL)   /* the child waits: its namespace is there */
            netns = open_netns(pid);
    }
    if ((c->after_clone != NULL || (c->netif != NULL && !c->net_beside)) &&
        send(sv[0], "g", 1, MSG_NOSIGNAL) != 1) {
        fail(err, ISO_STEP_CLONE, "after clone");
        goto failed;
    }

    /* The first message comes from the init once it runs (in run mode, once
     * the command has exec'd), or when a step failed; end of file means the
     * child died. */
    ssize_t n;
    do
        n = recv(sv[0], first, sizeof *first, 0);
    while (n < 0 && errno == EINTR);

    if (n == (ssize_t)sizeof *first && first->kind == ISO_MSG_READY) {
        if (helper > 0 && c->netif != NULL && c->netns_out != NULL)
            netns = open_netns(helper);     /* it waits for net_end */
        if (helper > 0)
            net_end(&net, helper);
        if (c->netns_out != NULL)
            *c->netns_out = netns;
        iso_dumpable_release();
        stack_free(stack, 2 * STACK_SIZE);
        init_args_free(&args);
        *pid_out = pid;
        *pidfd_out = pidfd;
        *ctl_out = sv[0];
        return 0;
    }
    if (n == (ssize_t)sizeof *first && first->kind == ISO_MSG_ERROR) {
        *err = first->error;
    } else {
        errno = n < 0 ? errno : ECHILD;
        fail(err, ISO_STEP_INIT, "");
    }
failed:
    if (c->netif != NULL && c->netns_fd < 0 &&
        (made || (helper > 0 && __atomic_load_n(&net.state, __ATOMIC_SEQ_CST) == NET_READY)))
        unpin_failed(c->netif, helper > 0 ? &net : NULL);
    if (pid > 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    if (helper > 0)
        net_end(&net, helper);
    iso_dumpable_release();
    stack_free(stack, 2 * STACK_SIZE);
    init_args_free(&args);
    if (pidfd >= 0)
        close(pidfd);
    if (netns >= 0)
        close(netns);
    close(sv[0]);
    return -1;
}

/* ------------------------------------------------------------ fork into */

/* --------------------------------------------------------------- hand over */

/* A child that shares this process's memory waits, on a stack of its own,
 * until this process has left that memory (by exec or exit: the kernel then
 * clears the word set_tid_address named, and wakes it), and then continues
 * this process's call of iso_hand_over as its own, on the stack this process
 * left: it returns 0 there, with the memory to itself. A fork that copies no
 * page table. The stack is static: one hand-over at a time per memory, which
 * the callers (a fork of their own, single-threaded) guarantee; outside the
 * main stack, so the longjmp goes up it. */
struct hand_over {
    jmp_buf jb;
    volatile int word;
};

static char hand_over_stack[32768] __attribute__((aligned(64)));

static int hand_over_resume(void *arg)
{
    struct hand_over *h = arg;
    while (h->word != 0)
        syscall(SYS_futex, &h->word, FUTEX_WAIT, 1, NULL, NULL, 0);
    longjmp(h->jb, 1);
}

pid_t iso_hand_over(unsigned long flags, void (*leave)(void *, pid_t), void *arg,
                    iso_error_t *err)
{
    struct hand_over h;
    h.word = 1;
    if (setjmp(h.jb))
        return 0;               /* the child, alone in the memory now */
    syscall(SYS_set_tid_address, &h.word);
    pid_t pid = clone(hand_over_resume, hand_over_stack + sizeof hand_over_stack,
                      (int)(CLONE_VM | flags | SIGCHLD), &h);
    if (pid < 0) {
        syscall(SYS_set_tid_address, NULL);
        return fail(err, ISO_STEP_CLONE, "hand over");
    }
    leave(arg, pid);
    for (;;)
        syscall(SYS_exit, 125);
}

/* The first process of a pool's container, once its plan is walked: it
 * becomes the container's init (adopt mode), keeping only ctl, and the child
 * it hands over to goes on as the container's second process. */
struct adopt {
    int ctl, init_fd;
};

static void exec_adopting_init(void *arg, pid_t child)
{
    struct adopt *a = arg;
    char ctl[16], pid[16];
    fmt_int(ctl, a->ctl);
    fmt_int(pid, child);
    char *argv[] = {"isolate-init", "adopt", ctl, pid, NULL};
    char *envp[] = {NULL};
    int keep[2] = {a->ctl < a->init_fd ? a->ctl : a->init_fd,
                   a->ctl < a->init_fd ? a->init_fd : a->ctl};
    /* the init needs no privilege: none survives its exec */
    for (int cap = 0; cap < 64; cap++)
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (iso_close_fds(keep, 2) == 0 && fcntl(a->ctl, F_SETFD, 0) == 0)
        syscall(SYS_execveat, a->init_fd, "", argv, envp, AT_EMPTY_PATH);
}

pid_t iso_fork_container(unsigned long clone_flags, int pdeathsig, const iso_op_t *ops,
                         size_t nops, int adopt_ctl, const iso_netif_t *netif,
                         iso_error_t *err)
{
    struct adopt a = {adopt_ctl, -1};
    if (adopt_ctl >= 0 && (a.init_fd = iso_init_memfd(err)) < 0)
        return -1;
    /* with netif: the child waits for its interface, made here after the fork */
    int sync[2] = {-1, -1};
    if (netif != NULL && pipe2(sync, O_CLOEXEC) < 0)
        return fail(err, ISO_STEP_NETIF, "pipe");
    /* a fork (no CLONE_VM, no new stack): the child returns here, on its copy */
    pid_t pid = (pid_t)syscall(SYS_clone, clone_flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) {
        int e = errno;
        if (netif != NULL) {
            close(sync[0]);
            close(sync[1]);
        }
        errno = e;
        return fail(err, ISO_STEP_CLONE, "");
    }
    if (pid > 0) {
        if (netif == NULL)
            return pid;
        close(sync[0]);
        long nl = iso_netif_socket();
        long r = nl < 0 ? nl : iso_netif_make((int)nl, netif, pid);
        if (r == 0)
            r = iso_netif_attach((int)nl, netif);
        if (nl >= 0)
            close((int)nl);
        if (r == 0 && write(sync[1], "g", 1) != 1)
            r = -errno;
        close(sync[1]);
        if (r < 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
                ;
            errno = (int)-r;
            return fail(err, ISO_STEP_NETIF, netif->host);
        }
        return pid;
    }
    if (pdeathsig)
        prctl(PR_SET_PDEATHSIG, pdeathsig);
    memset(err, 0, sizeof *err);
    if (netif != NULL) {
        char go = 0;
        close(sync[1]);
        while (read(sync[0], &go, 1) < 0 && errno == EINTR)
            ;
        close(sync[0]);
        if (go != 'g')
            _exit(127);
    }
    if (netif != NULL) {        /* before the plan: /proc is the host's, writable */
        const char *what = NULL;
        long r = iso_netif_configure(netif, &what);
        if (r < 0) {
            errno = (int)-r;
            fail(err, ISO_STEP_NETIF, what);
            return 0;
        }
    }
    mode_t old = umask(0);
    for (size_t i = 0; i < nops; i++)
        if (run_op(&ops[i], NULL, err) < 0)
            break;
    umask(old);
    if (adopt_ctl >= 0 && err->step == 0 && iso_hand_over(0, exec_adopting_init, &a, err) == 0)
        memset(err, 0, sizeof *err);
    return 0;
}

/* ------------------------------------------------------------------- join */

struct exec_ctx {
    int pidfd;
    unsigned long nsflags;
    const iso_exec_t *x;
    const iso_op_t *pre;
    size_t npre;
    int errfd;
    int init_fd;
    char *const *init_argv;
};

/* The caller's child: it joins the container but not its PID namespace (it
 * is not visible there), takes x's stdio, fds, directory, ids and security,
 * and execs the sealed init, which forks the command into the PID namespace.
 * It shares the caller's memory until that exec, and only fds meant for the
 * command outlive it. */
static int exec_intermediate(void *arg)
{
    struct exec_ctx *s = arg;
    iso_report_t r;
    memset(&r, 0, sizeof r);
    reset_signals_in_child();

    for (size_t i = 0; i < s->npre; i++)
        if (run_op(&s->pre[i], NULL, &r.error) < 0)
            goto out;
    if (setns(s->pidfd, (int)s->nsflags) < 0) {
        fail(&r.error, ISO_STEP_SETNS, "container");
        goto out;
    }
    if (prepare_exec(s->x, -1, -1, 1, &r.error) < 0)
        goto out;
    if (fcntl(s->errfd, F_SETFD, 0) < 0) {      /* the init's report pipe */
        fail(&r.error, ISO_STEP_CLOSE_FDS, "report pipe");
        goto out;
    }
    syscall(SYS_execveat, s->init_fd, "", s->init_argv, s->x->envp, AT_EMPTY_PATH);
    fail(&r.error, ISO_STEP_EXEC_INIT, "isolate-init");
out:
    (void)!write(s->errfd, &r, sizeof r);
    _exit(127);
}

pid_t iso_exec_in(int pidfd, unsigned long nsflags, const iso_exec_t *x, const iso_op_t *pre,
                  size_t npre, int *status_fd, iso_error_t *err)
{
    int init_fd = iso_init_memfd(err);
    if (init_fd < 0)
        return -1;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return fail(err, ISO_STEP_SOCKET, "pipe");
    p[0] = fd_above_stdio(p[0]);
    p[1] = fd_above_stdio(p[1]);
    struct init_args args;
    if (init_args_make(&args, "join", p[1], x, err) < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    char *stack = stack_alloc(STACK_SIZE);
    if (stack == NULL) {
        fail(err, ISO_STEP_CLONE, "stack");
        close(p[0]);
        close(p[1]);
        init_args_free(&args);
        return -1;
    }
    struct exec_ctx s = {pidfd, nsflags, x, pre, npre, p[1], init_fd, args.argv};

    /* CLONE_VFORK: back here once the child has exec'd the init (or ended).
     * Joining a time namespace needs a process with its own memory (the
     * kernel refuses EUSERS): then the child is a plain fork, costlier for a
     * large caller. Joining a user namespace, or another uid, changes the
     * child's credentials, which makes the memory it shares with us
     * non-dumpable: iso_dumpable_release puts it back. */
    unsigned long share = (nsflags & CLONE_NEWTIME) ? 0 : CLONE_VM;
    sigset_t old;
    iso_dumpable_hold();
    block_all(&old);
    pid_t mid = clone(exec_intermediate, stack + STACK_SIZE, (int)(share | CLONE_VFORK | SIGCHLD), &s);
    int clone_errno = errno;
    restore_mask(&old);
    iso_dumpable_release();
    close(p[1]);
    if (mid < 0) {
        errno = clone_errno;
        fail(err, ISO_STEP_CLONE, "");
        stack_free(stack, STACK_SIZE);
        init_args_free(&args);
        close(p[0]);
        return -1;
    }
    stack_free(stack, STACK_SIZE);
    init_args_free(&args);
    int status;
    while (waitpid(mid, &status, __WALL) < 0 && errno == EINTR)
        ;

    /* The first report: the command's pid, or an error of the child's or of
     * the init's. The command's exec is waited for by iso_exec_finish. */
    iso_report_t r;
    ssize_t n;
    do
        n = read(p[0], &r, sizeof r);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof r && r.error.step == 0 && r.pid > 0) {
        *status_fd = p[0];
        return r.pid;
    }
    close(p[0]);
    if (n == (ssize_t)sizeof r && r.error.step != 0) {
        *err = r.error;
    } else {
        errno = ECHILD;
        fail(err, ISO_STEP_INIT, "");
    }
    return -1;
}

int iso_exec_finish(int status_fd, pid_t child, iso_error_t *err)
{
    iso_report_t r;
    ssize_t n;
    do
        n = read(status_fd, &r, sizeof r);
    while (n < 0 && errno == EINTR);
    close(status_fd);
    if (n != (ssize_t)sizeof r || r.error.step == 0)
        return 0;       /* end of file: it has exec'd (or was killed) */
    *err = r.error;
    int status;
    while (waitpid(child, &status, __WALL) < 0 && errno == EINTR)
        ;
    return -1;
}

/* ------------------------------------------------------------------- init */

/* The init program, linked in at build time (see setup.py). */
#ifndef ISO_INIT_PATH
#error "ISO_INIT_PATH must name the built init program"
#endif
extern const unsigned char iso_init_blob[];
extern const unsigned char iso_init_blob_end[];
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".globl iso_init_blob\n"
        ".hidden iso_init_blob\n"
        "iso_init_blob:\n"
        ".incbin \"" ISO_INIT_PATH "\"\n"
        ".globl iso_init_blob_end\n"
        ".hidden iso_init_blob_end\n"
        "iso_init_blob_end:\n"
        ".previous\n");

static int init_fd = -1;
static dev_t init_dev;
static ino_t init_ino;

/* A sealed memfd, so that no process in a container can write the program
 * that the next container's init runs (runc CVE-2019-5736); mode 0555 and,
 * where this process may, immutable, and checked at each use: a container's
 * root may own it, and must not spoil it for the next containers. Made
 * again where its fd was closed (a fork that closed every fd, a daemon). */
int iso_init_memfd(iso_error_t *err)
{
    struct stat st;
    if (init_fd >= 0) {
        if (fstat(init_fd, &st) == 0 && st.st_dev == init_dev && st.st_ino == init_ino) {
            if ((st.st_mode & 07777) == 0555 || fchmod(init_fd, 0555) == 0)
                return init_fd;
            return fail(err, ISO_STEP_MEMFD, "isolate-init");
        }
        init_fd = -1;       /* its number is someone else's now */
    }
    int fd = (int)syscall(SYS_memfd_create, "isolate-init",
                          MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL)
        fd = (int)syscall(SYS_memfd_create, "isolate-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return fail(err, ISO_STEP_MEMFD, "isolate-init");
    const unsigned char *p = iso_init_blob;
    size_t left = (size_t)(iso_init_blob_end - iso_init_blob);
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fail(err, ISO_STEP_MEMFD, "isolate-init");
            close(fd);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
        fail(err, ISO_STEP_MEMFD, "seal isolate-init");
        close(fd);
        return -1;
    }
    int flags = 0;
    if (fchmod(fd, 0555) < 0) {
        fail(err, ISO_STEP_MEMFD, "isolate-init");
        close(fd);
        return -1;
    }
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
        flags |= FS_IMMUTABLE_FL;
        ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    if (high < 0 || fstat(high, &st) < 0) {
        fail(err, ISO_STEP_MEMFD, "isolate-init");
        if (high >= 0)
            close(high);
        return -1;
    }
    init_dev = st.st_dev;
    init_ino = st.st_ino;
    init_fd = high;
    return init_fd;
}
