"""attach's foreground on pods: forward each debug port, keep the forwards alive, follow what replaces a target.

A ``Session`` is one debug server the editor is attached to: its pod, its process, the forward and a watcher.
``supervise`` keeps them going until Ctrl-C:
- a forward that dies is restarted on the same local port (the editor's configuration names it); restarts
  share one budget per session wherever they fail (the forward dying, or its restart failing);
- a worker replaced by its reloader or supervisor gets the debugger too, on the same ports;
- a pod that goes away (rollout, eviction, crash, scale-down), with --follow (the default for workloads), is
  followed to a Running replacement of the same workload, on the same local port;
- with --all-pods, pods that appear later are attached too, on new local ports, each with a printed line.
With -o json|yaml stdout is a stream of events, one JSON line (or YAML document) each (``emit``; docs/output.md),
and the lines meant for a person go to stderr.
"""
from __future__ import annotations

import time

from .. import editor, errors, printers
from ..agent import protocol
from ..agent.debugserver import separate_adapter, server_answers
from ..errors import PortBusy, WandError
from ..terminal import text
from .fanout import Held

RESTARTS = 5        # port-forward restarts in a row before giving up on a session
RESCAN_EVERY = 5.0  # seconds between looks for new pods with --all-pods (an API list each time)
FOLLOW_POLL = 1.0   # seconds between looks for a replacement pod (the API has no cheaper signal we hold)


class Session:
    """One debug server: where it is, its forward on 127.0.0.1 here, and the watcher on its process."""

    def __init__(self, opts, transport, pid, server):
        self.opts, self.transport, self.pid, self.server = opts, transport, pid, server
        self.remote_port = int(server["port"])
        self.forward = self.watch = None
        self.failures = 0

    @property
    def local_port(self):
        return self.forward.local_port if self.forward is not None else None

    def open(self, local_port):
        """Forward and start watching the process. The forward is ready once kubectl reports its listener
        (kubectl prints it after its stream to the kubelet is up); the agent has confirmed the server listens
        in the pod. No DAP round trip through the forward: pydevd's in-process server serves one client, and
        a connection of ours would replace an editor that reconnected the moment the port opened (issue 23)."""
        with self.opts.step("forwarding the debug port of %s pid %d" % (self.transport.where, self.pid)):
            self.forward = self.transport.forward(self.remote_port, local_port)
            if separate_adapter(self.server) and not server_answers("127.0.0.1", self.forward.local_port, 15.0):
                # older debugpy's separate adapter: a session of ours cannot replace the editor's there
                self.close()
                raise WandError("the debug server does not answer through the port-forward on 127.0.0.1:%d"
                                % self.forward.local_port, errors.ENVIRONMENT)
        self.watch = self.transport.watch(self.pid)
        return self

    def config(self):
        return self.opts.editor_config(self.transport, self.pid, self.server, self.local_port)

    def line(self):
        return "debugpy listening in %s pid %d (127.0.0.1:%d there) on 127.0.0.1:%d here" % (
            self.transport.where, self.pid, self.remote_port, self.local_port)

    def close(self):
        if self.forward is not None:
            self.forward.close()
        if self.watch is not None:
            self.watch.cancel()


def emit(opts, event, session=None, **fields):
    """One event of -o json|yaml on stdout: where the session is (its pod, process and local port), then ``fields``."""
    where = {} if session is None else dict(where=session.transport.where, **printers.source(session.transport),
                                             pid=session.pid, local_port=session.local_port)
    opts.streams.stdout.write(printers.event(dict(event=event, **where, **fields), opts.output))
    opts.streams.stdout.flush()


def person(opts):
    """Where the lines meant for a person go: stdout, or stderr when stdout is -o json|yaml's stream."""
    return opts.streams.stderr if opts.output else opts.streams.stdout


# -- one target ----------------------------------------------------------------------------------------------

def foreground(opts, transport, pid, server):
    out = person(opts)
    session = Session(opts, transport, pid, server).open(opts.local_port)
    try:
        opts.report(transport, pid, server, session.local_port, extra={"forwarding": True})
        out.write("\nForwarding 127.0.0.1:%d -> %s:%d (pid %d). Press Ctrl-C to stop.\n" % (
            session.local_port, transport.where, session.remote_port, pid))
        if opts.follow:
            out.write("Following %s: if this pod goes away, attach moves to its replacement on the same local "
                      "port (your editor's connection drops once per hand-over; reconnect it).\n" % describe(opts))
        out.flush()
    except BaseException:
        session.close()
        raise
    return supervise(opts, [session], rescan=False)


