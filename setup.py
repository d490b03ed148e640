"""Build of isolate's Cython extension and of the init program it carries.

csrc/init.c is linked statically into `isolate-init`, whose bytes are embedded
in the extension (.incbin), so an installed isolate needs no helper file.
ISOLATE_DEBUG=1 builds with -O0 -g and Cython line tracing.
"""
import os
import platform
import shlex
import subprocess
import sys

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


#: isolate-runc, the OCI runtime. Engines run it three or four times per
#: container, so its Python starts isolated and without site (-I -S): no .pth
#: file runs, the site directories are searched as they are, and only an
#: install that needs its .pth (an editable one) pays for site. A shell
#: script, since pip drops a "#!python -I -S" line's options; the Python is
#: the one building, else python3 from PATH.
RUNC_LAUNCHER = """#!/bin/sh
py={python}
[ -x "$py" ] || py=python3
exec "$py" -I -S -c 'import site, sys
sys.argv[0] = "isolate-runc"
sys.path.extend(site.getsitepackages())
try:
    from isolate.runc import main
except ImportError:
    site.main()
    from isolate.runc import main
main()' "$@"
"""


def runc_launcher():
    path = os.path.join("build", "launcher", "isolate-runc")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(RUNC_LAUNCHER.format(python=shlex.quote(sys.executable)))
    os.chmod(path, 0o755)
    return path


macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
extensions = [
    Extension(
        "isolate._isolate",
        ["src/_isolate.pyx", "csrc/child.c", "csrc/exe.c", "csrc/net.c"],
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
    scripts=[runc_launcher()],
)
