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

In-process when it can: in a pod the launcher's ``python3`` is usually the app's own interpreter, and then a second
interpreter's start (~12 ms) and the client's first imports (pdb's: ~45 ms, most of the time from the agent's word
to the first prompt, measured with bench/bench_pdb.py) followed the agent's answer. So, under 3.14, the launcher
imports what the session's client imports first (``WARM``) in a thread while it waits, and when ``argv`` runs this
very interpreter with its own flags on this session (``BINARY -I -S -c SOURCE NAME ...``, not a wrapper that execs
another interpreter such as lent.py's chroot: the same binary by device and inode as /proc/self/exe, hence the same
version as the target's) it runs SOURCE here, as execve would: ``env`` exactly (the client imports readline, which
reads TERM, only after), LC_CTYPE from it (LC_ALL=C.UTF-8), the standard streams' error handlers an interpreter
started with it has, ``sys.argv`` = ``["-c", ARGS..., FD]``, a fresh ``__main__``. Anything else (another binary,
another version, a stream not UTF-8) is exec'd.
"""

WAIT = 60.0  # seconds: the agent listens once it has chosen the process (~0.1-2 s on a loaded node)

# What each session's client imports first, by the op in the session's name (kubectl-wand-OP-HEX):
# pdbclient.py imports pdb (~45 ms in a pod), replclient.py code; never readline (see the docstring). Names
# after a "-" are put off as pdbclient.py puts them off (LATER there): pdb imports them, its client never uses them.
WARM = {"pdb": ("-asyncio", "-tempfile", "pdb"), "repl": ("code", "base64", "select")}

LAUNCHER = r"""
import sys
try:
    import json, os, socket, struct, time
except KeyboardInterrupt:
    sys.exit(130)


class Later(type(sys)):
    def __getattr__(self, attr):
        import importlib
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def warm(names):
    try:
        for name in names:
            if name[0] == "-":
                if name[1:] not in sys.modules:
                    sys.modules[name[1:]] = Later(name[1:])
            else:
                __import__(name)
    except BaseException:
        pass


def same_python(argv, env):
    if len(argv) < 6 or argv[1:4] != ["-I", "-S", "-c"] or argv[5] != sys.argv[1] or sys.version_info < (3, 14):
        return False
    if env.get("LC_ALL") != "C.UTF-8":
        return False
    if not (sys.flags.isolated and sys.flags.no_site) or sys.getfilesystemencoding() != "utf-8":
        return False
    if any((getattr(f, "encoding", None) or "").lower() != "utf-8" for f in (sys.stdin, sys.stdout, sys.stderr)):
        return False
    try:
        ours, theirs = os.stat("/proc/self/exe"), os.stat(argv[0])
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def run_here(argv, env, fd):
    import _locale
    os.environ.clear()
    os.environ.update(env)
    try:
        _locale.setlocale(_locale.LC_CTYPE, "")
    except _locale.Error:
        pass
    sys.stdin.reconfigure(errors="surrogateescape")
    sys.stdout.reconfigure(errors="surrogateescape")
    sys.stderr.reconfigure(errors="backslashreplace")
    sys.argv = ["-c"] + argv[5:] + [str(fd)]
    main = type(sys)("__main__")
    sys.modules["__main__"] = main
    exec(compile(argv[4], "<string>", "exec"), main.__dict__)


try:
    names = %(warm)r.get((sys.argv[1].split("-") + ["", "", ""])[2])
    if names and sys.version_info >= (3, 14):
        import _thread
        _thread.start_new_thread(warm, (names,))
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
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv) and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("the agent's message is not [argv, env]")
    if "before_client" in globals():  # the one-exec session's (transport/sessionexec.py): the terminal as it was
        before_client()
    import signal
    if not same_python(argv, env):
        os.set_inheritable(s.fileno(), True)
        # Ctrl-C from here to the client's handler (clientkit.py) waits, blocked across the exec, instead of
        # ending the client's first imports with a traceback; the client unblocks it and leaves (exit 130).
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        os.execve(argv[0], argv + [str(s.fileno())], env)
except KeyboardInterrupt:
    sys.exit(130)
except (OSError, ValueError, TypeError) as exc:  # TypeError: a message of the wrong shape
    if isinstance(exc, ConnectionError):
        sys.exit(0)  # the agent closed without a client: the session did not start, the CLI says why
    sys.stderr.write("error: kubectl wand's session client could not start: %%s\n" %% exc)
    sys.exit(2)
try:
    os.set_inheritable(s.fileno(), True)
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # as clientkit.py's, until the client handles it
    run_here(argv, env, s.detach())  # the client owns the connection now, as it would after execve
except KeyboardInterrupt:
    sys.exit(130)
""" % {"wait": WAIT, "warm": WARM}


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
