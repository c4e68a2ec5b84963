"""Small FastAPI app served by uvicorn: the `web`, `reload`, `hello`, `two-containers*`, `nonroot` and
`noptrace` workloads. GET / answers with a greeting; tests set a DAP breakpoint on the line
carrying the wand-breakpoint comment (find it by reading this file)."""
import os
import socket

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
GREETING_NAME = os.environ.get("WAND_GREETING_NAME", "web")


@app.get("/", response_class=PlainTextResponse)
def root():
    greeting = f"hello from {GREETING_NAME} on {socket.gethostname()}"  # wand-breakpoint
    return greeting + "\n"


@app.get("/healthz", response_class=PlainTextResponse)
def healthz():
    return "ok\n"
