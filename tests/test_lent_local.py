"""The chroot mode of agent/runtime.py and agent/lent.py (what --ephemeral runs in its debug container) against
real CPython 3.14 targets on this machine: each target runs as uid 1000 in its own mount namespace (unshare -m,
its root the py314 rootfs with a /proc of our PID namespace), as an app container looks from an ephemeral
container of its pod. The CLI (root, CAP_SYS_CHROOT, CAP_SYS_PTRACE) reaches it as pid/N."""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from leftovers import private_dirs

pytestmark = pytest.mark.py314
IN_OTHER_NS = 'mount -t proc proc "$0/proc" && exec %s --userspec=1000:1000 "$0" /usr/bin/python3.14 "$@"'


@pytest.fixture
def contained(py314, spawn):
    """spawn(app, *args): the app as uid 1000 in another mount namespace (same PID namespace)."""
    if py314.root is None:
        pytest.skip("needs the py314 root filesystem (a root for the target of its own)")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to give the target a mount namespace of its own")

    def start(app, *args, flags=()):
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", IN_OTHER_NS % chroot, py314.root,
                *flags, py314.app(app)] + list(args)
        return spawn(app, argv=argv)
    return start


def our_tmp_leftovers(app):
    """Our private directories for this target in our /tmp (private.dir_name: named after the target's pid, the
    same in its namespace here): other tests' targets, run at the same time, have theirs."""
    return [n for n in os.listdir("/tmp") if n.startswith(("wand-%d-" % app.pid, "wand-check-%d-" % app.pid))]


def test_exec_py_and_check_through_chroot_and_lent_files(contained, wand, py314):
    app = contained("http_app.py")
    ran = wand("exec-py", "pid/%d" % app.pid, "--", "import os; os.getuid(), os.getpid()")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == repr((1000, app.pid))
    rows = {r["check"]: r for r in json.loads(wand("check", "pid/%d" % app.pid, "-o", "json").stdout)["rows"]}
    assert rows["injector"]["status"] == "ok" and "chrooted" in rows["injector"]["detail"], rows
    assert rows["private files"]["status"] == "ok" and "nothing written" in rows["private files"]["detail"], rows
    assert private_dirs(py314, app.pid) == []  # nothing in the target's filesystem...
    assert our_tmp_leftovers(app) == []  # ...nor left in ours
    assert app.stderr_so_far() == ""  # nothing in the app's logs


def test_pending_injection_keeps_its_script_reachable_until_the_target_reads_it(contained, wand, py314):
    """The main thread is in time.sleep(4): the injection is still pending at the 1 s deadline. The agent (in
    the CLI process here) answers, then keeps the helper until the target has read the script: when the
    thread wakes it finds nobody waiting and returns silently, with nothing in the app's stderr."""
    app = contained("sleeper.py", "4")
    ready = time.monotonic()  # it sleeps 4 s from here
    result = wand("exec-py", "pid/%d" % app.pid, "--timeout", "1", "--", "print('never')", timeout=60)
    assert result.returncode == 5
    assert "still pending after 1s" in result.stderr and "/proc/" in result.stderr, result.stderr
    # The CLI process (the agent, here) stayed until the sleeper woke and read the script: not before.
    assert time.monotonic() - ready >= 3.5
    assert "WOKE" in app.popen.stdout.readline().decode()
    assert app.stderr_so_far(wait=1.0) == ""  # no "Can't open debugger script", no traceback
    assert our_tmp_leftovers(app) == [] and private_dirs(py314, app.pid) == []


def test_attach_ships_debugpy_into_lent_files(contained, wand, py314):
    """A target without debugpy (-S: no site-packages) gets the CLI's own, unpacked into the lent directory in
    subdirectories, written with the target's uid, and imported through /proc/<helper>/root."""
    import socket
    app = contained("http_app.py", flags=["-S"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = wand("attach", "pid/%d" % app.pid, "--port", port, "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["status"] == "listening" and info["source"] == "shipped", info
    assert our_tmp_leftovers(app) == [] and private_dirs(py314, app.pid) == []
    assert app.stderr_so_far() == ""

