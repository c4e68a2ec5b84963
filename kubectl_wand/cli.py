"""Command line: the only place that knows argparse. Verbs live in kubectl_wand.commands."""
from __future__ import annotations

import argparse
import os
import re
import sys

from . import __version__, errors
from .errors import WandError

DESCRIPTION = """Attach a debugger to a live Python 3.14 process in a Kubernetes pod: no code change, no restart, no sidecar.

kubectl wand finds the pods behind a workload, lists their Python processes, injects a debug server with
CPython 3.14's sys.remote_exec (PEP 768), forwards its port to 127.0.0.1 and tells your editor how to connect.
Targets: POD, pod/NAME, svc/NAME, deploy/NAME, sts/NAME, ds/NAME, rs/NAME, job/NAME, ksvc/NAME, -l SELECTOR,
or pid/N for a Python process on this machine."""

EXAMPLES = {
    None: """Examples:
  # List the Python processes behind a Deployment
  kubectl wand get processes deploy/web

  # Start a debugger in the app process of a pod and forward it to 127.0.0.1:5679
  kubectl wand attach deploy/web

  # Run code inside the live process and see its output
  kubectl wand exec-py svc/web -- 'import threading; threading.active_count()'

  # Explain what would stop an attach
  kubectl wand check pod/web-6d8f7-abcde""",
    "get": """Examples:
  # Python processes on this machine
  kubectl wand get processes

  # In every pod of a Deployment, with CWD and EXE
  kubectl wand get processes deploy/web -o wide

  # Across all namespaces, by label
  kubectl wand get processes -A -l app=web""",
    "attach": """Examples:
  # Attach to the app process behind a Service; Ctrl-C stops forwarding
  kubectl wand attach svc/web

  # A chosen worker of a gunicorn pod, on another local port
  kubectl wand attach pod/gunicorn-abc --pid 12 --local-port 15679

  # A local process (Python 3.14) on this machine
  kubectl wand attach pid/4242""",
    "exec-py": """Examples:
  # Evaluate an expression in the live process (its repr is printed)
  kubectl wand exec-py deploy/web -- 'import sys; sys.modules["app"].CACHE_SIZE'

  # Run a file, or code from stdin
  kubectl wand exec-py pid/4242 -f snippet.py
  echo 'print(42)' | kubectl wand exec-py pid/4242 -f -""",
    "check": """Examples:
  # Why can't I attach?
  kubectl wand check deploy/web
  kubectl wand check pid/4242 -o json""",
}

EXIT_HELP = "Exit codes: " + ", ".join("%d %s" % kv for kv in sorted(errors.EXIT_CODES.items())) + "."


class Formatter(argparse.RawDescriptionHelpFormatter):
    """kubectl-style help: Usage, Examples, Options."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=110)

    def add_usage(self, usage, actions, groups, prefix=None):
        # prefix '' is argparse computing a subcommand's prog: leave that alone
        super().add_usage(usage, actions, groups, prefix="Usage:\n  " if prefix is None else prefix)


class Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr naming the cause and where to read more, exit code 2."""

    def error(self, message):
        sys.stderr.write("error: %s; see '%s --help'\n" % (message, self.prog))
        raise SystemExit(errors.USAGE)


