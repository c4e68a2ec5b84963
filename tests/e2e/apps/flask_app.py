"""Flask app served by gunicorn with 3 sync workers (the `gunicorn` workload). The line marked
carrying the wand-breakpoint comment is inside the GET / handler."""
import os
import socket

from flask import Flask

app = Flask(__name__)


@app.get("/")
def root():
    greeting = f"hello from gunicorn worker {os.getpid()} on {socket.gethostname()}"  # wand-breakpoint
    return greeting + "\n", 200, {"Content-Type": "text/plain"}


@app.get("/healthz")
def healthz():
    return "ok\n", 200, {"Content-Type": "text/plain"}
