"""The protocol's limits on what a peer may send (agent/protocol.py; docs/security.md "What a target may send"),
on real sockets: lines bounded in length and time, nesting bounded, every field's type checked."""
from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

from kubectl_wand.agent import protocol
from kubectl_wand.agent.protocol import Lines, NoLine, ProtocolError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_line_over_its_limit_is_refused_before_it_is_read_whole(pair):
    ours, theirs = pair
    sender = threading.Thread(target=lambda: _send_until_closed(theirs, b"x" * 65536), daemon=True)
    sender.start()
    lines = Lines(ours, "the peer")
    with pytest.raises(ProtocolError, match="over 1 MiB .never read whole."):
        lines.line(1 << 20, time.monotonic() + 10, "its result")
    assert len(lines.buf) <= (1 << 20) + 1  # it stopped at the limit


def _send_until_closed(sock, chunk):
    try:
        while True:
            sock.sendall(chunk)
    except OSError:
        pass


def test_lines_split_and_keep_what_follows(pair):
    ours, theirs = pair
    theirs.sendall(b'{"a": 1}\n{"b": 2}\n{"c"')
    lines = Lines(ours)
    until = time.monotonic() + 5
    assert lines.line(100, until) == b'{"a": 1}'
    assert lines.line(100, until) == b'{"b": 2}'
    theirs.sendall(b': 3}\n')
    assert lines.line(100, until) == b'{"c": 3}'
    theirs.shutdown(socket.SHUT_WR)
    assert lines.line(100, until) is None  # EOF
    assert lines.line(100, until) is None


def test_an_empty_line_is_not_eof_and_is_not_json(pair):
    ours, theirs = pair
    theirs.sendall(b"\n")
    line = Lines(ours).line(100, time.monotonic() + 5)
    assert line == b""
    with pytest.raises(ProtocolError, match="not JSON"):
        protocol.decode(line)


def test_a_drip_is_cut_line_wait_after_its_first_byte(pair):
    ours, theirs = pair

    def drip():
        try:
            for _ in range(100):
                theirs.sendall(b"x")
                time.sleep(0.05)  # the drip itself
        except OSError:
            pass

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="came too slowly"):
        Lines(ours).line(1000, started + 60, "its result", line_wait=0.5)
    assert time.monotonic() - started < 2.0


def test_silence_is_noline_by_the_deadline(pair):
    ours, _theirs = pair
    started = time.monotonic()
    with pytest.raises(NoLine):
        Lines(ours).line(1000, started + 0.3)
    assert 0.25 < time.monotonic() - started < 2.0


def test_a_partial_line_at_a_deadline_is_a_breach_unless_polling(pair):
    ours, theirs = pair
    theirs.sendall(b'{"a": ')
    with pytest.raises(ProtocolError, match="came too slowly"):
        Lines(ours).line(1000, time.monotonic() + 0.2)
    lines = Lines(ours)
    theirs.sendall(b'{"b": ')
    with pytest.raises(NoLine):
        lines.line(1000, time.monotonic() + 0.2, poll=True)  # trace's relay: the rest may come next time
    theirs.sendall(b'2}\n')
    assert lines.line(1000, time.monotonic() + 1, poll=True) == b'{"b": 2}'


