"""The sampler's ``profile`` operation: sample every thread of the target at a rate for a duration and count
identical stacks per thread name (see sampler.py's docstring for the command line and the lines written).

Shipped between ``framewalk`` and ``sampler`` (agent/observe.py: sampler_source), in one namespace: it uses the
Walker, and sampler's reader, frame checks and output. Runs under the target's own interpreter, beside it.

Each tick reads the stacks one of two ways. With the Walker (the target's _PyRuntime found and its offsets
checked) and without --gil, the Walker alone reads every thread's whole chain, once, as py-spy does: measured
beside a CPU-bound app at 100 Hz, RemoteUnwinder.get_stack_trace and then the Walker over the same frames (to
read past the reader's cut) cost the sampler 15.1-16.5 ms of CPU per second of sampling, the Walker alone
10.7-12.1 (bench/bench_profile_ab.py has the whole of it against py-spy). Otherwise (no Walker, --gil, which
needs the reader's GIL holder, or a Walker read torn by the moving target) the reader's frames, extended by the
Walker where it can (sampler.thread_frames), as ``stack`` reads them.

Ticks keep absolute times (start + k / rate): none is taken before its time, a late one is taken at once (py-spy's
way; skipping them cost 5 % of the rate under load), and only those more than MAX_LAG late are skipped and
counted as ``missed``. A tick's cost is mostly the cold start after its sleep (measured: ~55 us of CPU a tick
where the same tick back to back costs ~8), so it is kept to four reads beside a one-thread app (the thread
list, the thread state, its /proc stat, its data-stack chunk) and as little Python as the checks allow.
"""
import posix as os  # as in sampler: importing os under 3.14 -S was 2 ms of the sampler's ~5 ms start
import select
import time

PROGRESS_EVERY = 0.5
PARTIAL_EVERY = 1.0
CUT_MARK = ("<outer frames not read>", "<kubectl-wand>", 0)  # outermost frame of a sample that may be cut
NAME_TRIES = 3
MAX_LAG = 1.0  # seconds: a tick later than this is skipped (and counted as missed) rather than taken in a burst


SLEEP_UNDER = 0.05  # a wait shorter than this is a plain sleep; stdin and the wake-up pipe are looked at
LOOK_EVERY = 0.1    # at least this often: measured, a 100 Hz loop of select() on them cost 2.5 ms CPU/s, of
                    # time.sleep 2.0, and the stop then comes within 0.1 s (the agent allows STOP_GRACE)


class Stopper:
    """Why sampling should end early: SIGTERM/SIGINT (through a wake-up pipe, so a long wait ends at once) or
    EOF on stdin (the agent that started us is gone). Waits are select() on these, or under SLEEP_UNDER a sleep
    with a look at them at least every LOOK_EVERY."""

    def __init__(self):
        import signal  # here, not at the top: it imports enum, which the stack operation need not pay for
        self.reason = None
        r, w = os.pipe()
        os.set_blocking(w, False)
        self.wake = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signalled)
        self.watch, self.next_look = [r], 0.0
        try:
            os.fstat(0)
            self.watch.append(0)
        except OSError:
            pass

    def _signalled(self, signum, _frame):
        self.reason = self.reason or "signal"

    def go(self):
        """Wait for the agent's go (a line on stdin) before sampling; False when stopped instead."""
        while self.reason is None:
            ready = select.select(self.watch, [], [])[0]
            if self.wake in ready:
                os.read(self.wake, 512)
            if 0 in ready:
                if os.read(0, 4096):
                    return True
                self.reason = "eof"
                self.watch.remove(0)
        return False

    def wait(self, seconds):
        now = time.monotonic()
        if seconds <= 0 and now < self.next_look:  # a late tick: taken at once
            return self.reason
        seconds = max(0.0, seconds)
        short = seconds < SLEEP_UNDER
        if not short or now >= self.next_look:
            self.next_look = now + LOOK_EVERY
            ready = select.select(self.watch, [], [], 0.0 if short else seconds)[0]
            if 0 in ready and not os.read(0, 4096):
                self.reason = self.reason or "eof"
                self.watch.remove(0)
            if self.wake in ready:
                os.read(self.wake, 512)
        if short and self.reason is None:
            left = seconds - (time.monotonic() - now)
            if left > 0:
                time.sleep(left)  # a signal's handler runs, then it resumes
        return self.reason


