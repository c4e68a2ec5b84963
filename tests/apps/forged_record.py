"""An app that forges kubectl wand's debug-server record (``debugpy._kubectl_wand_server``) and holds the port it
names itself, so attach sees an "already listening" server whose record the app wrote: argv[1] is the record's
``since`` as JSON (a string, Infinity, NaN), and its ``debugpy`` version carries terminal escapes."""
import json
import os
import socket
import sys
import time
import types

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", 0))
sock.listen(5)
port = sock.getsockname()[1]
fake = types.ModuleType("debugpy")
fake._kubectl_wand_server = {"host": "127.0.0.1", "port": port, "since": json.loads(sys.argv[1]), "mode": "in-process",
                             "debugpy": "1.8\x1b]52;c;aGk=\x07\u202e", "source": "installed"}
sys.modules["debugpy"] = fake
print("READY pid=%d port=%d" % (os.getpid(), port), flush=True)
while True:
    time.sleep(0.2)
