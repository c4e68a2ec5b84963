"""A parent that forks a worker and forks a new one whenever it dies: a supervisor like gunicorn's master,
or, with --reload on its command line, a reloader like uvicorn --reload."""
import os
import sys
import time


def spawn():
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(0.05)
    return pid


worker = spawn()
print("READY pid=%d worker=%d reload=%s" % (os.getpid(), worker, "--reload" in sys.argv), flush=True)
while True:
    os.waitpid(worker, 0)
    worker = spawn()
