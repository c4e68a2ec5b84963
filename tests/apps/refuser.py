"""An app that forbids remote debugging with an audit hook on cpython.remote_debugger_script (PEP 768),
its main thread serving a short poll() loop like a real server."""
import os
import select
import sys


def refuse(event, args):
    if event == "cpython.remote_debugger_script":
        raise PermissionError("remote debugging is forbidden here")


sys.addaudithook(refuse)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    select.select([], [], [], 0.05)
