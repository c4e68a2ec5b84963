"""Whether a process can be injected, and, when it does not answer, what its main thread is doing.

Split from session.py (one injection's course): ``target`` finds the process and its interpreter or says
why not (the kind and the fix); ``main_thread_stack``, ``app_frames`` and ``blocked_in`` read, without
injecting, where a target that never took the script sits (a pending result, and the ``check`` verb).
"""
from __future__ import annotations

from . import processes, procfs, protocol, runtime as runtime_mod
from .protocol import AgentError
from .sources import module_source

STOPPED = {"T": "stopped (state T: SIGSTOP or job control)", "t": "stopped by a tracer (state t: a debugger)"}


def target(pid: int):
    """The process and how to run its interpreter, or an AgentError saying why we cannot."""
    try:
        proc = procfs.Proc(pid)
    except ProcessLookupError:
        raise AgentError("not-found", "no process %d here" % pid)
    if proc.state in ("Z", "X"):
        raise AgentError("exited", "process %d (%s) has exited (a zombie its parent has not reaped yet)"
                         % (pid, proc.comm))
    if proc.state in STOPPED:
        raise AgentError("stopped", "process %d is %s: it runs nothing until continued; resume it (kill -CONT "
                         "%d) and retry" % (pid, STOPPED[proc.state], pid))
    if not proc.looks_like_python():
        raise AgentError("not-python", "process %d (%s) is not a Python process" % (pid, proc.comm))
    info = processes.describe(proc)
    reason = processes.not_attachable_reason(proc, info)
    if reason:
        kind = reason.split(":")[0]
        fixes = {
            "version": "kubectl-wand needs CPython 3.14+ in the target (sys.remote_exec, PEP 768)",
            "disabled": "restart it without PYTHON_DISABLE_REMOTE_DEBUG / -X disable-remote-debug",
            "permission": "run as the target's user or root, or grant CAP_SYS_PTRACE",
        }
        raise AgentError(kind, "process %d: %s; %s" % (pid, reason.split(": ", 1)[-1], fixes.get(kind, "")))
    try:
        return proc, runtime_mod.TargetRuntime(proc)
    except runtime_mod.RuntimeProblem as exc:
        raise AgentError("runtime", str(exc))


def main_thread_stack(rt) -> list:
    """The main thread's frames, innermost first, read without injecting (empty if unreadable)."""
    try:
        done = rt.run(["-c", module_source("injector"), "stack", str(rt.injector_pid)], timeout=5,
                      limit=protocol.LINE_MAX)
        data = protocol.check_injector(protocol.decode(done.stdout or b"{}", "the injector's answer"))
    except Exception:
        return []
    if not data.get("ok"):
        return []
    for thread in data["threads"]:
        if thread["thread_id"] in (rt.proc.pid, rt.proc.inner_pid):
            return thread["frames"]
    return data["threads"][0]["frames"] if data["threads"] else []


def app_frames(frames) -> list:
    """The main thread's frames without our own bootstrap's (a ``wand-*/bootstrap.py`` on top: the main thread
    had just taken the script when the deadline passed). The app is not to be blamed for where we are."""
    def ours(f):
        path = f.get("file") or ""
        return path.endswith("/bootstrap.py") and "/wand-" in path
    i = 0
    while i < len(frames) and ours(frames[i]):
        i += 1
    return frames[i:]


def blocked_in(pid: int):
    """The system call the main thread sits in, from /proc (None if running or unreadable)."""
    names = {0: "read", 7: "poll", 23: "select", 35: "nanosleep", 43: "accept", 45: "recvfrom",
             61: "wait4", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait", 270: "pselect6",
             271: "ppoll", 281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2"}
    text = procfs.read_text("/proc/%d/syscall" % pid)
    if not text or text.startswith("running"):
        return None
    try:
        nr = int(text.split()[0])
    except ValueError:
        return None
    return names.get(nr, "syscall %d" % nr) if nr >= 0 else None
