"""kubectl's flag habits, against the real cluster: every verb accepts kubectl's global flags and its own flags in
every position (before the verb, between the verb's words, before or after the target; --flag=value and
--flag value), and `--` ends flags for exec-py code.

The namespace flag is the probe: the workloads live in wand-e2e while the kubeconfig's context points at
`default`, so a flag that was dropped or misread makes the command fail to find its target.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.cluster
NS = "wand-e2e"


@pytest.fixture(scope="module")
def wand(cluster, tmp_path_factory):
    # A kubeconfig whose context's namespace is `default`: the target is found only if -n is honoured.
    kubeconfig = str(tmp_path_factory.mktemp("kcfg") / "config")
    flat = cluster.kubectl("config", "view", "--raw", "--flatten", namespaced=False, check=True).stdout
    with open(kubeconfig, "w") as f:
        f.write(flat)
    subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "config", "set-context", "--current", "--namespace=default"],
                   check=True, capture_output=True, timeout=30)
    env = dict(cluster.env, PYTHONPATH=REPO, KUBECONFIG=kubeconfig)

    def run(*args, timeout=120):
        return subprocess.run([sys.executable, "-m", "kubectl_wand"] + list(args), capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env=env, stdin=subprocess.DEVNULL)
    return run


@pytest.fixture(scope="module")
def pod(cluster):
    return cluster.pod_names("app=web")[0]


def placements(verb_words, target, flags):
    """Every way to put ``flags`` (a list of argv words) around ``verb_words`` and ``target``."""
    yield "before the verb", flags + verb_words + [target]
    if len(verb_words) > 1:
        yield "between the verb's words", verb_words[:1] + flags + verb_words[1:] + [target]
    yield "before the target", verb_words + flags + [target]
    yield "after the target", verb_words + [target] + flags


NAMESPACE_FORMS = [["-n", NS], ["--namespace", NS], ["--namespace=" + NS], ["-n=" + NS]]
VERBS = {  # verb words -> (a verb flag in its two spellings, how to tell the command worked)
    "get processes": ([["-o", "json"], ["--output=json"]], lambda out: json.loads(out)["items"]),
    "check": ([["-o", "json"], ["--output=json"]], lambda out: json.loads(out)["rows"]),
    "exec-py": ([["-o", "json"], ["--output=json"]], lambda out: json.loads(out)["value"] == "42"),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_position(wand, pod, verb):
    verb_flags, worked = VERBS[verb]
    words = verb.split()
    failures = []
    tries = 0
    for where_ns_index, (where_ns, _unused) in enumerate(placements(words, "T", ["F"])):
        for where_flag in ("first", "last"):
            # every spelling of both flags comes round in turn: positions x spellings without the full product
            ns_form = NAMESPACE_FORMS[tries % len(NAMESPACE_FORMS)]
            verb_flag = verb_flags[tries % len(verb_flags)]
            tries += 1
            with_ns = dict(placements(words, "pod/" + pod, ns_form))[where_ns]
            argv = verb_flag + with_ns if where_flag == "first" else with_ns + verb_flag
            if verb == "exec-py":
                argv = argv + ["--", "6 * 7"]
            done = wand(*argv)
            try:
                ok = done.returncode == 0 and worked(done.stdout)
            except ValueError:
                ok = False
            if not ok:
                failures.append("%s (-n %s, %s %s): exit %d %s" % (
                    " ".join(argv), where_ns, " ".join(verb_flag), where_flag, done.returncode,
                    done.stderr.strip()[-200:]))
    assert not failures, "\n".join(failures)


def test_attach_flags_in_every_position(wand, pod):
    """attach --no-forward in each position (a server left in the pod by an earlier attach is reused)."""
    for where, argv in placements(["attach"], "pod/" + pod, ["-n", NS, "--no-forward", "--timeout=20s"]):
        done = wand(*argv, "-o", "json")
        assert done.returncode == 0, (where, done.stderr)
        info = json.loads(done.stdout)
        assert info["status"] in ("listening", "already") and info["forwarding"] is False, (where, info)


def test_dashes_end_flags_for_exec_py_code(wand, pod):
    """After --, words that look like flags are code; flags between the target and -- still count."""
    done = wand("exec-py", "pod/" + pod, "-n", NS, "--", "x = -1; -x")
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    done = wand("exec-py", "pod/" + pod, "--", "-n", NS)  # -n here is code, not the namespace flag
    assert done.returncode != 0


def test_selector_alone_is_a_target_for_every_verb(wand):
    """-l SELECTOR without TARGET is accepted by every verb that takes one."""
    listed = wand("-n", NS, "get", "processes", "-l", "app=gunicorn", "-o", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["items"], listed.stderr
    # --timeout 30s: an idle gunicorn sync worker's main thread sleeps up to 15 s in select (CI chose one at 10 s)
    for verb in (["check"], ["exec-py", "--timeout", "30s", "--", "1 + 1"]):
        done = wand("-l", "app=gunicorn", "-n", NS, *verb)
        assert done.returncode in (0, 1), done.stderr  # check exits 1 on a failing row; neither is a usage error
        assert "needs a target" not in done.stderr


def test_usage_errors_name_the_verb_help(wand):
    done = wand("exec-py", "--timeout", "nan", "pod/x", "--", "1")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: --timeout must be a positive number of seconds (e.g. 15 or 30s), not nan")
    done = wand("-n", NS, "exec-py", "--no-such-flag", "pod/x", "--", "1")
    assert done.returncode == 2 and "see 'kubectl wand exec-py --help'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
