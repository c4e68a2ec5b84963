"""The programs a one-exec terminal session runs in the pod (transport/sessionexec.py says why and how): PROGRAM,
the agent and its client from one ``kubectl exec -it``, and LIFELINE, whose ``kubectl exec -i`` ending is the
CLI's end. Standard library only, any Python 3 of the container (the agent's own code then checks its version);
both begin with SESSION_MARK, so the agent's process listings never take them for the app's.

PROGRAM, run as ``PYTHON -I -S -c PROGRAM NAME NONCE AGENT MARKER``, forks:

- the parent is the agent, as ``kubectl exec -i`` would start it (ppid 0, the marker last), with stdin the read
  end of a pipe and stdout the terminal, each write sent as APC frames (``ESC _ wand NONCE ; BASE64 ESC \\``)
  that the CLI takes out of the stream (sessionframes.py); SIGINT and SIGHUP ignored (they are the client's:
  Ctrl-C, a lost connection), stderr to /dev/null (nothing of ours on the user's screen);
- the child writes AGENT into that pipe, keeps its write end (inheritable: the client it becomes keeps it) and
  runs transport/launcher.py's LAUNCHER, which connects to the agent's socket NAME and becomes the client. When
  the client ends (q, Ctrl-D, Ctrl-C before the prompt, SIGHUP) the pipe closes: the agent's stdin ends, which
  is its stop (as the CLI's hang-up is); it detaches the target and writes its result. The agent then waits for
  the client a moment (it ends on its own once the relay closes), ends it otherwise, and exits with its code.
  The terminal's echo is off while only frames are written (an echo of early typing could fall inside a frame);
  the launcher puts the terminal back as it was before the client runs.
- a thread of the parent waits for the lifeline on the abstract socket NAME-life (one of our uid): its close,
  or none within LIFE_WAIT seconds, ends the session (SIGHUP to the client). A tty exec's process outlives its
  kubectl and its terminal never hangs up (seen: the CLI killed, the session stayed in the pod for good).
"""
from __future__ import annotations

from ..agent.processes import AGENT_LOADER, SESSION_MARK
from .launcher import LAUNCHER

CHUNK = 768  # agent bytes per frame: a frame (~1 KB) stays inside one write of the terminal's line discipline
# Seconds the pod waits for the session's lifeline (the CLI died before it started one). Short: pdb's first prompt
# holds the app's main thread meanwhile (the CLI killed right as it showed); long enough for a lifeline's exec on a
# loaded node (seen: 0.1-2 s, 2 s with 20 pods listed at once on 2 cores).
LIFE_WAIT = 15.0

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
