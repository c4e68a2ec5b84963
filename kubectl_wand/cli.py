"""Command line: the only place that knows argparse. Verbs live in kubectl_wand.commands.

kubectl (cobra) accepts flags anywhere: before the verb, between verb words, before or after the target,
``--flag=value`` and ``--flag value``; ``--`` ends flags. kubectl refuses flags before a plugin's name, so
``kubectl wand -n ns get processes`` is exactly where its users put them. So each verb has one parser holding
kubectl's global flags and its own, the verb word is found wherever it stands (``split_verb``: it knows which
flags take a value), and the rest is parsed intermixed. Completion reads the same parsers.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys

from . import __version__, errors
from .errors import WandError
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
}
RESOURCES = ("processes", "process", "procs", "ps")


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


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so forwards and agents are closed on the way out."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def parse_duration(text: str) -> float:
    """kubectl durations: 0 (no limit), 30, 30s, 1m, 1h, 500ms, 1m30s; also nan/inf, refused by validate()."""
    text = text.strip().lower()
    if text in ("nan", "inf", "+inf", "-inf", "infinity"):
        return float(text)
    m = re.fullmatch(r"-?(?:\d+(?:\.\d+)?(?:ms|s|m|h)?)+", text)
    if not m:
        raise argparse.ArgumentTypeError("bad duration %r (use e.g. 30s, 1m)" % text)
    total, sign = 0.0, -1.0 if text.startswith("-") else 1.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    return sign * total


def add_kube_flags(p):
    """Every standard kubectl global flag (cli-runtime ConfigFlags), honoured in API reads and kubectl calls."""
    g = p.add_argument_group("Kubernetes options (as kubectl)")
    for flag in ("--kubeconfig", "--context", "--cluster", "--user", "--token", "--as-uid",
                 "--certificate-authority", "--client-certificate", "--client-key", "--tls-server-name",
                 "--cache-dir"):
        g.add_argument(flag, metavar=flag[2:].upper().replace("-", "_"))
    g.add_argument("--as", dest="as_user", metavar="USER", help="impersonate USER")
    g.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    g.add_argument("-s", "--server", help="API server address")
    g.add_argument("--as-group", action="append", default=[], metavar="GROUP")
    g.add_argument("--insecure-skip-tls-verify", action="store_true")
    g.add_argument("--disable-compression", action="store_true")
    g.add_argument("--request-timeout", default="0", type=str,
                   help="timeout for one API call or kubectl call, e.g. 30s (0: the tool's defaults)")
    g.add_argument("-v", "--v", dest="verbosity", type=int, default=0, metavar="LEVEL",
                   help="log level; 6+ prints the kubectl commands run")


def add_target_flags(p, one_pod=True, pid=True):
    p.add_argument("-l", "--selector", help="label selector for the pods (kubectl's -l)")
    p.add_argument("-c", "--container", help="container (default: annotation kubectl.kubernetes.io/"
                   "default-container, else the first container that runs Python)")
    if one_pod:
        p.add_argument("--pod", help="which pod when the target has several")
    if pid:
        p.add_argument("--pid", type=int, help="the process in the pod (default: the app process)")
    p.add_argument("--ephemeral", action="store_true",
                   help="work from an ephemeral debug container added to the pod (SYS_PTRACE there only, no "
                        "restart): for pods kubectl exec cannot debug (another uid, no capabilities, read-only "
                        "filesystem, no python3 on PATH); it stays listed in the pod spec")
    p.add_argument("--image", help="image of the --ephemeral debug container (default: the app container's own)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress spinner or notes on stderr")


def verb_parser(name, description):
    _module, _summary, usage = VERBS[name]
    p = Parser(prog="kubectl wand %s" % name, usage=usage, formatter_class=Formatter, description=description,
               epilog=EXAMPLES[name] + "\n\n" + EXIT_HELP)
    p._optionals.title = "Options"
    p._positionals.title = "Arguments"
    return p


def build_get():
    p = verb_parser("get", "List Python processes: PID, PPID, USER, PYTHON, CPU%, RSS, AGE, ROLE, ATTACHABLE, COMMAND.")
    p.add_argument("resource", choices=RESOURCES, metavar="processes")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="pods in every namespace")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml", "name"], help="output format")
    add_target_flags(p, one_pod=False, pid=False)
    return p


def build_attach():
    p = verb_parser("attach", "Start debugpy inside the live process (127.0.0.1 in the pod), forward its port to "
                              "127.0.0.1 here and print the editor configuration.")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N")
    p.add_argument("--port", type=int, help="debug server port in the target (default 5679)")
    p.add_argument("--local-port", type=int, help="local port of the forward (default: --port, or a free one)")
    p.add_argument("--no-forward", action="store_true", help="inject and exit; forward yourself")
    p.add_argument("--address", default="127.0.0.1",
                   help="address the debug server binds in the target (default 127.0.0.1; anything else "
                        "exposes it to the network and is warned about)")
    p.add_argument("--timeout", type=parse_duration, default=15.0,
                   help="how long to wait for the injection, e.g. 15 or 30s (default 15s)")
    p.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None,
                   help="when the pod goes away, move to a Running replacement of the workload on the same local "
                        "port (default: on for workloads and -l, off for pod/NAME and pid/N)")
    p.add_argument("--follow-timeout", type=parse_duration, default=300.0,
                   help="how long to wait for a replacement pod, e.g. 5m (default 5m)")
    p.add_argument("--all-pods", action="store_true",
                   help="attach to every Running pod of the target, each on its own local port, and to pods that "
                        "appear later")
    p.add_argument("--all-workers", action="store_true",
                   help="attach to every worker of a pre-fork master (gunicorn), each on its own port")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")
    add_target_flags(p)
    return p


def build_exec_py():
    p = verb_parser("exec-py", "Run CODE inside the live process and print its stdout, stderr, the repr of a final "
                               "expression, and a traceback if it raised (exit 1).")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N")
    p.add_argument("code", nargs="*", help="the code, after --")
    p.add_argument("-f", "--filename", help="read the code from FILE (- for stdin)")
    p.add_argument("--timeout", type=parse_duration, default=10.0,
                   help="how long injection and run may take, e.g. 10 or 1m (default 10s)")
    p.add_argument("--max-output", type=int, default=1 << 20, metavar="BYTES",
                   help="bytes of stdout and of stderr brought back (default 1048576; 0: no limit)")
    p.add_argument("--all-pods", action="store_true", help="run in every Running pod of the target at once")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")
    add_target_flags(p)
    return p


def build_check():
    p = verb_parser("check", "One row per condition an injection needs, with ok/warn/fail and the fix. Exit 1 if any "
                             "row fails.")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml"], help="output format")
    add_target_flags(p)
    return p


def build_stack():
    p = verb_parser("stack", "Every thread of every Python process (or --pid) with its name, state and frames, "
                             "innermost first; with --async the asyncio task tree. Read from the process's "
                             "memory: it runs no code there and never stops it.")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)")
    p.add_argument("--async", dest="asyncio", action="store_true", help="also the asyncio task tree")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="output format")
    add_target_flags(p)
    return p


def build_profile():
    p = verb_parser("profile", "Sample the stacks of every Python process of the target (every pod at once) and "
                               "merge them. Prints the hottest functions, or writes speedscope JSON, collapsed "
                               "stacks or an SVG flame graph. Ctrl-C ends early and keeps what was sampled.")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)")
    p.add_argument("--duration", type=parse_duration, default=10.0, help="how long to sample, e.g. 30s (default 10s)")
    p.add_argument("--rate", type=float, default=100.0, help="samples per second (default 100)")
    p.add_argument("--format", choices=["speedscope", "collapsed", "svg", "top"],
                   help="default: top on the terminal; from --output's ending otherwise (.json speedscope, .svg "
                        "svg, else collapsed)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the profile to FILE (- for stdout)")
    p.add_argument("--idle", action="store_true", help="count threads sleeping in a system call too")
    p.add_argument("--gil", action="store_true", help="count only the thread holding the GIL")
    p.add_argument("--per-pod", action="store_true", help="keep each pod as a root frame")
    add_target_flags(p)
    return p


def build_trace():
    p = verb_parser("trace", "A logpoint without stopping the process: every time code passes FILE:LINE (matched by "
                             "path suffix) in the app process of every Running pod, print the time, pod, pid, thread "
                             "and EXPR=repr for each EXPR. Rate-limited inside the process; removed for certain on "
                             "Ctrl-C, --count, --duration, or when this command dies.")
    p.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N")
    p.add_argument("location", nargs="?", metavar="FILE:LINE", help="e.g. web.py:17 or app/web.py:17")
    p.add_argument("exprs", nargs="*", metavar="EXPR", help="Python expressions evaluated at the line")
    p.add_argument("--condition", metavar="EXPR", help="report only hits where EXPR is true")
    p.add_argument("--count", type=int, help="stop after N hits over all pods")
    p.add_argument("--duration", type=parse_duration, default=60.0, help="stop after this long (default 60s)")
    p.add_argument("--max-per-second", type=float, default=20.0,
                   help="hits reported per second per process; more are dropped and counted (default 20)")
    p.add_argument("--snapshot", action="store_true", help="the locals and the stack of the first hit per pod, then stop")
    p.add_argument("-o", "--output", choices=["json"], help="one JSON object per hit")
    add_target_flags(p)
    return p


BUILDERS = {"get": build_get, "attach": build_attach, "exec-py": build_exec_py, "check": build_check,
            "stack": build_stack, "profile": build_profile, "trace": build_trace}


def verb_parser_for(name):
    """One verb's parser, kubectl's global flags included."""
    p = BUILDERS[name]()
    add_kube_flags(p)
    return p


def verb_parsers():
    """Every verb's parser (completion reads them all)."""
    return {name: verb_parser_for(name) for name in BUILDERS}


