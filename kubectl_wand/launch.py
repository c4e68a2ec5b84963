"""The program's entry point (the console script, `python -m kubectl_wand`, krew's zipapp): start a pod's early
call for the simple command lines (quickstart.py: before the command line is parsed), import the command line
and run it. Ctrl-C while the program is still importing itself or building its parser (~40 ms of its start),
or at any moment the verb did not catch it, ends it with the exit code of an interrupt and no traceback: the
verbs close what they started on the way out (finally blocks and exit handlers), and an early call nobody
claimed yet is dropped here."""
import os
import sys

from .errors import INTERRUPTED


def main():
    quickstart = None
    try:
        from . import quickstart
        quickstart.start(sys.argv[1:])
        from .cli import entry
        entry()
    except KeyboardInterrupt:
        if quickstart is not None:
            try:
                quickstart.drop()  # its launcher puts the terminal back; a second Ctrl-C ends the wait
            except KeyboardInterrupt:
                pass
        os._exit(128 + quickstart.SIGNALLED[0] if quickstart is not None and quickstart.SIGNALLED else INTERRUPTED)
