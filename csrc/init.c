/* isolate-init: PID 1 of a container, and the clean image every command in a
 * container is started from.
 *
 *   isolate-init serve CTL
 *   isolate-init run   CTL SESSION FILE PATH ARG...      (envp: the command's)
 *   isolate-init join  REPORT SESSION FILE PATH ARG...   (envp: the command's)
 *   isolate-init adopt CTL PID
 *   isolate-init wait  CTL SESSION
 *   isolate-init oci   CTL SESSION
 *
 * Started by csrc/child.c from a sealed memfd, never by hand. All but the
 * command's session is already applied when this runs (namespaces, root,
 * stdio, fds, directory, ids, capabilities, rlimits, no_new_privs, seccomp).
 *
 * serve, run: PID 1. CTL is the control socket to the runtime. The init
 * reaps every orphan, passes signals on to the command (run), and ends when
 * the runtime goes away (the socket hangs up) or, in run mode, when the
 * command ends, after reporting its wait status. When PID 1 ends, the kernel
 * kills every other process of the container. In run mode the init starts
 * the command itself, a fork of this program: no process the command can see
 * ever held anything of the caller (runc CVE-2016-9962), and the process that
 * execs the command has this sealed program as /proc/self/exe, never a host
 * binary (runc CVE-2019-5736).
 *
 * wait: as run, for a command that comes later, in one message on CTL
 * (iso_command_msg: its directory, file, PATH, argv and envp, with its
 * stdin, stdout and stderr as SCM_RIGHTS): a container made ahead of its
 * command (Pool.run). READY is sent twice: waiting (status 0), then started.
 *
 * oci: as wait, but the command replaces the init, once a gate is written:
 * the container of isolate-runc's `create` (see oci() below).
 *
 * adopt: as run, for a command that is already this process's child, PID:
 * a Pool's worker, which the first process of its container forked before it
 * exec'd this (csrc/child.c, iso_hand_over).
 *
 * join: the second half of `docker exec` (csrc/child.c, iso_exec_in). This
 * process joined the container's namespaces outside its PID namespace (it is
 * not visible there); it forks the command into that PID namespace as a child
 * of the runtime (CLONE_PARENT), writes the command's pid on REPORT, and ends.
 *
 * SESSION is 0 (none), 1 (setsid) or 2 (setsid, and stdin becomes the
 * controlling terminal). The init makes itself non-dumpable: no process in the container may open its
 * memory, its fds (the control socket) or its root through /proc/1/.
 *
 * Every container start execs this program, so it is built without libc on
 * x86-64 (ISO_NOLIBC, see nolibc.c): an exec of it costs a quarter of a
 * static glibc program's. Hence raw syscalls only, through sys().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "isolate.h"

#ifdef ISO_NOLIBC
long iso_sys6(long n, long a, long b, long c, long d, long e, long f);
#define sys(n, a, b, c, d, e, f) iso_sys6(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#else
#include <unistd.h>
static long sys_libc(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}
#define sys(n, a, b, c, d, e, f) sys_libc(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#endif

#define SIGBIT(s) (1UL << ((s) - 1))

/* What a signal to the init means: forwarded to the command in run mode,
 * an order to stop in serve mode (TERM, INT, HUP). */
static const unsigned long forwarded = SIGBIT(SIGTERM) | SIGBIT(SIGINT) | SIGBIT(SIGHUP) |
                                       SIGBIT(SIGQUIT) | SIGBIT(SIGUSR1) | SIGBIT(SIGUSR2) |
                                       SIGBIT(SIGWINCH);

static unsigned long parse_uint(const char **s)
{
    unsigned long n = 0;
    while (**s >= '0' && **s <= '9')
        n = n * 10 + (unsigned long)(*(*s)++ - '0');
    return n;
}

