"""Runs BESIDE the target under its own interpreter, in the user's terminal, for ``pdb``: CPython's own remote
pdb client (pdb._PdbClient, as ``python -m pdb -p`` runs it), connected to the agent's relay.

Started as ``python -I -S -c SOURCE NAME PID [FD]`` (NAME: the agent's abstract Unix socket; FD: that
connection, already made by the launcher that execs this, transport/launcher.py). The same interpreter as
the target's, so the pdb protocol's version matches by construction. One change: Ctrl-C while the app runs
asks the server (``{"wand": "interrupt"}``) instead of sending SIGINT to the process (see pdbserver.py).
Exits 0 when the session ends (q, Ctrl-D, the connection closed); 2 when the relay cannot be reached; 130 on
Ctrl-C before pdb's first prompt (the injection still waits for a safe point: the session is given up).
Standard library only; runs after clientkit.py in one namespace (safe, connect, interrupts_from_here).
"""
import sys


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


def main(name, pid, fd=None):
    put_off()
    import pdb

    class Client(pdb._PdbClient):
        started = False  # pdb's server has spoken: the session runs

        def process_payload(self, payload):
            self.started = True
            # every text pdb's client shows: the message, the prompt (input() writes it raw), the help topic
            if isinstance(payload, dict):
                payload = {key: safe(value) if isinstance(value, str) else value
                           for key, value in payload.items()}
            return super().process_payload(payload)

        def complete(self, text, state):
            # the server's completions: readline lists them raw and puts them in the line
            match = super().complete(text, state)
            return safe(match) if isinstance(match, str) else None

        def send_interrupt(self):
            if not self.started:  # Ctrl-C before the first prompt: nothing runs there yet; leave (exit 130)
                raise KeyboardInterrupt
            try:
                self.server_socket.sendall(b'{"wand": "interrupt"}\n')
            except OSError:
                self.write_failed = True

    try:
        sock = connect(name, fd)
    except OSError as exc:
        sys.stderr.write("error: cannot reach kubectl wand's pdb relay: %s\n" % exc)
        return 2
    client = Client(0, sock, None)
    try:
        interrupts_from_here()  # pdb's client installs its own handler in cmdloop; before it, KeyboardInterrupt
        client.cmdloop()
    except KeyboardInterrupt:
        return 0 if client.started else 130  # before the first prompt: the session is given up (the CLI says so)
    except (EOFError, OSError):
        pass  # the session ended (the relay closed: an injection that failed says why on the CLI's side)
    except RuntimeError:  # pdb's client met a message it does not know: the target's own code answered
        sys.stderr.write("error: process %s answered pdb out of protocol (a message pdb's client does not "
                         "know); the session ended (what runs in the app answers kubectl wand's socket: "
                         "docs/security.md)\n" % pid)
        return 6  # errors.PROTOCOL
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], *sys.argv[3:4]))
