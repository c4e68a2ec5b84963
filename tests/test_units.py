"""Pure logic: parsing, formatting, process choice. Real-process behaviour is tested elsewhere."""
import io

import pytest

from kubectl_wand import cli, printers, targets
from kubectl_wand.agent import elf, processes
from kubectl_wand.errors import USAGE, WandError
from kubectl_wand.agent.choose import choose_process
from kubectl_wand.agent.protocol import AgentError


@pytest.mark.parametrize("text,kind,name", [
    ("web-1", "pod", "web-1"), ("pod/web-1", "pod", "web-1"), ("po/x", "pod", "x"),
    ("svc/web", "service", "web"), ("deploy/web", "deployment", "web"), ("deployment/web", "deployment", "web"),
    ("sts/db", "statefulset", "db"), ("ds/agent", "daemonset", "agent"), ("rs/web-1", "replicaset", "web-1"),
    ("job/once", "job", "once"), ("ksvc/hello", "ksvc", "hello"), ("pid/42", "pid", "42"),
])
def test_targets(text, kind, name):
    t = targets.parse(text)
    assert (t.kind, t.name) == (kind, name)


@pytest.mark.parametrize("bad", ["cm/x", "pid/abc", "deploy/", "a/b/c", ""])
def test_bad_targets(bad):
    with pytest.raises(WandError) as err:
        targets.parse(bad)
    assert err.value.code == USAGE


@pytest.mark.parametrize("cmd,flags,xopts", [
    (["python3", "-X", "disable-remote-debug", "app.py"], set(), ["disable-remote-debug"]),
    (["python3", "-Xdisable-remote-debug", "-m", "x"], set(), ["disable-remote-debug"]),
    (["python3", "-IE", "app.py", "-X", "later"], {"I", "E"}, []),
    (["python3", "-W", "error", "-u", "-c", "pass"], {"u"}, []),
    (["python3", "app.py", "-I"], set(), []),
])
def test_python_options(cmd, flags, xopts):
    assert processes.python_options(cmd) == (flags, xopts)


def test_version_string():
    assert elf.version_string(0x030E0AF0) == "3.14.10"
    assert elf.version_string(0x030F00A2) == "3.15.0a2"
    assert elf.version_string(0x030E00C1) == "3.14.0rc1"


def test_durations():
    assert cli.parse_duration("0") == 0 and cli.parse_duration("30s") == 30
    assert cli.parse_duration("1m") == 60 and cli.parse_duration("500ms") == 0.5


def test_table_and_ages():
    text = printers.table([{"a": 1, "b": None}], [("A", "a"), ("LONG HEADER", "b")])
    assert text.splitlines() == ["A   LONG HEADER", "1   <none>"]
    assert printers.human_age(59) == "59s" and printers.human_age(3600 * 5 + 120) == "5h2m"
    assert printers.human_age(86400 * 3) == "3d" and printers.human_bytes(3 * 1024 * 1024) == "3Mi"


def proc(pid, ppid, role, command="python app.py", server=None):
    return {"pid": pid, "ppid": ppid, "role": role, "command": command, "server": server}


def test_choose_reload_worker_and_gunicorn_worker():
    pid, note = choose_process([proc(1, 0, "reload-parent"), proc(7, 1, "worker"), proc(3, 1, "helper")], "pod/x")
    assert pid == 7 and "reload parent 1" in note
    pid, note = choose_process([proc(1, 0, "main", server="gunicorn"), proc(9, 1, "worker"), proc(8, 1, "worker")],
                               "pod/x")
    assert pid == 8 and "gunicorn 1 has 2 worker(s)" in note and "--pid" in note


def test_choose_ignores_processes_started_by_kubectl_exec():
    procs = [proc(1, 0, "main", "python3 -m uvicorn web:app"), proc(574, 0, "main", "python3 -c pass")]
    assert choose_process(procs, "pod/x", in_container=True) == (1, None)
    with pytest.raises(AgentError):  # on a host, ppid 0 means nothing: still ambiguous
        choose_process(procs, "pod/x", in_container=False)
    assert choose_process([proc(574, 0, "main")], "pod/x", in_container=True) == (574, None)  # nothing else


