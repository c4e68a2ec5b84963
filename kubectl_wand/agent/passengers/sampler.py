"""Runs under the *target's* interpreter, beside it: read its stacks from memory, never run code in it.

Usage (the agent passes this file's source with ``-c``; the reader must be the target's own CPython minor version):
  stack PID [--async]
      One JSON object on stdout: every Python thread (native id, name, kernel state, the system call it sleeps
      in, whether it holds the GIL) with its frames innermost first; with --async also the asyncio tasks.
  profile PID --rate HZ --duration S [--idle] [--gil] [--armed]
      Samples every thread at HZ for S seconds and counts identical stacks per thread name. A progress line
      ``{"progress": {...}}`` about every 0.5 s, what was counted so far ``{"partial": {...}}`` every second (a
      pod ended by a rollout takes the sampler with it: what reached the CLI is kept), then ``{"profile": {...}}``
      (its ``window``: the wall-clock start and end of the sampling). With --armed it first gets ready, writes
      ``{"armed": true}`` and starts sampling when a line comes on stdin (the agent's go: every sampler's window
      opens at once). SIGTERM, SIGINT or EOF on stdin (the agent went away) end it early; the final line is still
      written.
Any failure is ``{"error": MESSAGE, "kind": KIND}``. The reader is ``_remote_debugging.RemoteUnwinder`` (CPython
3.14+): it only reads the target's memory (process_vm_readv), so it works with remote debugging disabled or the
main thread blocked in C, and the target never stops. Standard library only.
The profile operation's loop is in profiler.py, shipped in front of this file (agent/observe.py: sampler_source).
"""
import posix as os  # posix has all the sampler uses; importing os under 3.14 -S was 2 ms of its ~5 ms start
import sys

