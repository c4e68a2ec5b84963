"""A progress spinner on stderr for long steps: only on a terminal, never when piped, silenced by --quiet."""
from __future__ import annotations

import sys

from . import terminal

FRAMES = "|/-\\"
# Set once a terminal session's own exec writes to this terminal (transport/sessionexec.py): its prompt may be on
# the screen while the command's start goes on, and a spinner drawn, then erased, on that line would wipe it.
SHARED = False


class Spinner:
    def __init__(self, message: str, enabled: bool, stream=None):
        # Its own carriage returns go to the stream under a terminal.Human; the message is escaped here.
        self.message, self.stream = terminal.text(message), terminal.raw(stream or sys.stderr)
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.stop = None
        self.thread = None

    def __enter__(self):
        if self.enabled:
            import threading  # only on a terminal: a piped `stack pid/N` imports no threading at all
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
        return self

    def _spin(self):
        i = 0
        # Wait 0.15 s before drawing: quick steps show nothing at all.
        while not self.stop.wait(0.15 if i == 0 else 0.1):
            if SHARED:
                continue
            self.stream.write("\r%s %s " % (FRAMES[i % len(FRAMES)], self.message))
            self.stream.flush()
            i += 1
        if i and not SHARED:
            self.stream.write("\r" + " " * (len(self.message) + 3) + "\r")
            self.stream.flush()

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
        return False
