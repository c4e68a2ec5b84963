"""The agent: code that runs beside the target process.

Locally it runs inside the CLI process; in a pod it is sent as source over ``kubectl exec -i`` stdin (``boot``
loads it) and runs under the container's own Python. It uses only the standard library and runs on Python >=
3.8, because the container's interpreter may be older than the target's. The code that runs under the
*target's* interpreter instead, beside it or inside it, is in ``passengers/`` (its docstring has the rules):
it travels as source and is never imported here.
"""

# Modules loaded in a pod, in import order (``boot`` loads them from stdin).
MODULES = ("jsonlines", "protocol", "elf", "procfs", "processes", "sources", "choose", "lent", "runtime", "fdops",
           "private", "reap", "slot", "wait", "injectable", "session", "importable", "link", "checks", "debugserver",
           "observe", "profiling", "tracing", "memory", "pdbsession", "main")
# Sources that travel but are not loaded in the agent: it runs or injects them under the target's interpreter
# (the files of passengers/).
PASSENGERS = ("injector", "framewalk", "profiler", "sampler", "bootstrap", "execute", "debugger", "codefinder",
              "probehit", "probe", "heapcensus", "heapslices", "heapwindow", "pdbserver", "clientkit", "pdbclient",
              "replserver", "replclient")
# The op's own code, run inside the target after the bootstrap (defined beside the sources that read it).
from .sources import OP_CODE  # noqa: E402
# What each operation needs in a pod, in import order, and its passengers: a pod is sent no more than the
# operation uses (listing 20 pods must not ship the debug server 20 times; exec-py's header was 118 KB of
# sources when it carried everything).
CORE = ("jsonlines", "protocol", "elf", "procfs", "processes")
INJECT = CORE + ("sources", "choose", "runtime", "fdops", "private", "reap", "slot", "wait", "injectable", "session")
NEEDS = {
    "list": (CORE + ("main",), ()),
    "watch": (CORE + ("main",), ()),
    "exec": (INJECT + ("main",), ("injector", "bootstrap") + OP_CODE["exec"]),
    "attach": (INJECT + ("importable", "debugserver", "main"), ("injector", "bootstrap") + OP_CODE["attach"]),
    "check": (INJECT + ("importable", "checks", "main"), ("injector",)),
    "stack": (CORE + ("sources", "runtime", "observe", "main"), ("framewalk", "sampler")),  # observe.SAMPLER_PARTS
    "profile": (CORE + ("sources", "runtime", "observe", "profiling", "main"), ("framewalk", "profiler", "sampler")),
    "trace": (INJECT + ("link", "tracing", "main"), ("injector", "bootstrap") + OP_CODE["trace"]),
    "mem": (INJECT + ("link", "memory", "main"), ("injector", "bootstrap") + OP_CODE["mem"]),
    "pdb": (INJECT + ("pdbsession", "main"), ("injector", "bootstrap", "clientkit", "pdbclient") + OP_CODE["pdb"]),
    "repl": (INJECT + ("pdbsession", "main"), ("injector", "bootstrap", "clientkit", "replclient") + OP_CODE["repl"]),
}


# Shipped only by the ephemeral transport (its debug container reaches the target in another container); loaded
# before runtime, which uses it when it is there.
CROSS_CONTAINER = ("lent",)


def modules_for(op):
    """(modules to load in import order, passengers) that a pod needs for ``op``."""
    return NEEDS.get(op, (MODULES, PASSENGERS))
