"""A first look at isolate: one container on the host's own root, read-only.

Run as root:  python3 examples/demo.py
"""
import isolate
from isolate import Container, Mount


def show(title, result):
    print(f"--- {title}")
    print(result.stdout.rstrip() or result.stderr.rstrip())


with Container(hostname="demo", mounts=[Mount.tmpfs("/tmp/scratch", size="16M")]) as c:
    print(c)
    show("processes the container sees", c.run(["ps", "-o", "pid,args"], capture_output=True, text=True))
    show("hostname", c.run(["hostname"], capture_output=True, text=True))
    show("network interfaces", c.run(["ls", "/sys/class/net"], capture_output=True, text=True))
    show("writing to / (the host's root, read-only here)",
         c.run(["touch", "/etc/isolate-demo"], capture_output=True, text=True))
    show("writing to a private tmpfs",
         c.run(["sh", "-c", "echo hello > /tmp/scratch/f && cat /tmp/scratch/f"], capture_output=True, text=True))

r = isolate.run(["sh", "-c", "echo one-shot container: pid $$ of $(ls -d /proc/[0-9]* | wc -l)"],
                capture_output=True, text=True)
show("isolate.run", r)
