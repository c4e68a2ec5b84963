"""A target whose every name is hostile to a terminal: its thread names, function names and file names (and the
argv it is started with) hold ESC/CSI/OSC sequences, CR, newlines, C1 controls and bidi overrides.

A thread named HOSTILE waits in a function named HOSTILE compiled from a file named HOSTILE; the main thread
calls ``tick`` (its line is marked for the trace test) every 20 ms with a local ``evil`` whose repr is HOSTILE.
Prints READY once everything runs.
"""
import os
import threading
import time

# Each piece alone would do harm: retitle (OSC 0), clear (CSI 2J), colour (SGR), forge a line (CR, LF), 8-bit
# CSI (C1 0x9b), and reorder the text shown (RLO, RLI).
HOSTILE = ("\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\rFAKE 1 * * * * root\n"
           "FAKE-LINE\x9b31m\u202eevil\u2067x")


# CPython 3.14's stack reader decodes only compact ASCII names faithfully: this one reaches `stack` as it is.
ASCII_HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\rFAKE 1 * * * * root\nFAKE-LINE"


class Evil:
    def __repr__(self):
        return HOSTILE


never = threading.Event()
for name in (HOSTILE, ASCII_HOSTILE):
    source = "def f(event):\n    event.wait()\n"
    namespace = {}
    exec(compile(source, "/srv/" + name + ".py", "exec"), namespace)
    waiter = namespace["f"]
    waiter.__code__ = waiter.__code__.replace(co_name=name, co_qualname=name)
    threading.Thread(target=waiter, args=(never,), name=name, daemon=True).start()


def tick(evil):
    return evil  # trace:tick


print("READY pid=%d" % os.getpid(), flush=True)
while True:
    tick(Evil())
    time.sleep(0.02)
