"""The target's pending-script slot, read from its memory: is a script queued for its main thread, and which.

``sys.remote_exec`` writes the script's path into the main thread's ``PyThreadState`` and sets its
``debugger_pending_call`` flag; the main thread clears the flag at its next safe point, *before* the audit
hook ``cpython.remote_debugger_script`` runs and before the file is opened (Python/ceval_gil.c,
``_PyRunRemoteDebugger``). So the flag is the one reliable witness of where an injection is:
- set, with our path: queued, the main thread has not reached a safe point (blocked in C, or stopped);
- clear, with our path, and our bootstrap never ran: the main thread took it and the script did not run
  (an audit hook or ``io.open_code`` hook refused it);
- set, with another path: someone else (pdb -p, debugpy --pid, another injection) replaced ours; the
  target has one slot and runs only the last script queued.
Observing the thread instead (CPU ticks, a moving stack, not in a syscall) would not tell: a main thread in
a long C loop burns CPU without reaching a safe point.

The offsets come from ``_Py_DebugOffsets`` at the start of ``_PyRuntime``: a flat array of uint64. Measured
on CPython 3.14.10: slot 5 is ``runtime_state.interpreters_head``, 10 ``interpreter_state.threads_main``,
25 ``thread_state.interp``, and the ``debugger_support`` block is the six values ending with
``(debugger_pending_call=0, debugger_script_path=4, debugger_script_path_size=512)``: the offsets of a
``{int32 flag; char path[512]}`` struct, which we look for rather than trusting a fixed index. Every read
is checked (the main thread's ``interp`` must point back at the interpreter); anything unexpected gives
None, and the callers then fall back to what they did without it.
"""
from __future__ import annotations

import struct

HEADER = 2048  # bytes of _Py_DebugOffsets to read; the 3.14 struct is 760
INTERPRETERS_HEAD, THREADS_MAIN, TSTATE_INTERP = 5, 10, 25
SIGNATURE = (0, 4, 512)


class Slot:
    def __init__(self, pending: bool, path: str):
        self.pending, self.path = pending, path

    def holds(self, path: str) -> bool:
        """Whether ``path`` (as the target sees it) is the script queued right now."""
        return self.pending and self.path == path

    def __repr__(self):
        return "Slot(pending=%r, path=%r)" % (self.pending, self.path)


class Reader:
    """Reads one process's slot again and again: the addresses are found once (~1 ms), each read is two
    small reads of /proc/PID/mem."""

    def __init__(self, proc):
        self.pid, self.where = proc.pid, None
        runtime = proc.runtime_address()
        if runtime is None:
            return
        try:
            with open("/proc/%d/mem" % proc.pid, "rb", buffering=0) as mem:
                self.where = _locate(mem, runtime)
        except (OSError, ValueError, struct.error, OverflowError):
            self.where = None  # not ours to read, gone, or not the layout we know

    def read(self):
        """The slot now, or None when it cannot be read."""
        if self.where is None:
            return None
        flag_at, path_at, path_size = self.where
        try:
            with open("/proc/%d/mem" % self.pid, "rb", buffering=0) as mem:
                flag = struct.unpack("<i", _peek(mem, flag_at, 4))[0]
                raw = _peek(mem, path_at, path_size)
        except (OSError, ValueError, struct.error, OverflowError):
            return None
        return Slot(flag == 1, raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"))


def read(proc):
    """The main thread's pending-script slot of ``proc`` (a procfs.Proc), or None when it cannot be read."""
    return Reader(proc).read()


def _peek(mem, addr, size):
    mem.seek(addr)
    data = mem.read(size)
    if len(data) != size:
        raise ValueError("short read")
    return data


def _locate(mem, runtime):
    """(address of the flag, address of the path, path size) in the main thread's state, or None."""
    def pointer(addr):
        return struct.unpack("<Q", _peek(mem, addr, 8))[0]

    header = _peek(mem, runtime, HEADER)
    if header[:8] != b"xdebugpy":
        return None
    offsets = struct.unpack("<%dQ" % (HEADER // 8), header)
    support = None
    for i in range(THREADS_MAIN + 1, len(offsets) - 2):
        if offsets[i:i + 3] == SIGNATURE:
            support = offsets[i - 3:i + 3]
            break
    if support is None:
        return None
    _eval_breaker, in_tstate, _enabled, flag_at, path_at, path_size = support
    interp = pointer(runtime + offsets[INTERPRETERS_HEAD])
    if not interp:
        return None
    tstate = pointer(interp + offsets[THREADS_MAIN])
    if not tstate or pointer(tstate + offsets[TSTATE_INTERP]) != interp:
        return None
    return tstate + in_tstate + flag_at, tstate + in_tstate + path_at, path_size
