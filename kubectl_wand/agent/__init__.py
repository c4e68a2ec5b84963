"""The agent: code that runs beside the target process.

Locally it runs inside the CLI process; in a pod it is sent as source over ``kubectl exec -i`` stdin and runs
under the container's own Python. It uses only the standard library and runs on Python >= 3.8, because the
container's interpreter may be older than the target's. Two modules here run under the *target's* interpreter
instead: ``injector`` (in a short-lived subprocess, to call ``sys.remote_exec``) and ``payload`` (inside the
target itself, on its main thread).
"""

# Modules loaded in a pod, in import order (``boot`` loads them from stdin).
MODULES = ("elf", "procfs", "processes", "runtime", "session", "checks", "debugserver", "tracing", "main")
# Sources that travel but are not loaded in the agent: it runs or injects them under the target's interpreter.
PASSENGERS = ("injector", "payload", "codefinder", "probe")
