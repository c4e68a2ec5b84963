"""Runs BESIDE the target under its own interpreter, in the user's terminal, for ``pdb``: CPython's own remote
pdb client (pdb._PdbClient, as ``python -m pdb -p`` runs it), connected to the agent's relay.

Started as ``python -I -S -c SOURCE NAME`` (NAME: the agent's abstract Unix socket). The same interpreter as
the target's, so the pdb protocol's version matches by construction. One change: Ctrl-C while the app runs
asks the server (``{"wand": "interrupt"}``) instead of sending SIGINT to the process (see pdbserver.py).
Exits 0 when the session ends (q, Ctrl-D, the connection closed); 2 when the relay cannot be reached.
Standard library only.
"""
import socket
import sys


def main(name):
    import pdb

    class Client(pdb._PdbClient):
        def send_interrupt(self):
            try:
                self.server_socket.sendall(b'{"wand": "interrupt"}\n')
            except OSError:
                self.write_failed = True

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect("\0" + name)
        sock.settimeout(None)
    except OSError as exc:
        sys.stderr.write("error: cannot reach kubectl wand's pdb relay: %s\n" % exc)
        return 2
    try:
        Client(0, sock, None).cmdloop()
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
