"""Standard-library HTTP server (no third-party imports), used for the `py313` workload (a non-3.14
target). The line with the wand-breakpoint comment is inside the GET handler."""
import http.server
import os
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        greeting = f"hello from python {sys.version.split()[0]} on {socket.gethostname()}\n"  # wand-breakpoint
        body = greeting.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
