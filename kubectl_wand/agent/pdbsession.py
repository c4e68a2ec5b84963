"""The agent side of ``pdb`` (and ``exec-py -it``, op ``repl``): inject a server that keeps its connection,
and relay it to the client in the terminal.

One injection whose connection stays open (``session.Injection.run(stream=...)``); its code is
passengers/pdbserver.py. The client (passengers/pdbclient.py) runs under the target's own interpreter, in the
user's terminal: the agent cannot start it (in a pod its stdin and stdout are the protocol's pipes, not a
terminal). The CLI runs a launcher there (transport/launcher.py: ``Transport.terminal``, the user's terminal
here, ``kubectl exec -it`` in a pod, started with the agent's own exec when the pod is named alone) that
connects to the abstract Unix socket the request names (``client``); the agent answers that connection with
the client's command (a size line, then JSON ``[argv, env]``) and the launcher execs it, keeping the
connection. The agent emits ``{"terminal": {"client", "pid"}}`` once it listens. The socket is reachable from
the target's root too (chroot and nsenter keep the network namespace), leaves no file, and only a process of
our own uid is accepted (SO_PEERCRED), once.

Relay: client -> target byte for byte (the target reads its lines); target -> client line by line, minus the
target's last ``{"wand": "detached", ...}`` line. Ends when the target closes (q, Ctrl-D: pdb detached), when
the client goes away (its kubectl or terminal closed: the target is told to detach), or when ``stop`` is set.
"""
from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import time

from . import protocol
from .protocol import AgentError
from .session import Injection, module_source

CLIENT_WAIT = 60.0    # for the client to connect: a `kubectl exec -it` that starts a Python takes ~0.2-2 s
DETACH_WAIT = 10.0    # for the target to take everything back once asked
START_WAIT = 30.0     # for pdb to start in the target (its import: ~40 ms; a loaded 2-core node: seconds)


# op -> the client that runs in the terminal (passengers/)
CLIENTS = {"pdb": "pdbclient", "repl": "replclient"}


def client_source(op):
    """The session's client as one program: what both clients share (clientkit.py), then the op's own."""
    return module_source("clientkit") + "\n" + module_source(CLIENTS[op])
# what the client is told once the target's server runs (pdb's client waits for pdb's own first message)
GREETINGS = {"repl": b'{"session": "started"}\n'}


def run_pdb(request: dict, emit=None, stop=None) -> dict:
    return run_session(request, {"op": "pdb"}, emit, stop)


def run_repl(request: dict, emit=None, stop=None) -> dict:
    """exec-py -it: the same session, with passengers/replserver.py inside and replclient.py in the terminal."""
    from .session import check_timeout
    return run_session(request, {"op": "repl", "timeout": check_timeout(request.get("code_timeout", 10.0)),
                                 "max_output": int(request.get("max_output", 1 << 20))}, emit, stop)


def client_name(request, op):
    """The abstract socket's name the CLI chose (its launcher connects to it), checked: ours, no NUL."""
    name = request.get("client")
    if not isinstance(name, str) or not re.match(r"kubectl-wand-%s-[0-9a-f]{16,64}\Z" % op, name):
        raise AgentError("usage", "the session's client name %r is not one kubectl wand makes" % (name,))
    return name


def run_session(request, inner, emit, stop):
    pid = int(request["pid"])
    name = client_name(request, inner["op"])
    relay = None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        injection = Injection(pid, float(request.get("timeout", 10.0)))
        try:
            listener.bind("\0" + name)
        except OSError as exc:  # someone in this network namespace took the name first: not our launcher's peer
            raise AgentError("busy", "the session's socket @%s is taken (%s); retry" % (name, exc))
        listener.listen(1)
        argv, env = injection.rt.command(["-c", client_source(inner["op"]), name, str(pid)])
        # Listening before the injection: the launcher (started with this agent, or at this event) connects
        # and execs the client while the injection runs. Its connection waits in the listener's backlog; if
        # the injection fails or stays pending, the listener closes and the launcher ends without a word.
        if emit is not None:
            emit({"terminal": {"client": name, "pid": pid}})
        relay = Relay(pid, listener, argv, env, emit, stop)
        relay.verb = "exec-py -it" if inner["op"] == "repl" else "pdb"
        relay.greeting = GREETINGS.get(inner["op"], b"")
        relay.start_accepting()
        try:
            return injection.run(inner, stream=relay)
        finally:
            relay.finish()
    finally:
        if relay is None or not relay.served:
            end_launchers(name)  # the session did not start (refused, pending, no such process...)
            # a pod named alone: its launcher started with us; lingering only if it has not connected yet
            if request.get("hold") and not (relay is not None and relay.connected):
                linger(listener, name)
                listener = None
        if listener is not None:
            listener.close()


