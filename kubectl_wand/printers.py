"""One printer for every verb: table (default), wide, json, yaml, name; --no-headers."""
from __future__ import annotations

from . import terminal

FORMATS = ("table", "wide", "json", "yaml", "name")


def none(value):
    return "<none>" if value in (None, "") else value


def table(rows, columns, headers=True):
    """rows: list of dicts; columns: list of (HEADER, key or callable). kubectl-style plain columns."""
    # A control character (a `python -c` script's newlines in COMMAND) would break the row: shown escaped.
    cells = [[terminal.text(none(col(r) if callable(col) else r.get(col))) for _h, col in columns]
             for r in rows]
    if headers:
        cells.insert(0, [h for h, _c in columns])
    if not cells:
        return ""
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for c in cells:
        lines.append("   ".join(v.ljust(widths[i]) for i, v in enumerate(c)).rstrip())
    return "\n".join(lines) + "\n"


def dump(obj, fmt):
    if fmt == "json":
        import json  # only when asked for: a verb's module (and so its --help) is imported without it
        return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    import yaml  # imported only when asked for: keeps --help fast
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def event(obj, fmt) -> str:
    """One object of a stream (docs/output.md): a JSON line, compact and ASCII (a newline or a control character
    a name holds is escaped, so a line is always one object), or a YAML document that starts with ``---``."""
    if fmt == "json":
        import json
        return json.dumps(obj, default=str) + "\n"
    return "---\n" + dump(obj, fmt)


def source(transport) -> dict:
    """Where a result came from, in every verb's JSON (docs/output.md): pod, namespace, container; null for a
    process on this machine."""
    labels = getattr(transport, "labels", None) or {}
    return {"pod": labels.get("pod"), "namespace": labels.get("namespace"), "container": labels.get("container")}


def as_list(items, kind="List"):
    return {"apiVersion": "v1", "kind": kind, "items": items}


def human_bytes(n):
    if n is None:
        return None
    for unit in ("B", "Ki", "Mi", "Gi"):
        if n < 1024 or unit == "Gi":
            return ("%d%s" % (n, unit)) if unit == "B" else ("%.0f%s" % (n, unit))
        n /= 1024.0


def human_age(seconds):
    """kubectl's AGE style: 45s, 12m, 3h4m, 2d."""
    if seconds is None:
        return None
    s = int(seconds)
    if s < 120:
        return "%ds" % s
    if s < 3600:
        return "%dm" % (s // 60)
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return "%dh%dm" % (h, m) if m and h < 10 else "%dh" % h
    return "%dd" % (s // 86400)
