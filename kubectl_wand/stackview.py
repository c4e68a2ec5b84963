"""Text for the agent's ``stack`` results: threads as ``py-spy dump`` prints them, asyncio tasks as the tree of
``python -m asyncio pstree``. Plain data in (one entry of the op's ``processes`` list), text out. Every name
in it was chosen by the target (argv, thread, task, function and file names): each goes through
``terminal.text``.
"""
from __future__ import annotations

from .terminal import text


def frame_text(f: dict) -> str:
    return "%s (%s:%s)" % (text(f["function"]), text(f["file"]), text(f["line"]))


def thread_state(t: dict) -> str:
    parts = []
    state = t.get("state") or "unknown"
    if state in ("sleeping", "disk-sleep") and t.get("syscall"):
        parts.append("%s in %s" % (text(state), text(t["syscall"])))
    else:
        parts.append(text(state))
    if t.get("gil"):
        parts.append("holds the GIL")
    return ", ".join(parts)


def render_process(entry: dict, pod=None) -> str:
    where = " in pod %s" % pod if pod else ""
    if "error" in entry:
        return "Process %s%s: %s\n" % (text(entry["pid"]), where, text(entry["error"]))
    lines = ["Process %s%s: %s" % (text(entry["pid"]), where, text(entry.get("command", ""))),
             "Python %s" % text(entry.get("python", "?"))]
    for t in entry.get("threads", []):
        lines.append("")
        cut = " (its first 15 bytes: the kernel's copy of the name)" if t.get("name_cut") else ""
        lines.append('Thread %s "%s"%s (%s)' % (text(t["tid"]), text(t["name"]), cut, thread_state(t)))
        if not t["frames"]:
            lines.append("    (no Python frames)")
        for f in t["frames"]:
            lines.append("    " + frame_text(f))
        if t.get("cut"):  # never cut silently: the reader stopped at a C call and the rest could not be read
            lines.append("    ... outer frames may be missing: %s" % text(t["cut"]))
    if "tasks" in entry:
        lines.append("")
        lines.extend(render_tasks(entry))
    return "\n".join(lines) + "\n"


def render_tasks(entry: dict) -> list:
    """The task tree, or why there is none."""
    if entry.get("asyncio") is False:
        return ["No asyncio tasks (asyncio is not loaded in this process)."]
    if entry.get("async_error"):
        return ["Tasks could not be read: %s" % text(entry["async_error"])]
    tasks = entry.get("tasks") or []
    if not tasks:
        return ["No asyncio tasks."]
    cycle = find_cycle(tasks)
    if cycle:
        names = {t["id"]: text(t["name"]) for t in tasks}
        return ["The tasks await each other in a cycle, so there is no tree: %s" % " -> ".join(
            str(names.get(i, hex(i))) for i in cycle)]
    return ["asyncio tasks:"] + tree_lines(tasks)


def find_cycle(tasks):
    """A list of task ids that await each other in a circle, or None."""
    children = {}
    for t in tasks:
        for w in t["awaited_by"]:
            children.setdefault(w["task"], []).append(t["id"])
    state = {}
    for start in children:
        if state.get(start):
            continue
        path, stack = [], [(start, iter(children.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            node, kids = stack[-1]
            kid = next(kids, None)
            if kid is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(kid) == 1:
                return path[path.index(kid):] + [kid]
            elif not state.get(kid):
                state[kid] = 1
                path.append(kid)
                stack.append((kid, iter(children.get(kid, ()))))
    return None


def tree_lines(tasks) -> list:
    """Nodes are tasks ``(T) name`` and coroutine frames ``function file:line``; a task's children are the
    frames (outermost first) through which it awaits each child task, then that task. A task awaiting no
    other task shows its own coroutine stack. Same shape as ``python -m asyncio pstree``."""
    names = {t["id"]: text(t["name"]) for t in tasks}
    children, labels = {}, {}
    frame_nodes = {}

    def node_for(parent, text):
        key = (parent, text)
        if key not in frame_nodes:
            frame_nodes[key] = ("frame", len(frame_nodes))
            labels[frame_nodes[key]] = text
            children.setdefault(parent, []).append(frame_nodes[key])
        return frame_nodes[key]

    def short(f):
        return "%s %s:%s" % (text(f["function"]), text(f["file"]), text(f["line"]))

    awaiting = set()
    for t in tasks:
        labels[("task", t["id"])] = "(T) %s" % names[t["id"]]
        for w in t["awaited_by"]:
            awaiting.add(w["task"])
            labels.setdefault(("task", w["task"]), "(T) %s" % names.get(w["task"], hex(w["task"])))
            cur = ("task", w["task"])
            for f in reversed(w["frames"]):
                cur = node_for(cur, short(f))
            kids = children.setdefault(cur, [])
            if ("task", t["id"]) not in kids:
                kids.append(("task", t["id"]))
    for t in tasks:
        if t["id"] not in awaiting:
            cur = ("task", t["id"])
            for f in reversed(t["frames"]):
                cur = node_for(cur, short(f))
    inner = {c for kids in children.values() for c in kids}
    out = []

    roots = [n for n in labels if n[0] == "task" and n not in inner]
    todo = [(root, "", True) for root in reversed(roots)]
    while todo:  # iterative: a deep await chain must not exhaust our recursion limit
        node, prefix, last = todo.pop()
        out.append("%s%s%s" % (prefix, "└── " if last else "├── ", labels[node]))
        kids = children.get(node, [])
        inner_prefix = prefix + ("    " if last else "│   ")
        todo.extend((kid, inner_prefix, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))
    return out
