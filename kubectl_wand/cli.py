"""Command line: the only place that parses it (argparse's side in cliparser.py; the simplest lines, positional
words only, without argparse: ``plain_namespace``). Verbs live in kubectl_wand.commands.

kubectl (cobra) accepts flags anywhere: before the verb, between verb words, before or after the target,
``--flag=value`` and ``--flag value``; ``--`` ends flags. kubectl refuses flags before a plugin's name, so
``kubectl wand -n ns get processes`` is exactly where its users put them. So each verb has one parser holding
kubectl's global flags and its own, the verb word is found wherever it stands (``find_verb``: it knows which
flags take a value), and the rest is parsed intermixed. Completion reads the same parsers.

A verb's flags are declared once, as data beside its Options (``FLAGS`` in its module; kubectl_wand.flags):
the parser, the flags that take a value and completion's lookups are derived from them here, and only the
chosen verb's module is imported.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

from . import __version__, errors
from .errors import WandError
from .flags import DURATION, KUBE_FLAGS, parse_duration, value_options
from .helptext import DESCRIPTION, EXAMPLES

EXIT_HELP = "Exit codes: " + ", ".join("%d %s" % kv for kv in sorted(errors.EXIT_CODES.items())) + "."

# verb -> (module in kubectl_wand.commands, one-line summary, usage)
VERBS = {
    "get": ("get_processes", "list Python processes (get processes [TARGET])",
            "kubectl wand get processes [TARGET] [options]"),
    "attach": ("attach", "start a debugger in a live process and forward it", "kubectl wand attach TARGET [options]"),
    "exec-py": ("exec_py", "run Python code inside a live process",
                "kubectl wand exec-py TARGET [options] -- CODE\n  kubectl wand exec-py TARGET [options] -f FILE"),
    "check": ("check", "explain whether (and why not) a process can be attached", "kubectl wand check TARGET [options]"),
    "stack": ("stack", "print every thread's stack (and asyncio tasks) without stopping the process",
              "kubectl wand stack [TARGET] [options]"),
    "profile": ("profile", "sample where the time goes and write a profile or flame graph",
                "kubectl wand profile [TARGET] [options]"),
    "trace": ("trace", "print a line (or a snapshot) each time running code passes FILE:LINE, without stopping it",
              "kubectl wand trace TARGET FILE:LINE [EXPR ...] [options]"),
    "mem": ("mem", "where the memory goes: a census of the live heap, or a growth window naming the FILE:LINE",
            "kubectl wand mem TARGET [--duration DUR] [options]"),
    "pdb": ("pdb", "open pdb's prompt on a live process in this terminal", "kubectl wand pdb TARGET [options]"),
}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: ends the verb exactly as Ctrl-C does (every ``except KeyboardInterrupt`` runs: attach
    prints `Stopped forwarding`, trace its summary, profile writes what it sampled), then the program exits
    128 + the signal's number (143, 129)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def verb_module(name):
    return importlib.import_module("kubectl_wand.commands." + VERBS[name][0])


def verb_parser_for(name):
    """One verb's parser from its declared flags (its module's FLAGS), kubectl's global flags included."""
    from .cliparser import Formatter, Parser, add_flags
    module = verb_module(name)
    _module, _summary, usage = VERBS[name]
    p = Parser(prog="kubectl wand %s" % name, usage=usage, formatter_class=Formatter, description=module.DESCRIPTION,
               epilog=EXAMPLES[name] + "\n\n" + EXIT_HELP)
    p._optionals.title = "Options"
    p._positionals.title = "Arguments"
    add_flags(p, module.FLAGS + KUBE_FLAGS)
    return p


def verb_parsers():
    """Every verb's parser (completion reads them all)."""
    return {name: verb_parser_for(name) for name in VERBS}


def split_verb(words, takes_value):
    """(verb, the other words): the first word that is neither a flag nor a flag's value, wherever it is."""
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            if "=" not in word and word in takes_value:
                skip = True
            continue
        return word, words[:i] + words[i + 1:]
    return None, list(words)


