"""The two ways a debug port reaches 127.0.0.1 from a container of a local engine (transport/engine.py): through
its network namespace (transport/netns.py) and over the engine's exec stream (transport/relay.py, for a remote
engine or a user who is not root). Prints medians of interleaved rounds, per engine:

  first byte   connect, send a line, its echo back (a relay starts ``docker exec`` and a Python per connection)
  round trip   one small message and its echo on a connection already open (what each DAP request costs)

Needs root and hack/engines up (docker and podman, the py314 image). Informational: no target is enforced (the
relay's first byte is the engine's exec start, not ours to tune).

  .venv/bin/python bench/bench_engine_forward.py [ROUNDS]
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kubectl_wand.transport.engine import RELAY_ENV, Engine, EngineTransport  # noqa: E402

ENV_FILE = os.path.join(os.environ.get("WAND_CACHE") or os.path.expanduser("~/.cache/kubectl-wand"), "engines",
                        "current.env")
PORT = 7001
ECHO = ("import socket,threading\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',%d));s.listen(64)\n"
        "print('READY',flush=True)\n"
        "def echo(c):\n"
        " c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
        " while True:\n"
        "  d=c.recv(65536)\n"
        "  if not d: break\n"
        "  c.sendall(d)\n"
        " c.close()\n"
        "while True:\n"
        " c,_=s.accept();threading.Thread(target=echo,args=(c,),daemon=True).start()\n" % PORT)


def echo_once(sock, data=b"x" * 100 + b"\n"):
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the connection closed")
        got += chunk


def measure(forward, trips=20):
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", forward.local_port), 10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        echo_once(sock)
        first = time.perf_counter() - started
        times = []
        for _ in range(trips):
            t = time.perf_counter()
            echo_once(sock)
            times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    env = dict(line.strip().split("=", 1) for line in open(ENV_FILE) if "=" in line)
    os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
    for name in ("docker", "podman"):
        container = "cw-bench-%s" % uuid.uuid4().hex[:8]
        network = ["--network", "none"] if name == "podman" else []
        subprocess.run([name, "run", "-d", "--name", container, *network, env["WAND_ENGINE_IMAGE"], "python3",
                        "-c", ECHO], check=True, capture_output=True, timeout=60)
        try:
            end = time.monotonic() + 30
            while not subprocess.run([name, "logs", container], capture_output=True, text=True,
                                     timeout=30).stdout.startswith("READY"):
                if time.monotonic() > end:
                    raise SystemExit("%s never became ready" % container)
                time.sleep(0.1)
            engine = Engine(name)
            transport = EngineTransport(engine, engine.inspect(container))
            transport.python = "python3"
            results = {"netns": ([], []), "relay": ([], [])}
            for _ in range(rounds):
                for way in ("netns", "relay"):  # interleaved
                    if way == "relay":
                        os.environ[RELAY_ENV] = "1"
                    else:
                        os.environ.pop(RELAY_ENV, None)
                    forward = transport.forward(PORT, 0)
                    try:
                        first, trip = measure(forward)
                    finally:
                        forward.close()
                    results[way][0].append(first)
                    results[way][1].append(trip)
            for way, (firsts, trips) in results.items():
                print("%-6s %-5s first byte %8.2f ms   round trip %6.3f ms   (medians of %d)" % (
                    name, way, statistics.median(firsts) * 1e3, statistics.median(trips) * 1e3, rounds))
        finally:
            subprocess.run([name, "rm", "-f", container], capture_output=True, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
