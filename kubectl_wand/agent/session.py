"""One injection: private directory, bootstrap, Unix socket back-channel, deadline, cleanup.

Protocol (all JSON lines over a Unix socket in the private directory):
  agent: a private directory (private.py) holding the socket and bootstrap.py (passengers/bootstrap.py + call)
  agent: run the injector (the target's own interpreter) -> sys.remote_exec(pid, bootstrap.py)
  target main thread, at its next safe point: connect -> hello -> request (with the op's code) -> result
Nothing waits on a fixed sleep: the agent blocks in select() on the socket and the target's pidfd, with
the time left of the deadline (wait.py).

Lifecycle of the directory (docs/security.md): removed before we return, except that a bootstrap the target
has queued but not taken stays (deleting it would make CPython print "Can't open debugger script" into the
app's log when it wakes) until the target takes it (it then removes itself and the directory), or until a
later injection into the same target adopts it, or a later run finds the target gone (reap.py).
"""
from __future__ import annotations

import math
import os
import struct
import sys
import time

import _socket as socket  # socket.py's import costs ~2.4 ms in a pod (private.Socket)

from . import private as private_mod, protocol, reap, slot as slot_mod
from . import wait as wait_mod
from .wait import Exited, Watch

from .sources import SOURCES, module_source, op_sources  # noqa: E402,F401  (re-exported for the agent modules)
from .protocol import AgentError  # noqa: E402,F401  (defined once, in the protocol; re-exported here)
from .injectable import STOPPED, app_frames, blocked_in, main_thread_stack, target  # noqa: F401 (checks.py's too)


# After the code's own deadline, how long the payload may take to start its report (it stops the code itself).
REPORT_GRACE = 2.0


