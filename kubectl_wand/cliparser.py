"""argparse's side of the command line (cli.py builds a verb's parser from its flag declarations here): the
help's format, usage errors as one line, flag declarations turned into arguments. Imported only when a command
line needs argparse (cli.plain_namespace reads the simplest ones without it: ~5 ms of a local `stack pid/N`).
"""
from __future__ import annotations

import argparse
import sys

from . import errors
from .flags import DURATION, parse_duration


class Formatter(argparse.RawDescriptionHelpFormatter):
    """kubectl-style help: Usage, Examples, Options."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=110)

    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage, actions, groups, prefix="Usage:\n  " if prefix is None else prefix)


class Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr naming the cause and the verb's help, exit code 2."""

    def error(self, message):
        sys.stderr.write("error: %s; see '%s --help'\n" % (message, self.prog))
        raise SystemExit(errors.USAGE)


def add_flags(p, flags):
    """Argparse arguments from flag declarations (kubectl_wand.flags); each keeps what completes its value."""
    groups = {}
    for f in flags:
        where = p if f.group is None else groups.setdefault(f.group, p.add_argument_group(f.group))
        kw = {"help": f.help}
        if f.metavar is not None:
            kw["metavar"] = f.metavar
        if f.positional:
            if f.nargs is not None:
                kw["nargs"] = f.nargs
            if f.choices is not None:
                kw["choices"] = f.choices
            action = where.add_argument(f.dest, **kw)
        else:
            kw["dest"] = f.dest
            if f.negatable:
                kw.update(action=argparse.BooleanOptionalAction, default=None)
            elif f.value is None:
                kw["action"] = "store_true"
            else:
                kw.update(default=f.default, type=parse_duration if f.value == DURATION else f.value)
                if f.choices is not None:
                    kw["choices"] = f.choices
                if f.many:
                    kw["action"] = "append"
            action = where.add_argument(*f.names, **kw)
        action.complete = f.complete

