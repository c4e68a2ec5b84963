"""A known stack: the main thread blocked in C in a handler -> service -> storage chain (time.sleep), and a
thread named "hot-worker" spending its time in crunch() (a known hot function).
argv: [SECONDS to sleep] [--refuse-scripts: an audit hook refuses every script sent by sys.remote_exec]."""
import os
import sys
import threading
import time

SPINS = 0


def crunch(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def hot_worker():
    global SPINS
    while True:
        crunch(10000)
        SPINS += 1


def storage_read(seconds):
    time.sleep(seconds)


def service_lookup(seconds):
    storage_read(seconds)


def handle_request(seconds):
    service_lookup(seconds)


def refuse(event, args):
    if event == "cpython.remote_debugger_script":
        raise RuntimeError("this app refuses remote scripts")


if "--refuse-scripts" in sys.argv:
    sys.addaudithook(refuse)
    sys.argv.remove("--refuse-scripts")
threading.Thread(target=hot_worker, name="hot-worker", daemon=True).start()
print("READY pid=%d" % os.getpid(), flush=True)
handle_request(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