# -- every pod / every worker ----------------------------------------------------------------------------------

class LocalPorts:
    """Local ports for many sessions: consecutive from --local-port (default --port), or free ones with 0."""

    def __init__(self, first):
        self.next = first

    def take(self):
        if not self.next:
            return 0
        from ..transport.portforward import port_free
        port = self.next
        while not port_free(port):
            port += 1
        self.next = port + 1
        return port


def interrupted(exc, servers):
    """A Ctrl-C (or SIGTERM) that ends attach before its first report, once debug servers started: they stay in
    their processes (debugpy cannot be stopped), so the line the CLI prints for it names them. Before, such an
    interrupt of --all-workers (one worker served, the next pending) or of the forward's start said nothing of
    them. ``servers``: (transport, pid, port in the pod)."""
    if isinstance(exc, Exception) or not servers:
        return
    line = "debugpy listens in %s until %s; attach again to reuse %s" % (
        ", ".join("%s pid %d (127.0.0.1:%d there)" % (t.where, pid, port) for t, pid, port in servers),
        "that process exits" if len(servers) == 1 else "those processes exit", "it" if len(servers) == 1 else "them")
    note = getattr(exc, "wand_note", None)
    exc.wand_note = "%s; %s" % (note, line) if note else "interrupted after the debug server started: " + line


def attach_many(opts):
    out, err = opts.streams.stdout, opts.streams.stderr
    transports = opts.transports() if opts.all_pods else [opts.one_transport()]
    if not transports:
        raise WandError("attach needs a target: POD, TYPE/NAME or -l SELECTOR", errors.USAGE)
    ports = LocalPorts(opts.local_port if opts.local_port is not None else opts.port)
    opts.preflight(transports[0], local_port=0)
    sessions, failed, held, started = [], [], None, []
    try:
        for transport in transports:
            if len(transports) == 1:
                sessions += attach_pod(opts, transport, ports, started)
                continue
            try:
                sessions += attach_pod(opts, transport, ports, started)
            except WandError as exc:  # one pod's failure is its own (seen: one blocked main thread among 5 pods
                # ended attach --all-pods with nothing forwarded and no pod named); the others are still served
                err.write("error: %s: %s\n" % (transport.where, text(exc.message)))
                failed.append((transport, exc.code))
        if not sessions and failed:
            raise WandError("no pod of %s could be attached (each said why above)" % describe(opts),
                            max(code for _t, code in failed))
        if not sessions:
            raise WandError("no process to attach to in %s" % describe(opts), errors.NOT_FOUND)
        title = "kubectl wand: %s (all)" % describe(opts)
        if opts.output:
            for s in sessions:
                out.write(printers.event(opts.attached(s.transport, s.pid, s.server, s.local_port), opts.output))
            emit(opts, "editor", editor=editor.many([s.config() for s in sessions], title))
            out = err
        else:
            for s in sessions:
                out.write(s.line() + "\n")
            out.write("\n" + editor.render_many([s.config() for s in sessions], title))
        # From "Press Ctrl-C" on, a Ctrl-C is the normal end: held until supervise's try (seen: one sent as soon as
        # the line was read ended attach with 130, nothing said of the servers left listening).
        held = Held().__enter__()
        out.write("\nForwarding %d debug servers. %sPress Ctrl-C to stop.\n" % (
            len(sessions), "New pods are attached as they appear. " if opts.all_pods else ""))
        out.flush()
        err.flush()
    except BaseException as exc:
        if held is not None:
            held.release(raising=False)
        for s in sessions:
            s.close()
        interrupted(exc, started)
        raise
    code = supervise(opts, sessions, rescan=opts.all_pods, ports=ports, skip={t.identity() for t, _c in failed} - {None},
                     held=held)
    return max([code] + [c for _t, c in failed]) if isinstance(code, int) else code  # exit 0 unless a pod failed


