"""Flags as plain data: each verb declares its own once (``FLAGS`` beside its Options), kubectl's global flags
are declared here (``KUBE_FLAGS``), and everything else is derived from these declarations: the argparse parser
(cli.py), the option strings that take a value (cli.split_verb steps over them to find the verb word), the
values copied into an Options object (``TargetOptions.take``) and what completes a flag's value (completion.py).

Plain classes with ``__slots__``, no argparse, dataclasses or inspect: a command imports only its own verb's
declarations, and importing dataclasses (with inspect) was ~9 ms of the CLI's start before its first kubectl call.
"""
from __future__ import annotations

# What completes a value (completion.py): a lookup's name, or FILES for the shell's own file names.
FILES = "files"
# ``value`` of a flag that takes a kubectl duration (30s, 1m, 500ms): parse_duration reads it.
DURATION = "duration"


class Flag:
    """One flag or positional argument.

    ``names``: option strings ("-o", "--output"), or one bare name for a positional. ``value``: None for a
    switch (present or not), else what reads the value: str, int, float or DURATION. ``negatable`` makes a
    switch ``--x/--no-x`` with three states (None when not given). ``many``: a flag that may repeat (a list).
    ``nargs`` is for positionals only ("?", "*"). ``complete`` names what completes the value (FILES or a lookup
    in completion.py)."""

    __slots__ = ("names", "dest", "value", "default", "choices", "help", "metavar", "nargs", "negatable", "many",
                 "complete", "group")

    def __init__(self, *names, dest=None, value=None, default=None, choices=None, help=None, metavar=None,
                 nargs=None, negatable=False, many=False, complete=None, group=None):
        self.names = names
        long = [n for n in names if n.startswith("--")]
        self.dest = dest or (long or names)[0].lstrip("-").replace("-", "_")
        self.value, self.default, self.choices = value, default, choices
        self.help, self.metavar, self.nargs = help, metavar, nargs
        self.negatable, self.many, self.complete, self.group = negatable, many, complete, group
        if choices is not None and value is None:
            self.value = str

    @property
    def positional(self) -> bool:
        return not self.names[0].startswith("-")

    @property
    def takes_value(self) -> bool:
        return not self.positional and self.value is not None


def value_options(flags) -> set:
    """The option strings among ``flags`` that take a value."""
    return {name for f in flags if f.takes_value for name in f.names}


KUBE_GROUP = "Kubernetes options (as kubectl)"


def _kube(*names, **kw):
    kw.setdefault("value", str)
    return Flag(*names, group=KUBE_GROUP, **kw)


# Every standard kubectl global flag (cli-runtime ConfigFlags), honoured in API reads and kubectl calls
# (kube/config.py turns them into kubectl's argv).
KUBE_FLAGS = tuple(
    _kube(name, metavar=name[2:].upper().replace("-", "_"), complete=complete) for name, complete in (
        ("--kubeconfig", FILES), ("--context", "contexts"), ("--cluster", "clusters"), ("--user", "users"),
        ("--token", None), ("--as-uid", None), ("--certificate-authority", FILES), ("--client-certificate", FILES),
        ("--client-key", FILES), ("--tls-server-name", None), ("--cache-dir", FILES))
) + (
    _kube("--as", dest="as_user", metavar="USER", help="impersonate USER"),
    _kube("-n", "--namespace", help="namespace (default: the context's)", complete="namespaces"),
    _kube("-s", "--server", help="API server address"),
    _kube("--as-group", many=True, default=[], metavar="GROUP"),
    _kube("--insecure-skip-tls-verify", value=None),
    _kube("--disable-compression", value=None),
    _kube("--request-timeout", default="0",
          help="timeout for one API call or kubectl call, e.g. 30s (0: the tool's defaults)"),
    _kube("-v", "--v", dest="verbosity", value=int, default=0, metavar="LEVEL",
          help="log level; 6+ prints the kubectl commands run"),
)


def parse_duration(text: str) -> float:
    """kubectl durations: 0 (no limit), 30, 30s, 1m, 1h, 500ms, 1m30s; also nan/inf, refused by validate()."""
    text = text.strip().lower()
    if text in ("nan", "inf", "+inf", "-inf", "infinity"):
        return float(text)
    if text.isascii() and text.isdigit():  # plain seconds (--request-timeout's default 0): no pattern to compile
        return float(text)
    import re  # only for units: a plain number (the defaults) needs none
    m = re.fullmatch(r"-?(?:\d+(?:\.\d+)?(?:ms|s|m|h)?)+", text)
    if not m:
        import argparse  # the parser shows it as its usage error
        raise argparse.ArgumentTypeError("bad duration %r (use e.g. 30s, 1m)" % text)
    total, sign = 0.0, -1.0 if text.startswith("-") else 1.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    return sign * total
