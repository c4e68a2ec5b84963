"""Output on the real cluster (issue 22): pod/namespace/container in every verb's JSON where a pod is the source,
get processes -o name accepted back as a target, kubectl's KIND.GROUP spelling, and not-found errors that name
what is missing (the namespace itself when it is the namespace) with their fix. Read-only on the shared deploy/web."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.cluster
NS = "wand-e2e"


def test_pod_fields_and_name_round_trip(cluster, wand):
    listed = wand("get", "processes", "deploy/web", "-n", NS, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    for item in json.loads(listed.stdout)["items"]:
        assert item["pod"].startswith("web-") and item["namespace"] == NS and item["container"] == "app", item
    names = wand("get", "processes", "deploy/web", "-n", NS, "-o", "name").stdout.split()
    assert names and all(n.startswith("pod/web-") for n in names)
    pod, pid = names[0].split("/")[1], int(names[0].split("/")[2])
    stack = wand("stack", names[0], "-n", NS, "-o", "json")  # before: "bad target ...; expected TYPE/NAME"
    assert stack.returncode == 0, stack.stderr
    (item,) = json.loads(stack.stdout)["items"]
    assert (item["pod"], item["namespace"], item["container"], item["pid"]) == (pod, NS, "app", pid)
    ran = wand("exec-py", names[0], "-n", NS, "-o", "json", "--", "1 + 1")
    result = json.loads(ran.stdout)
    assert result["value"] == "2" and (result["pod"], result["namespace"], result["container"]) == (pod, NS, "app")
    checked = json.loads(wand("check", names[0], "-n", NS, "-o", "json").stdout)
    assert (checked["pod"], checked["namespace"], checked["container"]) == (pod, NS, "app")


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
