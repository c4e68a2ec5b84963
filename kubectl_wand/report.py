"""Human reports shared by verbs: what a timed-out injection left and where the main thread is."""
from __future__ import annotations

from .agent import protocol
from .terminal import text


def where(frames):
    if not frames:
        return "unknown (its stack could not be read)"
    f = frames[0]
    return "%s:%s:%s" % (text(f["file"]), text(f["line"]), text(f["function"]))


def timed_out(result, err):
    err.write("error: %s\n" % text(result["error"]))
    call = (" in %s()" % text(result["syscall"])) if result.get("syscall") else ""
    if result.get("in_bootstrap"):  # the deadline passed just as the main thread took our script
        err.write("  main thread: it had just started kubectl wand's bootstrap, not blocked in the app%s\n" % (
            (" (under %s)" % where(result["frames"])) if result.get("frames") else ""))
    else:
        err.write("  main thread blocked%s at %s\n" % (call, where(result.get("frames"))))
    for f in (result.get("frames") or [])[1:6]:
        err.write("    called from %s\n" % where([f]))
    if result["status"] == protocol.PENDING:
        err.write("  what happens next: nothing of this request will run. When the main thread wakes it runs only "
                  "a tiny bootstrap (%s, no user code) that finds nobody waiting, deletes itself and returns "
                  "silently.\n" % text(result.get("left_behind")))
        if not result.get("stopped") and not result.get("interrupted"):
            # An idle server's main thread often sleeps in a call with a timeout (a gunicorn sync worker: 15 s
            # in select by default), so waiting longer, or waking it, is the fix.
            err.write("  fix: retry with a longer --timeout (e.g. --timeout 60s), or wake the main thread "
                      "(e.g. send the app a request)\n")
    else:
        err.write("  what happens next: the code keeps running in the app's main thread until that call returns; "
                  "its output is discarded.\n")