static int parse_int(const char *s)
{
    return (int)parse_uint(&s);
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static void set_error(iso_error_t *e, int step, long err, const char *path)
{
    char *p = (char *)e;
    for (unsigned i = 0; i < sizeof *e; i++)
        p[i] = 0;
    e->step = step;
    e->err = (int)err;
    for (unsigned i = 0; path != 0 && path[i] && i < sizeof e->path - 1; i++)
        e->path[i] = path[i];
}

static void report(int ctl, int kind, int status, int step, long err, const char *path)
{
    iso_msg_t m;
    set_error(&m.error, step, err, path);
    m.kind = kind;
    m.status = status;
    sys(SYS_sendto, ctl, &m, sizeof m, MSG_NOSIGNAL, 0, 0);
}

/* A command's start, on a pipe: its pid, or what failed. */
static void send_report(int fd, long pid, int step, long err, const char *path)
{
    iso_report_t r;
    set_error(&r.error, step, err, path);
    r.pid = (int)pid;
    sys(SYS_write, fd, &r, sizeof r, 0, 0, 0);
}

/* A failure with nobody to report it to (oci mode, once started): a line on
 * the command's stderr, "isolate-init: exec FILE: errno N", as runc says it. */
static void say_failure(int step, long err, const char *what)
{
    char line[PATH_MAX + 64];
    unsigned long n = 0;
    const char *parts[] = {"isolate-init: ", step == ISO_STEP_EXEC ? "exec " : "start ", what,
                           ": errno "};
    for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++)
        for (const char *p = parts[i]; *p && n < PATH_MAX + 32; p++)
            line[n++] = *p;
    char digits[12];
    int k = 0;
    unsigned long e = (unsigned long)err;
    do
        digits[k++] = (char)('0' + e % 10);
    while ((e /= 10) != 0 && k < 11);
    while (k > 0)
        line[n++] = digits[--k];
    line[n++] = '\n';
    sys(SYS_write, 2, line, n, 0, 0, 0);
}

/* 0 when the working directory lies inside this process's root; -EACCES
 * when the kernel has no path for it (reached through an fd of a directory
 * outside, runc CVE-2024-21626): as csrc/child.c checks its own. */
static long reachable_cwd(void)
{
    static char buf[PATH_MAX];
    long n = sys(SYS_getcwd, buf, sizeof buf, 0, 0, 0, 0);
    return n < 0 || buf[0] != '/' ? -EACCES : 0;
}

/* In a child of this program: become the command. A failure goes to rep
 * (a child sharing our memory), without rep on errfd, and without either
 * as a line on stderr. */
static void command_child(int session, const char *file, const char *path, char **argv,
                          char **envp, int errfd, iso_report_t *rep, const int *stdio,
                          const char *cwd)
{
    unsigned long none = 0;
    sys(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none, 0, 0);
    long r = 0;
    int step;
    const char *what;
    for (int i = 0; stdio != 0 && i < 3 && r >= 0; i++)
        r = sys(SYS_dup3, stdio[i], i, 0, 0, 0, 0);
    if (r < 0) {
        step = ISO_STEP_STDIO, what = "stdio";
    } else if (cwd != 0 && cwd[0] && (r = sys(SYS_chdir, cwd, 0, 0, 0, 0, 0)) < 0) {
        step = ISO_STEP_CHDIR, what = cwd;
    } else if (cwd != 0 && cwd[0] && (r = reachable_cwd()) < 0) {
        step = ISO_STEP_CHDIR, what = cwd;
    } else if (session && sys(SYS_getsid, 0, 0, 0, 0, 0, 0) != sys(SYS_getpid, 0, 0, 0, 0, 0, 0)
               && (r = sys(SYS_setsid, 0, 0, 0, 0, 0, 0)) < 0) {
        /* (oci mode: the init already leads a session of its own) */
        step = ISO_STEP_SETSID, what = "";
    } else if (session == ISO_SESSION_TTY && (r = sys(SYS_ioctl, 0, TIOCSCTTY, 0, 0, 0, 0)) < 0) {
        step = ISO_STEP_SETSID, what = "controlling terminal (stdin)";
    } else {
        char buf[PATH_MAX];
        r = iso_exec_search(file, argv, envp, path[0] ? path : 0, buf);
        step = ISO_STEP_EXEC, what = file;
    }
    if (rep != 0) {
        set_error(&rep->error, step, -r, what);
        rep->pid = 0;
    } else if (errfd >= 0) {
        send_report(errfd, 0, step, -r, what);
    } else {
        say_failure(step, -r, what);
    }
    for (;;)
        sys(SYS_exit_group, 127, 0, 0, 0, 0, 0);
}

