"""The agent: code that runs beside the target process.

Locally it runs inside the CLI process; in a pod it is sent as source over ``kubectl exec -i`` stdin and runs
under the container's own Python. It uses only the standard library and runs on Python >= 3.8, because the
container's interpreter may be older than the target's. Two modules here run under the *target's* interpreter
instead: ``injector`` (in a short-lived subprocess, to call ``sys.remote_exec``) and ``payload`` (inside the
target itself, on its main thread).
"""

# Modules loaded in a pod, in import order (``boot`` loads them from stdin).
MODULES = ("protocol", "elf", "procfs", "processes", "choose", "runtime", "session", "checks", "debugserver",
           "observe", "tracing", "main")
# Sources that travel but are not loaded in the agent: it runs or injects them under the target's interpreter.
PASSENGERS = ("injector", "payload", "sampler", "codefinder", "probe")
# Listing and watching (every pod of `get processes` runs them) need only these modules: a pod is sent no more
# than an operation needs.
LIGHT_OPS = ("list", "watch")
LIGHT_MODULES = ("protocol", "elf", "procfs", "processes", "main")
# stack and profile only read memory (the sampler passenger): no injection, no debug server.
OBSERVE_OPS = ("stack", "profile")
OBSERVE_MODULES = ("protocol", "elf", "procfs", "processes", "runtime", "session", "observe", "main")

# trace injects the probe: no debug server, no checks.
TRACE_MODULES = ("protocol", "elf", "procfs", "processes", "choose", "runtime", "session", "tracing", "main")


def modules_for(op):
    """(modules to load in import order, passengers) that a pod needs for ``op``."""
    if op in LIGHT_OPS:
        return LIGHT_MODULES, ()
    if op in OBSERVE_OPS:
        return OBSERVE_MODULES, ("sampler",)
    if op == "trace":
        return TRACE_MODULES, ("injector", "payload", "codefinder", "probe")
    return MODULES, PASSENGERS
