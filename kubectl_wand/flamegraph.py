"""A flame graph as one self-contained SVG: no script, no external font or stylesheet, the same bytes for the
same profile. Roots at the bottom, a frame's width is its share of the samples, siblings in name order (as
flamegraph.pl draws them), each box's tooltip (``<title>``) gives its samples and percent.
"""
from __future__ import annotations

import zlib

ROW = 17            # px per stack level
FONT = 11           # px, monospace: its advance is ~0.6 em, so the text that fits a box can be computed
CHAR = FONT * 0.6
PAD = 10
MIN_WIDTH = 0.3     # px: narrower boxes are not drawn (their samples still count in their parent's width)


class Node:
    __slots__ = ("name", "count", "children")

    def __init__(self, name):
        self.name, self.count, self.children = name, 0, {}


def tree(stacks) -> Node:
    """stacks: [(labels root first, count)] -> a tree under one root "all"."""
    root = Node("all")
    for chain, count in stacks:
        root.count += count
        node = root
        for name in chain:
            node = node.children.setdefault(name, Node(name))
            node.count += count
    return root


def depth(node) -> int:
    return 1 + max((depth(c) for c in node.children.values()), default=0)


# Characters XML 1.0 forbids even as references (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/FFFF): a name
# the target chose may hold them, and one of them makes the whole SVG unreadable. Shown as \xNN / \uNNNN.
NOT_XML = {c: "\\x%02x" % c for c in list(range(9)) + [11, 12] + list(range(14, 32))}
NOT_XML.update({c: "\\u%04x" % c for c in list(range(0xD800, 0xE000)) + [0xFFFE, 0xFFFF]})


def escape(text: str) -> str:
    return (text.translate(NOT_XML).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def colour(name: str) -> str:
    """A warm colour chosen by the function's name alone (crc32, not the salted hash()), so the same function
    has the same colour in every graph; root frames (pod, process, thread, all) are blue-grey."""
    h = zlib.crc32(name.split(" (")[0].encode("utf-8", "replace"))
    if " (" not in name:
        return "rgb(%d,%d,%d)" % (150 + h % 40, 170 + (h >> 8) % 40, 200 + (h >> 16) % 40)
    return "rgb(%d,%d,%d)" % (205 + h % 50, 80 + (h >> 8) % 150, (h >> 16) % 60)


def fit(name: str, width: float) -> str:
    chars = int((width - 6) / CHAR)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[:chars - 2] + ".."


def render(stacks, title="profile", width=1200, total=None) -> str:
    root = tree(stacks)
    total = root.count if total is None else total
    levels = depth(root)
    top = PAD + 2 * ROW + 4  # room for the title and the subtitle
    height = top + levels * ROW + PAD
    scale = (width - 2 * PAD) / float(root.count or 1)
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="DejaVu Sans Mono,Menlo,Consolas,monospace" font-size="%d">' % (width, height, width, height,
                                                                                         FONT),
           '<title>%s</title>' % escape(title),
           '<rect x="0" y="0" width="%d" height="%d" fill="#f8f8f2"/>' % (width, height),
           '<text x="%d" y="%d" font-size="%d" text-anchor="middle">%s</text>' % (
               width // 2, PAD + ROW - 4, FONT + 4, escape(title)),
           '<text x="%d" y="%d" text-anchor="middle" fill="#555">%d samples; width is the share of samples, '
           'roots at the bottom; hover a frame for its count</text>' % (width // 2, PAD + 2 * ROW - 2, total)]
    stack = [(root, PAD, 0)]
    while stack:  # iterative: a deep recursion in the target must not exhaust ours
        node, x, level = stack.pop()
        w = node.count * scale
        if w < MIN_WIDTH:
            continue
        y = top + (levels - 1 - level) * ROW
        pct = 100.0 * node.count / (total or 1)
        tip = "%s: %d samples, %.2f%%" % (node.name, node.count, pct)
        out.append('<g><title>%s</title><rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s" rx="2"/>' % (
            escape(tip), x, y, max(w - 0.5, 0.1), ROW - 1, colour(node.name)))
        text = fit(node.name, w)
        if text:
            out.append('<text x="%.2f" y="%d">%s</text>' % (x + 3, y + ROW - 5, escape(text)))
        out.append('</g>')
        child_x = x
        for name in sorted(node.children):
            child = node.children[name]
            stack.append((child, child_x, level + 1))
            child_x += child.count * scale
    out.append('</svg>')
    return "\n".join(out) + "\n"
