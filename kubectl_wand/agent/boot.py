"""Runs as ``python3 -c <LOADER>`` in the container: loads the agent from stdin and serves one request.

LOADER executes the first stdin line, ``exec('<this source>')``. After it, stdin holds a line with a size N
and N bytes of zlib(marshal((order, {name: source}, {name: spans}))): the agent's own module files, verbatim,
and where their functions' bodies are (transport/bundle.py, lazy_spans). They become the package ``wand_agent``
in memory; nothing is written to the container's disk. marshal and zlib are built in: the loader imports
nothing that costs (json's import alone was 9 ms of an agent's start in a pod).

Bodies are compiled when first called: compiling every module whole was most of an agent's CPU in a pod (trace's
24 ms of 30 on Python 3.14, for code that op mostly never runs) and fan-out pays it once per pod. Each module is
compiled with its listed bodies replaced by ``return __wand_lazy__()`` on the body's first line (the other lines
left empty, so every line keeps its number); a stub's first call compiles the real body from the module's own
lines, at their own line numbers, puts that code on the function and calls it. Tracebacks point at the real
lines; only a function's first call shows two frames more (its stub's and ``__wand_lazy__``).
"""
import marshal
import sys
import zlib

size = int(sys.stdin.buffer.readline())
order, modules, lazy = marshal.loads(zlib.decompress(sys.stdin.buffer.read(size)))
Module = type(sys)
Function = type(lambda: 0)
bodies = {}    # (module name, its stub's line) -> (the module's lines, def line, body's last line, def's indent)
holders = {}   # a code object -> the function object that carries it (the one to give the real code)
compiled = {}  # a stub's code -> the real code


def __wand_lazy__():
    frame = sys._getframe(1)
    stub = frame.f_code
    real = compiled.get(stub)
    if real is None:
        lines, first, last, indent = bodies[frame.f_globals["__name__"], frame.f_lineno]
        head = "\n" * (first - 2) + "if 1:\n" if indent else "\n" * (first - 1)
        # with the module's `from __future__ import annotations` (CO_FUTURE_ANNOTATIONS, on the stub's code too)
        top = compile(head + "\n".join(lines[first - 1:last]), frame.f_globals["__file__"], "exec",
                      stub.co_flags & 0x1000000)
        real = [c for c in top.co_consts if type(c) is type(stub) and c.co_name == stub.co_name][-1]
        if hasattr(real, "co_qualname"):  # 3.11+: "Class.method", as the stub's
            real = real.replace(co_qualname=stub.co_qualname)
        compiled[stub] = real
        if stub in holders:
            holders[stub].__code__ = real
    # The stub's arguments, bound by its own signature (which is the real one): pass them on as they came.
    values, names = frame.f_locals, stub.co_varnames
    n, k = stub.co_argcount, stub.co_kwonlyargcount
    args = [values[name] for name in names[:n]]
    kwargs = {name: values[name] for name in names[n:n + k]}
    if stub.co_flags & 4:  # *args
        args.extend(values[names[n + k]])
    if stub.co_flags & 8:  # **kwargs
        kwargs.update(values[names[n + k + (1 if stub.co_flags & 4 else 0)]])
    function = holders.get(stub) or Function(real, frame.f_globals)
    return function(*args, **kwargs)


def hold(module):
    """Remember which function object carries each code of ``module`` (its functions and its classes' methods,
    properties, static and class methods, and what functools.wraps wrapped)."""
    for value in list(module.__dict__.values()):
        if isinstance(value, type) and value.__module__ == module.__name__:
            items = list(value.__dict__.values())
        else:
            items = [value]
        for item in items:
            if isinstance(item, (staticmethod, classmethod)):
                item = item.__func__
            found = [item.fget, item.fset, item.fdel] if isinstance(item, property) else [item]
            found.append(getattr(item, "__wrapped__", None) if type(item) is Function else None)
            for function in found:
                if type(function) is Function:
                    code = function.__code__
                    holders.setdefault(code, function)
                    if code in compiled:  # called while its module ran (before this): give it the real code now
                        function.__code__ = compiled[code]


package = Module("wand_agent")
package.__path__ = []
sys.modules["wand_agent"] = package
for name in order:
    module = Module("wand_agent." + name)
    module.__package__ = "wand_agent"
    module.__file__ = "<kubectl-wand>/wand_agent/%s.py" % name
    module.__wand_lazy__ = __wand_lazy__
    sys.modules[module.__name__] = module
    text = modules[name]
    if lazy.get(name):
        lines = text.split("\n")
        stubbed = list(lines)
        for first, start, last, indent, body_indent in lazy[name]:
            stubbed[start - 1] = " " * body_indent + "return __wand_lazy__()"
            stubbed[start:last] = [""] * (last - start)
            bodies[module.__name__, start] = (lines, first, last, indent)
        text = "\n".join(stubbed)
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    hold(module)
    setattr(package, name, module)
if "wand_agent.sources" in sys.modules:
    sys.modules["wand_agent.sources"].SOURCES.update(modules)
sys.modules["wand_agent.main"].serve_stdio()