class TaskFiles:
    """Each thread's /proc/PID/task/TID/stat kept open and re-read with pread: measured here, a re-read of an
    open file costs ~8 us where open+read+close costs ~48 us, and profiling reads one per thread per tick."""

    def __init__(self, pid):
        self.pid, self.fds = pid, {}

    def stat(self, tid):
        """The thread's stat line (bytes; comm may hold spaces and ')': the state letter follows the last ')'),
        or None once the thread has gone."""
        fd = self.fds.get(tid)
        try:
            if fd is None:
                fd = self.fds[tid] = os.open("/proc/%d/task/%d/stat" % (self.pid, tid), os.O_RDONLY | os.O_CLOEXEC)
            raw = os.pread(fd, 1024, 0)
        except OSError:
            raw = None
        if not raw:
            self.forget(tid)
            return None
        return raw

    def keep_only(self, tids):
        for tid in [t for t in self.fds if t not in tids]:
            self.forget(tid)

    def forget(self, tid):
        fd = self.fds.pop(tid, None)
        if fd is not None:
            os.close(fd)



def checked(walker, frames):
    """(frames, cut reason, unreadable) of a thread the Walker read alone: names read badly marked, a stack as deep
    as the Walker reads said to be cut. Most ticks need neither (see Sampler.tick)."""
    unread = 0
    if walker.unreadable_seen:  # a name read badly is in the walker's cache: look at each frame
        for i, f in enumerate(frames):
            if not readable(f[0], f[1]):
                frames[i], unread = UNREADABLE, unread + 1
    cut = "deeper than %d frames: the outer ones were not read" % MAX_FRAMES if len(frames) >= MAX_FRAMES else None
    return frames, cut, unread


class Sampler:
    """One tick at a time: which threads are on a CPU (or all with --idle; the GIL holder with --gil), their
    stacks, their names."""

    def __init__(self, pid, gil, idle, runtime):
        self.pid, self.gil, self.idle = pid, gil, idle
        self.reader = unwinder(pid, **({"only_active_thread": True} if gil else {"all_threads": True}))
        self.walker, self.why_not = open_walker(pid, runtime)
        self.files = TaskFiles(pid)
        self.pynames, self.names_read, self.names = {}, 0.0, {}
        self.comms = {}  # tid -> the kernel's name as last read (bytes): decoded again only when it changes
        self.name_tries = {}  # tid -> reads of Python's names made while it had none (see keep)

    def keep(self, tid):
        """Whether to record this thread now (Idle: not on a CPU: sleeping in a syscall, waiting for the GIL,
        stopped; --gil keeps the holder whatever its state: a C call that keeps the GIL while it blocks is what
        --gil is for). Its name is noted on the way."""
        raw = self.files.stat(tid)
        if raw is None:
            return self.idle or self.gil  # gone: its last name stays
        end = raw.rindex(b")")
        name = self.pynames.get(tid)
        if name is not None:
            self.names[tid] = name
        else:
            tries = self.name_tries.get(tid, 0)
            # A thread without a Python name yet: Python's names read again at most once a second and at most
            # NAME_TRIES times for it (a thread is in threading._active a moment after it starts; the main
            # thread of an app that never imports threading never is): measured, a read of them every second
            # was ~80 of the sampler's ~500 reads a second beside a one-thread app.
            if tries < NAME_TRIES and self.walker is not None and time.monotonic() > self.names_read + 1:
                self.names_read = time.monotonic()
                self.name_tries[tid] = tries + 1
                self.pynames = python_names(self.walker)
            if tid in self.pynames:
                self.names[tid] = self.pynames[tid]
            else:  # the kernel's copy; names can change while we sample
                comm = raw[raw.index(b"(") + 1:end]
                if self.comms.get(tid) != comm or tid not in self.names:
                    self.comms[tid] = comm
                    self.names[tid] = thread_name(self.pid, tid, comm.decode("utf-8", "replace"))
        return self.idle or self.gil or raw[end + 2:end + 3] == b"R"

    def tick(self):
        """[(tid, (frames, cut reason, unreadable))] of the threads kept, and every thread id seen. Raises
        Failure as sampler.read does."""
        walker = self.walker
        if walker is not None and not self.gil:  # --gil needs the reader: only it knows the GIL holder
            # A torn read raises Unreadable (that tick is read again the reader's way, below).
            try:
                starts = walker.frame_addresses()
                kept, keep, walk = [], self.keep, walker.walk
                for tid, start in starts.items():
                    if keep(tid):
                        frames = walk(start)[0]
                        if not frames:  # no Python frame
                            continue
                        if walker.unreadable_seen or len(frames) >= MAX_FRAMES:
                            kept.append((tid, checked(walker, frames)))
                        else:
                            kept.append((tid, (frames, None, 0)))
                return kept, starts
            except Unreadable:
                pass  # a thread that moved (or ended) under the walk: this tick the reader's way
        threads, _ = read(self.reader.get_stack_trace, self.pid)
        starts, kept = None, []
        for info in threads:
            if not self.keep(info.thread_id) or not info.frame_info:
                continue
            if starts is None:
                try:
                    starts = self.walker.frame_addresses() if self.walker else {}
                except Unreadable as exc:
                    starts, self.walker, self.why_not = {}, None, str(exc)
            kept.append((info.thread_id, thread_frames(self.walker, starts, info, self.why_not)))
        return kept, [info.thread_id for info in threads]