def test_cli_chooses_from_a_pod_listing_as_the_agent_there_did(monkeypatch):
    """Issue 18: attach --all-pods/--follow/--all-workers choose in the CLI from the agent's listing. The CLI's
    own parent (a shell here) must not decide whether processes started by `kubectl exec` count: the agent's
    does (ppid 0 in the pod), and the listing carries it. Recorded from deploy/web with a `kubectl exec ... python3
    -c` beside its uvicorn."""
    from kubectl_wand.agent import main
    from kubectl_wand.commands.common import TargetOptions
    from kubectl_wand.streams import Streams
    recorded = [proc(1, 0, "main", "python3 -m uvicorn web:app --host 0.0.0.0"),
                proc(574, 0, "main", "python3 -c import time; time.sleep(600)")]
    monkeypatch.setattr(processes, "list_processes", lambda *a, **k: [dict(p) for p in recorded])
    monkeypatch.setattr(processes, "came_by_exec", lambda: True)  # the agent in the pod: its ppid is 0
    answer = main.dispatch({"op": "list", "cpu": False}, None, None, None)
    agent_choice = choose_process(answer["processes"])  # what the agent itself chooses for exec/attach/trace

    class PodTransport:
        where, local, ephemeral = "pod/web-1", False, False

        def agent(self, request, timeout, on_event=None, stop=None):
            return answer

    monkeypatch.setattr(processes, "came_by_exec", lambda: False)  # the CLI's machine: its parent is a shell
    opts = TargetOptions(quiet=True, streams=Streams(None, io.StringIO(), io.StringIO()))
    listing = opts.processes(PodTransport())
    assert opts.choose(listing, PodTransport()) == agent_choice == (1, None)


def test_choose_single_main_and_ambiguity():
    assert choose_process([proc(5, 0, "main")], "pod/x") == (5, None)
    with pytest.raises(AgentError) as err:
        choose_process([proc(5, 0, "main"), proc(6, 0, "main")], "pod/x")
    assert "--pid" in err.value.message and err.value.kind == "usage"
    with pytest.raises(AgentError):
        choose_process([proc(5, 0, "helper")], "pod/x")


def read_pty(master, until, timeout=5.0):
    """What was written to a pty so far: the tty layer hands writes to the master side asynchronously (a
    kernel worker), so one read right after the writes may see only part of them."""
    import os
    import select
    import time
    data, deadline = "", time.monotonic() + timeout
    while not data.endswith(until) and select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
        data += os.read(master, 4096).decode()
    return data


def test_spinner_draws_on_a_terminal_only():
    import os
    import pty
    import time

    from kubectl_wand.spinner import Spinner
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        with Spinner("working", enabled=True, stream=tty):
            time.sleep(0.5)  # a long step: the spinner must have drawn by now
        drawn = read_pty(master, until="\r" + " " * (len("working") + 3) + "\r")  # the erase
    os.close(master)
    assert "working" in drawn and drawn.endswith("\r")
    r, w = os.pipe()
    with os.fdopen(w, "w") as pipe:
        with Spinner("working", enabled=True, stream=pipe):
            time.sleep(0.3)
    with os.fdopen(r) as reader:
        assert reader.read() == ""  # piped: nothing


