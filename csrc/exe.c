/* The executable of a fork of the caller (Container.call, isolate.call,
 * pytest --isolate): its /proc/self/exe must not be the caller's binary,
 * which the function (or a process it hands an fd to) could open through
 * /proc/PID/exe and, once nothing runs it any more, write: runc's
 * CVE-2019-5736, for a fork instead of an exec.
 *
 * The kernel lets a process name another file as its executable (prctl
 * PR_SET_MM_MAP with exe_fd; CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE in its
 * user namespace) only once no mapping of the old one is left. So the
 * mappings of the binary are first replaced, at the same addresses and with
 * the same protections: a writable one (data) by an anonymous copy, the
 * others (text, read-only data) by private mappings of a sealed memfd copy
 * of the same file, or, where the process wrote pages (relocations:
 * anonymous in /proc/self/pagemap), by an anonymous copy. Text stays shared
 * page cache.
 *
 * iso_exe_prepare runs once in the caller and notes where the binary is
 * mapped; a fork checks that with the PROCMAP_QUERY ioctl (Linux 6.11), or
 * reads /proc/self/maps where the ioctl is missing or the layout changed.
 * After the fork: raw syscalls, buffers on the stack, nothing allocated.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "isolate.h"

#define PAGE 4096UL

struct iso_procmap_query {
    uint64_t size, query_flags, query_addr;
    uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
    uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
    uint64_t vma_name_addr, build_id_addr;
};
#define ISO_PROCMAP_QUERY _IOWR('f', 17, struct iso_procmap_query)
#define Q_READ 0x01
#define Q_WRITE 0x02
#define Q_EXEC 0x04
#define Q_SHARED 0x08
#define Q_COVERING_OR_NEXT 0x10
#define Q_FILE_BACKED 0x20

static int fail(iso_error_t *err, const char *what)
{
    err->step = ISO_STEP_EXE;
    err->err = errno;
    strncpy(err->path, what, sizeof err->path - 1);
    err->path[sizeof err->path - 1] = '\0';
    return -1;
}

/* --------------------------------------------------- /proc/self/maps, read */

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static const char *hex(const char *p, const char *end, unsigned long *out)
{
    unsigned long v = 0;
    for (; p < end && is_hex(*p); p++)
        v = v * 16 + (unsigned long)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    *out = v;
    return p;
}

/* "start-end perms offset major:minor inode   path" (no newline) */
static int parse_line(const char *p, const char *end, struct iso_exe_vma *v)
{
    unsigned long major, minor, ino = 0;
    p = hex(p, end, &v->start);
    if (p >= end || *p++ != '-')
        return 0;
    p = hex(p, end, &v->end);
    if (end - p < 6 || *p++ != ' ')
        return 0;
    v->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0)
              | (p[2] == 'x' ? PROT_EXEC : 0);
    v->shared = p[3] == 's';
    p = hex(p + 5, end, &v->offset);
    if (p >= end || *p++ != ' ')
        return 0;
    p = hex(p, end, &major);
    if (p >= end || *p++ != ':')
        return 0;
    p = hex(p, end, &minor);
    if (p >= end || *p++ != ' ')
        return 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        ino = ino * 10 + (unsigned long)(*p - '0');
    v->dev = makedev(major, minor);
    v->ino = ino;
    return ino != 0;
}

/* The mappings of the file mapped at addr (the text: start_code),
 * in address order: a first pass finds that file, a second keeps its
 * mappings (and only those count against ISO_EXE_MAX_VMAS). */
static int scan_maps(struct iso_exe *x, unsigned long addr)
{
    char buf[8192];
    int n = 0, found = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t have = 0;
        int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return -1;
        for (;;) {
            ssize_t got = read(fd, buf + have, sizeof buf - have);
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                int e = errno;
                close(fd);
                errno = e;
                return -1;
            }
            have += (size_t)got;
            size_t used = 0;
            char *nl;
            while ((nl = memchr(buf + used, '\n', have - used)) != NULL) {
                struct iso_exe_vma v;
                if (parse_line(buf + used, nl, &v)) {
                    if (pass == 0 && v.start <= addr && addr < v.end) {
                        x->dev = v.dev;
                        x->ino = v.ino;
                        found = 1;
                    } else if (pass == 1 && v.dev == x->dev && v.ino == x->ino) {
                        if (n == ISO_EXE_MAX_VMAS) {
                            close(fd);
                            errno = E2BIG;
                            return -1;
                        }
                        x->vmas[n++] = v;
                    }
                }
                used = (size_t)(nl - buf) + 1;
            }
            if (got == 0)
                break;
            if (used == 0 && have == sizeof buf)
                used = have;        /* longer than any line of maps: dropped */
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        close(fd);
        if (!found) {
            errno = ENOENT;
            return -1;
        }
    }
    x->nvmas = n;
    return 0;
}

