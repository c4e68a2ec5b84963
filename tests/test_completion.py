"""kubectl_complete-wand without a cluster: verbs, flags, choices, kinds, local PIDs, kubeconfig names, and the
real kubectl calling the completer (kubectl >= 1.26 protocol). Cluster names: tests/e2e/test_completion_cluster.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(REPO, "tests", "apps")
sys.path.insert(0, REPO)
from kubectl_wand.cli import verb_parsers  # noqa: E402

# a kubeconfig whose API server refuses connections at once: every cluster lookup fails fast
UNREACHABLE = """apiVersion: v1
kind: Config
current-context: alpha
clusters:
- name: c1
  cluster: {server: "https://127.0.0.1:9"}
contexts:
- name: alpha
  context: {cluster: c1, user: u1, namespace: ns-alpha}
- name: beta
  context: {cluster: c1, user: u1}
users:
- name: u1
  user: {token: x}
"""


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    path = tmp_path_factory.mktemp("kc") / "config"
    path.write_text(UNREACHABLE)
    return str(path)


@pytest.fixture(scope="module")
def complete(kubeconfig):
    """Run the completer as kubectl does: the words, then the word being completed; (candidates, directive)."""
    def run(*words, env=None, timeout=30):
        full = dict(os.environ, KUBECONFIG=kubeconfig, PYTHONPATH=REPO)
        full.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "kubectl_wand.completion", *words], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=full, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", proc.stderr  # nothing may spill into the user's prompt
        lines = proc.stdout.splitlines()
        assert lines and lines[-1].startswith(":"), proc.stdout
        return [l.split("\t")[0] for l in lines[:-1]], int(lines[-1][1:])
    return run


def verb_parser(verb):
    return verb_parsers()[verb]


def test_verbs_from_the_parser(complete):
    assert complete("") == (["get", "attach", "exec-py", "check", "stack", "profile", "trace", "mem", "pdb"], 4)
    assert complete("ex") == (["exec-py"], 4)
    got, directive = complete("--v")  # kubectl's global flags may come before the verb, as may --version
    assert {"--v", "--version"} <= set(got) and directive == 4


def test_get_takes_processes(complete):
    assert complete("get", "") == (["processes"], 4)
    assert complete("get", "proce") == (["processes", "process"], 4)


@pytest.mark.parametrize("verb", ["get", "attach", "exec-py", "check"])
def test_every_flag_of_the_verb(complete, verb):
    words = ["get", "processes"] if verb == "get" else [verb, "pid/1"]
    got, directive = complete(*words, "-")
    expected = {s for a in verb_parser(verb)._actions for s in a.option_strings}
    assert set(got) == expected and directive == 4
    assert complete(*words, "--loc")[0] == (["--local-port"] if verb == "attach" else [])


def test_flags_already_given_are_not_offered_again(complete):
    got, _ = complete("get", "processes", "-A", "--no-headers", "-")
    assert "-A" not in got and "--all-namespaces" not in got and "--no-headers" not in got
    assert "--as-group" in complete("get", "processes", "--as-group", "g1", "--as")[0]  # it repeats


def test_output_choices_per_verb(complete):
    assert complete("get", "processes", "-o", "") == (["wide", "json", "yaml", "name"], 4)
    assert complete("attach", "pid/1", "--output", "y") == (["yaml"], 4)
    assert complete("check", "pid/1", "--output=w") == (["--output=wide"], 4)


def test_file_flags_let_the_shell_complete_files(complete):
    assert complete("get", "processes", "--kubeconfig", "") == ([], 0)
    assert complete("exec-py", "pid/1", "-f", "") == ([], 0)


def test_no_completion_for_code_after_dashes(complete):
    assert complete("exec-py", "pid/1", "--", "") == ([], 4)


def test_kinds_without_a_reachable_cluster(complete):
    start = time.monotonic()
    assert complete("get", "processes", "") == (["pod/", "svc/", "deploy/", "sts/", "ds/", "rs/", "job/", "ksvc/",
                                                 "pid/", "docker/", "podman/", "compose/"], 6)
    assert complete("attach", "d") == (["deploy/", "ds/", "docker/"], 6)  # NoSpace: the name follows the slash
    assert complete("attach", "deploy/") == ([], 4)  # the API server refused: nothing, no error
    assert time.monotonic() - start < 20


def test_contexts_from_the_kubeconfig_on_the_line(complete, kubeconfig, tmp_path):
    assert complete("get", "processes", "--context", "") == (["alpha", "beta"], 4)
    other = tmp_path / "other"
    other.write_text(UNREACHABLE.replace("alpha", "gamma"))
    assert complete("get", "processes", "--kubeconfig", str(other), "--context", "") == (["gamma", "beta"], 4)
    assert complete("get", "processes", "--kubeconfig=%s" % other, "--context=g") == (["--context=gamma"], 4)


def test_local_python_pids(complete):
    proc = subprocess.Popen([sys.executable, os.path.join(APPS, "sleeper.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline()  # the sleeper says it is up before it sleeps
        got, directive = complete("attach", "pid/")
        assert "pid/%d" % proc.pid in got and directive == 4
        assert all(g.startswith("pid/") and g[4:].isdigit() for g in got)
        assert complete("attach", "pid/%d" % proc.pid, "--pid", "") == (["%d" % proc.pid], 4)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_verbs_need_no_kubernetes_import():
    code = ("import sys, io; sys.stdout = io.StringIO(); from kubectl_wand import completion; completion.main(['']); "
            "out = sys.stdout.getvalue(); sys.stdout = sys.__stdout__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'yaml', 'urllib3')), out)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout.startswith("[] get\nattach\nexec-py\ncheck\nstack\nprofile\ntrace\nmem\npdb\n:4"), proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def kubectl_path(tmp_path_factory):
    """PATH with kubectl and this checkout's kubectl-wand and kubectl_complete-wand (kubectl completes only
    plugins it finds on PATH)."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not on PATH")
    bin_dir = tmp_path_factory.mktemp("bin")
    for name, module in (("kubectl-wand", "kubectl_wand"), ("kubectl_complete-wand", "kubectl_wand.completion")):
        script = bin_dir / name
        script.write_text('#!/bin/sh\nPYTHONPATH=%s exec %s -m %s "$@"\n' % (REPO, sys.executable, module))
        script.chmod(0o755)
    (bin_dir / "kubectl").symlink_to(kubectl)
    return str(bin_dir)


