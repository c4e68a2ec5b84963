"""An app that says, each time a debugger script starts on its main thread (the audit event
cpython.remote_debugger_script), whether a complete shipped debugpy (lib/.complete) already lies beside that
script. Run with -S: debugpy is not importable, so attach ships it."""
import os
import sys
import time

seen = []


def hook(event, args):
    if event == "cpython.remote_debugger_script":
        seen.append(os.path.exists(os.path.join(os.path.dirname(args[0]), "lib", ".complete")))


sys.addaudithook(hook)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.01)
    while seen:
        print("SHIPPED_BEFORE=%s" % seen.pop(0), flush=True)