def find_verb(words):
    """(verb, the other words): the first verb name that the flags before it leave standing, read with that
    verb's own flags (kubectl's global flags and its FLAGS: only a candidate verb's module is imported, so a
    command still imports only its own). ``--pod get attach x`` is attach (--pod takes a value); ``--bogus
    stack`` is stack, whose parser then refuses --bogus; no verb name: what any verb's flags leave (an unknown
    command, or none)."""
    end = words.index("--") if "--" in words else len(words)
    for index in range(end):
        word = words[index]
        if word not in VERBS:
            continue
        flags = KUBE_FLAGS + verb_module(word).FLAGS
        known = {name for f in flags for name in f.names if not f.positional}
        known |= {"-h", "--help", "--version"}
        before = [w.partition("=")[0] for w in words[:index] if w.startswith("-") and w != "-"]
        if all(w in known or w[:2] in known and not w.startswith("--") or  # -v6, -nNS
               w.startswith("--no-") and "--" + w[5:] in known for w in before):
            verb, rest = split_verb(words, value_options(flags))
            if verb == word:
                return verb, rest
    # No verb read right: an error or top-level help, where every verb's flags may be read.
    return split_verb(words, value_options(KUBE_FLAGS).union(*(value_options(verb_module(name).FLAGS) for name in VERBS)))


def top_help() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["Usage:\n  kubectl wand COMMAND [options]\n", DESCRIPTION, "\nCommands:"]
    lines += ["  %-*s  %s" % (width, name, summary) for name, (_m, summary, _u) in VERBS.items()]
    lines += ["", EXAMPLES[None], "", "Flags go anywhere on the line, as with kubectl; -- ends them (exec-py code).",
              EXIT_HELP, 'Use "kubectl wand <command> --help" for more about a command.']
    return "\n".join(lines) + "\n"


def unknown_verb(verb) -> str:
    """kubectl's answer to a typo: the cause, then the verbs it may have meant."""
    import difflib  # only on this error
    close = difflib.get_close_matches(verb, list(VERBS) + ["version"], n=3, cutoff=0.6)
    out = "error: unknown command \"%s\" for \"kubectl wand\"; see 'kubectl wand --help'\n" % (
        verb.encode("unicode_escape").decode("ascii"))
    if close:  # after the one error line, as kubectl prints it
        out += "\nDid you mean this?\n" + "".join("\t%s\n" % c for c in close)
    return out


def print_version(rest) -> int:
    output = None
    for i, word in enumerate(rest):
        if word in ("-o", "--output") and i + 1 < len(rest):
            output = rest[i + 1]
        elif word.startswith(("--output=", "-o=")) or word.startswith("-o") and len(word) > 2:
            output = word.split("=", 1)[1] if "=" in word else word[2:]
    if output not in (None, "json", "yaml"):
        sys.stderr.write("error: --output must be json or yaml for version\n")
        return errors.USAGE
    if output:
        from . import printers
        info = {"version": __version__, "python": sys.version.split()[0]}
        sys.stdout.write(printers.dump(info, output))
    else:
        sys.stdout.write("kubectl-wand %s\n" % __version__)
    return errors.OK


def parse(argv):
    """(verb, namespace) for a command line; SystemExit for --help/--version/usage errors (already printed)."""
    code = []
    if "--" in argv:  # everything after -- is code (exec-py), even when flags come between target and --
        cut = argv.index("--")
        argv, code = argv[:cut], argv[cut + 1:]
    verb, rest = find_verb(argv)
    if verb is None:
        if "--version" in rest:
            sys.stdout.write("kubectl-wand %s\n" % __version__)
            raise SystemExit(errors.OK)
        if rest and any(w in ("-h", "--help") for w in rest):
            sys.stdout.write(top_help())
            raise SystemExit(errors.OK)
        sys.stderr.write(top_help())
        raise SystemExit(errors.USAGE)
    if verb == "version":  # kubectl plugins answer `version` (kubectl version's own -o json too)
        raise SystemExit(print_version(rest))
    if verb not in VERBS:
        sys.stderr.write(unknown_verb(verb))
        raise SystemExit(errors.USAGE)
    if "--version" in rest:
        sys.stdout.write("kubectl-wand %s\n" % __version__)
        raise SystemExit(errors.OK)
    ns = None if code or "--" in argv else plain_namespace(verb, rest)
    if ns is None:
        import argparse
        parser = verb_parser_for(verb)
        ns = parser.parse_intermixed_args(rest)
        if code:
            if verb != "exec-py":
                parser.error("only exec-py takes code after --")
            ns.code_words = list(ns.code_words) + code
        try:
            ns.request_timeout_s = parse_duration(ns.request_timeout) or 30.0
        except argparse.ArgumentTypeError as exc:
            parser.error("argument --request-timeout: %s" % exc)
    return verb, ns