def test_ptrace_fix_appends_and_is_offered_only_where_it_applies(monkeypatch):
    """The printed fix adds SYS_PTRACE to what the container already adds; it never replaces the list."""
    import json
    from kubectl_wand.kube import checks

    def pod(sc):
        return {"metadata": {"name": "web-1", "namespace": "ns"},
                "spec": {"containers": [{"name": "side"}, dict({"name": "app"}, **sc)]}}

    monkeypatch.setattr(checks, "owner_workload", lambda flags, p: ("deployment", "web"))
    fix = checks.ptrace_fix(None, pod({"securityContext": {"capabilities": {"add": ["SETUID", "SETGID"]}}}), "app")
    assert fix.startswith("kubectl patch -n ns deployment/web --type json -p '")
    ops = json.loads(fix.split(" -p ", 1)[1].split("'")[1])
    assert ops == [{"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "app"},
                   {"op": "add", "path": "/spec/template/spec/containers/1/securityContext/capabilities/add/-",
                    "value": "SYS_PTRACE"}]
    ops = json.loads(checks.ptrace_fix(None, pod({}), "app").split(" -p ", 1)[1].split("'")[1])
    assert ops[1] == {"op": "add", "path": "/spec/template/spec/containers/1/securityContext",
                      "value": {"capabilities": {"add": ["SYS_PTRACE"]}}}
    assert checks.ptrace_fix(None, pod({"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}), "app") is None
    monkeypatch.setattr(checks, "owner_workload", lambda flags, p: ("pod", "web-1"))
    bare = checks.ptrace_fix(None, pod({}), "app")
    assert "re-create pod/web-1" in bare and "kubectl patch" not in bare
    monkeypatch.setattr(checks, "owner_workload", lambda flags, p: ("job", "batch"))
    job = checks.ptrace_fix(None, pod({}), "app")
    assert "Job's pod template cannot change" in job and "kubectl patch" not in job


def test_capability_fix_names_what_a_container_that_drops_all_lacks():
    """A root kubectl exec also needs CHOWN and DAC_OVERRIDE to hand its files to another uid: a container that
    drops them gets them back in the fix (issue 17); one that keeps the runtime's defaults, or runs as non-root
    (no effective capabilities to gain), is told SYS_PTRACE only."""
    from kubectl_wand.kube.checks import missing_caps

    def container(**sc):
        return {"name": "app", "securityContext": sc}
    assert missing_caps(container(capabilities={"drop": ["ALL"], "add": ["SETUID", "SETGID"]})) == [
        "SYS_PTRACE", "CHOWN", "DAC_OVERRIDE"]
    assert missing_caps(container(capabilities={"drop": ["ALL"], "add": ["SYS_PTRACE", "CAP_CHOWN"]})) == [
        "DAC_OVERRIDE"]
    assert missing_caps(container(capabilities={"drop": ["NET_RAW"]})) == ["SYS_PTRACE"]
    assert missing_caps(container(runAsUser=1000, capabilities={"drop": ["ALL"]})) == ["SYS_PTRACE"]
    assert missing_caps(container(privileged=True)) == []
    assert missing_caps({"name": "app"}, {"spec": {"securityContext": {"runAsUser": 0}}}) == ["SYS_PTRACE"]


def test_every_declared_flag_is_a_field_of_its_verbs_options():
    import importlib
    from kubectl_wand.commands.common import TARGET_DESTS
    for verb, (module, _summary, _usage) in cli.VERBS.items():
        mod = importlib.import_module("kubectl_wand.commands." + module)
        assert mod.Options.flags is mod.FLAGS, verb
        for flag in mod.FLAGS:
            assert flag.dest in TARGET_DESTS or hasattr(mod.Options, flag.dest), (verb, flag.dest)


def test_the_verb_is_found_wherever_it_stands():
    assert cli.find_verb(["-n", "ns", "stack", "pod/p"]) == ("stack", ["-n", "ns", "pod/p"])
    assert cli.find_verb(["--context=c", "-q", "exec-py", "p"]) == ("exec-py", ["--context=c", "-q", "p"])
    assert cli.find_verb(["-o", "json"]) == (None, ["-o", "json"])
    assert cli.find_verb(["-n", "stack", "stack", "p"]) == ("stack", ["-n", "stack", "p"])  # a namespace "stack"
    assert cli.find_verb(["--pod", "get", "attach", "x"]) == ("attach", ["--pod", "get", "x"])  # --pod's value
    assert cli.find_verb(["--no-follow", "-v6", "attach", "x"]) == ("attach", ["--no-follow", "-v6", "x"])
    assert cli.find_verb(["--bogus", "stack"]) == ("stack", ["--bogus"])  # its parser refuses --bogus
    assert cli.find_verb(["-n", "ns", "frobnicate"]) == ("frobnicate", ["-n", "ns"])  # an unknown command
    assert cli.find_verb(["stack", "--", "get"]) == ("stack", ["--", "get"])


def test_a_command_imports_only_its_own_verb():
    import subprocess
    import sys
    code = ("import sys; from kubectl_wand import cli; cli.parse(['-q', '-n', 'ns', 'stack', 'pod/p']); "
            "print(' '.join(m for m in sys.modules if m.startswith('kubectl_wand.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    verbs = {"kubectl_wand.commands." + module for module, _s, _u in cli.VERBS.values()}
    assert verbs.intersection(out.split()) == {"kubectl_wand.commands.stack"}


def test_cpu_clock_of_a_process_is_its_cpu_time_to_the_nanosecond():
    import os
    import time
    from kubectl_wand.agent import procfs
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn 50 ms of CPU, so both clocks have something to say
        pass
    mine, theirs = time.process_time_ns(), procfs.cpu_ns(os.getpid())
    assert theirs is not None and abs(theirs - mine) < 5_000_000  # the same clock, read a moment apart
    assert procfs.cpu_ns(2 ** 22 + 12345) is None  # beyond pid_max: no such process


def test_cpu_percent_falls_back_to_ticks_over_a_longer_window(monkeypatch):
    import os
    import time
    from kubectl_wand.agent import procfs
    me = procfs.Proc(os.getpid())
    monkeypatch.setattr(procfs, "cpu_ns", lambda pid: None)
    started = time.monotonic()
    percent = procfs.cpu_percent({me.pid: procfs.cpu_sample(me)}, started)
    assert time.monotonic() - started >= procfs.TICKS_WINDOW
    assert 0.0 <= percent[me.pid] <= 100.0 * os.cpu_count()


def test_protocol_lines_are_json_as_the_json_module_writes_and_reads_them():
    import json
    from kubectl_wand.agent import protocol
    values = [{"a": 1, "b": [1, 2.5, None, True, False, "x\u00e9\u2603\n\"\\"], "c": {"d": -3}}, [], {}, "s", 0,
              {"inf": float("inf")}, {"big": 10 ** 30}, {"lone surrogate": "\ud800"}, [[[]]], {"k": "a" * 100000}]
    for value in values:
        assert protocol.dumps(value) == json.dumps(value)
        assert json.dumps(protocol.loads(protocol.dumps(value))) == json.dumps(json.loads(json.dumps(value)))
    assert protocol.loads(b' {"a": [1, 2]}\r\n') == {"a": [1, 2]}
    for bad in ["", " ", "{", '{"a":1} x', "[1,]", "nul", '"\\x"', "{'a':1}", '{"a":1}{"b":2}', "1 2", b'"\xff"']:
        with pytest.raises(ValueError):
            protocol.loads(bad)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b'{"a": 1} trailing\n')
    with pytest.raises(TypeError):
        protocol.dumps({"x": object()})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        protocol.dumps(loop)


def test_hand_matched_names_agree_with_their_patterns():
    import re
    from kubectl_wand.agent import procfs, reap
    exe = re.compile(r"^python(\d)?(?:\.(\d+))?[a-z]?$")
    for name in ["python", "python3", "python3.14", "python3.14t", "python3.14d", "pythonw", "python2.7", "python10",
                 "python3.", "python3.x", "python3.14tt", "python.14", "pyth", "ipython3", "python3-config",
                 "python3.14-dbg", "python3\u00b2", "python3.1\u0664"]:
        m = exe.match(name) if name.isascii() else None
        want = None if m is None else (m.group(1) and int(m.group(1)), m.group(2) and int(m.group(2)))
        assert procfs.python_name(name) == want, name
    lib = re.compile(r"/libpython(\d)\.(\d+)[a-z]*\.so")
    for text in ["/usr/lib/libpython3.14.so.1.0", "x /lib/libpython3.14t.so", "/libpython3.so", "/libpython3..so",
                 "/libpython3.14", "/a/libpython2.7.so /b/libpython3.12.so", "/libpythonX.1.so /libpython3.9d.so",
                 "", "/libpython"]:
        m = lib.search(text)
        assert procfs.libpython_version(text) == (m and (int(m.group(1)), int(m.group(2)))), text
    name = re.compile(r"^wand-(\d+)-(\d+)-(\d+)-[0-9a-f]{12}$")
    for text in ["wand-12-345-4026531836-0123456789ab", "wand-check-1-2-0123456789ab", "wand-1-2-3-0123456789aB",
                 "wand-1-2-3-0123456789a", "wand-1-2--0123456789ab", "wand-1-2-3-4-0123456789ab", "wand-x-2-3-0123456789ab"]:
        m = name.match(text)
        assert reap.dir_fields(text) == (m and tuple(int(g) for g in m.groups())), text


def test_a_pod_agent_keeps_its_own_containers_processes(monkeypatch):
    """shareProcessNamespace: the agent keeps the processes whose cgroup reads as its own; from an ephemeral debug
    container (only its idle helper shares its cgroup) or outside a pod it keeps them all."""
    class P:
        def __init__(self, *cmdline):
            self.cmdline = list(cmdline)
    groups = {"self": "0::/\n", 7: "0::/\n", 13: "0::/../cri-containerd-b.scope\n", 20: "0::/\n"}
    monkeypatch.setattr(processes, "cgroup_of", lambda pid="self": groups.get(pid))
    procs = {7: P("python3", "app.py"), 13: P("python3", "other.py")}
    assert processes.in_own_container(procs) is None  # not in a pod: this machine's processes are all ours
    monkeypatch.setattr(processes, "OWN_CONTAINER_ONLY", True)
    assert processes.in_own_container(procs) == {7}
    groups.update({7: "0::/../cri-containerd-a.scope\n"})  # the ephemeral container: only its idle helper is ours
    procs[20] = P("python3", "-S", "-c", "...", "kubectl-wand-idle")
    assert processes.in_own_container(procs) is None


def test_a_pod_replaces_another_when_it_is_new_or_its_container_restarted():
    from kubectl_wand.kube.resolve import replaces, restarts

    def pod(uid, app_restarts, sidecar_restarts=0):
        return {"metadata": {"uid": uid}, "status": {"containerStatuses": [
            {"name": "app", "restartCount": app_restarts}, {"name": "sidecar", "restartCount": sidecar_restarts}]}}
    assert restarts(pod("a", 2), "app") == 2 and restarts(pod("a", 2), "other") == 0
    assert replaces(pod("b", 0), pod("a", 3), "app")              # another pod
    assert replaces(pod("a", 1), pod("a", 0), "app")              # the same pod, its container restarted
    assert not replaces(pod("a", 0), pod("a", 0), "app")          # the same pod, the same process
    assert not replaces(pod("a", 0, 1), pod("a", 0, 0), "app")    # another container restarted: not ours


def test_the_v6_echo_goes_to_the_verbs_stderr_only():
    import io
    from kubectl_wand.kube.config import KubeFlags
    err = io.StringIO()
    done = KubeFlags(verbosity=6, warn=err).run(["/bin/sh", "-c", "exit 0"], timeout=10)
    assert done.returncode == 0 and err.getvalue() == "+ /bin/sh -c exit 0\n"
    quiet = io.StringIO()
    proc = KubeFlags(verbosity=5, warn=quiet).spawn(["/bin/sh", "-c", "exit 0"])
    proc.wait(10)
    assert quiet.getvalue() == ""
    KubeFlags(verbosity=6, warn=None).run(["/bin/sh", "-c", "exit 0"], timeout=10)  # completion: silence


def test_kubectls_global_flags_reach_every_kubectl_call(monkeypatch):
    # declared once (flags.KUBE_FLAGS); kube/config derives what kubectl gets as --flag=VALUE
    from kubectl_wand.commands.common import kube_flags
    monkeypatch.setenv("KUBECTL_PATH", "/bin/true")
    _verb, ns = cli.parse(["stack", "pod/p", "--as", "bob", "-s", "https://api", "--context=c", "--as-uid", "7",
                           "--as-group", "g1", "--as-group", "g2", "--request-timeout", "5s", "-n", "ns"])
    argv = kube_flags(ns).kubectl_argv("get", "pods")
    assert argv[0] == "/bin/true" and argv[-4:] == ["-n", "ns", "get", "pods"]
    assert {"--as=bob", "--server=https://api", "--context=c", "--as-uid=7", "--as-group=g1", "--as-group=g2",
            "--request-timeout=5s"} <= set(argv)


def test_a_replicaset_that_cannot_be_read_still_names_its_deployment(monkeypatch):
    """No get on replicasets (RBAC): the pod's ReplicaSet <deployment>-<pod-template-hash> names its Deployment;
    a ReplicaSet of another name (made by hand, no hash) stays what it is."""
    from kubectl_wand.errors import WandError
    from kubectl_wand.kube import api, resolve

    def forbidden(flags, path, **kw):
        raise WandError("forbidden: you may not read replicasets", 6)
    monkeypatch.setattr(api, "get", forbidden)

    def pod(rs, labels):
        return {"metadata": {"name": rs + "-x1", "namespace": "ns", "labels": labels,
                             "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": True}]}}
    assert resolve.owner_workload(None, pod("web-6c64c4c4dc", {"pod-template-hash": "6c64c4c4dc"})) == \
        ("deployment", "web")
    assert resolve.owner_workload(None, pod("batch", {"app": "batch"})) == ("replicaset", "batch")
    assert resolve.owner_workload(None, pod("web-6c64c4c4dc", {"pod-template-hash": "other"})) == \
        ("replicaset", "web-6c64c4c4dc")


def test_forbidden_names_the_right_the_api_server_said_is_missing():
    from kubectl_wand.kube import api
    said = ('Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:ns:half" cannot list '
            'resource "pods" in API group "" in the namespace "ns"')
    assert api.api_error(said, "namespace ns", "pods", None).message.endswith("(RBAC); ask for list on pods")
    said = ('Error from server (Forbidden): deployments.apps "web" is forbidden: User "u" cannot get resource '
            '"deployments" in API group "apps" in the namespace "ns"')
    assert "ask for get on deployments.apps" in api.api_error(said, "namespace ns", "deployment web", None).message
    assert "ask for get/list on it" in api.api_error("Error (Forbidden): no", "namespace ns", "pods", None).message