# Option strings that take a value, in any verb: what split_verb steps over to find the verb word. Written out
# so that a command builds only its own verb's parser (all seven cost ~15 ms of a 0.3 s `stack`, before its
# first kubectl call); tests/test_units.py checks it against value_flags(verb_parsers()).
TAKES_VALUE = frozenset((
    "--address", "--as", "--as-group", "--as-uid", "--cache-dir", "--certificate-authority", "--client-certificate",
    "--client-key", "--cluster", "--condition", "--container", "--context", "--count", "--duration", "--filename",
    "--follow-timeout", "--format", "--image", "--kubeconfig", "--local-port", "--max-output", "--max-per-second",
    "--namespace", "--output", "--pid", "--pod", "--port", "--rate", "--request-timeout", "--selector", "--server",
    "--timeout", "--tls-server-name", "--token", "--user", "--v", "-c", "-f", "-l", "-n", "-o", "-s", "-v"))


def value_flags(parsers) -> set:
    """Option strings that take a value, in any verb: what split_verb must step over."""
    found = {"--kubeconfig"}
    for p in parsers.values():
        for option, action in p._option_string_actions.items():
            if action.nargs != 0:
                found.add(option)
    return found


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


def top_help() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["Usage:\n  kubectl wand COMMAND [options]\n", DESCRIPTION, "\nCommands:"]
    lines += ["  %-*s  %s" % (width, name, summary) for name, (_m, summary, _u) in VERBS.items()]
    lines += ["", EXAMPLES[None], "", "Flags go anywhere on the line, as with kubectl; -- ends them (exec-py code).",
              EXIT_HELP, 'Use "kubectl wand <command> --help" for more about a command.']
    return "\n".join(lines) + "\n"