def attach_pod(opts, transport, ports, started=None):
    """Sessions for one pod: its app process, or every worker of its pre-fork master (--all-workers);
    ``started`` gets each debug server as soon as it listens (see interrupted)."""
    if opts.all_workers:  # one listing serves both: the workers, or else the app process
        listed = opts.processes(transport)
        pids = sorted(p["pid"] for p in listed if p["role"] == "worker") or [opts.choose(listed, transport)[0]]
    else:
        pids = [opts.target_pid(transport)[0]]
    sessions, remote = [], opts.port
    for pid in pids:
        server, remote = start_on_free_port(opts, transport, pid, remote)
        if started is not None:
            started.append((transport, pid, int(server["port"])))
        sessions.append(Session(opts, transport, pid, server).open(ports.take()))
        remote = int(server["port"]) + 1
    return sessions


def start_on_free_port(opts, transport, pid, first, tries=20):
    """Each worker of a pod needs its own port (one network namespace): the first free one from ``first``."""
    for port in range(first, first + tries):
        try:
            return opts.start_server(transport, pid, port=port), port
        except PortBusy:
            continue
    raise WandError("no free debug port in %s from %d to %d; choose another with --port" % (
        transport.where, first, first + tries - 1), errors.ENVIRONMENT)


# -- the loop --------------------------------------------------------------------------------------------------

def supervise(opts, sessions, rescan, ports=None, skip=(), held=None):
    out, err = opts.streams.stdout, opts.streams.stderr
    last_scan = time.monotonic()
    try:
        if held is not None:
            held.release()  # a Ctrl-C since "Press Ctrl-C" is raised here, as the normal end
        while True:
            for s in list(sessions):
                if not s.forward.alive():
                    if not s.transport.present():
                        replaced = gone(opts, s, "pod/%s is gone" % s.transport.name, sessions, rescan)
                        if replaced is not None:
                            return replaced
                        continue
                    restart(s, err)
                    continue
                s.failures = 0
                if s.watch.done():
                    result = s.watch.result or {}
                    if result.get("status") == protocol.RESTARTED:
                        handover_worker(opts, s, int(result["pid"]), result.get("why", "reload"))
                        continue
                    why = ("pod/%s is gone" % s.transport.name if not s.transport.present() else
                           "process %d in %s exited" % (s.pid, s.transport.where))
                    replaced = gone(opts, s, why, sessions, rescan)
                    if replaced is not None:
                        return replaced
            if rescan and time.monotonic() - last_scan > RESCAN_EVERY:
                sessions += new_pods(opts, sessions, ports, skip)
                last_scan = time.monotonic()
            sessions[0].forward.wait(0.5) if sessions else time.sleep(0.5)
    except KeyboardInterrupt as exc:
        for s in sessions:
            if opts.output:
                emit(opts, "stopped", s, port=s.remote_port)
                continue
            out.write("\nStopped forwarding. The debug server keeps listening on 127.0.0.1:%d inside %s (pid %d) "
                      "until that process exits; attach again to reuse it. No files were left in the pod.\n" % (
                          s.remote_port, s.transport.where, s.pid))
        if not sessions:  # waiting for a replacement (--follow) or for pods (--all-pods): say what ended
            err.write("%s\n" % (getattr(exc, "wand_note", None) or "Stopped waiting for %s: nothing was being "
                                 "forwarded" % ("new pods of %s" % describe(opts) if rescan else
                                                "a Running replacement of %s" % describe(opts))))
        return errors.OK
    finally:
        for s in sessions:
            s.close()


def restart(s, err):
    """Restart a dead forward on the same local port; every failed try counts against RESTARTS."""
    while True:
        s.failures += 1
        if s.failures > RESTARTS:
            raise WandError("kubectl port-forward to %s keeps dying; giving up after %d restarts" % (
                s.transport.where, RESTARTS), errors.ENVIRONMENT)
        err.write("port-forward ended; restarting it on 127.0.0.1:%d\n" % s.local_port)
        time.sleep(min(2.0, 0.2 * 2 ** s.failures))  # back off: the API server or kubelet may be busy
        try:
            s.forward.restart()
            return
        except WandError as exc:
            err.write("restart failed: %s\n" % text(exc.message))


