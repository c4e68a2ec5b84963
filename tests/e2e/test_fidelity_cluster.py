"""``stack`` on a pod against ``py-spy dump`` of the same process from the node (issue 22): deploy/web runs
``python3 -m uvicorn`` under click, where CPython 3.14's reader alone stopped at Context.invoke (10 frames of
py-spy's 16) and showed the kernel's 15-byte thread names. Needs the node to be this machine (hack/cluster's)."""
from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_fidelity import pyspy_dump  # noqa: E402

pytestmark = pytest.mark.cluster
NS = "wand-e2e"


def host_pid(uid, needle):
    """The node's pid of the pod's process whose command holds ``needle`` (found by the pod's cgroup)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cgroup" % name) as f:
                groups = f.read()
            if uid not in groups and uid.replace("-", "_") not in groups:
                continue
            with open("/proc/%s/cmdline" % name, "rb") as f:
                if needle in f.read():
                    return int(name)
        except OSError:
            continue
    return None


def test_stack_on_a_pod_matches_py_spy(cluster, wand):
    if cluster.external:
        pytest.skip("the node is another machine: py-spy cannot reach its processes from here")
    pod = cluster.pod_names("app=web")[0]
    uid = cluster.kubectl("get", "pod", pod, "-o", "jsonpath={.metadata.uid}", check=True).stdout.strip()
    pid = host_pid(uid, b"uvicorn")
    assert pid, "no uvicorn process of pod %s on this node" % pod
    for _attempt in range(3):  # the app may move between the two reads: a few tries for one quiet moment
        theirs = pyspy_dump(pid)
        done = wand("stack", "pod/" + pod, "-n", NS, "-o", "json")
        assert done.returncode == 0, done.stderr
        (item,) = [i for i in json.loads(done.stdout)["items"] if b"uvicorn" in i["command"].encode()]
        ours = {t["tid"]: (t["name"], [(f["function"], os.path.basename(f["file"]), f["line"]) for f in t["frames"]])
                for t in item["threads"]}
        if ours == theirs:
            break
    assert ours == theirs
    main = [f for f, _file, _line in ours[1][1]]
    assert main[-7:] == ["Context.invoke", "Command.invoke", "Command.main", "Command.__call__", "<module>",
                         "_run_code", "_run_module_as_main"], main
