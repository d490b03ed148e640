/* Just enough of a C runtime for isolate-init on x86-64, built with
 * -nostdlib -static: the entry point, the syscall instruction, and the few
 * functions a compiler may call on its own (memcpy, memset). */
#define _GNU_SOURCE
#include <stddef.h>
#include <sys/syscall.h>

#include "isolate.h"

#if !defined(__x86_64__)
#error "nolibc.c supports x86-64; other architectures build isolate-init with libc"
#endif

int main(int argc, char **argv, char **envp);

long iso_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    return iso_raw_syscall(n, a, b, c, d, e, f);
}

/* clone(flags) onto stack_top (16-byte aligned): the child calls fn(arg)
 * there and exits with what it returns; the parent gets the child's pid or
 * -errno. Without CLONE_SETTLS, r8 (tls) carries arg across the syscall. */
long iso_clone_fn(unsigned long flags, void *stack_top, int (*fn)(void *), void *arg);
__asm__(".text\n"
        ".globl iso_clone_fn\n"
        ".type iso_clone_fn,@function\n"
        "iso_clone_fn:\n"
        "    mov %rdx, %r9\n"          /* fn */
        "    mov %rcx, %r8\n"          /* arg */
        "    xor %edx, %edx\n"         /* parent_tid */
        "    xor %r10d, %r10d\n"       /* child_tid */
        "    mov $56, %eax\n"          /* SYS_clone */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n"
        "    mov %r8, %rdi\n"
        "    call *%r9\n"
        "    mov %eax, %edi\n"
        "    mov $60, %eax\n"          /* SYS_exit */
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n"
        ".size iso_clone_fn, .-iso_clone_fn\n");

__attribute__((used, noreturn)) void iso_start_c(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    int r = main(argc, argv, envp);
    for (;;)
        iso_sys6(SYS_exit_group, r, 0, 0, 0, 0, 0);
}

__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call iso_start_c\n"
        "    hlt\n");

void *memcpy(void *dst, const void *src, size_t n)
{
    char *d = dst;
    const char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    char *d = dst;
    while (n--)
        *d++ = (char)c;
    return dst;
}
