"""Real target processes for the engine tests.

Targets run under a real CPython 3.14: ``python3.14`` from PATH when present, else the Debian sid root
filesystem made by ``hack/py314-rootfs`` (targets then run chrooted in it, as in a container, and the tool
must cross that boundary). Nothing here is mocked.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from procs import APPS, REPO, become, default_signals, read_line  # noqa: F401  (shared with the tests that import them)
IN_ROOT_APPS = "/opt/wand-tests"


class Py314:
    """How to start target processes: directly (python3.14 on PATH) or chrooted into the sid rootfs."""

    def __init__(self, exe=None, root=None):
        self.exe, self.root = exe, root
        self.apps = APPS if root is None else IN_ROOT_APPS

    def host(self, target_path: str) -> str:
        """A path of the target's view as seen from the tests."""
        return target_path if self.root is None else self.root + target_path

    def argv(self, args, version="3.14", user=None):
        if self.root is None:
            exe = self.exe if version == "3.14" else shutil.which("python" + version)
            return [exe] + list(args)
        prefix = [shutil.which("chroot") or "/usr/sbin/chroot"] + (["--userspec=%d:%d" % (user, user)] if user else []) + [self.root]
        return prefix + ["/usr/bin/python" + version] + list(args)

    def app(self, name):
        return self.apps + "/" + name


class Target:
    def __init__(self, popen, pid, info):
        self.popen, self.pid, self.info = popen, pid, info

    def alive(self):
        return self.popen.poll() is None

    def stderr_so_far(self, wait=0.0):
        """What the target printed on stderr (its 'logs'), without blocking beyond ``wait``."""
        out = b""
        fd = self.popen.stderr.fileno()
        os.set_blocking(fd, False)
        deadline = time.monotonic() + wait
        while True:
            r, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            if not r:
                break
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            out += chunk
        return out.decode("utf-8", "replace")

    def stop(self):
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)


def provision_root():
    try:
        done = subprocess.run([os.path.join(REPO, "hack", "py314-rootfs")], capture_output=True, text=True,
                              timeout=1800)
    except subprocess.TimeoutExpired:
        return None, "hack/py314-rootfs timed out"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["hack/py314-rootfs failed"])[-1]
    return done.stdout.strip().splitlines()[-1], None


@pytest.fixture(scope="session")
def py314():
    exe = shutil.which("python3.14")
    if exe and not os.environ.get("WAND_FORCE_ROOTFS"):
        return Py314(exe=exe)
    root, why = provision_root()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("no CPython 3.14 for the tests: %s" % why)
        pytest.skip("no CPython 3.14: %s" % why)
    dest = root + IN_ROOT_APPS
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(APPS):
        if name.endswith(".py"):
            shutil.copy(os.path.join(APPS, name), os.path.join(dest, name))
            os.chmod(os.path.join(dest, name), 0o644)
    return Py314(root=root)


@pytest.fixture
def spawn(py314):
    """spawn(app, *args, version=, user=, env=, flags=) -> Target, started and READY (no sleeps)."""
    started = []

    def start(app, *args, version="3.14", user=None, env=None, flags=(), argv=None, ready_timeout=20):
        cmd = argv or py314.argv(list(flags) + [py314.app(app)] + list(args), version=version, user=user)
        full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {})
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                 start_new_session=True, preexec_fn=default_signals)
        line = read_line(popen.stdout, ready_timeout)
        if not line.startswith("READY"):
            popen.kill()
            raise AssertionError("target %s did not start: %r %s" % (app, line, popen.stderr.read(4000)))
        info = dict(kv.split("=", 1) for kv in line.split()[1:])
        # The READY line carries the pid as the target sees it; a chroot shares our pid namespace.
        target = Target(popen, int(info["pid"]), info)
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()




@pytest.fixture
def wand():
    """Run the real CLI in a subprocess: wand(*args, input=None, user=None) -> CompletedProcess."""

    def run(*args, input=None, user=None, timeout=60):
        cmd = [sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args]
        preexec = default_signals
        if user is not None:  # run as that uid, dropping root's groups first
            # Another user cannot read root's private interpreter (pyenv under /root): use the system one.
            system = shutil.which("python3", path="/usr/bin:/bin")
            if not system:
                pytest.skip("no system python3 that another user can run")
            cmd[0] = system
            preexec = become(user)
        env = dict(os.environ, PYTHONPATH=REPO)
        return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              preexec_fn=preexec, env=env)

    return run
