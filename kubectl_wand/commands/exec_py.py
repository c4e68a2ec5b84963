"""`kubectl wand exec-py TARGET -- CODE | -f FILE | -f -`: run code inside the live process.

With --all-pods the code runs in the app process of every Running pod of the target at once; each line of
output is prefixed with its pod (kubectl logs --prefix style), -o json prints a list, and the exit code is the
worst of them.
"""
from __future__ import annotations

import base64
import io

from .. import errors, printers, report, terminal
from ..agent import protocol
from ..errors import WandError
from ..flags import DURATION, FILES, Flag
from ..terminal import text
from .common import TARGET_FLAGS, TargetOptions, check_result, positive_seconds
from .fanout import each

MAX_OUTPUT = 1 << 20  # bytes of stdout (and of stderr) brought back by default
MAX_CODE = 4 << 20    # bytes of code (-f FILE, -f -, after --): /dev/zero once took 23 GB before the kernel's kill
READ_WAIT = 10.0      # seconds to read -f FILE when it is a pipe or FIFO (one with no writer never ends)

DESCRIPTION = ("Run CODE inside the live process and print its stdout, stderr, the repr of a final expression, and a "
               "traceback if it raised (exit 1).")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("code_words", nargs="*", metavar="code", help="the code, after --"),
    Flag("-f", "--filename", value=str, complete=FILES, help="read the code from FILE (- for stdin)"),
    Flag("--timeout", value=DURATION, default=10.0,
         help="how long injection and run may take, e.g. 10 or 1m (default 10s)"),
    Flag("--max-output", value=int, default=MAX_OUTPUT, metavar="BYTES",
         help="bytes of stdout and of stderr brought back (default 1048576; 0: no limit)"),
    Flag("--all-pods", help="run in every Running pod of the target at once"),
    Flag("-i", "--stdin", help="with -t: a Python prompt whose inputs run inside the live process (exec-py -it)"),
    Flag("-t", "--tty", help="with -i: a Python prompt whose inputs run inside the live process (exec-py -it)"),
    Flag("-o", "--output", choices=("json", "yaml"), help="output format"),
) + TARGET_FLAGS


def read_code(fd: int, what: str, wait=READ_WAIT) -> bytes:
    """All of ``fd``, at most MAX_CODE bytes, within ``wait`` seconds when it is not a regular file (None: no
    limit, a terminal where the user types the code); a WandError (usage) beyond either."""
    import os
    import select
    import stat
    import time
    regular = stat.S_ISREG(os.fstat(fd).st_mode)
    deadline = None if regular or wait is None else time.monotonic() + wait
    chunks, size = [], 0
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            ready = left > 0 and select.select([fd], [], [], left)[0]
            if not ready:
                raise WandError("%s: nothing more to read after %gs (a FIFO or pipe with no writer?); give a file"
                                % (what, wait), errors.USAGE)
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_CODE:
            raise WandError("%s is more than %d MiB of code; exec-py takes at most that (run a file that is "
                            "already in the target with runpy instead)" % (what, MAX_CODE >> 20), errors.USAGE)


def decode_source(data: bytes, what: str) -> str:
    """Source bytes as Python reads a file: a UTF-8 BOM or a PEP 263 coding cookie, else UTF-8."""
    import tokenize
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        where = ""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:  # where it stops being UTF-8, whichever check noticed first
            where = " (byte 0x%02x at offset %d)" % (data[bad.start], bad.start)
        raise WandError("%s is not valid UTF-8%s and declares no usable coding; save it as UTF-8 or add a "
                        "'# -*- coding: NAME -*-' line" % (what, where), errors.USAGE)


