"""The entry's fast path: a pod named alone in one of a few plain forms has its early call (transport/early.py)
spawned before the command line is parsed, before argparse and the verb's modules are imported.

Measured on this 2-core machine (an audit hook's timeline): the normal path reached the early call's spawn
~30-50 ms after the interpreter ran (cli's argparse, the verb's module with its printers, the transport's
modules); from here it comes ~16 ms after it, having imported only what builds kubectl's argv and starts it
(kube/config.py, the agent's loader line, pipes.py with subprocess).

It recognises only these, with -n/--namespace, -c/--container, -q/--quiet anywhere before ``--``:

    stack POD            get processes POD        check POD        pdb POD
    exec-py POD -- CODE  exec-py -it POD

(POD: NAME, pod/NAME, po/NAME or pods/NAME), and sends the request the verb's own ``early_request`` makes with
its flags' defaults. Anything else (another flag, pid/N, a workload, --help) is left to the normal path,
which starts its own call. The normal path claims this call (``take``) only when the kubectl command line and
the request it would have made are exactly these; otherwise this one is dropped (a held request has done
nothing; a listing or a stack read only reads) and the normal path's own call is the only one that acts.
One not claimed by the end (a usage error, a verb that never lists) is dropped on exit.
"""
from __future__ import annotations

import os

EXEC_PY_TIMEOUT = 10.0      # exec-py's and pdb's --timeout default (their FLAGS)
EXEC_PY_MAX_OUTPUT = 1 << 20  # exec-py's --max-output default (commands/exec_py.py MAX_OUTPUT)
MAX_CODE = 4 << 20          # exec-py's limit on code after -- (commands/exec_py.py MAX_CODE): over it, the normal path
VALUE_FLAGS = {"-n": "namespace", "--namespace": "namespace", "-c": "container", "--container": "container"}
SWITCHES = {"-q": "quiet", "--quiet": "quiet", "-i": "i", "--stdin": "i", "-t": "t", "--tty": "t", "-it": "it",
            "-ti": "it"}
POD_PREFIXES = ("pod/", "po/", "pods/")
GET_WORDS = ("processes", "process", "procs", "ps")  # get_processes' resource choices

SESSION_FIRST_WAIT = 15.0  # seconds at most the command line's start waits for a one-exec session's first output
STARTED = None  # the call started here and not yet claimed (Started)
SIGNALLED = []  # SIGTERM/SIGHUP received before cli.main installed its own handlers (hold_signals)
_CLIENTS = {}   # op -> the session socket name sent in a started terminal session's request


class Form:
    """A recognised command line: what the early call needs."""

    __slots__ = ("verb", "pod", "namespace", "container", "code", "interactive")

    def __init__(self, verb, pod, namespace=None, container=None, code=None, interactive=False):
        self.verb, self.pod, self.namespace, self.container = verb, pod, namespace, container
        self.code, self.interactive = code, interactive


def recognise(words):
    """The Form of ``words`` (the command line after the program's name), or None for anything else."""
    code = None
    if "--" in words:
        cut = words.index("--")
        words, code = words[:cut], words[cut + 1:]
    given, plain = {}, []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            if name in VALUE_FLAGS:
                if not eq:
                    if i + 1 >= len(words):
                        return None
                    i += 1
                    value = words[i]
                if not value or value.startswith("-") or VALUE_FLAGS[name] in given:
                    return None  # empty, a flag where argparse wants a value, or repeated: the parser decides
                given[VALUE_FLAGS[name]] = value
            elif word in SWITCHES:
                given[SWITCHES[word]] = True
            else:
                return None
        else:
            plain.append(word)
        i += 1
    if plain[:1] == ["get"]:
        if len(plain) != 3 or plain[1] not in GET_WORDS:
            return None
        verb, target = "get", plain[2]
    elif len(plain) == 2 and plain[0] in ("stack", "check", "pdb", "exec-py"):
        verb, target = plain
    else:
        return None
    pod = pod_name(target)
    interactive = bool(given.get("it") or given.get("i") and given.get("t"))
    if pod is None or (given.get("i") or given.get("t") or given.get("it")) and not (verb == "exec-py" and interactive):
        return None
    if verb == "exec-py" and not interactive:
        if not code:
            return None
        text = " ".join(code)
        try:
            if not text.strip() or len(text.encode("utf-8")) > MAX_CODE:
                return None
        except UnicodeEncodeError:
            return None
        code = text
    elif code is not None:
        return None  # code where the verb takes none: the parser's usage error
    return Form(verb, pod, given.get("namespace"), given.get("container"), code, interactive)


def pod_name(target):
    """The pod a target names (targets.parse's kind "pod", without /PID), or None."""
    for prefix in POD_PREFIXES:
        if target[:len(prefix)].lower() == prefix:
            target = target[len(prefix):]
            break
    else:
        if "/" in target:
            return None
    return target if target and "/" not in target and not target.startswith("-") else None


