"""Build of isolate's Cython extension and of the init program it carries.

csrc/init.c is linked statically into `isolate-init`, whose bytes are embedded
in the extension (.incbin), so an installed isolate needs no helper file.
ISOLATE_DEBUG=1 builds with -O0 -g and Cython line tracing.
"""
import os
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


class BuildExt(build_ext):
    def build_extensions(self):
        os.makedirs(self.build_temp, exist_ok=True)
        init = os.path.abspath(os.path.join(self.build_temp, "isolate-init"))
        cc = shlex.split(os.environ.get("CC", "cc"))
        sources = ["csrc/init.c", "csrc/exec.c"]
        cmd = [*cc, "-static", "-Os", "-s", "-Icsrc", *CFLAGS, "-o", init, *sources]
        print(" ".join(cmd))
        try:
            subprocess.check_call(cmd)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(
                f"building isolate-init failed ({e}); it needs a C compiler and a static "
                "libc (Debian: apt-get install gcc libc6-dev)"
            ) from e
        for ext in self.extensions:
            ext.define_macros.append(("ISO_INIT_PATH", f'"{init}"'))
            ext.depends = [*ext.depends, init]
        super().build_extensions()


macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
extensions = [
    Extension(
        "isolate._isolate",
        ["src/_isolate.pyx", "csrc/child.c", "csrc/exec.c"],
        include_dirs=["csrc"],
        depends=["csrc/isolate.h", "csrc/init.c"],
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
