"""Trust: no privilege handed to the target, nothing written into the app, every fault named and cleaned up.

Real CPython 3.14 targets (tests/conftest.py); the agent runs in this process exactly as the local
transport runs it, or the real CLI runs in a subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import APPS, become, read_line
from leftovers import private_dirs

pytestmark = pytest.mark.py314


def agent(request):
    from kubectl_wand.agent import main
    return main.handle(request)


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacker and the target run as another uid (uid 1000)")


def start_target(spawn, py314, app, *args, user=1000, **kw):
    if py314.root:
        return spawn(app, *args, user=user, **kw)
    return spawn(app, *args, argv=["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups",
                                   py314.exe, py314.app(app)] + list(args), **kw)


def host_racer(base, prefix, canary_file, canary_dir):
    """The attacker in our own filesystem view (where the loader-mode placeholder lives), as uid 1000."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if not python:
        pytest.skip("no system python3 for the attacker")
    proc = subprocess.Popen([python, os.path.join(APPS, "racer.py"), base, prefix, canary_file, canary_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=become(1000))
    line = read_line(proc.stdout, 20)
    assert line.startswith("READY"), (line, proc.stderr.read(2000))
    return proc


def racer_swaps(popen):
    popen.send_signal(signal.SIGTERM)
    out = read_line(popen.stdout, 10)
    popen.wait(10)
    assert out.startswith("SWAPS"), out
    return {k: int(v) for k, v in (kv.split("=") for kv in out.split()[1:])}


def remove_debris(py314, pid):
    """What the attacker renamed out of our reach (its own files and symlinks)."""
    for base in {"/tmp", py314.host("/tmp")}:
        for name in os.listdir(base):
            if name.startswith("wand-%d-" % pid):
                path = os.path.join(base, name)
                if os.path.islink(path) or not os.path.isdir(path):
                    os.unlink(path)
                else:
                    shutil.rmtree(path)


# -- 1. the symlink race -----------------------------------------------------------------------------------

def test_symlink_race_never_makes_root_touch_another_file(spawn, py314, tmp_path):
    """A process of the target's uid swaps every private file (and every other private directory) for a
    symlink as soon as it appears, while root injects again and again: root must never chown, chmod or
    create anything through those symlinks."""
    needs_root()
    app = start_target(spawn, py314, "http_app.py", flags=["-S"])  # -S: attach ships debugpy too
    prefix = "wand-%d-" % app.pid
    canary_file = tmp_path / "canary"
    canary_file.write_text("root's own file\n")
    os.chmod(canary_file, 0o644)
    canary_dir = tmp_path / "canary-dir"
    canary_dir.mkdir(mode=0o755)
    before = os.stat(canary_file)
    racers = [host_racer("/tmp", prefix, str(canary_file), str(canary_dir))]
    if py314.root:  # the attacker inside the target's own view too
        inside = start_target(spawn, py314, "racer.py", "/tmp", prefix, str(canary_file), str(canary_dir))
        racers.append(inside.popen)
    from kubectl_wand.agent import main
    from kubectl_wand.transport.local import ship
    # The attacker spares the bootstrap and socket of every third directory: that is when attach ships debugpy.
    requests = [{"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 2}] * 2
    requests = (requests + [{"op": "attach", "pid": app.pid, "port": 0, "timeout": 10}]) * 8
    results = []
    try:
        for request in requests:
            try:  # the attacker may well break an injection; what matters is what root did meanwhile
                results.append(main.handle(request, fetch_blob=ship))
            except Exception as exc:
                results.append({"status": "exception", "error": repr(exc)})
    finally:
        swaps = [racer_swaps(r) for r in racers]
        remove_debris(py314, app.pid)
    after = os.stat(canary_file)
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (0, 0, 0o644), \
        "root changed the canary through a symlink: uid %d mode %o" % (after.st_uid, stat.S_IMODE(after.st_mode))
    assert after.st_ino == before.st_ino and canary_file.read_text() == "root's own file\n"
    assert os.listdir(canary_dir) == [], "root created files through a symlinked directory"
    assert sum(s["file"] for s in swaps) > 10 and sum(s["dir"] for s in swaps) > 5, swaps  # it really ran
    assert all(r["status"] in ("ok", "error", "pending", "listening", "already") for r in results), results
    # The attacker's files are its own business; with it gone, the target is served as before.
    assert agent({"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 10})["value"] == "42"
