"""The ``stack`` and ``profile`` operations: read Python stacks of live processes without running code in them.
``profile``'s own part is in profiling.py (so ``stack`` ships without it); what both use is here.

Each target is read by ``sampler`` (a passenger) run under the target's own interpreter beside it, the way the
injector runs. Unlike injection this needs no more than CPython 3.14+ and the right to read the target's memory:
remote debugging may be disabled, an audit hook may refuse scripts, the main thread may be blocked in C.

Requests (``pid`` absent or null: every Python process here except helpers and other kubectl-wand agents):
  {"op": "stack", "pid": N, "async": false}
  {"op": "profile", "pid": N, "rate": 100, "duration": 10, "idle": false, "gil": false}
Both answer ``{"status": "ok", "processes": [...]}``, one entry per process (see ``stack`` and ``profile``).
"""
from __future__ import annotations

import os
import time

from . import processes, procfs, protocol, runtime as runtime_mod
from .protocol import AgentError
from .sources import module_source

MIN_VERSION = (3, 14)
STACK_TIMEOUT = 15.0     # one stack read takes ~25 ms here (interpreter start included); a loaded node is slower
START_GRACE = 15.0       # a sampler's interpreter start and final report, on top of the profile's duration
STOP_GRACE = 5.0         # told to stop, a sampler writes its aggregate at once; after this it is killed
PROGRESS_EVERY = 0.5
GO_WAIT = 120.0          # armed, how long a sync profile waits for the CLI's go (it sends go or stop far sooner)


# sampler -> agent: a stack, a profile's progress lines and its last line, or an error (protocol.check_fields)
SAMPLER_ANSWER = "threads:a tasks:a error:s kind:s profile:o partial:o progress:o attempts:i armed:b"
PROGRESS = "samples:i errors:i elapsed:n"
THREAD = "tid:i? name:s? comm:s? main:b frames:a"
PROFILE = "frames:a stacks:a samples:i errors:i window:o"


def check_sampler(message: dict, what="the sampler's answer") -> dict:
    protocol.check_fields(message, SAMPLER_ANSWER, what)
    if "progress" in message:
        protocol.check_fields(message["progress"], PROGRESS, what + "'s progress")
    for thread in message.get("threads") or []:
        protocol.check_fields(thread, THREAD, what + "'s thread")
        for frame in thread.get("frames") or []:
            protocol.check_fields(frame, protocol.FRAME, what + "'s frame")
    for key in ("profile", "partial"):  # the last profile, or the one so far (kept if the pod goes away)
        if key in message:
            protocol.check_fields(message[key], PROFILE, what + "'s " + key)
            for frame in message[key].get("frames") or []:
                protocol.check_fields(frame, protocol.FRAME, what + "'s frame")
    return message


def resolve(pid: int):
    """(proc, runtime) of one target we can read, or an AgentError naming the cause and the fix."""
    try:
        proc = procfs.Proc(pid)
    except ProcessLookupError:
        raise AgentError("not-found", "no process %d here" % pid)
    if proc.state in ("Z", "X"):  # its memory is gone: it would look like no Python at all
        raise AgentError("exited", "process %d (%s) has exited (a zombie its parent has not reaped yet)"
                         % (pid, proc.comm))
    if not proc.looks_like_python():
        raise AgentError("not-python", "process %d (%s) is not a Python process" % (pid, proc.comm))
    problem = processes.permission_problem(proc)
    if problem:
        raise AgentError("permission", "process %d: %s; run as the target's user or root, or grant "
                                       "CAP_SYS_PTRACE" % (pid, problem.split(": ", 1)[-1]))
    info = processes.describe(proc)
    version = info["version_tuple"]
    if version is None or tuple(version) < MIN_VERSION:
        raise AgentError("version", "process %d runs Python %s: stack and profile read stacks with CPython "
                                    "3.14's _remote_debugging, so the target must run 3.14+" % (
                                        pid, info["python"] or "of unknown version"))
    try:
        return proc, runtime_mod.TargetRuntime(proc), info
    except runtime_mod.RuntimeProblem as exc:
        raise AgentError("runtime", str(exc))


def targets(pid):
    """[(pid, (proc, runtime, info) or AgentError)]: the one named (its error raised), or every candidate."""
    if pid is not None:
        return [(int(pid), resolve(int(pid)))]
    found = []
    for info in processes.list_processes(cpu=False):
        if info["role"] == "helper":
            continue
        try:
            found.append((info["pid"], resolve(info["pid"])))
        except AgentError as exc:
            found.append((info["pid"], exc))
    if not found:
        raise AgentError("not-found", "no Python process here; name one with --pid")
    return found


def describe(pid, resolved):
    if isinstance(resolved, AgentError):
        return {"pid": pid, "kind": resolved.kind, "error": resolved.message}
    _proc, _rt, info = resolved
    return {"pid": pid, "python": info["python"], "command": info["command"]}


_SAMPLER = {}


def stack_in_process(rt, want_async) -> dict:
    """The sampler's ``stack``, called here (see TargetRuntime.same_interpreter): the same code, the same answer."""
    if "module" not in _SAMPLER:
        import types
        module = types.ModuleType("wand_sampler")
        exec(compile(sampler_source(), "<kubectl-wand>/sampler.py", "exec"), module.__dict__)
        _SAMPLER["module"] = module
    sampler = _SAMPLER["module"]
    try:
        data = sampler.stack(rt.injector_pid, want_async, rt.proc.runtime_address())
    except sampler.Failure as exc:
        return {"kind": exc.kind, "error": exc.message}
    data.pop("pid", None)
    return data


