"""transport/launcher.py, the command a terminal session (pdb, exec-py -it) starts in the user's terminal before
the agent names the client: real processes, a real abstract Unix socket. It execs what a peer of its own uid
sends, keeping the connection (nothing after the message is lost); it obeys no other uid; a session that does
not start ends it quietly."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from kubectl_wand.transport.launcher import launcher_args

CLIENT = ("import socket, sys; s = socket.socket(fileno=int(sys.argv[2])); data = b''\n"
          "while not data.endswith(b'!'): data += s.recv(100)\n"
          "s.sendall(b'client got ' + data); print(sys.argv[1], data.decode())")


def name():
    return "kubectl-wand-pdb-" + os.urandom(16).hex()


def listen(session):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + session)
    listener.listen(1)
    listener.settimeout(30)
    return listener


def launch(session):
    return subprocess.Popen(launcher_args(sys.executable, session), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_it_execs_the_client_a_peer_of_its_uid_sends_and_keeps_the_connection():
    session = name()
    proc = launch(session)  # before anyone listens: it retries until the agent does
    listener = listen(session)
    try:
        conn, _ = listener.accept()
        command = json.dumps([[sys.executable, "-I", "-S", "-c", CLIENT, "ARG"], {"PATH": "/usr/bin"}]).encode()
        # the message and the client's first bytes in one write: none of these is the launcher's to read
        conn.sendall(b"%d\n" % len(command) + command + b"pdb's first prompt!")
        conn.settimeout(30)
        got = b""
        while not got.endswith(b"!"):
            got += conn.recv(100)
        assert got == b"client got pdb's first prompt!"
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.decode().split() == ["ARG", "pdb's", "first", "prompt!"]
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("message", [b"[1, 2]", b"[[1], {}]", b"[[\"/bin/true\"], []]", b"{}", b"7"],
                         ids=["numbers", "argv-of-numbers", "env-a-list", "object", "number"])
def test_a_message_of_the_wrong_shape_ends_it_with_one_line_not_a_traceback(message):
    session = name()
    proc = launch(session)
    listener = listen(session)
    try:
        conn, _ = listener.accept()
        conn.sendall(b"%d\n" % len(message) + message)
        out, err = proc.communicate(timeout=30)
        conn.close()
        assert proc.returncode == 2, err
        lines = err.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: kubectl wand's session client could not start"), err
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("accepted", [True, False], ids=["closed", "never-accepted"])
def test_a_session_that_does_not_start_ends_it_quietly(accepted):
    """The injection failed: the agent closes its end (EOF), or its listener with the launcher's connection
    still in the backlog (ECONNRESET): no traceback on the user's terminal, exit 0."""
    import select
    session = name()
    listener = listen(session)
    proc = launch(session)
    try:
        assert select.select([listener], [], [], 30)[0]  # the launcher's connection waits in the backlog
        if accepted:
            listener.accept()[0].close()
        listener.close()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and out == b"" and err == b"", (proc.returncode, out, err)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK),
                    reason="needs root and /usr/bin/python3 to run the squatter as another uid")
def test_it_obeys_no_peer_of_another_uid(tmp_path):
    """Another user's process that bound the session's name first is never obeyed: no exec."""
    session = name()
    marker = tmp_path / "ran"
    command = json.dumps([[sys.executable, "-c", "open(%r, 'w').write('x')" % str(marker)], {}]).encode()
    squatter = subprocess.Popen(["/usr/bin/python3", "-I", "-S", "-c", (
        "import socket, sys; l = socket.socket(socket.AF_UNIX); l.bind('\\0' + sys.argv[1]); l.listen(1); "
        "print('ready', flush=True); c, _ = l.accept(); c.sendall(sys.argv[2].encode()); c.recv(1)"),
        session, (b"%d\n" % len(command) + command).decode()], user=65534, stdout=subprocess.PIPE)
    try:
        assert squatter.stdout.readline() == b"ready\n"
        proc = launch(session)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 2 and not marker.exists(), err
    finally:
        squatter.kill()
        squatter.wait()
        squatter.stdout.close()


def test_a_launcher_waiting_for_a_session_that_failed_is_ended():
    """The agent's call ended without a session before the launcher connected: it would poll for its socket for
    a minute (launcher.WAIT) while the user waits; end_if ends it once told."""
    import threading
    import time
    from kubectl_wand.transport.launcher import WAIT, end_if
    proc = launch(name())  # nobody will ever listen
    failed = threading.Event()
    end_if(proc, failed)
    started = time.monotonic()
    failed.set()
    proc.communicate(timeout=WAIT / 2)
    assert time.monotonic() - started < WAIT / 2 and proc.returncode is not None


def test_a_launcher_that_starts_after_a_held_session_failed_ends_at_once():
    """A pod named alone: the launcher starts with the agent and may come after the session failed (seen on a
    loaded node). The agent keeps the socket a while (pdbsession.linger): the launcher connects, finds it
    closed and ends at once instead of polling for launcher.WAIT seconds in the container."""
    import time
    from kubectl_wand.agent import pdbsession
    from kubectl_wand.agent.protocol import AgentError
    from kubectl_wand.transport.launcher import WAIT
    session = name()
    with pytest.raises(AgentError):  # no such process: the session fails before it listens
        pdbsession.run_session({"pid": 999999, "client": session, "hold": True}, {"op": "pdb"}, None, None)
    started = time.monotonic()
    proc = launch(session)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0 and err == b"", (proc.returncode, err)
    assert time.monotonic() - started < WAIT / 2


