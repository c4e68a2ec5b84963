"""What the two terminal clients share (pdbclient.py, replclient.py): untrusted text shown safely, and the
connection to the agent's relay. Runs first in the client's namespace: the agent sends this source and then the
client's as one ``-c`` program (agent/pdbsession.py, client_source), as a bootstrap runs an op's passengers in
one namespace. Standard library only.

Ctrl-C while the client starts (its imports, pdb's the longest) leaves at once, exit 130, with no traceback:
the session is given up before its prompt (the agent then stops waiting; the CLI says what stays). Each client
takes Ctrl-C over once it can handle it (interrupts_from_here).
"""
import os
import signal


def _leave(_signum, _frame):
    os._exit(130)


signal.signal(signal.SIGINT, _leave)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])  # the launcher blocked it across its exec


def interrupts_from_here():
    """Ctrl-C is KeyboardInterrupt from here on (the client handles it)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


import socket  # noqa: E402  (after the handler: Ctrl-C in its import leaves as above)

# What the target sends is untrusted text (its source lines, reprs, names): control characters, C1 controls
# and the characters that reorder or hide text are shown escaped, never sent to the terminal raw (the rule of
# kubectl_wand/terminal.py, which is not importable here). Newlines and tabs keep the text's lines. Lone
# surrogates too: a name may hold one (a str no encoder takes), and printing it ended the client.
UNSAFE = set(range(0x00, 0x20)) - {0x09, 0x0A} | set(range(0x7F, 0xA0)) | {
    0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
    0x2060, 0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF} | set(range(0xE0000, 0xE0080)) | set(range(0xD800, 0xE000))


def safe(text):
    if not any(ord(c) in UNSAFE for c in text):
        return text
    out = []
    for c in text:
        n = ord(c)
        if n not in UNSAFE:
            out.append(c)
        elif n < 0x100:
            out.append("\\x%02x" % n)
        elif n < 0x10000:
            out.append("\\u%04x" % n)
        else:
            out.append("\\U%08x" % n)
    return "".join(out)


def connect(name, fd=None):
    """The connection to the agent's relay: the launcher's (FD), else made here; ended_with(it) watches it."""
    if fd is not None:
        sock = socket.socket(fileno=int(fd))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        sock.connect("\0" + name)
        sock.settimeout(None)
    ended_with(sock)
    return sock


HANG_UP_GRACE = 2.0  # seconds the client has to end on its own once the relay closed (it does, unless it waits
# for a line typed at its prompt)


def ended_with(sock):
    """The client ends when the relay's connection closes, also while it waits at its prompt for a line that
    will never come. Seen: `pdb docker/NAME` killed (SIGKILL, or its terminal closed) left the client waiting
    for input in the container for good: `docker exec -it`'s end does not close the container's terminal, as
    kubectl exec's does. A thread waits for the hang-up (poll, nothing read: the client's reads stay its own);
    the terminal's settings are put back first (its line editing may have changed them)."""
    import os
    import select
    import threading
    import time
    saved = None
    try:
        import termios
        if os.isatty(0):
            saved = termios.tcgetattr(0)
    except Exception:
        saved = None

    def watch():
        try:
            poller = select.poll()
            poller.register(sock.fileno(), 0)  # no events asked: POLLHUP, POLLERR and POLLNVAL come anyway
            while True:
                events = [flags for _fd, flags in poller.poll()]
                if any(flags & select.POLLNVAL for flags in events):
                    return  # the client closed it: its own end
                if any(flags & (select.POLLHUP | select.POLLERR) for flags in events):
                    break
            time.sleep(HANG_UP_GRACE)
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
        except Exception:
            return
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