def sampler_source() -> str:
    """The sampler's source with framewalk's and profiler's in front: one namespace, one ``-c`` (passengers import
    nothing); sampler's last line runs its main."""
    return "\n".join(module_source(name) for name in ("framewalk", "profiler", "sampler"))


def runtime_args(rt):
    """Where _PyRuntime is, for the sampler's walk past the frames _remote_debugging stops at (sampler.Walker)."""
    addr = rt.proc.runtime_address()
    return ["--runtime", str(addr)] if addr else []


def start(rt, args, code=None):
    """The sampler started beside the target with ``args``; ``code`` (runtime.compiled) is its compiled source,
    which the caller writes to its stdin (runtime.LOAD_CODE reads it), and then it is started without
    subprocess (runtime.Spawned)."""
    try:
        argv, env = rt.command(["-c", runtime_mod.LOAD_CODE if code else sampler_source()] + list(args))
    except runtime_mod.RuntimeProblem as exc:  # e.g. it exited since it was listed: /proc/PID/exe is gone
        raise AgentError("exited" if not os.path.exists("/proc/%d" % rt.proc.pid) else "runtime", str(exc))
    if code:
        return runtime_mod.Spawned(argv, env)
    import subprocess  # only when a sampler is started (runtime.run says why not at the top)
    # Its own session (process group): a Ctrl-C in the CLI's terminal reaches us as ``stop`` and not the
    # sampler, and ``kill_group`` can end an nsenter together with the child it forked.
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd="/", start_new_session=True)


def kill_group(popen):
    """SIGKILL the sampler's process group. Only call it before the leader is reaped (no poll()/wait() yet):
    until then its pid, which names the group, cannot be reused."""
    import signal
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def last_error(stderr: bytes, code) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "the sampler exited with status %s" % code


def stack(request: dict, emit=None, stop=None, code_cache=None) -> dict:
    """Every thread of each target, frames innermost first; with ``async`` its asyncio tasks too.

    Entry: {"pid", "python", "command", "threads": [{"tid", "name", "comm", "main", "state", "syscall",
    "gil", "frames": [{"function", "file", "line"}]}], "gil_holder", "gil_known", "attempts"}, and with
    ``async``: "asyncio" (false: not loaded) and "tasks": [{"id", "name", "thread", "frames", "awaited_by":
    [{"task", "frames"}]}]; or {"pid", "kind", "error"} for a process that could not be read.
    ``code_cache`` (local only): where the reader's compiled code is kept (runtime.TargetRuntime.compiled).
    """
    args = ["--async"] if request.get("async") else []
    found = targets(request.get("pid"))
    running = []
    for pid, resolved in found:
        if isinstance(resolved, AgentError):
            running.append((pid, resolved, None))
            continue
        rt = resolved[1]
        if rt.same_interpreter():
            running.append((pid, resolved, stack_in_process(rt, bool(request.get("async")))))
            continue
        argv = ["stack", str(rt.injector_pid)] + args + runtime_args(rt)
        code = rt.compiled(sampler_source(), code_cache) if code_cache is not None else None
        try:
            running.append((pid, resolved, (start(rt, argv, code), code, argv)))
        except AgentError as exc:
            running.append((pid, exc, None))
    deadline = time.monotonic() + STACK_TIMEOUT
    out = []
    for pid, resolved, started in running:
        entry = describe(pid, resolved)
        if isinstance(started, dict):
            entry.update(started)
        elif started is not None:
            popen, code, argv = started
            read = collect_stack(popen, deadline, code)
            if code and read.get("empty"):  # the compiled code did not load there (see runtime.compiled)
                try:
                    read = collect_stack(start(resolved[1], argv), deadline)
                except AgentError as exc:
                    read = {"kind": exc.kind, "error": exc.message}
            read.pop("empty", None)
            entry.update(read)
        out.append(entry)
    if request.get("pid") is not None and "error" in out[0]:
        raise AgentError(out[0]["kind"], out[0]["error"])
    return {"status": "ok", "processes": out}


def collect_stack(popen, deadline, code=None) -> dict:
    try:
        stdout, stderr = runtime_mod.bounded_output(popen, code or b"", max(0.1, deadline - time.monotonic()),
                                                    protocol.LINE_MAX)
        popen.wait()
    except runtime_mod.TimedOut:
        kill_group(popen)
        popen.wait(5)
        return {"kind": "runtime", "error": "reading the stack took over %gs; retry, and look at the load of the "
                                            "node" % STACK_TIMEOUT}
    except protocol.ProtocolError as exc:
        kill_group(popen)
        popen.wait()
        return {"kind": "protocol", "error": "the stack reader answered out of protocol: %s" % exc}
    finally:
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            stream.close()
    if not stdout:
        return {"kind": "runtime", "error": last_error(stderr, popen.returncode), "empty": True}
    try:
        data = check_sampler(protocol.decode(stdout, "the stack reader's answer"))
    except protocol.ProtocolError as exc:
        return {"kind": "protocol", "error": "the stack reader answered out of protocol: %s" % exc}
    data.pop("pid", None)  # the sampler's view of the pid; ours is the one the caller named
    return data
