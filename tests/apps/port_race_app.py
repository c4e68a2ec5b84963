"""http_app, with an audit hook that lets another process win the debug port race deterministically.

When the first remote debugger script starts (kubectl wand's injection, after its agent found the port free),
the hook prints ``SCRIPT`` and holds the main thread until SIGUSR1 (at most 20 s): the test takes the port
meanwhile, exactly as another local process could between the agent's check and the payload's listen.
"""
import os
import signal
import sys

import http_app

seen = []


def hook(event, args):
    if event != "cpython.remote_debugger_script" or seen:
        return
    seen.append(event)
    print("SCRIPT", flush=True)
    signal.sigtimedwait([signal.SIGUSR1], 20)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])  # delivered to sigtimedwait only
    sys.addaudithook(hook)
    sys.exit(http_app.main())
