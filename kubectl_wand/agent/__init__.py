"""The agent: code that runs beside the target process.

Locally it runs inside the CLI process; in a pod it is sent as source over ``kubectl exec -i`` stdin and runs
under the container's own Python. It uses only the standard library and runs on Python >= 3.8, because the
container's interpreter may be older than the target's. Two modules here run under the *target's* interpreter
instead: ``injector`` (in a short-lived subprocess, to call ``sys.remote_exec``) and ``payload`` (inside the
target itself, on its main thread).
"""

# Modules shipped to a pod, in import order. ``payload`` and ``injector`` travel too: the agent writes or runs
# their source, so the source must be on the other side.
MODULES = ("elf", "procfs", "processes", "runtime", "injector", "payload", "session", "checks", "main")
