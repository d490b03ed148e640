/* isolate-init: PID 1 of a container.
 *
 *   isolate-init serve CTL
 *   isolate-init run CTL PID
 *
 * Started by csrc/child.c, never by hand. CTL is the fd of the control socket
 * to the runtime; PID the command's, which child.c started before exec'ing
 * the init. The init reaps every orphan, passes signals on to the command,
 * and ends when the runtime goes away (the socket hangs up) or, in run mode,
 * when the command ends, after reporting its wait status. When PID 1 ends,
 * the kernel kills every other process of the container.
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
#include <signal.h>
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
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}
#endif

#define SIGBIT(s) (1UL << ((s) - 1))

/* What a signal to the init means: forwarded to the command in run mode,
 * an order to stop in serve mode (TERM, INT, HUP). */
static const unsigned long forwarded = SIGBIT(SIGTERM) | SIGBIT(SIGINT) | SIGBIT(SIGHUP) |
                                       SIGBIT(SIGQUIT) | SIGBIT(SIGUSR1) | SIGBIT(SIGUSR2) |
                                       SIGBIT(SIGWINCH);

static int parse_int(const char *s)
{
    int n = 0;
    while (*s >= '0' && *s <= '9')
        n = n * 10 + (*s++ - '0');
    return n;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static void report(int ctl, int kind, int status, int step, int err, const char *path)
{
    iso_msg_t m;
    char *p = (char *)&m;
    for (unsigned i = 0; i < sizeof m; i++)
        p[i] = 0;
    m.kind = kind;
    m.status = status;
    m.error.step = step;
    m.error.err = err;
    for (unsigned i = 0; path != 0 && path[i] && i < sizeof m.error.path - 1; i++)
        m.error.path[i] = path[i];
    sys(SYS_sendto, ctl, &m, sizeof m, MSG_NOSIGNAL, 0, 0);
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
    (void)envp;
    if (argc < 4)
        return 125;
    int run = streq(argv[1], "run");
    int ctl = parse_int(argv[2]);
    long main_pid = run ? parse_int(argv[3]) : -1;
    sys(SYS_fcntl, ctl, F_SETFD, FD_CLOEXEC, 0, 0, 0);
    sys(SYS_prctl, PR_SET_NAME, "isolate-init", 0, 0, 0, 0);    /* not the memfd's number */

    /* Blocked signals are queued even for PID 1, which drops unhandled ones. */
    unsigned long mask = SIGBIT(SIGCHLD) | forwarded;
    sys(SYS_rt_sigprocmask, SIG_BLOCK, &mask, 0, sizeof mask, 0, 0);
    long sfd = sys(SYS_signalfd4, -1, &mask, sizeof mask, SFD_CLOEXEC | SFD_NONBLOCK, 0, 0);
    if (sfd < 0) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, (int)-sfd, "signalfd");
        return 125;
    }
    report(ctl, ISO_MSG_READY, (int)main_pid, 0, 0, 0);
    /* the command may have ended before SIGCHLD was blocked: look once */
    int code = 0;
    if (run && reap(ctl, main_pid, &code))
        return code;

    struct pollfd fds[2] = {{ctl, POLLIN, 0}, {(int)sfd, POLLIN, 0}};
    for (;;) {
        long r = sys(SYS_ppoll, fds, 2, 0, 0, 0, 0);
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
