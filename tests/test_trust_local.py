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

from procs import APPS, become, default_signals, read_line, wait_for
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


# -- 2. nothing written into the app: a queued bootstrap stays until the target takes it ----------------------



def queued(pid):
    """The bootstrap path queued in ``pid``'s main thread (read from its memory), or None."""
    from kubectl_wand.agent import procfs, slot
    current = slot.read(procfs.Proc(pid))
    return current.path if current is not None and current.pending else None


def cli(*args):
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO),
                            cwd=REPO, preexec_fn=default_signals)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet_and_clean(app, py314):
    """The app's log stays empty and no private directory is left, once its main thread has run."""
    assert wait_for(lambda: private_dirs(py314, app.pid) == []), private_dirs(py314, app.pid)
    logs = app.stderr_so_far(wait=0.3)
    assert logs == "", logs
    assert app.alive()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_cli_gone_while_pending_leaves_the_bootstrap_for_the_target(spawn, py314, how):
    app = spawn("napper.py")
    run = cli("exec-py", "pid/%d" % app.pid, "--timeout", "60", "--", "print('must never run')")
    try:
        assert wait_for(lambda: queued(app.pid)), "the injection was never queued"
        run.send_signal(how)
        _out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
    left = private_dirs(py314, app.pid)
    assert len(left) == 1 and os.path.exists(left[0] + "/bootstrap.py"), left  # still queued: it stays
    if how == signal.SIGINT:  # the CLI says so, and where (docs/security.md: the pending case)
        assert "interrupted while the injection into process %d was pending" % app.pid in err.decode(), err
        assert "/%s/bootstrap.py" % os.path.basename(left[0]) in err.decode(), err
    os.kill(app.pid, signal.SIGUSR1)  # the main thread passes a safe point: the bootstrap runs, finds nobody
    quiet_and_clean(app, py314)
    assert queued(app.pid) is None


@pytest.mark.parametrize("op", ["exec", "attach"])
@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -5, "soon"])
def test_bad_timeouts_are_refused_before_the_target_is_touched(spawn, py314, op, timeout):
    app = spawn("napper.py")
    result = agent({"op": op, "pid": app.pid, "code": "1", "port": 0, "timeout": timeout})
    assert result["status"] == "error" and result["kind"] == "usage", result
    assert "--timeout must be a positive number of seconds" in result["error"]
    assert queued(app.pid) is None and private_dirs(py314, app.pid) == []
    os.kill(app.pid, signal.SIGUSR1)
    quiet_and_clean(app, py314)


def test_attach_with_a_negative_timeout_is_a_usage_error(spawn, py314, wand):
    app = spawn("napper.py")
    result = wand("attach", "pid/%d" % app.pid, "--timeout", "-5")
    assert result.returncode == 2, result.stderr
    assert queued(app.pid) is None and private_dirs(py314, app.pid) == []


def test_second_injection_while_one_is_pending_adopts_it(spawn, py314):
    app = spawn("napper.py")
    first = agent({"op": "exec", "pid": app.pid, "code": "print('first')", "timeout": 1})
    assert first["status"] == "pending", first
    [pending_dir] = private_dirs(py314, app.pid)
    results = []
    import threading
    second = threading.Thread(target=lambda: results.append(
        agent({"op": "exec", "pid": app.pid, "code": "print('second')", "timeout": 60})))
    second.start()
    try:
        # it waits on the queued bootstrap's directory instead of queueing a second script over it
        assert wait_for(lambda: os.path.exists(pending_dir + "/s")), private_dirs(py314, app.pid)
        assert private_dirs(py314, app.pid) == [pending_dir]
        os.kill(app.pid, signal.SIGUSR1)
    finally:
        second.join(90)
    assert results and results[0]["status"] == "ok", results
    assert results[0]["stdout"] == "second\n"
    quiet_and_clean(app, py314)


def test_a_target_that_exits_while_pending_is_reaped_by_the_next_run(spawn, py314):
    app = spawn("napper.py")
    assert agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 1})["status"] == "pending"
    assert len(private_dirs(py314, app.pid)) == 1
    app.stop()  # it never takes the bootstrap now
    other = spawn("busy.py")
    assert agent({"op": "exec", "pid": other.pid, "code": "1", "timeout": 10})["status"] == "ok"
    assert private_dirs(py314, app.pid) == []
    assert private_dirs(py314, other.pid) == []


# -- 2b. the capture is a stream of its own ---------------------------------------------------------------

