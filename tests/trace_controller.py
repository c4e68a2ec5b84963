"""The agent's trace op in a process of its own, for the tests that kill or freeze the controller.

argv[1] is the request (JSON). Events and then {"result": ...} are JSON lines on stdout; EOF on stdin sets
``stop``, as the CLI wires it.
"""
import json
import sys
import threading

from kubectl_wand.agent.main import handle


def main():
    request = json.loads(sys.argv[1])
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def emit(event):
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    emit({"result": handle(request, emit=emit, stop=stop)})


if __name__ == "__main__":
    main()