class Namespace:
    """The parsed command line, as argparse's Namespace (attributes by dest)."""

    def __init__(self, **values):
        self.__dict__.update(values)


def plain_namespace(verb, words):
    """The namespace argparse would give for a command line of positional words only, one for each of the verb's
    positional arguments (``stack pid/N``, ``get processes``), every flag at its default; None for any other
    (argparse then parses it). Importing argparse was ~5 ms of a local `stack pid/N`'s ~40."""
    flags = verb_module(verb).FLAGS + KUBE_FLAGS
    positionals = [f for f in flags if f.positional]
    if len(words) != len(positionals) or any(w.startswith("-") and w != "-" for w in words):
        return None
    values = {}
    for flag, word in zip(positionals, words):
        if flag.nargs not in (None, "?") or flag.choices is not None and word not in flag.choices:
            return None
        values[flag.dest] = word
    for flag in flags:
        if flag.positional:
            continue
        if flag.negatable:
            values[flag.dest] = None
        elif flag.value is None:
            values[flag.dest] = False
        elif flag.many:
            values[flag.dest] = list(flag.default or [])
        elif isinstance(flag.default, str) and flag.value is not str:  # as argparse: a string default is converted
            values[flag.dest] = parse_duration(flag.default) if flag.value == DURATION else flag.value(flag.default)
        else:
            values[flag.dest] = flag.default
    values["request_timeout_s"] = parse_duration(values["request_timeout"]) or 30.0
    return Namespace(**values)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        verb, ns = parse(argv)
    except SystemExit as exc:  # --help / --version exit 0; usage errors were reported by Parser.error
        return int(exc.code or 0)
    received = []

    def terminate(signum, _frame):
        received.append(signum)
        raise Terminated(signum)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # `nohup kubectl wand attach ...` keeps ignoring SIGHUP
            signal.signal(signum, terminate)
    code = ended(verb, ns)
    return 128 + received[0] if received else code


def ended(verb, ns) -> int:
    """The verb's exit code, its error reported; a signal that ended it is the caller's to add."""
    try:
        return run(verb, ns)
    except WandError as exc:
        from .terminal import text  # one line: a name the target chose may not drive the terminal or forge lines
        sys.stderr.write("error: %s\n" % text(exc.message))
        return exc.code
    except Terminated as exc:
        interrupted(exc)
        return 128 + exc.signum
    except KeyboardInterrupt as exc:
        interrupted(exc)
        return errors.INTERRUPTED
    except BrokenPipeError:
        # Only a reader that went away (`kubectl wand get processes | head -1`) is benign; silence the
        # interpreter's own flush of the dead stdout at exit.
        if sys.stdout.closed or not stdout_alive():
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            return errors.OK
        raise


def interrupted(exc):
    """What an interrupted verb left behind (transport.kubectl.last_word), on stderr."""
    note = getattr(exc, "wand_note", None)
    if note:
        try:
            sys.stderr.write("%s\n" % note)
        except (OSError, ValueError):
            pass


def entry():
    """The program: ``main()``, then out without the interpreter's teardown.

    Once the verb returned, its output is written and its kubectl children are closed; what is left is
    clearing ~200 modules and collecting garbage: measured 16 ms of a 0.24 s `stack`, against 3 ms for
    running the exit handlers (an early agent call's cancel, local private files), flushing, and
    ``os._exit``. A live non-daemon thread (none is expected) gets the ordinary exit, which waits for it."""
    code = main()
    import atexit
    threading = sys.modules.get("threading")  # never imported: no thread was started (stack pid/N)
    if threading is not None and any(t.is_alive() and not t.daemon for t in threading.enumerate()
                                     if t is not threading.main_thread()):
        sys.exit(code)
    try:
        atexit._run_exitfuncs()  # every handler runs; one that raises is reported and the rest still run
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):  # the reader went away (| head): benign, as in main()
                pass
    except Terminated as exc:
        code = 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C in the last moment
        code = errors.INTERRUPTED
    os._exit(code)


def stdout_alive() -> bool:
    try:
        sys.stdout.flush()
        return True
    except (BrokenPipeError, ValueError):
        return False


def run(verb, ns) -> int:
    from .streams import Streams
    opts = verb_module(verb).Options()
    opts.complete(ns, Streams.system())
    opts.validate()
    return opts.run()


if __name__ == "__main__":
    entry()