RETRIES = 5  # a read races the running target; a torn read raises and the next one usually succeeds
SYSCALLS = {  # the calls a thread usually sleeps in, by architecture; others print as "syscall N"
    "x86_64": {0: "read", 1: "write", 7: "poll", 17: "pread64", 23: "select", 24: "sched_yield", 34: "pause",
               35: "nanosleep",
               42: "connect", 43: "accept", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
               61: "wait4", 73: "flock", 128: "rt_sigtimedwait", 130: "rt_sigsuspend", 202: "futex",
               # restart_syscall: a sleep resumed after a signal (a stopped and continued process, a debugger)
               219: "restart_syscall", 220: "semtimedop",
               230: "clock_nanosleep", 232: "epoll_wait", 247: "waitid", 270: "pselect6", 271: "ppoll",
               281: "epoll_pwait", 288: "accept4", 299: "recvmmsg", 441: "epoll_pwait2"},
    "aarch64": {22: "epoll_pwait", 32: "flock", 63: "read", 64: "write", 67: "pread64", 72: "pselect6",
                73: "ppoll", 95: "waitid", 98: "futex", 101: "nanosleep", 115: "clock_nanosleep",
                124: "sched_yield", 128: "restart_syscall", 192: "semtimedop",
                133: "rt_sigsuspend", 137: "rt_sigtimedwait", 202: "accept", 203: "connect", 206: "sendto",
                207: "recvfrom", 211: "sendmsg", 212: "recvmsg", 242: "accept4", 243: "recvmmsg", 260: "wait4",
                441: "epoll_pwait2"},
}
STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "stopped", "Z": "zombie",
          "X": "dead", "I": "idle"}


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Failure(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


MAX_FRAMES = 1024  # per thread: _remote_debugging's own limit (process_frame_chain) in CPython 3.14


def unwinder(pid, **kw):
    try:
        import _remote_debugging
    except ImportError:
        raise Failure("version", "this interpreter (%s) has no _remote_debugging: stack and profile need CPython "
                                 "3.14+" % sys.version.split()[0])
    try:
        return _remote_debugging.RemoteUnwinder(pid, **kw)
    except PermissionError as exc:
        raise Failure("permission", "cannot read the memory of %d (%s): run as its user or root, or grant "
                                    "CAP_SYS_PTRACE" % (pid, exc.strerror or exc))
    except Exception as exc:
        if not exists("/proc/%d" % pid):
            raise Failure("exited", "process %d exited" % pid)
        raise Failure("runtime", "cannot read the Python runtime of %d: %s" % (pid, exc))


def read(call, pid):
    """call() retried while it fails on a moving target; (result, attempts)."""
    for attempt in range(1, RETRIES + 1):
        try:
            return call(), attempt
        except PermissionError as exc:
            raise Failure("permission", "cannot read the memory of %d: %s" % (pid, exc))
        except ProcessLookupError:
            raise Failure("exited", "process %d exited" % pid)
        except Exception as exc:  # RuntimeError / OSError / UnicodeDecodeError from a torn read
            last = exc
            if str(exc).startswith("Too many stack frames"):  # not a moving target: retrying cannot help
                raise Failure("runtime", "a thread of %d is more than %d frames deep (deep recursion?): CPython "
                                         "3.14's stack reader (_remote_debugging) stops there, so this process's "
                                         "stacks cannot be read; exec-py can print them (traceback.print_stack)"
                              % (pid, MAX_FRAMES))
            if not exists("/proc/%d" % pid):
                raise Failure("exited", "process %d exited" % pid)
    raise Failure("runtime", "the stack of %d kept changing under the reader (%d tries): %s" % (pid, RETRIES, last))


def frame(f):
    if not readable(f.funcname, f.filename):  # an asyncio task's frame: not read again (see readable)
        return {"function": UNREADABLE[0], "file": UNREADABLE[1], "line": None}
    return {"function": f.funcname, "file": f.filename, "line": f.lineno}


def task_stat(pid, tid):
    """(comm, state letter) of one thread from /proc/PID/task/TID/stat, or (None, None) once it has gone."""
    try:
        with open("/proc/%d/task/%d/stat" % (pid, tid), "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None, None
    head, _, rest = raw.rpartition(")")  # comm may hold spaces and ')': split at the last one
    return head.partition("(")[2], rest.split(None, 1)[0]


def syscall_of(pid, tid):
    """The system call a sleeping thread waits in (None when running or unreadable)."""
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid), "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    try:
        nr = int(text.split()[0])
    except (ValueError, IndexError):  # "running"
        return None
    if nr < 0:
        return None  # blocked outside a system call (a fault, a stop)
    return SYSCALLS.get(os.uname().machine, {}).get(nr, "syscall %d" % nr)


def thread_name(pid, tid, comm):
    """Python 3.14 names a thread's kernel task after threading.Thread.name (cut to 15 bytes by Linux); the
    main thread's kernel name is the process's, so it gets Python's own name for it."""
    return "MainThread" if tid == pid else (comm or "?")


def name_cut(pid, tid, comm):
    """True when the name shown may be the first 15 bytes of a longer Python name: the kernel keeps no more
    (TASK_COMM_LEN), and Python's own (threading.Thread.name, in the target's memory) is not read."""
    return tid != pid and len((comm or "").encode("utf-8", "surrogateescape")) >= 15


def python_names(walker):
    """{native thread id: threading.Thread.name}, or {} where they cannot be read (see Names)."""
    if walker is None:
        return {}
    try:
        if getattr(walker, "names", None) is None:
            walker.names = Names(walker)
        return walker.names.read()
    except (Unreadable, OSError):
        return {}


def open_walker(pid, runtime):
    """(Walker or None, why not)."""
    if not runtime:
        return None, "the runtime's address is unknown"
    try:
        return Walker(pid, runtime), None
    except (Unreadable, OSError) as exc:
        return None, str(exc)


UNREADABLE = ("<unreadable>", "<unreadable>", None)
MOVED = "the thread moved between two reads"


def readable(function, file):
    """False for a name read badly: measured, 3.14's reader decodes a non-ASCII name as raw UCS-2/4 bytes with
    NULs in it, and a torn read gives empty names. No real function or file name holds a NUL."""
    return bool(function) and "\x00" not in function and "\x00" not in file


def thread_frames(walker, starts, info, why_not):
    """(frames innermost first as (function, file, line), why outer frames may be missing or None, how many frames
    were unreadable). The reader's frames, names read badly read again by the walker (else <unreadable>), then
    the walker's frames past the reader's cut."""
    inner = [(f.funcname, f.filename, f.lineno) for f in info.frame_info]
    bad = [i for i, f in enumerate(inner) if not readable(f[0], f[1])]
    walked, cut, why, same = None, 0, why_not, False
    if walker is not None:
        try:
            walked, cut = walker.walk(starts.get(info.thread_id, 0))
        except Unreadable as exc:
            walked, why = None, "reading past a C call failed: %s" % exc
        else:
            # The two reads are two moments of a running thread: above the C call its depth and line may have
            # changed (a call made or returned, a line run), and the frames past the C call are still the same
            # if the frame just inside it is the same function. A name read badly can only be checked at the same
            # depth and line.
            last = inner[-1] if inner else None
            same = cut == len(inner) and (not last or walked[cut - 1][2] == last[2])
            if last is None:
                agree = same
            else:
                agree = cut > 0 and (walked[cut - 1][0] == last[0] if readable(*last[:2]) else same)
            if not agree:
                walked, why = None, MOVED
    frames = inner + (walked[cut:] if walked is not None else [])
    unread = 0
    for i in bad + list(range(len(inner), len(frames))):
        if i < len(inner) and walked is not None and same and readable(*walked[i][:2]):
            frames[i] = walked[i]
        elif not readable(*frames[i][:2]):
            frames[i], unread = UNREADABLE, unread + 1
    return frames, (None if walked is not None else why), unread


def stack(pid, want_async, runtime=None):
    reader = unwinder(pid, all_threads=True)
    walker, why_not = open_walker(pid, runtime)
    attempts = 0
    for _ in range(RETRIES):  # a thread that left its C call between the two reads is read again, both reads
        threads, tries = read(reader.get_stack_trace, pid)
        attempts += tries
        try:
            starts = walker.frame_addresses() if walker else {}
        except Unreadable as exc:
            walker, why_not, starts = None, str(exc), {}
        walks = {info.thread_id: thread_frames(walker, starts, info, why_not) for info in threads}
        if all(cut != MOVED for _, cut, _ in walks.values()):
            break
    pynames = python_names(walker)
    gil, gil_known = None, True
    try:
        # Who holds the GIL, read a moment after the stacks (a second read: "where known").
        active, _ = read(unwinder(pid, only_active_thread=True).get_stack_trace, pid)
        gil = active[0].thread_id if active else None
    except Failure:
        gil_known = False
    out = []
    for info in threads:
        tid = info.thread_id
        comm, letter = task_stat(pid, tid)
        state = STATES.get(letter, letter or "gone")
        frames, cut, unread = walks[tid]
        out.append({"tid": tid, "name": pynames.get(tid) or thread_name(pid, tid, comm),
                    "name_cut": tid not in pynames and name_cut(pid, tid, comm),
                    "comm": comm, "main": tid == pid,
                    "state": state, "syscall": syscall_of(pid, tid) if letter in ("S", "D") else None,
                    "gil": (tid == gil) if gil_known else None,
                    "frames": [{"function": f, "file": n, "line": line} for f, n, line in frames],
                    "cut": cut, "unreadable": unread})
    if walker is not None:
        walker.close()
    out.sort(key=lambda t: (not t["main"], t["tid"]))
    result = {"pid": pid, "threads": out, "gil_holder": gil, "gil_known": gil_known, "attempts": attempts}
    if want_async:
        result.update(async_tasks(reader, pid))
    return result


def async_tasks(reader, pid):
    """Every asyncio task: id, name, thread, its own coroutine stack (innermost first) and who awaits it."""
    try:
        awaited, _ = read(reader.get_all_awaited_by, pid)
    except Failure as exc:
        if "AsyncioDebug" in exc.message:  # the _asyncio module is not loaded: no event loop, no tasks
            return {"tasks": [], "asyncio": False}
        return {"tasks": [], "asyncio": None, "async_error": exc.message}
    tasks = []
    for per_thread in awaited:
        for task in per_thread.awaited_by:
            frames = [frame(f) for coro in task.coroutine_stack for f in coro.call_stack]
            # In an awaiter record ``task_name`` holds the awaiting task's id (as in asyncio.tools._index).
            waiters = [{"task": coro.task_name, "frames": [frame(f) for f in coro.call_stack]}
                       for coro in task.awaited_by]
            tasks.append({"id": task.task_id, "name": task.task_name, "thread": per_thread.thread_id,
                          "frames": frames, "awaited_by": waiters})
    return {"tasks": tasks, "asyncio": True}



ESCAPES = {i: "\\u%04x" % i for i in range(32)}
ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def encode(obj) -> str:
    """JSON for the plain data we print. Not the json module: measured beside a chrooted target, importing
    it (it pulls in re, enum, collections) took 45 ms of the stack operation's 109."""
    if isinstance(obj, str):
        return '"' + obj.translate(ESCAPES) + '"'
    if obj is None or isinstance(obj, bool):
        return "null" if obj is None else ("true" if obj else "false")
    if isinstance(obj, (int, float)):
        return repr(obj) if obj == obj and obj not in (float("inf"), float("-inf")) else "null"
    if isinstance(obj, dict):
        return "{" + ", ".join(encode(str(k)) + ": " + encode(v) for k, v in obj.items()) + "}"
    return "[" + ", ".join(encode(v) for v in obj) + "]"


def emit(out, obj):
    # A lone surrogate in a name read from the target becomes the text \udcXX: a valid JSON escape.
    out.buffer.write(encode(obj).encode("utf-8", "backslashreplace") + b"\n")
    out.flush()


def parse(argv):
    op, pid, rest = argv[0], int(argv[1]), argv[2:]
    opts = {"async": False, "idle": False, "gil": False, "armed": False, "rate": 100.0, "duration": 10.0,
            "runtime": None}
    while rest:
        flag = rest.pop(0).lstrip("-")
        if flag in ("rate", "duration"):
            opts[flag] = float(rest.pop(0))
        elif flag == "runtime":
            opts[flag] = int(rest.pop(0))
        elif flag in opts:
            opts[flag] = True
        else:
            raise Failure("usage", "unknown sampler option %r" % flag)
    if not (0 < opts["rate"] <= 1000) or opts["duration"] <= 0:
        raise Failure("usage", "--rate must be in (0, 1000] Hz and --duration above 0 s")
    return op, pid, opts


def main(argv, out):
    try:
        op, pid, opts = parse(argv)
        if op == "stack":
            emit(out, stack(pid, opts["async"], opts["runtime"]))
        elif op == "profile":
            emit(out, profile(pid, opts["rate"], opts["duration"], opts["idle"], opts["gil"], out, opts["runtime"],
                              opts["armed"]))
        else:
            raise Failure("usage", "unknown sampler operation %r" % op)
    except Failure as exc:
        emit(out, {"error": exc.message, "kind": exc.kind})


if __name__ == "__main__":
    main(sys.argv[1:], sys.stdout)