@pytest.mark.parametrize("line,why", [
    (b"[" * 100000 + b"]" * 100000, "nested deeper"),              # past the C scanner's recursion limit
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"),  # past ours, within the scanner's
    (b"[1, 2]", "a JSON array, not an object"),
    (b"7", "a JSON integer, not an object"),
    (b'{"a": 1} x', "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_decode_refuses_with_a_protocol_error(line, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.decode(line)


def test_decode_takes_nesting_up_to_the_limit_and_many_containers():
    deep = b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert protocol.decode(deep)["a"]
    wide = protocol.encode({"frames": [{"file": "f", "line": i} for i in range(10000)]})
    assert len(protocol.decode(wide)["frames"]) == 10000


@pytest.mark.parametrize("message,why", [
    ({"token": "t", "server": 7}, "'server' is a JSON integer, not object or null"),
    ({"token": 7}, "'token' is a JSON integer, not string"),
    ({"pid": 1}, "lacks 'token'"),
    ({"token": "t", "server": {"port": "5679"}}, "'port' is a JSON string, not integer or null"),
])
def test_a_payload_hello_of_wrong_types_is_refused(message, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.check_payload_hello(message)


@pytest.mark.parametrize("op,message,why", [
    ("exec", {"status": "ok", "stdout": 7}, "'stdout' is a JSON integer, not string"),
    ("exec", {"status": "ok", "truncated": "no"}, "'truncated' is a JSON string, not boolean"),
    ("exec", {"status": "ok", "stdout_bytes": "not base64!"}, "stdout_bytes is not base64"),
    ("exec", {"status": "ok", "stderr_bytes": "A=AA"}, "stderr_bytes is not base64"),
    ("exec", {"status": "ok", "stderr_bytes": "A==="}, "stderr_bytes is not base64"),
    ("exec", {"status": "listening"}, "status 'listening', which exec never answers"),
    ("exec", {"status": 7}, "unknown status integer"),
    ("exec", {"status": "\x1b]0;x\x07"}, r"unknown status '\\x1b\]0;x\\x07'"),
    ("exec", {"status": "error"}, "an error without a message"),
    ("attach", {"status": "listening", "port": "x"}, "'port' is a JSON string"),
    ("exec", ["ok"], "a JSON array, not an object"),
])
def test_a_payload_result_of_wrong_types_is_refused(op, message, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.check_payload_result(op, message)


def test_good_answers_pass():
    import base64
    for data in (b"", b"x", b"xy", b"xyz", bytes(range(256))):
        assert protocol.check_payload_result("exec", {"status": "ok", "stdout": "x", "stderr": "", "value": None,
                                                      "truncated": False, "seconds": 0.1,
                                                      "stdout_bytes": base64.b64encode(data).decode()})
    assert protocol.check_payload_hello({"token": "t", "pid": 1, "server": None, "debugpy": None})
    assert protocol.check_trace_message({"hit": dict(HIT, locals={"x": "1"}, stack=[{"file": "f", "line": 1}])})
    assert protocol.check_injector({"ok": True, "threads": [{"thread_id": 1, "frames": [
        {"file": "f", "line": 1, "function": "g"}]}]})


HIT = {"time": 1.0, "thread": "MainThread", "file": "f.py", "line": 3, "values": [{"expr": "x", "repr": "1"}]}


@pytest.mark.parametrize("message,why", [
    ({"installed": 7}, "a JSON integer, not an object"),
    ({"installed": {"tool_id": "x", "file": "f", "line": 1}}, "'tool_id' is a JSON string"),
    ({"installed": {"file": "f", "line": 1}}, "lacks 'tool_id'"),
    ({"hit": dict(HIT, values="x")}, "'values' is a JSON string, not array"),
    ({"hit": dict(HIT, values=[7])}, "value is a JSON integer, not an object"),
    ({"hit": dict(HIT, values=[{"repr": "1"}])}, "lacks 'expr'"),
    ({"hit": dict(HIT, locals={"x": 7})}, "a local that is not a string"),
    ({"hit": dict(HIT, stack=[{"line": "9"}])}, "'line' is a JSON string"),
    ({"hit": {"time": 1.0, "values": []}}, "lacks 'thread'"),
    ({"nothing": 1}, "has none of"),
])
def test_a_probe_message_of_wrong_types_is_refused(message, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.check_trace_message(message)


def test_the_payload_is_sent_only_its_operations():
    assert protocol.payload_request("noop") == {"op": "noop"}
    assert protocol.payload_request("exec", code="1")["code"] == "1"
    with pytest.raises(ProtocolError):
        protocol.payload_request("list")


def test_an_exec_result_limit_follows_max_output_up_to_the_ceiling():
    assert protocol.exec_result_max(0) == protocol.LINE_MAX
    assert protocol.exec_result_max(1000) < protocol.exec_result_max(1 << 20) < protocol.LINE_MAX
    assert protocol.exec_result_max(1 << 30) == protocol.LINE_MAX
    # a full legitimate answer at --max-output fits: three fields of non-BMP characters (12 bytes escaped each)
    full = protocol.encode({"status": "ok", "stdout": "\U0001F600" * 1000, "stderr": "\U0001F600" * 1000,
                            "value": "\U0001F600" * 1000, "stdout_bytes": "QUJD" * 334})
    assert len(full) < protocol.exec_result_max(1000)


# -- injector/sampler -> agent: the target's own interpreter, reading names the target chose ------------------

def test_the_target_interpreters_output_is_cut_at_its_limit():
    import subprocess
    import sys
    from kubectl_wand.agent.runtime import bounded_output
    child = subprocess.Popen([sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with pytest.raises(ProtocolError, match="over 1 MiB"):
            bounded_output(child, b"", 30, 1 << 20)
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('e' * 100000); print(sys.stdin.read())"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bounded_output(child, b"y" * 300000, 30, 1 << 20)  # stdin larger than a pipe's buffer
    child.wait()
    child.stdout.close()
    child.stderr.close()
    assert out == b"y" * 300000 + b"\n" and err == b"e" * 4096


def test_a_spawned_reader_gets_only_its_pipes_its_own_session_and_no_module_from_our_directory(tmp_path):
    import marshal
    import sys
    from kubectl_wand.agent.runtime import LOAD_CODE, Spawned, bounded_output
    leaked_r, leaked_w = os.pipe()  # one our parent could have left us, inheritable
    os.set_inheritable(leaked_w, True)
    for planted in ("posix", "marshal", "json"):  # where a reader that imports from its directory would look
        (tmp_path / (planted + ".py")).write_text("raise SystemExit('planted %s imported')\n" % planted)
    code = marshal.dumps(compile("import os, json\nprint(os.getcwd(), os.getsid(0) == os.getpid(), "
                                 "sorted(int(fd) for fd in os.listdir('/proc/self/fd')))", "<string>", "exec"))
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        child = Spawned([sys.executable, "-S", "-c", LOAD_CODE], {"PATH": "/usr/bin:/bin"})
    finally:
        os.chdir(here)
        os.close(leaked_w)
    try:
        out, err = bounded_output(child, code, 30, 1 << 20)
        assert child.wait() == 0, err
    finally:
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()
        os.close(leaked_r)
    cwd, own_session, fds = out.decode().split(" ", 2)
    assert (cwd, own_session) == ("/", "True"), err
    assert [fd for fd in eval(fds) if fd > 3] == [], fds  # 0-2 and the listing's own; not our pipe's end


def test_a_spawned_reader_that_outlives_its_time_is_reported_and_ended():
    import sys
    from kubectl_wand.agent import observe
    from kubectl_wand.agent.runtime import Spawned, TimedOut, bounded_output
    child = Spawned([sys.executable, "-S", "-c", "import time; time.sleep(60)"], {})
    try:
        with pytest.raises(TimedOut):
            bounded_output(child, b"", 0.2, 1 << 20)
        with pytest.raises(TimedOut):
            child.wait(0.1)
        observe.kill_group(child)  # its own session's group: kill_group reaches it
        assert child.wait(30) == -9
    finally:
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


@pytest.mark.parametrize("line,why", [
    (b'{"threads": 7}\n', "'threads' is a JSON integer"),
    (b'{"threads": [{"frames": [{"line": "x"}]}]}\n', "'line' is a JSON string"),
    (b'{"progress": {"samples": "many"}}\n', "'samples' is a JSON string"),
    (b"[1]\n", "array, not an object"),
    (b"[" * 100000 + b"]" * 100000 + b"\n", "nested deeper"),
    (b'{"profile": ' + b"[" * 50 + b"]" * 50 + b"}\n", "nested deeper"),
])
def test_a_sampler_line_out_of_protocol_ends_it_as_a_protocol_error(line, why):
    import subprocess
    import sys
    from kubectl_wand.agent import profiling
    run = profiling.Sampling(1, None)
    run.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        run.feed(line[:7])
        run.feed(line[7:])
        assert run.final["kind"] == "protocol" and why in run.final["error"], run.final
        assert run.popen.wait(10) == -9  # killed: nothing more of it is read
    finally:
        run.popen.kill()
        run.popen.wait()


def test_a_zero_deadline_still_reads_what_has_come(pair):
    """trace's relay drains with a deadline of 0: what is already in the socket is read, nothing is waited for."""
    ours, theirs = pair
    lines = Lines(ours)
    with pytest.raises(NoLine):
        lines.line(100, 0.0, poll=True)
    theirs.sendall(b'{"a": 1}\n')
    assert select.select([ours], [], [], 5)[0]  # arrived; the reader itself must not wait
    assert lines.line(100, 0.0, poll=True) == b'{"a": 1}'


@pytest.fixture
def high_pipe():
    """A pipe whose read end is numbered 1500: past select()'s FD_SETSIZE (1024), as the CLI's pipes are when it
    reaches hundreds of pods at once."""
    import os
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1600:
        pytest.skip("the open-files hard limit (%d) is below 1600" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1600), hard))
    r, w = os.pipe()
    high = os.dup2(r, 1500)
    os.close(r)
    yield high, w
    for fd in (high, w):
        try:
            os.close(fd)
        except OSError:
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_lines_read_a_pipe_numbered_past_select_s_limit(high_pipe):
    """`stack` over 300 pods held over 1024 descriptors and failed: "filedescriptor out of range in select()"."""
    import os
    fd, w = high_pipe
    lines = Lines(fd)
    with pytest.raises(NoLine):
        lines.line(100, time.monotonic() + 0.05)  # waits, then says nothing came: no ValueError
    os.write(w, b'{"a": 1}\n')
    assert lines.line(100, time.monotonic() + 30) == b'{"a": 1}'
    os.close(w)
    assert lines.line(100, time.monotonic() + 30) is None


def test_pipes_lines_read_a_pipe_numbered_past_select_s_limit(high_pipe):
    import os
    from kubectl_wand import pipes
    fd, w = high_pipe
    os.write(w, b"one\ntwo\n")
    os.close(w)

    class Pipe:
        def fileno(self):
            return fd
    assert list(pipes.lines(Pipe(), time.monotonic() + 30)) == [b"one", b"two"]


def test_waiting_for_good_on_a_pipe_is_not_an_overflow():
    """A watch waits with a deadline 10**9 s away: poll's millisecond timeout is a C int, and the OverflowError
    it raised ended attach's watch thread silently (a deleted pod was never noticed)."""
    from kubectl_wand import pipes
    from kubectl_wand.agent import protocol
    for readable in (pipes.readable, protocol.readable):
        r, w = os.pipe()
        try:
            os.write(w, b"x\n")
            assert readable(r, 10 ** 9) is True
            os.read(r, 2)
            os.close(w)
            w = None
            assert readable(r, float("inf")) is True  # its end is readable too
        finally:
            os.close(r)
            if w is not None:
                os.close(w)
