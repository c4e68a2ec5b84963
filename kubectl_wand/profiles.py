"""Profiles collected by the agent's ``profile`` op: merge them and render them. Pure functions, no I/O.

A *source* is one process's profile as the agent returns it (``{"pid", "profile": {"frames", "stacks", ...}}``)
plus the pod it came from. ``merge`` turns any number of sources into one *merged profile*, a plain dict:

  {"frames": [{"function", "file", "line", "kind"}],  kind: "python", or "pod" / "process" / "thread" for roots
   "stacks": [{"frames": [frame index, ROOT FIRST], "count": n}],  biggest first
   "total": sum of counts, "samples": ticks taken, "errors", "rate", "duration", "achieved_rate" (the lowest),
   "sources": [{"pod", "pid", "samples", "errors", "achieved_rate", "duration", "stopped_early", "window"}]}

Renderers: ``to_speedscope`` (speedscope's JSON file format), ``to_collapsed`` (``root;...;leaf COUNT`` lines),
``to_svg`` (a flame graph, see ``flamegraph``) and ``top`` (rows of own/total share per function).
"""
from __future__ import annotations

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def merge(sources, per_pod=False, per_process=False, threads=False) -> dict:
    """One profile from many. ``sources``: iterable of ``(pod or None, entry)`` with ``entry`` one element of the
    agent's ``processes`` list; entries without a ``profile`` (errors) are skipped. Identical frames of
    different processes (the same function, file and line: replicas run the same code) are merged, so
    are identical stacks. Roots added above the Python frames, in this order, only when asked: the pod
    (``per_pod``), the process (``per_process``), the thread name (``threads``)."""
    index, frames, counts, meta = {}, [], {}, []

    def frame_id(function, file, line, kind):
        key = (function, file, line, kind)
        if key not in index:
            index[key] = len(frames)
            frames.append({"function": function, "file": file, "line": line, "kind": kind})
        return index[key]

    for pod, entry in sources:
        prof = entry.get("profile")
        if not prof:
            continue
        meta.append({"pod": pod, "pid": entry.get("pid", prof.get("pid")), "samples": prof.get("samples", 0),
                     "errors": prof.get("errors", 0), "achieved_rate": prof.get("achieved_rate"),
                     "duration": prof.get("duration"), "rate": prof.get("rate"),
                     "stopped_early": prof.get("stopped_early"), "cut": prof.get("cut", 0),
                     "cut_reason": prof.get("cut_reason"), "window": prof.get("window")})
        local = [frame_id(f["function"], f["file"], f["line"], "python") for f in prof["frames"]]
        roots = []
        if per_pod and pod is not None:
            roots.append(frame_id("pod %s" % pod, "", 0, "pod"))
        if per_process:
            roots.append(frame_id("process %s" % meta[-1]["pid"], "", 0, "process"))
        for stack in prof["stacks"]:
            chain = tuple(roots + ([frame_id("thread %s" % stack["thread"], "", 0, "thread")] if threads else [])
                          + [local[i] for i in reversed(stack["frames"])])
            counts[chain] = counts.get(chain, 0) + stack["count"]
    stacks = [{"frames": list(chain), "count": n} for chain, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    rates = [m["achieved_rate"] for m in meta if m["achieved_rate"] is not None]
    return {"frames": frames, "stacks": stacks, "total": sum(counts.values()),
            "samples": sum(m["samples"] for m in meta), "errors": sum(m["errors"] for m in meta),
            "cut": sum(m["cut"] for m in meta),
            "cut_reason": next((m["cut_reason"] for m in meta if m["cut_reason"]), None),
            "rate": next((m["rate"] for m in meta if m["rate"]), None),
            "duration": max([m["duration"] or 0 for m in meta] or [0]),
            "achieved_rate": min(rates) if rates else None, "sources": meta}


def label(frame: dict, lines: bool = True) -> str:
    """``function (file:line)`` as py-spy prints a frame; a root frame is its name alone."""
    if frame.get("kind", "python") != "python":
        return frame["function"]
    if not lines or not frame.get("line"):
        return "%s (%s)" % (frame["function"], frame["file"])
    return "%s (%s:%s)" % (frame["function"], frame["file"], frame["line"])


def by_label(merged: dict, lines: bool = True):
    """[(labels root first, count)] with stacks that differ only below ``lines`` granularity added up."""
    names = [label(f, lines) for f in merged["frames"]]
    out = {}
    for stack in merged["stacks"]:
        key = tuple(names[i] for i in stack["frames"])
        out[key] = out.get(key, 0) + stack["count"]
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


def to_collapsed(merged: dict, lines: bool = True) -> str:
    """Brendan Gregg's collapsed stacks: ``root;...;leaf COUNT`` per distinct stack (flamegraph.pl, inferno and
    speedscope read it). A ``;`` inside a name would split a frame, so it becomes ``:``."""
    rows = []
    for chain, count in by_label(merged, lines):
        rows.append("%s %d" % (";".join(clean(n).replace(";", ":") for n in chain), count))
    return "\n".join(rows) + ("\n" if rows else "")


def clean(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def to_speedscope(merged: dict, name: str = "kubectl wand profile") -> dict:
    """speedscope's file format (``type: sampled``): one profile, samples root first. With a sampling rate the
    weights are seconds (each sample stands for 1/rate s of that thread), else sample counts (unit none)."""
    rate = merged.get("rate")
    frames = []
    for f in merged["frames"]:
        item = {"name": f["function"]}
        if f.get("kind", "python") == "python":
            item["file"] = f["file"]
            if f.get("line"):
                item["line"] = f["line"]
        frames.append(item)
    samples = [s["frames"] for s in merged["stacks"]]
    weights = [s["count"] / rate if rate else s["count"] for s in merged["stacks"]]
    total = sum(weights)
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        "exporter": "kubectl-wand",
        "activeProfileIndex": 0,
        "shared": {"frames": frames},
        "profiles": [{"type": "sampled", "name": name, "unit": "seconds" if rate else "none",
                      "startValue": 0, "endValue": total, "samples": samples, "weights": weights}],
    }


def top(merged: dict, limit=None, lines: bool = True) -> list:
    """The hottest Python functions, hottest first: [{"function", "file", "line", "label", "own", "total",
    "own_pct", "total_pct"}]. own: samples with it as the innermost frame; total: samples with it anywhere on
    the stack (counted once per sample, recursion included). Shares are of every recorded sample. Root
    frames (pod, process, thread) are not functions and are left out. ``lines=False`` groups a function's
    lines together (line is then null)."""
    own, total, info = {}, {}, {}
    grand = merged["total"] or 1
    for stack in merged["stacks"]:
        seen = set()
        python = [i for i in stack["frames"] if merged["frames"][i].get("kind", "python") == "python"]
        for pos, i in enumerate(python):
            f = merged["frames"][i]
            key = (f["function"], f["file"], f["line"] if lines else None)
            info.setdefault(key, f)
            if key not in seen:
                seen.add(key)
                total[key] = total.get(key, 0) + stack["count"]
            if pos == len(python) - 1:
                own[key] = own.get(key, 0) + stack["count"]
    rows = []
    for key, tot in total.items():
        mine = own.get(key, 0)
        f = dict(info[key], line=key[2])
        rows.append({"function": key[0], "file": key[1], "line": key[2], "label": label(f, lines), "own": mine,
                     "total": tot, "own_pct": round(100.0 * mine / grand, 2),
                     "total_pct": round(100.0 * tot / grand, 2)})
    rows.sort(key=lambda r: (-r["own"], -r["total"], r["label"]))
    return rows[:limit] if limit else rows


def to_svg(merged: dict, title: str = "kubectl wand profile", lines: bool = True, width: int = 1200) -> str:
    from .flamegraph import render
    return render(by_label(merged, lines), title=title, width=width, total=merged["total"])
