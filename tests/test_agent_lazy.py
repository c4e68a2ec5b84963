"""The agent's bodies compiled when first called (agent/boot.py, transport/bundle.py lazy_spans): the spans read
without ast agree with ast on every module we ship, and a lazily compiled function behaves as the plain one
(arguments of every kind, generators, methods, properties, decorators), with tracebacks at the real lines."""
import ast
import marshal
import os
import subprocess
import sys
import zlib

from kubectl_wand import agent
from kubectl_wand.transport import bundle

SAMPLE = '''"""A module with every kind of function boot.py defers."""
from __future__ import annotations

import contextlib
import functools


def plain(a, b=2, *rest, c, d=4, **more):
    """Docstring."""
    total = a + b + c + d
    total += sum(rest)
    return total, sorted(more.items())


def only_positional(a, /, b, **kw):
    x = a * 10
    y = b
    return x + y, kw


def gen(n):
    for i in range(n):
        yield i
    return None


def wraps(function):
    @functools.wraps(function)
    def wrapper(*a, **k):
        return ("wrapped", function(*a, **k))
    return wrapper


@wraps
def decorated(x):
    y = x + 1
    z = y * 2
    return z


@contextlib.contextmanager
def managed(log):
    log.append("in")
    yield "value"
    log.append("out")


def fails(x):
    y = x + 1
    raise ValueError("failed at %d" % y)
    return y


def annotated(x):
    def inner(y: NotDefinedAnywhere) -> AlsoNot:  # strings, as the module's __future__ import says
        return y
    return inner(x)


def never(x):
    y = x
    y += 1
    return y


def recursive(n):
    if n <= 0:
        return 0
    return n + recursive(n - 1)


class Thing:
    def __init__(self, v):
        self.v = v
        self.seen = []
        self.seen.append(v)

    @property
    def double(self):
        value = self.v
        value *= 2
        return value

    @staticmethod
    def static(a, b):
        s = a
        s += b
        return s

    @classmethod
    def make(cls, v):
        made = cls(v)
        made.seen.append("made")
        return made

    def method(self, *args, key=None):
        out = list(args)
        out.append(key)
        return out


EARLY = recursive(3)  # called while the module runs, before boot.py knows its functions
'''

MAIN = '''import traceback
from . import sample


def run():
    s = sample
    out = {"plain": s.plain(1, 2, 3, c=5, e=6), "plain2": s.plain(1, c=1), "posonly": s.only_positional(1, 2, z=3),
           "gen": list(s.gen(3)), "annotated": s.annotated(7), "decorated": s.decorated(1), "early": s.EARLY, "recursive": s.recursive(4)}
    log = []
    with s.managed(log) as value:
        log.append(value)
    out["managed"] = log
    t = s.Thing.make(3)
    out["thing"] = [t.double, t.double, t.seen, s.Thing.static(1, 2), t.method(1, 2, key="k"), t.method()]
    lines = []
    for _ in range(2):  # the first call goes through the stub, the second runs the real code at once
        try:
            s.fails(1)
        except ValueError:
            lines.append([(f.name, f.lineno) for f in traceback.extract_tb(__import__("sys").exc_info()[2])
                          if f.name == "fails"])
    out["fails"] = lines
    out["stubs_left"] = sorted(n for n in ("plain", "gen", "fails", "recursive", "only_positional")
                               if "__wand_lazy__" in getattr(s, n).__code__.co_names)
    out["never_called"] = "__wand_lazy__" in s.never.__code__.co_names
    print(repr(out))


def serve_stdio():
    run()
'''


def boot(modules, order, tmp_path):
    """Run agent/boot.py as a pod does, with these modules: its stdout."""
    forms = {k: bundle.shipped(modules[k]) for k in order}
    raw = marshal.dumps((order, {k: forms[k][0] for k in order}, {k: forms[k][1] for k in order}), 4)
    packed = zlib.compress(raw)
    stdin = bundle.boot_line() + b"%d\n" % len(packed) + packed
    done = subprocess.run([sys.executable, "-I", "-S", "-c", bundle.LOADER], input=stdin, capture_output=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_a_lazily_compiled_module_behaves_as_the_plain_one(tmp_path):
    lazy = boot({"sample": SAMPLE, "main": MAIN}, ["sample", "main"], tmp_path)
    # the same modules imported from files, as a package: the reference
    pkg = tmp_path / "plainpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sample.py").write_text(SAMPLE)
    (pkg / "main.py").write_text(MAIN)
    plain = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                            "import plainpkg.main as m; m.run()", str(tmp_path)],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    got, want = eval(lazy), eval(plain.stdout)
    assert set(got.pop("stubs_left")) == set() and got.pop("never_called") is True
    assert want.pop("stubs_left") == [] and want.pop("never_called") is False
    raised_at = SAMPLE.split("\n").index('    raise ValueError("failed at %d" % y)') + 1
    assert want["fails"] == [[("fails", raised_at)], [("fails", raised_at)]]
    # The real line, both times; on the first call the stub's frame is there too, at the body's first line.
    first, second = got.pop("fails")
    assert first == [("fails", raised_at - 1), ("fails", raised_at)] and second == [("fails", raised_at)]
    want.pop("fails")
    assert got == want


def without_docstrings(tree):
    """ast.dump of ``tree`` with every docstring (a module's, class's or function's first string) made ""."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body[0].value.value = ""
    for node in ast.walk(tree):  # where a docstring, and what it ends, ends moves: where each node starts may not
        if hasattr(node, "end_lineno"):
            node.end_lineno = node.end_col_offset = None
    return ast.dump(tree, include_attributes=True)


def test_the_shipped_form_and_its_spans_agree_with_ast_on_every_module_shipped():
    """shipped() reads indentation and literals, not a parse tree: every module the agent ships must keep its
    code (only docstrings emptied, at the same lines and columns) and give the spans ast gives (a layout it
    misread would make boot.py compile a broken stub)."""
    here = os.path.dirname(agent.__file__)
    for name in agent.MODULES + agent.CROSS_CONTAINER + ("boot",):
        with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
            source = f.read()
        text, spans = bundle.shipped(source)
        assert len(text) < len(source) and text.count("\n") == source.count("\n"), name
        tree = ast.parse(source)
        assert without_docstrings(ast.parse(text)) == without_docstrings(ast.parse(source)), name
        lines = source.split("\n")
        want = []
        for node, indent in [(n, 0) for n in tree.body] + [
                (m, 4) for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body]:
            if not isinstance(node, ast.FunctionDef):
                continue
            body = node.body[0]
            code = "\n".join(lines[node.lineno - 1:node.end_lineno])
            if (body.lineno > node.lineno and node.end_lineno - body.lineno + 1 >= bundle.LAZY_MIN_LINES
                    and "super(" not in code and "__class__" not in code):
                want.append((node.lineno, body.lineno, node.end_lineno, indent, body.col_offset))
        assert spans == sorted(want), name
        assert want or name in ("sources", "boot"), name  # the scan finds something where there is something


def test_the_header_carries_the_spans_and_the_passengers_verbatim():
    line, _, packed = bundle.agent_header("stack").partition(b"\n")
    order, modules, lazy = marshal.loads(zlib.decompress(packed))
    sources = bundle.sources()
    assert set(lazy) == set(order) and (modules["protocol"], lazy["protocol"]) == bundle.shipped(sources["protocol"])
    said = "Every message is validated"  # in protocol.py's docstring, which does not travel
    assert said in sources["protocol"] and said not in modules["protocol"]
    passengers = set(modules) - set(order)
    assert passengers and all(modules[name] == sources[name] for name in passengers)
