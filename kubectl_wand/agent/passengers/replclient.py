"""Runs BESIDE the target under its own interpreter, in the user's terminal, for ``exec-py -it``: Python's
own interactive console (code.InteractiveConsole: ``>>> `` and ``... ``, multi-line input decided by the
target's own compiler version, readline's line editing and history), each complete input sent to
replserver.py in the target through the agent's relay, its answer printed as exec-py prints it.

Started as ``python -I -S -c SOURCE NAME PID [FD]`` (NAME: the agent's abstract Unix socket; FD: that
connection, already made by the launcher that execs this, transport/launcher.py). Ctrl-C while typing
cancels the input; while an input runs it asks the target to interrupt it (``{"interrupt": true}``).
Ctrl-D, ``exit()`` or ``quit()`` leave. What the code wrote is printed as it is (exec-py's rule: it is the
user's program's output); the value's repr and the traceback are escaped (``safe``). Exits 0; 2 when the relay
cannot be reached. Standard library only; runs after clientkit.py in one namespace (safe, connect).
"""
import json
import sys

LEAVE = ("exit", "exit()", "quit", "quit()")


class Interrupts:
    """Ctrl-C, in two phases. At the prompt it is KeyboardInterrupt (the console cancels the input). Once an
    input is being sent it must never be: raised between the send and the wait (or between a recv and the use
    of its data) it left the input running in the target while the console showed a new prompt ("the previous
    input is still running", or a result lost and no answer at all). Then the handler only notes it, the
    signal's byte on a wakeup pipe wakes the select() that waits for the result (even when it came just before
    select was entered), and the wait sends ``{"interrupt": true}`` itself."""

    def __init__(self):
        import os
        import signal
        self.deferred = self.pending = False
        self.wake, writer = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(writer, False)  # a full pipe drops the byte; the pending flag is what counts
        signal.set_wakeup_fd(writer)
        # Ctrl-C is ours to handle (the CLI may have started us with SIGINT ignored, as it starts every child)
        signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        if self.deferred:
            self.pending = True
            return
        raise KeyboardInterrupt

    def drain(self):
        import os
        try:
            while os.read(self.wake, 512):
                pass
        except OSError:
            pass


def main(name, pid, fd=None):
    import code

    try:
        sock = connect(name, fd)
    except OSError as exc:
        sys.stderr.write("error: cannot reach kubectl wand's session relay: %s\n" % exc)
        return 2
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    reader = Reader(sock)
    try:
        interrupts = Interrupts()  # Ctrl-C is KeyboardInterrupt from here (clientkit: until here it leaves)
        started = reader.wait()  # the relay's first word: the session runs (nothing: it did not start)
    except (OSError, OutOfProtocol):
        started = None
    except KeyboardInterrupt:  # Ctrl-C before the first prompt: the session is given up (the CLI says so)
        sock.close()
        return 130
    if started is None:
        sock.close()
        return 0

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
            import select
            interrupts.pending = False
            interrupts.deferred = True  # from here every Ctrl-C is an interrupt of this input, sent below
            try:
                sock.sendall(json.dumps({"run": source}).encode() + b"\n")
                while True:
                    if interrupts.pending:
                        interrupts.pending = False
                        sock.sendall(b'{"interrupt": true}\n')
                    message = reader.ready()
                    if message is False:
                        ready = select.select([sock, interrupts.wake], [], [])[0]
                        if interrupts.wake in ready:
                            interrupts.drain()
                        if sock not in ready:
                            continue
                        message = reader.next()  # sock is readable: recv does not block
                        if message is False:
                            continue
                    if message is None:
                        raise SystemExit(0)  # the session ended (the target or the connection)
                    if "result" in message:
                        show(message["result"])
                        return
            finally:
                interrupts.deferred = False

    banner = ("Python %s inside process %s (kubectl wand exec-py -it): each input runs in the live process, in "
              "a namespace kept for this session that starts with the app's __main__ names.\nCtrl-C interrupts, "
              "Ctrl-D or exit() leaves (the session's namespace goes with it)." % (sys.version.split()[0], pid))
    try:
        Console().interact(banner=banner, exitmsg="")
    except SystemExit:
        pass
    except OutOfProtocol as exc:  # the target's own code answered: one line, exit 6 (errors.PROTOCOL)
        sys.stderr.write("error: process %s answered exec-py -it out of protocol (%s); the session ended (what "
                         "runs in the app answers kubectl wand's socket: docs/security.md)\n" % (pid, exc))
        return 6
    finally:
        sock.close()
    return 0


class OutOfProtocol(Exception):
    """What the target sent is not replserver.py's: it is untrusted, never shown or used."""


def checked(message):
    """A message (a JSON line) as replserver.py sends it: an object; a result an object of text fields."""
    if not isinstance(message, dict):
        raise OutOfProtocol("a JSON %s where an object belongs" % type(message).__name__)
    result = message.get("result")
    if result is not None:
        if not isinstance(result, dict):
            raise OutOfProtocol("a result that is a JSON %s" % type(result).__name__)
        for key in ("status", "stdout", "stderr", "stdout_bytes", "stderr_bytes", "value", "traceback", "error"):
            if not isinstance(result.get(key), (str, type(None))):
                raise OutOfProtocol("a result whose %s is a JSON %s" % (key, type(result[key]).__name__))
    return message


class Reader:
    def __init__(self, sock):
        self.sock, self.pending = sock, b""

    def ready(self):
        """The next message if a whole line is already here, else False."""
        if b"\n" not in self.pending:
            return False
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            return checked(json.loads(line))
        except ValueError:
            raise OutOfProtocol("a line that is no JSON") from None

    def next(self):
        """The next message (None at the end); after one recv that brought no whole line, False."""
        if b"\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.pending += data
        return self.ready()

    def wait(self):
        """The next message, however many reads it takes (None at the end)."""
        message = False
        while message is False:
            message = self.next()
        return message


def encodable(text):
    """What the code printed, as it is, but for lone surrogates (U+D800: no encoder takes one; printing it
    ended the session), shown escaped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unbase64(text):
    import base64
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise OutOfProtocol("output bytes that are no base64") from None


def show(result):
    """As exec-py prints a result: the code's stdout, the value's repr, its stderr, the traceback."""
    out = sys.stdout
    if result.get("stdout"):
        out.write(encodable(result["stdout"]))
    if result.get("stdout_bytes"):
        out.flush()
        sys.stdout.buffer.write(unbase64(result["stdout_bytes"]))
    if result.get("value") is not None:
        out.write(safe(result["value"]) + "\n")
    out.flush()
    err = sys.stderr
    if result.get("stderr"):
        err.write(encodable(result["stderr"]))
    if result.get("stderr_bytes"):
        err.flush()
        sys.stderr.buffer.write(unbase64(result["stderr_bytes"]))
    if result.get("truncated"):
        err.write("warning: output cut (--max-output)\n")
    status = result.get("status")
    if status == "raised":
        err.write(safe(result.get("traceback") or (result.get("error", "") + "\n")))
    elif status in ("timeout", "error"):
        err.write("error: %s\n" % safe(str(result.get("error"))))
    err.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], *sys.argv[3:4]))
