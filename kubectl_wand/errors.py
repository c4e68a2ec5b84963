"""Errors the CLI reports as one line on stderr, and the exit codes they map to (docs/troubleshooting.md).

This is the one place that turns an agent's result into an exit code (``exit_code``).
"""
from __future__ import annotations

OK = 0
FAILED = 1         # the code raised (exec-py), or a check failed (check)
USAGE = 2          # bad flags or arguments, a missing -f file, a syntax error in the code
NOT_FOUND = 3      # no such process, pod, workload or container; not Python; no Running pods; it exited
NOT_ATTACHABLE = 4  # Python older than 3.14, remote debugging disabled, permission / SYS_PTRACE, stopped, refused
TIMEOUT = 5        # the main thread did not reach a safe point, or the code did not finish in time
ENVIRONMENT = 6    # kubectl missing, API server unreachable, RBAC forbidden, port busy, no writable /tmp, debugpy
PROTOCOL = ENVIRONMENT  # a peer (the target, the agent beside it) answered out of protocol: docs/security.md
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    OK: "success", FAILED: "the code raised / a check failed", USAGE: "usage error",
    NOT_FOUND: "target not found", NOT_ATTACHABLE: "target not attachable", TIMEOUT: "timed out",
    ENVIRONMENT: "environment problem (kubectl, API server, RBAC, port, temporary directory, debugpy)",
}

# Agent error kinds (kubectl_wand.agent.protocol.KINDS) -> exit code.
KIND_EXIT = {
    "usage": USAGE, "syntax": USAGE, "location": USAGE,
    "not-found": NOT_FOUND, "not-python": NOT_FOUND, "exited": NOT_FOUND,
    "version": NOT_ATTACHABLE, "disabled": NOT_ATTACHABLE, "permission": NOT_ATTACHABLE,
    "stopped": NOT_ATTACHABLE, "refused": NOT_ATTACHABLE,
    "pending": TIMEOUT, "running": TIMEOUT, "busy": TIMEOUT,
    "protocol": PROTOCOL,
}
# Result statuses that are not errors -> exit code.
STATUS_EXIT = {"ok": OK, "listening": OK, "already": OK, "raised": FAILED,
               "pending": TIMEOUT, "running": TIMEOUT, "timeout": TIMEOUT}


class WandError(Exception):
    """A failure to report as ``error: <message>`` with ``code`` as the exit status."""

    def __init__(self, message: str, code: int = ENVIRONMENT):
        super().__init__(message)
        self.message, self.code = message, code


class PortBusy(WandError):
    """The debug port is taken beside the target (another server, another worker)."""


def exit_code(result: dict) -> int:
    """The exit code for an agent result (the one mapping, used by every verb)."""
    status = result.get("status")
    if status == "error":
        return KIND_EXIT.get(result.get("kind"), ENVIRONMENT)
    return STATUS_EXIT.get(status, ENVIRONMENT)


# Exit code -> the agent's error kind that maps back to it: a failure met on this side (kubectl, the API)
# reported in a result beside the agents' own (exec-py --all-pods -o json).
CODE_KIND = {USAGE: "usage", NOT_FOUND: "not-found", NOT_ATTACHABLE: "permission", TIMEOUT: "busy",
             ENVIRONMENT: "environment"}


def as_result(exc: WandError) -> dict:
    """A WandError as an agent's error result: exit_code() of it is the error's own code."""
    return {"status": "error", "kind": CODE_KIND.get(exc.code, "environment"), "error": exc.message}


def from_agent(result: dict, where: str = "") -> WandError:
    kind = result.get("kind") or result.get("status")
    message = result.get("error") or "failed (%s)" % kind
    return WandError((where + ": " if where else "") + message, exit_code(result))