def check_timeout(value, name="--timeout"):
    """A finite, positive number of seconds, or AgentError("usage"): never inject with a deadline we cannot
    keep (nan makes every comparison false; 0 or less would give up before the target could answer)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise AgentError("usage", "%s must be a positive number of seconds, not %r" % (name, value))
    return seconds


class Injection:
    """Inject the payload into ``pid`` and exchange one request/result with it."""

    def __init__(self, pid: int, timeout: float = 10.0):
        self.timeout = check_timeout(timeout)
        self.pid = pid
        self.proc, self.rt = target(pid)
        self.answered = False  # whether the injector said why it did not queue the bootstrap

    def run(self, request: dict, code_for_check: bytes = b"", on_hello=None, stream=None, prepare=None) -> dict:
        """``stream(conn, hello) -> dict``, if given, takes over the connection once the request is sent
        (a long-lived exchange such as trace) and its return value is the result. ``prepare(private)``, if
        given, fills a new private directory before the injection: whatever it does then, the app's main
        thread does not wait for (after the hello it waits in our bootstrap for the request)."""
        lock = self._lock()
        try:
            # The deadline counts from here: time spent waiting for another injection is not the target's.
            return self._run(request, code_for_check, on_hello, time.monotonic() + self.timeout, stream, lock,
                             prepare)
        finally:
            lock.close()

    def _lock(self):
        """One injection per target at a time: the target has a single pending-script slot.

        An abstract Unix socket is the lock: the kernel drops it when we exit, and it leaves no file.
        """
        name = "\0kubectl-wand-%d-%d" % (self.pid, self.proc.start_ticks)
        started = time.monotonic()
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(name)
                return sock
            except OSError:
                sock.close()
                if wait_mod.abandoned():
                    raise AgentError("busy", "another kubectl wand injection into process %d is still running; "
                                     "the CLI left while waiting for it" % self.pid)
                if time.monotonic() - started > self.timeout:
                    raise AgentError("busy", "another kubectl wand injection into process %d is still running "
                                     "(waited %gs for it); retry when it has finished" % (self.pid, self.timeout))
                time.sleep(0.05)  # another injection holds the target; poll the lock until it is free

    def _run(self, request, code_for_check, on_hello, deadline, stream=None, lock=None, prepare=None):
        reader = slot_mod.Reader(self.proc)
        watch = Watch(self.proc, reader)
        bases = private_mod.temp_bases(self.proc)
        queued = reap.sweep(self.rt, bases, reader, until=deadline)
        private = private_mod.PrivateDir.adopt(self.rt, *queued) if queued else None
        if private is not None:
            try:
                private.rebind("s")
            except OSError:  # someone of the target's uid interferes: queue our own (the old one is dead then)
                private.close()
                private = None
        if private is not None:
            state = "queued"  # adopted: its bootstrap is the one in the slot, it will connect to the new socket
        else:
            private = self._private_dir(bases)
            state = "made"
        script = private.target_path + "/bootstrap.py"
        try:
            if state == "made":
                if prepare is not None:
                    prepare(private)
                state = "maybe"  # from here the injector may have queued it: never delete it unseen
                try:
                    self._inject(script, code_for_check, deadline)
                except AgentError:
                    if self.answered:
                        state = "made"  # the injector said no: nothing was queued
                    raise
                state = "queued"
            elif code_for_check:
                self._inject("-", code_for_check, deadline)  # adopted: still judge the code by its compiler
            private.remove_mirror()  # only sys.remote_exec's existence check in our view needed it
            verdict, detail = watch.bootstrap(private.listener, script, lambda: private.has("bootstrap.py"),
                                              deadline)
            if verdict in ("pending", "unknown"):
                return self._pending(private, watch)
            if verdict != "connected":
                state = "dead"
                if verdict in ("refused", "lost") and private.tampered():
                    raise AgentError("refused", "process %d took the injected script, but its path no longer led to "
                                     "kubectl wand's files: a process of uid %d replaced them while the injection "
                                     "waited (a symlink swap in %s: an attack, or another tool); nothing of ours "
                                     "ran and nothing was followed" % (self.pid, self.proc.euid, private.base))
                raise self._not_run(verdict, detail)
            state = "connected"
            with detail as conn:
                return self._exchange(conn, watch, private, request, on_hello, deadline, stream, lock)
        except Exited:
            state = "dead"
            raise AgentError("exited", "process %d exited while kubectl wand waited for it" % self.pid)
        finally:
            watch.close()
            if state in ("maybe", "queued") and self._still_holds(reader, script, watch):
                private.remove(keep=("bootstrap.py",))  # the target still holds it: it removes itself later
                interrupt = sys.exc_info()[1]
                if interrupt is not None and not isinstance(interrupt, Exception):  # Ctrl-C, SIGTERM (pid/N)
                    interrupt.wand_note = interrupted_note(self.pid, script)
            else:
                private.remove()

    @staticmethod
    def _still_holds(reader, script, watch):
        """Whether the target may still open our bootstrap: queued, or just taken (about to be opened). When
        the slot cannot be read, assume it may."""
        if not watch.alive():
            return False
        current = reader.read()
        return current is None or current.path == script

    def _private_dir(self, bases):
        def files(target_path):
            # The call in a try of its own: an exception raised as it starts (a signal handler of the app's)
            # must not escape to CPython, which would print it into the app's stderr.
            call = "\ntry:\n    wand_main(%s, %s, %s)\nexcept BaseException:\n    pass\n" % (
                protocol.dumps(target_path + "/s"), protocol.dumps(target_path),
                protocol.dumps(target_path.rsplit("/", 1)[1]))
            source = module_source("bootstrap") + call
            return {"bootstrap.py": source.encode()}
        try:
            return private_mod.PrivateDir(self.rt, bases, files=files, socket_name="s", mirror=("bootstrap.py",))
        except private_mod.NoTempDir as exc:
            raise AgentError("environment", "no room for kubectl wand's private files in process %d's filesystem "
                             "(%s); mount a writable emptyDir at /tmp (a few MB free; a container: docker/podman run "
                             "--tmpfs /tmp)" % (self.pid, exc))
        except private_mod.CannotLend as exc:
            raise AgentError("environment", str(exc))
        except private_mod.CannotHandOver:
            raise AgentError("permission", "process %d runs as uid %d and kubectl wand (uid %d) may not give it "
                             "files (no CAP_CHOWN); run as uid %d or as root" % (
                                 self.pid, self.proc.euid, os.geteuid(), self.proc.euid))

    def _inject(self, script, code_for_check, deadline):
        if self.rt.same_interpreter() and sys.is_remote_debug_enabled():
            result = in_process_injector().inject(self.rt.injector_pid, script, code_for_check or b"")
        else:
            result = self._run_injector(script, code_for_check, deadline)
        if not result.get("ok"):
            self.answered = True  # it ran and refused: nothing was queued
            raise AgentError(result.get("kind", "inject"), result.get("error", "injection failed"),
                             **{k: result[k] for k in ("line", "offset", "text") if k in result})

    def _run_injector(self, script, code_for_check, deadline):
        """The injector in a subprocess of the target's interpreter (another root, another version here)."""
        args = ["-c", module_source("injector"), "inject", str(self.rt.injector_pid), script]
        try:
            done = self.rt.run(args, stdin=code_for_check, timeout=max(1.0, deadline - time.monotonic()))
            result = protocol.check_injector(protocol.decode(done.stdout, "the injector's answer")) \
                if done.stdout else {}
        except protocol.ProtocolError as exc:
            raise AgentError("protocol", "the injector answered out of protocol: %s" % exc)
        except Exception as exc:
            raise AgentError("inject", "running the target's interpreter failed: %s" % exc)
        if not result:
            err = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            raise AgentError("inject", "the injector failed: %s" % (err[-1] if err else "exit %d" % done.returncode))
        return result

    def _exchange(self, conn, watch, private, request, on_hello, deadline, stream, lock):
        peer = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        if peer != self.pid:
            raise AgentError("inject", "process %d, not the target %d, answered the injection" % (peer, self.pid))
        conn.settimeout(max(1.0, deadline - time.monotonic()))  # for sends; reads wait in select() (Lines)
        lines = protocol.Lines(conn, "the target")
        try:
            hello = protocol.check_payload_hello(protocol.decode(
                lines.line(protocol.SMALL_MAX, max(deadline, time.monotonic() + 1.0), "its hello") or b"{}",
                "its hello"))
        except protocol.ProtocolError as exc:
            raise AgentError("protocol", "the injection into process %d was answered out of protocol: %s; nothing "
                             "of the request was sent" % (self.pid, exc))
        if hello.get("token") != private.name:
            raise AgentError("inject", "an unexpected bootstrap answered the injection")
        # Ours ran, so any other directory of this target is dead (one slot; the lock is ours).
        reap.sweep(self.rt, private_mod.temp_bases(self.proc), watch.reader, keep=private.name,
                   until=deadline, others=False)
        if on_hello is not None:
            request = on_hello(hello, request, private)
            if "status" in request:  # decided without running anything (e.g. existing server)
                self._send(conn, protocol.payload_request("noop"))
                return dict(request, hello=hello)
        request = dict(request, sources=op_sources(request.get("op")))  # the op's code travels here
        self._send(conn, protocol.payload_request(**request))
        if stream is not None:
            # The script slot is consumed and the socket file has done its job: free both now, so
            # other verbs can inject beside a long stream and a killed agent leaves no directory.
            lock.close()
            private.remove()
            return stream(conn, hello, lines)
        try:
            return self._answer(conn, watch, request, deadline, lines, hello)
        except BaseException as interrupt:
            if not isinstance(interrupt, Exception) and request.get("op") == "attach":  # Ctrl-C, SIGTERM (pid/N)
                interrupt.wand_note = attach_last_word(lines, self.pid, request)
            raise

    def _answer(self, conn, watch, request, deadline, lines, hello):
        # The payload enforces the code's own deadline; allow it a moment to report. An exec whose CLI went away
        # (Ctrl-C, SIGTERM, killed) says at once that its code still runs: waiting out --timeout held this agent
        # and the target's lock in the pod, and the CLI's last word came too late to be read (seen: exec-py
        # --all-pods ignored Ctrl-C until every pod's code had ended; one pod's Ctrl-C printed no note). Our end
        # of the connection then closes and the payload stops the code at its next line (execute.hung_up).
        op = request.get("op")
        gone = wait_mod.abandoned if op == "exec" else None
        try:
            comes = watch.readable(conn, max(deadline, time.monotonic() + 0.5) + REPORT_GRACE, abandon=gone)
        except BaseException as exc:
            if not isinstance(exc, Exception) and op == "exec":  # Ctrl-C, SIGTERM (pid/N)
                exc.wand_note = running_note(self.pid)
            raise
        if not comes:
            return self._still_running(interrupted=gone is not None and gone())
        limit = protocol.exec_result_max(request.get("max_output", 0)) if op == "exec" else protocol.SMALL_MAX
        try:
            # It started answering: the rest of the line follows at once (a drip is cut, LINE_WAIT).
            line = lines.line(limit, max(deadline + REPORT_GRACE, time.monotonic() + 1.0), "its result")
            if line is None:
                if watch.exits_within(1.0):
                    raise Exited()
                raise AgentError("inject", "the payload in process %d closed the connection without answering "
                                 "(did the code close file descriptors?)" % self.pid)
            result = protocol.check_payload_result(op, protocol.decode(line, "its result"), "its result")
        except protocol.ProtocolError as exc:
            hint = ""
            if op == "exec" and "over" in str(exc):
                hint = " (--max-output %s)" % (request.get("max_output") or "0: the protocol's ceiling")
            raise AgentError("protocol", "process %d answered out of protocol: %s%s; refused" % (
                self.pid, exc, hint))
        result["hello"] = hello
        # The payload closes its end right after its answer: wait for that end of file (at once, unless the node
        # is loaded and the target's main thread not yet scheduled again), so that an op that has returned left
        # no socket of ours open in the target.
        try:
            lines.line(protocol.SMALL_MAX, time.monotonic() + REPORT_GRACE, "its close")
        except protocol.ProtocolError:
            pass
        return result

    def _send(self, conn, request):
        try:
            conn.sendall(protocol.encode(request))
        except OSError as exc:  # timed out (the socket's timeout: the time left) or the peer closed
            raise AgentError("protocol", "the payload in process %d did not take the request (%s)" % (
                self.pid, exc.strerror or type(exc).__name__))

    def _not_run(self, verdict, detail):
        if verdict == "refused":
            return AgentError("refused", "process %d took the injected script but did not run it: the app refuses "
                              "remote debugging (an audit hook on cpython.remote_debugger_script, or an open_code "
                              "hook); nothing ran and nothing was left behind" % self.pid)
        if verdict == "replaced":
            return AgentError("busy", "another debugger queued its own script in process %d (%s) before its main "
                              "thread ran ours; nothing of this request will run; retry when it is done"
                              % (self.pid, detail))
        return AgentError("inject", "the bootstrap started in process %d but never connected back" % self.pid)

    def _pending(self, private, watch):
        frames = main_thread_stack(self.rt)
        state = watch.state()
        result = {"status": "pending", "pid": self.pid, "frames": app_frames(frames),
                  "syscall": blocked_in(self.pid), "in_bootstrap": len(app_frames(frames)) < len(frames),
                  "left_behind": private.target_path + "/bootstrap.py", "stopped": state in STOPPED,
                  "error": "the injection is still pending after %gs: the main thread of %d has not reached a "
                           "safe point" % (self.timeout, self.pid)}
        if wait_mod.abandoned():  # what stays, in the words the CLI prints for one pod (exec-py --all-pods: each)
            result.update(interrupted=True, error=interrupted_note(self.pid, result["left_behind"]))
        if state in STOPPED:
            result.update(syscall=None, error="the injection is still pending after %gs: process %d is %s; it "
                          "runs when continued (kill -CONT %d)" % (self.timeout, self.pid, STOPPED[state], self.pid))
        return result

    def _still_running(self, interrupted=False):
        frames = main_thread_stack(self.rt)
        result = {"status": "running", "frames": app_frames(frames), "syscall": blocked_in(self.pid),
                  "in_bootstrap": len(app_frames(frames)) < len(frames),
                  "error": "the code is still running in the main thread of %d after %gs (blocked in a C call, "
                           "which cannot be interrupted)" % (self.pid, self.timeout)}
        if interrupted:  # the CLI went away: closing our end stops the code (execute.hung_up)
            result.update(interrupted=True, error=running_note(self.pid))
        return result


