"""The agent's entry point: one request in, one JSON result out.

Locally the CLI calls ``handle`` in-process. In a pod, ``serve_stdio`` speaks JSON lines over the
``kubectl exec -i`` pipes: the request first; when the agent needs a large input (a debugpy to ship) it asks
with ``{"need": NAME}`` and reads ``{"blob": base64}`` back; the last line is the result.
"""
from __future__ import annotations

import json
import os
import sys
import time

from . import processes


# Listing and watching need only these modules; a pod is sent no more than an operation needs.
LIGHT_OPS = {"list", "watch"}
LIGHT_MODULES = ("elf", "procfs", "processes", "main")


def handle(request: dict, fetch_blob=None, emit=None, stop=None) -> dict:
    op = request.get("op")
    if op == "list":
        return {"status": "ok", "processes": processes.list_processes(request.get("pid"))}
    if op == "watch":
        return watch(int(request["pid"]), request.get("stdin_watch", False))
    from .session import AgentError, main_thread_stack, target
    try:
        if op == "exec":
            return run_exec(request)
        if op == "attach":
            from .debugserver import run_attach
            return run_attach(request, fetch_blob)
        if op == "check":
            from . import checks
            return checks.run(request["pid"])
        if op == "trace":
            from .tracing import trace
            return trace(request, emit, stop)
        if op == "stack":
            _proc, rt = target(request["pid"])
            return {"status": "ok", "frames": main_thread_stack(rt)}
        return {"status": "error", "kind": "usage", "error": "unknown agent request %r" % (op,)}
    except AgentError as exc:
        return exc.to_json()


def watch(pid: int, stdin_watch: bool) -> dict:
    """Wait until ``pid`` exits; then, if its parent starts another Python worker (a reloader or a
    supervisor restarting it), return that worker's pid. Returns early when our stdin closes (the CLI left).
    """
    import select
    from . import procfs
    try:
        parent = procfs.Proc(pid).ppid
    except ProcessLookupError:
        return {"status": "exited", "pid": pid}
    known = {p["pid"] for p in processes.list_processes(cpu_window=0)}  # before: the new worker is not in it
    waiter = select.poll()
    fds = []
    if hasattr(os, "pidfd_open"):
        try:
            fds.append(os.pidfd_open(pid))  # readable when the process exits: no polling of /proc
        except OSError:
            return {"status": "exited", "pid": pid}
    for fd in fds:
        waiter.register(fd, select.POLLIN)
    if stdin_watch:
        waiter.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    while True:
        events = waiter.poll(None if fds else 500)
        if any(fd == sys.stdin.fileno() for fd, _ in events) and stdin_watch:
            return {"status": "cancelled"}
        if events or not os.path.exists("/proc/%d" % pid):
            break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and os.path.exists("/proc/%d" % parent):
        # No kernel event announces a new child to a non-parent: look every 0.2 s until the reloader's
        # new worker appears (it usually takes well under a second).
        for info in processes.list_processes(cpu_window=0):
            if info["ppid"] == parent and info["pid"] not in known and info["role"] != "helper":
                return {"status": "restarted", "old": pid, "pid": info["pid"]}
        time.sleep(0.2)
    return {"status": "exited", "pid": pid}


def run_exec(request):
    from .session import Injection
    code = request["code"]
    injection = Injection(int(request["pid"]), float(request.get("timeout", 10.0)))
    return injection.run({"op": "exec", "code": code, "timeout": request.get("timeout", 10.0)},
                         code_for_check=code.encode("utf-8"))


def serve_stdio():
    """Pod side: read the request from stdin, answer on stdout (the real stdout, not the payload's)."""
    import base64
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def write(obj):
        stdout.write(json.dumps(obj).encode() + b"\n")
        stdout.flush()

    def fetch_blob(name):
        write({"need": name})
        reply = json.loads(stdin.readline() or b"{}")
        if "blob" not in reply:
            from .session import AgentError
            raise AgentError("debugpy", "the CLI could not supply %s" % name)
        return base64.b64decode(reply["blob"])

    request = json.loads(stdin.readline() or b"{}")
    write({"result": handle(request, fetch_blob)})
