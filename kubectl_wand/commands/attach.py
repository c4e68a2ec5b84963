"""`kubectl wand attach TARGET`: start debugpy in the live process and connect the editor to it.

Flow: preflight (local port free, may we port-forward) -> inject or find the debug server (readiness confirmed
beside the target without a connection of ours, which would replace an editor's: agent/debugserver.confirm)
-> on pods, forward and stay in the foreground (attach_session), where attach follows a workload to its
replacement pod (--follow) or serves every pod / worker at once (--all-pods, --all-workers). Nothing is
injected before every check that could still refuse has passed.
"""
from __future__ import annotations

import math
import time

from .. import editor, errors, printers, report
from ..agent import protocol
from ..errors import PortBusy, WandError
from ..flags import DURATION, Flag
from ..terminal import text
from .common import TARGET_FLAGS, TargetOptions, check_result, positive_seconds

DEFAULT_PORT = 5679
DEFAULT_ADDRESS = "127.0.0.1"

DESCRIPTION = ("Start debugpy inside the live process (127.0.0.1 in the pod), forward its port to 127.0.0.1 here and "
               "print the editor configuration.")
FLAGS = (
    Flag("target", nargs="?", help="POD, TYPE/NAME or pid/N"),
    Flag("--port", value=int, help="debug server port in the target (default 5679)"),
    Flag("--local-port", value=int, help="local port of the forward (default: --port, or a free one)"),
    Flag("--no-forward", help="inject and exit; forward yourself"),
    Flag("--address", value=str, default=DEFAULT_ADDRESS,
         help="address the debug server binds in the target (default 127.0.0.1; anything else exposes it to the "
              "network and is warned about)"),
    Flag("--timeout", value=DURATION, default=15.0,
         help="how long to wait for the injection, e.g. 15 or 30s (default 15s)"),
    Flag("--follow", negatable=True,
         help="when the pod goes away, move to a Running replacement of the workload on the same local port "
              "(default: on for workloads and -l, off for pod/NAME and pid/N)"),
    Flag("--follow-timeout", value=DURATION, default=300.0,
         help="how long to wait for a replacement pod, e.g. 5m (default 5m)"),
    Flag("--all-pods", help="attach to every Running pod of the target, each on its own local port, and to pods "
                            "that appear later"),
    Flag("--all-workers", help="attach to every worker of a pre-fork master (gunicorn), each on its own port"),
    Flag("-o", "--output", choices=("json", "yaml"), help="output format"),
) + TARGET_FLAGS


