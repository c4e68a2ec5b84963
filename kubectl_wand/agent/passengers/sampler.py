"""Runs under the *target's* interpreter, beside it: read its stacks from memory, never run code in it.

Usage (the agent passes this file's source with ``-c``; the reader must be the target's own CPython minor version):
  stack PID [--async]
      One JSON object on stdout: every Python thread (native id, name, kernel state, the system call it sleeps
      in, whether it holds the GIL) with its frames innermost first; with --async also the asyncio tasks.
  profile PID --rate HZ --duration S [--idle] [--gil]
      Samples every thread at HZ for S seconds and counts identical stacks per thread name. A progress line
      ``{"progress": {...}}`` about every 0.5 s, then ``{"profile": {...}}``. SIGTERM, SIGINT or EOF on stdin
      (the agent went away) end it early; the final line is still written.
Any failure is ``{"error": MESSAGE, "kind": KIND}``. The reader is ``_remote_debugging.RemoteUnwinder`` (CPython
3.14+): it only reads the target's memory (process_vm_readv), so it works with remote debugging disabled or the
main thread blocked in C, and the target never stops. Standard library only.
"""
import os
import select
import sys
import time

RETRIES = 5  # a read races the running target; a torn read raises and the next one usually succeeds
PROGRESS_EVERY = 0.5
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
        if not os.path.exists("/proc/%d" % pid):
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
            if not os.path.exists("/proc/%d" % pid):
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
    walked, cut, why = None, 0, why_not
    if walker is not None:
        try:
            walked, cut = walker.walk(starts.get(info.thread_id, 0))
        except Unreadable as exc:
            walked, why = None, "reading past a C call failed: %s" % exc
        else:
            last = inner[-1] if inner else None
            if cut != len(inner) or last and (walked[cut - 1][2] != last[2] or
                                              readable(*last[:2]) and walked[cut - 1][0] != last[0]):
                walked, why = None, "the thread moved between two reads"
    frames = inner + (walked[cut:] if walked is not None else [])
    unread = 0
    for i in bad + list(range(len(inner), len(frames))):
        if i < len(inner) and walked is not None and readable(*walked[i][:2]):
            frames[i] = walked[i]
        elif not readable(*frames[i][:2]):
            frames[i], unread = UNREADABLE, unread + 1
    return frames, (None if walked is not None else why), unread


def stack(pid, want_async, runtime=None):
    reader = unwinder(pid, all_threads=True)
    walker, why_not = open_walker(pid, runtime)
    threads, attempts = read(reader.get_stack_trace, pid)
    try:
        starts = walker.frame_addresses() if walker else {}
    except Unreadable as exc:
        walker, why_not = None, str(exc)
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
        frames, cut, unread = thread_frames(walker, starts, info, why_not)
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


# --- Frames past CPython 3.14's reader ---------------------------------------------------------------------
# Measured on 3.14.10: RemoteUnwinder.get_stack_trace stops at the first frame a C call pushed (an entry frame,
# owner FRAME_OWNED_BY_INTERPRETER): a class's __call__, exec() under ``python -m``, and in 3.14 every worker
# thread (Thread._bootstrap_inner runs self.run through Context.run) lose their outer frames, silently. py-spy
# shows them. Walker reads the rest of the chain from /proc/PID/mem with the target's own _Py_DebugOffsets.

# _Py_DebugOffsets (Include/internal/pycore_debug_offsets.h, 3.14): after the 8-byte cookie, uint64 fields in this
# order; only the ones we read are named.
OFFSET_FIELDS = {"version": 0, "interpreters_head": 4, "threads_head": 8, "ts_next": 23, "current_frame": 25,
                 "native_thread_id": 27, "frame_previous": 31, "frame_executable": 32, "frame_instr_ptr": 33,
                 "frame_owner": 35, "code_filename": 39, "code_qualname": 41, "code_linetable": 42,
                 "code_firstlineno": 43, "code_adaptive": 47, "ob_type": 50, "bytes_size": 74, "bytes_sval": 75,
                 "str_state": 77, "str_length": 78, "str_ascii_size": 79, "thread_id": 26, "imports_modules": 11,
                 "dict_keys": 66, "dict_values": 67, "long_tag": 71, "long_digits": 72}
MAX_TEXT = 4096    # characters of a name or file; the target chose them
MAX_LINETABLE = 1 << 20


class Unreadable(Exception):
    pass


