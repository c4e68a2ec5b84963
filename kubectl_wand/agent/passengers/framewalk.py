"""Frames and thread names read from the target's memory, where CPython 3.14's ``_remote_debugging`` falls short.

Shipped in front of ``sampler`` (agent/observe.py: sampler_source), in one namespace: the sampler uses Walker,
Names and Unreadable. Runs under the target's own interpreter (the same build), reads /proc/PID/mem only.

Measured on 3.14.10: RemoteUnwinder.get_stack_trace stops at the first frame a C call pushed (an entry frame, owner
FRAME_OWNED_BY_INTERPRETER): a class's __call__ (click's Command), exec() under ``python -m``, and in 3.14 every
worker thread (Thread._bootstrap_inner runs self.run through Context.run) lose their outer frames, silently; it
decodes non-ASCII names as raw UCS-2/4 bytes; it gives no thread names. py-spy shows all three. Walker reads the
rest of the chain with the target's own _Py_DebugOffsets; Names reads threading.Thread.name.
"""
import posix as os  # as the sampler (after which it is shipped): not os, 2 ms to import under -S
import sys

MAX_FRAMES = 1024  # per thread, as _remote_debugging

# _Py_DebugOffsets (Include/internal/pycore_debug_offsets.h, 3.14): after the 8-byte cookie, uint64 fields in this
# order; only the ones we read are named.
OFFSET_FIELDS = {
    "version": 0, "free_threaded": 1, "interpreters_head": 4, "threads_head": 8, "imports_modules": 11,
    "ts_next": 23, "current_frame": 25, "thread_id": 26, "native_thread_id": 27, "datastack_chunk": 28,
    "frame_previous": 31, "frame_executable": 32, "frame_instr_ptr": 33, "frame_owner": 35,
    "code_filename": 39, "code_qualname": 41, "code_linetable": 42, "code_firstlineno": 43, "code_adaptive": 47,
    "ob_type": 50, "dict_keys": 66, "dict_values": 67, "long_tag": 71, "long_digits": 72, "bytes_size": 74,
    "bytes_sval": 75, "str_state": 77, "str_length": 78, "str_ascii_size": 79}
MAX_TEXT = 4096    # characters of a name or file; the target chose them
MAX_LINETABLE = 1 << 20
MAX_CHUNK = 1 << 22  # bytes of a data-stack chunk read at once (CPython's are 16 KiB, more for huge frames)
CHUNK_AT_ONCE = 1 << 16  # up to this many bytes a chunk is read without reading its size first


# Where a thread's chain ends: the entry frame of the C call that runs its outermost Python frame (on the C stack,
# previous NULL). While that call runs, its C stack is taken, so no other entry frame can lie at that address; the
# chain is known to end there (one read a thread a tick fewer: measured, a tick cost ~5 reads) when it reaches it
# from the same frame, at the same address, running the same code, and that code is one that runs for the whole
# life of the thread: the main module's (or runpy's, under -m) or a threading.Thread's bootstrap. A thread that C
# code calls into again and again (its outermost call returns) is read to the end every tick, as before.
OUTERMOST = {"<module>", "_run_module_as_main", "Thread._bootstrap"}


class Unreadable(Exception):
    pass