class Options(TargetOptions):
    flags = FLAGS
    port: int = DEFAULT_PORT
    local_port: int = None
    no_forward: bool = False
    address: str = DEFAULT_ADDRESS
    timeout: float = 15.0
    output: str = None
    port_given: bool = False
    follow: bool = None
    follow_timeout: float = 300.0
    all_pods: bool = False
    all_workers: bool = False

    def complete(self, ns, streams):
        self.verb = "attach"
        self.complete_target(ns, streams)
        self.port_given = self.port is not None
        if self.port is None:
            self.port = DEFAULT_PORT
        if self.follow is None:  # on by default for workloads; a pod or a process has no replacement to follow
            self.follow = bool(self.target is None and self.selector or
                               self.target is not None and self.target.workload)

    def attach_request(self, pid, port=None):
        return {"op": "attach", "pid": pid, "host": self.address, "port": self.port if port is None else port,
                "timeout": self.timeout}

    def early_request(self):
        if self.pid or self.all_pods or self.all_workers:
            return None
        return dict(self.attach_request(None), hold=True)  # held until the checks below have passed

    def validate(self):
        self.validate_target()
        if not 0 < self.port < 65536:
            raise WandError("--port must be 1-65535", errors.USAGE)
        if self.local_port is not None and not 0 <= self.local_port < 65536:
            raise WandError("--local-port must be 0-65535 (0: any free port)", errors.USAGE)
        positive_seconds(self.timeout, "--timeout")
        if self.output not in (None, "json", "yaml"):
            raise WandError("attach prints -o json or -o yaml (or text without -o)", errors.USAGE)
        positive_seconds(self.follow_timeout, "--follow-timeout")
        many = self.all_pods or self.all_workers
        if many and self.pid:
            raise WandError("--all-pods/--all-workers pick the processes; --pid names one: give one", errors.USAGE)
        if many and self.no_forward:
            raise WandError("--all-pods/--all-workers forward every server and stay in the foreground; "
                            "they do not go with --no-forward", errors.USAGE)
        if many and self.target is not None and self.target.local:
            raise WandError("--all-pods/--all-workers are for pods; pid/N is one process", errors.USAGE)
        if self.all_pods and self.pod:
            raise WandError("--all-pods attaches to every pod; --pod names one: give one", errors.USAGE)

    def run(self) -> int:
        if self.all_pods or self.all_workers:
            from .attach_session import attach_many
            return attach_many(self)
        err = self.streams.stderr
        transport = self.one_transport()
        forwarding = transport.forwarded and not self.no_forward
        if forwarding:
            self.preflight(transport)
        if self.address not in ("127.0.0.1", "localhost"):
            err.write("warning: the debug server will listen on %s: anyone who can reach that address can run "
                      "code in the process (debugpy has no authentication)\n" % self.address)
        session = self.start_server(transport, self.known_pid())
        pid = session["pid"]
        if not forwarding:
            extra = {"forwarding": False} if transport.forwarded else {}
            code = self.report(transport, pid, session, session["port"], extra)
            hint = transport.forward_hint(self.local_port or session["port"], session["port"])
            if hint:
                err.write("not forwarding (--no-forward); to reach it: %s\n" % hint)
            return code
        from .attach_session import foreground, interrupted
        try:
            return foreground(self, transport, pid, session)
        except BaseException as exc:
            interrupted(exc, [(transport, pid, int(session["port"]))])
            raise

    def preflight(self, transport, local_port=None):
        """Before touching the target: bad input or missing rights leave it unchanged."""
        from ..transport.portforward import port_free
        local_port = self.local_port if local_port is None else local_port
        if local_port and not port_free(local_port):
            raise WandError("local port %d is busy; choose another with --local-port (0: any free port)"
                            % local_port, errors.ENVIRONMENT)
        if transport.forward_allowed() is False:
            raise WandError("you may not port-forward to pods in namespace %s (RBAC: create on pods/portforward),"
                            " so the debug server could not be reached: nothing was injected. Ask for that "
                            "right, or use --no-forward" % transport.labels.get("namespace"), errors.ENVIRONMENT)

    def start_server(self, transport, pid, port=None):
        """Inject debugpy (or find the one already there); the agent's result, listening confirmed."""
        port = self.port if port is None else port
        with self.step("starting the debug server in %s%s" % (transport.where, " pid %d" % pid if pid else "")):
            result = transport.agent(self.attach_request(pid, port), timeout=self.timeout + self.request_timeout_s,
                                     on_event=self.chosen)
        if result.get("status") in protocol.UNFINISHED:
            report.timed_out(result, self.streams.stderr)
            raise WandError("attach did not complete (see above)", errors.TIMEOUT)
        if result.get("status") == protocol.ERROR and result.get("kind") == "port":
            why = result.get("reason")  # who holds it, as the agent or the payload saw it
            why = " (%s)" % text(why[:200]) if isinstance(why, str) and why else ""
            raise PortBusy("port %d is busy in %s%s; choose another with --port" % (port, transport.where, why),
                           errors.ENVIRONMENT)
        result = check_result(result, transport)
        result["pid"] = pid = result.get("pid") or pid
        if result["status"] == protocol.ALREADY:
            asked = [what for what, differs in (
                ("--address %s" % self.address, self.address not in (DEFAULT_ADDRESS, "localhost") and
                 self.address != result.get("host")),
                ("--port %d" % port, self.port_given and port != result.get("port"))) if differs]
            if asked:
                self.streams.stderr.write("note: %s not used: a debug server already listens on %s:%s in pid %d "
                                          "(debugpy cannot be restarted in a process)\n" % (
                                              " and ".join(asked), text(result.get("host")), text(result.get("port")),
                                              pid))
        return result

    def editor_config(self, transport, pid, session, local_port):
        remote_root = (session.get("hello") or {}).get("cwd") or "/"
        name = "kubectl wand: " + transport.describe(pid)
        return editor.configs(name, local_port, transport.local_root(remote_root), remote_root)

    def attached(self, transport, pid, session, local_port, event="attached"):
        """The ``attached`` event of -o json (docs/output.md): one debug server, where it is and how to reach it."""
        return {"event": event, "pid": pid, "where": transport.where, **printers.source(transport),
                "status": session["status"], "host": session.get("host"), "port": session.get("port"),
                "local_port": local_port, "debugpy": session.get("debugpy"), "source": session.get("source"),
                "editor": self.editor_config(transport, pid, session, local_port)}

    def report(self, transport, pid, session, local_port, extra=None):
        out = self.streams.stdout
        if self.output:  # JSON lines: this is the first; attach_session adds one per later event while forwarding
            out.write(printers.event(dict(self.attached(transport, pid, session, local_port), **(extra or {})),
                                     self.output))
            out.flush()
            return errors.OK
        cfg = self.editor_config(transport, pid, session, local_port)
        verb = "already listening" if session["status"] == protocol.ALREADY else "listening"
        where = transport.describe(pid)
        out.write("debugpy %s %s on %s:%s in %s (confirmed: %s)\n" % (
            text(session.get("debugpy") or ""), verb, text(session.get("host")), text(session.get("port")), where,
            text(session.get("confirmed") or "it listens")))
        age = started_ago(session.get("since")) if session["status"] == protocol.ALREADY else None
        if age is not None:
            out.write("  started by kubectl-wand %s ago; reusing it\n" % printers.human_age(age))
        if session.get("source") == "shipped":
            out.write("  debugpy was not installed in the target: shipped a pure-Python copy\n")
        if local_port != session.get("port"):
            out.write("forwarded to 127.0.0.1:%d on this machine\n" % local_port)
        out.write("\n" + editor.render(cfg))
        out.flush()
        return errors.OK


def started_ago(since):
    """Seconds since the server was started, from its record in the target; None when the record's time is
    not one (the target can write that record: NaN, infinity or a time to come, seen as a traceback)."""
    if type(since) not in (int, float) or not math.isfinite(since):
        return None
    age = time.time() - since
    return age if age >= 0 else None
