"""Build of isolate's Cython extension and of the init program it carries.

csrc/init.c is linked statically into `isolate-init`, whose bytes are embedded
in the extension (.incbin), so an installed isolate needs no helper file.
ISOLATE_DEBUG=1 builds with -O0 -g and Cython line tracing.
"""
import os
import platform
import shlex
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("ISOLATE_DEBUG") == "1"

WARNINGS = [
    "-Wall",
    "-Werror=implicit-function-declaration",
    "-Werror=incompatible-pointer-types",
    "-Werror=int-conversion",
    "-Werror=return-type",
    "-Werror=format-security",
    "-Werror=vla",
]
CFLAGS = ["-std=gnu11", "-D_GNU_SOURCE", "-fvisibility=hidden", *WARNINGS]
CFLAGS += ["-O0", "-g", "-DISOLATE_DEBUG=1"] if DEBUG else ["-O2"]


NOLIBC = ["-DISO_NOLIBC", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
          "-fno-tree-loop-distribute-patterns", "-fno-asynchronous-unwind-tables",
          "-fno-pie", "-no-pie", "-U_FORTIFY_SOURCE"]


def build_init(out):
    """Link isolate-init statically: without libc on x86-64 (an exec of it is
    about four times cheaper), with the static libc elsewhere."""
    cc = shlex.split(os.environ.get("CC", "cc"))
    base = [*cc, "-static", "-Os", "-s", "-Icsrc", *CFLAGS, "-o", out]
    attempts = []
    if platform.machine() in ("x86_64", "AMD64"):
        attempts.append([*base, *NOLIBC, "csrc/init.c", "csrc/exec.c", "csrc/nolibc.c", "-lgcc"])
    attempts.append([*base, "csrc/init.c", "csrc/exec.c"])
    for cmd in attempts:
        print(" ".join(cmd))
        try:
            subprocess.check_call(cmd)
            return
        except (OSError, subprocess.CalledProcessError) as e:
            err = e
    raise SystemExit(
        f"building isolate-init failed ({err}); it needs a C compiler and, outside "
        "x86-64, a static libc (Debian: apt-get install gcc libc6-dev)"
    )


class BuildExt(build_ext):
    def build_extensions(self):
        os.makedirs(self.build_temp, exist_ok=True)
        init = os.path.abspath(os.path.join(self.build_temp, "isolate-init"))
        build_init(init)
        for ext in self.extensions:
            ext.define_macros.append(("ISO_INIT_PATH", f'"{init}"'))
            ext.depends = [*ext.depends, init]
        super().build_extensions()


macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
extensions = [
    Extension(
        "isolate._isolate",
        ["src/_isolate.pyx", "csrc/child.c", "csrc/exe.c"],
        include_dirs=["csrc"],
        depends=["csrc/isolate.h", "csrc/init.c", "csrc/exec.c", "csrc/nolibc.c"],
        define_macros=macros,
        extra_compile_args=CFLAGS,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "linetrace": DEBUG},
    ),
    cmdclass={"build_ext": BuildExt},
)