def parse(argv):
    """(verb, namespace) for a command line; SystemExit for --help/--version/usage errors (already printed)."""
    code = []
    if "--" in argv:  # everything after -- is code (exec-py), even when flags come between target and --
        cut = argv.index("--")
        argv, code = argv[:cut], argv[cut + 1:]
    verb, rest = split_verb(argv, TAKES_VALUE)
    if verb is None:
        if "--version" in rest:
            sys.stdout.write("kubectl-wand %s\n" % __version__)
            raise SystemExit(errors.OK)
        if rest and any(w in ("-h", "--help") for w in rest):
            sys.stdout.write(top_help())
            raise SystemExit(errors.OK)
        sys.stderr.write(top_help())
        raise SystemExit(errors.USAGE)
    if verb not in BUILDERS:
        sys.stderr.write("error: unknown command %r for \"kubectl wand\"; see 'kubectl wand --help'\n" % verb)
        raise SystemExit(errors.USAGE)
    if "--version" in rest:
        sys.stdout.write("kubectl-wand %s\n" % __version__)
        raise SystemExit(errors.OK)
    parser = verb_parser_for(verb)
    ns = parser.parse_intermixed_args(rest)
    if code:
        if verb != "exec-py":
            parser.error("only exec-py takes code after --")
        ns.code = list(ns.code) + code
    try:
        ns.request_timeout_s = parse_duration(ns.request_timeout) or 30.0
    except argparse.ArgumentTypeError as exc:
        parser.error("argument --request-timeout: %s" % exc)
    return verb, ns


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        verb, ns = parse(argv)
    except SystemExit as exc:  # --help / --version exit 0; usage errors were reported by Parser.error
        return int(exc.code or 0)
    def terminate(signum, _frame):
        raise Terminated(signum)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminate)
    try:
        return run(verb, ns)
    except WandError as exc:
        from .terminal import text  # one line: a name the target chose may not drive the terminal or forge lines
        sys.stderr.write("error: %s\n" % text(exc.message))
        return exc.code
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    except Terminated as exc:
        return 128 + exc.signum
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


def entry():
    """The program: ``main()``, then out without the interpreter's teardown.

    Once the verb returned, its output is written and its kubectl children are closed; what is left is
    clearing ~200 modules and collecting garbage: measured 16 ms of a 0.24 s `stack`, against 3 ms for
    running the exit handlers (an early agent call's cancel, local private files), flushing, and
    ``os._exit``. A live non-daemon thread (none is expected) gets the ordinary exit, which waits for it."""
    code = main()
    import atexit
    import threading
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    try:
        atexit._run_exitfuncs()  # every handler runs; one that raises is reported and the rest still run
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):  # the reader went away (| head): benign, as in main()
                pass
    except KeyboardInterrupt:  # Ctrl-C in the last moment
        code = errors.INTERRUPTED
    except Terminated as exc:
        code = 128 + exc.signum
    os._exit(code)


def stdout_alive() -> bool:
    try:
        sys.stdout.flush()
        return True
    except (BrokenPipeError, ValueError):
        return False


def run(verb, ns) -> int:
    from .streams import Streams
    module = importlib.import_module("kubectl_wand.commands." + VERBS[verb][0])
    opts = module.Options()
    opts.complete(ns, Streams.system())
    opts.validate()
    return opts.run()


if __name__ == "__main__":
    entry()