CAPTURE_CODE = r"""
import io, sys, threading
sys.stdout.write('text ')
sys.stdout.buffer.write(b'\xff\x00bytes ')
print(sys.stdout.isatty(), sys.stdout.encoding, sys.stdout.closed)
try:
    sys.stdout.fileno()
except io.UnsupportedOperation:
    print('no fileno')
t = threading.Thread(target=print, args=('from another thread',)); t.start(); t.join()
sys.stderr.buffer.write(b'err bytes')
sys.stdout.close()
sys.stdout.closed
"""


def test_exec_py_output_is_a_stream_of_its_own(spawn, py314):
    import base64
    app = spawn("ticker.py")
    result = agent({"op": "exec", "pid": app.pid, "code": CAPTURE_CODE, "timeout": 10})
    assert result["status"] == "ok", result
    assert result["stdout"] == "text False utf-8 False\nno fileno\n"  # text as text
    assert base64.b64decode(result["stdout_bytes"]) == b"\xff\x00bytes "  # bytes as bytes
    assert result["stderr"] == "" and base64.b64decode(result["stderr_bytes"]) == b"err bytes"
    assert result["value"] == "True"  # the user closed the capture, not the app's stream
    # the app's own stdout: still open, its own lines only, plus the other thread's line (not ours to capture)
    lines = [read_line(app.popen.stdout, 10) for _ in range(40)]
    assert all(line.startswith("tick ") or line == "from another thread" for line in lines), lines
    assert "from another thread" in lines
    assert wait_for(lambda: read_line(app.popen.stdout, 10).startswith("tick "))
    assert app.alive() and app.stderr_so_far() == ""
    text = agent({"op": "exec", "pid": app.pid, "code": "print('h\u00e9llo')", "timeout": 10})
    assert text["stdout"] == "h\u00e9llo\n" and "stdout_bytes" not in text and text["truncated"] is False
    cut = agent({"op": "exec", "pid": app.pid, "code": "print('x' * 5000); 'y' * 5000", "timeout": 10,
                 "max_output": 1000})
    assert cut["stdout"] == "x" * 1000 and cut["value"] == "'" + "y" * 999 and cut["truncated"] is True
    whole = agent({"op": "exec", "pid": app.pid, "code": "print('x' * 5000)", "timeout": 10, "max_output": 0})
    assert whole["stdout"] == "x" * 5000 + "\n" and whole["truncated"] is False  # 0: no limit


# -- 3. faults named truthfully ------------------------------------------------------------------------------

def test_an_audit_hook_refusal_is_named_quickly_and_cleaned_up(spawn, py314, wand):
    app = spawn("refuser.py")
    started = time.monotonic()
    result = agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 60})
    assert result["status"] == "error" and result["kind"] == "refused", result
    assert "refuses remote debugging" in result["error"] and "audit hook" in result["error"]
    assert time.monotonic() - started < 60  # named from evidence, not from waiting out the timeout
    assert private_dirs(py314, app.pid) == [] and queued(app.pid) is None
    again = wand("exec-py", "pid/%d" % app.pid, "--timeout", "60", "--", "1")
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "refuses remote debugging" in again.stderr
    assert private_dirs(py314, app.pid) == [] and app.alive()


def test_a_stopped_target_is_said_to_be_stopped(spawn, py314):
    app = spawn("busy.py")
    os.kill(app.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: state(app.pid) == "T")
        result = agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 5})
        assert result["status"] == "error" and result["kind"] == "stopped", result
        assert "is stopped" in result["error"] and "kill -CONT %d" % app.pid in result["error"]
        assert private_dirs(py314, app.pid) == [] and queued(app.pid) is None
        rows = {r["check"]: r for r in agent({"op": "check", "pid": app.pid})["rows"]}
        assert rows["main thread"]["status"] == "fail" and "stopped" in rows["main thread"]["detail"]
    finally:
        os.kill(app.pid, signal.SIGCONT)
    assert agent({"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 10})["value"] == "42"


def test_a_target_stopped_while_pending_is_said_to_be_stopped(spawn, py314):
    import threading
    app = spawn("napper.py")
    results = []
    waiting = threading.Thread(target=lambda: results.append(
        agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 3})))
    waiting.start()
    try:
        assert wait_for(lambda: queued(app.pid))
        os.kill(app.pid, signal.SIGSTOP)
    finally:
        waiting.join(60)
    try:
        [result] = results
        assert result["status"] == "pending" and result["stopped"] is True, result
        assert "is stopped" in result["error"] and "poll" not in result["error"]
    finally:
        os.kill(app.pid, signal.SIGCONT)
    os.kill(app.pid, signal.SIGUSR1)
    quiet_and_clean(app, py314)


