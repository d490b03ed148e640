"""The `isolate` command (also `python -m isolate`).

    isolate run [--rootfs DIR | --image REF] [--memory 64M] [--cpus 0.5] [--pids 64] [--cpuset 0-1]
                [--network none|host|bridge|NAME] [-p [IP:]HOST:PORT[/udp]]
                [--mount SRC:DST[:ro]]
                [--tmpfs DST[:SIZE]] [--env K=V] [--user U[:G]] [--hostname H]
                [-w DIR] [--readonly] [--cap-add CAP] [--cap-drop CAP]
                [--privileged] [--seccomp default|none|PROFILE] -- CMD [ARG...]
    isolate pull [--insecure] REF        from its registry (OCI distribution API)
    isolate push [--insecure] REF [DEST]
    isolate load -i FILE [--tag REF]      an OCI layout (dir or tar) or a docker save archive
    isolate images [-q]                   the images of the store
    isolate save -o FILE [--format oci|docker] REF
    isolate rmi REF [REF...]
    isolate prune                         layers and blobs no image uses
    isolate network create [--subnet CIDR] [--gateway IP] [--internal] [--ipv6] NAME
    isolate network ls                    the networks (bridges) of this host
    isolate network rm NAME [NAME...]
    isolate version

With --image and no CMD, `run` runs the image's Entrypoint and Cmd, as
`docker run IMAGE` does; with CMD, the Entrypoint and CMD.

`run` exits with the command's status, 128+N when a signal N ended it, as
shells do; 125 with one line naming the failing step when the container
could not be made (runc and docker's convention), 126 when the command cannot
be run, 127 when it does not exist.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from typing import NoReturn

EXIT_SETUP, EXIT_CANNOT_RUN, EXIT_NOT_FOUND = 125, 126, 127


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:     # usage errors are ours: 125, not 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_SETUP, f"{self.prog}: error: {message}\n")


def _mount(spec: str):
    from .mounts import Mount
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or parts[2:] not in ([], ["ro"], ["rw"]):
        raise argparse.ArgumentTypeError(f"{spec!r}: use SRC:DST or SRC:DST:ro")
    try:
        return Mount.bind(parts[0], parts[1], readonly=parts[2:] == ["ro"])
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{spec!r}: {e}") from None


def _tmpfs(spec: str):
    from .mounts import Mount
    target, _, size = spec.partition(":")
    try:
        return Mount.tmpfs(target, size=size or None)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{spec!r}: {e}") from None


def _env(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{spec!r}: use NAME=VALUE")
    return name, value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isolate", description="Linux containers from Python.")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a command in a fresh container",
                         description="Run CMD in a fresh container and exit with its status. "
                                     "The options mean what Container's keyword arguments mean.")
    run.add_argument("--rootfs", metavar="DIR",
                     help="the container's / (copy-on-write); default: the host's, read-only")
    run.add_argument("--image", metavar="REF",
                     help="an image of the store as / (see isolate load), copy-on-write")
    run.add_argument("--readonly", action="store_true",
                     help="make --rootfs or --image read-only instead")
    run.add_argument("--memory", metavar="SIZE", help="memory limit, like 64M (cgroups)")
    run.add_argument("--cpus", metavar="N", type=float, help="CPU limit, like 0.5 (cgroups)")
    run.add_argument("--pids", metavar="N", type=int, help="process limit (cgroups)")
    run.add_argument("--cpuset", metavar="CPUS", help="the CPUs it may use, like 0-1,3 (cgroups)")
    run.add_argument("--network", "--net", metavar="none|host|bridge|NAME",
                     help="none: own network namespace with lo (default); host: the host's; "
                          "bridge: the default network; NAME: a network (isolate network create)")
    run.add_argument("--publish", "-p", metavar="[IP:]HOST:PORT[/udp]", action="append",
                     default=[], help="publish a container port on the host (repeatable)")
    run.add_argument("--mount", metavar="SRC:DST[:ro]", type=_mount, action="append", default=[],
                     help="bind a host path (repeatable)")
    run.add_argument("--tmpfs", metavar="DST[:SIZE]", type=_tmpfs, action="append", default=[],
                     help="a fresh tmpfs, SIZE like 64M (repeatable)")
    run.add_argument("--device", metavar="HOST[:CONTAINER]", action="append", default=[],
                     help="give a host device node, as docker run --device (repeatable)")
    run.add_argument("--storage-size", metavar="SIZE", default="1G",
                     help="the most the writable layer, /tmp and /run each hold (RAM; default 1G)")
    run.add_argument("--env", "-e", metavar="NAME=VALUE", type=_env, action="append",
                     help="the command's environment (repeatable; default PATH and HOME)")
    run.add_argument("--user", "-u", metavar="UID[:GID]", help="user inside, by id or name")
    run.add_argument("--hostname", metavar="NAME")
    run.add_argument("--workdir", "-w", metavar="DIR",
                     help="working directory (default: the image's, or /)")
    run.add_argument("--cap-add", metavar="CAP", action="append", default=[])
    run.add_argument("--cap-drop", metavar="CAP", action="append", default=[])
    run.add_argument("--privileged", action="store_true",
                     help="the caller's capabilities; no masked paths, no seccomp")
    run.add_argument("--seccomp", metavar="default|none|PROFILE", default="default",
                     help="the seccomp filter: the default, none, or an OCI JSON profile file")
    run.add_argument("--interactive", "-i", action="store_true",
                     help="keep stdin open (it always is; for docker's -it)")
    run.add_argument("--tty", "-t", action="store_true",
                     help="run CMD on a pseudo-terminal of the container's own, relayed to ours")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")

    load = sub.add_parser("load", help="load images from an archive into the store",
                          description="Load an OCI image layout (a directory or a tar) or a "
                                      "`docker save` archive into isolate's store.")
    load.add_argument("--input", "-i", metavar="FILE", required=True)
    load.add_argument("--tag", metavar="REF", help="name the (one) image of the archive")
    pull = sub.add_parser("pull", help="pull an image from its registry into the store")
    pull.add_argument("--insecure", action="store_true",
                      help="plain HTTP (a registry on the loopback, say)")
    pull.add_argument("ref", metavar="REF")
    push = sub.add_parser("push", help="push an image of the store to a registry")
    push.add_argument("--insecure", action="store_true", help="plain HTTP")
    push.add_argument("ref", metavar="REF")
    push.add_argument("dest", metavar="DEST", nargs="?",
                      help="the reference to push it as (default: REF)")
    ls = sub.add_parser("images", help="list the images of the store")
    ls.add_argument("--quiet", "-q", action="store_true", help="only the image ids")
    save = sub.add_parser("save", help="write an image of the store to an archive")
    save.add_argument("--output", "-o", metavar="FILE", required=True)
    save.add_argument("--format", choices=("oci", "docker"), default="oci")
    save.add_argument("ref", metavar="REF")
    rmi = sub.add_parser("rmi", help="remove images' references (prune frees their layers)")
    rmi.add_argument("refs", metavar="REF", nargs="+")
    sub.add_parser("prune", help="remove the layers and blobs no image uses")

    network = sub.add_parser("network", help="make, list and remove networks",
                             description="Networks are bridges that containers join with "
                                         "run --network NAME (root only).")
    nsub = network.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = nsub.add_parser("create", help="make a network")
    create.add_argument("--subnet", metavar="CIDR", help="its range, like 10.89.0.0/24")
    create.add_argument("--gateway", metavar="IP", help="the bridge's address")
    create.add_argument("--internal", action="store_true", help="no way out or in")
    create.add_argument("--ipv6", action="store_true", help="an IPv6 range too")
    create.add_argument("name", metavar="NAME")
    nsub.add_parser("ls", help="list the networks")
    rm = nsub.add_parser("rm", help="remove networks (refused while containers use them)")
    rm.add_argument("names", metavar="NAME", nargs="+")

    sub.add_parser("version", help="versions and the kernel features found",
                   description="Print isolate's version and what this kernel offers.")
    return p


def _run(args: argparse.Namespace) -> int:
    import isolate
    if args.rootfs is not None and args.image is not None:
        print("isolate run: give --rootfs or --image, not both", file=sys.stderr)
        return EXIT_SETUP
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    argv = cmd      # what runs: with an image, its Entrypoint, then CMD or its Cmd
    if args.image is not None:
        try:
            argv = isolate.get_image(args.image).command(cmd)
        except isolate.ImageError as e:
            print(f"isolate: {e}", file=sys.stderr)
            return EXIT_SETUP
    if not argv:
        print("isolate run: no command given (isolate run [OPTIONS] -- CMD [ARG...])",
              file=sys.stderr)
        return EXIT_SETUP
    options = dict(rootfs=args.rootfs, image=args.image, readonly=args.readonly, network=args.network,
                   mounts=[*args.mount, *args.tmpfs], cwd=args.workdir, user=args.user,
                   hostname=args.hostname, cap_add=args.cap_add, cap_drop=args.cap_drop,
                   privileged=args.privileged,
                   seccomp=None if args.seccomp == "none" else args.seccomp,
                   memory=args.memory, cpus=args.cpus, pids=args.pids, cpuset=args.cpuset,
                   devices=args.device, storage_size=args.storage_size,
                   ports=args.publish or None)
    if args.env is not None:
        options["env"] = dict(args.env)
    try:
        if args.tty:
            returncode = _interactive(argv, options)
        else:       # isolate.run puts an image's Entrypoint first itself
            returncode = isolate.run(cmd or None, **options).returncode
    except (FileNotFoundError, PermissionError) as e:
        if e.filename == argv[0]:        # the command itself, as a shell reports it
            missing = isinstance(e, FileNotFoundError)
            print(f"isolate: {argv[0]}: {'command not found' if missing else e.strerror}",
                  file=sys.stderr)
            return EXIT_NOT_FOUND if missing else EXIT_CANNOT_RUN
        print(f"isolate: {e}", file=sys.stderr)
        return EXIT_SETUP
    except (OSError, ValueError, TypeError, ImportError, isolate.ImageError,
            isolate.NetworkError) as e:
        print(f"isolate: {e}", file=sys.stderr)
        return EXIT_SETUP
    return returncode if returncode >= 0 else 128 - returncode


def _network_verb(args: argparse.Namespace) -> int:
    """network create|ls|rm: 0, or 1 with the error on stderr."""
    import isolate
    try:
        if args.action == "create":
            net = isolate.Network(args.name, subnet=args.subnet, gateway=args.gateway,
                                  internal=args.internal, ipv6=args.ipv6)
            print(net.name)
        elif args.action == "ls":
            print(f"{'NAME':<24} {'SUBNET':<18} {'GATEWAY':<15} {'BRIDGE':<15} CONTAINERS")
            for net in isolate.networks():
                print(f"{net.name:<24} {str(net.subnet):<18} {str(net.gateway or '-'):<15} "
                      f"{net.bridge:<15} {len(net.containers())}")
        else:
            for name in args.names:
                found = {n.name: n for n in isolate.networks()}
                if name not in found:
                    raise isolate.NetworkError(f"no network named {name!r}", network=name)
                found[name].close()
                print(name)
    except (isolate.NetworkError, OSError, ValueError, TypeError) as e:
        print(f"isolate: {e}", file=sys.stderr)
        return 1
    return 0


def _images_verb(args: argparse.Namespace) -> int:
    """load, images, save, rmi, prune: 0, or 1 with the error on stderr."""
    import isolate
    try:
        if args.verb == "load":
            for img in isolate.load(args.input, tag=args.tag):
                print(f"Loaded image: {img.ref or img.digest}")
        elif args.verb == "pull":
            img = isolate.pull(args.ref, insecure=args.insecure)
            print(f"Digest: {img.digest}\n{img.ref or img.digest}")
        elif args.verb == "push":
            digest = isolate.push(args.ref, args.dest, insecure=args.insecure)
            print(f"{args.dest or args.ref}: digest: {digest}")
        elif args.verb == "images":
            found = isolate.images()
            if args.quiet:
                for img in found:
                    print(img.id[7:19])
                return 0
            print(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<12}  {'LAYERS':>6} {'SIZE':>10}")
            for img in found:
                repo, _, tag = img.ref.rpartition(":") if img.ref else ("<none>", "", "<none>")
                print(f"{repo:<40} {tag:<16} {img.id[7:19]:<12}  {len(img.layers):>6} "
                      f"{_human(img.size):>10}")
        elif args.verb == "save":
            isolate.save(args.ref, args.output, format=args.format)
        elif args.verb == "rmi":
            for ref in args.refs:
                isolate.rmi(ref)
                print(f"Untagged: {ref}")
        else:
            print(f"Total reclaimed space: {_human(isolate.prune())}")
    except (isolate.ImageError, OSError, ValueError) as e:
        print(f"isolate: {e}", file=sys.stderr)
        return 1
    return 0


def _human(n: int) -> str:
    x = float(n)
    for unit in ("B", "kB", "MB"):
        if x < 1000:
            return f"{x:.0f}{unit}" if unit == "B" else f"{x:.1f}{unit}"
        x /= 1000
    return f"{x:.1f}GB"


def _interactive(cmd: list[str], options: dict) -> int:
    """CMD on a pseudo-terminal of the container's own, relayed to ours (in
    raw mode): keys, ^C and ^Z go inside, and a resize of our terminal
    reaches it (SIGWINCH)."""
    import fcntl
    import signal
    import termios
    import tty

    import isolate
    with isolate.Container(**options) as c:
        master, slave = c.open_pty()
        try:
            ours = sys.stdin.fileno() if os.isatty(sys.stdin.fileno()) else None

            def resize(*_: object) -> None:
                if ours is not None:
                    size = fcntl.ioctl(ours, termios.TIOCGWINSZ, b"\0" * 8)
                    fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            resize()
            p = c.spawn(cmd, stdin=slave, stdout=slave, stderr=slave, tty=True)
            os.close(slave)
            slave = -1
            saved = termios.tcgetattr(ours) if ours is not None else None
            old = signal.signal(signal.SIGWINCH, resize)
            pidfd = os.pidfd_open(p.pid)
            try:
                if ours is not None:
                    tty.setraw(ours)
                _relay(master, pidfd)
            finally:
                os.close(pidfd)
                signal.signal(signal.SIGWINCH, old)
                if ours is not None and saved is not None:
                    termios.tcsetattr(ours, termios.TCSAFLUSH, saved)
            return p.wait()     # leaving the with: what it left running ends too
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)


def _relay(master: int, pidfd: int) -> None:
    """Our stdin to the terminal's master, its output to our stdout, until
    the command ends (pidfd) and its output is read, or every process
    inside has closed the terminal."""
    import selectors
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(pidfd, selectors.EVENT_READ)
    ended = False
    while True:
        events = sel.select(0.05 if ended else None)
        if ended and not any(key.fd == master for key, _ in events):
            return          # the command is gone and its output drained
        for key, _ in events:
            if key.fd == pidfd:
                ended = True
                sel.unregister(pidfd)
            elif key.fd == master:
                try:
                    data = os.read(master, 65536)
                except OSError:         # EIO: the last holder of the slave is gone
                    data = b""
                if not data:
                    return
                _write_all(stdout, data)
            else:
                data = os.read(stdin, 65536)
                if not data:
                    sel.unregister(stdin)
                    _write_all(master, b"\x04")     # end of input: ^D inside
                else:
                    _write_all(master, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _version() -> int:
    import isolate
    from . import _config

    def feature(path: str) -> str:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return "absent"

    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        layout = "v2 (unified)"
    elif os.path.isdir("/sys/fs/cgroup/unified"):
        layout = "hybrid (v1 controllers, v2 mount at /sys/fs/cgroup/unified)"
    elif os.path.isdir("/sys/fs/cgroup/memory"):
        layout = "v1"
    else:
        layout = "none found"
    try:
        seccomp = "libseccomp found" if _config.make_config().seccomp else "off"
    except ImportError:
        seccomp = "libseccomp missing (seccomp=None only)"
    print(f"isolate {isolate.__version__} (Python {platform.python_version()})")
    print(f"kernel: Linux {platform.release()} {platform.machine()}")
    print(f"cgroups: {layout}")
    print(f"user namespaces: max {feature('/proc/sys/user/max_user_namespaces')}, "
          f"unprivileged clone {feature('/proc/sys/kernel/unprivileged_userns_clone')}")
    print(f"seccomp: {seccomp}")
    print(f"caller: uid {os.geteuid()} ({'root' if os.geteuid() == 0 else 'rootless: a user namespace'})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verb == "run":
        return _run(args)
    if args.verb in ("load", "images", "save", "rmi", "prune", "pull", "push"):
        return _images_verb(args)
    if args.verb == "network":
        return _network_verb(args)
    return _version()


if __name__ == "__main__":
    sys.exit(main())
