"""A small HTTP app for the tests: GET / answers with a greeting built in a local variable."""
import http.server
import os
import socket
import sys

HITS = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global HITS
        HITS += 1
        greeting = "hello from %s #%d" % (socket.gethostname(), HITS)  # wand-breakpoint
        body = greeting.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.timeout = 0.05  # serve_forever polls: the main thread returns to Python often
    print("READY port=%d pid=%d" % (server.server_address[1], os.getpid()), flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    sys.exit(main())
