"""A forward that listens on 127.0.0.1 here and serves each accepted connection itself, without kubectl: the
shared half of the namespace forward (netns.py) and the engine's exec-stream relay (relay.py). A subclass says
how one connection reaches the port inside (``_serve``); the listener, its port choice, its restart on the same
local port and its close are here."""
from __future__ import annotations

import socket
import threading

from .. import errors
from ..errors import WandError
from . import Forward

def listen(want, remote_port: int, required: bool) -> socket.socket:
    """A listening socket on 127.0.0.1:``want`` (default: the remote port's number, else any free port when
    that one is busy and was not ``required``)."""
    from .portforward import port_free
    want = want if want is not None else remote_port
    if want and not port_free(want):
        if required:
            raise WandError("local port %d is busy; choose another with --local-port" % want, errors.ENVIRONMENT)
        want = 0
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", want))
    except OSError as exc:
        listener.close()
        raise WandError("cannot listen on 127.0.0.1:%d: %s" % (want, exc.strerror), errors.ENVIRONMENT)
    listener.listen(16)
    return listener


class ListenerForward(Forward):
    def __init__(self, remote_port: int, local_port=None):
        self.remote_port = remote_port
        self.requested = local_port
        self.local_port = None
        self.listener = None
        self.closed = threading.Event()

    def start(self):
        listener = listen(self.local_port or self.requested, self.remote_port, bool(self.requested or
                                                                                   self.local_port))
        self.listener = listener
        self.local_port = listener.getsockname()[1]
        self.closed.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener):
        while not self.closed.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        """Carry one accepted connection to the port inside, until either side ends."""
        raise NotImplementedError

    def restart(self):
        self.close_listener()
        self.start()

    def close_listener(self):
        self.closed.set()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
