"""A terminal session (pdb, exec-py -it) on a pod named alone, in ONE ``kubectl exec -it``: the agent and the
session's launcher start from the same exec, the agent's lines come back inside the terminal's stream.

Why: two execs at once (the agent's ``kubectl exec -i`` and the terminal's ``kubectl exec -it``) were two
kubectls, two exec streams and two Pythons starting together on the node's cores; the first prompt waited for the
later of them (docs/verbs/pdb.md: the launcher's Python ran its first line ~0.07 s after a lone exec's would).

In the pod (sessionpod.py): PROGRAM forks the agent (the parent, as ``kubectl exec -i`` would start it) and the
session's launcher (the child, which becomes the client); the agent's lines travel as frames in the terminal's
output; a lifeline (a ``kubectl exec -i`` started once the session's start no longer needs the CPU) tells the pod
when this CLI is gone, since a tty exec's process outlives its kubectl.

Here, kubectl's stdin is the user's terminal (kubectl sets it raw and puts it back, also when it is ended), its
stdout a pseudo-terminal of ours (so kubectl still asks for a TTY and sends the window size, copied from the
user's on SIGWINCH), relayed to our stdout minus the frames (sessionframes.py), whose bytes feed a pipe read
as the agent's stdout (``AgentEnd``: what the transport reads as an agent's kubectl).
"""
from __future__ import annotations

import os
import threading

from .. import pipes
from .sessionframes import FRAME_START, copy_size, follow_size, relay
from .sessionpod import LIFELINE, PROGRAM

# The lifeline (a `kubectl exec -i` whose end is the CLI's end) starts once the session's terminal showed
# something, or after LIFE_AFTER seconds (a pending injection shows nothing): not at once, where its kubectl and
# its Python would take the node's CPU from the session's start, which is what one exec saves. The pod ends a
# session whose lifeline did not come within sessionpod.LIFE_WAIT seconds (the CLI died before it started it).
LIFE_AFTER = 1.0


def wanted(request) -> bool:
    """Whether a request's session runs in one exec: a terminal session, with a terminal on both of our ends
    (otherwise kubectl exec gets no TTY, and the launcher's own exec is kept: transport/launcher.py)."""
    import sys
    try:
        return bool(request.get("client")) and sys.stdin.isatty() and sys.stdout.isatty() and hasattr(os, "openpty")
    except (AttributeError, ValueError):
        return False


def agent_input(request) -> bytes:
    """What the agent's stdin would carry: its loader's line, its modules, the request (never held: nothing
    here can send it a go; it chooses and injects as soon as it runs, and the session is dropped, the agent
    detaching what it did, when the pod turns out to be another container's)."""
    from ..agent import protocol
    from .bundle import agent_header, boot_line
    request = {k: v for k, v in request.items() if k != "hold"}
    return boot_line() + agent_header(request.get("op")) + protocol.encode(protocol.request(**request))