def state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rpartition(")")[2].split()[0]


def test_a_zombie_is_said_to_have_exited(spawn):
    app = spawn("zombie.py")
    zombie = int(app.info["zombie"])
    result = agent({"op": "exec", "pid": zombie, "code": "1", "timeout": 5})
    assert result["status"] == "error" and result["kind"] == "exited", result
    assert "has exited" in result["error"]
    rows = agent({"op": "check", "pid": zombie})["rows"]
    assert rows[0]["status"] == "fail" and "has exited" in rows[0]["detail"]


def test_a_target_killed_while_the_code_runs_is_reported_at_once(spawn, py314):
    import threading
    app = spawn("busy.py")
    results = []
    running = threading.Thread(target=lambda: results.append(
        agent({"op": "exec", "pid": app.pid, "code": "import time; time.sleep(120)", "timeout": 120})))
    running.start()
    # the code runs when the busy main thread sits in clock_nanosleep (it never sleeps on its own)
    assert wait_for(lambda: (read("/proc/%d/syscall" % app.pid) or "").split()[:1] == ["230"])
    os.kill(app.pid, signal.SIGKILL)
    running.join(30)  # not the 120 s of its timeout
    assert results, "still waiting for a dead target"
    assert results[0]["status"] == "error" and results[0]["kind"] == "exited", results
    assert private_dirs(py314, app.pid) == []


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def test_waiting_for_another_injection_is_not_the_targets_time(spawn, py314):
    """The deadline counts from when the lock is ours: here the main thread reaches a safe point 2.5 s in,
    after another injection held the target for 1.5 s of a 2 s --timeout."""
    import socket
    import threading
    from kubectl_wand.agent import procfs
    app = spawn("napper.py")
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lock.bind("\0kubectl-wand-%d-%d" % (app.pid, procfs.Proc(app.pid).start_ticks))  # as another injection
    results = []
    started = time.monotonic()
    waiting = threading.Thread(target=lambda: results.append(
        agent({"op": "exec", "pid": app.pid, "code": "print('ran')", "timeout": 2})))
    waiting.start()
    try:
        time.sleep(1.5)  # the other injection's turn: a scenario, not a readiness wait
        lock.close()
        assert wait_for(lambda: queued(app.pid))
        time.sleep(max(0.0, started + 2.5 - time.monotonic()))  # past 2 s from the start, within 2 s of the lock
        os.kill(app.pid, signal.SIGUSR1)
    finally:
        waiting.join(60)
    assert results and results[0]["status"] == "ok" and results[0]["stdout"] == "ran\n", results
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind("\0kubectl-wand-%d-%d" % (app.pid, procfs.Proc(app.pid).start_ticks))
    try:
        busy = agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 1})
    finally:
        held.close()
    assert busy["status"] == "error" and busy["kind"] == "busy", busy
    assert "another kubectl wand injection" in busy["error"] and "safe point" not in busy["error"]
    quiet_and_clean(app, py314)


# -- 4. shipping debugpy is all or nothing -----------------------------------------------------------------

def test_a_failed_debugpy_import_leaves_nothing_behind(spawn, py314):
    import io
    import tarfile
    from kubectl_wand.agent import main
    from kubectl_wand.agent.debugserver import server_answers
    from kubectl_wand.transport.local import ship
    app = spawn("http_app.py", flags=["-S"])  # no site-packages: attach ships debugpy

    # debugpy without debugpy/server/api.py: its import fails half-way, like a copy cut short. Built before the
    # attach: the blob is fetched while the target's main thread waits for the request (bootstrap: 5 s), and
    # re-compressing debugpy takes seconds on a loaded machine.
    src, out = tarfile.open(fileobj=io.BytesIO(ship("debugpy"))), io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            if member.name != "debugpy/server/api.py":
                dst.addfile(member, src.extractfile(member))
    blob = out.getvalue()

    def broken(name):
        assert name == "debugpy"
        return blob

    failed = main.handle({"op": "attach", "pid": app.pid, "port": 0, "timeout": 30}, fetch_blob=broken)
    assert failed["status"] == "error" and "cannot import debugpy" in failed["error"], failed
    loaded = agent({"op": "exec", "pid": app.pid, "timeout": 10, "code":
                    "import sys; sorted(m for m in sys.modules if 'debugpy' in m or 'pydev' in m)"})
    assert loaded["value"] == "[]", loaded
    good = main.handle({"op": "attach", "pid": app.pid, "port": 0, "timeout": 30}, fetch_blob=ship)
    assert good["status"] == "listening" and good["source"] == "shipped", good
    assert server_answers("127.0.0.1", good["port"], 10)
    assert private_dirs(py314, app.pid) == [] and app.stderr_so_far() == ""