/* Run mode: the command's start. A child that shares our memory (which is
 * this program's alone) and has us wait until it has exec'd (CLONE_VFORK):
 * no page tables copied, no pipe; its failure lands in the report. */
struct command {
    int session;
    const char *file, *path;
    char **argv, **envp;
    const int *stdio;       /* wait mode: the command's own */
    const char *cwd;
    iso_report_t rep;
};

static int command_main(void *arg)
{
    struct command *c = arg;
    command_child(c->session, c->file, c->path, c->argv, c->envp, -1, &c->rep, c->stdio,
                  c->cwd);
    return 127;
}

static char command_stack[64 * 1024] __attribute__((aligned(16)));

#ifdef ISO_NOLIBC
long iso_clone_fn(unsigned long flags, void *stack_top, int (*fn)(void *), void *arg);
#else
static long iso_clone_fn(unsigned long flags, void *stack_top, int (*fn)(void *), void *arg)
{
    int pid = clone(fn, stack_top, (int)flags, arg);
    return pid < 0 ? -errno : pid;
}
#endif

/* Its pid, or -1 once the failure is reported. */
static long start_command(int ctl, int session, const char *file, const char *path,
                          char **argv, char **envp, const int *stdio, const char *cwd)
{
    struct command c = {session, file, path, argv, envp, stdio, cwd, {0, {0, 0, {0}}}};
    long pid = iso_clone_fn(CLONE_VM | CLONE_VFORK | SIGCHLD, command_stack + sizeof command_stack,
                            command_main, &c);
    if (pid < 0) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_CLONE, -pid, "command");
        return -1;
    }
    if (c.rep.error.step != 0) {
        report(ctl, ISO_MSG_ERROR, 0, c.rep.error.step, c.rep.error.err, c.rep.error.path);
        return -1;
    }
    return pid;
}

/* Wait and oci modes: the command, in one message (see iso_command_msg),
 * and nfds fds (its stdio, then oci's gate). 0, -1 once a failure is
 * reported, -2 when the runtime went away instead. */
static char command_buf[ISO_COMMAND_MAX] __attribute__((aligned(16)));
static char *command_ptrs[ISO_COMMAND_MAX / 2 / sizeof(char *)];

struct received {
    int fds[4];
    char *cwd, *file, *path;
    char **argv, **envp;
};

static long receive_command(int ctl, int nfds, struct received *out)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(4 * sizeof(int))];
    } control;
    struct iovec iov = {command_buf, sizeof command_buf - 1};
    struct msghdr m = {0, 0, &iov, 1, &control, CMSG_SPACE(nfds * sizeof(int)), 0};
    long n;
    do
        n = sys(SYS_recvmsg, ctl, &m, MSG_CMSG_CLOEXEC, 0, 0, 0);
    while (n == -EINTR);
    if (n <= 0)
        return -2;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c == 0 || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(nfds * sizeof(int))
        || n < (long)sizeof(iso_command_msg_t) || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, EINVAL, "command message");
        return -1;
    }
    char *data = (char *)CMSG_DATA(c);
    for (unsigned i = 0; i < nfds * sizeof(int); i++)
        ((char *)out->fds)[i] = data[i];
    iso_command_msg_t *h = (iso_command_msg_t *)command_buf;
    /* the strings, argv's end (and argv[0] where argc is 0), envp's end */
    unsigned long want = 3 + (unsigned long)h->argc + 2 + (unsigned long)h->envc + 1;
    command_buf[n] = '\0';
    if (want > sizeof command_ptrs / sizeof command_ptrs[0]) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, E2BIG, "command message");
        return -1;
    }
    /* cwd, file, path, argv..., envp..., each NUL-terminated */
    char *p = command_buf + sizeof *h, *end = command_buf + n;
    unsigned long k = 0;
    for (unsigned long i = 0; i < 3 + (unsigned long)h->argc + (unsigned long)h->envc; i++) {
        if (p >= end) {
            report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, EINVAL, "command message");
            return -1;
        }
        command_ptrs[k++] = p;
        if (i == 2 + (unsigned long)h->argc)
            command_ptrs[k++] = 0;          /* argv's end */
        while (p < end && *p)
            p++;
        p++;
    }
    if (h->argc == 0)
        command_ptrs[k++] = 0;
    command_ptrs[k] = 0;
    out->cwd = command_ptrs[0];
    out->file = command_ptrs[1];
    out->path = command_ptrs[2];
    out->argv = command_ptrs + 3;
    out->envp = out->argv + h->argc + 1;
    return 0;
}

