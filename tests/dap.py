"""A small, real Debug Adapter Protocol client for tests: attach, break, inspect, continue."""
from __future__ import annotations

import json
import queue
import socket
import threading
import time


class DAPError(Exception):
    pass


class DAPClient:
    def __init__(self, host: str, port: int, timeout: float = 15.0, retry: float = 0.05):
        """Connect, retrying every ``retry`` seconds until ``timeout`` (an editor retrying its attach)."""
        self.timeout = timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(retry)  # the forward/adapter is still coming up: retry until the deadline
        self.seq = 0
        self.responses: dict = {}
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.cond = threading.Condition()
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = self._recv()
                    if not chunk:
                        raise EOFError
                    buf += chunk
                header, buf = buf.split(b"\r\n\r\n", 1)
                length = int([h for h in header.split(b"\r\n") if h.lower().startswith(b"content-length")][0]
                             .split(b":")[1])
                while len(buf) < length:
                    chunk = self._recv()
                    if not chunk:
                        raise EOFError
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                msg = json.loads(body)
                if msg["type"] == "response":
                    with self.cond:
                        self.responses[msg["request_seq"]] = msg
                        self.cond.notify_all()
                elif msg["type"] == "event":
                    self.events.put(msg)
        except (EOFError, OSError, ValueError):
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _recv(self):
        # The socket's timeout bounds connect and send; a quiet debugger (nothing to report) is no reason for
        # the reader to stop: requests and events have their own deadlines.
        while True:
            try:
                return self.sock.recv(65536)
            except TimeoutError:
                continue

    def send(self, command: str, **arguments) -> int:
        self.seq += 1
        msg = {"seq": self.seq, "type": "request", "command": command, "arguments": arguments}
        data = json.dumps(msg).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        return self.seq

    def response(self, seq: int, timeout=None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        with self.cond:
            while seq not in self.responses:
                if self.closed:
                    raise DAPError("connection closed while waiting for response %d" % seq)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DAPError("no response to request %d" % seq)
                self.cond.wait(left)
            msg = self.responses.pop(seq)
        if not msg.get("success"):
            raise DAPError("%s failed: %s" % (msg.get("command"), msg.get("message")))
        return msg

    def request(self, command: str, **arguments) -> dict:
        return self.response(self.send(command, **arguments))

    def wait_event(self, name: str, timeout=None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DAPError("no %r event" % name)
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event["event"] == name:
                return event

    def attach_editor(self, breakpoint=None, exception_filters=()):
        """What an editor does to attach: initialize -> attach -> (initialized) -> setBreakpoints (``breakpoint``:
        (path, line), if any) -> setExceptionBreakpoints (if any filters) -> configurationDone. Returns the
        breakpoint as the debugger set it, or None."""
        self.request("initialize", adapterID="debugpy", clientID="wand-tests", linesStartAt1=True,
                     columnsStartAt1=True, pathFormat="path", supportsVariableType=True)
        attach_seq = self.send("attach", justMyCode=False, subProcess=False)
        self.wait_event("initialized")
        bp = None
        if breakpoint is not None:
            path, line = breakpoint
            bp = self.request("setBreakpoints", source={"path": path},
                              breakpoints=[{"line": line}])["body"]["breakpoints"][0]
        if exception_filters:
            self.request("setExceptionBreakpoints", filters=list(exception_filters))
        self.request("configurationDone")
        self.response(attach_seq)
        return bp

    def attach_with_breakpoint(self, path: str, line: int) -> dict:
        return self.attach_editor(breakpoint=(path, line))

    def locals_of_top_frame(self, thread_id: int) -> dict:
        frames = self.request("stackTrace", threadId=thread_id, startFrame=0, levels=5)["body"]["stackFrames"]
        scopes = self.request("scopes", frameId=frames[0]["id"])["body"]["scopes"]
        local = next(s for s in scopes if s["name"].lower().startswith("locals"))
        variables = self.request("variables", variablesReference=local["variablesReference"])["body"]["variables"]
        return {"frame": frames[0], "vars": {v["name"]: v["value"] for v in variables}}

    def close(self):
        try:
            self.request("disconnect", terminateDebuggee=False)
        except (DAPError, OSError):
            pass
        self.sock.close()


def break_on_request(client: DAPClient, path: str, line: int, url: str, timeout: float = 30.0):
    """Set a breakpoint, send an HTTP request that hits it, check it is held there, read the top frame's
    locals, continue; returns (top frame info, response body)."""
    import threading
    import urllib.request
    bp = client.attach_with_breakpoint(path, line)
    assert bp["verified"], bp
    got = {}
    request = threading.Thread(target=lambda: got.setdefault("body", urllib.request.urlopen(url, timeout=60).read()))
    request.start()
    stopped = client.wait_event("stopped", timeout=timeout)
    assert stopped["body"]["reason"] == "breakpoint", stopped
    top = client.locals_of_top_frame(stopped["body"]["threadId"])
    assert top["frame"]["line"] == line, top
    assert not got  # the request is held at the breakpoint
    client.request("continue", threadId=stopped["body"]["threadId"])
    request.join(timeout)
    return top, got["body"]


def marker_line(path: str, marker: str = "# wand-breakpoint") -> int:
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if marker in text:
                return number
    raise AssertionError("no %r in %s" % (marker, path))
