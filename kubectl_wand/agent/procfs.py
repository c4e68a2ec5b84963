"""Facts about one process, read from /proc (or psutil where it imports) without touching the process.

Every reader tolerates a process that vanishes or that we may not inspect: the value is then None and the
caller explains why.
"""
from __future__ import annotations

import os
import time

from . import elf

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DIGITS = "0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz"


# Names are matched by hand, not with re: the agent imports nothing that costs at its start in a pod (re, with
# enum, functools and collections, was ~6 ms of it on 3.14 -S). tests/test_units.py holds both to the patterns.
def python_name(name: str):
    r"""(major, minor) for an interpreter file name like r"python(\d)?(\.\d+)?[a-z]?" (python, python3,
    python3.14, python3.14t), each None where the name has none; None for any other name."""
    if not name.startswith("python"):
        return None
    rest, major, minor = name[6:], None, None
    if rest[:1] and rest[0] in DIGITS:
        major, rest = int(rest[0]), rest[1:]
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end] in DIGITS:
            end += 1
        if end == 1:
            return None
        minor, rest = int(rest[1:end]), rest[end:]
    if len(rest) > 1 or rest and rest not in LOWER:
        return None
    return major, minor


def libpython_version(text: str):
    r"""(major, minor) of the first r"/libpython(\d)\.(\d+)[a-z]*\.so" in ``text`` (a path, or all of
    /proc/PID/maps), or None."""
    at = text.find("/libpython")
    while at >= 0:
        i = at + len("/libpython")
        if text[i:i + 1] and text[i] in DIGITS and text[i + 1:i + 2] == ".":
            j = i + 2
            while j < len(text) and text[j] in DIGITS:
                j += 1
            k = j
            while k < len(text) and text[k] in LOWER:
                k += 1
            if j > i + 2 and text.startswith(".so", k):
                return int(text[i]), int(text[i + 2:j])
        at = text.find("/libpython", at + 1)
    return None


CAP_SYS_PTRACE = 19


def read_text(path: str):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def readlink(path: str):
    try:
        return os.readlink(path)
    except OSError:
        return None


