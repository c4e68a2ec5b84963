"""Runs as ``python3 -S -c <LOADER>`` in a container (transport/relay.py): one forwarded connection.

LOADER executes the first stdin line, ``exec('<this source>');relay(PORT)``. The relay connects to
127.0.0.1:PORT inside the container and copies bytes both ways, stdin -> socket in a thread, socket -> stdout
here, until either side ends; then the whole process ends (os._exit): the CLI closing our stdin (the local
connection closed, or its ``docker exec`` was ended: the engine then closes our stdin), or the server closing
the connection. stdout is the connection itself: nothing else is ever written there. Nothing listening: exit 3
before a byte is read, and the CLI closes the local connection (as kubectl port-forward does).
Standard library only, Python >= 3.8; about 2 KB on the wire, where the agent's header is 20-60 KB.

Only built-in modules: ``socket`` and ``threading`` import enum and more, measured 34 ms of a container's
Python (its stdlib uncompiled) before the first byte; ``_socket`` and ``_thread`` cost nothing.
"""
import _socket
import _thread
import os
import sys


def relay(port):
    conn = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(("127.0.0.1", port))
    except OSError:
        os._exit(3)
    conn.settimeout(None)
    conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)  # DAP is small messages: no Nagle delay
    _thread.start_new_thread(_up, (conn,))
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            while data:
                data = data[os.write(1, data):]
    except OSError:
        pass
    os._exit(0)


def _up(conn):
    stdin = sys.stdin.buffer  # the loader's readline may already hold the first bytes of the connection
    try:
        while True:
            data = stdin.read1(65536)
            if not data:
                break
            conn.sendall(data)
    except (OSError, ValueError):
        pass
    os._exit(0)
