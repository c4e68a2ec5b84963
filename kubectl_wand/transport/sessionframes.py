"""The terminal stream of a one-exec session (transport/sessionexec.py), on this side: kubectl's output, read
from a pseudo-terminal of ours, goes to our stdout minus the agent's frames (``ESC _ wand NONCE ; BASE64 ESC \\``,
sessionpod.py's Framed), whose bytes feed a pipe the transport reads as the agent's stdout; and the window size
follows the user's terminal. A frame is only what carries this session's nonce; its bytes are then checked as
any agent line is (a process of the app's uid can write to the session's terminal).
"""
from __future__ import annotations

import os

FRAME_START = b"\x1b_wand"
FRAME_END = b"\x1b\\"
HOLD = 0.02  # seconds a possible frame's first bytes wait for the rest before they go to the screen as they are
FRAME_MAX = 4096  # a frame not ended within this is not one of ours: shown as it came


def relay(master, sink, head, shown):
    """Copy the session's terminal output to our stdout, the frames' bytes (the agent's lines) to ``sink``;
    until kubectl closes the terminal (EIO). Then ``sink`` is closed: the agent's stdout ends. ``shown`` (an
    Event) is set once anything but the agent's hello and events came: the client's first output, the
    agent's result, or the end."""
    import select
    from ..agent import protocol
    answer = ('"%s"' % protocol.RESULT).encode()

    def out(data):
        if data:
            shown.set()
            show(data)

    def agent(data):
        if answer in data:
            shown.set()
        write_all(sink, data, quiet=True)  # a reader gone (the answer was in) never stops the screen's relay
    pending = b""
    try:
        while True:
            if pending and not select.select([master], [], [], HOLD)[0]:
                out(pending)  # the start of an escape sequence that is not a frame: nothing more came
                pending = b""
                continue
            try:
                data = os.read(master, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data:
                break
            pending = split(pending + data, head, out, agent)
    finally:
        if pending:
            show(pending)
        os.close(master)
        os.close(sink)
        shown.set()


def split(data, head, show, agent):
    """``show`` ``data`` but its frames, whose payload goes to ``agent``; the bytes kept for the next read (a
    frame or a frame's start not complete yet)."""
    import binascii
    while data:
        start = data.find(FRAME_START)
        if start < 0:
            keep = partial_start(data)
            show(data[:len(data) - keep])
            return data[len(data) - keep:]
        show(data[:start])
        data = data[start:]
        if len(data) < len(head):
            if head.startswith(data):
                return data
            show(data[:1])
            data = data[1:]
            continue
        if not data.startswith(head):  # another nonce: not this session's agent; shown as it came
            show(data[:len(FRAME_START)])
            data = data[len(FRAME_START):]
            continue
        end = data.find(FRAME_END, len(head))
        if end < 0:
            if len(data) <= FRAME_MAX:
                return data
            show(data[:len(FRAME_START)])
            data = data[len(FRAME_START):]
            continue
        try:
            payload = binascii.a2b_base64(data[len(head):end])
        except (binascii.Error, ValueError):
            payload = b"\0not a frame\n"  # the agent's reader says the line broke the protocol
        agent(payload)
        data = data[end + len(FRAME_END):]
    return b""


def partial_start(data) -> int:
    """How many of the last bytes of ``data`` could begin a frame (kept until the next read)."""
    for keep in range(min(len(FRAME_START) - 1, len(data)), 0, -1):
        if FRAME_START.startswith(data[-keep:]):
            return keep
    return 0


def show(data):
    write_all(1, data, quiet=True)


def write_all(fd, data, quiet=False):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            if not quiet:
                raise
            return


def copy_size(master):
    """Give the session's terminal our terminal's window size (kubectl sends it to the pod's)."""
    import fcntl
    import termios
    for fd in (1, 0, 2):
        try:
            size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        return


def follow_size(master, kubectl):
    """On SIGWINCH (our terminal resized; kubectl got it too, and may have read the old size), copy the size and
    tell kubectl again. Only from the main thread (where Python's handlers run); elsewhere the size stays."""
    import signal
    earlier = signal.getsignal(signal.SIGWINCH)

    def resized(signum, frame):
        if kubectl.poll() is None:
            try:
                copy_size(master)
                os.kill(kubectl.pid, signal.SIGWINCH)
            except OSError:
                pass
        if callable(earlier):
            earlier(signum, frame)
    try:
        signal.signal(signal.SIGWINCH, resized)
    except ValueError:
        pass
