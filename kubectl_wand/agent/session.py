"""One injection: private directory, bootstrap, Unix socket back-channel, deadline, cleanup.

Protocol (all JSON lines over a Unix socket in the private directory):
  agent: a private directory (private.py) holding the socket and bootstrap.py (payload source + call)
  agent: run the injector (the target's own interpreter) -> sys.remote_exec(pid, bootstrap.py)
  target main thread, at its next safe point: connect -> hello -> request -> result
Nothing waits on a fixed sleep: the agent blocks in accept()/recv() with the time left of the deadline.
"""
from __future__ import annotations

import json
import os
import socket
import time

from . import private as private_mod, processes, procfs, runtime as runtime_mod

SOURCES = {}  # module name -> source text; filled when the agent arrives in a pod without files


def module_source(name: str) -> str:
    if name in SOURCES:
        return SOURCES[name]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
        return f.read()


from .protocol import AgentError  # noqa: E402,F401  (defined once, in the protocol; re-exported here)


def target(pid: int):
    """The process and how to run its interpreter, or an AgentError saying why we cannot."""
    try:
        proc = procfs.Proc(pid)
    except ProcessLookupError:
        raise AgentError("not-found", "no process %d here" % pid)
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
        done = rt.run(["-c", module_source("injector"), "stack", str(rt.injector_pid)], timeout=5)
        data = json.loads(done.stdout or b"{}")
    except Exception:
        return []
    if not data.get("ok"):
        return []
    for thread in data["threads"]:
        if thread["thread_id"] in (rt.proc.pid, rt.proc.inner_pid):
            return thread["frames"]
    return data["threads"][0]["frames"] if data["threads"] else []


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


class Injection:
    """Inject the payload into ``pid`` and exchange one request/result with it."""

    def __init__(self, pid: int, timeout: float = 10.0):
        self.pid, self.timeout = pid, timeout
        self.proc, self.rt = target(pid)
        self.token = os.urandom(16).hex()

    def run(self, request: dict, code_for_check: bytes = b"", on_hello=None, stream=None) -> dict:
        """``stream(conn, hello) -> dict``, if given, takes over the connection once the request is sent
        (a long-lived exchange such as trace) and its return value is the result."""
        deadline = time.monotonic() + self.timeout
        lock = self._lock(deadline)
        try:
            return self._run(request, code_for_check, on_hello, deadline, stream, lock)
        finally:
            lock.close()

    def _lock(self, deadline):
        """One injection per target at a time: the target has a single pending-script slot.

        An abstract Unix socket is the lock: the kernel drops it when we exit, and it leaves no file.
        """
        start = procfs.read_text("/proc/%d/stat" % self.pid) or ""
        name = "\0kubectl-wand-%d-%s" % (self.pid, start.rpartition(")")[2].split()[19] if start else "")
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(name)
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise AgentError("busy", "another kubectl wand injection into %d is still running" % self.pid)
                time.sleep(0.05)  # another injection holds the target; poll the lock until it is free

    def _run(self, request, code_for_check, on_hello, deadline, stream=None, lock=None):
        private = self._private_dir()
        abandoned = False
        listener = private.listener
        try:
            script = private.target_path + "/bootstrap.py"
            self._inject(script, code_for_check, deadline)
            private.remove_mirror()  # only sys.remote_exec's existence check in our view needed it
            conn = self._accept(listener, deadline)
            if conn is None:
                abandoned = True
                return self._pending(private)
            with conn, conn.makefile("rwb") as channel:
                hello = json.loads(channel.readline() or b"{}")
                if hello.get("token") != self.token:
                    raise AgentError("inject", "an unexpected process answered the injection")
                if on_hello is not None:
                    request = on_hello(hello, request, private)
                    if "status" in request:  # decided without running anything (e.g. existing server)
                        channel.write(b'{"op": "noop"}\n')
                        channel.flush()
                        return dict(request, hello=hello)
                channel.write(json.dumps(request).encode() + b"\n")
                channel.flush()
                if stream is not None:
                    # The script slot is consumed and the socket file has done its job: free both now, so
                    # other verbs can inject beside a long stream and a killed agent leaves no directory.
                    lock.close()
                    private.remove()
                    return stream(conn, hello)
                # The payload enforces the code's own deadline; allow it a moment to report.
                conn.settimeout(max(0.5, deadline - time.monotonic()) + 2.0)
                try:
                    line = channel.readline()
                except socket.timeout:
                    line = b""
                if not line:
                    return self._still_running()
                result = json.loads(line)
                result["hello"] = hello
                return result
        finally:
            if abandoned:
                # The bootstrap stays until the main thread wakes: it finds no socket and deletes itself.
                private.remove(keep=("bootstrap.py",))
            else:
                private.remove()

    def _private_dir(self):
        def files(target_path):
            source = module_source("payload") + "\nwand_main(%s, %s, %s)\n" % (
                json.dumps(target_path + "/s"), json.dumps(target_path), json.dumps(self.token))
            return {"bootstrap.py": source.encode()}
        try:
            return private_mod.PrivateDir(self.rt, private_mod.temp_bases(self.proc), files=files, socket_name="s",
                                          mirror=("bootstrap.py",))
        except private_mod.NoTempDir as exc:
            raise AgentError("environment", "no room for kubectl wand's private files in process %d's filesystem "
                             "(%s); mount a writable emptyDir at /tmp (a few MB free)" % (self.pid, exc))

    def _inject(self, script, code_for_check, deadline):
        args = ["-c", module_source("injector"), "inject", str(self.rt.injector_pid), script]
        try:
            done = self.rt.run(args, stdin=code_for_check, timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            raise AgentError("inject", "running the target's interpreter failed: %s" % exc)
        try:
            result = json.loads(done.stdout or b"{}")
        except ValueError:
            result = {}
        if not result:
            err = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise AgentError("inject", "the injector failed: %s" % (err[-1] if err else "exit %d" % done.returncode))
        if not result.get("ok"):
            raise AgentError(result.get("kind", "inject"), result.get("error", "injection failed"),
                             **{k: result[k] for k in ("line", "offset", "text") if k in result})

    def _accept(self, listener, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        listener.settimeout(remaining)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            return None
        conn.settimeout(max(1.0, deadline - time.monotonic()))
        return conn

    def _pending(self, private):
        frames = main_thread_stack(self.rt)
        return {"status": "pending", "frames": frames, "syscall": blocked_in(self.pid),
                "left_behind": private.target_path + "/bootstrap.py",
                "error": "the injection is still pending after %gs: the main thread of %d has not reached a "
                         "safe point" % (self.timeout, self.pid)}

    def _still_running(self):
        frames = main_thread_stack(self.rt)
        return {"status": "running", "frames": frames, "syscall": blocked_in(self.pid),
                "error": "the code is still running in the main thread of %d after %gs (blocked in a C call, "
                         "which cannot be interrupted)" % (self.pid, self.timeout)}
