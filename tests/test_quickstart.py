"""The entry's fast path (kubectl_wand/quickstart.py): the forms it knows start the very call the full parse
would start (same kubectl argv, same request); any other form is left to the full parse; a call that is not
exactly the one the full parse wants is dropped and never runs beside it; one nobody claims leaves nothing."""
import io
import os
import subprocess
import sys
import time

import pytest

from kubectl_wand import cli, quickstart
from kubectl_wand.commands.common import kube_flags
from kubectl_wand.streams import Streams

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A kubectl that notes each call (its pid, its first five arguments and its last: a launcher's code is many
# lines) and keeps what it is sent on stdin, then waits for its end.
FAKE_KUBECTL = """#!/bin/sh
eval "last=\\${$#}"
echo "$$ $1 $2 $3 $4 $5 $last" >> "$FAKE_LOG"
exec cat > "$FAKE_DIR/stdin.$$"
"""

FORMS = [
    ["stack", "web-1", "-n", "ns"],
    ["-n", "ns", "stack", "pod/web-1"],
    ["stack", "-q", "po/web-1", "--namespace=ns", "-c", "app"],
    ["get", "processes", "pods/web-1", "-n", "ns"],
    ["get", "ps", "web-1", "--namespace", "ns", "--container=app"],
    ["check", "web-1", "-n", "ns", "--quiet"],
    ["pdb", "web-1", "-n", "ns"],
    ["exec-py", "web-1", "-n", "ns", "--", "print(1)", "+", "2"],
    ["exec-py", "-q", "web-1", "-c", "app", "-n", "ns", "--", "import os; os.getpid()"],
    ["exec-py", "-it", "web-1", "-n", "ns"],
    ["exec-py", "-i", "-t", "web-1", "-n", "ns"],
    ["stack", "web-1"],  # the namespace of the kubeconfig's context
]


@pytest.fixture
def kube_env(tmp_path, monkeypatch):
    """A fake kubectl, a kubeconfig whose context names namespace "ctx-ns", a private cache; (log, dir)."""
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context:\n"
                      "    cluster: k\n    namespace: ctx-ns\nclusters:\n- name: k\n  cluster:\n"
                      "    server: https://127.0.0.1:1\n")
    log = tmp_path / "log"
    log.write_text("")
    monkeypatch.setenv("KUBECTL_PATH", str(kubectl))
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.setenv("WAND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    monkeypatch.setattr(quickstart, "_CLIENTS", {})
    monkeypatch.setattr(quickstart, "STARTED", None)
    return log, tmp_path


def slow_path(words):
    """(kubectl argv of the early call without its marker, its request) as the full parse makes them."""
    verb, ns = cli.parse(list(words))
    opts = cli.verb_module(verb).Options()
    opts.complete(ns, Streams(io.StringIO(), io.StringIO(), io.StringIO()))
    opts.validate()
    flags = kube_flags(ns)
    argv = flags.kubectl_in(flags.namespace(), *quickstart.agent_exec_args(opts.target.name, opts.container,
                                                                          quickstart.Started.python))
    return argv, opts.early_request()


@pytest.mark.parametrize("words", FORMS, ids=[" ".join(f) for f in FORMS])
def test_each_form_makes_the_request_and_the_call_of_the_full_parse(kube_env, words):
    form = quickstart.recognise(words)
    assert form is not None
    from kubectl_wand.kube.config import KubeFlags
    flags = KubeFlags(namespace=form.namespace)
    fast = (flags.kubectl_in(flags.namespace(), *quickstart.agent_exec_args(form.pod, form.container, "python3")),
            quickstart.request_for(form))
    assert fast == slow_path(words)  # the client name of a session is the one the fast path reserved


UNKNOWN = [
    [], ["--help"], ["stack", "--help"], ["--version"], ["stack"], ["get", "processes"], ["get", "web-1"],
    ["stack", "pid/12"], ["stack", "deploy/web"], ["stack", "svc/web"], ["stack", "pod/web-1/7"],
    ["stack", "web-1", "--async"], ["stack", "web-1", "-o", "json"], ["stack", "web-1", "--pid", "3"],
    ["stack", "web-1", "--pod", "x"], ["stack", "web-1", "-l", "app=x"], ["stack", "web-1", "--ephemeral"],
    ["stack", "web-1", "--context", "c"], ["stack", "web-1", "-v", "6"], ["stack", "web-1", "-v6"],
    ["stack", "web-1", "-n"], ["stack", "web-1", "-n", "-q"], ["stack", "web-1", "--namespace="],
    ["stack", "web-1", "-n", "a", "-n", "b"], ["stack", "web-1", "-nns"], ["stack", "web-1", "--names", "x"],
    ["stack", "web-1", "--"], ["stack", "web-1", "other"], ["web-1", "stack"], ["attach", "web-1"],
    ["profile", "web-1"], ["trace", "web-1", "a.py:1"], ["mem", "web-1"], ["exec-py", "web-1"],
    ["exec-py", "web-1", "--", " "], ["exec-py", "web-1", "--"], ["exec-py", "web-1", "-f", "x.py"],
    ["exec-py", "web-1", "--timeout", "3", "--", "1"], ["exec-py", "web-1", "--all-pods", "--", "1"],
    ["exec-py", "-i", "web-1"], ["exec-py", "-t", "web-1"], ["exec-py", "-it", "web-1", "--", "1"],
    ["pdb", "-it", "web-1"], ["stack", "-it", "web-1"], ["pdb", "web-1", "--timeout", "3"],
    ["exec-py", "web-1", "x", "--", "1"], ["exec-py", "web-1", "--", "\udcff"], ["stack", "pods/"],
    ["stack", "docker/x"], ["stack", "-"], ["get", "pods", "web-1"],
]


@pytest.mark.parametrize("words", UNKNOWN, ids=[repr(w) for w in UNKNOWN])
def test_a_form_it_does_not_know_is_left_to_the_full_parse(kube_env, words):
    log, _dir = kube_env
    assert quickstart.recognise(words) is None
    assert quickstart.start(words) is None and quickstart.STARTED is None
    assert log.read_text() == ""  # no kubectl was started


def calls(log):
    return [line.split(" ", 1) for line in log.read_text().splitlines()]


def wait_for_calls(log, count):
    deadline = time.monotonic() + 30
    while len(calls(log)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return calls(log)


def kind(args):
    """"exec" or "get" (the API read) for a fake kubectl's logged arguments."""
    return "exec" if " exec " in " %s " % args else args.split()[0]


def test_the_claimed_call_is_the_started_one(kube_env):
    from kubectl_wand.agent import protocol
    from kubectl_wand.transport.early import EarlyCall
    log, folder = kube_env
    started = quickstart.start(["stack", "-n", "ns", "web-1"])
    _argv, request = slow_path(["stack", "-n", "ns", "web-1"])
    call = EarlyCall(kube_flags(cli.parse(["stack", "-n", "ns", "web-1"])[1]), "ns", "web-1", request)
    try:
        assert call.proc is started.proc and call.marker == started.marker and quickstart.STARTED is None
        seen = wait_for_calls(log, 1)
        execs = [(pid, a) for pid, a in seen if kind(a) == "exec"]
        assert len(execs) == 1 and execs[0][1].endswith(started.marker), seen  # one exec, not two
        sent = folder / ("stdin." + execs[0][0])
        line = protocol.encode(protocol.request(**request))
        deadline = time.monotonic() + 30
        while not (sent.exists() and sent.read_bytes().endswith(line)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent.read_bytes().endswith(line)
    finally:
        call.cancel()


def test_a_call_that_is_not_the_one_wanted_is_dropped_not_run(kube_env):
    from kubectl_wand.transport.early import EarlyCall
    log, folder = kube_env
    started = quickstart.start(["exec-py", "-n", "ns", "web-1", "--", "print(1)"])
    assert started is not None and started.request["hold"]
    _verb, ns = cli.parse(["exec-py", "-n", "ns", "web-1", "--", "print(2)"])
    other = {"op": "exec", "pid": None, "code": "print(2)", "timeout": 10.0, "max_output": 1 << 20, "hold": True}
    call = EarlyCall(kube_flags(ns), "ns", "web-1", other)
    try:
        assert call.proc is not started.proc and quickstart.STARTED is None
        assert started.proc.poll() is not None  # killed before the other was spawned: its held agent never ran
        sent = folder / ("stdin.%d" % call.proc.pid)
        deadline = time.monotonic() + 30
        while not (sent.exists() and sent.read_bytes().endswith(b"\n")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b"print(2)" in sent.read_bytes()
        execs = [pid for pid, a in calls(log) if kind(a) == "exec"]
        assert set(execs) <= {str(started.proc.pid), str(call.proc.pid)}, execs  # no third
    finally:
        call.cancel()


def test_another_namespace_or_container_is_not_claimed(kube_env):
    started = quickstart.start(["check", "-n", "ns", "web-1"])
    argv, request = slow_path(["check", "-n", "ns", "web-1"])
    flags = kube_flags(cli.parse(["check", "-n", "ns", "web-1"])[1])
    other = flags.kubectl_in("ns", *quickstart.agent_exec_args("web-1", "sidecar", "python3"))
    assert quickstart.take(other, request) is None and started.proc.wait(30) is not None
    assert quickstart.take(argv, request) is None  # gone: never handed out after it was dropped


def run_cli(words, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "kubectl_wand"] + words, env=dict(env, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def alive(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("words", [["stack", "-n", "ns", "web-1"], ["exec-py", "web-1", "-n", "ns", "--", "1"],
                                   ["check", "web-1", "-n", "ns"]])
def test_the_command_runs_one_call_of_each_kind_and_leaves_nothing(kube_env, words):
    """The whole program: the fake API read answers nothing (not JSON), so the verb fails after it claimed the
    started call: one kubectl exec (not two) and one API read in all, and none of them is left running."""
    log, _folder = kube_env
    done = run_cli(words, os.environ)
    assert done.returncode == 6 and "not JSON" in done.stderr, done.stderr
    seen = calls(log)
    assert sorted(kind(a) for _pid, a in seen) == ["exec", "get"], seen
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid, _a in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid, _a in seen if alive(pid)] == []


def test_a_call_nobody_claims_leaves_nothing(kube_env):
    """A started call the program never claims (here: the entry starts it, then the program ends) is ended with
    the program. The launcher's stdin is a pipe this test holds open, so its fake kubectl would wait for good."""
    log, _folder = kube_env
    code = ("import sys; from kubectl_wand import quickstart; "
            "quickstart.start(['pdb', '-n', 'ns', 'web-1']); print(quickstart.STARTED.proc.pid)")
    read, write = os.pipe()
    try:
        done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO),
                              capture_output=True, text=True, timeout=60, stdin=read)
        assert done.returncode == 0, done.stderr
        seen = wait_for_calls(log, 2)  # the agent's exec, the launcher's exec
        assert sorted(kind(a) for _pid, a in seen) == ["exec", "exec"], log.read_text()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid, _a in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid, _a in seen if alive(pid)] == []
    finally:
        os.close(read)
        os.close(write)


PLAIN = [["stack", "pid/12"], ["get", "processes", "pid/12"], ["get", "ps", "web-1"], ["check", "pod/web-1"],
         ["pdb", "pid/3"], ["mem", "deploy/web"], ["profile", "pid/12"], ["attach", "web-1"],
         ["stack", "-"]]


@pytest.mark.parametrize("words", PLAIN, ids=[" ".join(w) for w in PLAIN])
def test_a_line_of_positional_words_reads_as_argparse_reads_it(words):
    """cli.plain_namespace (no argparse: ~5 ms of a local `stack pid/N`) gives argparse's namespace."""
    verb, rest = cli.find_verb(words)
    plain = cli.plain_namespace(verb, rest)
    assert plain is not None
    parsed = cli.verb_parser_for(verb).parse_intermixed_args(rest)
    parsed.request_timeout_s = 30.0
    assert vars(plain) == vars(parsed) and cli.parse(list(words)) [1].__dict__ == vars(parsed)


@pytest.mark.parametrize("words", [["stack"], ["stack", "a", "b"], ["get", "pods", "x"], ["exec-py", "pid/1"],
                                   ["trace", "pid/1", "a.py:3"], ["stack", "pid/1", "-q"], ["get", "processes"]])
def test_any_other_line_is_left_to_argparse(words):
    verb, rest = cli.find_verb(words)
    assert cli.plain_namespace(verb, rest) is None


def test_a_local_stack_imports_no_argparse():
    code = ("import sys; from kubectl_wand import cli; cli.parse(['stack', 'pid/12']); "
            "print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=REPO)).stdout
    assert out.strip() == "False"


# The launcher's fake notes a SIGTERM (it would put the terminal back); the agent's fake dies with its stdin.
FAKE_SESSION_KUBECTL = """#!/bin/sh
echo "$$ $1 $2 $3 $4 $5 $8" >> "$FAKE_LOG"
if [ "$8" = "-I" ]; then
    trap 'kill $child; echo "$$ TERM" >> "$FAKE_LOG"; exit 0' TERM
    sleep 120 &
    child=$!
    wait
else
    exec cat > /dev/null
fi
"""


def test_sigterm_before_the_verb_ends_the_launcher_gently(kube_env):
    """SIGTERM while the command line's modules would still be imported: the started session is dropped, its
    launcher gets SIGTERM (kubectl puts the terminal back) rather than dying with us, exit 143."""
    import signal
    log, folder = kube_env
    kubectl = folder / "kubectl"
    kubectl.write_text(FAKE_SESSION_KUBECTL)
    code = ("import sys, time; from kubectl_wand import launch, quickstart\n"
            "real = quickstart.start\n"
            "def start(words):\n"
            "    real(words); print('started', flush=True); time.sleep(60)\n"
            "quickstart.start = start\n"
            "sys.argv = ['kubectl-wand', 'pdb', '-n', 'ns', 'web-1']; launch.main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO),
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        wait_for_calls(log, 2)
        deadline = time.monotonic() + 30
        while "-I" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    launcher = [pid for pid, args in calls(log) if args.endswith("-I")]
    assert len(launcher) == 1 and "%s TERM" % launcher[0] in log.read_text().splitlines(), log.read_text()


# A kubectl that keeps its whole command line; a terminal session's exec (-t) shows something (the session's
# first output), then waits for its end; any other call ends at once.
FAKE_ARGV_KUBECTL = """#!/bin/sh
printf '%s\\0' "$@" > "$FAKE_DIR/part.$$" && mv "$FAKE_DIR/part.$$" "$FAKE_DIR/argv.$$"  # whole, or not yet
for arg in "$@"; do
  if [ "$arg" = "-t" ]; then printf 'x'; exec sleep 60; fi
done
"""


@pytest.mark.parametrize("words", [["pdb", "web-1", "-n", "ns"], ["exec-py", "-it", "web-1", "-n", "ns"]],
                         ids=["pdb", "exec-py-it"])
def test_a_session_in_a_terminal_starts_one_exec_carrying_the_agent_and_its_request(kube_env, words):
    """Under a terminal, pdb POD and exec-py -it POD start ONE kubectl exec -it (transport/sessionexec.py), no
    separate launcher: its command line carries the agent, as its stdin would, with the full parse's request
    (never held: nothing could send its go); dropping it leaves nothing running."""
    import binascii
    import json
    from ptyterm import Term
    from kubectl_wand.agent import protocol
    from kubectl_wand.transport import sessionpod
    from kubectl_wand.transport.bundle import agent_header, boot_line
    _log, folder = kube_env
    (folder / "kubectl").write_text(FAKE_ARGV_KUBECTL)
    code = ("import json, sys; from kubectl_wand import quickstart; started = quickstart.start(%r); "
            "print('STARTED', json.dumps([started.proc.pid, started.launcher.pid, started.request]), flush=True); "
            "quickstart.drop()" % (words,))
    term = Term([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    try:
        found = term.expect(r"STARTED (\[.*\])\r?\n", 60)
        assert term.wait(60) == 0, term.seen
    finally:
        term.close()
    agent_pid, launcher_pid, request = json.loads(found.group(1))
    assert agent_pid == launcher_pid  # the agent's end and the terminal's are one kubectl
    calls = []
    for path in folder.glob("argv.*"):
        calls.append(path.read_bytes().split(b"\0")[:-1])
    sessions = [c for c in calls if b"-t" in c]
    assert len(sessions) == 1, calls
    argv = [a.decode() for a in sessions[0]]
    at = argv.index("--")
    assert argv[:at] == ["-n", "ns", "exec", "-i", "-t", "web-1"]
    assert argv[at + 1:at + 5] == ["python3", "-I", "-S", "-c"] and argv[at + 5] == sessionpod.PROGRAM
    name, _nonce, agent, marker = argv[at + 6:]
    assert name == request["client"] and marker.startswith("kubectl-wand-probe-")
    _argv, wanted = slow_path(words)
    wanted["client"] = name  # the socket name the started session reserved (in its own process)
    assert request == wanted
    held = dict(wanted)
    assert held.pop("hold") is True
    expected = boot_line() + agent_header(wanted["op"]) + protocol.encode(protocol.request(**held))
    assert binascii.a2b_base64(agent) == expected
    # every other call is the session's lifeline or its end, never a launcher's exec
    assert all(c[-1].decode() == name or c[-2:] == [name.encode(), b"end"] for c in calls if b"-t" not in c), calls
    deadline = time.monotonic() + 30
    while any(alive(p.name.split(".")[1]) for p in folder.glob("argv.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p.name for p in folder.glob("argv.*") if alive(p.name.split(".")[1])]
