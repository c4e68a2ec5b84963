"""A forward over the engine's exec stream: 127.0.0.1:LOCAL here -> 127.0.0.1:PORT in a container.

For an engine whose container's network namespace cannot be entered from here (transport/netns.py): a remote
engine (DOCKER_HOST=ssh://, tcp://, a docker context, CONTAINER_HOST / --connection), or a user who is not root
(rootless Podman, a member of the docker group). Each accepted connection starts ``docker exec -i CONTAINER
python -S -c LOADER`` with the interpreter the agent already runs on, sends it agent/relay.py (one line, ~1 KB),
and pumps bytes between the connection and the exec's stdin/stdout; agent/relay.py does the same between its
stdin/stdout and 127.0.0.1:PORT in there. Either end closing ends both.

The ``docker exec`` is started from the connection's own thread, with PR_SET_PDEATHSIG (pipes.spawn): it dies
when that thread ends (the connection is over) or this process dies; the engine then closes the relay's stdin,
which ends it. close() ends every connection's exec at once. Readiness is the local listener: the debug server's
own socket was confirmed inside by the agent (agent/debugserver.py). Measured (bench/bench_engine_forward.py,
docs/docker.md): a connection's first byte waits for the exec and the container's Python, 95 ms (docker) and
160 ms (podman), against 1-3 ms through the namespace, so the namespace is chosen whenever it can be entered;
once open, a round trip costs 0.06-0.09 ms (0.02 ms through the namespace).
"""
from __future__ import annotations

import os
import socket
import threading

from .. import pipes
from .listener import ListenerForward

_SOURCE = None
RELAY_REFUSED = 3  # agent/relay.py's exit when nothing listens on the port


def relay_line(port: int) -> bytes:
    """The line the agent's loader executes: agent/relay.py's source, then the call that serves ``port``."""
    global _SOURCE
    if _SOURCE is None:
        from .. import agent
        with open(os.path.join(os.path.dirname(agent.__file__), "relay.py"), encoding="utf-8") as f:
            _SOURCE = f.read()
    return b"exec(%s);relay(%d)\n" % (ascii(_SOURCE).encode(), int(port))


class ExecRelay(ListenerForward):
    """``argv()``: the command line of one exec into the container (the transport's agent command line)."""

    def __init__(self, argv, spawn, remote_port: int, local_port=None, report=None):
        super().__init__(remote_port, local_port)
        self.argv, self.spawn, self.report = argv, spawn, report
        self.lock = threading.Lock()
        self.live = {}  # connection socket -> its exec's process, ended by close()
        self.start()

    def _serve(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            proc = self.spawn(self.argv())  # from this thread: PDEATHSIG ends it when the connection's over
        except OSError:
            conn.close()
            return
        with self.lock:
            ended = self.closed.is_set()
            if not ended:
                self.live[conn] = proc
        if ended:
            _hang_up(conn, proc)
            conn.close()
            return
        stderr = pipes.Drain(proc.stderr)
        answered = []
        back = threading.Thread(target=self._down, args=(proc, conn, answered), daemon=True)
        back.start()
        try:
            if pipes.write_line(proc, relay_line(self.remote_port)):
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    proc.stdin.write(data)
                    proc.stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            _hang_up(conn, proc)  # the local side ended: so does the exec (the relay sees its stdin close)
            back.join(5)
            conn.close()
            with self.lock:
                self.live.pop(conn, None)
            if not answered and proc.returncode and proc.returncode > 0 and self.report is not None:
                # the editor only sees its connection closed: say why once per failed connection
                self.report("a connection to port %d was closed: %s" % (self.remote_port, (
                    "nothing listens there" if proc.returncode == RELAY_REFUSED else
                    pipes.last_line(stderr.text()) or "the exec ended with %d" % proc.returncode)))

    @staticmethod
    def _down(proc, conn, answered):
        fd = proc.stdout.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                if not answered:
                    answered.append(True)
                conn.sendall(data)
        except OSError:
            pass
        try:
            conn.shutdown(socket.SHUT_RDWR)  # the relay ended (the server closed): so does the connection
        except OSError:
            pass

    def alive(self) -> bool:
        return not self.closed.is_set()

    def wait(self, timeout: float) -> bool:
        self.closed.wait(timeout)
        return self.alive()

    def close(self):
        self.close_listener()
        with self.lock:
            live, self.live = list(self.live.items()), {}
        for conn, proc in live:
            _hang_up(conn, proc)


def _hang_up(conn, proc):
    """End one connection: its socket both ways, and its exec (stdin closed, then terminated, reaped)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    pipes.close(proc, grace=2.0)