def request_for(form):
    """The request the verb's ``early_request`` makes for this form (its flags at their defaults)."""
    if form.verb == "stack":
        return {"op": "stack", "pid": None, "async": False}
    if form.verb == "get":
        return {"op": "list", "cpu": True}
    if form.verb == "check":
        return {"op": "check", "pid": None, "hold": True}
    if form.verb == "pdb":
        return {"op": "pdb", "pid": None, "timeout": EXEC_PY_TIMEOUT, "client": reserve_client("pdb"), "hold": True}
    if form.interactive:
        return {"op": "repl", "pid": None, "timeout": EXEC_PY_TIMEOUT, "code_timeout": EXEC_PY_TIMEOUT,
                "max_output": EXEC_PY_MAX_OUTPUT, "client": reserve_client("repl"), "hold": True}
    return {"op": "exec", "pid": None, "code": form.code, "timeout": EXEC_PY_TIMEOUT,
            "max_output": EXEC_PY_MAX_OUTPUT, "hold": True}


def new_client_name(op: str) -> str:
    """A fresh name for a session's socket (an abstract Unix socket in the target's network namespace)."""
    return "kubectl-wand-%s-%s" % (op, os.urandom(16).hex())


def reserve_client(op):
    _CLIENTS[op] = _CLIENTS.get(op) or new_client_name(op)
    return _CLIENTS[op]


def reserved_client(op):
    """The socket name a started session's request already carries (commands/session.py takes it), or None."""
    return _CLIENTS.get(op)


def agent_exec_args(pod, container, python):
    """kubectl's arguments (after its flags) of an early call, without its last one (the probe marker)."""
    from .transport.bundle import AGENT_ARGS
    return ["exec", "-i", pod] + (["-c", container] if container else []) + ["--", python] + AGENT_ARGS


class Started:
    """The processes started for a Form, until the normal path claims them or they are dropped."""

    python = "python3"  # transport/early.py's EarlyCall.python

    def __init__(self, argv, request):
        self.argv, self.request = argv, request
        self.marker = self.proc = self.launcher = None

    def cancel(self):
        """Drop it: the agent's kubectl killed (a held agent returns without touching anything), the launcher
        ended with SIGTERM (kubectl puts the terminal back as it was), SIGKILL if it lingers."""
        from . import pipes
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            pipes.close(self.proc)
        if self.launcher is not None:
            pipes.close(self.launcher)


def start(words):
    """Spawn the early call for ``words`` when it is one of the forms above; never raises (the normal path then
    does the work and reports what went wrong)."""
    global STARTED
    form = recognise(words)
    if form is None:
        return None
    try:
        from .kube.config import KubeFlags
        flags = KubeFlags(namespace=form.namespace)
        request = request_for(form)
        namespace = flags.namespace()
        started = Started(flags.kubectl_in(namespace, *agent_exec_args(form.pod, form.container, Started.python)),
                          request)
        from .agent.processes import PROBE_MARK
        started.marker = PROBE_MARK + os.urandom(8).hex()  # transport/kubectl.py's probe_marker
        STARTED = started
        import atexit
        atexit.register(drop)
        kubectl_in = lambda *args: flags.kubectl_in(namespace, *args)  # noqa: E731
        from .transport import sessionexec
        if sessionexec.wanted(request):  # the agent and the terminal's launcher in one kubectl exec -it
            hold_signals()
            session = sessionexec.Session(flags, kubectl_in, form.pod, form.container, Started.python,
                                          request["client"], request, started.marker)
            started.proc, started.launcher = session.agent, session.kubectl
            # The rest of the command line's start (its imports, the pod's API read: a third kubectl) waits
            # until the session's terminal shows something or the agent answers: it needs neither, and on 2 cores
            # it took CPU from the exec's start and from the pod's two Pythons.
            session.shown.wait(SESSION_FIRST_WAIT)
            return STARTED
        started.proc = flags.spawn(started.argv + [started.marker], short_lived=not request.get("client"))
        if request.get("client"):
            hold_signals()
            from .transport.launcher import terminal_launcher
            started.launcher = terminal_launcher(flags, kubectl_in, form.pod, form.container, Started.python,
                                                 request["client"])
        # The pod's API read is not started here: started with the execs it competed with them for the 2 cores
        # (pdb POD: the agent's hello 0.15 s later); after the command line's imports it is still done before
        # the agent's answer.
        from .agent import protocol
        from .transport.kubectl import send_agent
        send_agent(started.proc, protocol.request(**request))
    except Exception:  # noqa: BLE001 (anything: the normal path starts its own call and reports the cause)
        drop()
    return STARTED


def hold_signals():
    """SIGTERM or SIGHUP before cli.main installs its handlers (~0.1 s: the command line's imports) end the
    program as Ctrl-C does (launch.main drops the call, exit 128 + the signal's number) instead of at once: the
    launcher then gets SIGTERM and puts the user's terminal back, where dying with us (SIGKILL) would leave
    it raw."""
    import signal

    def ended(signum, _frame):
        SIGNALLED.append(signum)
        raise KeyboardInterrupt
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # `nohup kubectl wand pdb ...` keeps ignoring SIGHUP
            signal.signal(signum, ended)


def take(argv, request):
    """The started call when it is exactly the one described (kubectl's argv without the marker, the request),
    else None, having dropped a started one that differs: it is never run beside the normal path's own."""
    global STARTED
    started, STARTED = STARTED, None
    if started is None:
        return None
    if started.argv == list(argv) and started.request == request and started.proc is not None:
        return started
    started.cancel()
    return None


def drop():
    """Drop a call nobody claimed (on exit, on an interrupt before the verb ran, on a failed start)."""
    global STARTED
    started, STARTED = STARTED, None
    if started is not None:
        started.cancel()
