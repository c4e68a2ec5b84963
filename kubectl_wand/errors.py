"""Errors the CLI reports as one line on stderr, and the exit codes they map to (docs/troubleshooting.md)."""

OK = 0
FAILED = 1         # the code raised (exec-py), or a check failed (check)
USAGE = 2          # bad flags or arguments, a missing -f file, a syntax error in the code
NOT_FOUND = 3      # no such process, pod, workload or container; not Python; no Running pods
NOT_ATTACHABLE = 4  # Python older than 3.14, remote debugging disabled, permission / SYS_PTRACE
TIMEOUT = 5        # the main thread did not reach a safe point, or the code did not finish in time
ENVIRONMENT = 6    # kubectl missing, API server unreachable, RBAC forbidden, port busy, debugpy failure

EXIT_CODES = {
    OK: "success", FAILED: "the code raised / a check failed", USAGE: "usage error",
    NOT_FOUND: "target not found", NOT_ATTACHABLE: "target not attachable", TIMEOUT: "timed out",
    ENVIRONMENT: "environment problem (kubectl, API server, RBAC, port, debugpy)",
}

# Agent error kinds (kubectl_wand.agent) -> exit code.
KIND_EXIT = {
    "usage": USAGE, "syntax": USAGE,
    "not-found": NOT_FOUND, "not-python": NOT_FOUND,
    "version": NOT_ATTACHABLE, "disabled": NOT_ATTACHABLE, "permission": NOT_ATTACHABLE,
    "pending": TIMEOUT, "running": TIMEOUT,
}


class WandError(Exception):
    """A failure to report as ``error: <message>`` with ``code`` as the exit status."""

    def __init__(self, message: str, code: int = ENVIRONMENT):
        super().__init__(message)
        self.message, self.code = message, code


def from_agent(result: dict, where: str = "") -> WandError:
    kind = result.get("kind") or result.get("status")
    message = result.get("error") or "failed (%s)" % kind
    return WandError((where + ": " if where else "") + message, KIND_EXIT.get(kind, ENVIRONMENT))