# -- 5. no socket left open in the target -------------------------------------------------------------------

def sockets(pid):
    fds = "/proc/%d/fd" % pid
    return sum(1 for fd in os.listdir(fds) if (read_link(fds + "/" + fd) or "").startswith("socket:"))


def read_link(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_no_socket_leaks_when_the_code_raises(spawn):
    app = spawn("busy.py")  # allocates nothing: its garbage collector never runs on its own
    before = sockets(app.pid)
    for _ in range(5):
        assert agent({"op": "exec", "pid": app.pid, "code": "1 / 0", "timeout": 10})["status"] == "raised"
    assert sockets(app.pid) == before


def test_no_socket_left_when_an_exec_returns_while_other_threads_hold_the_gil(spawn):
    # The payload answers, then closes its end. Sending lets the app's hot thread take the GIL for a switch
    # interval (5 ms) before the payload's close: exec must not return before the target is done with it.
    app = spawn("churn.py")
    before = sockets(app.pid)
    for _ in range(10):
        assert agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 10})["status"] == "ok"
        assert sockets(app.pid) == before


# -- 6, 7. a target in a mount namespace of its own: full temporary directories, a chroot inside it ---------

def start_in_own_mount_ns(spawn, py314, app, full=()):
    """``app`` in mount and pid namespaces of its own, chrooted into the rootfs: a container seen from its
    host (kubectl wand reaches it with nsenter). Each directory of ``full`` is a 64 KiB tmpfs there, filled
    up. The mounts die with the namespace, the namespace with its first process (--kill-child)."""
    needs_root()
    if not py314.root or not shutil.which("unshare"):
        pytest.skip("needs the CPython 3.14 rootfs and unshare")
    # /proc inside, as every container has: the injector reads the target's maps there
    steps = ["mount -t proc proc %s/proc" % py314.root]
    steps += ["mount -t tmpfs -o size=64k wand-full %s%s && { head -c 1048576 /dev/zero > %s%s/fill 2>/dev/null; true; }"
             % (py314.root, d, py314.root, d) for d in full]
    steps.append("exec %s %s /usr/bin/python3.14 %s" % (shutil.which("chroot"), py314.root, py314.app(app)))
    target = spawn(app, argv=["unshare", "-m", "-p", "-f", "--kill-child", "--propagation", "private", "sh", "-c",
                              " && ".join(steps)])
    with open("/proc/%d/task/%d/children" % (target.popen.pid, target.popen.pid)) as f:
        target.pid = int(f.read().split()[0])  # READY said its pid in its own namespace (1); ours is this
    return target


def dirs_in_view(pid):
    """This target's private directories, in its own view of its temporary directories."""
    found = []
    for base in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            found += [base + "/" + n for n in os.listdir("/proc/%d/root%s" % (pid, base))
                      if n.startswith(("wand-%d-" % pid, "wand-check-%d-" % pid))]
        except OSError:
            pass
    return found


def test_chrooted_target_in_its_own_mount_namespace(spawn, py314):
    app = start_in_own_mount_ns(spawn, py314, "busy.py")
    result = agent({"op": "exec", "pid": app.pid, "code": "import os; os.getpid()", "timeout": 20})
    assert result["status"] == "ok", result
    assert result["value"] == app.info["pid"]  # its pid in its own namespace
    rows = {r["check"]: r for r in agent({"op": "check", "pid": app.pid})["rows"]}
    assert rows["injector"]["status"] == "ok" and "namespaces" in rows["injector"]["detail"], rows["injector"]
    assert dirs_in_view(app.pid) == [] and app.stderr_so_far() == ""


