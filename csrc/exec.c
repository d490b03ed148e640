/* PATH search for exec, for the commands isolate-init starts (csrc/init.c).
 * Built into isolate-init, with or without libc: no allocation, no errno,
 * only execve. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "isolate.h"

#ifdef ISO_NOLIBC
long iso_sys6(long n, long a, long b, long c, long d, long e, long f);
static long sys_execve(const char *file, char *const argv[], char *const envp[])
{
    return iso_sys6(SYS_execve, (long)file, (long)argv, (long)envp, 0, 0, 0);
}
static long sys_stat(const char *file, struct stat *st)
{
    return iso_sys6(SYS_newfstatat, AT_FDCWD, (long)file, (long)st, 0, 0, 0);
}
static long sys_access(const char *file)
{
    return iso_sys6(SYS_faccessat, AT_FDCWD, (long)file, X_OK, 0, 0, 0);
}
#else
#include <unistd.h>
static long sys_execve(const char *file, char *const argv[], char *const envp[])
{
    execve(file, argv, envp);
    return -errno;
}
static long sys_stat(const char *file, struct stat *st)
{
    return stat(file, st) < 0 ? -errno : 0;
}
static long sys_access(const char *file)
{
    return access(file, X_OK) < 0 ? -errno : 0;
}
#endif

/* What execve of file would say of it, without running it: 0 for a regular
 * file we may execute (the kernel may still refuse its format). */
static long try_file(const char *file, char *const argv[], char *const envp[], int dry)
{
    if (!dry)
        return sys_execve(file, argv, envp);
    struct stat st;
    long r = sys_stat(file, &st);
    if (r < 0)
        return r;
    if (!S_ISREG(st.st_mode))
        return -EACCES;
    return sys_access(file);
}

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

static long search(const char *file, char *const argv[], char *const envp[],
                   const char *path, char *buf, int dry)
{
    if (file[0] == '\0')
        return -ENOENT;
    if (has_slash(file) || path == NULL || path[0] == '\0') {
        size_t n = slen(file);
        if (!dry)
            return sys_execve(file, argv, envp);
        if (n >= PATH_MAX)
            return -ENAMETOOLONG;
        for (size_t i = 0; i <= n; i++)
            buf[i] = file[i];
        return try_file(file, argv, envp, dry);
    }

    size_t flen = slen(file);
    int saw_eacces = 0;
    long last = -ENOENT;
    const char *p = path;
    for (;;) {
        const char *end = p;
        while (*end && *end != ':')
            end++;
        size_t dlen = (size_t)(end - p);
        int fits = (dlen == 0 ? 1 : dlen) + 1 + flen + 1 <= PATH_MAX;
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
            long r = try_file(buf, argv, envp, dry);
            if (r == 0)
                return 0;           /* dry: found, its path in buf */
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

long iso_exec_search(const char *file, char *const argv[], char *const envp[],
                     const char *path, char *buf)
{
    return search(file, argv, envp, path, buf, 0);
}

long iso_exec_find(const char *file, const char *path, char *buf)
{
    return search(file, 0, 0, path, buf, 1);
}