class Options(TargetOptions):
    flags = FLAGS
    code: str = None
    code_words: tuple = ()
    filename: str = None
    timeout: float = 10.0
    output: str = None
    max_output: int = MAX_OUTPUT
    all_pods: bool = False
    stdin: bool = False
    tty: bool = False
    client: str = None  # exec-py -it: its session's socket name (commands/session.py)

    def complete(self, ns, streams):
        self.verb = "exec-py"
        self.complete_target(ns, streams)
        self.code_words = list(self.code_words)
        if self.stdin or self.tty:
            return  # exec-py -it: the code comes from the prompt
        if self.filename and self.code_words:
            raise WandError("give the code either after -- or with -f, not both", errors.USAGE)
        if self.filename == "-":
            stdin = getattr(streams.stdin, "buffer", streams.stdin)
            try:
                fd = stdin.fileno()
            except (AttributeError, OSError, ValueError):
                fd = None
            if fd is None:  # an in-memory stream (tests, embedding): bounded the same way
                data = stdin.read(MAX_CODE + 1)
                if len(data) > MAX_CODE:
                    raise WandError("the code on stdin is more than %d MiB of code; exec-py takes at most that"
                                    % (MAX_CODE >> 20), errors.USAGE)
            else:
                data = read_code(fd, "the code on stdin", None if stdin.isatty() else READ_WAIT)
            self.code = decode_source(data, "the code on stdin") if isinstance(data, bytes) else data
        elif self.filename:
            import os
            try:
                fd = os.open(self.filename, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                raise WandError("cannot read -f %s: %s; check the path" % (self.filename, exc.strerror), errors.USAGE)
            try:
                data = read_code(fd, "-f %s" % self.filename)
            except OSError as exc:
                raise WandError("cannot read -f %s: %s; check the path" % (self.filename, exc.strerror), errors.USAGE)
            finally:
                os.close(fd)
            self.code = decode_source(data, "-f %s" % self.filename)
        else:
            self.code = " ".join(self.code_words)
            try:
                size = len(self.code.encode("utf-8"))
            except UnicodeEncodeError:
                raise WandError("the code after -- is not valid UTF-8; pass it with -f FILE", errors.USAGE)
            if size > MAX_CODE:
                raise WandError("the code after -- is more than %d MiB; exec-py takes at most that"
                                % (MAX_CODE >> 20), errors.USAGE)

    def validate(self):
        self.validate_target()
        if self.stdin or self.tty:
            return self.validate_interactive()
        if not self.code or not self.code.strip():
            raise WandError("no code to run; give it after -- (exec-py pid/123 -- 'print(1)') or with -f FILE",
                            errors.USAGE)
        positive_seconds(self.timeout, "--timeout")
        if self.max_output is None or self.max_output < 0:
            raise WandError("--max-output must be a number of bytes (0: no limit)", errors.USAGE)
        if self.output not in (None, "json", "yaml"):
            raise WandError("exec-py prints -o json or -o yaml (or plain output without -o)", errors.USAGE)
        if self.all_pods and self.pid:
            raise WandError("--all-pods runs in each pod's app process; --pid names one process: give one",
                            errors.USAGE)

    def validate_interactive(self):
        if not (self.stdin and self.tty):
            raise WandError("exec-py's prompt takes both -i and -t (exec-py -it TARGET)", errors.USAGE)
        if self.code_words or self.filename:
            raise WandError("exec-py -it reads the code at its prompt: no code after -- and no -f", errors.USAGE)
        if self.all_pods or self.output:
            raise WandError("exec-py -it is one prompt on one process: no --all-pods, no -o", errors.USAGE)
        positive_seconds(self.timeout, "--timeout")
        if self.max_output is None or self.max_output < 0:
            raise WandError("--max-output must be a number of bytes (0: no limit)", errors.USAGE)

    def session_request(self):
        """exec-py -it's request (op repl); its socket's name is made once, for the early call and the call."""
        if self.client is None:
            from .session import client_name
            self.client = client_name("repl")
        return {"op": "repl", "pid": self.known_pid(), "timeout": max(self.timeout, 10.0),
                "code_timeout": self.timeout, "max_output": self.max_output, "client": self.client}

    def run_interactive(self):
        from .session import run_session
        return run_session(self, self.one_transport(), self.session_request(), "exec-py -it")

    def request(self, pid):
        return {"op": "exec", "pid": pid, "code": self.code, "timeout": self.timeout,
                "max_output": self.max_output}

    def early_request(self):
        if self.stdin:  # the session itself, held until the pod is read (its launcher starts with it)
            return None if self.pid else dict(self.session_request(), hold=True)
        if self.pid or self.all_pods:
            return None
        return dict(self.request(None), hold=True)

    def run(self) -> int:
        if self.stdin:
            return self.run_interactive()
        if self.all_pods:
            return self.run_all()
        out, err = self.streams.stdout, self.streams.stderr
        transport = self.one_transport()
        result = self.run_one(transport, self.known_pid())
        if self.output:
            out.write(printers.dump(as_data(result, transport), self.output))
            return errors.exit_code(result)
        if result.get("status") in protocol.UNFINISHED:
            report.timed_out(result, err)
            return errors.TIMEOUT
        check_result(result, transport)
        return self.print_result(result, out, err)

    def run_one(self, transport, pid, stop=None):
        with self.step("running code in %s%s" % (transport.where, " pid %d" % pid if pid else "")):
            result = transport.agent(self.request(pid), timeout=self.timeout + self.request_timeout_s,
                                     on_event=self.chosen, stop=stop)
        result.pop("hello", None)
        result["pid"] = result.get("pid") or pid
        for stream in ("stdout", "stderr"):  # bytes written to .buffer come back base64-encoded
            if result.get(stream + "_bytes") is not None and self.output:
                result[stream + "_bytes"] = base64.b64decode(result[stream + "_bytes"]).decode("utf-8", "replace")
        return result

    def print_result(self, result, out, err, prefix=""):
        """What the user's code wrote to stdout and stderr is its own output, passed through as it is (as
        `kubectl exec` does: `exec-py ... > file` gets the bytes, colours the code prints stay colours). What
        exec-py renders itself (the repr of the value, the traceback, its warnings) follows terminal's rule:
        a repr or a file name the target chose does not drive the terminal."""
        status = result.get("status")
        write_prefixed(terminal.raw(out), result.get("stdout"), prefix)
        if result.get("stdout_bytes") is not None:
            write_bytes(terminal.raw(out), base64.b64decode(result["stdout_bytes"]), prefix)
        if result.get("value") is not None:
            write_prefixed(out, result["value"] + "\n", prefix)
        write_prefixed(terminal.raw(err), result.get("stderr"), prefix)
        if result.get("stderr_bytes") is not None:
            write_bytes(terminal.raw(err), base64.b64decode(result["stderr_bytes"]), prefix)
        if result.get("truncated"):
            err.write("%swarning: output cut at %d bytes (--max-output; 0 for no limit)\n" % (prefix, self.max_output))
        if status == protocol.RAISED:
            write_prefixed(err, result.get("traceback") or (result.get("error", "") + "\n"), prefix)
            return errors.FAILED
        if status == protocol.TIMEOUT:
            err.write("%serror: %s (exceeded --timeout %g)\n" % (prefix, text(result["error"]), self.timeout))
            return errors.TIMEOUT
        return errors.OK

    def run_all(self) -> int:
        out, err = self.streams.stdout, self.streams.stderr
        transports = self.transports()
        if not transports:
            raise WandError("exec-py --all-pods needs a pod target: TYPE/NAME or -l SELECTOR", errors.USAGE)

        import threading
        # Ctrl-C (SIGTERM, SIGHUP) sets it: every pod's call hangs up, its agent answering at once with what
        # stays running there; each pod's line is printed, then exit 130 (before: the main thread alone was
        # interrupted, and the CLI waited out every pod's code, up to --timeout, and printed nothing).
        interrupted = threading.Event()

        def one(transport):
            try:
                return self.run_one(transport, None, stop=interrupted)
            except WandError as exc:
                return errors.as_result(exc)

        results = each(one, transports, stop=interrupted)
        codes = []
        for transport, result in zip(transports, results):
            result.update(printers.source(transport))
            codes.append(errors.exit_code(result))
        if self.output:
            out.write(printers.dump(printers.as_list([as_data(r, t) for t, r in zip(transports, results)],
                                                     "ExecResultList"), self.output))
            return errors.INTERRUPTED if interrupted.is_set() else max(codes)
        for transport, result, code in zip(transports, results, codes):
            prefix = "[pod/%s/%s] " % (transport.labels.get("pod"), transport.labels.get("container"))
            if result.get("status") == protocol.ERROR or result.get("status") in protocol.UNFINISHED:
                err.write("%serror: %s\n" % (prefix, text(result["error"])))
            else:
                self.print_result(result, out, err, prefix)
        return errors.INTERRUPTED if interrupted.is_set() else max(codes)


# -o json's fields (docs/output.md), every one in every result: null where it does not apply (an error has no value)
RESULT_FIELDS = ("status", "value", "traceback", "error", "stdout", "stderr", "truncated", "seconds", "pid")


def as_data(result, transport):
    return {**dict.fromkeys(RESULT_FIELDS), **result, **printers.source(transport)}


def write_prefixed(stream, text, prefix):
    if not text:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate the code printed (U+D800): no encoder takes it; shown escaped
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if not prefix:
        stream.write(text)
        return
    lines = text.splitlines(True)
    stream.write("".join(prefix + line for line in lines) + ("" if text.endswith("\n") else "\n"))


def write_bytes(stream, data, prefix):
    """Binary output from the code (sys.stdout.buffer.write): raw to a binary stream when we have one."""
    binary = getattr(stream, "buffer", None)
    if binary is not None and not prefix:
        stream.flush()
        binary.write(data)
        binary.flush()
    else:
        write_prefixed(stream, data.decode("utf-8", "replace"), prefix)
