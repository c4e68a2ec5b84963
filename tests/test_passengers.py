"""The rules of kubectl_wand/agent/passengers/ (its docstring), read from the source files themselves: what runs
under the target's interpreter is shipped as source, never imported by the CLI or the agent, uses the standard
library only, imports nothing of ours, and parses as Python 3.8."""
from __future__ import annotations

import ast
import os
import sys

import pytest

from kubectl_wand import agent

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(agent.__file__)))  # kubectl_wand/
HERE = os.path.join(os.path.dirname(os.path.abspath(agent.__file__)), "passengers")
PASSENGER_FILES = sorted(f[:-3] for f in os.listdir(HERE) if f.endswith(".py") and f != "__init__.py")


def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


def imports(tree):
    """(module, level) of every import statement, wherever it is (inside functions too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level
            if node.level and not node.module:
                for alias in node.names:
                    yield alias.name, node.level


def test_every_passenger_file_is_shipped_and_every_shipped_passenger_is_a_file():
    assert sorted(agent.PASSENGERS) == PASSENGER_FILES
    assert not set(agent.PASSENGERS) & set(agent.MODULES + ("boot",))  # one name space of sources
    for op, names in agent.OP_CODE.items():
        shipped = agent.NEEDS[op][1]
        assert "bootstrap" in shipped and all(name in shipped for name in names), op


@pytest.mark.parametrize("name", PASSENGER_FILES)
def test_a_passenger_imports_the_standard_library_only_and_nothing_of_ours(name):
    tree = parse(os.path.join(HERE, name + ".py"))
    stdlib = set(sys.stdlib_module_names) | {"_remote_debugging"}  # 3.14's, newer than the interpreter here
    # the attach op imports the target's (or shipped) debugpy, and pydevd's logger before it (to silence it)
    allowed_third_party = {"debugpy", "_pydevd_bundle", "_pydev_bundle"}
    for module, level in imports(tree):
        assert level == 0, "%s: relative import of %r: a passenger imports nothing of ours" % (name, module)
        top = module.split(".")[0]
        assert top != "kubectl_wand", "%s imports %s" % (name, module)
        assert top in stdlib or (name == "debugger" and top in allowed_third_party) or (
            name == "bootstrap" and module == "debugpy.server"), "%s imports %s, not in the standard library" % (
            name, module)


@pytest.mark.parametrize("name", PASSENGER_FILES)
def test_a_passenger_parses_as_python_3_8(name):
    with open(os.path.join(HERE, name + ".py"), encoding="utf-8") as f:
        ast.parse(f.read(), feature_version=(3, 8))


def test_the_package_file_holds_its_rules_only():
    tree = parse(os.path.join(HERE, "__init__.py"))
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), "passengers/__init__.py: the docstring only"
    assert "never imported by the CLI or the agent" in ast.get_docstring(tree)


def test_no_module_of_ours_imports_a_passenger():
    offenders, seen = [], 0
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if os.path.abspath(root) == HERE:
            continue
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(root, file)
            seen += 1
            for module, _level in imports(parse(path)):
                if "passengers" in module.split(".") or module.split(".")[-1] in PASSENGER_FILES:
                    offenders.append("%s imports %s" % (os.path.relpath(path, PACKAGE), module))
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for call in ("import_module(", "__import__("):
                for line in text.splitlines():
                    if call in line and ("passengers" in line or any(repr(n) in line for n in PASSENGER_FILES)):
                        offenders.append("%s: %s" % (os.path.relpath(path, PACKAGE), line.strip()))
    assert seen > 50 and offenders == []


def test_the_bootstraps_top_level_holds_definitions_only():
    """A pending signal handler runs at any import, class statement or call: at the top level that would be
    outside every try of the bootstrap, and CPython would print what it raised (passengers/bootstrap.py)."""
    tree = parse(os.path.join(HERE, "bootstrap.py"))
    body = tree.body[1:] if ast.get_docstring(tree) else tree.body
    assert body and all(isinstance(node, ast.FunctionDef) and not node.decorator_list for node in body), [
        type(node).__name__ for node in body if not isinstance(node, ast.FunctionDef)]


@pytest.mark.parametrize("op", sorted(agent.OP_CODE))
def test_each_ops_code_ends_with_its_entry_point(op):
    last = agent.OP_CODE[op][-1]
    tree = parse(os.path.join(HERE, last + ".py"))
    entry = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert entry, "%s: no run(request, conn, signals)" % last
    assert [a.arg for a in entry[0].args.args] == ["request", "conn", "signals"]


def test_the_bootstrap_written_into_the_target_holds_no_ops_code():
    """Only the bootstrap is written into the target's temporary directory: measured here, and within the
    size `check` proves the directory has room for (agent/checks.py)."""
    from kubectl_wand.agent.checks import BOOTSTRAP_BYTES
    from kubectl_wand.agent.sources import module_source
    source = module_source("bootstrap")
    assert "def run_code" not in source and "def start_debugpy" not in source and "class Probe" not in source
    assert len(source.encode()) + 300 < BOOTSTRAP_BYTES  # the call line names three paths


def _undefined(source):
    """The global names the code reads (at module level and in every function, from its symbol tables) that it
    neither defines nor imports and that are not builtins."""
    import builtins
    import symtable
    top = symtable.symtable(source, "sampler.py", "exec")
    defined = {sym.get_name() for sym in top.get_symbols() if sym.is_assigned() or sym.is_imported()}
    read, tables = set(), [top]
    while tables:
        table = tables.pop()
        read |= {sym.get_name() for sym in table.get_symbols()
                 if sym.is_referenced() and (table is top or sym.is_global())}
        tables.extend(table.get_children())
    return read - defined - set(dir(builtins)) - {"__name__"}


def test_stack_ships_the_sampler_without_the_profile_loop():
    """stack's pods are sent framewalk and sampler, not profiler (~2-3 ms of a pod's CPU to ship and compile):
    all the stack sampler reads is defined in that set but ``profile``, which sampler.main calls only for the
    profile operation."""
    from kubectl_wand.agent import observe
    for op, parts in observe.SAMPLER_PARTS.items():
        assert all(name in agent.NEEDS[op][1] for name in parts), op
    assert "profiler" not in agent.NEEDS["stack"][1] and "profiler" in agent.NEEDS["profile"][1]
    assert _undefined(observe.sampler_source("stack")) == {"profile"}
    assert _undefined(observe.sampler_source("profile")) == set()