def handover_worker(opts, s, new, why):
    out, err = opts.streams.stdout, opts.streams.stderr
    what = "reload" if why == "reload" else "supervisor respawn"
    err.write("worker %d was replaced by %d (%s): attaching to it\n" % (s.pid, new, what))
    old = s.pid
    s.server = opts.start_server(s.transport, new, port=s.remote_port)
    s.pid = new
    s.watch.cancel()
    s.watch = s.transport.watch(new)
    if opts.output:
        return emit(opts, "reattached", s, replaced=old)
    out.write("re-attached: debugpy listening in %s pid %d, still on 127.0.0.1:%d\n" % (
        s.transport.where, new, s.local_port))
    out.flush()


def gone(opts, s, why, sessions, rescan):
    """A session whose pod or process went away: follow it, drop it, or end attach (its exit code)."""
    out, err = opts.streams.stdout, opts.streams.stderr
    sessions.remove(s)
    local_port = s.local_port
    if opts.output:
        emit(opts, "gone", s, reason=why)
    s.close()
    if opts.follow and not rescan:
        sessions.append(follow(opts, s, why, local_port))
        return None
    if rescan or sessions:
        err.write("%s; stopped forwarding 127.0.0.1:%d (%d session(s) left)\n" % (why, local_port, len(sessions)))
        if sessions or rescan:
            return None
    err.write("%s; nothing left to debug\n" % why)
    return errors.NOT_FOUND


def follow(opts, old, why, local_port):
    """Wait for a Running replacement of the workload, attach to it, forward on the same local port."""
    out, err = opts.streams.stdout, opts.streams.stderr
    err.write("%s; waiting up to %s for a Running replacement of %s\n" % (
        why, human(opts.follow_timeout), describe(opts)))
    err.flush()
    deadline = time.monotonic() + opts.follow_timeout
    last = None
    while time.monotonic() < deadline:
        try:
            candidates = [t for t in opts.pod_transports(early=False) if t.replaces(old.transport)]
            if candidates:
                newest = max(candidates, key=lambda t: t.started())
                pid, _note = opts.target_pid(newest)
                server = opts.start_server(newest, pid)
                try:
                    session = Session(opts, newest, pid, server).open(local_port)
                except BaseException as exc:
                    interrupted(exc, [(newest, pid, int(server["port"]))])
                    raise
                if opts.output:
                    out.write(printers.event(dict(opts.attached(newest, pid, server, local_port, "followed"),
                                                  replaces=old.transport.where), opts.output))
                    out.flush()
                    return session
                out.write("followed to %s: debugpy listening in pid %d, still on 127.0.0.1:%d (your editor's "
                          "connection dropped with the old pod: reconnect it)\n" % (newest.where, pid, local_port))
                out.flush()
                return session
        except WandError as exc:
            last = exc.message  # the replacement may still be starting (no Python process yet): try again
        time.sleep(FOLLOW_POLL)
    raise WandError("no Running replacement of %s within %s%s; attach again when one runs" % (
        describe(opts), human(opts.follow_timeout), (" (last: %s)" % last) if last else ""), errors.NOT_FOUND)


def new_pods(opts, sessions, ports, skip=()):
    """Attach to Running pods of the target that have no session yet (scale-up, rollout), except ``skip`` (the
    pods that failed at the start, each already named)."""
    out, err = opts.streams.stdout, opts.streams.stderr
    known = {s.transport.identity() for s in sessions} | set(skip)
    added = []
    try:
        fresh = [t for t in opts.pod_transports(early=False) if t.identity() not in known]
    except WandError:
        return added
    for transport in fresh:
        try:
            new = attach_pod(opts, transport, ports)
        except WandError as exc:
            err.write("new %s: not attached yet: %s\n" % (transport.where, text(exc.message)))
            continue
        for s in new:
            if opts.output:
                out.write(printers.event(opts.attached(s.transport, s.pid, s.server, s.local_port), opts.output))
                continue
            out.write("new pod: %s\n%s" % (s.line(), editor.render(s.config())))
        out.flush()
        added += new
    return added


def describe(opts):
    if opts.target is not None:
        return str(opts.target)
    return "-l %s" % opts.selector


def human(seconds):
    seconds = int(seconds)
    return "%dm%02ds" % divmod(seconds, 60) if seconds >= 60 else "%ds" % seconds
