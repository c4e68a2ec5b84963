"""Fan-out over pods: the transports a target names (``pods_of``), one call on every one of them at once
(``each``, ``read_all``: every pod at once, up to what this machine can hold: ``parallel``), and each
process's entry labelled with its pod, failures collected per pod (``entries``: the verb's exit code is the
worst of them). A profile or trace over several pods is ``sync``: every pod's window opens at once
(``Window``). Used by get, exec-py --all-pods, stack, profile and trace."""
from __future__ import annotations

import time

from .. import errors, printers
from ..agent import protocol
from ..errors import WandError
from ..terminal import text

# What one pod's call costs this machine: a kubectl exec (measured: 50 MB RSS of which ~13 MB its own, the rest
# kubectl's binary shared by every copy), a thread, three pipes. The API server is not the bound: an exec is a
# long-running request, outside the in-flight limits and priority-and-fairness seats once it is upgraded.
CALL_MEMORY = 24 << 20   # bytes of this machine's memory per call, with room
CALL_FILES = 4           # file descriptors per call (kubectl's three pipes, and one spare)
MEMORY_SHARE = 4         # use at most a quarter of the memory available now
# Calls at once per core of this machine: each kubectl exec starts with ~60 ms of its CPU here (and the TLS
# handshake), and an agent must greet within HELLO_WITHIN (8 s) of its spawn. Measured on 2 cores: 40 at once
# all greet (bench_fanout_cluster, tests/e2e/test_fanout_cluster); `stack` over 300 pods (simulated), all 230
# that memory allowed at once, left 3 pods that "never greeted within 8s" (load average 150), and with 48 at once
# all 300 answered (26 s; the CLI's tree 840 MB PSS instead of 1.2 GB at 100 pods). 24 a core: 48 here, so a
# 40-replica window still opens in one wave.
CALLS_PER_CORE = 24
ARM_WAIT = 30.0          # an armed pod waits this long for the others to be armed; then its window opens anyway


