"""Runs BESIDE the target under its own interpreter, in the user's terminal, for ``pdb``: CPython's own remote
pdb client (pdb._PdbClient, as ``python -m pdb -p`` runs it), connected to the agent's relay.

Started as ``python -I -S -c SOURCE NAME PID [FD]`` (NAME: the agent's abstract Unix socket; FD: that
connection, already made by the launcher that execs this, transport/launcher.py). The same interpreter as
the target's, so the pdb protocol's version matches by construction. One change: Ctrl-C while the app runs
asks the server (``{"wand": "interrupt"}``) instead of sending SIGINT to the process (see pdbserver.py).
Exits 0 when the session ends (q, Ctrl-D, the connection closed); 2 when the relay cannot be reached.
Standard library only.
"""
import socket
import sys


# What the target sends is untrusted text (its source lines, reprs, names): control characters, C1 controls
# and the characters that reorder or hide text are shown escaped, never sent to the terminal raw (the rule of
# kubectl_wand/terminal.py, which is not importable here). Newlines and tabs keep the text's lines.
UNSAFE = set(range(0x00, 0x20)) - {0x09, 0x0A} | set(range(0x7F, 0xA0)) | {
    0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
    0x2060, 0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF} | set(range(0xE0000, 0xE0080))


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


# pdb imports these, its client never uses them: put off until first used, they are a third of pdb's import
# (~15 of ~45 ms in a pod, on the way to the first prompt; asyncio alone pulls in ssl and concurrent.futures).
# The launcher (transport/launcher.py) does the same when it imports pdb while it waits for the agent.
LATER = ("asyncio", "tempfile")


class Later(type(sys)):
    """A module imported at its first use: its first attribute read imports the real one, which replaces it."""

    def __getattr__(self, attr):
        import importlib
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def put_off():
    for later in LATER:
        if later not in sys.modules:
            sys.modules[later] = Later(later)


def main(name, fd=None):
    put_off()
    import pdb

    class Client(pdb._PdbClient):
        def process_payload(self, payload):
            if isinstance(payload, dict) and isinstance(payload.get("message"), str):
                payload = dict(payload, message=safe(payload["message"]))
            return super().process_payload(payload)

        def send_interrupt(self):
            try:
                self.server_socket.sendall(b'{"wand": "interrupt"}\n')
            except OSError:
                self.write_failed = True

    try:
        sock = connect(name, fd)
    except OSError as exc:
        sys.stderr.write("error: cannot reach kubectl wand's pdb relay: %s\n" % exc)
        return 2
    try:
        Client(0, sock, None).cmdloop()
    except (KeyboardInterrupt, EOFError, OSError):
        pass  # the session ended (the relay closed: an injection that failed says why on the CLI's side)
    finally:
        sock.close()
    return 0


def connect(name, fd=None):
    """The connection to the agent's relay: the launcher's (FD), else made here."""
    if fd is not None:
        return socket.socket(fileno=int(fd))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect("\0" + name)
    sock.settimeout(None)
    return sock


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *sys.argv[3:4]))
