"""docker/NAME and podman/NAME against real engines on this machine (hack/engines: dockerd and rootful podman from
Debian's packages, the image imported from the project's CPython 3.14 root filesystem), through the real CLI.

Containers are started with no published port (docker: the default bridge; podman: --network none, only a
loopback of its own), so the debug port is reached only through the container's network namespace.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

import dap
from procs import APPS, REPO, become, default_signals, wait_for

ENV_FILE = os.path.join(os.environ.get("WAND_CACHE") or os.path.expanduser("~/.cache/kubectl-wand"), "engines",
                        "current.env")
ENGINES = ("docker", "podman")
APP = "/apps/http_app.py"


def engines_env():
    """The environment hack/engines wrote (image, CONTAINERS_CONF), or skip (fail under CI) with the reason."""
    why = os.environ.get("WAND_ENGINES_SKIP")
    if not why and not os.path.exists(ENV_FILE):
        why = "no %s: run hack/engines up (hack/test does)" % ENV_FILE
    if why:
        if os.environ.get("WAND_REQUIRE_CLUSTER"):
            pytest.fail("container engines required (WAND_REQUIRE_CLUSTER=1) but unavailable: %s" % why)
        pytest.skip("container engines unavailable: %s" % why)
    with open(ENV_FILE) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


class Engine:
    def __init__(self, name, env):
        self.name, self.env = name, env
        self.image = env["WAND_ENGINE_IMAGE"]
        self.started = []

    def cli(self, *args, check=True, timeout=60):
        done = subprocess.run([self.name] + list(args), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, CONTAINERS_CONF=self.env["CONTAINERS_CONF"]))
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def run(self, app="http_app.py", *flags, ptrace=True, python="python3"):
        """A container running tests/apps/APP, READY (its first line of output) before this returns."""
        name = "cw-%s-%s" % (self.name, uuid.uuid4().hex[:8])
        self.started.append(name)
        network = ["--network", "none"] if self.name == "podman" else []
        caps = ["--cap-add", "SYS_PTRACE"] if ptrace else []
        self.cli("run", "-d", "--name", name, *network, *caps, *flags, "-v", "%s:/apps:ro" % APPS, self.image,
                 python, "/apps/" + app)
        end = time.monotonic() + 30
        while time.monotonic() < end:  # readiness: the app's READY line in the engine's log of it
            logs = self.cli("logs", name).stdout
            if logs.startswith("READY"):
                info = dict(kv.split("=", 1) for kv in logs.splitlines()[0].split()[1:])
                return name, info
            time.sleep(0.1)
        raise AssertionError("container %s never printed READY: %s" % (name, self.cli("logs", name).stderr))

    def cleanup(self):
        for name in self.started:
            self.cli("rm", "-f", name, check=False)


@pytest.fixture(params=ENGINES)
def engine(request):
    found = Engine(request.param, engines_env())
    yield found
    found.cleanup()


def wand(*args, env=None, user=None, timeout=60):
    full = dict(os.environ, PYTHONPATH=REPO)
    full.update(env or {})
    cmd = [sys.executable, "-m", "kubectl_wand"] + [str(a) for a in args]
    preexec = default_signals if user is None else become(user)
    if user is not None:
        cmd[0] = "/usr/bin/python3"  # another user cannot run root's private interpreters
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full,
                          preexec_fn=preexec)


def one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the verbs -----------------------------------------------------------------------------------------------

def test_get_processes_exec_py_stack_check(engine):
    name, _info = engine.run()
    target = "%s/%s" % (engine.name, name)
    listed = wand("get", "processes", target, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [(p["pid"], p["command"], p["attachable"]) for p in items] == [(1, "python3 " + APP, True)]
    done = wand("exec-py", target, "--", "import socket; socket.gethostname(), 6 * 7")
    assert done.returncode == 0, done.stderr
    hostname = engine.cli("inspect", "-f", "{{.Config.Hostname}}", name).stdout.strip()
    assert done.stdout == "(%r, 42)\n" % hostname  # ran inside that container
    stack = wand("stack", target, "-o", "json")
    assert stack.returncode == 0, stack.stderr
    frames = [f["function"] for t in json.loads(stack.stdout)["items"][0]["threads"] for f in t["frames"]]
    assert "serve_forever" in " ".join(frames) and "main" in frames
    check = wand("check", target, "-o", "json")
    assert check.returncode == 0, check.stderr
    rows = {r["check"]: r["status"] for r in json.loads(check.stdout)["rows"]}
    assert rows["permission"] == "ok" and rows["interpreter"] == "ok"


def test_profile_and_trace(engine, tmp_path):
    name, _info = engine.run("ticker.py")
    target = "%s/%s" % (engine.name, name)
    out = tmp_path / "profile.txt"
    done = wand("profile", target, "--duration", "1s", "--idle", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "ticker.py" in out.read_text()
    trace = wand("trace", target, "ticker.py:9", "n", "--count", "2", "--duration", "20s", "-o", "json")
    assert trace.returncode == 0, trace.stderr
    hits = [json.loads(line)["hit"] for line in trace.stdout.splitlines()]
    assert len(hits) == 2 and hits[0]["file"] == "/apps/ticker.py"
    assert int(hits[1]["values"][0]["repr"]) == int(hits[0]["values"][0]["repr"]) + 1


def test_attach_hits_a_breakpoint_through_the_unpublished_port(engine):
    name, info = engine.run()
    assert engine.cli("port", name).stdout.strip() == ""  # nothing published
    breakpoint_through_the_forward(engine, name, info)


def breakpoint_through_the_forward(engine, name, info, *flags, env=None, user=None, during=None, interrupt=False):
    """attach, a DAP client's breakpoint hit through the forward; ``during(attach)`` runs while the client is
    connected; ``interrupt``: end attach with Ctrl-C (SIGINT) rather than SIGTERM."""
    target = "%s/%s" % (engine.name, name)
    port = free_port()
    full = dict(os.environ, PYTHONPATH=REPO, CONTAINERS_CONF=engine.env["CONTAINERS_CONF"])
    full.update(env or {})
    attach = subprocess.Popen([sys.executable if user is None else "/usr/bin/python3", "-m", "kubectl_wand",
                               "attach", target, "--port", str(port), *flags],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=full,
                              preexec_fn=default_signals if user is None else become(user))
    try:
        shown = ""
        while "Forwarding" not in shown:
            line = attach.stdout.readline()
            assert line, attach.stderr.read()
            shown += line
        assert "Forwarding 127.0.0.1:%d -> %s:%d" % (port, target, port) in shown
        line = dap.marker_line(os.path.join(APPS, "http_app.py"))
        client = dap.DAPClient("127.0.0.1", port)
        try:
            bp = client.attach_with_breakpoint(APP, line)
            assert bp["verified"], bp
            if during is not None:
                during(attach)
            got = {}
            # the app listens on 127.0.0.1 inside the container: the request comes from in there
            request = threading.Thread(target=lambda: got.setdefault("out", engine.cli(
                "exec", name, "/usr/bin/python3.14", "-c", "import urllib.request; print(urllib.request.urlopen("
                "'http://127.0.0.1:%s/', timeout=60).read().decode())" % info["port"]).stdout))
            request.start()
            stopped = client.wait_event("stopped", timeout=30)
            assert stopped["body"]["reason"] == "breakpoint", stopped
            top = client.locals_of_top_frame(stopped["body"]["threadId"])
            assert top["frame"]["name"] == "do_GET" and top["frame"]["line"] == line and "self" in top["vars"]
            assert not got  # held at the breakpoint
            client.request("continue", threadId=stopped["body"]["threadId"])
            request.join(60)
            assert got["out"].startswith("hello from")
        finally:
            if not interrupt:
                client.close()
        if interrupt:  # Ctrl-C while the editor is still connected
            attach.send_signal(signal.SIGINT)
            out, err = attach.communicate(timeout=30)
            assert attach.returncode == 0, err
            assert "Stopped forwarding" in out
            client.close()
    finally:
        if attach.poll() is None:
            attach.terminate()
            attach.wait(10)
    with socket.socket() as probe:  # the forward is gone with the command
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return attach


def engine_execs(container_id):
    """The engine CLIs on this machine that exec into the container (each names its full id)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1] == b"exec" and container_id.encode() in argv:
            found.append((int(pid), argv))
    return found


