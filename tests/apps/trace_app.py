"""An HTTP app for the trace tests (one thread per request), with lines marked ``# trace:NAME``.

GET /          a handler with locals: ``user`` is {"id": N, "name": "user<N>"} for the Nth request
GET /spin?n=K  runs the ``hot`` line K times in one request
GET /reload    importlib.reload(trace_lib): new code objects for the ``lib`` line
Two files named util.py (a/util.py and b/util.py) are loaded, so ``util.py:LINE`` is ambiguous; the files are
removed as soon as they are imported (their code objects keep the names).
"""
import http.server
import importlib.util
import os
import shutil
import sys
import tempfile
import urllib.parse

import trace_lib

HITS = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global HITS
        HITS += 1
        url = urllib.parse.urlparse(self.path)
        user = {"id": HITS, "name": "user%d" % HITS}
        body = trace_lib.render(user)  # trace:handler
        if url.path == "/spin":
            body = "%d" % spin(int(urllib.parse.parse_qs(url.query)["n"][0]))
        elif url.path == "/reload":
            importlib.reload(trace_lib)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def spin(n):
    total = 0
    for i in range(n):
        total += i  # trace:hot
    return total


def never_called(x):
    # trace:comment (a line without code)
    return x * 2  # trace:never


def load_twins():
    """Import a/util.py and b/util.py from a temporary directory, then remove it."""
    root = tempfile.mkdtemp(prefix="trace-app-")
    try:
        for part in ("a", "b"):
            os.mkdir(os.path.join(root, part))
            path = os.path.join(root, part, "util.py")
            with open(path, "w") as f:
                f.write("def twin(x):\n    return x + 1\n")
            spec = importlib.util.spec_from_file_location("util_" + part, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[spec.name] = module
    finally:
        shutil.rmtree(root)
    return root


def main():
    twins = load_twins()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("READY port=%d pid=%d twins=%s" % (server.server_address[1], os.getpid(), twins), flush=True)
    server.serve_forever(poll_interval=0.05)  # the main thread returns to Python often: injections run at once


if __name__ == "__main__":
    sys.exit(main())
