"""The program's entry point (the console script, `python -m kubectl_wand`, krew's zipapp): import the command
line and run it. Ctrl-C while the program is still importing itself or building its parser (~40 ms of its
start), or at any moment the verb did not catch it, ends it with the exit code of an interrupt and no
traceback: the verbs close what they started on the way out (finally blocks and exit handlers)."""
import os

from .errors import INTERRUPTED


def main():
    try:
        from .cli import entry
        entry()
    except KeyboardInterrupt:
        os._exit(INTERRUPTED)
