"""The program's entry point (the console script, `python -m kubectl_wand`, krew's zipapp): import the command
line and run it. Ctrl-C while the program is still importing itself (~40 ms of its start) ends it with the
exit code of an interrupt and no traceback: nothing was started yet."""
import os

from .errors import INTERRUPTED


def main():
    try:
        from .cli import entry
    except KeyboardInterrupt:
        os._exit(INTERRUPTED)
    entry()
