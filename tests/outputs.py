"""docs/output.md's schemas, read from its ``shape:`` and ``fields:`` lines, and ``check``: one verb's -o json or
-o yaml output parsed and held to them (tests/test_output.py, tests/e2e/test_output_cluster.py,
tests/test_verbs_fake.py). The checks fail on a document that does not parse, a second document after the first,
a wrapper that is not kubectl's List, a missing documented field, a stream event not documented, and a source
(``pod``/``namespace``/``container``) other than the one expected."""
from __future__ import annotations

import json
import os

import yaml

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "output.md")
SOURCE = ("pod", "namespace", "container")


def schemas():
    """({"get": ("list", "ProcessList"), "exec-py --all-pods": (...), "trace": ("lines", None), ...},
    {"stack": [...], "stack.threads": [...], ...})"""
    shapes, fields = {}, {}
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            for prefix, into in (("shape: ", shapes), ("fields: ", fields)):
                if line.startswith(prefix):
                    name, _, rest = line[len(prefix):].rpartition(": ") if prefix == "shape: " else \
                        line[len(prefix):].partition(": ")
                    into[name.strip()] = rest.split()
    return {k: (v[0], v[1] if len(v) > 1 else None) for k, v in shapes.items()}, fields


def documents(text, fmt, shape):
    """The documents of one output: one for a list or an object, one per line (JSON) or per ``---`` (YAML) for
    a stream. Anything else on stdout fails here."""
    if shape == "lines":
        if fmt == "json":
            assert text.endswith("\n") or not text, repr(text[-200:])
            return [json.loads(line) for line in text.splitlines()]
        assert all(part.startswith("\n") or not part for part in text.split("---")), text[:500]
        return list(yaml.safe_load_all(text))
    if fmt == "json":
        return [json.loads(text)]  # one document: json.loads refuses anything after it
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 1, docs
    return docs


def has(obj, name, fields, source):
    """``obj`` has NAME's documented fields, and each of its documented parts theirs; ``source``: the expected
    (pod, namespace, container) or a callable that checks them, for every object documented with a pod."""
    assert isinstance(obj, dict), (name, obj)
    missing = [k for k in fields[name] if k not in obj]
    assert not missing, "%s lacks documented fields %s: %s" % (name, missing, sorted(obj))
    if "pod" in fields[name]:
        got = tuple(obj[k] for k in SOURCE)
        if callable(source):
            source(got)
        else:
            assert got == tuple(source), (name, got, source)
    for part in fields:
        head, _, sub = part.partition(".")
        if head != name or not sub:
            continue
        if "event" in obj:  # a stream's line: its event's fields
            if obj["event"] == sub:
                has(obj, part, fields, source)
        elif sub in obj and isinstance(obj[sub], dict):
            has(obj[sub], part, fields, source)
        elif sub in obj:
            assert isinstance(obj[sub], list), (part, obj[sub])
            for element in obj[sub]:
                has(element, part, fields, source)


def check(text, verb, fmt="json", source=(None, None, None)):
    """The parsed output of ``verb`` (a key of docs/output.md's shapes, e.g. "exec-py --all-pods"), checked against
    its schema: a list's items, an object, or a stream's every line. Returns the items, [object] or the lines."""
    shapes, fields = schemas()
    shape, kind = shapes[verb]
    name = verb.split()[0]
    docs = documents(text, fmt, shape)
    if shape == "list":
        (doc,) = docs
        assert set(doc) == {"apiVersion", "kind", "items"} and doc["apiVersion"] == "v1", sorted(doc)
        assert doc["kind"] == kind and isinstance(doc["items"], list), doc["kind"]
        docs = doc["items"]
    elif shape == "object":
        assert len(docs) == 1
    else:
        assert docs, "no line at all"
    for doc in docs:
        has(doc, name, fields, source)
        if shape == "lines" and "event" in fields[name]:
            assert "%s.%s" % (name, doc["event"]) in fields, "event %r is not documented" % doc["event"]
    return docs
