"""A CPU-bound main thread that never blocks, in an app that restored SIGPIPE's default action (Python starts
with it ignored; a CLI tool that pipes into `head` restores it): a write into a closed socket kills it."""
import os
import signal

signal.signal(signal.SIGPIPE, signal.SIG_DFL)
counter = 0
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    counter += 1
