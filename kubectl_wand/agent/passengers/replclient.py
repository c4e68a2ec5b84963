"""Runs BESIDE the target under its own interpreter, in the user's terminal, for ``exec-py -it``: Python's
own interactive console (code.InteractiveConsole: ``>>> `` and ``... ``, multi-line input decided by the
target's own compiler version, readline's line editing and history), each complete input sent to
replserver.py in the target through the agent's relay, its answer printed as exec-py prints it.

Started as ``python -I -S -c SOURCE NAME PID`` (NAME: the agent's abstract Unix socket). Ctrl-C while typing
cancels the input; while an input runs it asks the target to interrupt it (``{"interrupt": true}``).
Ctrl-D, ``exit()`` or ``quit()`` leave. Exits 0; 2 when the relay cannot be reached. Standard library only.
"""
import json
import socket
import sys

LEAVE = ("exit", "exit()", "quit", "quit()")


def main(name, pid):
    import code

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10.0)
        sock.connect("\0" + name)
        sock.settimeout(None)
    except OSError as exc:
        sys.stderr.write("error: cannot reach kubectl wand's session relay: %s\n" % exc)
        return 2
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    reader = Reader(sock)

    class Console(code.InteractiveConsole):
        def runsource(self, source, filename="<input>", symbol="single"):
            try:
                compiled = self.compile(source, filename, symbol)
            except (OverflowError, SyntaxError, ValueError):
                compiled = True  # the target's compiler says why, with its own message
            if compiled is None:
                return True  # more input needed: the "... " prompt
            if source.strip() in LEAVE:
                raise SystemExit(0)
            self.remote(source)
            return False

        def remote(self, source):
            sock.sendall(json.dumps({"run": source}).encode() + b"\n")
            while True:
                try:
                    message = reader.next()
                except KeyboardInterrupt:
                    sock.sendall(b'{"interrupt": true}\n')
                    continue
                if message is None:
                    raise SystemExit(0)  # the session ended (the target or the connection)
                if "result" in message:
                    show(message["result"])
                    return

    banner = ("Python %s inside process %s (kubectl wand exec-py -it): each input runs in the live process, in "
              "a namespace kept for this session that starts with the app's __main__ names.\nCtrl-C interrupts, "
              "Ctrl-D or exit() leaves (the session's namespace goes with it)." % (sys.version.split()[0], pid))
    try:
        Console().interact(banner=banner, exitmsg="")
    except SystemExit:
        pass
    finally:
        sock.close()
    return 0


class Reader:
    def __init__(self, sock):
        self.sock, self.pending = sock, b""

    def next(self):
        while b"\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending += data
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)


def show(result):
    """As exec-py prints a result: the code's stdout, the value's repr, its stderr, the traceback."""
    import base64
    out = sys.stdout
    if result.get("stdout"):
        out.write(result["stdout"])
    if result.get("stdout_bytes"):
        out.flush()
        sys.stdout.buffer.write(base64.b64decode(result["stdout_bytes"]))
    if result.get("value") is not None:
        out.write(result["value"] + "\n")
    out.flush()
    err = sys.stderr
    if result.get("stderr"):
        err.write(result["stderr"])
    if result.get("stderr_bytes"):
        err.flush()
        sys.stderr.buffer.write(base64.b64decode(result["stderr_bytes"]))
    if result.get("truncated"):
        err.write("warning: output cut (--max-output)\n")
    status = result.get("status")
    if status == "raised":
        err.write(result.get("traceback") or (result.get("error", "") + "\n"))
    elif status in ("timeout", "error"):
        err.write("error: %s\n" % result.get("error"))
    err.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