LINGER = 20.0  # seconds a failed session's socket stays for a launcher that starts late (a loaded node: ~1-5 s)


def linger(listener, name, seconds=LINGER):
    """A session that did not start, whose launcher was started with this agent (a held early call): keep its
    socket a while, in a thread that is not a daemon (the agent's result is written meanwhile; the process
    ends after it), so a launcher that starts after the failure connects, finds the connection closed and
    ends at once, instead of polling for launcher.WAIT seconds in the container (a `kubectl exec -it`'s
    process outlives its kubectl, which the CLI has ended by then)."""
    import threading

    def run():
        try:
            try:
                listener.listen(1)
            except OSError:
                listener.bind("\0" + name)  # the session failed before it listened
                listener.listen(1)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if select.select([listener], [], [], min(1.0, max(0.0, deadline - time.monotonic())))[0]:
                    listener.accept()[0].close()
                    break  # one launcher per session
        except (OSError, ValueError):
            pass
        finally:
            listener.close()

    threading.Thread(target=run, name="kubectl-wand-linger").start()


def end_launchers(name):
    """A session that did not start: end this session's launchers here that never connected. A `kubectl exec
    -it`'s process outlives its kubectl (seen in a pod: the CLI ended its kubectl, the launcher went on polling
    for the socket for a minute). Only what kubectl exec started (ppid 0 in the container), of our own uid,
    whose last argument is this session's name; locally the CLI ends its own child."""
    import signal
    from . import processes, procfs
    for pid in procfs.all_pids():
        try:
            proc = procfs.Proc(pid)
        except (ProcessLookupError, ValueError, IndexError, OSError):
            continue
        if (pid != os.getpid() and proc.ppid == 0 and proc.euid == os.geteuid() and proc.cmdline and
                proc.cmdline[-1] == name):
            processes.signal_once(proc, signal.SIGTERM)


