"""The streams a verb is given (kubectl's IOStreams): everything it reads or prints goes through them,
interactive choices included, so no layer below a verb touches sys.stdin/sys.stdout itself."""
from __future__ import annotations

import sys

from . import errors, terminal
from .errors import WandError


class Streams:
    """stdout and stderr are ``terminal.Human``: what a verb writes there never drives the terminal (their
    ``raw`` is for data formats)."""

    def __init__(self, stdin, stdout, stderr):
        self.stdin, self.stdout, self.stderr = stdin, terminal.human(stdout), terminal.human(stderr)

    @classmethod
    def system(cls):
        return cls(sys.stdin, sys.stdout, sys.stderr)

    def interactive(self) -> bool:
        return bool(getattr(self.stdin, "isatty", lambda: False)() and getattr(self.stderr, "isatty", lambda: False)())

    def choose(self, what: str, names: list) -> int:
        """Ask on the terminal which of ``names`` to use; its index. Only call when ``interactive()``."""
        self.stderr.write("%d %s:\n" % (len(names), what))
        for i, name in enumerate(names, 1):
            self.stderr.write("  %d) %s\n" % (i, terminal.text(name)))
        while True:
            self.stderr.write("choose one [1-%d]: " % len(names))
            self.stderr.flush()
            answer = self.stdin.readline()
            if not answer:
                raise WandError("nothing chosen", errors.USAGE)
            answer = answer.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return int(answer) - 1
            if answer in names:
                return names.index(answer)