class Walker:
    """A thread's whole frame chain, innermost first, as (function, file, line), read from the target's memory.

    Checked before use: the offsets it reads are the ones this interpreter (the target's own build) has for its
    own objects, and a walk must agree with the frames _remote_debugging read before it is used to extend them."""

    def __init__(self, pid, runtime):
        self.fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY | os.O_CLOEXEC)
        self.code_type, self.unreadable_seen, self.fields = None, False, None
        self.codes = {}  # code object address -> (qualname, filename, firstlineno, linetable): reused while profiling
        self.lines = {}  # (code object address, instruction pointer) -> (qualname, filename, line)
        raw = self.read(runtime, 8 + 8 * 80)
        if raw[:8] != b"xdebugpy":
            raise Unreadable("no _Py_DebugOffsets at the runtime's address")
        fields = [int.from_bytes(raw[8 + 8 * i:16 + 8 * i], sys.byteorder) for i in range(80)]
        self.off = {name: fields[i] for name, i in OFFSET_FIELDS.items()}
        if self.off["version"] >> 16 != sys.hexversion >> 16:
            raise Unreadable("the target runs another Python than this reader")
        if self.off["free_threaded"] or sys.hexversion >> 16 != 0x030E:
            # a free-threaded build runs thread-local copies of the bytecode (lines would need co_tlbc), and
            # the offsets' layout above is 3.14's
            raise Unreadable("the frames past a C call are read on CPython 3.14 with the GIL only")
        self.runtime = runtime
        self.check_self()
        off = self.off
        # What every tick reads, worked out once: measured while profiling (bench/bench_profile_ab.py), a tick
        # costs ~7x its warm time after the 10 ms sleep (cold caches), so each lookup and call left out counts.
        at = [off[k] for k in ("native_thread_id", "current_frame", "datastack_chunk", "thread_id", "ts_next")]
        if any(a % 8 for a in at):
            raise Unreadable("a thread state's fields are not 8-byte aligned in this build")
        self.ts_at = tuple(a // 8 for a in at)  # as indexes of 8-byte words
        self.ts_span = (max(at) + 8 + 7) // 8 * 8
        self.interp = 0
        self.outermost = {}  # thread state address -> (its outermost entry frame's, (the frame inside it, its code))
        self.idents = {}

    def check_self(self):
        """Our own code object read back from our own memory with the offsets the target gave: they must match."""
        code = Walker.__init__.__code__
        me = Walker.__new__(Walker)
        me.off, me.codes, me.lines, me.code_type = self.off, {}, {}, None
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
        """{native thread id: (its innermost frame's address, its thread state's, its newest data-stack chunk's)}
        of the main interpreter's threads. Each thread state is read in one piece; the main interpreter is
        _PyRuntime's own (static), so its address is read once."""
        out, idents = {}, {}
        read, span = self.read, self.ts_span
        native_at, frame_at, chunk_at, ident_at, next_at = self.ts_at
        if not self.interp:
            self.interp = self.ptr(self.runtime + self.off["interpreters_head"])
            if not self.interp:
                return out
        tstate = self.ptr(self.interp + self.off["threads_head"])
        while tstate and len(out) < 10000:
            raw = read(tstate, span)
            words = memoryview(raw).cast("Q")  # the fields are 8-byte aligned (checked in __init__)
            native = words[native_at]
            out[native] = (words[frame_at], tstate, words[chunk_at])
            idents[words[ident_at]] = native  # pthread ident -> native thread id, for Names
            tstate = words[next_at]
        self.idents = idents
        if len(self.outermost) > 2 * len(out) + 8:  # threads that ended
            live = {start[1] for start in out.values()}
            self.outermost = {ts: known for ts, known in self.outermost.items() if ts in live}
        return out

    def stack_chunk(self, addr, frame, span):
        """(address, bytes) of a thread's newest data stack chunk (_PyStackChunk: previous, size, then the data) up
        to its innermost frame, where its frames live (the stack grows up): one read instead of one per frame.
        Older chunks (deep stacks), generators' frames and entry frames (on the C stack) are read one by one.
        Measured while profiling: the chunk's header read with its frames (one pread where there were two) when
        that span is small, as it is in CPython's 16 KiB chunks; a larger one is checked against the size first."""
        if not addr or not addr < frame:
            return 0, b""
        used = frame + span - addr
        if used > CHUNK_AT_ONCE and used > min(self.ptr(addr + 8), MAX_CHUNK):
            return 0, b""  # not in this chunk, or a size we do not believe
        try:
            data = self.read(addr, used)
        except Unreadable:
            return 0, b""
        if used > self.word(data, 8):
            return 0, b""
        return addr, data

    def walk(self, start):
        """(frames, cut): every Python frame from ``start`` (frame_addresses' triple) outwards, innermost first,
        and how many of them come before the first C call's entry frame (where _remote_debugging stops). Entry
        frames have no code of their own and are passed over, as py-spy does."""
        frame, tstate, chunk_addr = start or (0, 0, 0)
        out, cut = [], None
        outer = self.outermost.get(tstate)
        inner = (0, 0)  # the last frame with code so far: its address and its code object's
        span, previous, executable_at, instr_at, owner_at = self.fields or self.frame_fields()
        base, chunk = self.stack_chunk(chunk_addr, frame, span) if frame else (0, b"")
        # The chunk's words by index (its frames are 8-byte aligned): measured while profiling, a third of the
        # walk's time went to slicing and decoding each field.
        words = memoryview(chunk).cast("Q") if chunk and not (frame - base) % 8 else None
        end = base + len(chunk)
        lines, codes = self.lines, self.codes
        previous, executable_at, instr_at = previous >> 3, executable_at >> 3, instr_at >> 3  # as word indexes
        while frame and len(out) < MAX_FRAMES:
            if outer is not None and frame == outer[0] and inner == outer[1]:
                if cut is None and out:  # the thread's outermost entry frame, known (see OUTERMOST)
                    cut = len(out)
                break
            if words is not None and base <= frame and frame + span <= end:
                got, at = words, (frame - base) >> 3
                owner = chunk[frame - base + owner_at]
            else:  # outside the chunk (see stack_chunk): read alone
                raw = self.read(frame, span)
                got, at, owner = memoryview(raw).cast("Q"), 0, raw[owner_at]
            executable = got[at + executable_at] & ~7
            after = got[at + previous]
            if owner >= 3 or not executable:  # owned by the interpreter / the C stack: an entry frame
                if cut is None and out:
                    cut = len(out)
                if not after and tstate and codes.get(inner[1], ("",))[0] in OUTERMOST:
                    self.outermost[tstate] = (frame, inner)
            elif executable in codes or self.is_code(executable):
                instr = got[at + instr_at]
                found = lines.get((executable, instr))
                if found is None:  # the line table is walked once per code object and instruction
                    qualname, filename, first, table = self.code_info(executable)
                    index = (instr - executable - self.off["code_adaptive"]) // 2
                    found = lines[executable, instr] = (qualname, filename, line_of(table, first, index))
                    self.unreadable_seen = self.unreadable_seen or not readable(qualname, filename)
                out.append(found)
                inner = (frame, executable)
            frame = after
        return out, len(out) if cut is None else cut

    def frame_fields(self):
        """(bytes of a frame read, a multiple of 8; offsets of previous, f_executable, instr_ptr, owner)."""
        fields = self.fields
        if fields is None:
            off = self.off
            at = (off["frame_previous"], off["frame_executable"], off["frame_instr_ptr"], off["frame_owner"])
            if any(a % 8 for a in at[:3]):
                raise Unreadable("a frame's pointers are not 8-byte aligned in this build")
            fields = self.fields = ((max(at) + 8 + 7) // 8 * 8,) + at
        return fields

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
        me.off, me.codes, me.lines, me.code_type = walker.off, {}, {}, None
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