class Relay:
    def __init__(self, pid, listener, argv, env, emit, stop):
        self.pid, self.listener, self.argv, self.env = pid, listener, argv, env
        self.emit, self.stop = emit, stop
        self.detached = None
        self.greeting = b""
        self.client = None
        self.ended = self.served = self.connected = False
        self.accepted = None
        self.verb = "pdb"  # what the user ran, for messages ("exec-py -it" for a repl session)

    def start_accepting(self):
        """Accept the launcher and send it the client's command now, while the injection runs: the client's
        start (an interpreter and pdb's import, ~50-80 ms in a pod) overlaps the injection instead of
        following it. A session that does not start closes that connection: the client ends without a word."""
        import threading
        self.accepted, self.lock = threading.Event(), threading.Lock()

        def accept():
            try:
                client = self.accept()
            except (OSError, ValueError):  # the listener closed: the session ended before a client came
                client = None
            self.connected = client is not None
            with self.lock:
                if self.ended and client is not None:
                    client.close()  # too late: the session is over
                    client = None
                self.client = client
                self.accepted.set()

        threading.Thread(target=accept, name="kubectl-wand-accept", daemon=True).start()

    def finish(self):
        """The session is over: stop accepting, and close a client it never used."""
        if self.accepted is None:
            return
        with self.lock:
            self.ended = True
            if self.client is not None:
                self.client.close()
                self.client = None

    def __call__(self, conn, hello, lines=None):
        # what the reader of the hello may already hold past it (nothing: the target speaks once asked)
        first, pending = self.first(conn, bytes(lines.buf) if lines is not None else b"")
        if first.get("wand") != "started":
            if first.get("status") == "error":
                raise AgentError(first.get("kind", "inject"), first.get("error", "pdb did not start"))
            raise AgentError("inject", "pdb did not start in process %d (%s)" % (self.pid, first or "no answer"))
        self.accepted.wait()  # bounded: the acceptor gives up after CLIENT_WAIT, or when stopped
        client, self.client = self.client, None
        self.served = client is not None
        if client is None:
            reason = "stopped" if self.stopped() else "no client"
            self.detach(conn, b"")
            if reason == "no client":
                raise AgentError("runtime", "the session's client (%s's terminal) did not connect within %gs" % (
                                     self.verb, CLIENT_WAIT),
                                 detached=self.detached is not None)
            return {"status": "ok", "pid": self.pid, "reason": reason, "detached": self.detached is not None}
        with client:
            if self.greeting:
                client.sendall(self.greeting)
            reason, pending = self.relay(conn, client, pending)
            if reason != "target":
                self.detach(conn, pending)
        return {"status": "ok", "pid": self.pid, "reason": (self.detached or {}).get("reason", reason),
                "detached": self.detached is not None}

    def stopped(self):
        return self.stop is not None and self.stop.is_set()

    def accept(self):
        deadline = time.monotonic() + CLIENT_WAIT
        while time.monotonic() < deadline and not self.stopped() and not self.ended:
            if not select.select([self.listener], [], [], 0.2)[0]:
                continue
            client, _ = self.listener.accept()
            uid = struct.unpack("iII", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != os.geteuid():
                client.close()  # another user's process in the pod's network namespace: not our client
                continue
            # the launcher's message: the client's command, which it execs keeping this connection
            command = json.dumps([list(self.argv), dict(self.env)]).encode()
            try:
                client.sendall(b"%d\n" % len(command) + command)
            except OSError:
                client.close()
                continue
            return client
        return None

    def first(self, conn, pending=b""):
        """The target's first line: started, or why not; (it as a dict, what came after it)."""
        import json
        deadline = time.monotonic() + START_WAIT
        while b"\n" not in pending and time.monotonic() < deadline and len(pending) <= protocol.SMALL_MAX:
            if select.select([conn], [], [], 0.2)[0]:
                data = recv(conn)
                if not data:
                    break
                pending += data
        line, _, rest = pending.partition(b"\n")
        try:
            return json.loads(line) if line else {}, rest
        except ValueError:
            return {}, rest

    def relay(self, conn, client, pending=b""):
        """Carry bytes until one side ends; (who ended it, the target's unsent partial line)."""
        if pending:
            lines, pending = self.split(pending)
            client.sendall(lines)
        while True:
            if self.stopped():
                return "stopped", pending
            ready = select.select([conn, client], [], [], 0.2)[0]
            if client in ready:
                data = recv(client)
                if not data:
                    return "client", pending
                try:
                    conn.sendall(data)
                except OSError:
                    return "target", pending
            if conn in ready:
                data = recv(conn)
                if not data:
                    return "target", pending
                pending += data
                if len(pending) > protocol.LINE_MAX:  # a line without end: not pdb's (the target is untrusted)
                    return "target", b""
                lines, pending = self.split(pending)
                if lines:
                    try:
                        client.sendall(lines)
                    except OSError:
                        return "client", pending
                if self.detached is not None:
                    return "target", pending

    def split(self, pending):
        """(whole lines for the client, the rest), with the target's detached line taken out."""
        out = []
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.startswith(b'{"wand"'):
                import json
                try:
                    self.detached = json.loads(line)
                except ValueError:
                    self.detached = {"wand": "detached", "reason": "unknown"}
            else:
                out.append(line + b"\n")
        return b"".join(out), pending

    def detach(self, conn, pending):
        """Ask the target to take everything back, and wait for its word (or the connection's end)."""
        try:
            conn.sendall(b'{"wand": "detach"}\n')
        except OSError:
            return
        deadline = time.monotonic() + DETACH_WAIT
        while self.detached is None and time.monotonic() < deadline:
            if not select.select([conn], [], [], 0.2)[0]:
                continue
            data = recv(conn)
            if not data:
                break
            _, pending = self.split(pending + data)


def recv(sock):
    try:
        return sock.recv(65536)
    except OSError:
        return b""
