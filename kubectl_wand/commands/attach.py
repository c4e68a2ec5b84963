"""`kubectl wand attach TARGET`: start debugpy in the live process and connect the editor to it."""
from __future__ import annotations

import sys
import time

from .. import editor, errors, printers, report
from ..spinner import step
from ..errors import WandError
from . import common


class Options:
    def __init__(self, args):
        self.args = args

    def validate(self):
        a = self.args
        for name in ("port", "local_port"):
            value = getattr(a, name)
            if value is not None and not 0 < value < 65536:
                raise WandError("--%s must be 1-65535" % name.replace("_", "-"), errors.USAGE)
        if a.output not in (None, "json", "yaml"):
            raise WandError("attach prints -o json or -o yaml (or text without -o)", errors.USAGE)

    def run(self, out, err):
        a = self.args
        target, transport = common.one_transport(a, "attach")
        if a.address not in ("127.0.0.1", "localhost"):
            err.write("warning: the debug server will listen on %s: anyone who can reach that address can run "
                      "code in the process (debugpy has no authentication)\n" % a.address)
        pid, note = common.target_pid(a, transport, target)
        if note and not a.quiet:
            err.write(note + "\n")
        session = start_server(transport, pid, a)
        if transport.local:
            return self.report(out, err, transport, pid, session, session["port"])
        from ..kube.attach import foreground  # pods: forward the port and stay in the foreground
        return foreground(self, out, err, transport, pid, session)

    def report(self, out, err, transport, pid, session, local_port, extra=None):
        a = self.args
        hello = session.get("hello") or {}
        remote_root = hello.get("cwd") or "/"
        local_root = transport.local_root(remote_root) if hasattr(transport, "local_root") else "${workspaceFolder}"
        name = "kubectl wand: %s pid %d" % (transport.where, pid) if not transport.local else "kubectl wand: pid %d" % pid
        cfg = editor.configs(name, local_port, local_root, remote_root)
        info = {"pid": pid, "where": transport.where, "status": session["status"], "host": session.get("host"),
                "port": session.get("port"), "local_port": local_port, "debugpy": session.get("debugpy"),
                "source": session.get("source"), "editor": cfg}
        info.update(extra or {})
        if a.output:
            out.write(printers.dump(info, a.output))
            return errors.OK
        verb = "already listening" if session["status"] == "already" else "listening"
        where = "pid %d" % pid if transport.local else "%s pid %d" % (transport.where, pid)
        out.write("debugpy %s %s on %s:%s in %s (confirmed: it answers DAP)\n" % (
            session.get("debugpy") or "", verb, session.get("host"), session.get("port"), where))
        if session["status"] == "already" and session.get("since"):
            out.write("  started by kubectl-wand %s ago; reusing it\n" % printers.human_age(time.time() - session["since"]))
        if session.get("source") == "shipped":
            out.write("  debugpy was not installed in the target: shipped a pure-Python copy\n")
        if local_port != session.get("port"):
            out.write("forwarded to 127.0.0.1:%d on this machine\n" % local_port)
        out.write("\n" + editor.render(cfg))
        out.flush()
        return errors.OK


def start_server(transport, pid, a):
    """Inject debugpy (or find the one already there); returns the agent's result, listening confirmed."""
    with step(a, "starting the debug server in %s pid %d" % (transport.where, pid)):
        result = transport.agent({"op": "attach", "pid": pid, "host": a.address, "port": a.port,
                                  "timeout": a.timeout}, timeout=a.timeout + a.request_timeout_s)
    if result.get("status") in ("pending", "running"):
        report.timed_out(result, sys.stderr)
        raise WandError("attach did not complete (see above)", errors.TIMEOUT)
    if result.get("status") == "error" and result.get("kind") == "port":
        raise WandError("port %d is busy in %s; choose another with --port" % (a.port, transport.where),
                        errors.ENVIRONMENT)
    return common.check_result(result, transport)
