"""The agent as it travels to a pod: its module sources, verbatim and compressed, on stdin after agent/boot.py.

agent/boot.py reads that line and loads the modules in memory (nothing is written to the container's disk).
Only what an operation needs is sent: listing 20 pods must not ship debugpy's server code 20 times. Beside the
sources go where their functions' bodies are (lazy_spans): the agent compiles a body only when it is first called.
"""
from __future__ import annotations

import os
import threading

from .. import agent as agent_pkg
from ..agent.processes import AGENT_LOADER

# The command line stays tiny (it shows up in `ps`, kubelet URLs and error messages): it reads
# agent/boot.py's source as the first stdin line and runs it. Defined beside the listing that recognises our own
# agents by it (they are never listed as the app's processes).
LOADER = AGENT_LOADER

# -S: no `site`. The agent needs only the standard library, and skipping site-packages (.pth files and any
# sitecustomize: APM auto-instrumentation, for one, would otherwise start inside our agent) saves ~10 ms of CPU
# per pod: measured 2.01 instead of 2.22 s for `kubectl exec POD -- python3 -c pass` into 20 pods at once.
AGENT_ARGS = ["-S", "-c", LOADER]

_SOURCES = {}
_LOCK = threading.RLock()  # _shipped reads sources() under it


def sources() -> dict:
    with _LOCK:  # pods are listed from several threads at once
        if not _SOURCES:
            here = os.path.dirname(agent_pkg.__file__)
            files = [(name, os.path.join(here, name + ".py")) for name in agent_pkg.MODULES + ("boot",)]
            files += [(name, os.path.join(here, "passengers", name + ".py")) for name in agent_pkg.PASSENGERS]
            for name, path in files:
                with open(path, encoding="utf-8") as f:
                    _SOURCES[name] = f.read()
    return _SOURCES


_SHIPPED = {}


def _shipped(name):
    with _LOCK:
        if name not in _SHIPPED:
            _SHIPPED[name] = shipped(sources()[name])
        return _SHIPPED[name]


_HEADERS = {}
PIPE_ROOM = 60 * 1024  # a pipe holds 64 KiB: the header, with the boot line and the request, must fit


def agent_header(op=None, extra=()) -> bytes:
    """The agent's module sources as agent/boot.py reads them (only what ``op`` needs): a line with a size N,
    then N bytes of zlib(marshal((order, {name: source}, {name: spans}))): the modules as ``shipped`` makes them
    and where their bodies are, the passengers verbatim. marshal format 4 (strings, lists, a dict, a tuple)
    reads the same in every Python since 3.4; it only ever carries what this CLI made.

    Everything fits in a pipe's 64 KiB buffer, so writing it never waits for kubectl's exec stream to come up
    (seen: a 118 KB header blocked the write and held back the API read that should overlap the exec), and a
    fraction of the bytes cross the API server and the kubelet."""
    order, passengers = agent_pkg.modules_for(op)
    if extra and "runtime" in order:  # modules runtime uses when present (agent.CROSS_CONTAINER): before it
        at = order.index("runtime")
        order = order[:at] + tuple(extra) + order[at:]
    key = (order, passengers)
    if key not in _HEADERS:
        _HEADERS[key] = _kept(order, passengers, lambda: _build(order, passengers))
    return _HEADERS[key]


def _build(order, passengers) -> bytes:
    import marshal
    import zlib
    src = sources()
    # Level 1, spent while kubectl starts its exec on the same cores: every op fits a pipe at it since the
    # modules travel without comments and docstrings (mem's 55 KB; level 9 would be 45). With them, exec,
    # attach, check, trace, mem, pdb and repl needed level 9: 15-20 ms of the CLI's CPU instead of 1-2.
    forms = {name: _shipped(name) for name in order}
    texts = dict({k: text for k, (text, _) in forms.items()}, **{k: src[k] for k in passengers})
    raw = marshal.dumps((list(order), texts, {k: spans for k, (_, spans) in forms.items()}), 4)
    packed = zlib.compress(raw, 1)
    if len(packed) > PIPE_ROOM:  # trace's modules (68 KB at level 1): level 9 is ~20 % smaller, for ~5 ms
        packed = zlib.compress(raw, 9)
    return b"%d\n" % len(packed) + packed


def boot_line() -> bytes:
    """The line LOADER executes: ``exec('<agent/boot.py>')``, the source as a Python string literal on one line."""
    if "boot" not in _HEADERS:
        _HEADERS["boot"] = _kept(("boot",), (), lambda: b"exec(%s)\n" % ascii(_shipped("boot")[0]).encode())
    return _HEADERS["boot"]


# The built header (and the boot line) is kept in the user's private cache (usercache), one file per set of
# modules, so that a run pays a read instead of the scan (shipped: ~2-3 ms for list or stack, more for the larger
# ops). As the stack reader's compiled code is kept (agent/runtime.py: compiled), the file begins with all the
# header is made from, verbatim: the exact sources, this file's own source (how they are made), the Python and
# zlib that made it; a file that does not begin with exactly that is rebuilt. Then the header's CRC-32 and the
# header: a damaged one is rebuilt too. usercache reads only a file private to us. (Not hashlib: importing it
# was 2 ms, what the cache saves.)
CACHE_MAGIC = b"kubectl-wand agent header 1\n"


