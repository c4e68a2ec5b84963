"""docker/NAME and podman/NAME without an engine: parsing, the one-line refusals made from the CLIs' own
messages (as docker 20.10 and podman 4.3 print them, copied from runs on this machine), the flags that do
not go with a container."""
from __future__ import annotations

import pytest

from kubectl_wand import errors, targets
from kubectl_wand.errors import WandError
from kubectl_wand.transport.engine import Engine
from kubectl_wand.transport.netns import enterable
from procs import wait_for


def test_engine_targets_parse():
    for kind in ("docker", "podman"):
        target = targets.parse("%s/web-1" % kind)
        assert (target.kind, target.name, target.engine, target.local, target.workload) == (
            kind, "web-1", True, False, False)
    assert not targets.parse("deploy/web").engine and not targets.parse("pid/3").engine
    with pytest.raises(WandError) as bad:
        targets.parse("docker/a/b")
    assert bad.value.code == errors.USAGE


@pytest.mark.parametrize("stderr, code, text", [
    ("Error: No such container: web", errors.NOT_FOUND, "docker/web not found: no such container"),
    ("Error: no container with name or ID \"web\" found: no such container", errors.NOT_FOUND,
     "docker/web not found"),
    ("Error response from daemon: Container 0123 is not running", errors.NOT_FOUND, "docker/web is not running"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     errors.ENVIRONMENT, "no docker engine answers (the default docker engine)"),
    ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: "
     "Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/containers/web/json\": dial unix /var/run/docker.sock: "
     "connect: permission denied", errors.ENVIRONMENT, "no permission on docker's socket"),
])
def test_cli_messages_become_one_line(stderr, code, text, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    error = Engine("docker").failure(stderr, "docker/web")
    assert error.code == code and error.message.startswith(text), error.message
    assert "\n" not in error.message


def test_the_endpoint_named_is_the_one_the_environment_chose(monkeypatch):
    monkeypatch.setenv("CONTAINER_HOST", "ssh://core@build:22/run/podman/podman.sock")
    assert Engine("podman").endpoint() == "CONTAINER_HOST=ssh://core@build:22/run/podman/podman.sock"


def test_a_process_that_is_not_the_container_is_never_entered():
    # this test's own process exists here, but its cgroup names no such container
    import os
    assert "not the container's" in enterable(os.getpid(), "f" * 64)
    assert "does not run on this machine" in enterable(2 ** 22 + 1, "f" * 64)
    assert enterable(0, "f" * 64)


# -- the exec-stream relay (transport/relay.py + agent/relay.py), with a local Python as the "exec" -------------

def _relay_forward(port, spawned, reported=None):
    import sys
    from kubectl_wand import pipes
    from kubectl_wand.agent.processes import AGENT_LOADER
    from kubectl_wand.transport.relay import ExecRelay

    def spawn(argv):
        proc = pipes.spawn(argv)
        spawned.append(proc)
        return proc
    return ExecRelay(lambda: [sys.executable, "-S", "-c", AGENT_LOADER], spawn, port, 0,
                     None if reported is None else reported.append)


def _echo_server():
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data or data == b"bye\n":
                    return  # the server ends the connection
                conn.sendall(data)
    threading.Thread(target=serve, daemon=True).start()
    return server


def _recv_exactly(sock, n):
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def test_the_relay_carries_bytes_both_ways_and_ends_with_either_side():
    import socket
    server = _echo_server()
    spawned = []
    forward = _relay_forward(server.getsockname()[1], spawned)
    try:
        big = bytes(range(256)) * 4096  # 1 MiB, every byte value: nothing is a line or text to the relay
        with socket.create_connection(("127.0.0.1", forward.local_port), 10) as a:
            a.settimeout(20)
            a.sendall(b"hello\n")
            assert _recv_exactly(a, 6) == b"hello\n"
            import threading
            threading.Thread(target=a.sendall, args=(big,), daemon=True).start()
            assert _recv_exactly(a, len(big)) == big
        spawned[0].wait(10)  # the client closed: its exec was ended (stdin closed, then terminated)
        with socket.create_connection(("127.0.0.1", forward.local_port), 10) as b:
            b.settimeout(20)
            b.sendall(b"bye\n")
            assert b.recv(10) == b""  # the server closed: so did the connection here
        assert spawned[1].wait(10) == 0  # the relay ended on its own when its connection did
        assert len(spawned) == 2
    finally:
        forward.close()
        server.close()


def test_the_relay_closes_a_connection_nothing_answers_and_close_ends_every_exec():
    import socket
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there
    spawned, reported = [], []
    forward = _relay_forward(port, spawned, reported)
    try:
        with socket.create_connection(("127.0.0.1", forward.local_port), 10) as a:
            a.settimeout(20)
            assert a.recv(10) == b""
        assert spawned[0].wait(10) == 3
        wait_for(lambda: reported, timeout=10)  # said by the connection's thread once its exec is reaped
        assert reported == ["a connection to port %d was closed: nothing listens there" % port]
        server = _echo_server()
        forward.remote_port = server.getsockname()[1]
        held = [socket.create_connection(("127.0.0.1", forward.local_port), 10) for _ in range(3)]
        for sock in held:
            sock.settimeout(20)
            sock.sendall(b"x\n")
            assert sock.recv(10) == b"x\n"
        forward.close()  # attach ends while the editor is still connected
        for proc in spawned[1:]:
            proc.wait(10)
        assert len(spawned) == 4 and all(p.returncode is not None for p in spawned)
        assert len(reported) == 1  # ended by close(): nothing to explain
        for sock in held:
            assert sock.recv(10) == b""
            sock.close()
        server.close()
    finally:
        forward.close()
