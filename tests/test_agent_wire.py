"""The pod-side wire protocol without a cluster: the exact loader command and stdin kubectl exec carries,
run by a local interpreter against a real 3.14 target. Proves the agent needs no files of ours."""
import json
import os
import subprocess
import sys

import pytest

from kubectl_wand.agent import protocol
from kubectl_wand.transport.bundle import LOADER, agent_header, boot_line


def run_agent(request, cwd):
    done = subprocess.run([sys.executable, "-I", "-c", LOADER], input=boot_line() + agent_header() +
                          protocol.encode(protocol.request(**request)), capture_output=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, lines  # the hello, then the result
    assert protocol.check_hello(json.loads(lines[0]))["protocol"] == protocol.VERSION
    return protocol.check_result(json.loads(lines[1])["result"])


@pytest.mark.py314
def test_agent_over_stdin_lists_and_runs_code(spawn, tmp_path):
    app = spawn("busy.py")
    listed = run_agent({"op": "list", "pid": app.pid}, tmp_path)
    assert listed["status"] == "ok" and listed["processes"][0]["pid"] == app.pid
    ran = run_agent({"op": "exec", "pid": app.pid, "code": "print('hi'); 2 + 2", "timeout": 5}, tmp_path)
    assert ran["status"] == "ok" and ran["stdout"] == "hi\n" and ran["value"] == "4"


def test_agent_sources_are_verbatim_module_files():
    import marshal
    import zlib
    line, _, packed = agent_header("exec").partition(b"\n")
    assert len(packed) == int(line) < 64 * 1024  # fits a pipe's buffer: writing it never waits for kubectl
    order, modules = marshal.loads(zlib.decompress(packed))
    import kubectl_wand.agent.passengers as passengers
    for name in ("injector", "bootstrap", "execute"):
        with open(os.path.join(os.path.dirname(passengers.__file__), name + ".py")) as f:
            assert modules[name] == f.read()
    assert "debugger" not in modules and "probe" not in modules  # exec ships no other op's code
    assert "boot" not in modules and order[-1] == "main"
    for op in ("list", "stack", "profile", "attach", "check", "trace"):
        assert len(agent_header(op)) < 64 * 1024, op


def test_our_own_agents_are_never_the_apps():
    from kubectl_wand.agent import processes
    from kubectl_wand.transport.bundle import AGENT_ARGS
    assert processes.is_own(["python3"] + AGENT_ARGS)
    assert processes.is_own(["python3", "-S", "-c", processes.EARLIER_LOADERS[0]])  # an older CLI's agent
    assert not processes.is_own(["python3", "-c", "import app"])