/* Whether the noted mappings are still what the kernel has, by ioctl: 1
 * yes, 0 no, -1 the ioctl is missing. */
static int still_mapped(const struct iso_exe *x)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int same = 1;
    unsigned long at = x->vmas[0].start;
    int i = 0;
    /* every file-backed mapping from the first noted one: the noted ones,
     * and no other mapping of the binary among them */
    while (same) {
        struct iso_procmap_query q;
        memset(&q, 0, sizeof q);
        q.size = sizeof q;
        q.query_flags = Q_COVERING_OR_NEXT | Q_FILE_BACKED;
        q.query_addr = at;
        if (ioctl(fd, ISO_PROCMAP_QUERY, &q) < 0) {
            same = errno == ENOENT ? i == x->nvmas : -1;
            break;
        }
        if (makedev(q.dev_major, q.dev_minor) == x->dev && q.inode == x->ino) {
            const struct iso_exe_vma *v = &x->vmas[i];
            int prot = (q.vma_flags & Q_READ ? PROT_READ : 0)
                       | (q.vma_flags & Q_WRITE ? PROT_WRITE : 0)
                       | (q.vma_flags & Q_EXEC ? PROT_EXEC : 0);
            if (i == x->nvmas || q.vma_start != v->start || q.vma_end != v->end
                || q.vma_offset != v->offset || prot != v->prot
                || !!(q.vma_flags & Q_SHARED) != v->shared)
                same = 0;
            i++;
        } else if (i == x->nvmas) {
            break;                      /* past the last one */
        }
        at = q.vma_end;
    }
    close(fd);
    return same;
}

/* ------------------------------------------------------------- the moves */

/* Whether the process wrote a page of v (a page anonymous in
 * /proc/self/pagemap, present or swapped): for iso_exe_prepare. */
static int any_written(const struct iso_exe_vma *v, int pagemap)
{
    uint64_t entries[512];
    unsigned long pages = (v->end - v->start) / PAGE;
    for (unsigned long i = 0; i < pages; i += 512) {
        unsigned long k = pages - i < 512 ? pages - i : 512;
        ssize_t got = pread(pagemap, entries, k * sizeof(uint64_t),
                            (off_t)((v->start / PAGE + i) * sizeof(uint64_t)));
        if (got != (ssize_t)(k * sizeof(uint64_t)))
            return 1;           /* unknown: copied */
        for (unsigned long j = 0; j < k; j++)
            if ((entries[j] & (1ULL << 61)) == 0 && (entries[j] & (3ULL << 62)) != 0)
                return 1;
    }
    return 0;
}

/* A mapping the process never wrote (text, read-only data) becomes the same
 * pages of the copy; one it wrote (data, relocations) an anonymous copy. */
static int move_vma(const struct iso_exe_vma *v, int memfd)
{
    unsigned long len = v->end - v->start;
    if (v->shared || (!v->written && !(v->prot & PROT_WRITE)))
        return mmap((void *)v->start, len, v->prot,
                    (v->shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, memfd,
                    (off_t)v->offset) == MAP_FAILED ? -1 : 0;
    if (!(v->prot & PROT_READ) && mprotect((void *)v->start, len, v->prot | PROT_READ) < 0)
        return -1;
    char *tmp = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (tmp == MAP_FAILED)
        return -1;
    memcpy(tmp, (void *)v->start, len);
    if (mprotect(tmp, len, v->prot) < 0
        || mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)v->start) == MAP_FAILED) {
        int e = errno;
        munmap(tmp, len);
        errno = e;
        return -1;
    }
    return 0;
}

/* Which noted mappings were written. */
static int note_written(struct iso_exe *x)
{
    int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0) {          /* (a non-dumpable process of another user's) */
        for (int i = 0; i < x->nvmas; i++)
            x->vmas[i].written = 1;     /* copied whole: slower, as right */
        return 0;
    }
    for (int i = 0; i < x->nvmas; i++)
        x->vmas[i].written = any_written(&x->vmas[i], pagemap);
    close(pagemap);
    return 0;
}

