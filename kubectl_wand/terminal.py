"""The one rule for what reaches a terminal: every name the target chose (argv, comm, thread, function, file,
task, a repr, an error quoting them) is untrusted text, and no character of it that a terminal acts on is
written raw.

``text(value)`` is a value inside a line: every control character is shown visibly escaped (``\\x1b``, ``\\n``,
``\\r``, ``\\x9b``, ``\\u202e``), so it can neither drive the terminal (an ESC or C1 sequence retitles, clears or
colours it) nor forge a line (a newline or carriage return). ``Human`` wraps a verb's stdout and stderr and
applies the same rule to everything written there except our own line structure (newline and tab): a value that
was formatted without ``text`` still cannot reach the terminal's control sequences. Data formats (``-o
json``/``-o yaml``, a profile written to stdout, the output of the user's own code in exec-py) are written through
``raw`` and keep the values as they are: JSON and YAML escape them themselves.

Escaped: C0 controls and DEL, C1 controls (U+0080-U+009F: 8-bit CSI/OSC), the Unicode format characters that
reorder or hide text (bidi embeddings, overrides and isolates, marks, zero-width characters, BOM, interlinear
annotation, tags), the line and paragraph separators, and lone surrogates (bytes that were not UTF-8, shown as
``\\xNN``). A backslash is left as it is.
"""
from __future__ import annotations

import re

# Kept short and explicit (a scan of Unicode's categories at start would cost ~100 ms).
OTHERS = ("\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
          "\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\ud800-\udfff"
          "\U0001d173-\U0001d17a\U000e0000-\U000e0fff")
PATTERNS = {"text": "[\x00-\x1f" + OTHERS + "]",
            "lines": "[\x00-\x08\x0b-\x1f" + OTHERS + "]",  # newline and tab stay
            "ascii lines": "[\x00-\x08\x0b-\x1f\x7f]"}  # the same for ASCII text: a smaller set, faster
_compiled = {}


def pattern(name):
    """Compiled on first use: ~1 ms of every verb's start otherwise, and printable ASCII never needs one."""
    if name not in _compiled:
        _compiled[name] = re.compile(PATTERNS[name])
    return _compiled[name]
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in NAMED:
        return NAMED[ch]
    code = ord(ch)
    if 0xdc80 <= code <= 0xdcff:  # a byte that was not UTF-8 (surrogateescape)
        return "\\x%02x" % (code - 0xdc00)
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def text(value) -> str:
    """``value`` as text safe inside one line of a terminal (None is ``None``, as ``%s`` shows it)."""
    s = value if isinstance(value, str) else str(value)
    if s.isascii() and s.isprintable():  # the usual case, checked in C
        return s
    return pattern("text").sub(lambda m: _escaped(m.group()), s)


def lines(value) -> str:
    """Text made of our own lines: the same rule, except that newlines and tabs stay."""
    s = value if isinstance(value, str) else str(value)
    return pattern("ascii lines" if s.isascii() else "lines").sub(lambda m: _escaped(m.group()), s)


class Human:
    """A text stream for human output: ``write`` applies ``lines``; ``raw`` is the stream itself (data formats,
    the spinner's carriage returns). Everything else (flush, isatty, buffer, getvalue) is the stream's."""

    def __init__(self, stream):
        self.raw = stream

    def write(self, s):
        return self.raw.write(lines(s))

    def __getattr__(self, name):
        return getattr(self.raw, name)


def human(stream):
    """``stream`` wrapped once (wrapping a Human again returns it)."""
    return stream if stream is None or isinstance(stream, Human) else Human(stream)


def raw(stream):
    """The stream under a Human (or the stream itself)."""
    return getattr(stream, "raw", stream) if isinstance(stream, Human) else stream
