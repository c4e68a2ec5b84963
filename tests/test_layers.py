"""The layers of kubectl_wand, held by its import graph (every import statement, those inside functions too).

From the bottom: errors, pipes (child processes), flags, targets; kube/ (kubectl's flags and running kubectl,
the API side); transport/ (the agent beside a target, forwards); commands/ (the verbs). A layer imports only
layers below it, and of agent/ only the wire's definition (agent/protocol.py) and what runs the agent.
"""
import ast
import os

import kubectl_wand

ROOT = os.path.dirname(kubectl_wand.__file__)


def imports(relpath):
    """Absolute module names a module imports (relative imports resolved; ``from X import y`` gives X.y too)."""
    package = "kubectl_wand." + os.path.dirname(relpath).replace(os.sep, ".") if os.path.dirname(relpath) \
        else "kubectl_wand"
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update("%s.%s" % (module, alias.name) for alias in node.names)
    return {name for name in found if name.startswith("kubectl_wand")}


def modules(folder):
    return [os.path.join(folder, name) for name in sorted(os.listdir(os.path.join(ROOT, folder)))
            if name.endswith(".py")]


def offending(folder, forbidden, allowed=()):
    bad = []
    for relpath in modules(folder):
        for name in imports(relpath):
            if name.startswith(forbidden) and not name.startswith(allowed):
                bad.append("%s imports %s" % (relpath, name))
    return bad


def test_the_graph_reader_sees_imports_inside_functions():
    # kube/ephemeral.py imports pipes inside functions only: a reader of top-level imports would miss it
    assert "kubectl_wand.pipes" in imports(os.path.join("kube", "ephemeral.py"))
    assert "kubectl_wand.transport.pods" in imports(os.path.join("commands", "common.py"))


def test_kube_imports_neither_transport_nor_the_verbs():
    assert offending("kube", ("kubectl_wand.transport", "kubectl_wand.commands")) == []


def test_kube_takes_only_the_wire_from_the_agent():
    assert offending("kube", "kubectl_wand.agent", allowed=("kubectl_wand.agent.protocol",)) == []


def test_transport_does_not_import_the_verbs():
    assert offending("transport", "kubectl_wand.commands") == []


def test_the_bottom_modules_import_nothing_above_them():
    for bottom in ("errors.py", "pipes.py", "flags.py", "targets.py"):
        assert {name for name in imports(bottom) if not name.startswith(("kubectl_wand.errors",))} == set(), bottom


def test_verbs_ask_the_transport_instead_of_branching_on_its_kind():
    # what differs between places is an answer of the transport (transport/__init__.py), never an `if` in a verb
    import re
    for relpath in modules("commands"):
        with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
            text = f.read()
        assert not re.search(r"(?<!\.\.)transport\.(local|ephemeral|pod|namespace|container|adopt)\b", text), relpath
