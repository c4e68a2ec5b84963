"""Child processes and their pipes: start kubectl so it dies with us, read its output without blocking.

The bottom layer both kube/ (API reads, `kubectl debug`, the status watch) and transport/ (kubectl exec,
port-forward) build on; it knows nothing of either. kube.config.KubeFlags.spawn starts kubectl with it.

Every kubectl we start gets PR_SET_PDEATHSIG=SIGKILL: when kubectl wand is killed (SIGKILL included, which no
handler sees) its `kubectl port-forward` or `kubectl exec` dies too, instead of holding the local port the
editor was told about (seen: the next attach then silently moved to another port). The kernel sends the signal
when the *thread* that forked the child exits, so long-lived children are started from the main thread.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time

PR_SET_PDEATHSIG = 1
# A line of kubectl's own (port-forward's "Forwarding from"; a watched pod: etcd caps an object at 1.5 MiB).
LINE_MAX = 4 << 20
_prctl = None


def _die_with_parent(parent: int, own_group=False, interactive=False):
    """Runs in the child between fork and exec. The terminal's Ctrl-C reaches the whole foreground process group:
    kubectl ignores it (without -t it installs no handler), and kubectl wand decides what the interrupt ends. Seen:
    `profile` interrupted at 3 s lost every pod's result to `kubectl exec ... (exit -2)` while its agents had
    the profile ready to send. ``own_group``: a process group of its own, out of the terminal's reach, for a
    child that catches SIGINT even when it starts ignored (docker's and podman's CLIs: Go's signal.Notify).
    An ``interactive`` child (a terminal session's launcher here) is the one the terminal's Ctrl-C is for: it
    keeps SIGINT as it is (ignored, it ignored a Ctrl-C that gave a session up before its prompt, and Python
    installs no handler for a signal it starts with ignored)."""
    global _prctl
    if not interactive:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if own_group:
        os.setpgid(0, 0)
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # we died before prctl took effect
        os._exit(1)


def spawn(argv, env=None, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, own_group=False,
          interactive=False):
    """Popen that dies with us (Linux); elsewhere a plain Popen. ``own_group``, ``interactive``: see
    _die_with_parent.

    The preexec_fn makes subprocess fork (not vfork) and run Python in the child: measured 1.1 ms of the
    CLI's time a spawn (0.1 ms without it) and ~1.4 ms to import ctypes once. Measured and not taken:
    `setpriv --pdeathsig KILL --` with process_group=0 (vfork; 0.13 ms of ours, +0.5 ms before kubectl
    runs) leaves a window where a CLI killed before setpriv's prctl leaves kubectl running (no getppid
    check), and needs util-linux; the fast path's spawn gained 15-30 ms by moving, against ~2-3 ms here."""
    global _prctl
    preexec = None
    if _prctl is None and os.path.exists("/proc/self"):
        try:
            import ctypes
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError, ImportError):
            _prctl = False
    if _prctl:
        parent = os.getpid()
        preexec = lambda: _die_with_parent(parent, own_group, interactive)  # noqa: E731
    elif own_group:
        preexec = lambda: os.setpgid(0, 0)  # noqa: E731
    return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, preexec_fn=preexec)


class Drain:
    """Read a pipe to its end in a thread, so the child never blocks on a full pipe."""

    def __init__(self, pipe):
        self.chunks = []
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe):
        try:
            for chunk in iter(lambda: pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536), b""):
                self.chunks.append(chunk)
        except (OSError, ValueError):
            pass

    def text(self, wait=2.0):
        self.thread.join(wait)
        return b"".join(self.chunks).decode("utf-8", "replace")


def readable(fd: int, timeout: float) -> bool:
    """True when ``fd`` has bytes (or its end) to read within ``timeout`` seconds: poll, not select, which
    refuses a descriptor numbered 1024 or more (the CLI holds that many pipes with hundreds of pods at once).
    The agent's own copy is agent.protocol.readable (this bottom layer imports nothing of the agent)."""
    if not hasattr(select, "poll"):
        return bool(select.select([fd], [], [], max(0.0, timeout))[0])
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # In steps of an hour at most: poll takes its timeout in milliseconds as a C int, and a wait "for good"
    # (a watch's deadline is now + 10**9 s) raised OverflowError, which ended the watch's thread silently.
    while True:
        step = min(timeout, 3600.0)
        if poller.poll(int(step * 1000) + 1 if step > 0 else 0):  # in ms, rounded up
            return True
        timeout -= step
        if timeout <= 0:
            return False


def lines(pipe, deadline, limit=LINE_MAX):
    """Lines from a pipe until EOF; TimeoutError past the deadline (a time.monotonic() value, or a function
    that returns the one in force: an agent's first line may have a tighter one than the rest); ValueError for a
    line over ``limit`` bytes (kubectl's own output; what the agent says goes through agent.protocol.Lines)."""
    fd = pipe.fileno()
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
        if len(buf) > limit:
            raise ValueError("a line of over %d bytes from %s" % (limit, getattr(pipe, "name", "a pipe")))
        left = (deadline() if callable(deadline) else deadline) - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if not readable(fd, left):
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk


def close(proc, grace=5.0, wait=True):
    """Close our end of stdin (ends an agent that watches it), then terminate what still runs.

    ``wait=False`` once the answer is in: kubectl is reaped by a thread instead of on the way to printing it
    (measured 7-16 ms for a kubectl exec to exit after SIGTERM: 5 % of a `stack`). Its stderr is then left
    unread; nothing needs it."""
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    if proc.poll() is None:
        proc.terminate()
        if wait:
            _reap(proc, grace)
        else:
            threading.Thread(target=_reap, args=(proc, grace), daemon=True).start()
    # stdout/stderr stay open: a Drain may still be reading the last of kubectl's error message.


def _reap(proc, grace):
    """Wait for a terminated child; SIGKILL it if it outlives ``grace``."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def write_line(proc, data: bytes) -> bool:
    """Send one line to a child; False when it already exited (its stderr says why)."""
    try:
        proc.stdin.write(data)
        proc.stdin.flush()
        return True
    except (BrokenPipeError, ValueError, OSError):
        return False


def last_line(text: str) -> str:
    """The last meaningful line of kubectl's stderr, with request URLs elided, at most 300 characters."""
    import re  # here only: ~2 ms of the start, before an early call's spawn (quickstart.py)
    rows = [r.strip() for r in text.strip().splitlines() if r.strip() and "Unknown stream id" not in r]
    if len(rows) > 1 and rows[-1].startswith("command terminated with exit code"):
        rows.pop()  # the remote error (a traceback's last line) says more than kubectl's summary
    line = re.sub(r'(Post|Get) "https?://[^"]*"', r"\1 <kubelet URL>", rows[-1]) if rows else ""
    return line if len(line) <= 300 else line[:297] + "..."
