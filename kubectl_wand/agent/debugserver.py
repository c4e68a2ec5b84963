"""The debug server side of `attach`, beside the target: the port checks before injecting, shipping debugpy's
sources to a target that lacks them, and the check that the server listens once debugpy says it does.

Readiness never opens a connection to the in-process server (debugpy.listen(..., in_process_debug_adapter=True)):
pydevd serves one client at a time, and every connection it accepts replaces the one before it (pydevd.py,
_WaitForConnectionThread: request_disconnect, which removes all breakpoints, then initialize_network, which ends
the previous writer with a ``terminated`` event). A DAP round trip of ours that reached it after an editor
connected ended the editor's session (issue 23: 21 of 30 runs on a local target, 3 of 10 through a port-forward,
with an editor retrying every 5 ms; tests/test_attach_race_local.py, tests/e2e/test_attach_race_cluster.py).
So readiness is read from the kernel instead: a socket in LISTEN state at the reported address, in this
network namespace (the one the editor or the port-forward connects from), held by the target process itself.

Not loaded for `list` and `watch` (every pod of `get processes` runs those): only what attach needs.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time


def run_attach(request, fetch_blob):
    from .session import AgentError, Injection
    pid = int(request["pid"])
    host, port = request.get("host", "127.0.0.1"), int(request.get("port", 5679))
    injection = Injection(pid, request.get("timeout", 15.0))
    holder = port_taken(host, port) and port_holder(port, pid)
    if holder is None:
        # Fail before touching the target: its hello could only say that it is not its server.
        raise AgentError("port", "port %d is already in use beside the target; choose another with --port" % port)

    def on_hello(hello, req, private):
        server = hello.get("server")
        if server and server.get("port"):
            return dict(server, status="already")
        if server:
            return {"status": "error", "kind": "foreign",
                    "error": "debugpy already listens in process %d (started by another tool) at an address "
                             "kubectl wand cannot tell; connect to it directly or restart the process" % pid}
        if holder:
            # The socket is the target's (or a process serving it), yet no server of ours is recorded there:
            # the app's own listener. debugpy would fail to bind it; nothing of debugpy is imported yet.
            why = "held by %s, not by a debug server kubectl wand started" % (
                "the process itself" if holder == "target" else "a process it is connected to")
            return {"status": "error", "kind": "port", "reason": why, "error": "port %d is already in use "
                    "beside the target (%s); choose another with --port" % (port, why)}
        if not hello.get("debugpy"):
            if not shipped:  # its files showed a debugpy the target cannot import after all
                if fetch_blob is None:
                    return {"status": "error", "kind": "debugpy", "error": "the target cannot import debugpy"}
                ship_debugpy(fetch_blob("debugpy"), private)
            req = dict(req, debugpy_path=private.target_path + "/lib")
        return req

    shipped = []

    def prepare(private):
        # Shipped before the injection when the target's files show no debugpy: after its hello the app's main
        # thread waits in our bootstrap for the request (5 s at most), and the blob crosses kubectl (1.7 MB,
        # 2.3 MB as base64) and unpacks to 11 MB. A target that imports one after all just does not use it.
        if fetch_blob is not None and not importable_debugpy(injection.proc):
            ship_debugpy(fetch_blob("debugpy"), private)
            shipped.append(True)

    result = injection.run({"op": "attach", "host": host, "port": port}, on_hello=on_hello, prepare=prepare)
    if result.get("status") in ("listening", "already") and result.get("port"):
        try:
            confirm(result, pid, float(request.get("confirm_timeout", 5.0)))
        except BaseException as interrupt:  # Ctrl-C, SIGTERM (pid/N): the server debugpy reported stays
            if not isinstance(interrupt, Exception):
                from .session import attach_last_word
                interrupt.wand_note = attach_last_word(None, pid, result)
            raise
    return result


def importable_debugpy(proc) -> bool:
    """Whether the target's files show a debugpy it would import (True when they cannot be read: the hello
    decides then)."""
    from .importable import find_debugpy
    try:
        return bool(find_debugpy(proc)[0])
    except Exception:
        return True


def confirm(result, pid, timeout):
    """Check that the server debugpy reported listens, without a session of ours that could end an editor's;
    ``confirmed`` names what was checked, or the result becomes an error."""
    host, port = result.get("host") or "127.0.0.1", int(result["port"])
    if separate_adapter(result):
        # debugpy's separate adapter (older debugpy; records from before "mode" existed) gives each client a
        # session of its own and refuses a second attach rather than replacing the first: our initialize and
        # disconnect never reach the debuggee, so a DAP round trip is safe there.
        result["confirmed"] = "it answers DAP"
        if not server_answers(host, port, timeout):
            result.update(status="error", kind="debugpy",
                          error="debugpy reported %s:%s but nothing answers there" % (host, port))
        return
    deadline = time.monotonic() + timeout
    while True:
        held = holds_listener(pid, host, port)
        if held or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # debugpy.listen returns once bound; pydevd's thread calls listen() right after
    if held:
        result["confirmed"] = ("the process holds the listening socket" if held is True else
                               "a socket listens there")  # the process's open files are not ours to read
        return
    if held is False:
        why = "another process holds the socket listening there"
    elif listening_inodes(host, port, "/proc/%d/net" % pid):
        why = "it listens in the process's own network namespace, which %s here does not reach" % host
    else:
        why = "nothing listens there"
    result.update(status="error", kind="debugpy", error="debugpy reported %s:%s but %s" % (host, port, why))


def separate_adapter(server) -> bool:
    """Whether the server is debugpy's separate adapter process (older debugpy), not pydevd in the target.
    Records written before "mode" existed were all the separate adapter."""
    return (server.get("mode") or "adapter") == "adapter"


def holds_listener(pid: int, host: str, port: int):
    """True: a socket in LISTEN state at host:port in this network namespace is one of pid's open files.
    None: no such socket here. False: there is one, and pid does not hold it. "unknown": there is one, and
    pid's open files cannot be read (they can wherever we could inject; kept for an odd /proc)."""
    inodes = listening_inodes(host, port)
    if not inodes:
        return None
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return "unknown"
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def listening_inodes(host, port: int, net=None) -> set:
    """``socket:[inode]`` names of the TCP sockets in LISTEN state on ``port`` (at ``host``'s address, or any
    address when host is None) in the network namespace of ``net`` (default: this thread's; /proc/net is the
    main thread's, and a local agent for a sandboxed pid/N runs in a thread inside the sandbox's namespace)."""
    if net is None:
        net = "/proc/thread-self/net" if os.path.isdir("/proc/thread-self/net") else "/proc/net"
    want = None
    if host is not None:
        want = "127.0.0.1" if host == "localhost" else host
    return {inode for state, (address, bound), _, inode in tcp_rows(net)
            if state == "0A" and bound == port and (want is None or address == want)}


