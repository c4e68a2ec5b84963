"""The terminal stream of a one-exec session (transport/sessionframes.py): the agent's frames are taken out of what
kubectl shows, whatever way the reads cut them; anything else, including another session's or a forged frame, is
shown as it came; the frames' bytes reach the agent's pipe, and the end of the stream ends it. The pod's writer
(sessionpod.py's Framed, run from PROGRAM's own source) and this reader agree on the format."""
import binascii
import os
import threading

from kubectl_wand.transport import sessionframes, sessionpod
from kubectl_wand.transport.sessionframes import FRAME_END, FRAME_MAX, FRAME_START, split

NONCE = b"00112233445566778899aabb"
HEAD = FRAME_START + NONCE + b";"


def frame(data: bytes, head=HEAD) -> bytes:
    return head + binascii.b2a_base64(data, newline=False) + FRAME_END


def run(chunks, head=HEAD):
    """(what was shown, what the agent got) for the terminal's output read in ``chunks``."""
    shown, agent, pending = [], [], b""
    for chunk in chunks:
        pending = split(pending + chunk, head, shown.append, agent.append)
    shown.append(pending)
    return b"".join(shown), b"".join(agent)


def test_frames_are_taken_out_and_the_rest_shown_in_order():
    stream = b"> app.py(3)<module>()\r\n" + frame(b'{"hello": 1}\n') + b"(Pdb) " + frame(b'{"result": 2}\n')
    assert run([stream]) == (b"> app.py(3)<module>()\r\n(Pdb) ", b'{"hello": 1}\n{"result": 2}\n')


def test_any_cut_of_the_stream_gives_the_same():
    stream = b"\x1b[1mbold\x1b[0m " + frame(b"x" * 2000) + b" tail \x1b_other\x1b\\ end"
    whole = run([stream])
    for cut in range(1, len(stream)):
        assert run([stream[:cut], stream[cut:]]) == whole, cut
    assert run([bytes([b]) for b in stream]) == whole


def test_another_nonce_and_foreign_escapes_are_shown_as_they_came():
    other = frame(b'{"result": {"status": "ok", "detached": true}}\n', FRAME_START + b"f" * 24 + b";")
    stream = b"a" + other + b"\x1b_wan" + b"b" + b"\x1b_" + b"c"
    assert run([stream]) == (stream, b"")


def test_a_frame_that_never_ends_is_shown_not_held():
    stream = HEAD + b"A" * (FRAME_MAX + 10)
    shown, agent = run([stream])
    assert shown == stream and agent == b""


def test_a_damaged_frame_reaches_the_agent_as_a_broken_line():
    shown, agent = run([HEAD + b"!!not base64!!" + FRAME_END])
    assert shown == b"" and agent == b"\0not a frame\n"  # the protocol's reader refuses it (not JSON)


def test_the_pods_writer_and_this_reader_agree():
    """Framed, as PROGRAM defines it for the pod (its own source, run here), writes what split reads back."""
    source = sessionpod.PROGRAM.split("\ndef ended(")[0]  # imports and Framed, without main()
    space = {}
    exec(compile(source, "<program>", "exec"), space)
    read, write = os.pipe()
    framed = space["Framed"](write, NONCE.decode())
    payload = b'{"event": {"terminal": {"client": "kubectl-wand-pdb-ab", "pid": 7}}}\n' * 40  # several chunks
    framed.buffer.write(payload)
    framed.flush()
    os.close(write)
    with os.fdopen(read, "rb") as f:
        written = f.read()
    assert written.count(FRAME_START) == -(-len(payload) // sessionpod.CHUNK)
    assert run([written]) == (b"", payload)


def test_the_relay_shows_the_rest_feeds_the_agent_and_ends_with_the_terminal(capfd):
    """A real pseudo-terminal: what kubectl would write reaches our stdout minus the frames; the agent's pipe
    gets the frames' bytes and its end when the terminal closes; ``shown`` is set by the client's output."""
    master, slave = os.openpty()
    import tty
    tty.setraw(slave)
    read, write = os.pipe()
    shown = threading.Event()
    relay = threading.Thread(target=sessionframes.relay, args=(master, write, HEAD, shown), daemon=True)
    relay.start()
    os.write(slave, frame(b'{"hello": {}}\n'))
    os.write(slave, b"(Pdb) ")
    os.close(slave)
    relay.join(30)
    assert not relay.is_alive() and shown.is_set()
    with os.fdopen(read, "rb") as f:
        assert f.read() == b'{"hello": {}}\n'
    assert capfd.readouterr().out == "(Pdb) "


def test_a_terminal_a_session_writes_to_gets_no_spinner(monkeypatch):
    """Once a session's exec writes to the terminal (its prompt may be on the screen while the command's start
    goes on), a step's spinner draws nothing there: drawn then erased on the prompt's line, it wiped the prompt."""
    import select
    import time
    from kubectl_wand import spinner
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")
    try:
        monkeypatch.setattr(spinner, "SHARED", True)
        with spinner.Spinner("finding pods", enabled=True, stream=stream):
            time.sleep(0.5)  # long enough for a few frames (the first after 0.15 s)
        assert select.select([master], [], [], 0.2)[0] == []
        monkeypatch.setattr(spinner, "SHARED", False)
        with spinner.Spinner("finding pods", enabled=True, stream=stream):
            assert select.select([master], [], [], 30)[0] == [master]  # the same step draws on a terminal of its own
        assert b"finding pods" in os.read(master, 4096)
    finally:
        stream.close()
        os.close(master)
