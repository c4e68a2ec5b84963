"""Just enough ELF reading to find a CPython runtime in a live process without injecting anything.

``sys.remote_exec`` and ``_remote_debugging`` find the interpreter through the ``.PyRuntime`` section of the
binary (or libpython) the process maps; its first bytes are ``_Py_DebugOffsets``: the cookie ``xdebugpy``,
``PY_VERSION_HEX`` and a free-threading flag. Reading them tells the exact version, release level and build of
the target, which decides whether an injector of the same version can talk to it.
"""
from __future__ import annotations

import struct

COOKIE = b"xdebugpy"


def read_header(f):
    """Return (is64, little_endian, e_type, phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx)."""
    ident = f.read(16)
    if ident[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64 = ident[4] == 2
    end = "<" if ident[5] == 1 else ">"
    if is64:
        fields = struct.unpack(end + "HHIQQQIHHHHHH", f.read(48))
    else:
        fields = struct.unpack(end + "HHIIIIIHHHHHH", f.read(36))
    e_type, _m, _v, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum, shstrndx = fields
    return is64, end, e_type, phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx


def section_address(path: str, name: str):
    """Virtual address (sh_addr) of section ``name`` and the file's e_type (2 = EXEC, 3 = DYN), or None."""
    with open(path, "rb") as f:
        is64, end, e_type, _phoff, shoff, _phe, _phn, shentsize, shnum, shstrndx = read_header(f)
        if not shoff or not shnum:
            return None
        f.seek(shoff)
        raw = f.read(shentsize * shnum)
        fmt = end + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII")
        size = struct.calcsize(fmt)
        sections = [struct.unpack(fmt, raw[i * shentsize:i * shentsize + size]) for i in range(shnum)]
        strtab = sections[shstrndx]
        f.seek(strtab[4])
        names = f.read(strtab[5])
        want = name.encode()
        for sh in sections:
            start = sh[0]
            if names[start:names.index(b"\0", start)] == want:
                return sh[3], e_type
    return None


def interpreter(path: str):
    """The PT_INTERP path (the dynamic loader) of an executable, or None for a static binary."""
    with open(path, "rb") as f:
        is64, end, _t, phoff, _sh, phentsize, phnum, _se, _sn, _si = read_header(f)
        fmt = end + ("IIQQQQQQ" if is64 else "IIIIIIII")
        size = struct.calcsize(fmt)
        f.seek(phoff)
        raw = f.read(phentsize * phnum)
        for i in range(phnum):
            ph = struct.unpack(fmt, raw[i * phentsize:i * phentsize + size])
            p_type = ph[0]
            p_offset = ph[2] if is64 else ph[1]
            p_filesz = ph[5] if is64 else ph[4]
            if p_type == 3:  # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


def version_string(hexversion: int) -> str:
    major, minor, micro = hexversion >> 24, (hexversion >> 16) & 0xFF, (hexversion >> 8) & 0xFF
    level, serial = (hexversion >> 4) & 0xF, hexversion & 0xF
    text = "%d.%d.%d" % (major, minor, micro)
    if level != 0xF:
        text += {0xA: "a", 0xB: "b", 0xC: "rc"}.get(level, "?") + str(serial)
    return text


def runtime_address(mapped_file: str, local_file: str, base: int):
    """Address of the ``.PyRuntime`` section (``_PyRuntime``, which starts with ``_Py_DebugOffsets``) in the
    live process, or None. ``local_file`` is ``mapped_file`` reachable from here, ``base`` where its first
    page is mapped."""
    found = section_address(local_file, ".PyRuntime")
    if not found:
        return None
    addr, e_type = found
    return addr + base if e_type == 3 else addr  # position independent: relative to the load base


def read_runtime(pid: int, mapped_file: str, local_file: str, base: int):
    """Read _Py_DebugOffsets of a mapped binary from the live process.

    ``mapped_file`` is the file as the target maps it, ``local_file`` the same file reachable from here and
    ``base`` the address where its first page is mapped. Returns (hexversion, free_threaded) or None.
    """
    addr = runtime_address(mapped_file, local_file, base)
    if addr is None:
        return None
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        mem.seek(addr)
        raw = mem.read(24)
    if len(raw) < 24 or raw[:8] != COOKIE:
        return None
    version, free_threaded = struct.unpack("<QQ", raw[8:24])
    return version, bool(free_threaded)