/* Wait mode: the command's pid, -1 once a failure is reported, -2 when the
 * runtime went away instead. */
static long wait_for_command(int ctl, int session)
{
    struct received r;
    long n = receive_command(ctl, 3, &r);
    if (n < 0)
        return n;
    long pid = start_command(ctl, session, r.file, r.path, r.argv, r.envp, r.fds, r.cwd);
    for (int i = 0; i < 3; i++)
        sys(SYS_close, r.fds[i], 0, 0, 0, 0, 0);
    return pid;
}

/* Oci mode: the container of an OCI runtime's `create` (isolate-runc). The
 * command comes as in wait mode, with a fourth fd: the gate, the read end of
 * a FIFO. Its file is looked up first, so that a command that cannot be
 * found fails the create. Then the init reports READY (status 1), lets go of
 * the control socket (the runtime exits: no daemon stays), and waits for the
 * gate to be written (`start`, as runc's exec.fifo). It then becomes the
 * command, exec'd in its own place as runc's init is: the command is PID 1
 * of its container, the child of whoever reaps this process (the engine's
 * shim), with nothing of the caller's ever in it. A TERM, INT or HUP before
 * the start ends the container; SIGKILL does as ever. Returns only on
 * failure, with the exit code. */
static int oci(int ctl, int session, long sfd)
{
    static char found[PATH_MAX];
    struct received r;
    report(ctl, ISO_MSG_READY, 0, 0, 0, 0);
    long n = receive_command(ctl, 4, &r);
    if (n < 0)
        return n == -2 ? 0 : 127;
    /* the directory first: a relative PATH entry is looked up from it, and a
     * directory that cannot be entered fails the create, as with runc */
    if (r.cwd[0] && ((n = sys(SYS_chdir, r.cwd, 0, 0, 0, 0, 0)) < 0 || (n = reachable_cwd()) < 0)) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_CHDIR, -n, r.cwd);
        return 127;
    }
    n = iso_exec_find(r.file, r.path, found);
    if (n < 0) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_EXEC, -n, r.file);
        return 127;
    }
    report(ctl, ISO_MSG_READY, 1, 0, 0, 0);
    sys(SYS_close, ctl, 0, 0, 0, 0, 0);
    struct pollfd fds[2] = {{r.fds[3], POLLIN, 0}, {(int)sfd, POLLIN, 0}};
    for (;;) {
        n = sys(SYS_ppoll, fds, 2, 0, 0, 0, 0);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return 125;
        if (fds[0].revents)
            break;
        struct signalfd_siginfo si;
        while (sys(SYS_read, sfd, &si, sizeof si, 0, 0, 0) == (long)sizeof si)
            if (SIGBIT(si.ssi_signo) & (SIGBIT(SIGTERM) | SIGBIT(SIGINT) | SIGBIT(SIGHUP)))
                return 128 + (int)si.ssi_signo;
    }
    char word;
    sys(SYS_read, r.fds[3], &word, 1, 0, 0, 0);
    sys(SYS_close, r.fds[3], 0, 0, 0, 0, 0);
    command_child(session, found, "", r.argv, r.envp, -1, 0, r.fds, "");
    return 127;
}