def boot_time() -> float:
    for line in (read_text("/proc/stat") or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


BOOT_TIME = boot_time()


class Proc:
    """A snapshot of one process. Attributes are None where /proc would not tell us."""

    def __init__(self, pid: int):
        self.pid = pid
        stat = read_text("/proc/%d/stat" % pid)
        if stat is None:
            raise ProcessLookupError(pid)
        # comm may contain spaces and parentheses: split at the last ')'.
        head, _, rest = stat.rpartition(")")
        self.comm = head.partition("(")[2]
        fields = rest.split()
        self.state = fields[0]
        self.ppid = int(fields[1])
        self.cpu_ticks = int(fields[11]) + int(fields[12])
        self.start_ticks = int(fields[19])  # with the pid, names this process for as long as it lives
        self.start_time = BOOT_TIME + self.start_ticks / CLK_TCK
        self.rss = int(fields[21]) * PAGE_SIZE
        raw = read_text("/proc/%d/cmdline" % pid) or ""
        self.cmdline = raw.split("\0")[:-1] if raw.endswith("\0") else ([raw] if raw else [])
        self.status = parse_status(read_text("/proc/%d/status" % pid) or "")
        uids = self.status.get("Uid", "0 0").split()
        gids = self.status.get("Gid", "0 0").split()
        self.uid, self.euid = int(uids[0]), int(uids[1])
        self.gid, self.egid = int(gids[0]), int(gids[1])
        nspid = self.status.get("NSpid", str(pid)).split()
        self.inner_pid = int(nspid[-1])  # the pid inside the target's own pid namespace
        self.cap_eff = int(self.status.get("CapEff", "0"), 16)
        self.exe = readlink("/proc/%d/exe" % pid)  # as our root sees it (or as its own mount ns does)
        self.root = readlink("/proc/%d/root" % pid)
        self.cwd = readlink("/proc/%d/cwd" % pid)
        self._maps = None

    # -- views -------------------------------------------------------------------------------------------
    @property
    def readable(self) -> bool:
        """Whether we may inspect its memory map (the same ptrace check as reading and injecting)."""
        return self.exe is not None

    def in_target_view(self, path):
        """A path as the target itself sees it (strip its chroot prefix when we see one)."""
        if path is None or not self.root or self.root == "/":
            return path
        if path == self.root or path.startswith(self.root + "/"):
            return path[len(self.root):] or "/"
        return path

    def host_path(self, target_path: str) -> str:
        """Reach a path of the target's filesystem view from ours."""
        return "/proc/%d/root%s" % (self.pid, target_path)

    def maps(self):
        if self._maps is None:
            self._maps = read_text("/proc/%d/maps" % self.pid)
        return self._maps

    def environ(self):
        """The initial environment, or None when not readable."""
        raw = read_text("/proc/%d/environ" % self.pid)
        if raw is None:
            return None
        env = {}
        for item in raw.split("\0"):
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
        return env

    # -- Python identity ---------------------------------------------------------------------------------
    def python_binary(self):
        """(path as mapped, load base) of the binary holding the CPython runtime, or None.

        That is libpython when the process maps one (embedded or --enable-shared builds), else its exe.
        """
        maps = self.maps()
        if not maps:
            return None
        exe_base = None
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            path = parts[5].strip()
            offset = int(parts[2], 16)
            if offset != 0:
                continue
            base = int(parts[0].split("-")[0], 16)
            if libpython_version(path):
                return path, base
            if exe_base is None and self.exe and path == self.exe:
                exe_base = base
        if exe_base is not None:
            return self.exe, exe_base
        return None

    def version_from_names(self):
        """(major, minor) guessed from the exe or libpython name, or None."""
        if self.exe:
            found = python_name(os.path.basename(self.exe.replace(" (deleted)", "")))
            if found and None not in found:
                return found
        return libpython_version(self.maps() or "")

    def looks_like_python(self) -> bool:
        if self.exe and python_name(os.path.basename(self.exe.replace(" (deleted)", ""))):
            return True
        if self.cmdline and python_name(os.path.basename(self.cmdline[0])):
            return True
        return bool(self.exe and libpython_version(self.maps() or ""))

    def _runtime_binary(self):
        """(mapped path, the same file reachable from here, load base) of the CPython runtime, or None."""
        found = self.python_binary()
        if not found:
            return None
        mapped, base = found
        local = mapped
        if not os.path.exists(local) or self.root not in (None, "/"):
            local = self.host_path(self.in_target_view(mapped))
        return mapped, local, base

    def runtime(self):
        """(hexversion, free_threaded) read from the live process's debug offsets, or None."""
        found = self._runtime_binary()
        if not found:
            return None
        try:
            return elf.read_runtime(self.pid, *found)
        except (OSError, ValueError):
            return None

    def runtime_address(self):
        """Where ``_PyRuntime`` lives in the process's memory, or None."""
        found = self._runtime_binary()
        if not found:
            return None
        try:
            return elf.runtime_address(*found)
        except (OSError, ValueError):
            return None


def parse_status(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def all_pids():
    """Every pid, from /proc; psutil only where there is no /proc.

    Measured in a pod: importing psutil costs ~40 ms, listing /proc 0.15 ms, and psutil reads /proc itself
    on Linux. Across 20 pods on a small node that import alone was most of a second of CPU.
    """
    if os.path.isdir("/proc/self"):
        return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    try:
        try:
            import psutil
        except ImportError:  # the agent runs without site (python -S): add site-packages, try again
            import site
            site.main()
            import psutil
        return psutil.pids()
    except Exception as exc:  # no psutil, or psutil without a /proc to read (it fails with IndexError)
        from .protocol import AgentError
        raise AgentError("environment", "no /proc here to list processes from (%s: %s); mount /proc" % (
            type(exc).__name__, exc))


# clock_getcpuclockid(3) on Linux: the CPU-time clock of process PID has the id (~PID << CPUCLOCK_BITS) |
# CPUCLOCK_SCHED (the kernel ABI glibc computes it with). Any process may read any other's; the kernel sums
# every thread, exited ones included, to the nanosecond, where /proc/PID/stat counts 10 ms ticks.
CPUCLOCK_BITS, CPUCLOCK_SCHED = 3, 2
# A 0.1 s window is enough with nanoseconds (ticks would make it 10 % steps); ticks alone get 0.2 s (5 % steps).
CPU_WINDOW, TICKS_WINDOW = 0.1, 0.2


def cpu_ns(pid: int):
    """CPU time the process used so far, in nanoseconds; None when its clock cannot be read (gone, not Linux)."""
    try:
        return time.clock_gettime_ns(((~pid) << CPUCLOCK_BITS) | CPUCLOCK_SCHED)
    except (OSError, AttributeError, OverflowError):
        return None


def cpu_sample(proc) -> tuple:
    """What cpu_percent compares: (when, CPU ns or None, CPU ticks)."""
    return time.monotonic(), cpu_ns(proc.pid), proc.cpu_ticks


def cpu_percent(samples: dict, started: float) -> dict:
    """CPU % per pid over a window that began at ``started`` (time.monotonic()), from ``samples`` (pid ->
    cpu_sample, read since then) and a second reading at the window's end.

    The work done since ``started`` counts towards the window: a sampling window, not a wait for readiness
    (CPU usage only exists over a span of time). It is CPU_WINDOW long, TICKS_WINDOW when a clock could not
    be read and ticks must do."""
    window = CPU_WINDOW if all(ns is not None for _t, ns, _ticks in samples.values()) else TICKS_WINDOW
    time.sleep(max(0.0, window - (time.monotonic() - started)))
    out = {}
    for pid, (then, before_ns, before_ticks) in samples.items():
        now, after_ns = time.monotonic(), cpu_ns(pid)
        if before_ns is not None and after_ns is not None and now > then:
            out[pid] = round(100.0 * (after_ns - before_ns) / 1e9 / (now - then), 1)
            continue
        stat = read_text("/proc/%d/stat" % pid)
        if stat is None:
            continue
        fields = stat.rpartition(")")[2].split()
        after = int(fields[11]) + int(fields[12])
        out[pid] = round(100.0 * (after - before_ticks) / CLK_TCK / max(now - then, 1e-3), 1)
    return out


def user_name(uid: int) -> str:
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


_ONCE = {}


def self_status() -> dict:
    """Our own /proc status: read once (our credentials do not change while we run)."""
    if "status" not in _ONCE:
        _ONCE["status"] = parse_status(read_text("/proc/self/status") or "")
    return _ONCE["status"]


def my_caps() -> int:
    return int(self_status().get("CapEff", "0"), 16)


def my_permitted_caps() -> int:
    return int(self_status().get("CapPrm", "0"), 16)


def yama_scope():
    if "yama" not in _ONCE:
        text = read_text("/proc/sys/kernel/yama/ptrace_scope")
        _ONCE["yama"] = int(text) if text and text.strip().isdigit() else None
    return _ONCE["yama"]


def pidns(pid: int):
    """The inode of ``pid``'s pid namespace, or None."""
    try:
        return os.stat("/proc/%d/ns/pid" % pid).st_ino
    except OSError:
        return None


def same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
