"""Runs under the *target's* interpreter, in a short-lived subprocess beside it.

Usage (the agent passes this file's source with ``-c``):
  inject PID PATH   compile the code read from stdin (if any) with the target's own compiler, so a syntax
                    error never reaches the target; then ``sys.remote_exec(PID, PATH)``. PATH ``-``: only
                    compile (our bootstrap is already queued in the target: the agent adopted it).
  stack PID         every thread's Python stack, read from the target's memory without injecting.
Prints one JSON object on stdout. Loaded into the agent instead when the agent runs the target's own interpreter
(session.in_process_injector): json is imported only to print, not at the top (9 ms of an agent's start).
"""
import sys


def inject(pid, path, code=None):
    """``code``: the bytes to compile first; None reads them from stdin (the subprocess form)."""
    if code is None:
        code = sys.stdin.buffer.read()
    if code:
        try:
            compile(code, "<wand>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            return {"ok": False, "kind": "syntax", "error": "%s: %s (line %s)" % (
                type(exc).__name__, exc.msg, exc.lineno), "line": exc.lineno, "offset": exc.offset,
                "text": (exc.text or "").rstrip("\n")}
    if path == "-":
        return {"ok": True}
    if not hasattr(sys, "remote_exec"):
        return {"ok": False, "kind": "version", "error": "this interpreter has no sys.remote_exec"}
    try:
        sys.remote_exec(pid, path)
    except PermissionError as exc:
        return {"ok": False, "kind": "permission", "error": str(exc)}
    except Exception as exc:
        return {"ok": False, "kind": classify(str(exc)), "error": "%s: %s" % (type(exc).__name__, exc)}
    return {"ok": True}


def classify(message):
    if "not enabled in the remote process" in message:
        return "disabled"
    if "Can't send commands" in message or "free-threaded" in message or "PyRuntime" in message:
        return "version"
    return "inject"


def stack(pid):
    try:
        import _remote_debugging
        unwinder = _remote_debugging.RemoteUnwinder(pid, all_threads=True)
        threads = unwinder.get_stack_trace()
    except Exception as exc:
        return {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    out = []
    for thread in threads:
        tid, frames = thread[0], thread[1]
        out.append({"thread_id": tid, "frames": [frame(f) for f in frames]})
    return {"ok": True, "threads": out}


def frame(f):
    if hasattr(f, "filename"):
        return {"file": f.filename, "line": f.lineno, "function": f.funcname}
    return {"file": f[1], "line": f[2], "function": f[0]}  # the documented tuple form


if __name__ == "__main__":
    import json
    op, target = sys.argv[1], int(sys.argv[2])
    result = inject(target, sys.argv[3]) if op == "inject" else stack(target)
    sys.stdout.write(json.dumps(result))
