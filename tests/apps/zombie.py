"""A parent that never reaps its exited Python child: the child stays a zombie (state Z)."""
import os
import time

child = os.fork()
if child == 0:
    os._exit(0)
os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # it has exited; WNOWAIT: it stays unreaped
print("READY pid=%d zombie=%d" % (os.getpid(), child), flush=True)
while True:
    time.sleep(3600)
