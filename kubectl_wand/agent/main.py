"""The agent's entry point: one request in, one JSON result out.

Locally the CLI calls ``handle`` in-process. In a pod, ``serve_stdio`` speaks JSON lines over the
``kubectl exec -i`` pipes: the request first; when the agent needs a large input (a debugpy to ship) it asks
with ``{"need": NAME}`` and reads ``{"blob": base64}`` back; the last line is the result.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time

from . import processes


# Listing and watching need only these modules; a pod is sent no more than an operation needs.
LIGHT_OPS = {"list", "watch"}
LIGHT_MODULES = ("elf", "procfs", "processes", "main")


def handle(request: dict, fetch_blob=None) -> dict:
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
            return run_attach(request, fetch_blob)
        if op == "check":
            from . import checks
            return checks.run(request["pid"])
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


def run_attach(request, fetch_blob):
    from .session import AgentError, Injection
    pid = int(request["pid"])
    host, port = request.get("host", "127.0.0.1"), int(request.get("port", 5679))
    injection = Injection(pid, float(request.get("timeout", 15.0)))
    if port_taken(host, port) and not ours_on_port(port, pid):
        # Fail before touching the target: debugpy.listen would spawn an adapter only to see it die.
        raise AgentError("port", "port %d is already in use beside the target; choose another with --port" % port)

    def on_hello(hello, req, private):
        server = hello.get("server")
        if server and server.get("port"):
            return dict(server, status="already")
        if server:
            return {"status": "error", "kind": "foreign",
                    "error": "debugpy already listens in process %d (started by another tool) at an address "
                             "kubectl wand cannot tell; connect to it directly or restart the process" % pid}
        if not hello.get("debugpy"):
            if fetch_blob is None:
                return {"status": "error", "kind": "debugpy", "error": "the target cannot import debugpy"}
            ship_debugpy(fetch_blob("debugpy"), private)
            req = dict(req, debugpy_path=private.target_path + "/lib")
        return req

    result = injection.run({"op": "attach", "host": host, "port": port}, on_hello=on_hello)
    if result.get("status") in ("listening", "already") and result.get("port"):
        result["answers"] = server_answers(result.get("host") or "127.0.0.1", int(result["port"]),
                                           float(request.get("confirm_timeout", 5.0)))
        if not result["answers"]:
            result.update(status="error", kind="debugpy",
                          error="debugpy reported %s:%s but nothing answers there" % (result["host"], result["port"]))
    return result


def port_taken(host: str, port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As debugpy's adapter binds: SO_REUSEADDR, so connections in TIME_WAIT do not count as "in use".
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host if host not in ("localhost",) else "127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        probe.close()


def ours_on_port(port: int, pid: int) -> bool:
    """Whether the listener on ``port`` is the target itself (an in-process debug server from an earlier
    attach) or a debugpy adapter process: then the target's hello decides whether it is its server."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add("socket:[%s]" % fields[9])
    if not inodes:
        return False
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            links = {os.readlink("/proc/%s/fd/%s" % (name, fd)) for fd in os.listdir("/proc/%s/fd" % name)}
        except OSError:
            continue
        if links & inodes:
            if int(name) == pid:
                return True
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    return b"debugpy" in f.read()
            except OSError:
                return False
    return False


def ship_debugpy(blob: bytes, private):
    """Unpack a pure-Python debugpy into the private directory, owned by the target's user."""
    import io
    import tarfile
    lib = os.path.join(private.path, "lib")
    os.mkdir(lib, 0o700)
    private.own(lib)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.name.startswith(("/", "..")) or "/../" in member.name or not (member.isfile() or member.isdir()):
                continue
            dest = os.path.join(lib, member.name)
            if member.isdir():
                os.makedirs(dest, 0o700, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dest), 0o700, exist_ok=True)
                with tar.extractfile(member) as src:
                    private.write("lib/" + member.name, src.read())  # 0600, owned by the target's user
    for dirpath, dirnames, _files in os.walk(lib):
        for name in dirnames:
            private.own(os.path.join(dirpath, name))


def dap_message(seq: int, command: str, arguments: dict) -> bytes:
    body = json.dumps({"seq": seq, "type": "request", "command": command, "arguments": arguments})
    return ("Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode()


def server_answers(host: str, port: int, timeout: float) -> bool:
    """Whether the debug adapter answers DAP: ``initialize``, then ``disconnect`` and its response.

    We end with a clean disconnect and wait for its response: debugpy 1.8's separate adapter (the fallback
    for old debugpy) stays waiting for a client that closed without one, and the editor then hangs.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.2, deadline - time.monotonic())) as sock:
                sock.sendall(dap_message(1, "initialize", {"adapterID": "kubectl-wand", "clientID": "kubectl-wand"}))
                if read_until(sock, b'"command": "initialize"', deadline):
                    sock.sendall(dap_message(2, "disconnect", {"terminateDebuggee": False}))
                    return read_until(sock, b'"command": "disconnect"', deadline)
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # the adapter is still binding: retry the connection until the deadline


def read_until(sock, marker: bytes, deadline: float) -> bool:
    data = b""
    while marker not in data.replace(b'"command":"', b'"command": "'):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    return True


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