class Session:
    """The one ``kubectl exec -it`` of a session: ``kubectl`` (its Popen: the terminal's end, waited for and ended
    as the launcher's kubectl is) and ``agent`` (AgentEnd: read as an agent's kubectl)."""

    def __init__(self, flags, kubectl_args, pod, container, python, name, request, marker):
        """``kubectl_args``: the transport's argv maker (flags.kubectl_in with the namespace)."""
        import binascii
        import subprocess
        import tty
        self.nonce = os.urandom(12).hex()
        where = ["-c", container] if container else []
        argv = kubectl_args("exec", "-i", "-t", pod, *where, "--", python, "-I", "-S", "-c", PROGRAM, name,
                            self.nonce, binascii.b2a_base64(agent_input(request), newline=False).decode(), marker)
        master, slave = os.openpty()
        tty.setraw(slave)  # what kubectl writes reaches us as it is: the pod's terminal already translated it
        copy_size(master)
        try:
            self.kubectl = flags.spawn(argv, short_lived=False, stdin=None, stdout=slave, stderr=subprocess.PIPE)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        from .. import spinner  # after the spawn: its import is not on the way to it
        spinner.SHARED = True
        read, write = os.pipe()
        self.agent = AgentEnd(self, os.fdopen(read, "rb"))
        self.shown = threading.Event()  # the session's terminal showed something, the agent answered, or it ended
        self.relay = threading.Thread(target=relay, args=(master, write, FRAME_START + self.nonce.encode() + b";",
                                                          self.shown), daemon=True, name="kubectl-wand-session-relay")
        self.relay.start()
        follow_size(master, self.kubectl)
        # from its own thread: kubectl dies with the thread that started it (PR_SET_PDEATHSIG), here the session's
        self.flags, self.lifeline, self.dropped = flags, None, threading.Event()
        self.lifeline_argv = kubectl_args("exec", "-i", pod, *where, "--", python, "-I", "-S", "-c", LIFELINE, name)
        self.lifeline_lock = threading.Lock()
        threading.Thread(target=self._lifeline, args=(flags, self.lifeline_argv), daemon=True,
                         name="kubectl-wand-lifeline").start()

    def drop(self):
        """End the session in the pod now (the CLI drops it: another container was the one, a failure before the
        verb ran, SIGTERM): a tty exec's process outlives its kubectl, so the pod is told through the lifeline, or,
        before one was started, a lifeline that ends at once (at most ~3 s here); then kubectl is ended (SIGTERM:
        it puts the terminal back)."""
        import subprocess
        with self.lifeline_lock:
            again = self.dropped.is_set()
            self.dropped.set()
            started = self.lifeline is not None
        if again:
            pass
        elif started:
            pipes.close(self.lifeline, wait=False)  # its end is the session's end in the pod
        elif self.kubectl.poll() is None:
            try:
                self.flags.run(self.lifeline_argv + ["end"], timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.kubectl.poll() is None:
            self.kubectl.terminate()

    def _lifeline(self, flags, argv):
        """Start the session's lifeline once its start no longer needs the CPU (LIFE_AFTER), hold it while the
        session runs, end it after. One that ends first ends the session in the pod: said here, once."""
        import subprocess
        import sys
        self.shown.wait(LIFE_AFTER)
        with self.lifeline_lock:
            if self.kubectl.poll() is not None or self.dropped.is_set():
                return
            try:
                self.lifeline = flags.spawn(argv, short_lived=False, stdout=subprocess.DEVNULL)
            except OSError:
                return
        errors = pipes.Drain(self.lifeline.stderr)
        while self.kubectl.poll() is None:
            try:
                self.kubectl.wait(0.5)  # or the lifeline's end, whichever first (no one event for both)
            except subprocess.TimeoutExpired:
                if self.lifeline.poll() is not None:
                    try:  # the session's own end closes the lifeline too: then its kubectl ends right after
                        self.kubectl.wait(5)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    from ..terminal import text  # kubectl's stderr carries the container's: untrusted
                    sys.stderr.write("\r\nwarning: the session's lifeline (kubectl exec) ended (%s): the pod ends "
                                     "the session\r\n" % (text(pipes.last_line(errors.text(0))[:300]) or "exit %s"
                                                            % self.lifeline.returncode))
                    break
        pipes.close(self.lifeline)


class AgentEnd:
    """The agent's end of the one exec, read by the transport as an agent's kubectl (the surface of a Popen it
    uses). Its stdin goes nowhere: the agent stops when the client's end closes. Ending it ends the exec with
    SIGTERM (kubectl puts the terminal back), and ``terminate`` after the answer lets kubectl end by itself first
    (the agent exits right after its result, with the client's exit code)."""

    def __init__(self, session, stdout):
        self.session, self.kubectl, self.stdout = session, session.kubectl, stdout
        self.stderr, self.pid = self.kubectl.stderr, self.kubectl.pid
        self.stdin = open(os.devnull, "wb")

    @property
    def returncode(self):
        return self.kubectl.returncode

    def poll(self):
        return self.kubectl.poll()

    def wait(self, timeout=None):
        return self.kubectl.wait(timeout)

    def kill(self):
        self.session.drop()

    def terminate(self):
        import subprocess

        def later():
            try:
                self.kubectl.wait(3.0)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.kubectl.poll() is None:
            threading.Thread(target=later, daemon=True).start()