def parse_duration(text: str) -> float:
    """kubectl durations: 0 (no limit), 30, 30s, 1m, 1h, 500ms."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError("bad duration %r (use e.g. 30s, 1m)" % text)
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def add_kube_flags(p):
    """Every standard kubectl global flag (cli-runtime ConfigFlags), honoured in API reads and kubectl calls."""
    g = p.add_argument_group("Kubernetes options (as kubectl)")
    for flag in ("--kubeconfig", "--context", "--cluster", "--user", "--token", "--as", "--as-uid",
                 "--certificate-authority", "--client-certificate", "--client-key", "--tls-server-name",
                 "--cache-dir"):
        g.add_argument(flag, metavar=flag[2:].upper().replace("-", "_"))
    g.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    g.add_argument("-s", "--server", help="API server address")
    g.add_argument("--as-group", action="append", default=[], metavar="GROUP")
    g.add_argument("--insecure-skip-tls-verify", action="store_true")
    g.add_argument("--disable-compression", action="store_true")
    g.add_argument("--request-timeout", default="0", type=str,
                   help="timeout for one API call or kubectl call, e.g. 30s (0: the tool's defaults)")
    g.add_argument("-v", "--v", dest="verbosity", type=int, default=0, metavar="LEVEL",
                   help="log level; 6+ prints the kubectl commands run")


def add_target_flags(p, many=False):
    p.add_argument("-l", "--selector", help="label selector for the pods (kubectl's -l)")
    p.add_argument("-c", "--container", help="container (default: annotation kubectl.kubernetes.io/"
                   "default-container, else the first container that runs Python)")
    if not many:
        p.add_argument("--pod", help="which pod when the target has several")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress spinner or notes on stderr")


def add_output(p, choices):
    p.add_argument("-o", "--output", choices=choices, help="output format")


USAGES = {
    "get": "kubectl wand get processes [TARGET] [options]",
    "attach": "kubectl wand attach TARGET [options]",
    "exec-py": "kubectl wand exec-py TARGET [options] -- CODE\n  kubectl wand exec-py TARGET [options] -f FILE",
    "check": "kubectl wand check TARGET [options]",
}


def kubectl_titles(parser):
    """Section titles as kubectl prints them."""
    parser._optionals.title = "Options"
    parser._positionals.title = "Arguments"
    return parser


def add_verb(sub, name, summary, description):
    """A verb that acts on one process: TARGET and --pid, kubectl-style help."""
    verb = sub.add_parser(name, help=summary, formatter_class=Formatter, epilog=EXAMPLES[name],
                          description=description, usage=USAGES[name])
    verb.add_argument("target", help="POD, TYPE/NAME or pid/N")
    return kubectl_titles(verb)


def add_pid(verb):
    verb.add_argument("--pid", type=int, help="the process in the pod (default: the app process)")


def build_parser():
    parser = Parser(
        prog="kubectl wand", usage="kubectl wand COMMAND [options]", formatter_class=Formatter, description=DESCRIPTION,
        epilog=EXAMPLES[None] + "\n\n" + EXIT_HELP + "\nUse \"kubectl wand <command> --help\" for more about a command.")
    kubectl_titles(parser)
    parser.add_argument("--version", action="version", version="kubectl-wand " + __version__)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", title="Commands", parser_class=Parser)

    get = sub.add_parser("get", help="list Python processes (get processes [TARGET])", formatter_class=Formatter,
                         usage=USAGES["get"],
                         description="List Python processes: PID, PPID, USER, PYTHON, CPU%, RSS, AGE, ROLE, "
                                     "ATTACHABLE, COMMAND.", epilog=EXAMPLES["get"])
    kubectl_titles(get)
    get.add_argument("resource", choices=["processes", "process", "procs", "ps"], metavar="processes")
    get.add_argument("target", nargs="?", help="POD, TYPE/NAME or pid/N (default: this machine)")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="pods in every namespace")
    get.add_argument("--no-headers", action="store_true")
    add_output(get, ["wide", "json", "yaml", "name"])
    add_target_flags(get, many=True)
    add_kube_flags(get)

    attach = add_verb(sub, "attach", "start a debugger in a live process and forward it",
                      "Start debugpy inside the live process (127.0.0.1 in the pod), forward its port to 127.0.0.1 "
                      "here and print the editor configuration.")
    add_pid(attach)
    attach.add_argument("--port", type=int, default=5679, help="debug server port in the target (default 5679)")
    attach.add_argument("--local-port", type=int, help="local port of the forward (default: --port, or a free one)")
    attach.add_argument("--no-forward", action="store_true", help="inject and exit; forward yourself")
    attach.add_argument("--address", default="127.0.0.1",
                        help="address the debug server binds in the target (default 127.0.0.1; anything else "
                             "exposes it to the network and is warned about)")
    attach.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the injection (default 15)")
    add_output(attach, ["json", "yaml"])
    add_target_flags(attach)
    add_kube_flags(attach)

    exe = add_verb(sub, "exec-py", "run Python code inside a live process",
                   "Run CODE inside the live process and print its stdout, stderr, the repr of a final expression, "
                   "and a traceback if it raised (exit 1).")
    exe.add_argument("code", nargs="*", help="the code, after --")
    exe.add_argument("-f", "--filename", help="read the code from FILE (- for stdin)")
    add_pid(exe)
    exe.add_argument("--timeout", type=float, default=10.0, help="seconds for injection and run (default 10)")
    add_output(exe, ["json", "yaml"])
    add_target_flags(exe)
    add_kube_flags(exe)

    chk = add_verb(sub, "check", "explain whether (and why not) a process can be attached",
                   "One row per condition an injection needs, with ok/warn/fail and the fix. Exit 1 if any row fails.")
    add_pid(chk)
    chk.add_argument("--no-headers", action="store_true")
    add_output(chk, ["wide", "json", "yaml"])
    add_target_flags(chk)
    add_kube_flags(chk)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = []
    if "--" in argv:  # everything after -- is code (exec-py), even when flags come between target and --
        cut = argv.index("--")
        argv, code = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version exit 0; usage errors were reported by Parser.error
        return int(exc.code or 0)
    if code:
        if args.verb != "exec-py":
            sys.stderr.write("error: only exec-py takes code after --; see 'kubectl wand --help'\n")
            return errors.USAGE
        args.code = list(args.code) + code
    if not args.verb:
        parser.print_help()
        return errors.USAGE
    args.request_timeout_s = parse_duration(args.request_timeout) or 30.0
    try:
        return run(args)
    except WandError as exc:
        sys.stderr.write("error: %s\n" % exc.message)
        return exc.code
    except KeyboardInterrupt:
        return 130
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


def stdout_alive() -> bool:
    try:
        sys.stdout.flush()
        return True
    except (BrokenPipeError, ValueError):
        return False


def run(args) -> int:
    out, err = sys.stdout, sys.stderr
    if args.verb == "get":
        from .commands import get_processes as verb
        opts = verb.Options(args)
    elif args.verb == "attach":
        from .commands import attach as verb
        opts = verb.Options(args)
    elif args.verb == "exec-py":
        from .commands import exec_py as verb
        opts = verb.Options(args)
        opts.complete(sys.stdin)
    else:
        from .commands import check as verb
        opts = verb.Options(args)
    opts.validate()
    return opts.run(out, err)


if __name__ == "__main__":
    sys.exit(main())