/* Fields 26-28 and 45-51 of /proc/self/stat. */
static int read_stat(struct prctl_mm_map *m)
{
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, sizeof buf - 1);
    int e = errno;
    close(fd);
    if (got <= 0) {
        errno = got < 0 ? e : EIO;
        return -1;
    }
    buf[got] = '\0';
    char *p = NULL;
    for (char *q = buf; *q; q++)            /* after the command's name */
        if (*q == ')')
            p = q;
    if (p == NULL) {
        errno = EIO;
        return -1;
    }
    unsigned long f[53] = {0};
    int field = 2;
    for (p++; *p && field < 52;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        field++;
        unsigned long v = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            v = v * 10 + (unsigned long)(*p - '0');
        while (*p && *p != ' ')
            p++;
        f[field] = v;
    }
    if (field < 51) {
        errno = EIO;
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->start_code = f[26];
    m->end_code = f[27];
    m->start_stack = f[28];
    m->start_data = f[45];
    m->end_data = f[46];
    m->start_brk = f[47];
    m->arg_start = f[48];
    m->arg_end = f[49];
    m->env_start = f[50];
    m->env_end = f[51];
    return 0;
}

int iso_exe_prepare(struct iso_exe *x, int memfd, iso_error_t *err)
{
    struct stat st;
    memset(x, 0, sizeof *x);
    memset(err, 0, sizeof *err);
    x->memfd = memfd;
    /* where the caller may (CAP_LINUX_IMMUTABLE): not even a container's
     * root, which may own it, can change its mode or attributes */
    int flags = 0;
    if (fchmod(memfd, 0555) < 0)
        return fail(err, "memfd");
    if (ioctl(memfd, FS_IOC_GETFLAGS, &flags) == 0) {
        flags |= FS_IMMUTABLE_FL;
        ioctl(memfd, FS_IOC_SETFLAGS, &flags);
    }
    if (fstat(memfd, &st) < 0)
        return fail(err, "memfd");
    x->memfd_dev = st.st_dev;
    x->memfd_ino = st.st_ino;
    if (read_stat(&x->map) < 0)
        return fail(err, "/proc/self/stat");
    if (scan_maps(x, x->map.start_code) < 0)
        return fail(err, "/proc/self/maps");
    if (note_written(x) < 0)
        return fail(err, "/proc/self/pagemap");
    return 0;
}

static int detach(struct iso_exe *x, iso_error_t *err)
{
    struct stat st;
    memset(err, 0, sizeof *err);
    x->done = 0;
    /* the copy is still behind its fd (a caller may have closed it and
     * opened another file there), and executable: a container whose root
     * owns it may have changed its mode for all the caller's calls */
    if (fstat(x->memfd, &st) < 0)
        return fail(err, "memfd");
    if (st.st_dev != x->memfd_dev || st.st_ino != x->memfd_ino) {
        errno = EBADF;
        return fail(err, "memfd");
    }
    if ((st.st_mode & 07777) != 0555 && fchmod(x->memfd, 0555) < 0)
        return fail(err, "memfd");
    if (x->nvmas == 0 || still_mapped(x) != 1) {
        if (scan_maps(x, x->map.start_code) < 0)
            return fail(err, "/proc/self/maps");
    }
    if (note_written(x) < 0)        /* pages written since, as a debugger does */
        return fail(err, "/proc/self/pagemap");
    if (x->dev == x->memfd_dev && x->ino == x->memfd_ino) {
        x->done = 1;            /* a fork of a fork: already the copy */
        return 0;
    }
    for (int i = 0; i < x->nvmas; i++)
        if (move_vma(&x->vmas[i], x->memfd) < 0)
            return fail(err, "mremap");
    return 0;
}

static int detach_and_set(struct iso_exe *x, iso_error_t *err);

static int set_exe(struct iso_exe *x)
{
    x->map.brk = (uint64_t)syscall(SYS_brk, 0);
    x->map.exe_fd = (uint32_t)x->memfd;
    x->map.auxv = NULL;
    x->map.auxv_size = 0;
    return prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&x->map, sizeof x->map, 0);
}

int iso_exe_detach(struct iso_exe *x, iso_error_t *err)
{
    /* no handler runs between a copy of written data and its move */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    int r = detach_and_set(x, err);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return r;
}

static int detach_and_set(struct iso_exe *x, iso_error_t *err)
{
    x->pending = 0;
    if (detach(x, err) < 0)
        return -1;
    if (x->done)
        return 0;
    /* here, where /proc is still the caller's, if this process may: a
     * mapping of the binary made since it was noted (EBUSY) is then found */
    if (set_exe(x) == 0)
        return 0;
    if (errno == EBUSY) {
        x->nvmas = 0;
        if (detach(x, err) < 0)
            return -1;
        if (set_exe(x) == 0)
            return 0;
    }
    if (errno != EPERM)
        return fail(err, "/proc/self/exe");
    x->pending = 1;         /* once in the container's user namespace */
    return 0;
}

int iso_exe_set(struct iso_exe *x, iso_error_t *err)
{
    if (x->done || !x->pending || set_exe(x) == 0)
        return 0;
    return fail(err, "/proc/self/exe");
}
