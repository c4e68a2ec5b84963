"""Runs INSIDE the target (its own interpreter, 3.12+, stdlib only): find the code objects for FILE:LINE.

A passenger of the ``trace`` request, run before ``probe`` in the same fresh namespace. Code objects come from
every live function (``gc``), their nested code (``co_consts``), and the code of every running frame (a
module-level loop). The location is refused, naming the candidates, when no loaded file matches, when several
do, or when the line has no code that can fire a LINE event.
"""
import gc
import opcode
import os
import sys
import types
import weakref


class Refused(Exception):
    """The request cannot be honoured; nothing was enabled. ``kind`` and ``extra`` go to the agent as is."""

    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind, self.extra = kind, extra


def nested(code):
    """``code`` and every code object defined inside it (functions, lambdas, class bodies, comprehensions)."""
    todo = [code]
    while todo:
        c = todo.pop()
        yield c
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))


def prologue_end(code):
    """Offset after RESUME: the def line's RESUME is in co_lines but never fires a LINE event (measured)."""
    raw, resume = code.co_code, opcode.opmap["RESUME"]
    for offset in range(0, min(len(raw), 64), 2):
        if raw[offset] == resume:
            return offset + 2
    return 0


def code_lines(code):
    """The lines of ``code`` that can fire a LINE event."""
    start = prologue_end(code)
    return {line for _begin, end, line in code.co_lines() if line is not None and end > start}


SUSPENDED = {types.GeneratorType: "gi_code", types.CoroutineType: "cr_code", types.AsyncGeneratorType: "ag_code"}


def roots_everywhere():
    """Code objects of every live function and suspended generator or coroutine (gc), plus the code of every
    running frame (a module-level loop has no function)."""
    for obj in gc.get_objects():
        kind = type(obj)
        if kind is types.FunctionType:
            yield obj.__code__
        elif kind in SUSPENDED:
            yield getattr(obj, SUSPENDED[kind])
    for frame in list(sys._current_frames().values()):
        while frame is not None:
            yield frame.f_code
            frame = frame.f_back


def roots_in_namespace(namespace, depth=0, seen=None):
    """Code objects of the functions reachable from a module's (or class's) namespace: cheap, no gc walk."""
    seen = set() if seen is None else seen
    for value in list(namespace.values()):
        if id(value) in seen:
            continue
        seen.add(id(value))
        for _ in range(8):  # unwrap decorators that keep the original (functools.wraps)
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                for accessor in (value.fget, value.fset, value.fdel):
                    if isinstance(accessor, types.FunctionType):
                        yield accessor.__code__
                break
            elif isinstance(value, types.FunctionType):
                yield value.__code__
                wrapped = value.__dict__.get("__wrapped__")
                if wrapped is None:
                    break
                value = wrapped
            else:
                break
        if isinstance(value, type) and depth < 4:
            for code in roots_in_namespace(value.__dict__, depth + 1, seen):
                yield code


class Location:
    """FILE (a path suffix on component boundaries) and LINE, resolved against the code loaded in this process."""

    def __init__(self, spec, line):
        spec = spec.strip()
        while spec.startswith("./"):
            spec = spec[2:]
        self.spec, self.line, self.cwd = spec, int(line), os.getcwd()
        self.memo = {}  # co_filename -> bool: tens of thousands of functions share a few hundred files

    def matches(self, filename):
        known = self.memo.get(filename)
        if known is None:
            known = self.memo[filename] = self._matches(filename)
        return known

    def _matches(self, filename):
        if not isinstance(filename, str) or not filename or filename.startswith("<"):
            return False
        if not filename.startswith("/"):
            filename = os.path.join(self.cwd, filename)
        if self.spec.startswith("/"):
            return filename == self.spec
        return filename == self.spec or filename.endswith("/" + self.spec)

    def resolve(self):
        """(filename, [code objects with the line], {id: code} of the file) or Refused naming the candidates.

        Code objects are keyed by identity: they compare equal by content, and a reloaded module's unchanged
        function is a new, equal code object that needs its own events.
        """
        by_file = {}
        for root in roots_everywhere():
            if self.matches(root.co_filename):
                for code in nested(root):
                    by_file.setdefault(code.co_filename, {})[id(code)] = code
        where = "%s:%d" % (self.spec, self.line)
        if not by_file:
            raise Refused("location", "%s: no code loaded in process %d comes from a file matching %r%s" % (
                where, os.getpid(), self.spec, self.hint()), candidates=self.same_basename())
        if len(by_file) > 1:
            files = sorted(by_file)
            raise Refused("location", "%s is ambiguous: %d loaded files match (%s); give a longer path suffix"
                          % (where, len(files), ", ".join(files)), candidates=files)
        filename, codes = by_file.popitem()
        chosen, lines = [], set()
        for code in codes.values():
            mine = code_lines(code)
            lines |= mine
            if self.line in mine:
                chosen.append(code)
        if not chosen:
            near = sorted(lines, key=lambda n: (abs(n - self.line), n))[:4]
            near = sorted(near)
            raise Refused("location", "%s: line %d of %s has no code in a loaded function (a blank or comment "
                          "line, a def line, or module-level code that has already run); lines with code near "
                          "it: %s" % (where, self.line, filename, ", ".join(str(n) for n in near) or "none"),
                          candidates=["%s:%d" % (filename, n) for n in near])
        return filename, chosen, codes

    def same_basename(self):
        base = self.spec.rsplit("/", 1)[-1]
        found = set()
        for module in list(sys.modules.values()):
            path = module_file(module)
            if path and path.rsplit("/", 1)[-1] == base:
                found.add(path)
        return sorted(found)[:10]

    def hint(self):
        found = self.same_basename()
        if found:
            return "; loaded files named %s: %s" % (self.spec.rsplit("/", 1)[-1], ", ".join(found))
        main = module_file(sys.modules.get("__main__"))
        return "; the app's main file is %s" % main if main else ""


def module_file(module):
    """A module's __file__ read from its dict (never through a module __getattr__, which may import)."""
    if not isinstance(module, types.ModuleType):
        return None
    path = module.__dict__.get("__file__")
    return path if isinstance(path, str) else None


class Known:
    """Code objects already looked at, by identity (code compares by content), without keeping them alive."""

    def __init__(self, codes=()):
        self.refs = {}
        for code in codes:
            self.add(code)

    def add(self, code):
        self.refs[id(code)] = weakref.ref(code)

    def has(self, code):
        ref = self.refs.get(id(code))
        return ref is not None and ref() is code