def agents_inside(engine, name):
    """The processes in the container running kubectl-wand's loader (an agent or a relay)."""
    from kubectl_wand.agent.processes import AGENT_LOADER
    done = engine.cli("exec", name, "/usr/bin/python3.14", "-S", "-c",
                      "import os,sys\nfor p in os.listdir('/proc'):\n  try:\n   c=open('/proc/%s/cmdline'%p,'rb')"
                      ".read()\n  except OSError:\n   continue\n  if p.isdigit() and sys.argv[1].encode() in c and str(os.getpid())!=p:"
                      "print(p)", AGENT_LOADER)
    return done.stdout.split()


def relay_in_use(engine, name):
    """A check run while the DAP client is connected: its connection is a ``docker exec`` of attach's (beside
    the watching agent's), and a relay runs in the container."""
    container_id = engine.cli("inspect", "-f", "{{.Id}}", name).stdout.strip()

    def during(attach):
        mine = [pid for pid, _argv in engine_execs(container_id) if open("/proc/%d/stat" % pid).read().rsplit(
            ")", 1)[1].split()[1] == str(attach.pid)]
        assert len(mine) == 2, engine_execs(container_id)  # the watch, and the one connection's relay
        assert len(agents_inside(engine, name)) == 2
    return container_id, during


def test_attach_over_the_engines_exec_stream(engine):
    """WAND_ENGINE_RELAY=1: no namespace entered, the port carried by ``docker exec``; Ctrl-C ends every exec
    here and every relay and agent in the container."""
    name, info = engine.run()
    container_id, during = relay_in_use(engine, name)
    breakpoint_through_the_forward(engine, name, info, env={"WAND_ENGINE_RELAY": "1"}, during=during,
                                   interrupt=True)
    # the engine ends an exec whose client went away in its own time
    wait_for(lambda: not engine_execs(container_id) and not agents_inside(engine, name), timeout=15)
    assert engine_execs(container_id) == []
    assert agents_inside(engine, name) == []


