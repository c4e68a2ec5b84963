"""`check`: every condition an injection depends on, one row each, read without injecting anything."""
from __future__ import annotations

import os
import time

from . import private as private_mod, processes, procfs, runtime as runtime_mod, slot as slot_mod
from .importable import find_debugpy
from .protocol import check_row as row
from .injectable import STOPPED, blocked_in, main_thread_stack

BLOCKING_CALLS = {"read", "poll", "select", "nanosleep", "accept", "recvfrom", "wait4", "futex", "clock_nanosleep",
                  "epoll_wait", "pselect6", "ppoll", "epoll_pwait", "accept4", "epoll_pwait2"}


def run(pid: int) -> dict:
    rows = []
    try:
        proc = procfs.Proc(pid)
    except ProcessLookupError:
        rows.append(row("process", "fail", "no process %d" % pid, "list them: kubectl wand get processes"))
        return {"status": "ok", "rows": rows}
    if proc.state in ("Z", "X"):
        rows.append(row("process", "fail", "%d (%s) has exited (a zombie its parent has not reaped)" % (
            pid, proc.comm), "pick a running process: kubectl wand get processes"))
        return {"status": "ok", "rows": rows}
    if not proc.looks_like_python():
        rows.append(row("process", "fail", "%d (%s) is not Python" % (pid, proc.comm),
                        "pick a PID from: kubectl wand get processes"))
        return {"status": "ok", "rows": rows}
    info = processes.describe(proc)
    rows.append(row("process", "ok", "%d %s (uid %d)" % (pid, info["command"][:60], proc.euid)))
    rows.append(version_row(proc, info))
    disabled = processes.remote_debug_disabled(proc)
    rows.append(row("remote debugging", "fail", "disabled: " + disabled,
                    "restart without it (unset PYTHON_DISABLE_REMOTE_DEBUG, drop -X disable-remote-debug)")
                if disabled else row("remote debugging", "ok", "enabled"))
    problem = processes.permission_problem(proc)
    caps = procfs.my_caps()
    mine = "uid %d, CAP_SYS_PTRACE %s, Yama %s" % (
        os.geteuid(), "yes" if caps >> procfs.CAP_SYS_PTRACE & 1 else "no",
        "absent" if procfs.yama_scope() is None else procfs.yama_scope())
    rows.append(row("permission", "fail", problem.split(": ", 1)[-1] + " (" + mine + ")",
                    "run as uid %d or root, or add CAP_SYS_PTRACE (securityContext.capabilities.add: "
                    "[SYS_PTRACE])" % proc.euid) if problem else row("permission", "ok", mine))
    if any(r["status"] == "fail" for r in rows):
        return {"status": "ok", "rows": rows}
    try:
        rt = runtime_mod.TargetRuntime(proc)
    except runtime_mod.RuntimeProblem as exc:
        rows.append(row("injector", "fail", str(exc)))
        return {"status": "ok", "rows": rows}
    rows.append(injector_row(rt, info))
    tempdir, free = tempdir_row(rt)
    rows.append(tempdir)
    rows.append(debugpy_row(proc, free))
    rows.append(main_thread_row(rt))
    return {"status": "ok", "rows": rows}


def version_row(proc, info):
    vt = info["version_tuple"]
    if not vt and not proc.readable:
        return row("interpreter", "warn", "cannot read its binary without permission (see the permission row)")
    if not vt:
        return row("interpreter", "fail", "cannot tell the Python version", "is it CPython 3.14+?")
    if tuple(vt) < processes.MIN_VERSION:
        return row("interpreter", "fail", "CPython %s" % info["python"],
                   "run the app on CPython 3.14+ (sys.remote_exec arrived in 3.14, PEP 768)")
    detail = "CPython %s%s" % (info["python"], " (free-threaded)" if info["free_threaded"] else "")
    return row("interpreter", "ok", detail)


VERSION_PROBE = "import sys; print(sys.version.split()[0])"  # processes.OWN_CODE_STARTS knows it


def injector_row(rt, info):
    """Run the target's own interpreter beside it: the injector must be the same minor version."""
    try:
        done = rt.run(["-c", VERSION_PROBE], timeout=5)
        version = done.stdout.decode().strip()
    except Exception as exc:
        return row("injector", "fail", "cannot run the target's interpreter: %s" % exc)
    if done.returncode != 0 or not version:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return row("injector", "fail", "the target's interpreter failed: %s" % (err[-1] if err else done.returncode))
    wanted = ".".join(str(v) for v in info["version_tuple"])
    if not version.startswith(wanted + "."):
        return row("injector", "fail", "found %s, target is %s" % (version, info["python"]))
    how = {"direct": "its own binary", "loader": "its own binary and libraries (chroot)",
           "nsenter": "its own binary in its namespaces",
           "chroot": "its own binary, chrooted into its root from the debug container"}[rt.mode]
    return row("injector", "ok", "CPython %s, %s" % (version, how))


