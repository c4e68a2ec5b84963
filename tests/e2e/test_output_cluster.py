"""Output on the real cluster (issue 22): every -o json|yaml held to docs/output.md (tests/outputs.py), with
pod/namespace/container in every verb's output where a pod is the source,
get processes -o name accepted back as a target, kubectl's KIND.GROUP spelling, and not-found errors that name
what is missing (the namespace itself when it is the namespace) with their fix. Read-only on the shared deploy/web."""
from __future__ import annotations

import json

import pytest

from outputs import check  # tests/outputs.py (tests/conftest.py put tests/ on sys.path)

pytestmark = pytest.mark.cluster
NS = "wand-e2e"


def web(got):
    """The source of a result from deploy/web: one of its pods, in NS, container app."""
    pod, namespace, container = got
    assert pod.startswith("web-") and (namespace, container) == (NS, "app"), got


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_output_parses_with_its_pod(cluster, wand, fmt):
    """Every -o json|yaml on pods of the cluster, held to docs/output.md (tests/outputs.py), with pod, namespace
    and container wherever a pod is the source."""
    def run(*args):
        at = args.index("--") if "--" in args else len(args)  # after -- it would be code
        done = wand(*args[:at], "-n", NS, "-o", fmt, *args[at:])
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = check(run("get", "processes", "deploy/web"), "get", fmt, web)
    assert check(run("stack", "deploy/web"), "stack", fmt, web)
    results = check(run("exec-py", "deploy/web", "--all-pods", "--", "1 + 1"), "exec-py --all-pods", fmt, web)
    assert {r["value"] for r in results} == {"2"}
    one = "pod/" + listed[0]["pod"]  # check and exec-py take one pod (deploy/web has two)
    (result,) = check(run("exec-py", one, "--", "1 + 1"), "exec-py", fmt, web)
    assert result["value"] == "2"
    check(run("check", one), "check", fmt, web)


def test_pod_fields_and_name_round_trip(cluster, wand):
    names = wand("get", "processes", "deploy/web", "-n", NS, "-o", "name").stdout.split()
    assert names and all(n.startswith("pod/web-") for n in names)
    pod, pid = names[0].split("/")[1], int(names[0].split("/")[2])
    stack = wand("stack", names[0], "-n", NS, "-o", "json")  # before: "bad target ...; expected TYPE/NAME"
    assert stack.returncode == 0, stack.stderr
    (item,) = check(stack.stdout, "stack", "json", (pod, NS, "app"))
    assert item["pid"] == pid
    ran = wand("exec-py", names[0], "-n", NS, "-o", "json", "--", "1 + 1")
    (result,) = check(ran.stdout, "exec-py", "json", (pod, NS, "app"))
    assert result["value"] == "2"
    check(wand("check", names[0], "-n", NS, "-o", "json").stdout, "check", "json", (pod, NS, "app"))


def test_kind_group_targets(cluster, wand):
    done = wand("stack", "deployment.apps/web", "-n", NS, "-o", "json")  # before: unknown resource type
    assert done.returncode == 0, done.stderr
    assert all(i["pod"].startswith("web-") for i in json.loads(done.stdout)["items"])


def test_not_found_names_what_is_missing_with_the_fix(cluster, wand):
    missing_ns = wand("stack", "deploy/web", "-n", "of-no-such-namespace")
    assert missing_ns.returncode == 3
    # before: "deployment web not found in namespace of-no-such-namespace" (as if the deployment were missing)
    assert missing_ns.stderr.strip() == ("error: namespace of-no-such-namespace not found; see kubectl get "
                                         "namespaces"), missing_ns.stderr
    missing = wand("stack", "deploy/of-no-such-deploy", "-n", NS)
    assert missing.returncode == 3
    assert missing.stderr.strip() == ("error: deployment of-no-such-deploy not found in namespace %s; see kubectl "
                                      "get deployments -n %s" % (NS, NS)), missing.stderr
