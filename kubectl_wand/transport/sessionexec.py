"""A terminal session (pdb, exec-py -it) on a pod named alone, in ONE ``kubectl exec -it``: the agent and the
session's launcher start from the same exec, the agent's lines come back inside the terminal's stream.

Why: two execs at once (the agent's ``kubectl exec -i`` and the terminal's ``kubectl exec -it``) were two
kubectls, two exec streams and two Pythons starting together on the node's cores; the first prompt waited for the
later of them (docs/verbs/pdb.md: the launcher's Python ran its first line ~0.07 s after a lone exec's would).

In the pod, ``PYTHON -I -S -c PROGRAM NAME NONCE AGENT MARKER`` (AGENT: base64 of what the agent's stdin would carry:
its loader's line, its modules, the request) forks:

- the parent is the agent, as ``kubectl exec -i`` would start it (ppid 0, the marker last), with stdin the read
  end of a pipe and stdout the terminal, each write sent as APC frames (``ESC _ wand NONCE ; BASE64 ESC \\``) that
  this side takes out of the stream; SIGINT and SIGHUP ignored (they are the client's: Ctrl-C, a lost
  connection), stderr to /dev/null (nothing of ours on the user's screen);
- the child writes AGENT into that pipe, keeps its write end (inheritable: the client it becomes keeps it) and
  runs transport/launcher.py's LAUNCHER, which connects to the agent's socket NAME and becomes the client. When
  the client ends (q, Ctrl-D, Ctrl-C before the prompt, SIGHUP when kubectl goes away) the pipe closes: the
  agent's stdin ends, which is its stop (as the CLI's hang-up is), it detaches the target and writes its result.
  The agent waits for the client a moment (it ends on its own once the relay closes), ends it otherwise, and
  exits with its exit code. The terminal's echo is off while only frames are written (an echo of early typing
  could fall inside a frame); the launcher puts the terminal back as it was before the client runs.

Here, kubectl's stdin is the user's terminal (kubectl sets it raw and puts it back, also when it is ended), its
stdout a pseudo-terminal of ours (so kubectl still asks for a TTY and sends the window size, copied from the
user's on SIGWINCH), relayed to our stdout minus the frames, whose bytes feed a pipe read as the agent's stdout
(``AgentEnd``: what the transport reads as an agent's kubectl). Frames are validated like any agent line (the
protocol's bounds and checks): a process of the app's uid can write to the session's terminal.
"""
from __future__ import annotations

import os
import threading

from .. import pipes
from ..agent.processes import AGENT_LOADER, SESSION_MARK
from .launcher import LAUNCHER

FRAME_START = b"\x1b_wand"
FRAME_END = b"\x1b\\"
CHUNK = 768  # agent bytes per frame: a frame (~1 KB) stays inside one write of the terminal's line discipline
HOLD = 0.02  # seconds a possible frame's first bytes wait for the rest before they go to the screen as they are
FRAME_MAX = 4096  # a frame not ended within this is not one of ours: shown as it came
# The lifeline (a `kubectl exec -i` whose end is the CLI's end) starts once the session's terminal showed
# something, or after LIFE_AFTER seconds (a pending injection shows nothing): not at once, where its kubectl and
# its Python would take the node's CPU from the session's start, which is what one exec saves. The pod ends a
# session whose lifeline did not come within LIFE_WAIT seconds (the CLI died before it started it).
LIFE_AFTER = 1.0
LIFE_WAIT = 30.0

# Run as `PYTHON -I -S -c LIFELINE NAME` by `kubectl exec -i`: holds a connection to the session's agent process
# until its stdin ends (the CLI, or its kubectl, gone) or the session ends (the connection closes).
LIFELINE = SESSION_MARK + r"""
import os, select, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
end = time.monotonic() + (3 if sys.argv[2:] == ["end"] else 30)  # "end": the CLI drops the session
while True:
    try:
        s.connect("\0" + sys.argv[1] + "-life")
        break
    except OSError:
        if time.monotonic() > end:
            sys.exit(2)
        time.sleep(0.05)
if struct.unpack("iII", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1] != os.geteuid():
    sys.exit(2)
while sys.argv[2:] != ["end"]:
    ready = select.select([0, s], [], [])[0]
    if s in ready or not os.read(0, 4096):
        break
"""

