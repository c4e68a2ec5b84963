"""An HTTP app whose requests run in worker threads (ThreadingHTTPServer), with a long-lived thread that
records the trace function it sees, for the pdb tests: GET / answers a greeting built in a local variable."""
import http.server
import os
import sys
import threading
import time

HITS = 0
SEEN_TRACE = []  # what the long-lived thread saw as its sys.gettrace() last
SEEN_MAIN = []   # what the main thread saw as its sys.gettrace() last (serve_forever's service_actions)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global HITS
        HITS += 1
        greeting = "hello #%d from %s" % (HITS, threading.current_thread().name)
        body = greeting.encode()  # wand-pdb-breakpoint
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def service_actions(self):
        SEEN_MAIN[:] = [repr(sys.gettrace())]


def watcher():
    while True:
        SEEN_TRACE[:] = [repr(sys.gettrace())]
        time.sleep(0.05)


def main():
    threading.Thread(target=watcher, name="watcher", daemon=True).start()
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0  # 0: any free port (local tests); 8000 in a pod
    server = Server(("0.0.0.0" if port else "127.0.0.1", port), Handler)
    print("READY port=%d pid=%d" % (server.server_address[1], os.getpid()), flush=True)
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    sys.exit(main())