# The client under test for the in-process path: says how it runs (its process's original argv tells a launcher
# that ran it in-process from one that exec'd it), and what execve would have given it.
REPORTER = ("import json, locale, os, socket, sys; s = socket.socket(fileno=int(sys.argv[-1])); data = b''\n"
            "while not data.endswith(b'!'): data += s.recv(100)\n"
            "print(json.dumps({'orig_argv': sys.orig_argv, 'argv': sys.argv, 'env': dict(os.environ), 'got': "
            "data.decode(), 'ctype': locale.setlocale(locale.LC_CTYPE), 'errors': [f.errors for f in (sys.stdin, "
            "sys.stdout, sys.stderr)], 'main': __name__, 'pdb': 'pdb' in sys.modules}))")
CLIENT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def with_proc(py314, argv):
    """``argv`` under the tests' 3.14 as a pod's python3 runs: with /proc (the launcher compares /proc/self/exe).
    Chrooted in its root filesystem (no /proc there) it runs in a mount namespace of its own with one mounted,
    which goes with it."""
    import shutil
    if py314.root is None:
        return py314.argv(argv)
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount /proc for the chrooted 3.14")
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', py314.root, "/usr/bin/python3.14"] + argv


def run_reporter(py314, session, client_python, env=CLIENT_ENV, first=None):
    """The launcher under the tests' 3.14, sent ``client_python -I -S -c REPORTER FIRST ARG`` (FIRST: the
    session's name, as the agent sends it to its clients); the reporter's JSON."""
    proc = subprocess.Popen(with_proc(py314, launcher_args("python3.14", session)[1:]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, TERM="xterm"))
    listener = listen(session)
    try:
        conn, _ = listener.accept()
        command = json.dumps([[client_python, "-I", "-S", "-c", REPORTER, first or session, "ARG"], env]).encode()
        conn.sendall(b"%d\n" % len(command) + command + b"pdb's first prompt!")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interpreter(py314, version):
    """The path of ``python<version>`` as the launcher sees it (in the root filesystem when chrooted)."""
    import shutil
    if py314.root is None:
        return shutil.which("python" + version)
    path = "/usr/bin/python" + version
    return path if os.path.exists(py314.root + path) else None


@pytest.mark.py314
def test_a_client_under_its_own_interpreter_runs_in_the_launcher_as_execve_would_run_it(py314):
    """In a pod the launcher's python3 is usually the target's: the client then runs in the launcher's process
    (no second interpreter's start; pdb imported while the launcher waited), with what execve would have given
    it: the environment exactly (not the launcher's TERM), C.UTF-8, its arguments and the connection."""
    exe = interpreter(py314, "3.14")
    session = name()
    seen = run_reporter(py314, session, exe)
    assert seen["orig_argv"][-1] == session, "exec'd, not run in the launcher: %s" % seen["orig_argv"]
    assert seen["got"] == "pdb's first prompt!"
    assert seen["env"] == CLIENT_ENV
    assert seen["argv"][:3] == ["-c", session, "ARG"] and seen["argv"][3].isdigit() and len(seen["argv"]) == 4
    assert seen["ctype"] == "C.UTF-8" and seen["errors"] == ["surrogateescape", "surrogateescape", "backslashreplace"]
    assert seen["main"] == "__main__"


@pytest.mark.py314
@pytest.mark.parametrize("case", ["another version", "not C.UTF-8", "a wrapper"])
def test_a_client_the_launcher_cannot_run_as_execve_would_is_execd(py314, case):
    """Another interpreter (the version must match the target's), an environment the launcher's own start did
    not see, or a command that is not the session's client itself (lent.py's chroot wrapper runs this very
    interpreter, then execs the target's with the connection): exec'd as before, the connection kept."""
    exe = interpreter(py314, "3.13" if case == "another version" else "3.14")
    if exe is None:
        pytest.skip("no python3.13 beside the tests' 3.14")
    env = dict(CLIENT_ENV, LC_ALL="C") if case == "not C.UTF-8" else CLIENT_ENV
    seen = run_reporter(py314, name(), exe, env, first="/proc/1/root" if case == "a wrapper" else None)
    assert seen["orig_argv"][:5] == [exe, "-I", "-S", "-c", REPORTER], seen["orig_argv"]
    assert seen["got"] == "pdb's first prompt!" and seen["env"] == env


@pytest.mark.py314
def test_the_pdb_client_puts_off_what_pdb_imports_and_it_never_uses_until_used(py314):
    """pdbclient.py: asyncio and tempfile (a third of pdb's import, on the way to the first prompt) are not
    imported by pdb's import nor by its client's start; the first use of either imports the real module."""
    from kubectl_wand.agent.sources import module_source
    check = ("ns = {'__name__': 'pdbclient'}\nexec(%r, ns)\nput_off, Later = ns['put_off'], ns['Later']\n"
             % module_source("pdbclient")) + (
        "import socket, sys\nput_off()\nimport pdb\n"
        "client = pdb._PdbClient(0, socket.socketpair()[0], None)\n"
        "client.process_payload({'command_list': ['p', 'where']})\n"
        "before = sorted(n for n in ('asyncio.events', 'ssl', 'concurrent.futures', 'tempfile') if n in sys.modules"
        " and not isinstance(sys.modules[n], Later))\n"
        "import asyncio, tempfile\n"
        "used = [asyncio.iscoroutinefunction(pdb.Pdb.do_p), tempfile.gettempdir() is not None]\n"
        "print(before, used, 'asyncio.events' in sys.modules, type(sys.modules['asyncio']).__name__)\n")
    done = subprocess.run(py314.argv(["-I", "-S", "-c", check]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[False,", "True]", "True", "module"], done.stdout
