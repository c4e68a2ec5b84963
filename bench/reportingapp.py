"""A benchmark's app: a bench/apps script run pinned to one CPU, under the provisioned 3.14 root (chroot) or a
given python3.14, that prints ``READY pid=N`` and then a report line every 0.1 s; a thread keeps the latest.
Shared by bench_observe_local.py (hot_app.py) and bench_profile_ab.py (count_app.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_ROOT_DIR = "/opt/wand-bench"
DEFAULT_ROOTFS = os.path.expanduser("~/.cache/kubectl-wand/py314-rootfs")


def install(rootfs, script):
    """Copy bench/apps/``script`` into the root, where App runs it from; refuse a root without python3.14."""
    if not os.path.exists(os.path.join(rootfs, "usr/bin/python3.14")):
        raise SystemExit("no python3.14 in %s (hack/py314-rootfs makes it) and no --python" % rootfs)
    os.makedirs(rootfs + IN_ROOT_DIR, exist_ok=True)
    shutil.copy(os.path.join(REPO, "bench", "apps", script), rootfs + IN_ROOT_DIR + "/" + script)


class App:
    """One app process; ``parse`` turns a report line into what ``report`` returns."""

    def __init__(self, args, script, cpu, parse, prefix=()):
        """``args``: the bench's (.python, or .rootfs that install() prepared); ``prefix``: argv that runs
        before taskset and execs it (one process all along)."""
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        argv = [args.python, os.path.join(REPO, "bench", "apps", script)] if args.python else [
            chroot, args.rootfs, "/usr/bin/python3.14", IN_ROOT_DIR + "/" + script]
        self.script, self.parse = script, parse
        self.popen = subprocess.Popen(list(prefix) + ["taskset", "-c", str(cpu)] + argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                      env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
        line = self.popen.stdout.readline().decode()
        if not line.startswith("READY pid="):
            raise SystemExit("%s did not start: %r" % (script, line))
        self.pid = int(line.split("=")[1])
        self.latest = None
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.popen.stdout:
            report = self.parse(raw.split())
            with self.changed:
                self.latest = report
                self.changed.notify_all()

    def report(self):
        """The next report the app writes (they come every 0.1 s)."""
        with self.changed:
            seen = self.latest
            if not self.changed.wait_for(lambda: self.latest is not seen, timeout=10):
                raise SystemExit("%s stopped reporting" % self.script)
            return self.latest

    def stop(self):
        self.popen.kill()
        self.popen.wait(timeout=10)
