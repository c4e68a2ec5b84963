"""Run with ``python -m cli_chain``: the shape of ``python -m uvicorn`` under click. A Command instance called
(its __call__ is entered from C), a Context.invoke, and a worker thread whose Python name is longer than the
15 bytes the kernel keeps. CPython 3.14's stack reader stops at each C call's entry frame; py-spy does not."""
import os
import select
import threading
import time


class Context:
    def invoke(self, callback, *args, **kwargs):
        with self:
            return callback(*args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Command:
    def __call__(self, *args, **kwargs):
        return self.main(*args, **kwargs)

    def main(self):
        return self.invoke()

    def invoke(self):
        return Context().invoke(serve)


def worker(ready):
    ready.set()
    while True:
        time.sleep(1)


def serve():
    ready = threading.Event()
    threading.Thread(target=worker, args=(ready,), name="AnyIO worker thread", daemon=True).start()
    ready.wait()
    print("READY pid=%d" % os.getpid(), flush=True)
    poller = select.poll()  # poll(2) with a timeout: stopped and continued, it resumes in restart_syscall
    while True:
        poller.poll(1000)


cli = Command()
if __name__ == "__main__":
    cli()
