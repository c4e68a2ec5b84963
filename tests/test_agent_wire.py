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
    # stdin stays open until the result is in, as kubectl exec -i's does: the agent reads its end as the CLI
    # leaving (an injection then gives up at once, agent/wait.py: abandoned)
    agent = subprocess.Popen([sys.executable, "-I", "-c", LOADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=cwd)
    agent.stdin.write(boot_line() + agent_header() + protocol.encode(protocol.request(**request)))
    agent.stdin.flush()
    out = agent.stdout.readline() + agent.stdout.readline()
    agent.stdin.close()
    err = agent.stderr.read()
    assert agent.wait(60) == 0, err.decode()
    out += agent.stdout.read()
    agent.stdout.close()
    agent.stderr.close()
    lines = out.decode().splitlines()
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
    order, modules, _lazy = marshal.loads(zlib.decompress(packed))
    import kubectl_wand.agent.passengers as passengers
    for name in ("injector", "bootstrap", "execute"):
        with open(os.path.join(os.path.dirname(passengers.__file__), name + ".py")) as f:
            assert modules[name] == f.read()
    assert "debugger" not in modules and "probe" not in modules  # exec ships no other op's code
    assert "boot" not in modules and order[-1] == "main"
    # Every op's whole first write (the boot line, the agent, its request) fits in a pipe's 64 KiB: otherwise it
    # waits, with no timeout, for kubectl to read (mem's was 65.8 KB once the window's passengers grew).
    from kubectl_wand.agent import NEEDS
    from kubectl_wand.agent.protocol import encode, request as make_request
    for op in NEEDS:
        first = boot_line() + agent_header(op) + encode(make_request(op=op, pid=1234, timeout=10.0))
        assert len(first) <= 64 * 1024, (op, len(first))


def test_our_own_agents_are_never_the_apps():
    from kubectl_wand.agent import processes
    from kubectl_wand.transport.bundle import AGENT_ARGS
    assert processes.is_own(["python3"] + AGENT_ARGS)
    assert processes.is_own(["python3", "-S", "-c", processes.EARLIER_LOADERS[0]])  # an older CLI's agent
    assert not processes.is_own(["python3", "-c", "import app"])


def test_what_an_agent_runs_under_the_targets_interpreter_is_ours_too():
    """The sampler, the code compiler and loader, the session clients, check's probe and the chroot step run
    beside the app as Python processes: none is the app's (seen: a profile's sampler listed as the container's
    second process, and a concurrent exec-py refused "2 Python processes in this container")."""
    from kubectl_wand.agent import checks, lent, observe, pdbsession, processes, runtime
    from kubectl_wand.agent.sources import module_source
    programs = [runtime.LOAD_CODE, runtime.COMPILE_CODE, observe.sampler_source("stack"),
                observe.sampler_source("profile"), pdbsession.client_source("pdb"), pdbsession.client_source("repl"),
                module_source("injector"), checks.VERSION_PROBE, lent.CHROOT_EXEC]
    for code in programs:
        assert processes.is_own(["/proc/1/exe", "-I", "-S", "-c", code, "arg"]), code[:80]


@pytest.mark.py314
def test_agent_whose_cli_hangs_up_ends_a_pending_injection_at_once(spawn, tmp_path):
    """Issue 17: a CLI interrupted or killed while its injection is pending (main thread asleep in C) hangs up
    its kubectl exec; the agent in the pod sees its stdin's writer gone, answers what it leaves and exits at once
    instead of holding the target's lock until --timeout (a retry was refused as busy). A retry adopts the
    queued bootstrap."""
    import time
    app = spawn("sleeper.py")
    agent = subprocess.Popen([sys.executable, "-I", "-c", LOADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=tmp_path)
    agent.stdin.write(boot_line() + agent_header("exec") + protocol.encode(protocol.request(
        "exec", pid=app.pid, code="print('never')", timeout=60)))
    agent.stdin.flush()
    assert "hello" in json.loads(agent.stdout.readline())
    time.sleep(1.0)  # the injection is queued and waits for the sleeping main thread
    hung_up = time.monotonic()
    agent.stdin.close()
    result = protocol.check_result(json.loads(agent.stdout.readline())["result"])
    assert agent.wait(10) == 0, agent.stderr.read().decode()
    took = time.monotonic() - hung_up
    agent.stdout.close()
    agent.stderr.close()
    assert took < 3, took  # not the 60 s of its --timeout
    assert result["status"] == "pending" and result["interrupted"] and result["left_behind"].endswith("/bootstrap.py")
    assert "interrupted while the injection" in result["error"]
    again = run_agent({"op": "exec", "pid": app.pid, "code": "print('x')", "timeout": 1}, tmp_path)
    assert again["status"] == "pending" and again["left_behind"] == result["left_behind"]  # adopted, not busy


@pytest.mark.py314
def test_an_agent_whose_cli_already_left_runs_nothing(spawn, tmp_path):
    """A candidate interpreter that greets too late (the CLI has moved on to the next one and closed this one's
    stdin) must not run the request beside the one that answered: it returns cancelled, untouched."""
    app = spawn("busy.py")
    done = subprocess.run([sys.executable, "-I", "-c", LOADER], input=boot_line() + agent_header("exec") +
                          protocol.encode(protocol.request("exec", pid=app.pid, code="print('twice')", timeout=5)),
                          capture_output=True, timeout=60, cwd=tmp_path)
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, (lines, done.stderr)
    assert protocol.check_result(json.loads(lines[1])["result"])["status"] == "cancelled"


HELD_DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from kubectl_wand.agent import choose, main
choose.choose_process = lambda listing, *a, **k: (4242, None)
main.processes.list_processes = lambda *a, **k: []
main.dispatch = lambda request, *a, **k: {"status": "ok", "ran": request["op"], "pid": request["pid"]}
main.serve_stdio()
"""


@pytest.mark.parametrize("op", ["pdb", "repl", "exec"])
def test_a_held_request_runs_once_the_cli_says_go(op, tmp_path):
    """A request sent before the CLI read the pod (``hold``) waits for its go after choosing the process, then
    runs. For a streaming op (pdb, exec-py -it's repl) the thread that watches stdin for a stop line read that
    go first and the agent waited for it forever: the held pdb gave no prompt."""
    import time
    from kubectl_wand import pipes
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    agent = subprocess.Popen([sys.executable, "-I", "-S", "-c", HELD_DRIVER, repo], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        agent.stdin.write(protocol.encode(protocol.request(op, pid=None, hold=True, code="1", timeout=5)))
        agent.stdin.flush()
        lines = pipes.lines(agent.stdout, time.monotonic() + 30)
        assert "hello" in json.loads(next(lines))
        assert json.loads(next(lines))["event"]["chosen"]["pid"] == 4242  # chosen, then held
        agent.stdin.write(protocol.encode({protocol.GO: True}))
        agent.stdin.flush()
        result = json.loads(next(lines))["result"]
        assert result["status"] == "ok" and result["ran"] == op and result["pid"] == 4242, result
    finally:
        agent.kill()
        agent.wait(10)
        for stream in (agent.stdin, agent.stdout, agent.stderr):
            stream.close()


def test_a_held_request_dropped_by_the_cli_runs_nothing(tmp_path):
    """The CLI's API read says another container or a pod not Running: it closes stdin, the agent runs nothing."""
    import time
    from kubectl_wand import pipes
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    agent = subprocess.Popen([sys.executable, "-I", "-S", "-c", HELD_DRIVER, repo], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        agent.stdin.write(protocol.encode(protocol.request("pdb", pid=None, hold=True, timeout=5)))
        agent.stdin.flush()
        lines = pipes.lines(agent.stdout, time.monotonic() + 30)
        assert "hello" in json.loads(next(lines)) and "chosen" in json.loads(next(lines))["event"]
        agent.stdin.close()
        assert json.loads(next(lines))["result"]["status"] == protocol.CANCELLED
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        agent.stdout.close()
        agent.stderr.close()