class Walker:
    """A thread's whole frame chain, innermost first, as (function, file, line), read from the target's memory.

    Checked before use: the offsets it reads are the ones this interpreter (the target's own build) has for its
    own objects, and a walk must agree with the frames _remote_debugging read before it is used to extend them."""

    def __init__(self, pid, runtime):
        self.fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY | os.O_CLOEXEC)
        self.code_type = None
        self.codes = {}  # code object address -> (qualname, filename, firstlineno, linetable): reused while profiling
        raw = self.read(runtime, 8 + 8 * 80)
        if raw[:8] != b"xdebugpy":
            raise Unreadable("no _Py_DebugOffsets at the runtime's address")
        fields = [int.from_bytes(raw[8 + 8 * i:16 + 8 * i], sys.byteorder) for i in range(80)]
        self.off = {name: fields[i] for name, i in OFFSET_FIELDS.items()}
        if self.off["version"] >> 16 != sys.hexversion >> 16:
            raise Unreadable("the target runs another Python than this reader")
        self.runtime = runtime
        self.check_self()

    def check_self(self):
        """Our own code object read back from our own memory with the offsets the target gave: they must match."""
        code = Walker.__init__.__code__
        me = Walker.__new__(Walker)
        me.off, me.codes, me.code_type = self.off, {}, None
        me.fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if me.code_info(id(code))[:3] != (code.co_qualname, code.co_filename, code.co_firstlineno):
                raise Unreadable("this reader's offsets do not fit its own objects")
        finally:
            os.close(me.fd)

    def close(self):
        os.close(self.fd)

    def read(self, addr, size):
        try:
            data = os.pread(self.fd, size, addr)
        except (OSError, OverflowError, ValueError) as exc:
            raise Unreadable("cannot read %d bytes at 0x%x: %s" % (size, addr, exc))
        if len(data) != size:
            raise Unreadable("short read at 0x%x" % addr)
        return data

    def ptr(self, addr):
        return int.from_bytes(self.read(addr, 8), sys.byteorder)

    def text(self, addr):
        off = self.off
        head = self.read(addr, off["str_ascii_size"])
        length = int.from_bytes(head[off["str_length"]:off["str_length"] + 8], sys.byteorder)
        state = int.from_bytes(head[off["str_state"]:off["str_state"] + 4], sys.byteorder)
        kind, compact, ascii = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
        if not compact or kind not in (1, 2, 4) or not 0 <= length <= MAX_TEXT:
            raise Unreadable("not a string the reader knows")
        data = self.read(addr + off["str_ascii_size"] + (0 if ascii else 16), length * kind)
        codec = "ascii" if ascii else {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            raise Unreadable("a torn string")

    def code_info(self, addr):
        info = self.codes.get(addr)
        if info is None:
            off = self.off
            linetable = self.ptr(addr + off["code_linetable"])
            size = int.from_bytes(self.read(linetable + off["bytes_size"], 8), sys.byteorder)
            if not 0 <= size <= MAX_LINETABLE:
                raise Unreadable("a torn line table")
            info = self.codes[addr] = (
                self.text(self.ptr(addr + off["code_qualname"])), self.text(self.ptr(addr + off["code_filename"])),
                int.from_bytes(self.read(addr + off["code_firstlineno"], 4), sys.byteorder, signed=True),
                self.read(linetable + off["bytes_sval"], size))
        return info

    def dict_items(self, keys, values=0, limit=1 << 16):
        """[(key address, value address)] of a dict's keys object (PyDictKeysObject, 3.14: the sizes at 8-10, the
        entry count at 24, the index table at 32) with its values array (split or inline: PyDictValues, the
        pointers from 8) or values in the entries. Checked on our own dicts first (Names)."""
        head = self.read(keys, 32)
        index_bytes, kind, count = 1 << head[9], head[10], self.word(head, 24)
        if not 0 <= count <= limit or index_bytes > 1 << 24:
            raise Unreadable("a torn dict")
        size = 24 if kind == 0 else 16  # general entries: hash, key, value; str-keyed: key, value
        raw = self.read(keys + 32 + index_bytes, count * size) if count else b""
        table = self.read(values + 8, count * 8) if values and count else b""
        out = []
        for i in range(count):
            key = self.word(raw, i * size + (8 if kind == 0 else 0))
            value = self.word(table, i * 8) if values else self.word(raw, i * size + size - 8)
            if key and value:
                out.append((key, value))
        return out

    def lookup(self, items, name):
        for key, value in items:
            try:
                if self.text(key) == name:
                    return value
            except Unreadable:
                continue
        return 0

    def dict_get(self, addr, name):
        off = self.off
        return self.lookup(self.dict_items(self.ptr(addr + off["dict_keys"]), self.ptr(addr + off["dict_values"])),
                           name)

    def frame_addresses(self):
        """{native thread id: its innermost frame's address} of the main interpreter's threads."""
        off, out = self.off, {}
        interp = self.ptr(self.runtime + off["interpreters_head"])
        tstate = self.ptr(interp + off["threads_head"]) if interp else 0
        self.idents = {}  # pthread ident -> native thread id, for Names
        while tstate and len(out) < 10000:
            native = self.ptr(tstate + off["native_thread_id"])
            out[native] = self.ptr(tstate + off["current_frame"])
            self.idents[self.ptr(tstate + off["thread_id"])] = native
            tstate = self.ptr(tstate + off["ts_next"])
        return out

    def walk(self, frame):
        """(frames, cut): every Python frame from ``frame`` outwards, innermost first, and how many of them come
        before the first C call's entry frame (where _remote_debugging stops). Entry frames have no code of their
        own and are passed over, as py-spy does."""
        off, out, cut = self.off, [], None
        span = max(off["frame_previous"], off["frame_executable"], off["frame_instr_ptr"], off["frame_owner"]) + 8
        while frame and len(out) < MAX_FRAMES:
            raw = self.read(frame, span)
            owner = raw[off["frame_owner"]]
            executable = self.word(raw, off["frame_executable"]) & ~7
            if owner >= 3 or not executable:  # owned by the interpreter / the C stack: an entry frame
                if cut is None and out:
                    cut = len(out)
            elif self.is_code(executable):
                qualname, filename, first, table = self.code_info(executable)
                index = (self.word(raw, off["frame_instr_ptr"]) - executable - off["code_adaptive"]) // 2
                out.append((qualname, filename, line_of(table, first, index)))
            frame = self.word(raw, off["frame_previous"])
        return out, len(out) if cut is None else cut

    @staticmethod
    def word(raw, at):
        return int.from_bytes(raw[at:at + 8], sys.byteorder)

    def is_code(self, addr):
        if addr in self.codes:
            return True
        kind = self.ptr(addr + self.off["ob_type"])
        if self.code_type is None:
            self.code_type = kind  # the innermost frame runs code; learnt there, it tells code from other executables
        return kind == self.code_type

class Names:
    """Python's own thread names (threading.Thread.name; the kernel keeps only 15 bytes of them), read as py-spy
    reads them: threading._active in sys.modules, each Thread's ``_name``. An instance's attributes are in its
    managed dict (24 bytes before it) or inline after it, keyed by its type's cached keys; where those live in a
    heap type is learnt from a class of our own, and the whole read is first done on our own objects: a build
    it does not fit gets no names (the kernel's copy is shown, and said to be cut)."""

    def __init__(self, walker):
        self.walker = walker
        me = Walker.__new__(Walker)
        me.off, me.codes, me.code_type = walker.off, {}, None
        me.fd = os.open("/proc/self/mem", os.O_RDONLY | os.O_CLOEXEC)
        try:
            kind = type("Probe", (), {"__qualname__": "kubectl-wand.probe"})
            words = me.read(id(kind), type.__basicsize__)
            at = [i for i in range(0, len(words) - 7, 8) if me.word(words, i) == id(kind.__qualname__)]
            if len(at) != 1 or me.word(words, 32) != kind.__basicsize__:
                raise Unreadable("this interpreter's heap types are not laid out as expected")
            self.cached_keys = at[0] + 8  # PyHeapTypeObject: ht_name, ht_slots, ht_qualname, ht_cached_keys
            inline, managed = kind(), kind()
            inline._name = "inline-name"
            managed.__dict__["_name"] = "managed-name"
            self.walker = me  # the check reads our own memory
            checked = [self.attr(inline, "_name"), self.attr(managed, "_name")]
            if [me.text(a) if a else None for a in checked] != ["inline-name", "managed-name"]:
                raise Unreadable("this interpreter's objects are not laid out as expected")
        finally:
            os.close(me.fd)
            self.walker = walker

    def attr(self, obj, name):
        w = self.walker
        obj = obj if isinstance(obj, int) and not isinstance(obj, bool) else id(obj)
        managed = w.ptr(obj - 24)  # the managed dict pointer, before the object's header
        if managed:
            return w.dict_get(managed, name)
        kind = w.ptr(obj + w.off["ob_type"])
        values = obj + w.ptr(kind + 32)  # tp_basicsize: the inline values follow the object
        if not w.read(values + 3, 1)[0]:  # PyDictValues.valid
            return 0
        return w.lookup(w.dict_items(w.ptr(kind + self.cached_keys), values, limit=255), name)

    def read(self):
        """{native thread id: Python's name}; threads without one are left out."""
        w, off, out = self.walker, self.walker.off, {}
        w.frame_addresses()  # pthread idents -> native ids, as they are now
        interp = w.ptr(w.runtime + off["interpreters_head"])
        module = w.dict_get(w.ptr(interp + off["imports_modules"]), "threading")
        if not module:
            return out
        active = w.dict_get(w.ptr(module + 16), "_active")  # PyModuleObject.md_dict
        for key, thread in w.dict_items(w.ptr(active + off["dict_keys"]), w.ptr(active + off["dict_values"]),
                                        limit=100000) if active else ():
            native = w.idents.get(self.integer(key))
            name = self.attr(thread, "_name")
            if native is not None and name:
                out[native] = w.text(name)
        return out

    def integer(self, addr):
        w = self.walker
        tag = w.ptr(addr + w.off["long_tag"])
        digits = w.read(addr + w.off["long_digits"], 4 * min(tag >> 3, 4))
        value = sum(int.from_bytes(digits[4 * i:4 * i + 4], sys.byteorder) << (30 * i) for i in range(len(digits) // 4))
        return -value if tag & 3 == 2 else value


def line_of(table, line, index):
    """The line of code unit ``index`` from a code object's location table (Objects/locations.md, 3.11+)."""
    i, addr, n = 0, 0, len(table)

    def varint():
        nonlocal i
        b = table[i]
        i += 1
        value, shift = b & 63, 6
        while b & 64 and i < n:
            b = table[i]
            i += 1
            value |= (b & 63) << shift
            shift += 6
        return value

    while i < n:
        b = table[i]
        i += 1
        code, length = (b >> 3) & 15, (b & 7) + 1
        if code == 15:
            delta = None
        elif code == 14 or code == 13:
            v = varint()
            delta = -(v >> 1) if v & 1 else v >> 1
            if code == 14:
                varint(), varint(), varint()
        elif code >= 10:
            delta = code - 10
            i += 2
        else:
            delta = 0
            i += 1
        if delta is not None:
            line += delta
        if addr <= index < addr + length:
            return line if delta is not None else None
        addr += length
    return None


class Stopper:
    """Why sampling should end early: SIGTERM/SIGINT (through a wake-up pipe, so a sleep ends at once) or EOF
    on stdin (the agent that started us is gone). The sampler's only wait is select() on these."""

    def __init__(self):
        import signal  # here, not at the top: it imports enum, which the stack operation need not pay for
        self.reason = None
        r, w = os.pipe()
        os.set_blocking(w, False)
        self.wake = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signalled)
        self.watch = [r]
        try:
            os.fstat(0)
            self.watch.append(0)
        except OSError:
            pass

    def _signalled(self, signum, _frame):
        self.reason = self.reason or "signal"

    def wait(self, seconds):
        ready = select.select(self.watch, [], [], max(0.0, seconds))[0]
        if 0 in ready and not os.read(0, 4096):
            self.reason = self.reason or "eof"
            self.watch.remove(0)
        if self.wake in ready:
            os.read(self.wake, 512)
        return self.reason


class TaskFiles:
    """Each thread's /proc/PID/task/TID/stat kept open and re-read with pread: measured here, a re-read of an
    open file costs ~8 us where open+read+close costs ~48 us, and profiling reads one per thread per tick."""

    def __init__(self, pid):
        self.pid, self.fds = pid, {}

    def stat(self, tid):
        """(comm, state letter), or (None, None) once the thread has gone."""
        fd = self.fds.get(tid)
        try:
            if fd is None:
                fd = self.fds[tid] = os.open("/proc/%d/task/%d/stat" % (self.pid, tid), os.O_RDONLY | os.O_CLOEXEC)
            raw = os.pread(fd, 1024, 0).decode("utf-8", "replace")
        except OSError:
            self.forget(tid)
            return None, None
        if not raw:
            self.forget(tid)
            return None, None
        head, _, rest = raw.rpartition(")")
        return head.partition("(")[2], rest.split(None, 1)[0]

    def keep_only(self, tids):
        for tid in [t for t in self.fds if t not in tids]:
            self.forget(tid)

    def forget(self, tid):
        fd = self.fds.pop(tid, None)
        if fd is not None:
            os.close(fd)


CUT_MARK = ("<outer frames not read>", "<kubectl-wand>", 0)  # outermost frame of a sample that may be cut


def profile(pid, rate, duration, idle, gil, out, runtime=None):
    reader = unwinder(pid, **({"only_active_thread": True} if gil else {"all_threads": True}))
    walker, why_not = open_walker(pid, runtime)
    cut_samples, cut_reason, unreadable = 0, None, 0
    pynames, names_read = {}, 0.0
    stopper = Stopper()
    files = TaskFiles(pid)
    counts = {}  # (thread name, frames innermost first as a tuple of FrameInfo) -> samples
    names = {}
    samples = errors = missed = recorded = 0
    last_error = None
    period = 1.0 / rate
    start = time.monotonic()
    ticks = max(1, int(round(duration * rate)))
    k = 0
    next_progress = start + PROGRESS_EVERY
    while stopper.reason is None and k < ticks:
        try:
            threads, _ = read(reader.get_stack_trace, pid)
        except Failure as exc:
            if exc.kind == "exited":
                stopper.reason = "exited"
                break
            errors += 1
            last_error = exc.message
            threads = ()
        else:
            samples += 1
        starts = None
        for info in threads:
            tid = info.thread_id
            comm, letter = files.stat(tid)
            if tid not in pynames and walker is not None and time.monotonic() > names_read + 1:
                names_read = time.monotonic()  # a new thread: its Python name, at most once a second
                pynames = python_names(walker)
            if tid in pynames:
                names[tid] = pynames[tid]
            elif comm is not None:  # names can change while we sample; a thread gone keeps its last one
                names[tid] = thread_name(pid, tid, comm)
            # Idle: not on a CPU (sleeping in a syscall, waiting for the GIL, stopped). --gil keeps the holder
            # whatever its state: a C call that keeps the GIL while it blocks is what --gil is for.
            if not (idle or gil) and letter != "R" or not info.frame_info:
                continue
            if starts is None:
                try:
                    starts = walker.frame_addresses() if walker else {}
                except Unreadable as exc:
                    starts, walker, why_not = {}, None, str(exc)
            frames, cut, unread = thread_frames(walker, starts, info, why_not)
            unreadable += unread
            if cut:
                cut_samples, cut_reason = cut_samples + 1, cut
                frames.append(CUT_MARK)
            key = (names.get(tid, "?"), tuple(frames))
            counts[key] = counts.get(key, 0) + 1
            recorded += 1
        if len(files.fds) > len(threads) + 8:
            files.keep_only({info.thread_id for info in threads})
        # Absolute deadlines (start + k / rate): a late tick does not push the next ones back, so the rate does
        # not drift; ticks already missed entirely are skipped (and counted), never fired in a burst.
        k += 1
        now = time.monotonic()
        behind = int((now - start) * rate) - k
        if behind > 0:
            missed += behind
            k += behind
        if now >= next_progress:
            emit(out, {"progress": {"samples": samples, "errors": errors, "elapsed": round(now - start, 2)}})
            next_progress = now + PROGRESS_EVERY
        stopper.wait(start + k * period - time.monotonic())  # after the last tick: the end of its period
    elapsed = time.monotonic() - start
    return {"profile": aggregate(counts, {
        "pid": pid, "rate": rate, "duration": round(elapsed, 3), "samples": samples, "errors": errors,
        "missed": missed, "recorded": recorded, "last_error": last_error, "cut": cut_samples,
        "cut_reason": cut_reason, "unreadable": unreadable,
        "achieved_rate": round(samples / elapsed, 2) if elapsed else 0.0,
        "idle": idle, "gil": gil, "stopped_early": stopper.reason})}


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
    opts = {"async": False, "idle": False, "gil": False, "rate": 100.0, "duration": 10.0, "runtime": None}
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
            emit(out, profile(pid, opts["rate"], opts["duration"], opts["idle"], opts["gil"], out, opts["runtime"]))
        else:
            raise Failure("usage", "unknown sampler operation %r" % op)
    except Failure as exc:
        emit(out, {"error": exc.message, "kind": exc.kind})


if __name__ == "__main__":
    main(sys.argv[1:], sys.stdout)
