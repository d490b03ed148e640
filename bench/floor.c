/* The floor: the fewest syscalls that make the container isolate.run makes
 * (same namespaces, overlay root over a tmpfs, /proc, /sys, a /dev tmpfs with
 * its nodes, /dev/pts, /dev/shm, the masked and read-only /proc and /sys
 * paths, pivot_root, hostname, lo up, Docker's capabilities, no_new_privs, and
 * the seccomp filter isolate builds, when floor_seccomp was given it),
 * then exec /bin/true as PID 1 and wait. No init, no error reporting, no
 * Python. As isolate does, it makes the network namespace beside the child:
 * a helper sharing its memory unshares it and brings lo up while the child
 * mounts, and the child joins it before mounting /sys.
 *
 * Built as a shared library for ctypes (floor_run) by bench/conftest.py, or
 * as a program with -DFLOOR_MAIN:  floor ROOTFS [N] [--no-net]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

static char lowerdir[4200];
static int with_net;
static const void *bpf;         /* the seccomp filter isolate loads, or NULL */
static size_t bpf_len;

#define CHECK(x) do { if ((x) < 0) _exit(100 + __LINE__ % 100); } while (0)

/* the network namespace beside: 0 working, 1 ready, 2 failed, 3 done */
static int net_state;
static int helper_pidfd = -1;

static void futex_wait_while(int *p, int v)
{
    while (__atomic_load_n(p, __ATOMIC_SEQ_CST) == v)
        syscall(SYS_futex, p, FUTEX_WAIT_PRIVATE, v, NULL);
}

static void set_state(int v)
{
    __atomic_store_n(&net_state, v, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &net_state, FUTEX_WAKE_PRIVATE, 1);
}

static int lo_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int r = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        r = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return r;
}

