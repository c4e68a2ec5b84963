"""An app whose own code answers kubectl wand's back-channel: what a hostile target may send (argv[1], the shape).

PEP 768's audit event names the injected script; the script's directory names the socket (``s``) and the token
(the directory's name). A thread of the app connects to that socket itself (same pid: SO_PEERCRED passes) and
answers with the shape; the hook then refuses the real bootstrap, so only the app's answer is seen.

Shapes: huge-result (400 MB, one line), huge-hello (300 MB, no newline), nested-hello (100 000 deep),
nested-result (500 deep: below the C parser's limit, above ours), list-hello, hello-types ("server": 7),
wrong-types (a result whose fields have the wrong types, per operation), drip-hello, drip-result (a byte every
0.1 s, endless), stall-hello (connects, says nothing), stall-result (a hello, then nothing), bad-hit (trace:
a good "installed", then a hit whose values are not objects). The request's operation (exec, attach, trace)
picks the wrong-types result.
"""
import json
import os
import select
import socket
import sys
import threading
import time

SHAPE = sys.argv[1]
MB = b"x" * (1 << 20)
WRONG = {
    "exec": {"status": "ok", "stdout": 7, "stderr": ["x"], "truncated": "no"},
    "attach": {"status": "listening", "host": 7, "port": "5679"},
    "trace": {"installed": {"tool_id": "x", "file": 7, "line": "y"}},
}


def drip(conn, data):
    for byte in data:
        conn.sendall(bytes([byte]))
        time.sleep(0.1)  # the drip itself: one byte every 0.1 s


def answer(script):
    private = os.path.dirname(script)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.path.join(private, "s"))
    hello = json.dumps({"token": os.path.basename(private), "pid": os.getpid(), "python": "3.14",
                        "debugpy": "/nowhere", "server": None}).encode() + b"\n"
    try:
        if SHAPE == "huge-hello":
            while True:
                conn.sendall(MB)
        if SHAPE == "nested-hello":
            conn.sendall(b'{"token": "x", "n": ' + b"[" * 100000 + b"]" * 100000 + b"}\n")
        elif SHAPE == "list-hello":
            conn.sendall(b"[1, 2]\n")
        elif SHAPE == "hello-types":
            conn.sendall(json.dumps({"token": os.path.basename(private), "server": 7}).encode() + b"\n")
        elif SHAPE == "drip-hello":
            drip(conn, hello * 1000)
        elif SHAPE == "stall-hello":
            pass
        else:
            conn.sendall(hello)
            request = b""
            while not request.endswith(b"\n"):
                chunk = conn.recv(1 << 16)
                if not chunk:
                    return
                request += chunk
            op = json.loads(request).get("op")
            if SHAPE == "huge-result":
                conn.sendall(b'{"status": "ok", "stdout": "')
                for _ in range(400):
                    conn.sendall(MB)
                conn.sendall(b'"}\n')
            elif SHAPE == "nested-result":
                conn.sendall(b'{"status": "ok", "stdout": ' + b"[" * 500 + b"]" * 500 + b"}\n")
            elif SHAPE == "wrong-types":
                conn.sendall(json.dumps(WRONG[op]).encode() + b"\n")
            elif SHAPE == "bad-hit":  # trace: installed, then a hit whose values are not objects
                conn.sendall(json.dumps({"installed": {"tool_id": 5, "file": "hostile.py", "line": 30,
                                                       "functions": ["answer"]}}).encode() + b"\n")
                conn.sendall(json.dumps({"hit": {"time": 1.0, "thread": "t", "file": "hostile.py", "line": 30,
                                                 "values": [7]}}).encode() + b"\n")
            elif SHAPE == "drip-result":
                drip(conn, b'{"status": "ok", "stdout": "' + b"x" * 100000)
        select.select([conn], [], [], 60)  # hold the connection until the agent closes it
    except OSError:
        pass  # the agent cut us off: what the test expects
    finally:
        conn.close()


def hook(event, args):
    if event == "cpython.remote_debugger_script":
        threading.Thread(target=answer, args=(args[0],), daemon=True).start()
        raise PermissionError("only the app answers here")


sys.addaudithook(hook)
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    select.select([], [], [], 0.05)  # a main thread that reaches safe points often, like a server's loop
