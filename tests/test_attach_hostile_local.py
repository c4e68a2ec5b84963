"""attach's first session against a hostile local target (session 8's red team): what the target writes where
attach reads it must end in one line and a documented exit code, never a traceback, and reach the terminal
escaped."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request

import pytest

import dap
from test_attach_race_local import free_port

pytestmark = pytest.mark.py314


@pytest.mark.parametrize("since", ['"yesterday"', "Infinity", "NaN", "1e300"])
def test_a_forged_server_record_gives_no_traceback(spawn, wand, since):
    """The app writes the record attach trusts for "already listening" and holds the port it names. Before:
    a string ``since`` raised TypeError and Infinity/NaN OverflowError/ValueError out of the report (exit 1,
    a traceback); a time to come printed a negative age."""
    app = spawn("forged_record.py", since)
    result = wand("attach", "pid/%d" % app.pid, "--port", app.info["port"], "--timeout", "20")
    assert "Traceback" not in result.stderr, result.stderr
    if since.startswith('"'):  # a field of the wrong type: the record is out of protocol
        assert result.returncode == 6, (result.returncode, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "'since' is a JSON string" in result.stderr, result.stderr
    else:  # a number that is no time: the server is reported, without an age
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        assert "already listening on 127.0.0.1:%s" % app.info["port"] in result.stdout, result.stdout
        assert "started by" not in result.stdout, result.stdout
    assert "\x1b" not in result.stdout + result.stderr and "\u202e" not in result.stdout + result.stderr
    assert app.alive()


def test_an_editor_that_vanishes_at_a_breakpoint_leaves_the_app_serving(spawn, py314, wand):
    """The editor's connection ends without a DAP disconnect while a request is held at its breakpoint (Ctrl-C
    on attach or a dead port-forward cuts it so): the request completes, later ones are not stopped by the
    breakpoint nobody can resume any more, and the server takes the next editor. Before: the held request never
    answered and the app served nothing more (pydevd's in-process server ignores a socket that ends)."""
    app = spawn("http_app.py", flags=["-S"])  # no debugpy: the first attach ships it
    port = free_port()
    result = wand("attach", "pid/%d" % app.pid, "--port", port, "-o", "json", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["source"] == "shipped"
    path = py314.app("http_app.py")
    line = dap.marker_line(py314.host(path))
    url = "http://127.0.0.1:%s/" % app.info["port"]
    client = dap.DAPClient("127.0.0.1", port, timeout=30)
    assert client.attach_with_breakpoint(path, line)["verified"]
    got = {}
    held = threading.Thread(target=lambda: got.setdefault("body", urllib.request.urlopen(url, timeout=60).read()),
                            daemon=True)
    held.start()
    assert client.wait_event("stopped", timeout=30)["body"]["reason"] == "breakpoint"
    client.sock.shutdown(socket.SHUT_RDWR)  # gone without a word, as through a forward that died
    client.sock.close()
    held.join(60)
    assert got.get("body", b"").startswith(b"hello from"), got
    assert urllib.request.urlopen(url, timeout=30).read().startswith(b"hello from")  # the breakpoint went too
    editor = dap.DAPClient("127.0.0.1", port, timeout=30)
    try:
        top, body = dap.break_on_request(editor, path, line, url)
        assert top["vars"]["self"] and body.startswith(b"hello from")
    finally:
        editor.close()
    assert app.alive() and app.stderr_so_far() == ""


def test_a_dap_peer_that_floods_is_read_no_further_than_one_answer():
    """attach's DAP check of a separate adapter (agent beside the target, and the CLI through the forward)
    reads from whatever holds the port the target's record names. Before: a peer sending no answer was read
    to the end, all of it kept and searched again after each read (20 MiB here; 60 MB and a busy core in a
    5 s wait against a real flooding target); now it stops after one answer's worth."""
    from kubectl_wand.agent.debugserver import DAP_ANSWER_MAX, read_until
    reader, peer = socket.socketpair()
    sent = {"bytes": 0, "error": None}

    def flood():
        try:
            for _ in range(320):  # 20 MiB, then the end of the stream
                peer.sendall(b"x" * 65536)
                sent["bytes"] += 65536
            peer.shutdown(socket.SHUT_WR)
        except OSError as exc:
            sent["error"] = exc

    flooding = threading.Thread(target=flood, daemon=True)
    flooding.start()
    try:
        assert not read_until(reader, b'"command": "initialize"', time.monotonic() + 120)
    finally:
        reader.close()
    flooding.join(60)
    assert sent["error"] is not None and sent["bytes"] < DAP_ANSWER_MAX + (8 << 20), sent
    # an answer split across reads is still found
    reader, peer = socket.socketpair()
    with reader, peer:
        answer = b'Content-Length: 40\r\n\r\n{"type": "response", "command":"initialize"}'
        peer.sendall(answer[:-12])
        split = threading.Timer(0.2, peer.sendall, (answer[-12:],))  # a second read, not a fixed wait for it
        split.start()
        assert read_until(reader, b'"command": "initialize"', time.monotonic() + 60)
        split.join()


@pytest.mark.parametrize("status", ["listening", "already", "pending"])
def test_ctrl_c_after_the_server_started_in_a_pod_says_it_listens(status):
    """Ctrl-C reaches attach just after the agent in the pod started debugpy: the agent's answer is already on
    its way. Before: nothing was said (exit 130, empty stderr) though a debug server now listened in the pod,
    measured with Ctrl-C 0.45-0.48 s into a first attach of a pod without debugpy (2 of 2 runs at those
    moments). The agent's last word is read as the CLI ends (transport/kubectl.py: last_word)."""
    import io
    import os
    import types
    from kubectl_wand.agent import protocol
    from kubectl_wand.transport.kubectl import last_word
    read, write = os.pipe()
    answer = {"status": status, "pid": 1, "host": "127.0.0.1\x1b]52;c;aGk=\x07", "port": 5679}
    if status == "pending":
        answer.update(error="pending", left_behind="/tmp/wand-1-x/bootstrap.py")
    os.write(write, protocol.encode({protocol.RESULT: answer}))
    os.close(write)
    interrupt = KeyboardInterrupt()
    with os.fdopen(read, "rb") as out:
        last_word(types.SimpleNamespace(stdin=io.BytesIO(), stdout=out), interrupt)
    note = getattr(interrupt, "wand_note", "")
    if status == "pending":  # the note an unfinished injection always had
        assert note.startswith("interrupted while the injection into process 1 was pending"), note
    else:
        assert note.startswith("interrupted after the debug server started: debugpy listens on 127.0.0.1"), note
        assert ":5679 in process 1 until it exits; attach again to reuse it" in note and "\x1b" not in note, note


def signal_taken(pid, signum) -> bool:
    """Whether ``signum`` sent to ``pid`` is no longer pending: its handler has run."""
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return not any(int(fields[k], 16) >> (signum - 1) & 1 for k in ("SigPnd", "ShdPnd"))


def test_ctrl_c_while_debugpy_starts_locally_says_it_listens(spawn, py314, tmp_path):
    """Ctrl-C reaches `attach pid/N` while the target's main thread imports debugpy for it. Before: exit 130 and
    nothing said, while debugpy went on to listen in the process (seen with Ctrl-C 0.75-0.8 s into a first
    attach). Now the CLI reads the payload's answer for a moment and names the server."""
    import signal
    import subprocess
    import sys
    from procs import REPO, default_signals, read_line, wait_for
    gate = "/tmp/wand-test-gate-%d" % os.getpid()
    app = spawn("gated_debugpy.py", gate)
    port = free_port()
    attach = subprocess.Popen([sys.executable, "-m", "kubectl_wand", "attach", "pid/%d" % app.pid, "--port", str(port),
                               "--timeout", "30"], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        assert read_line(app.popen.stdout, 30) == "IMPORTING"
        attach.send_signal(signal.SIGINT)
        assert wait_for(lambda: signal_taken(attach.pid, signal.SIGINT), timeout=30)
        open(py314.host(gate), "w").close()
        out, err = attach.communicate(timeout=60)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
        if os.path.exists(py314.host(gate)):
            os.unlink(py314.host(gate))
    assert attach.returncode == 130, (attach.returncode, out, err)
    assert err == ("interrupted after the debug server started: debugpy listens on 127.0.0.1:%d in process %d until "
                   "it exits; attach again to reuse it\n" % (port, app.pid)), err
    assert app.alive()


@pytest.mark.parametrize("broken", ["debugpy.server.api", "debugpy.common.sockets"])
def test_a_debugpy_that_fails_half_way_leaves_the_apps_breakpoint_hook(spawn, wand, broken):
    """The import of debugpy fails after pydevd loaded (an app or image whose debugpy is broken; a shipped copy
    cut short). It is rolled back from sys.modules; before, pydevd's breakpoint hook stayed installed (the app's
    next breakpoint() ran pydevd.settrace, which connects out to a debugger on port 5678, instead of pdb) and
    debugpy's atexit callback stayed registered."""
    app = spawn("gated_debugpy.py", "/nonexistent-gate", broken)
    state = "import atexit, sys; (sys.breakpointhook is sys.__breakpointhook__, atexit._ncallbacks())"
    before = wand("exec-py", "pid/%d" % app.pid, "--", state)
    assert before.returncode == 0, before.stderr
    result = wand("attach", "pid/%d" % app.pid, "--port", free_port(), "--timeout", "20")
    assert result.returncode == 6 and "%s is broken in this app" % broken in result.stderr, result.stderr
    after = wand("exec-py", "pid/%d" % app.pid, "--", state + " + (sorted(m for m in sys.modules if 'pydev' in m),)")
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout.rstrip("\n")[:-1] + ", [])\n", (before.stdout, after.stdout)
    assert app.alive() and app.stderr_so_far() == ""


LUA_CHECK = """
vim = {fn = {getcwd = function() return "/here" end}}
package.loaded.dap = {configurations = {python = {}}}
assert(loadstring(io.read("*a")))()
local got = package.loaded.dap.configurations.python[1]
io.write(got.pathMappings[1].remoteRoot, "\\0", got.name)
"""


@pytest.mark.parametrize("cwd", ["/app/données", "/srv/x\x1b]52;c;aGk=\x07\u202e\"'\\y", "/tmp/\udcff-not-utf8",
                                 "/tmp/\ud800-lone"])
def test_the_nvim_dap_snippet_loads_in_luajit_with_the_targets_cwd(cwd):
    """The remoteRoot is the target's cwd, its choice. Before: JSON string escapes, which neovim's LuaJIT refuses
    ("invalid escape sequence") for any non-ASCII or control character, so the snippet did not load at all."""
    import shutil
    import subprocess
    from kubectl_wand import editor
    lua = shutil.which("luajit")
    if not lua:
        pytest.skip("no luajit (neovim's Lua) here: apt-get install luajit")
    snippet = editor.nvim_dap("kubectl wand: pod/web-1 pid 7", 5679, "${workspaceFolder}", cwd)
    assert all(" " <= c < "\x7f" for c in snippet.replace("\n", "")), snippet  # nothing for the terminal
    done = subprocess.run([lua, "-e", LUA_CHECK], input=snippet.encode(), capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    root, name = done.stdout.split(b"\0")
    want = cwd.encode("utf-8", "surrogatepass" if "\ud800" in cwd else "surrogateescape")
    assert (root, name) == (want, b"kubectl wand: pod/web-1 pid 7")
