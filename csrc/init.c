/* isolate-init: PID 1 of a container.
 *
 *   isolate-init serve CTL
 *   isolate-init run CTL PATH FILE ARGV0 [ARG...]
 *
 * CTL is the fd of the control socket to the runtime. The init reaps every
 * orphan, and ends when the runtime goes away (the socket hangs up) or, in
 * run mode, when its command ends, after reporting the wait status. When PID
 * 1 ends, the kernel kills every other process of the container.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "isolate.h"

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, 0};

static void on_signal(int sig)
{
    (void)sig;
}

static void report(int ctl, int kind, int status, int step, int err, const char *path)
{
    iso_msg_t m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.status = status;
    m.error.step = step;
    m.error.err = err;
    if (path != NULL)
        strncpy(m.error.path, path, sizeof m.error.path - 1);
    send(ctl, &m, sizeof m, MSG_NOSIGNAL);
}

int main(int argc, char **argv, char **envp)
{
    if (argc < 3)
        return 125;
    int run = strcmp(argv[1], "run") == 0;
    if (run && argc < 6)
        return 125;
    int ctl = atoi(argv[2]);
    fcntl(ctl, F_SETFD, FD_CLOEXEC);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    for (int i = 0; forwarded[i]; i++) {
        sigaddset(&set, forwarded[i]);
        sigaction(forwarded[i], &sa, NULL);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        report(ctl, ISO_MSG_ERROR, 0, ISO_STEP_INIT, errno, "signalfd");
        return 125;
    }

    pid_t main_pid = -1;
    if (run) {
        static volatile int exec_errno;
        static char buf[PATH_MAX];
        const char *path = argv[3], *file = argv[4];
        char **cmd = argv + 5;
        pid_t pid = vfork();
        if (pid == 0) {
            sigset_t none;
            sigemptyset(&none);
            setsid();
            sigprocmask(SIG_SETMASK, &none, NULL);
            iso_exec_search(file, cmd, envp, path, buf);
            exec_errno = errno;
            _exit(127);
        }
        if (pid < 0 || exec_errno != 0) {
            report(ctl, ISO_MSG_ERROR, 0, pid < 0 ? ISO_STEP_CLONE : ISO_STEP_EXEC,
                   pid < 0 ? errno : exec_errno, file);
            return 127;
        }
        main_pid = pid;
    }
    report(ctl, ISO_MSG_READY, main_pid, 0, 0, NULL);

    struct pollfd fds[2] = {{ctl, POLLIN, 0}, {sfd, POLLIN, 0}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 125;
        }
        if (fds[0].revents) {
            char c;
            ssize_t n = recv(ctl, &c, 1, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                return 0;       /* the runtime is gone */
        }
        if (!fds[1].revents)
            continue;
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            if (si.ssi_signo != SIGCHLD) {
                if (main_pid > 0)
                    kill(main_pid, (int)si.ssi_signo);
                else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT ||
                         si.ssi_signo == SIGHUP)
                    return 0;
            }
        }
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
            if (p == main_pid) {
                report(ctl, ISO_MSG_EXIT, status, 0, 0, NULL);
                if (WIFEXITED(status))
                    return WEXITSTATUS(status);
                return 128 + WTERMSIG(status);
            }
        }
    }
}
