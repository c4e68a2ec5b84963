"""The command a terminal session (pdb, exec-py -it) starts in the user's terminal before anything is known
about the target: it becomes the session's client once the agent says which one.

Run as ``PYTHON -I -S -c LAUNCHER NAME`` (any Python 3 of the container, or this CLI's own locally), it connects
to the agent's abstract Unix socket NAME (the CLI chose it and sent it in the request), accepts only a peer of
its own uid (SO_PEERCRED: another uid's process that bound the name first is never obeyed), reads one framed
message ``SIZE\\n`` + JSON ``[argv, env]`` and execs ``argv + [FD]``: the client (passengers/pdbclient.py,
replclient.py) under the target's own interpreter, which keeps the connection as file descriptor FD.

Why: in a pod the client's ``kubectl exec -it`` (~0.15-0.3 s: kubectl, the exec stream, a Python) then starts
with the agent's, before the pod is read from the API, instead of after the agent named the client. The agent
may not listen yet: connect is retried every 10 ms (the listener appears with no event we could wait on), at
most ``WAIT`` seconds; the CLI ends the launcher itself when the session does not start. Exits 0 when the
agent closes without a client (the session did not start: the CLI says why), 2 when no agent ever listened or
the client could not be started, 130 on Ctrl-C before the client runs. The message is read to its exact
size: what follows it on the connection is the client's (pdb's first prompt).
"""

WAIT = 60.0  # seconds: the agent listens once it has chosen the process (~0.1-2 s on a loaded node)

LAUNCHER = r"""
import json, os, socket, struct, sys, time
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    end = time.monotonic() + %(wait)r
    while True:
        try:
            s.connect("\0" + sys.argv[1])
            break
        except OSError:
            if time.monotonic() > end:
                sys.stderr.write("error: kubectl wand's session did not start within %%gs\n" %% %(wait)r)
                sys.exit(2)
            time.sleep(0.01)
    if struct.unpack("iII", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1] != os.geteuid():
        sys.exit(2)
    head = b""
    while not head.endswith(b"\n") and len(head) < 12:
        c = s.recv(1)
        if not c:
            sys.exit(0)
        head += c
    size = int(head)
    data = b""
    while len(data) < size and size <= 1 << 20:
        c = s.recv(size - len(data))
        if not c:
            sys.exit(0)
        data += c
    argv, env = json.loads(data.decode())
    os.set_inheritable(s.fileno(), True)
    os.execve(argv[0], argv + [str(s.fileno())], env)
except KeyboardInterrupt:
    sys.exit(130)
except (OSError, ValueError) as exc:
    if isinstance(exc, ConnectionError):
        sys.exit(0)  # the agent closed without a client: the session did not start, the CLI says why
    sys.stderr.write("error: kubectl wand's session client could not start: %%s\n" %% exc)
    sys.exit(2)
""" % {"wait": WAIT}


def launcher_args(python: str, name: str) -> list:
    """argv that runs the launcher for session ``name`` under ``python``."""
    return [python, "-I", "-S", "-c", LAUNCHER, name]


def end_if(proc, failed):
    """End the launcher ``proc`` if ``failed`` (a threading.Event) is set before it exits: the agent's call
    ended without a session (refused, pending, an error), and a launcher that never connected would poll for
    WAIT seconds. SIGTERM first: kubectl puts the user's terminal back as it was; SIGKILL if it lingers."""
    import subprocess
    import threading

    def watch():
        while proc.poll() is None:
            if failed.wait(0.2):  # the Event, or now and then the child's exit (no event for both at once)
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                return

    if failed is not None:
        threading.Thread(target=watch, daemon=True).start()


def terminal_launcher(flags, kubectl, pod, container, python, name):
    """``kubectl exec -it POD [-c C] -- PYTHON -I -S -c LAUNCHER NAME`` with the user's terminal (``-i`` alone
    when our stdin is no terminal): the launcher above, in a pod.
    ``kubectl``: the transport's argv maker (kubectl_in with the namespace)."""
    import sys
    tty = ["-t"] if sys.stdin.isatty() else []
    where = ["-c", container] if container else []
    command = kubectl("exec", "-i", *tty, pod, *where, "--", *launcher_args(python, name))
    return flags.spawn(command, short_lived=False, stdin=None, stdout=None, stderr=None)