def running_note(pid) -> str:
    """What the CLI prints when it is interrupted while the user's code runs (the connection closing stops it)."""
    return ("interrupted while the code was still running in process %s: it is stopped at its next Python line (a "
            "call blocked in C first returns); its output is discarded" % pid)


ATTACH_LAST_WORD = 5.0  # seconds an interrupted attach waits for its payload's answer (import + listen: < 1 s)


def attach_last_word(lines, pid, request) -> str:
    """What an attach interrupted after its request reached the payload leaves: its answer, read for a moment
    from ``lines`` (a second Ctrl-C ends the wait), or ``request`` itself when it is that answer. Before, the
    CLI exited 130 silently while debugpy went on to listen in the process (seen locally with Ctrl-C 0.75-0.8 s
    into a first attach)."""
    where = "%s:%s" % (printable(request.get("host")), printable(request.get("port")))
    try:
        result = request  # lines None: the payload's answer, already in (run_attach: interrupted while confirming)
        if lines is not None:
            line = lines.line(protocol.SMALL_MAX, time.monotonic() + ATTACH_LAST_WORD, "its result")
            result = protocol.check_payload_result("attach", protocol.decode(line or b"{}", "its result"))
    except BaseException:
        return ("interrupted while debugpy was starting in process %d: it may listen on %s now, until the process "
                "exits; attach again to reuse it" % (pid, where))
    if result["status"] in (protocol.LISTENING, protocol.ALREADY) and result.get("port"):
        return ("interrupted after the debug server started: debugpy listens on %s:%s in process %d until it "
                "exits; attach again to reuse it" % (printable(result.get("host")), result["port"], pid))
    return "interrupted: debugpy did not start in process %d (%s)" % (
        pid, printable((result.get("error") or result["status"])[:200]))


def printable(value) -> str:
    """The target's text for a line the CLI prints as is: control characters and non-ASCII as escapes."""
    return "".join(c if " " <= c < "\x7f" else ascii(c)[1:-1] for c in str(value))


def interrupted_note(pid, script) -> str:
    """What the CLI prints when it is interrupted while the injection is pending (docs/security.md)."""
    return ("interrupted while the injection into process %s was pending: nothing of the request ran; its "
            "bootstrap (no user code) stays queued at %s until the main thread wakes, then deletes itself; a retry "
            "adopts it" % (pid, script))


_INJECTOR = {}


def in_process_injector():
    """The injector's code loaded here (see TargetRuntime.same_interpreter), once."""
    if "module" not in _INJECTOR:
        import types
        module = types.ModuleType("wand_injector")
        exec(compile(module_source("injector"), "<kubectl-wand>/injector.py", "exec"), module.__dict__)
        _INJECTOR["module"] = module
    return _INJECTOR["module"]