PROGRAM = SESSION_MARK + r'''
import os, sys


class Framed:
    def __init__(self, fd, nonce):
        self.fd, self.head, self.buffer, self.dead = fd, b"\x1b_wand" + nonce.encode() + b";", self, False

    def write(self, data):
        import binascii
        data = bytes(data)
        for i in range(0, len(data), %(chunk)d):
            frame = memoryview(self.head + binascii.b2a_base64(data[i:i + %(chunk)d]).strip() + b"\x1b\\")
            while frame and not self.dead:
                try:
                    frame = frame[os.write(self.fd, frame):]
                except InterruptedError:
                    continue
                except OSError:
                    self.dead = True  # the terminal is gone (kubectl ended): the client's end stops us
        return len(data)

    def flush(self):
        pass


def ended(child, seconds):
    import select, signal, time
    for sig, wait in ((None, seconds), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            try:
                os.kill(child, sig)
            except OSError:
                pass
        end = time.monotonic() + wait
        try:
            watch = os.pidfd_open(child)
        except (AttributeError, OSError):
            watch = None
        while True:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid:
                return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            left = end - time.monotonic()
            if left <= 0:
                break
            if watch is not None:
                select.select([watch], [], [], left)
            else:
                time.sleep(min(left, 0.02))
        if watch is not None:
            os.close(watch)
    return 1


def lifeline(name, child):
    """End the session (SIGHUP to the client: its end is the agent's stop) once the CLI is gone: when its
    lifeline's connection closes, or when none came within %(life_wait)r s. A tty exec's process outlives its
    kubectl, and its terminal never hangs up: nothing else here would tell."""
    import select, signal, socket, struct, time
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn = None
    try:
        listener.bind("\0" + name + "-life")
        listener.listen(4)
        end = time.monotonic() + %(life_wait)r
        while conn is None:
            left = end - time.monotonic()
            if left <= 0 or not select.select([listener], [], [], left)[0]:
                break
            peer, _ = listener.accept()
            if struct.unpack("iII", peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1] == os.geteuid():
                conn = peer
            else:
                peer.close()  # another uid's process is never the CLI's lifeline
        while conn is not None:
            try:
                if not conn.recv(64):
                    break
            except InterruptedError:
                continue
    except OSError:
        pass  # the name taken by someone else, or the connection broken: no lifeline, the session ends
    try:
        os.kill(child, signal.SIGHUP)
    except OSError:
        pass


def main():
    import binascii, signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent's; the client's from the fork on
    name, nonce, agent = sys.argv[1], sys.argv[2], binascii.a2b_base64(sys.argv[3])
    try:
        import termios
        saved = termios.tcgetattr(1)
    except Exception:
        termios = saved = None
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(r)
        view = memoryview(agent)
        try:
            while view:
                view = view[os.write(w, view):]
        except OSError:
            os._exit(2)
        except KeyboardInterrupt:
            os._exit(130)
        del agent, view
        os.set_inheritable(w, True)

        def before_client():
            if saved is not None:
                try:
                    termios.tcsetattr(0, termios.TCSANOW, saved)
                except Exception:
                    pass
        sys.argv = ["-c", name]
        exec(LAUNCHER, {"__name__": "__main__", "__builtins__": __builtins__, "before_client": before_client})
        return
    os.close(w)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import _thread
    _thread.start_new_thread(lifeline, (name, child))
    tty = os.dup(1)
    if saved is not None:
        try:
            quiet = list(saved)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(tty, termios.TCSANOW, quiet)
        except Exception:
            pass
    os.dup2(r, 0)
    os.close(r)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    sys.stdout = Framed(tty, nonce)
    try:
        exec(AGENT_LOADER, {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException:
        pass
    os._exit(ended(child, 3.0))


LAUNCHER = %(launcher)r
AGENT_LOADER = %(loader)r
main()
''' % {"chunk": CHUNK, "launcher": LAUNCHER, "loader": AGENT_LOADER, "life_wait": LIFE_WAIT}


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
                    sys.stderr.write("\r\nwarning: the session's lifeline (kubectl exec) ended (%s): the pod ends "
                                     "the session\r\n" % (pipes.last_line(errors.text(0)) or "exit %s"
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


def relay(master, sink, head, shown):
    """Copy the session's terminal output to our stdout, the frames' bytes (the agent's lines) to ``sink``;
    until kubectl closes the terminal (EIO). Then ``sink`` is closed: the agent's stdout ends. ``shown`` (an
    Event) is set once anything but the agent's hello and events came: the client's first output, the
    agent's result, or the end."""
    import select
    from ..agent import protocol
    answer = ('"%s"' % protocol.RESULT).encode()

    def out(data):
        if data:
            shown.set()
            show(data)

    def agent(data):
        if answer in data:
            shown.set()
        write_all(sink, data, quiet=True)  # a reader gone (the answer was in) never stops the screen's relay
    pending = b""
    try:
        while True:
            if pending and not select.select([master], [], [], HOLD)[0]:
                out(pending)  # the start of an escape sequence that is not a frame: nothing more came
                pending = b""
                continue
            try:
                data = os.read(master, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data:
                break
            pending = split(pending + data, head, out, agent)
    finally:
        if pending:
            show(pending)
        os.close(master)
        os.close(sink)
        shown.set()


def split(data, head, show, agent):
    """``show`` ``data`` but its frames, whose payload goes to ``agent``; the bytes kept for the next read (a
    frame or a frame's start not complete yet)."""
    import binascii
    while data:
        start = data.find(FRAME_START)
        if start < 0:
            keep = partial_start(data)
            show(data[:len(data) - keep])
            return data[len(data) - keep:]
        show(data[:start])
        data = data[start:]
        if len(data) < len(head):
            if head.startswith(data):
                return data
            show(data[:1])
            data = data[1:]
            continue
        if not data.startswith(head):  # another nonce: not this session's agent; shown as it came
            show(data[:len(FRAME_START)])
            data = data[len(FRAME_START):]
            continue
        end = data.find(FRAME_END, len(head))
        if end < 0:
            if len(data) <= FRAME_MAX:
                return data
            show(data[:len(FRAME_START)])
            data = data[len(FRAME_START):]
            continue
        try:
            payload = binascii.a2b_base64(data[len(head):end])
        except (binascii.Error, ValueError):
            payload = b"\0not a frame\n"  # the agent's reader says the line broke the protocol
        agent(payload)
        data = data[end + len(FRAME_END):]
    return b""


def partial_start(data) -> int:
    """How many of the last bytes of ``data`` could begin a frame (kept until the next read)."""
    for keep in range(min(len(FRAME_START) - 1, len(data)), 0, -1):
        if FRAME_START.startswith(data[-keep:]):
            return keep
    return 0


def show(data):
    write_all(1, data, quiet=True)


def write_all(fd, data, quiet=False):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except OSError:
            if not quiet:
                raise
            return


def copy_size(master):
    """Give the session's terminal our terminal's window size (kubectl sends it to the pod's)."""
    import fcntl
    import termios
    for fd in (1, 0, 2):
        try:
            size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        return


def follow_size(master, kubectl):
    """On SIGWINCH (our terminal resized; kubectl got it too, and may have read the old size), copy the size and
    tell kubectl again. Only from the main thread (where Python's handlers run); elsewhere the size stays."""
    import signal
    earlier = signal.getsignal(signal.SIGWINCH)

    def resized(signum, frame):
        if kubectl.poll() is None:
            try:
                copy_size(master)
                os.kill(kubectl.pid, signal.SIGWINCH)
            except OSError:
                pass
        if callable(earlier):
            earlier(signum, frame)
    try:
        signal.signal(signal.SIGWINCH, resized)
    except ValueError:
        pass