def test_kubectl_runs_the_completer(kubectl_path, kubeconfig):
    env = dict(os.environ, PATH=kubectl_path, KUBECONFIG=kubeconfig)
    proc = subprocess.run(["kubectl", "__complete", "wand", "ge"], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["get", ":4"], proc.stdout + proc.stderr
    proc = subprocess.run(["kubectl", "__complete", "wand", "get", "processes", "-o", ""], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.stdout.splitlines() == ["wide", "json", "yaml", "name", ":4"], proc.stdout + proc.stderr


def test_typed_flags_on_the_line_keep_their_types(complete):
    # -v is an int to the transport; a string there would break the PID lookup and print nothing
    assert complete("attach", "pid/1", "-v", "6", "--pid", "") == (["1"], 4)
    assert complete("attach", "pid/1", "--port", "not-a-number", "--pid", "") == (["1"], 4)


def test_pid_candidates_are_listed_once_across_replicas(monkeypatch, kubeconfig):
    """Before: replicas run the same PIDs, so `--pid <TAB>` on a Deployment listed `1` once per pod."""
    from kubectl_wand import completion
    from kubectl_wand.commands.common import TargetOptions

    class Replica:
        def __init__(self, n):
            self.where = "pod/web-%d" % n

        def agent(self, request, timeout=None):
            return {"status": "ok", "processes": [{"pid": 1, "command": "python3 -m uvicorn web:app"},
                                                  {"pid": 7 + self.where.endswith("2"), "command": "worker"}]}

    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setattr(TargetOptions, "transports", lambda self: [Replica(0), Replica(1), Replica(2)])
    line = completion.Line(verb_parser("attach"), ["deploy/web", "--pid", ""])
    got = completion.target_pids(line)
    assert [c.split("\t")[0] for c in got] == ["1", "7", "8"], got
    assert got[0] == "1\tpython3 -m uvicorn web:app (pod/web-0 and 2 more)"
    assert got[2] == "8\tworker (pod/web-2)"