static int net_helper(void *arg)
{
    (void)arg;
    int ok = unshare(CLONE_NEWNET) == 0 && lo_up() == 0;
    int working = 0;
    if (!__atomic_compare_exchange_n(&net_state, &working, ok ? 1 : 2, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
        return 0;       /* no longer wanted */
    syscall(SYS_futex, &net_state, FUTEX_WAKE_PRIVATE, 1);
    futex_wait_while(&net_state, 1);
    return 0;
}

static void mask(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        CHECK(mount(S_ISDIR(st.st_mode) ? "/mask/dir" : "/mask/file", path, NULL, MS_BIND, NULL));
}

static int child(void *arg)
{
    (void)arg;
    CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    CHECK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"));
    CHECK(mkdir("/tmp/newroot", 0755));
    CHECK(mkdir("/tmp/oldroot", 0755));
    CHECK(syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot"));
    CHECK(chdir("/"));
    CHECK(mkdir("/upper", 0755));
    CHECK(mkdir("/work", 0755));
    CHECK(mount("overlay", "/newroot", "overlay", 0, lowerdir));
    CHECK(mount("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    CHECK(mount("tmpfs", "/newroot/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"));
    static const struct { const char *p; int ma, mi; } devs[] = {
        {"/newroot/dev/null", 1, 3}, {"/newroot/dev/zero", 1, 5}, {"/newroot/dev/full", 1, 7},
        {"/newroot/dev/random", 1, 8}, {"/newroot/dev/urandom", 1, 9}, {"/newroot/dev/tty", 5, 0}};
    umask(0);
    for (unsigned i = 0; i < sizeof devs / sizeof devs[0]; i++)
        CHECK(mknod(devs[i].p, S_IFCHR | 0666, makedev(devs[i].ma, devs[i].mi)));
    CHECK(mkdir("/newroot/dev/pts", 0755));
    CHECK(mount("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5"));
    CHECK(mkdir("/newroot/dev/shm", 01777));
    CHECK(mount("shm", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=1777,size=65536k"));
    CHECK(symlink("/proc/self/fd", "/newroot/dev/fd"));
    CHECK(symlink("/proc/self/fd/0", "/newroot/dev/stdin"));
    CHECK(symlink("/proc/self/fd/1", "/newroot/dev/stdout"));
    CHECK(symlink("/proc/self/fd/2", "/newroot/dev/stderr"));
    CHECK(symlink("pts/ptmx", "/newroot/dev/ptmx"));
    static const char *const masked_proc[] = {
        "/newroot/proc/acpi", "/newroot/proc/asound", "/newroot/proc/kcore", "/newroot/proc/keys",
        "/newroot/proc/latency_stats", "/newroot/proc/timer_list", "/newroot/proc/timer_stats",
        "/newroot/proc/sched_debug", "/newroot/proc/scsi", "/newroot/proc/interrupts"};
    static const char *const masked_sys[] = {"/newroot/sys/firmware",
                                             "/newroot/sys/devices/virtual/powercap"};
    static const char *const readonly[] = {
        "/newroot/proc/bus", "/newroot/proc/fs", "/newroot/proc/irq", "/newroot/proc/sys",
        "/newroot/proc/sysrq-trigger"};
    const unsigned long ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    CHECK(mkdir("/mask", 0555));
    CHECK(mkdir("/mask/dir", 0555));
    CHECK(close(open("/mask/file", O_WRONLY | O_CREAT, 0644)));
    CHECK(mount("/mask", "/mask", NULL, MS_BIND, NULL));
    CHECK(mount(NULL, "/mask", NULL, MS_REMOUNT | MS_BIND | ro, NULL));
    for (unsigned i = 0; i < sizeof masked_proc / sizeof masked_proc[0]; i++)
        mask(masked_proc[i]);
    CHECK(mkdir("/roproc", 0555));
    CHECK(mount("/newroot/proc", "/roproc", NULL, MS_BIND, NULL));
    CHECK(mount(NULL, "/roproc", NULL, MS_REMOUNT | MS_BIND | ro, NULL));
    for (unsigned i = 0; i < sizeof readonly / sizeof readonly[0]; i++) {
        char src[64];
        snprintf(src, sizeof src, "/roproc%s", readonly[i] + strlen("/newroot/proc"));
        if (mount(src, readonly[i], NULL, MS_BIND | MS_REC, NULL) < 0 && errno != ENOENT)
            _exit(99);
    }
    if (with_net) {     /* join the namespace made beside */
        futex_wait_while(&net_state, 0);
        if (net_state != 1)
            _exit(98);
        CHECK(setns(helper_pidfd, CLONE_NEWNET));
        set_state(3);
    }
    CHECK(mount("sysfs", "/newroot/sys", "sysfs", ro, NULL));
    for (unsigned i = 0; i < sizeof masked_sys / sizeof masked_sys[0]; i++)
        mask(masked_sys[i]);
    CHECK(chdir("/newroot"));
    CHECK(syscall(SYS_pivot_root, ".", "."));
    CHECK(umount2(".", MNT_DETACH));
    CHECK(chdir("/"));
    CHECK(sethostname("floor", 5));
    /* Docker's 14 capabilities, then no_new_privs */
    const unsigned long long keep = 0xa80425fbULL;
    for (int cap = 0; cap <= 40; cap++)
        if (!(keep & (1ULL << cap)))
            CHECK(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0));
    struct { unsigned version; int pid; } h = {0x20080522, 0};
    struct { unsigned eff, prm, inh; } d[2] = {{(unsigned)keep, (unsigned)keep, 0}, {0, 0, 0}};
    CHECK(syscall(SYS_capset, &h, d));
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    if (bpf != NULL) {
        struct sock_fprog prog = {(unsigned short)(bpf_len / 8), (struct sock_filter *)bpf};
        CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0));
    }
    char *argv[] = {"/bin/true", NULL};
    char *envp[] = {NULL};
    execve("/bin/true", argv, envp);
    _exit(127);
}

/* The seccomp filter (struct sock_filter[], len bytes) the next runs load. */
void floor_seccomp(const void *filter, size_t len)
{
    bpf = filter;
    bpf_len = len;
}

/* One container running /bin/true; returns its exit status, or -1. */
int floor_run(const char *rootfs, int net)
{
    static char *stack, *helper_stack;
    if (stack == NULL) {
        stack = (char *)malloc(1 << 16) + (1 << 16);
        helper_stack = (char *)malloc(1 << 16) + (1 << 16);
    }
    snprintf(lowerdir, sizeof lowerdir, "lowerdir=/oldroot%s,upperdir=/upper,workdir=/work", rootfs);
    with_net = net;
    pid_t helper = -1;
    if (net) {
        net_state = 0;
        helper = clone(net_helper, helper_stack, CLONE_VM | CLONE_PIDFD, NULL, &helper_pidfd);
        if (helper < 0)
            return -1;
    }
    int flags = CLONE_VM | CLONE_VFORK | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
                CLONE_NEWCGROUP | SIGCHLD;
    pid_t pid = clone(child, stack, flags, NULL);
    int st = 0;
    if (pid > 0 && waitpid(pid, &st, 0) < 0)
        pid = -1;
    if (helper > 0) {
        set_state(3);
        waitpid(helper, NULL, __WALL);
        close(helper_pidfd);
    }
    if (pid < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#ifdef FLOOR_MAIN
int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: floor ROOTFS [N] [--no-net]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    int net = !(argc > 3 && strcmp(argv[3], "--no-net") == 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++)
        if (floor_run(argv[1], net) != 0) {
            fprintf(stderr, "run %d failed\n", i);
            return 1;
        }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f ms per container\n", ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6) / n);
    return 0;
}
#endif
