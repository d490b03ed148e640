/* PATH search for exec, for the commands isolate-init starts (csrc/init.c).
 * Built into isolate-init, with or without libc: no allocation, no errno,
 * only execve. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <sys/syscall.h>

#include "isolate.h"

#ifdef ISO_NOLIBC
long iso_sys6(long n, long a, long b, long c, long d, long e, long f);
static long sys_execve(const char *file, char *const argv[], char *const envp[])
{
    return iso_sys6(SYS_execve, (long)file, (long)argv, (long)envp, 0, 0, 0);
}
#else
#include <unistd.h>
static long sys_execve(const char *file, char *const argv[], char *const envp[])
{
    execve(file, argv, envp);
    return -errno;
}
#endif

static size_t slen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int has_slash(const char *s)
{
    for (; *s; s++)
        if (*s == '/')
            return 1;
    return 0;
}

long iso_exec_search(const char *file, char *const argv[], char *const envp[],
                     const char *path, char *buf)
{
    if (file[0] == '\0')
        return -ENOENT;
    if (has_slash(file) || path == NULL || path[0] == '\0')
        return sys_execve(file, argv, envp);

    size_t flen = slen(file);
    int saw_eacces = 0;
    long last = -ENOENT;
    const char *p = path;
    for (;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        size_t dlen = (size_t)(end - p);
        int fits = dlen + 1 + flen + 1 <= PATH_MAX;
        if (dlen == 0) {            /* empty entry: current directory */
            buf[0] = '.';
            dlen = 1;
        } else if (fits) {
            for (size_t i = 0; i < dlen; i++)
                buf[i] = p[i];
        }
        if (fits) {
            buf[dlen] = '/';
            for (size_t i = 0; i <= flen; i++)
                buf[dlen + 1 + i] = file[i];
            long r = sys_execve(buf, argv, envp);
            switch (-r) {
            case EACCES:
                saw_eacces = 1;
                break;
            case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: case ELOOP:
            case ENAMETOOLONG:
                break;
            default:
                return r;           /* found but not runnable: report that */
            }
            last = r;
        }
        if (*end == '\0')
            break;
        p = end + 1;
    }
    if (saw_eacces)
        return -EACCES;
    return (last == -ELOOP || last == -ENAMETOOLONG) ? last : -ENOENT;
}