def _made_from(order, passengers):
    """(cache file name, all the header for these modules is made from)."""
    import sys
    import zlib
    src = sources()
    with open(__file__, "rb") as f:
        made = [CACHE_MAGIC, repr((order, passengers, sys.version, zlib.ZLIB_RUNTIME_VERSION)).encode(), f.read()]
    made += [src[name].encode("utf-8", "surrogatepass") for name in order + passengers]
    which = "%08x" % zlib.crc32(made[1])
    return "agent-header-" + which, b"".join(b"%d\n" % len(part) + part for part in made)


def _kept(order, passengers, build) -> bytes:
    """What ``build`` makes from these modules: read from the cache when it was made from exactly them, else
    built and kept."""
    import zlib
    from .. import usercache
    name, made = _made_from(order, passengers)
    data = usercache.read(name)
    if data and data.startswith(made) and len(data) >= len(made) + 4:
        header = data[len(made) + 4:]
        if zlib.crc32(header) == int.from_bytes(data[len(made):len(made) + 4], "big"):
            return header
    header = build()
    usercache.write(name, made + zlib.crc32(header).to_bytes(4, "big") + header)  # read-only: rebuilt next time
    return header


# A string literal (triple-quoted or not) or a comment: what lazy_spans blanks before it reads the structure.
# Each alternative is a loop unrolled ("normal* (special normal*)*"): 4x faster than the plain (\\.|.)*? form.
# Compiled on first use (shipped, re's cache): a cached header's path never imports `re`.
_LITERAL = (r'''"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""|\'\'\'[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*\'\'\''''
            r'''|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'|#[^\n]*''')
LAZY_MIN_LINES = 3  # a shorter body costs less to compile at once than its stub and its compile when called


def shipped(source: str):
    """(text, spans): the module as it travels, comments and docstrings blanked (every line keeps its number: a
    traceback's line is the file's; fewer bytes to send and to compile), and the lazy_spans of it."""
    import re
    masked, text, pos, prev = [], [], 0, ""
    for match in re.finditer(_LITERAL, source):  # re caches the compiled pattern
        gap = source[pos:match.start()]
        masked.append(gap)
        text.append(gap)
        prev = gap.rstrip()[-1:] or prev
        literal, pos = match.group(), match.end()
        if literal[0] == "#":
            continue
        newlines = literal.count("\n")
        # a string leaves a mark (its line holds code); the line it ends on keeps its columns
        masked.append("s" + "\n" * newlines + " " * (len(literal) - literal.rfind("\n") - 1) if newlines else "s")
        end = source.find("\n", pos)
        if prev in (":", "") and literal[:3] in ('"""', "'''") and not source[pos:end if end >= 0 else None].split(
                "#")[0].strip():
            text.append('""' + "\n" * newlines)  # a docstring: first in the file, or after a def's or class's colon
        else:
            text.append(literal)
        prev = "s"
    masked.append(source[pos:])
    text.append(source[pos:])
    text = "".join(text)
    return text, lazy_spans(text, "".join(masked))


def lazy_spans(text: str, masked: str) -> list:
    """[(def line, body's first line, body's last line, def's indent, body's indent), ...] of the functions whose
    bodies agent/boot.py compiles only when first called: top-level functions and the methods of top-level
    classes, bodies of LAZY_MIN_LINES lines or more that use no ``super()``/``__class__`` (a closure cell the
    stub has not). Read from the lines' indentation in ``masked`` (``text`` with its strings and comments
    blanked): ~2 ms for an op's modules where ast.parse takes ~20 (the CLI pays it once per op), and
    tests/test_agent_lazy.py checks it against ast on every module we ship."""
    masked, lines = masked.split("\n"), text.split("\n")
    spans, in_class, i = [], False, 0
    while i < len(masked):
        code = masked[i].lstrip()
        indent = len(masked[i]) - len(code)
        if code and not indent:
            in_class = code.startswith("class ")
        if not code.startswith("def ") or not (indent == 0 or indent == 4 and in_class):
            i += 1
            continue
        end, depth = i, 0  # the header's last line: brackets closed, a colon ends it
        while True:
            line = masked[end].rstrip()
            depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
            if depth <= 0 and ":" in line or end + 1 == len(masked):
                break
            end += 1
        first = last = None
        j = end + 1
        while j < len(masked):
            body = masked[j].lstrip()
            if body:
                if len(masked[j]) - len(body) <= indent:
                    break
                if first is None:
                    first = j
                last = j
            j += 1
        body = "\n".join(lines[i:j]) if first is not None else ""
        if (line.endswith(":") and first is not None and last - first + 1 >= LAZY_MIN_LINES
                and "super(" not in body and "__class__" not in body):
            spans.append((i + 1, first + 1, last + 1, indent, len(lines[first]) - len(lines[first].lstrip())))
        i = j
    return spans
