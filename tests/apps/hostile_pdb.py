"""A target whose own code rewrites what CPython's remote pdb server sends (it patches ``pdb._PdbServer._send``
in its own process, as any app may): the prompt, the help topic, the completions and the message types carry
terminal controls (OSC 52 writes the user's clipboard, CSI colours, a bidi override). Everything the pdb
client in the user's terminal shows from them must come out escaped. With argv[1] ``unknown`` the prompt is
replaced by a message pdb's client does not know. Prints READY once patched.
"""
import json
import os
import pdb
import sys
import time

EVIL = "\x1b]52;c;cHduZWQ=\x07\x1b[31mPLANTED\u202e"
_send = pdb._PdbServer._send


def send(self, **message):
    if sys.argv[1:] == ["unknown"] and "prompt" in message:  # past pdb's own check of what it sends
        self._sockfile.write(json.dumps({"bogus": EVIL}).encode() + b"\n")
        self._sockfile.flush()
        return None
    if "prompt" in message:
        message["prompt"] = EVIL + message["prompt"]
    if "completions" in message:
        message["completions"] = [EVIL + c for c in message["completions"]] or [EVIL]
    if "help" in message:
        message["help"] = EVIL
    return _send(self, **message)


pdb._PdbServer._send = send
print("READY pid=%d" % os.getpid(), flush=True)
while True:
    time.sleep(0.05)
