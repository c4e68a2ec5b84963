"""Runs INSIDE the target, for ``exec-py -it``: each input the user types runs in the live process, in one
namespace kept for the session; after execute.py (run in the same namespace: ``run_code`` and
``main_snapshot`` are its).

A session thread owns the bootstrap's connection; each input runs in a worker thread of its own, with
exec-py's rules (``run_code``: output captured in that thread only, the app's streams untouched, --timeout,
--max-output, the value's repr, the traceback), while the session thread keeps reading, so Ctrl-C
(``{"interrupt": true}``) reaches code that runs Python (KeyboardInterrupt at its next line; a blocking C call
finishes first). The namespace starts as a snapshot of the app's ``__main__`` names: the app's own globals are
never rebound.

Wire (JSON lines): target -> agent ``{"wand": "started"}``, then one ``{"result": {...}}`` per input, last
``{"wand": "detached", "reason"}``; agent -> target ``{"run": SOURCE}``, ``{"interrupt": true}``,
``{"wand": "detach"}``. The end (the client's exit, the connection lost, detach) interrupts running code,
clears the namespace and ends both threads: nothing of the session stays.
Standard library only.
"""
import json
import socket
import threading

REPL_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


def run(request, conn, signals=None):
    session = ReplSession(conn, float(request.get("timeout", 10.0)), int(request.get("max_output", 1 << 20)))
    try:
        conn.sendall(b'{"wand": "started"}\n', REPL_NOSIGNAL)
        threading.Thread(target=session.serve, name="kubectl-wand-repl", daemon=True).start()
    except Exception as exc:
        return {"status": "error", "kind": "inject", "error": "the session could not start: %s" % exc}
    return None


class ReplSession:
    def __init__(self, conn, timeout, max_output):
        self.conn, self.timeout, self.max_output = conn, timeout, max_output
        self.namespace = main_snapshot()
        self.interrupt = threading.Event()
        self.worker = None
        self.busy = False  # an input runs (cleared before its result is sent: the next may come at once)
        self.lock = threading.Lock()  # one writer on the connection at a time

    def send(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        with self.lock:
            self.conn.sendall(data, REPL_NOSIGNAL)

    def serve(self):
        import select
        pending, reason = b"", "connection lost"
        try:
            while True:
                if not select.select([self.conn], [], [], 1.0)[0]:
                    continue
                data = self.conn.recv(65536)
                if not data:
                    break
                pending += data
                stop = False
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    message = json.loads(line)
                    if "run" in message:
                        self.start(str(message["run"]))
                    elif "interrupt" in message:
                        self.interrupt.set()
                    elif message.get("wand") == "detach":
                        reason, stop = "detached", True
                if stop:
                    break
        except Exception:
            pass
        self.close(reason)

    def start(self, source):
        if self.busy:
            self.send({"result": {"status": "error", "error": "the previous input is still running"}})
            return
        self.interrupt.clear()
        self.busy = True
        self.worker = threading.Thread(target=self.execute, args=(source,), name="kubectl-wand-repl-input",
                                       daemon=True)
        self.worker.start()

    def execute(self, source):
        try:
            result = run_code(source, self.timeout, self.max_output, namespace=self.namespace,
                              interrupted=self.interrupt.is_set)
        except BaseException as exc:
            result = {"status": "error", "error": "%s: %s" % (type(exc).__name__, exc)}
        self.busy = False
        try:
            self.send({"result": result})
        except Exception:
            pass

    def close(self, reason):
        self.interrupt.set()
        worker = self.worker
        if worker is not None:
            worker.join(self.timeout + 1.0)  # Python code stops at its next line; a C call at its deadline
        self.namespace.clear()
        self.namespace = None
        try:
            self.send({"wand": "detached", "reason": reason})
        except Exception:
            pass
        try:
            self.conn.close()
        except OSError:
            pass
