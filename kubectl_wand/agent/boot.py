"""Runs as ``python3 -c <this source>`` in the container: loads the agent from stdin and serves one request.

After the line carrying this source, stdin holds JSON ``{"order": [...], "size": N}`` and N bytes of
zlib(JSON {name: source}): the agent's own module files, verbatim. They become the package ``wand_agent`` in memory; nothing is written to the
container's disk.
"""
import json
import sys
import types
import zlib

header = json.loads(sys.stdin.buffer.readline())
header["modules"] = json.loads(zlib.decompress(sys.stdin.buffer.read(header["size"])))
package = types.ModuleType("wand_agent")
package.__path__ = []
sys.modules["wand_agent"] = package
for name in header["order"]:
    module = types.ModuleType("wand_agent." + name)
    module.__package__ = "wand_agent"
    module.__file__ = "<kubectl-wand>/wand_agent/%s.py" % name
    sys.modules[module.__name__] = module
    exec(compile(header["modules"][name], module.__file__, "exec"), module.__dict__)
    setattr(package, name, module)
if "wand_agent.sources" in sys.modules:
    sys.modules["wand_agent.sources"].SOURCES.update(header["modules"])
sys.modules["wand_agent.main"].serve_stdio()