def test_a_full_tmp_falls_through_to_the_next_directory(spawn, py314):
    app = start_in_own_mount_ns(spawn, py314, "busy.py", full=("/tmp",))
    result = agent({"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 20})
    assert result["status"] == "ok" and result["value"] == "42", result
    rows = {r["check"]: r for r in agent({"op": "check", "pid": app.pid})["rows"]}
    assert rows["private files"]["status"] == "ok" and rows["private files"]["detail"].startswith("/var/tmp ")
    assert dirs_in_view(app.pid) == [] and app.stderr_so_far() == ""


def test_no_room_anywhere_is_an_environment_error_with_the_fix(spawn, py314, wand):
    app = start_in_own_mount_ns(spawn, py314, "busy.py", full=("/tmp", "/var/tmp", "/dev/shm"))
    result = agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 20})
    assert result["status"] == "error" and result["kind"] == "environment", result
    assert "No space left on device" in result["error"] and "mount a writable emptyDir at /tmp" in result["error"]
    via_cli = wand("exec-py", "pid/%d" % app.pid, "--", "1")
    assert via_cli.returncode == 6 and len(via_cli.stderr.strip().splitlines()) == 1, via_cli.stderr
    assert "emptyDir" in via_cli.stderr and "RuntimeProblem" not in via_cli.stderr and "wand_agent" not in via_cli.stderr
    rows = {r["check"]: r for r in agent({"op": "check", "pid": app.pid})["rows"]}
    assert rows["private files"]["status"] == "fail" and "No space left" in rows["private files"]["detail"]
    assert dirs_in_view(app.pid) == [] and app.stderr_so_far() == "" and queued(app.pid) is None


# -- 8. check's debugpy row --------------------------------------------------------------------------------

def test_check_says_debugpy_cannot_be_imported_under_python_S(spawn):
    normal = spawn("http_app.py")
    rows = {r["check"]: r for r in agent({"op": "check", "pid": normal.pid})["rows"]}
    assert rows["debugpy"]["detail"].startswith("importable: "), rows["debugpy"]
    bare = spawn("http_app.py", flags=["-S"])
    row = {r["check"]: r for r in agent({"op": "check", "pid": bare.pid})["rows"]}["debugpy"]
    assert row["detail"].startswith("not importable in the target"), row
    assert "python -S" in row["detail"] and "attach ships" in row["detail"]


# -- 9. get processes and attach's watcher ------------------------------------------------------------------

