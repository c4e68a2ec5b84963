"""A real pseudo-terminal for the tests of interactive verbs (pdb): the CLI gets a TTY as its stdin, stdout and
stderr and its controlling terminal, so Ctrl-C is the terminal's ^C and readline edits lines, as for a user."""
from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time

from procs import DELIVERED
import signal


class Term:
    def __init__(self, argv, env=None, cwd=None, rows=40, cols=200):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def child():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            for signum in DELIVERED:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     preexec_fn=child, close_fds=True)
        os.close(slave)
        self.seen = ""   # everything read so far
        self.pos = 0     # where the next expect starts

    def read(self, timeout):
        ready = select.select([self.master], [], [], timeout)[0]
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process of the terminal has closed it
            data = b""
        if not data:
            return None
        self.seen += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern, timeout=30.0):
        """Wait for ``pattern`` (a regex) after the last match; the match. AssertionError with the screen if not."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.seen, self.pos)
            if found:
                self.pos = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0 or self.read(left) is None and not regex.search(self.seen, self.pos):
                raise AssertionError("no %r on the terminal within %gs; it shows:\n%s" % (
                    pattern, timeout, self.seen[-3000:]))

    def send(self, text):
        os.write(self.master, text.encode())

    def line(self, text):
        self.send(text + "\r")

    def interrupt(self):
        self.send("\x03")

    def wait(self, timeout=30.0):
        """The CLI's exit code, reading the terminal meanwhile (a full terminal would block it)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read(0.1)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