/* Reap what has ended; true when the command has (its status reported). */
static int reap(int ctl, long main_pid, int *exit_code)
{
    int status;
    long p;
    while ((p = sys(SYS_wait4, -1, &status, WNOHANG, 0, 0, 0)) > 0) {
        if (p == main_pid) {
            report(ctl, ISO_MSG_EXIT, status, 0, 0, 0);
            *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv, char **envp)
{
    if (argc < 3)
        return 125;
    int run = streq(argv[1], "run"), join = streq(argv[1], "join");
    int adopt = streq(argv[1], "adopt"), wait = streq(argv[1], "wait");
    int gated = streq(argv[1], "oci");
    if (!run && !join && !adopt && !wait && !gated && !streq(argv[1], "serve"))
        return 125;
    if ((wait || gated) && argc < 4)
        return 125;
    if ((run || join) && argc < 7)
        return 125;
    if (adopt && argc < 4)
        return 125;
    int fd = parse_int(argv[2]);    /* the control socket, or join's report pipe */
    sys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC, 0, 0, 0);
    sys(SYS_prctl, PR_SET_NAME, "isolate-init", 0, 0, 0, 0);    /* not the memfd's number */
    sys(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0, 0);
    int session = (run || join || wait || gated) ? parse_int(argv[3]) : 0;

    if (join) {
        /* into the PID namespace this process joined for its children; the
         * caller's child, which reaps it; born non-dumpable (like us) */
        long pid = sys(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0, 0);
        if (pid == 0)
            command_child(session, argv[4], argv[5], argv + 6, envp, fd, 0, 0, 0);
        if (pid < 0)
            send_report(fd, 0, ISO_STEP_CLONE, -pid, "command");
        else
            send_report(fd, pid, 0, 0, 0);
        return pid < 0 ? 127 : 0;
    }

    /* Blocked signals are queued even for PID 1, which drops unhandled ones. */
    int ctl = fd;
    unsigned long mask = SIGBIT(SIGCHLD) | forwarded;
    sys(SYS_rt_sigprocmask, SIG_BLOCK, &mask, 0, sizeof mask, 0, 0);
    long sfd = sys(SYS_signalfd4, -1, &mask, sizeof mask, SFD_CLOEXEC | SFD_NONBLOCK, 0, 0);
    if (sfd < 0) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, -sfd, "signalfd");
        return 125;
    }
    if (gated)
        return oci(ctl, session, sfd);
    long r, main_pid = -1;
    if (run && (main_pid = start_command(ctl, session, argv[4], argv[5], argv + 6, envp,
                                         0, 0)) < 0)
        return 127;
    if (wait) {
        report(ctl, ISO_MSG_READY, 0, 0, 0, 0);
        if ((main_pid = wait_for_command(ctl, session)) < 0)
            return main_pid == -2 ? 0 : 127;
        run = 1;
    }
    if (adopt) {
        main_pid = parse_int(argv[3]);
        run = 1;
    }
    report(ctl, ISO_MSG_READY, (int)main_pid, 0, 0, 0);
    /* the command may have ended before: look once */
    int code = 0;
    if (run && reap(ctl, main_pid, &code))
        return code;

    struct pollfd fds[2] = {{ctl, POLLIN, 0}, {(int)sfd, POLLIN, 0}};
    for (;;) {
        r = sys(SYS_ppoll, fds, 2, 0, 0, 0, 0);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return 125;
        if (fds[0].revents) {
            char c;
            long n = sys(SYS_recvfrom, ctl, &c, 1, MSG_DONTWAIT, 0, 0);
            if (n == 0 || (n < 0 && n != -EAGAIN && n != -EINTR))
                return 0;       /* the runtime is gone */
        }
        if (!fds[1].revents)
            continue;
        struct signalfd_siginfo si;
        while (sys(SYS_read, sfd, &si, sizeof si, 0, 0, 0) == (long)sizeof si) {
            if (si.ssi_signo == SIGCHLD)
                continue;
            if (main_pid > 0)
                sys(SYS_kill, main_pid, si.ssi_signo, 0, 0, 0, 0);
            else if (SIGBIT(si.ssi_signo) & (SIGBIT(SIGTERM) | SIGBIT(SIGINT) | SIGBIT(SIGHUP)))
                return 0;
        }
        if (reap(ctl, main_pid, &code))
            return code;
    }
}