def profile(pid, rate, duration, idle, gil, out, runtime=None, armed=False):
    sampler = Sampler(pid, gil, idle, runtime)
    names, files = sampler.names, sampler.files
    cut_samples, cut_reason, unreadable = 0, None, 0
    stopper = Stopper()
    if armed:
        emit(out, {"armed": True})
        stopper.go()
    opened = time.time()
    counts = {}  # (thread name, frames innermost first as a tuple of (function, file, line)) -> samples
    samples = errors = missed = recorded = 0
    last_error = None
    period = 1.0 / rate
    start = time.monotonic()
    ticks = max(1, int(round(duration * rate)))
    k = 0
    next_progress, next_partial = start + PROGRESS_EVERY, start + PARTIAL_EVERY

    def summary(reason):
        elapsed = time.monotonic() - start
        return aggregate(counts, {
            "window": {"start": round(opened, 3), "end": round(opened + elapsed, 3)},
            "pid": pid, "rate": rate, "duration": round(elapsed, 3), "samples": samples, "errors": errors,
            "missed": missed, "recorded": recorded, "last_error": last_error, "cut": cut_samples,
            "cut_reason": cut_reason, "unreadable": unreadable,
            "achieved_rate": round(samples / elapsed, 2) if elapsed else 0.0, "idle": idle, "gil": gil,
            "stopped_early": reason})

    while stopper.reason is None and k < ticks:
        try:
            kept, seen = sampler.tick()
        except Failure as exc:
            if exc.kind == "exited":
                stopper.reason = "exited"
                break
            errors += 1
            last_error = exc.message
            kept, seen = (), ()
        else:
            samples += 1
        for tid, (frames, cut, unread) in kept:
            unreadable += unread
            if cut:
                cut_samples, cut_reason = cut_samples + 1, cut
                frames.append(CUT_MARK)
            key = (names.get(tid, "?"), tuple(frames))
            counts[key] = counts.get(key, 0) + 1
            recorded += 1
        if len(files.fds) > len(seen) + 8:
            files.keep_only(set(seen))
        # Absolute deadlines (start + k / rate): a late tick does not push the next ones back, so the rate does
        # not drift, and a tick is never taken before its time (never faster than asked). A late tick is still
        # taken, at once, as py-spy takes it: measured at load 35 on 2 CPUs, skipping them cost 5 % of the rate.
        # Only ticks more than MAX_LAG late (the sampler stopped or starved that long) are skipped and counted:
        # fired in a burst they would all read the same moment.
        k += 1
        now = time.monotonic()
        late = now - (start + k * period) - MAX_LAG
        if late > 0:
            behind = min(ticks - k, int(late * rate) + 1)
            missed += behind
            k += behind
        if now >= next_progress:
            emit(out, {"progress": {"samples": samples, "errors": errors, "elapsed": round(now - start, 2)}})
            next_progress = now + PROGRESS_EVERY
        if now >= next_partial and recorded:
            emit(out, {"partial": summary("partial")})
            next_partial = now + PARTIAL_EVERY
        stopper.wait(start + k * period - time.monotonic())  # after the last tick: the end of its period
    return {"profile": summary(stopper.reason)}


def aggregate(counts, meta):
    """The counted stacks as a frame table plus stacks of frame indexes (innermost first), biggest first."""
    index, frames, stacks = {}, [], []
    for (name, chain), count in sorted(counts.items(), key=lambda kv: -kv[1]):
        ids = []
        for key in chain:
            if key not in index:
                index[key] = len(frames)
                frames.append({"function": key[0], "file": key[1], "line": key[2]})
            ids.append(index[key])
        stacks.append({"thread": name, "frames": ids, "count": count})
    return dict(meta, frames=frames, stacks=stacks)