BOOTSTRAP_BYTES = 32768  # passengers/bootstrap.py and its call line: 11.5 KB (measured); room to spare


def tempdir_row(rt):
    """Make a private directory as an injection would, with a file the size of a bootstrap in it: a
    read-only or full directory (mkdir may still work on a full tmpfs, the write does not) is passed over."""
    size = BOOTSTRAP_BYTES
    try:
        private = private_mod.PrivateDir(rt, private_mod.temp_bases(rt.proc), prefix="wand-check",
                                         files=lambda _path: {"probe": b"\0" * size})
    except private_mod.NoTempDir as exc:
        return row("private files", "fail", "no writable temporary directory with room (%s)" % exc,
                   "mount a writable emptyDir at /tmp (a few MB free; a container: --tmpfs /tmp), or use "
                   "kubectl wand --ephemeral (its "
                   "debug container lends its own /tmp)"), None
    except private_mod.CannotHandOver:
        return row("private files", "fail", "cannot give files to uid %d (no CAP_CHOWN)" % rt.proc.euid,
                   "run kubectl wand as uid %d or as root" % rt.proc.euid), None
    except private_mod.CannotLend as exc:
        return row("private files", "fail", str(exc)), None
    try:
        vfs = os.fstatvfs(private.base_fd)
        free = vfs.f_bavail * vfs.f_frsize
    except OSError:
        free = None
    where, lent, owner = private.base, private.lent, private.uid
    private.remove()
    if lent:
        detail = ("%s in the debug container, reached by the target as /proc/<helper>/root%s (0700 dir, 0600 "
                  "files, owner uid %d; nothing written into its filesystem)" % (where, where, owner))
    else:
        detail = "%s is writable (0700 dir, 0600 files, owner uid %d)" % (where, owner)
    if free is not None:
        detail += ", %.1f MB free" % (free / 1e6)
    return row("private files", "ok", detail), free


# Measured: the pure-Python sources attach ships (debugpy 1.8.x) unpack to 11.1 MB.
SHIP_BYTES = 12_000_000


def debugpy_row(proc, free=None):
    found, unused = find_debugpy(proc)
    if found:
        return row("debugpy", "ok", "importable: %s" % found)
    detail = "not importable in the target"
    if unused:
        detail += " (%s is installed, but %s)" % (unused[0], unused[1])
    detail += "; attach ships a pure-Python debugpy into a private directory"
    if free is not None and free < SHIP_BYTES:
        return row("debugpy", "warn", detail + ", which needs %.0f MB: %.1f MB are free" % (
            SHIP_BYTES / 1e6, free / 1e6), "free space in the target's /tmp, or mount an emptyDir at /tmp")
    return row("debugpy", "ok", detail)


def wakeups(pid: int):
    text = procfs.read_text("/proc/%d/task/%d/status" % (pid, pid)) or ""
    value = procfs.parse_status(text).get("voluntary_ctxt_switches")
    return int(value) if value and value.isdigit() else None


def main_thread_row(rt, window: float = 0.2):
    """Is the main thread stuck in a C call right now, or does it come back to Python regularly?

    A thread in poll()/select() with a short timeout is "in C" at almost every instant yet runs an injection
    within milliseconds. What tells them apart is whether it wakes: its voluntary context switches go up each
    time it returns from a blocking call. We watch them over a short sampling window.
    """
    pid = rt.proc.pid
    state = (procfs.read_text("/proc/%d/stat" % pid) or ")  ").rpartition(")")[2].split()[0]
    if state in STOPPED:
        return row("main thread", "fail", "process %d is %s: nothing runs in it until it is continued" % (
            pid, STOPPED[state]), "kill -CONT %d" % pid)
    queued = slot_mod.read(rt.proc)
    if queued is not None and queued.pending:
        whose = "an earlier kubectl wand injection" if "/wand-" in queued.path else "another debugger"
        return row("main thread", "warn", "a script is already queued (%s: %s): the main thread has not "
                   "reached a safe point since" % (whose, queued.path),
                   "it runs when the main thread returns to Python; kubectl wand waits for the same moment")
    before = wakeups(pid)
    frames = main_thread_stack(rt)
    where = ("%s:%s in %s" % (frames[0]["file"], frames[0]["line"], frames[0]["function"])) if frames else "unknown"
    call = blocked_in(pid)
    if call in BLOCKING_CALLS:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and blocked_in(pid) == call:
            time.sleep(0.02)  # a sampling window: waking up is exactly what we are watching for
        after = wakeups(pid)
        woke = before is not None and after is not None and after != before
        if not woke and blocked_in(pid) == call:
            return row("main thread", "warn", "blocked in C (%s) at %s" % (call, where),
                       "an injection runs when that call returns; --timeout bounds the wait")
        return row("main thread", "ok", "waits in %s at %s but wakes regularly" % (call, where))
    return row("main thread", "ok", "running Python at %s" % where)