def test_our_own_watcher_agent_is_not_listed(spawn, wand):
    """attach's watcher runs in the pod for as long as attach does; it is kubectl-wand's, not the app's."""
    from kubectl_wand.agent import processes, protocol
    from kubectl_wand.transport import bundle
    assert bundle.LOADER == processes.AGENT_LOADER  # how agents start is how they are recognised
    app = spawn("busy.py")
    watcher = subprocess.Popen([sys.executable] + bundle.AGENT_ARGS, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:  # what transport/kubectl.py sends into a pod
        watcher.stdin.write(bundle.boot_line() + bundle.agent_header("watch") +
                            protocol.encode(protocol.request("watch", pid=app.pid)))
        watcher.stdin.flush()
        assert "hello" in json.loads(watcher.stdout.readline())
        assert wait_for(lambda: watches(app.pid, watcher.pid))
        listed = agent({"op": "list"})["processes"]
        assert app.pid in [p["pid"] for p in listed]
        assert watcher.pid not in [p["pid"] for p in listed], [p for p in listed if p["pid"] == watcher.pid]
        table = wand("get", "processes", "-o", "json")
        assert watcher.pid not in [p["pid"] for p in json.loads(table.stdout)["items"]]
    finally:
        watcher.stdin.close()  # the CLI left: the watcher ends
        assert json.loads(watcher.stdout.readline())["result"]["status"] == "cancelled"
        watcher.wait(10)


def watches(pid, watcher="self"):
    """Whether ``watcher`` holds a pidfd on ``pid`` (the watch op waits on one)."""
    for fd in os.listdir("/proc/%s/fdinfo" % watcher):
        if "Pid:\t%d\n" % pid in (read("/proc/%s/fdinfo/%s" % (watcher, fd)) or ""):
            return True
    return False


@pytest.mark.parametrize("mode", ["respawn", "reload"])
def test_the_watcher_says_why_a_worker_was_replaced(spawn, mode):
    import threading
    app = spawn("supervisor.py", *(["--reload"] if mode == "reload" else []))
    worker = int(app.info["worker"])
    results = []
    watching = threading.Thread(target=lambda: results.append(agent({"op": "watch", "pid": worker})))
    watching.start()
    assert wait_for(lambda: watches(worker))
    os.kill(worker, signal.SIGKILL)
    watching.join(60)
    assert results and results[0]["status"] == "restarted", results
    assert results[0]["old"] == worker and results[0]["why"] == mode


def test_no_right_to_give_files_to_the_targets_uid_is_named_before_injecting(spawn, py314):
    """root without CAP_CHOWN (a container that drops it) cannot hand the private directory to uid 1000."""
    needs_root()
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    app = start_target(spawn, py314, "napper.py")
    run = subprocess.run(["setpriv", "--bounding-set=-chown", "--inh-caps=-chown", sys.executable, "-m",
                          "kubectl_wand", "exec-py", "pid/%d" % app.pid, "--", "1"], capture_output=True, text=True,
                         timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 4, run.stderr
    assert "may not give it files (no CAP_CHOWN)" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert queued(app.pid) is None and private_dirs(py314, app.pid) == []


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inotify:
    """Just enough inotify (ctypes) to see files appear and open the moment they do."""
    CREATE, OPEN, ISDIR = 0x100, 0x20, 0x40000000

    def __init__(self):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        self.paths = {}

    def watch(self, path, mask):
        wd = self.libc.inotify_add_watch(self.fd, path.encode(), mask)
        if wd >= 0:
            self.paths[wd] = path
        return wd >= 0

    def events(self, timeout):
        """(directory, name, mask) events within ``timeout`` seconds."""
        import select
        import struct
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        data, out, offset = os.read(self.fd, 65536), [], 0
        while offset < len(data):
            wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
            offset += 16 + length
            out.append((self.paths.get(wd), name, mask))
        return out

    def close(self):
        os.close(self.fd)


def test_ctrl_c_while_attach_ships_debugpy_leaves_no_half_imported_debugpy(spawn, py314):
    """Ctrl-C lands the moment the target starts importing the shipped copy: the copy is removed under it,
    the import fails half-way and must leave nothing, so the next attach works."""
    from kubectl_wand.agent import main
    from kubectl_wand.transport.local import ship
    app = spawn("http_app.py", flags=["-S"])
    ship("debugpy")  # built and cached before the race starts
    tmp = py314.host("/tmp")
    notify = Inotify()
    notify.watch(tmp, Inotify.CREATE)
    run = cli("attach", "pid/%d" % app.pid, "--port", free_port(), "--timeout", "60")
    interrupted = False
    try:
        deadline = time.monotonic() + 60
        while not interrupted and time.monotonic() < deadline:
            for where, name, mask in notify.events(1.0):
                path = os.path.join(where or "", name)
                if where == tmp and name.startswith("wand-%d-" % app.pid):
                    notify.watch(path, Inotify.CREATE)  # our private directory: lib/ appears in it
                elif name == "lib":
                    notify.watch(path, Inotify.CREATE)
                elif name == ".complete":  # shipped in full: the import starts now
                    assert notify.watch(os.path.join(where, "debugpy"), Inotify.OPEN)
                elif mask & Inotify.OPEN and name == "__init__.py":
                    run.send_signal(signal.SIGINT)  # the target is importing the shipped files right now
                    interrupted = True
                    break
        run.wait(30)
    finally:
        notify.close()
        if run.poll() is None:
            run.kill()
            run.wait(10)
    assert interrupted, "never saw the target import the shipped debugpy"
    assert wait_for(lambda: private_dirs(py314, app.pid) == [])
    state = agent({"op": "exec", "pid": app.pid, "timeout": 30, "code":
                   "import sys; d = sys.modules.get('debugpy'); d is None or hasattr(d, '_kubectl_wand_server')"})
    assert state["value"] == "True", state  # nothing, or a complete server: never half of one
    again = main.handle({"op": "attach", "pid": app.pid, "port": 0, "timeout": 30}, fetch_blob=ship)
    assert again["status"] in ("listening", "already"), again


def test_code_for_an_adopted_injection_is_still_compiled_by_the_targets_compiler(spawn, py314):
    app = spawn("napper.py")
    assert agent({"op": "exec", "pid": app.pid, "code": "1", "timeout": 1})["status"] == "pending"
    bad = agent({"op": "exec", "pid": app.pid, "code": "x = (", "timeout": 5})
    assert bad["status"] == "error" and bad["kind"] == "syntax" and "answered" not in bad, bad
    assert len(private_dirs(py314, app.pid)) == 1  # the queued bootstrap still waits for its main thread
    os.kill(app.pid, signal.SIGUSR1)
    quiet_and_clean(app, py314)
