/* PATH search for exec, for the processes csrc/child.c starts.
 * Async-signal-safe: no allocation, only execve. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "isolate.h"

int iso_exec_search(const char *file, char *const argv[], char *const envp[],
                    const char *path, char *buf)
{
    if (file[0] == '\0') {
        errno = ENOENT;
        return -1;
    }
    if (strchr(file, '/') != NULL || path == NULL || path[0] == '\0') {
        execve(file, argv, envp);
        return -1;
    }

    size_t flen = strlen(file);
    int saw_eacces = 0;
    int last = ENOENT;
    const char *p = path;
    for (;;) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        if (dlen == 0) {            /* empty entry: current directory */
            buf[0] = '.';
            dlen = 1;
        } else if (dlen + 1 + flen + 1 <= PATH_MAX) {
            memcpy(buf, p, dlen);
        } else {
            dlen = 0;               /* too long: skip */
        }
        if (dlen > 0 && dlen + 1 + flen + 1 <= PATH_MAX) {
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, file, flen + 1);
            execve(buf, argv, envp);
            switch (errno) {
            case EACCES:
                saw_eacces = 1;
                break;
            case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: case ELOOP:
            case ENAMETOOLONG:
                break;
            default:
                return -1;          /* found but not runnable: report that */
            }
            last = errno;
        }
        if (*end == '\0')
            break;
        p = end + 1;
    }
    errno = saw_eacces ? EACCES : (last == ELOOP || last == ENAMETOOLONG ? last : ENOENT);
    return -1;
}