def test_attach_as_a_user_who_cannot_enter_the_namespace_over_tcp():
    """uid 1000 (not root: no namespace to enter) reaching dockerd as a remote engine, DOCKER_HOST=tcp:// on
    loopback (a proxy to its socket made here): the relay is chosen without being asked for."""
    docker = Engine("docker", engines_env())
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve():
        while True:
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            sock = socket.socket(socket.AF_UNIX)
            sock.connect("/var/run/docker.sock")
            threading.Thread(target=pump, args=(conn, sock), daemon=True).start()
            threading.Thread(target=pump, args=(sock, conn), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    home = tempfile.mkdtemp(prefix="cw-relay-")
    os.chmod(home, 0o777)
    site = os.path.dirname(os.path.dirname(__import__("debugpy").__file__))
    os.symlink(os.path.join(site, "debugpy"), os.path.join(home, "debugpy"))
    try:
        name, info = docker.run()
        _id, during = relay_in_use(docker, name)
        breakpoint_through_the_forward(docker, name, info, user=1000, during=during, env={
            "DOCKER_HOST": "tcp://127.0.0.1:%d" % proxy.getsockname()[1], "HOME": home,
            "PYTHONPATH": REPO + os.pathsep + home})
    finally:
        proxy.close()
        docker.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def helpers(engine):
    return engine.cli("ps", "-a", "-q", "--filter", "label=kubectl-wand-helper").stdout.split()


def test_a_hardened_container_through_a_helper_container(engine):
    # uid 1000, every capability dropped, a read-only root, no Python on PATH (only at an absolute path)
    name, info = engine.run("http_app.py", "--user", "1000:1000", "--cap-drop", "ALL", "--read-only",
                            "-e", "PATH=/nonexistent", ptrace=False, python="/usr/bin/python3.14")
    target = "%s/%s" % (engine.name, name)
    before = engine.cli("diff", name).stdout  # what the engine itself made (/apps' mount point, podman's /etc)
    if engine.name == "docker":
        plain = wand("exec-py", target, "--", "1")
        assert plain.returncode == 4 and "or add --ephemeral" in one_line_error(plain)
    done = wand("exec-py", target, "--ephemeral", "--", "import os; os.getuid(), os.getpid()",
                env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "(1000, 1)\n"
    stack = wand("stack", target, "--ephemeral", env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert stack.returncode == 0 and "serve_forever" in stack.stdout, stack.stderr
    breakpoint_through_the_forward(engine, name, info, "--ephemeral")
    end = time.monotonic() + 30
    while helpers(engine) and time.monotonic() < end:  # --rm: the engine removes each helper as it ends
        time.sleep(0.1)
    assert helpers(engine) == []
    assert engine.cli("diff", name).stdout == before  # nothing written into the target container


def test_a_compose_service_is_all_its_replicas():
    docker = Engine("docker", engines_env())
    service = "cw-svc-%s" % uuid.uuid4().hex[:6]
    labels = ("--label", "com.docker.compose.service=" + service, "--label", "com.docker.compose.project=cw")
    try:
        names = [docker.run("http_app.py", *labels)[0] for _ in range(2)]  # the labels Compose puts on replicas
        listed = wand("get", "processes", "compose/" + service, "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(p["container"] for p in json.loads(listed.stdout)["items"]) == sorted(
            "docker/" + n for n in names)
        several = wand("exec-py", "compose/" + service, "--", "1")
        assert several.returncode == 2 and "choose one with --pod" in one_line_error(several)
        chosen = wand("exec-py", "compose/" + service, "--pod", names[1], "--", "import socket; socket.gethostname()")
        assert chosen.returncode == 0, chosen.stderr
        assert chosen.stdout.strip() == repr(docker.cli("inspect", "-f", "{{.Config.Hostname}}", names[1]).stdout.strip())
        done = wand("stack", "compose/no-such-service-here")
        assert done.returncode == 3 and "no running container of that Compose service" in one_line_error(done)
    finally:
        docker.cleanup()


class RootlessPodman(Engine):
    """Podman run by uid 1000, rootless (a user namespace of one uid: no /etc/subuid here, vfs storage,
    --network none), in a home of its own made for the test, with the project's image imported there."""

    def __init__(self, env):
        self.home = tempfile.mkdtemp(prefix="cw-rootless-")
        conf = os.path.join(self.home, ".config", "containers")
        os.makedirs(conf)
        os.makedirs(os.path.join(self.home, "run"), mode=0o700)
        with open(os.path.join(conf, "storage.conf"), "w") as f:
            f.write('[storage]\ndriver = "vfs"\n[storage.options]\nignore_chown_errors = "true"\n')
        with open(os.path.join(conf, "containers.conf"), "w") as f:
            f.write('[containers]\ndefault_ulimits = []\nnetns = "none"\n'
                    '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        site = os.path.dirname(os.path.dirname(__import__("debugpy").__file__))
        os.symlink(os.path.join(site, "debugpy"), os.path.join(self.home, "debugpy"))  # for /usr/bin/python3
        for dirpath, dirnames, filenames in os.walk(self.home):
            for entry in dirnames + filenames:
                os.lchown(os.path.join(dirpath, entry), 1000, 1000)
        os.chown(self.home, 1000, 1000)
        super().__init__("podman", dict(env, CONTAINERS_CONF=os.path.join(conf, "containers.conf")))
        self.user_env = {"HOME": self.home, "XDG_RUNTIME_DIR": os.path.join(self.home, "run"),
                         "CONTAINERS_CONF": self.env["CONTAINERS_CONF"], "PYTHONPATH": REPO + os.pathsep + self.home}
        base = os.path.join(self.home, "base.tar")  # root's image cache is not uid 1000's to read
        shutil.copy(glob.glob(os.path.join(os.path.dirname(os.path.dirname(ENV_FILE)), "images",
                                           "py314-base-*.layer.tar"))[0], base)
        os.chown(base, 1000, 1000)
        self.image = "localhost/cw-rootless/py314"
        self.cli("import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 base, self.image, timeout=300)

    def cli(self, *args, check=True, timeout=60):
        done = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **self.user_env), preexec_fn=become(1000))
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def cleanup(self):
        super().cleanup()
        pause = os.path.join(self.home, "run", "libpod", "tmp", "pause.pid")
        if os.path.exists(pause):  # the process rootless podman keeps to hold its user namespace
            with open(pause) as f:
                pid = int(f.read().strip() or 0)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.home, ignore_errors=True)


def test_attach_to_rootless_podman_as_its_user():
    """uid 1000's own rootless Podman: its namespace is not ours to enter (not root), so the relay carries
    the port; Ctrl-C leaves no podman exec here and no relay in the container."""
    podman = RootlessPodman(engines_env())
    try:
        name, info = podman.run()
        container_id, during = relay_in_use(podman, name)
        breakpoint_through_the_forward(podman, name, info, user=1000, env=podman.user_env, during=during,
                                       interrupt=True)
        wait_for(lambda: not engine_execs(container_id) and not agents_inside(podman, name), timeout=15)
        assert engine_execs(container_id) == []
        assert agents_inside(podman, name) == []
        # its process as pid/N, by its user: not a namespace the user may enter; the line names what works
        # (it said "(needs root)" only, and root refuses the container's files: uid 1000 can change them)
        host_pid = json.loads(podman.cli("inspect", name).stdout)[0]["State"]["Pid"]
        refused = wand("stack", "pid/%d" % host_pid, user=1000, env=podman.user_env)
        assert refused.returncode == 4, refused.stderr
        assert "reached as its engine's target instead (podman/NAME" in one_line_error(refused)
        assert wand("stack", "podman/" + name, user=1000, env=podman.user_env).returncode == 0
    finally:
        podman.cleanup()


# -- refusals ------------------------------------------------------------------------------------------------

def test_pdb_and_exec_py_it_in_a_container(engine):
    """The terminal sessions: the launcher runs in the container (``docker exec -it``), whose network namespace
    holds the agent's socket name; leaving takes everything back. (Before: a traceback, the engine's transport
    had no terminal of its own.) With --ephemeral they are refused before anything runs."""
    from ptyterm import Term
    name, _info = engine.run("busy.py")
    target = "%s/%s" % (engine.name, name)
    env = dict(os.environ, PYTHONPATH=REPO, CONTAINERS_CONF=engine.env["CONTAINERS_CONF"])
    term = Term([sys.executable, "-m", "kubectl_wand", "pdb", target], env=env, cwd=REPO)
    try:
        term.expect(r"\(Pdb\) ", timeout=90)
        term.line("p counter > 0")
        term.expect(r"True")
        term.expect(r"\(Pdb\) ")
        term.line("q")
        assert term.wait(60) == 0, term.seen
    finally:
        term.close()
    term = Term([sys.executable, "-m", "kubectl_wand", "exec-py", "-it", target], env=env, cwd=REPO)
    try:
        term.expect(r">>> ", timeout=90)
        term.line("40 + 2")
        term.expect(r"42")
        term.expect(r">>> ")
        term.send("\x04")
        assert term.wait(60) == 0, term.seen
    finally:
        term.close()
    left = wand("exec-py", target, "--", "import threading, sys; print(sorted(t.name for t in "
                "threading.enumerate()), threading.gettrace(), 'pdb' in sys.modules and "
                "sys.modules['pdb'].Pdb._last_pdb_instance)", env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert left.returncode == 0 and "wand" not in left.stdout and left.stdout.endswith("None None\n"), left
    tmp = engine.cli("exec", name, "python3", "-c", "import os; print(os.listdir('/tmp'))").stdout
    assert "wand" not in tmp, tmp
    helper = wand("pdb", "--ephemeral", target, env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert helper.returncode == 2 and "leave out --ephemeral" in one_line_error(helper), helper.stderr


def test_a_killed_terminal_session_leaves_no_client_in_the_container(engine):
    """pdb's and exec-py -it's client run in the container under ``docker exec -it``; when kubectl wand is killed
    its exec dies with it, but the engine keeps the container's terminal open (kubectl exec's end closes it):
    the client waited for a line at its prompt for good. It now ends once the relay's connection closes."""
    from ptyterm import Term
    from kubectl_wand.transport.launcher import LAUNCHER
    name, _info = engine.run("busy.py")
    target = "%s/%s" % (engine.name, name)
    env = dict(os.environ, PYTHONPATH=REPO, CONTAINERS_CONF=engine.env["CONTAINERS_CONF"])
    start = LAUNCHER.strip().splitlines()[0]  # the launcher's, and so the client's, command line

    def clients():
        return [line for line in engine.cli("exec", name, "ps", "-ww", "-eo", "args").stdout.splitlines()
                if start in line]
    for verb, prompt in ((["pdb"], r"\(Pdb\) "), (["exec-py", "-it"], r">>> ")):
        term = Term([sys.executable, "-m", "kubectl_wand"] + verb + [target], env=env, cwd=REPO)
        try:
            term.expect(prompt, timeout=90)
            assert clients()
            term.proc.kill()
            term.proc.wait(30)
        finally:
            term.close()
        assert wait_for(lambda: not clients(), timeout=60), clients()
        assert wait_for(lambda: not agents_inside(engine, name), timeout=30)
    left = wand("exec-py", target, "--", "import threading, sys; print(sorted(t.name for t in "
                "threading.enumerate()), threading.gettrace())", env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert left.returncode == 0 and left.stdout == "['MainThread'] None\n", left


def in_terminal_group(*args, engine):
    """The CLI started as a shell starts a foreground job: its own process group, which the terminal's Ctrl-C
    signals whole (children included)."""
    env = dict(os.environ, PYTHONPATH=REPO, CONTAINERS_CONF=engine.env["CONTAINERS_CONF"])

    def start():
        os.setpgid(0, 0)
        default_signals()
    return subprocess.Popen([sys.executable, "-m", "kubectl_wand"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, preexec_fn=start)


def test_the_terminals_ctrl_c_ends_profile_and_trace_as_their_normal_end(engine, tmp_path):
    """Ctrl-C signals the terminal's whole process group, the engine's CLI included: docker's and podman's exit on
    SIGINT even when they start with it ignored (Go's signal.Notify), and the agent they ran in the container
    lost its CLI. Seen: `trace` ended "docker failed for docker/NAME: " (exit 6) instead of its summary, and
    `profile` lost its samples. Meanwhile the profile's sampler, a Python process beside the app, is not the
    app's: it was listed as the container's second process and a concurrent exec-py refused "2 Python
    processes in this container"."""
    name, _info = engine.run("ticker.py")
    target = "%s/%s" % (engine.name, name)
    env = {"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]}
    out = tmp_path / "profile.txt"
    profile = in_terminal_group("profile", target, "--duration", "120s", "--idle", "-o", str(out), engine=engine)
    try:
        sampling = lambda: '"""Frames and thread names' in engine.cli("exec", name, "ps", "-ww", "-eo", "args").stdout
        assert wait_for(sampling, timeout=60), profile.stderr.read() if profile.poll() is not None else "no sampler"
        listed = wand("get", "processes", target, "-o", "json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [p["pid"] for p in json.loads(listed.stdout)["items"]] == [1]
        done = wand("exec-py", target, "--", "6 * 7", env=env)
        assert done.returncode == 0 and done.stdout == "42\n", done.stderr
        os.killpg(profile.pid, signal.SIGINT)
        _out, err = profile.communicate(timeout=60)
        assert profile.returncode == 0 and "stopped early" in err, err
        assert "ticker.py" in out.read_text()
    finally:
        if profile.poll() is None:
            profile.kill()
            profile.wait(10)
    trace = in_terminal_group("trace", target, "ticker.py:9", "n", "--duration", "120s", engine=engine)
    try:
        assert trace.stderr.readline().startswith("tracing "), trace.stderr.read()
        os.killpg(trace.pid, signal.SIGINT)
        _out, err = trace.communicate(timeout=60)
        assert trace.returncode == 0 and "probe removed" in err, err
    finally:
        if trace.poll() is None:
            trace.kill()
            trace.wait(10)
    container_id = engine.cli("inspect", "-f", "{{.Id}}", name).stdout.strip()
    assert wait_for(lambda: not engine_execs(container_id) and not agents_inside(engine, name), timeout=30)
    assert "kubectl-wand" not in engine.cli("exec", name, "ls", "-a", "/tmp").stdout


def test_code_left_running_by_a_cli_that_went_away_is_stopped(engine):
    """exec-py's code runs in the app's main thread until --timeout; when the CLI is killed, or Ctrl-C'd, nobody
    waits for its answer. Seen: `exec-py docker/NAME --timeout 60s -- 'while True: pass'` killed kept the app's
    main thread busy for the whole minute, with its agent and private directory in the container; Ctrl-C waited
    5 s for an answer that never came. The code names its start in the main thread's name (readiness)."""
    name, _info = engine.run()
    target = "%s/%s" % (engine.name, name)
    host_pid = int(engine.cli("inspect", "-f", "{{.State.Pid}}", name).stdout)

    def state():
        with open("/proc/%d/stat" % host_pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    def comm():
        with open("/proc/%d/comm" % host_pid) as f:
            return f.read().strip()
    for how, mark in ((signal.SIGKILL, "wand-rt-killed"), (signal.SIGINT, "wand-rt-ctrl-c")):
        code = "import ctypes\nctypes.CDLL(None).prctl(15, %r, 0, 0, 0)\nwhile True: pass" % mark.encode()
        cli = in_terminal_group("exec-py", target, "--timeout", "300s", "--", code, engine=engine)
        try:
            assert wait_for(lambda: comm() == mark, timeout=60), cli.stderr.read() if cli.poll() is not None else ""
            assert state() == "R"
            os.killpg(cli.pid, how) if how == signal.SIGINT else cli.kill()
            cli.communicate(timeout=60)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait(10)
        assert cli.returncode == (130 if how == signal.SIGINT else -signal.SIGKILL)
        assert wait_for(lambda: state() == "S", timeout=60), "the code still runs in the app's main thread"
        assert wait_for(lambda: not agents_inside(engine, name), timeout=30)
        assert "wand-" not in engine.cli("exec", name, "ls", "-A", "/tmp", "/dev/shm").stdout
    assert wand("exec-py", target, "--", "6 * 7", env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]}).stdout \
        == "42\n"


def test_the_agent_never_imports_from_the_containers_working_directory(engine, tmp_path):
    """``python3 -S -c LOADER`` starts in the container's working directory, the app's: a module there named as
    one of the standard library's was imported by the agent (seen: struct.py; the agent failed, and a planted one
    ran as the exec user)."""
    workdir = tmp_path / "wd"
    workdir.mkdir()
    for module in ("struct", "json", "socket", "zlib", "base64"):
        (workdir / (module + ".py")).write_text(
            "import os\nos.close(os.open('/tmp/planted-%s', os.O_CREAT | os.O_WRONLY, 0o644))\n" % module)
    os.chmod(tmp_path, 0o755)
    os.chmod(workdir, 0o755)
    name, _info = engine.run("busy.py", "-w", "/wd", "-v", "%s:/wd:ro" % workdir)
    done = wand("exec-py", "%s/%s" % (engine.name, name), "--", "40 + 2",
                env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert done.returncode == 0 and done.stdout == "42\n", done.stderr
    tmp = engine.cli("exec", name, "python3", "-I", "-c", "import os; print(os.listdir('/tmp'))").stdout
    assert "planted" not in tmp, tmp


def test_no_writable_temporary_directory_names_the_containers_fix(engine):
    """--read-only and no /dev/shm (--ipc none): no room for the private files. The refusal named only a pod's
    fix ("mount a writable emptyDir at /tmp"); a container's is --tmpfs /tmp. Nothing is left behind."""
    podman = ["--read-only-tmpfs=false"] if engine.name == "podman" else []  # podman's --read-only keeps a /tmp
    name, _info = engine.run("http_app.py", "--read-only", "--ipc", "none", *podman)
    target = "%s/%s" % (engine.name, name)
    before = engine.cli("diff", name).stdout
    done = wand("exec-py", target, "--", "1", env={"CONTAINERS_CONF": engine.env["CONTAINERS_CONF"]})
    assert done.returncode == 6, done.stderr
    line = one_line_error(done)
    assert "no room for kubectl wand's private files" in line and "--tmpfs /tmp" in line and "--ephemeral" in line
    assert engine.cli("diff", name).stdout == before
    assert wait_for(lambda: not agents_inside(engine, name), timeout=30)


def test_unknown_and_stopped_containers_are_refused_in_one_line(engine):
    missing = wand("stack", "%s/cw-no-such-container" % engine.name)
    assert missing.returncode == 3
    assert "no such container" in one_line_error(missing)
    name = "cw-%s-%s" % (engine.name, uuid.uuid4().hex[:8])
    engine.started.append(name)
    engine.cli("create", "--name", name, engine.image, "python3", "-c", "pass")
    stopped = wand("exec-py", "%s/%s" % (engine.name, name), "--", "1")
    assert stopped.returncode == 3
    assert "is not running (created); start it with %s start %s" % (engine.name, name) in one_line_error(stopped)


def test_no_ptrace_in_the_container_names_the_fix(engine):
    name, _info = engine.run(ptrace=False)
    done = wand("exec-py", "%s/%s" % (engine.name, name), "--", "1")
    if engine.name == "podman":
        # measured: podman's default seccomp profile lets a process ptrace another of its uid without
        # CAP_SYS_PTRACE (no Yama here); docker's refuses process_vm_writev/ptrace without it
        assert done.returncode == 0 and done.stdout == "1\n", done.stderr
        return
    assert done.returncode == 4
    assert "--cap-add SYS_PTRACE" in one_line_error(done)


def test_no_engine_and_no_permission(tmp_path):
    engines_env()
    gone = wand("stack", "docker/web", env={"DOCKER_HOST": "unix://%s/none.sock" % tmp_path})
    assert gone.returncode == 6
    assert "no docker engine answers (DOCKER_HOST=unix://" in one_line_error(gone)
    missing = wand("stack", "podman/web", env={"PATH": "/nonexistent"})
    assert missing.returncode == 6
    assert one_line_error(missing) == "error: podman not found on PATH; install Podman to reach podman/NAME targets"
    # uid 1000 is not in the docker group: the socket (root:docker 0660) refuses it
    denied = wand("stack", "docker/web", user=1000, env={"HOME": str(tmp_path)})
    assert denied.returncode == 6
    assert "no permission on docker's socket" in one_line_error(denied)


def test_engine_targets_refuse_pod_flags():
    done = wand("stack", "docker/web", "-c", "app")
    assert done.returncode == 2
    assert "docker/web is one container" in one_line_error(done)


# -- provisioning --------------------------------------------------------------------------------------------

def test_hack_engines_comes_back_after_dockerd_stopped_and_twice_at_once():
    engines_env()
    script = os.path.join(REPO, "hack", "engines")
    down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert subprocess.run(["docker", "version"], capture_output=True, timeout=30).returncode != 0  # it is down
    runs = [subprocess.Popen([script, "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        assert out.strip().splitlines()[-1] == ENV_FILE
    assert subprocess.run(["docker", "version"], capture_output=True, timeout=30).returncode == 0
