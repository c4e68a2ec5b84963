"""Runs INSIDE the target (its own interpreter, 3.12+, stdlib only): what one hit of trace's probe records.

Split from probe.py: the values of the expressions, their reprs bounded, the errors an expression raised (said
once per location), and with --snapshot the frame's locals and its stack. ``Hits`` is a part of probe.Probe
(``class Probe(Hits)``): its methods read the probe's exprs, compiled, repr, max_repr, snapshot, queue,
reported, pid and dropped. It travels as source just before probe.py and runs in the same namespace.
"""
import threading
import time

MAX_LOCALS = 100
MAX_STACK = 64


class Hits:
    def record(self, code, line, frame, me):
        thread = getattr(threading, "_active", {}).get(me)  # current_thread() would register foreign threads
        name = thread.name if thread is not None else "thread-%d" % me
        hit = {"time": time.time(), "pid": self.pid, "thread": name,
               "file": code.co_filename, "line": line, "function": code.co_qualname,
               "values": self.evaluate(code, line, frame), "dropped": self.dropped}
        if self.snapshot:
            hit["locals"] = self.locals_of(frame)
            hit["stack"] = stack_of(frame)
        return hit

    def evaluate(self, code, line, frame):
        values = []
        for text, compiled in zip(self.exprs, self.compiled):
            try:
                value = eval(compiled, frame.f_globals, frame.f_locals)
            except Exception as exc:
                self.report(code, line, text, exc)
                values.append({"expr": text, "error": type(exc).__name__})
                continue
            values.append({"expr": text, "repr": self.bounded(value)})
        return values

    def report(self, code, line, expr, exc):
        """An expression (or the condition) raised: tell the agent once per location and expression."""
        key = (code.co_filename, line, expr)
        if key in self.reported:
            return
        self.reported.add(key)
        self.queue.append({"error": {"file": code.co_filename, "line": line, "expr": expr,
                                     "message": "%s: %s" % (type(exc).__name__, self.text_of(exc))}})

    def bounded(self, value):
        try:
            text = self.repr.repr(value)
        except Exception as exc:
            text = "<repr failed: %s>" % type(exc).__name__
        return text if len(text) <= self.max_repr else text[:self.max_repr] + "..."

    def text_of(self, exc):
        try:
            text = str(exc)
        except Exception:
            text = "?"
        return text[:self.max_repr]

    def locals_of(self, frame):
        out = {}
        for name, value in list(frame.f_locals.items())[:MAX_LOCALS]:
            out[str(name)] = self.bounded(value)
        return out


def stack_of(frame):
    out = []
    while frame is not None and len(out) < MAX_STACK:
        code = frame.f_code
        out.append({"file": code.co_filename, "line": frame.f_lineno, "function": code.co_qualname})
        frame = frame.f_back
    return out
