"""Runs as ``python3 -c <LOADER>`` in the container: loads the agent from stdin and serves one request.

LOADER executes the first stdin line, ``exec('<this source>')``. After it, stdin holds a line with a size N
and N bytes of zlib(marshal((order, {name: source}))): the agent's own module files, verbatim. They become the
package ``wand_agent`` in memory; nothing is written to the container's disk. marshal and zlib are built in:
the loader imports nothing that costs (json's import alone was 9 ms of an agent's start in a pod).
"""
import marshal
import sys
import zlib

size = int(sys.stdin.buffer.readline())
order, modules = marshal.loads(zlib.decompress(sys.stdin.buffer.read(size)))
Module = type(sys)
package = Module("wand_agent")
package.__path__ = []
sys.modules["wand_agent"] = package
for name in order:
    module = Module("wand_agent." + name)
    module.__package__ = "wand_agent"
    module.__file__ = "<kubectl-wand>/wand_agent/%s.py" % name
    sys.modules[module.__name__] = module
    exec(compile(modules[name], module.__file__, "exec"), module.__dict__)
    setattr(package, name, module)
if "wand_agent.sources" in sys.modules:
    sys.modules["wand_agent.sources"].SOURCES.update(modules)
sys.modules["wand_agent.main"].serve_stdio()