def kernel_address(hexed: str, family) -> str:
    """/proc/net/tcp{,6}'s address (network-order 32-bit words, each printed as a host-order number), as text."""
    raw = bytes.fromhex(hexed)
    if sys.byteorder == "little":
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    try:
        return socket.inet_ntop(family, raw)
    except (OSError, ValueError):
        return ""


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


def port_holder(port: int, pid: int):
    """Who holds the listener on ``port`` when it may be the target's debug server, from what the kernel says
    (never from a name: argv, comm and the like are the other process's choice): "target" (one of the target's
    own sockets: pydevd in the process from an earlier attach, or the app's own server), "adapter" (a process
    listening where the target holds a connection to: debugpy's separate adapter, which pydevd connects to);
    else None (another process's, or a socket bound without listening). The target's hello then decides: its
    record (``debugpy._kubectl_wand_server``) must name a server, or the port is not ours."""
    inodes = listening_inodes(None, port)
    if not inodes:
        return None
    holders = pids_holding(inodes)
    if pid in holders:
        return "target"
    rows = list(tcp_rows())
    mine = socket_inodes(pid)
    peer_ports = {remote[1] for state, _, remote, inode in rows if state == "01" and inode in mine}
    serving = {inode for state, local, _, inode in rows if state == "0A" and local[1] in peer_ports}
    if serving and any(socket_inodes(other) & serving for other in holders):
        return "adapter"
    return None


def pids_holding(inodes: set) -> set:
    """The pids (of this pid namespace) that hold one of the sockets ``inodes`` (``socket:[N]`` names)."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and socket_inodes(int(name)) & inodes:
            pids.add(int(name))
    return pids


def socket_inodes(pid: int) -> set:
    """The ``socket:[N]`` names among pid's open files (empty when they cannot be read)."""
    found = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return found
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            found.add(link)
    return found


def tcp_rows(net="/proc/net"):
    """(state, (address, port), (remote address, remote port), ``socket:[inode]``) of each TCP socket in the
    network namespace of ``net``; state as the kernel prints it ("0A": LISTEN, "01": ESTABLISHED)."""
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open("%s/%s" % (net, table)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            ends = []
            for end in fields[1:3]:
                address, _, hex_port = end.rpartition(":")
                ends.append((kernel_address(address, family), int(hex_port, 16)))
            yield fields[3], ends[0], ends[1], "socket:[%s]" % fields[9]


def ship_debugpy(blob: bytes, private):
    """Unpack a pure-Python debugpy into ``lib/`` of the private directory, owned by the target's user, all
    of it before the target sees any (private.add_tree; the payload checks ``lib/.complete``)."""
    import errno
    import io
    import tarfile
    from .session import AgentError

    def members():
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and not member.name.startswith("/"):
                    with tar.extractfile(member) as src:
                        yield member.name, src.read()
    try:
        private.add_tree("lib", members())
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                size = sum(m.size for m in tar.getmembers())
            raise AgentError("environment", "no room to ship debugpy (%.1f MB) into %s in the target's filesystem; "
                             "free some space there or mount an emptyDir at /tmp" % (size / 1e6, private.base))
        raise AgentError("environment", "cannot ship debugpy into %s: %s" % (private.target_path, exc))


def dap_message(seq: int, command: str, arguments: dict) -> bytes:
    body = json.dumps({"seq": seq, "type": "request", "command": command, "arguments": arguments})
    return ("Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode()


def server_answers(host: str, port: int, timeout: float) -> bool:
    """Whether debugpy's separate adapter answers DAP: ``initialize``, then ``disconnect`` and its response.

    Never for the in-process server (see the module's docstring: our session would replace an editor's).
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


DAP_ANSWER_MAX = 1 << 20  # bytes read for one answer: debugpy's initialize response is ~4 KB


def read_until(sock, marker: bytes, deadline: float) -> bool:
    """Whether ``marker`` comes before the deadline, within DAP_ANSWER_MAX bytes. The peer is whatever holds
    the port the target's record names: a flood without the marker was kept whole and searched again after
    each read (seen: 60 MB and a core busy for the whole wait)."""
    data, seen = b"", 0
    while marker not in data.replace(b'"command":"', b'"command": "'):
        left = deadline - time.monotonic()
        if left <= 0 or seen > DAP_ANSWER_MAX:
            return False
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return False
        seen += len(chunk)
        data = data[-len(marker) - 2:] + chunk  # a marker split across reads is still found
    return True