def parallel(wanted: int) -> int:
    """How many calls run at once: all ``wanted`` when this machine can hold and run them, else as many as its
    free memory (a quarter of it), its open-files limit (raised to the hard limit first) and its cores
    (CALLS_PER_CORE each) allow; at least 8."""
    limit = min(wanted, CALLS_PER_CORE * cores())
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, max(soft, 64 + CALL_FILES * wanted))
        if want > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        limit = min(limit, (soft - 64) // CALL_FILES)
    except (ImportError, ValueError, OSError):
        pass
    available = memory_available()
    if available:
        limit = min(limit, available // MEMORY_SHARE // CALL_MEMORY)
    return max(1, min(wanted, max(8, limit)))


def cores() -> int:
    """The cores this process may run on (its affinity: a container's cpuset), else the machine's."""
    import os
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_available():
    """MemAvailable in bytes (None where /proc/meminfo does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def each(call, transports, stop=None, limit=None):
    """[call(t) for t in transports], run at once (at most ``limit``, default ``parallel``); in order. ``call``
    catches what it wants kept per pod. With ``stop`` (a threading.Event), Ctrl-C sets it and the calls' results
    (streams ended early) are still collected."""
    if len(transports) == 1:
        return [call(transports[0])]
    from concurrent.futures import ThreadPoolExecutor  # only for several pods: 12 ms of imports
    with ThreadPoolExecutor(max_workers=limit or parallel(len(transports))) as pool:
        futures = []
        try:
            with Held():
                futures = [pool.submit(call, t) for t in transports]
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            if stop is None:
                raise
            stop.set()  # every agent ends early and still answers with what it collected
            return [f.result() for f in futures]


class Held:
    """Holds the signals that raise (Ctrl-C; SIGTERM and SIGHUP, which the CLI turns into Terminated) while the
    calls are submitted, and raises the first of them once all are: one raised inside pool.submit (it waits
    for the thread it starts) lost a call already queued, which then ran on unheard and unstopped. Only the
    main thread can set handlers; elsewhere nothing is held."""

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __enter__(self):
        import signal
        self.held, self.previous = [], {}
        for name in self.NAMES:
            signum = getattr(signal, name, None)
            handler = signal.getsignal(signum) if signum is not None else None
            if callable(handler):
                try:
                    signal.signal(signum, lambda got, frame: self.held.append((got, frame)))
                except ValueError:  # not the main thread
                    break
                self.previous[signum] = handler
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self, raising=True):
        """The handlers put back; then (``raising``) the first signal held is raised here."""
        import signal
        previous, self.previous = self.previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if self.held and raising:
            signum, frame = self.held[0]
            previous[signum](signum, frame)  # raises now: KeyboardInterrupt, or the CLI's Terminated


def pods_of(opts):
    """The transports to read: pid/N, this machine, or the target's Running pods (--pod narrows to one)."""
    transports = opts.transports()
    if not transports:
        return opts.this_machine()
    if opts.pod:
        return [opts.choose_pod(transports)]
    return transports


def read_all(transports, request, timeout, on_event=None, stop=None, sync=False):
    """[(transport, result or WandError)] for ``request`` on every transport at once; ``on_event(event,
    transport)`` hears every streamed event with where it came from. ``sync`` (profile, trace): the request
    asks each agent to get ready, say "armed" and wait; the window opens on every pod at once (``Window``)."""
    limit = parallel(len(transports)) if len(transports) > 1 else 1  # one pid/N: no limits to read
    window = Window(len(transports), limit, stop) if sync and len(transports) > 1 else None
    if window is not None:
        request = dict(request, sync=True)

    def one(t):
        if window is not None:
            window.started()
        released = []

        def heard(event):
            if window is not None and "armed" in event:
                window.armed()
                released.append(True)
            elif on_event is not None:
                on_event(event, t)
        try:
            return t.agent(dict(request), timeout=timeout, stop=stop, on_event=heard)
        except WandError as exc:
            return exc
        finally:
            if window is not None:
                window.finished(bool(released))

    return list(zip(transports, each(one, transports, stop, limit)))


class Window:
    """Opens every pod's window at once. Each call, once its agent is armed (samplers started, probe installed
    with its events off), waits in ``armed()`` until every call that has started and not been released is
    armed too, and no other call can start now (all have, or ``limit`` are running); then all of them are
    released together and their agents told go. Calls that end before arming (an error) are not waited for.
    With more pods than ``limit`` the later ones get a window of their own, and every pod reports its window;
    a pod armed ARM_WAIT after the first does not hold the others (or itself) back further."""

    def __init__(self, calls, limit, stop=None):
        import threading  # only for several pods (stack of one pid/N need not pay its import)
        self.cond = threading.Condition()
        self.pending, self.limit, self.stop = calls, limit, stop
        self.active = self.unreleased = self.waiting = 0
        self.generation = 0

    def started(self):
        with self.cond:
            self.pending -= 1
            self.active += 1
            self.unreleased += 1

    def finished(self, released):
        with self.cond:
            self.active -= 1
            if not released:
                self.unreleased -= 1
            self._open_if_ready()

    def armed(self):
        with self.cond:
            self.waiting += 1
            generation = self.generation
            deadline = time.monotonic() + ARM_WAIT
            self._open_if_ready()
            while self.generation == generation:
                left = deadline - time.monotonic()
                if left <= 0 or self.stop is not None and self.stop.is_set():
                    self._open()
                    break
                self.cond.wait(min(left, 0.2))  # 0.2 s: how late a Ctrl-C (``stop``) is noticed here

    def _open_if_ready(self):
        if self.waiting and self.waiting == self.unreleased and (self.pending == 0 or self.active >= self.limit):
            self._open()

    def _open(self):
        self.unreleased -= self.waiting
        self.waiting = 0
        self.generation += 1
        self.cond.notify_all()


def entries(results, err, opts):
    """(entries labelled with their pod, exit code): one entry per process; failures reported on ``err``."""
    out, codes = [], []
    for transport, result in results:
        if isinstance(result, WandError):
            err.write("error: %s: %s\n" % (transport.where, text(result.message)))
            codes.append(result.code)
            continue
        if result.get("status") != protocol.OK:
            from .common import agent_error
            err.write("error: %s\n" % text(agent_error(result, transport).message))
            codes.append(errors.exit_code(result))
            continue
        for entry in result.get("processes") or []:
            entry = dict(entry, **printers.source(transport))
            if "error" in entry:
                hint = transport.alternative("with SYS_PTRACE of its own") if entry.get("kind") == "permission" else ""
                err.write("error: %s pid %s: %s%s\n" % (transport.where, text(entry["pid"]), text(entry["error"]),
                                                          hint))
                codes.append(errors.exit_code(protocol.error(entry.get("kind"), entry["error"])))
                continue
            out.append(entry)
    if not out and not codes:
        raise WandError("no Python process to read in %s" % ", ".join(t.where for t, _r in results), errors.NOT_FOUND)
    return out, (max(codes) if codes else errors.OK)


def spread_note(windows) -> str:
    """"; windows aligned within 0.12s": how far apart the sources' windows opened (and closed)."""
    windows = [w for w in windows if w]
    if len(windows) < 2:
        return ""
    starts, ends = [w["start"] for w in windows], [w["end"] for w in windows]
    return "; windows aligned within %.2fs (start) and %.2fs (end)" % (max(starts) - min(starts),
                                                                       max(ends) - min(ends))
