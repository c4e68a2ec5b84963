"""Time from the command to the first prompt, on a pod of the real cluster: `kubectl wand pdb POD` against
`kubectl exec -it POD -- python3 -m pdb -p 1` (CPython's own), `kubectl wand exec-py -it POD` against `kubectl
exec -it POD -- python3`; interleaved rounds, medians with their quartiles; the parts that set the floor
(kubectl exec -it with a Python, pdb's import, this CLI's start) and where ours spends its time (the CLI's own
events, read by a driver that wraps it); and where the main thread is blocked (a sleeping main thread),
whether each answers within 15 s.

  ours / python -m pdb -p (first prompt, pod)     <= 1.2 (the target; see docs/verbs/pdb.md for the floor)
  ours answers where the main thread is blocked    (pdb -p never does)

Run under the cluster lock: flock /tmp/wand-e2e.lock .venv/bin/python bench/bench_pdb.py [--rounds 7]
Makes deploy/pdb-bench and deploy/pdb-bench-sleep in wand-e2e, deletes them after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from ptyterm import Term  # noqa: E402

NS = "wand-e2e"
KUBECONFIG = os.environ.get("KUBECONFIG") or "/root/.cache/kubectl-wand/cluster/etc/admin.kubeconfig"
ENV = dict(os.environ, KUBECONFIG=KUBECONFIG, PYTHONPATH=REPO)


def kubectl(*args, check=True, timeout=180, input=None):
    return subprocess.run(["kubectl", "-n", NS] + list(args), env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=check, input=input)


def deploy(name, command):
    import json
    image = kubectl("get", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                          {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                           "command": command}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    kubectl("rollout", "status", "deploy/" + name, "--timeout=150s")
    while True:
        pods = kubectl("get", "pods", "-l", "app=" + name, "--field-selector=status.phase=Running", "-o",
                       "jsonpath={.items[*].metadata.name}").stdout.split()
        if len(pods) == 1:
            return pods[0]
        time.sleep(0.5)  # the old pod of a re-applied Deployment is still terminating


def settled(pod, wait=5.0):
    """Until no process of an earlier round here names ``pod`` (its kubectl execs, a CLI still ending), at most
    ``wait`` seconds: a round must not pay for the previous one's teardown (seen: 30-50 ms, to whichever case
    came next)."""
    end = time.monotonic() + wait
    while time.monotonic() < end and subprocess.run(["pgrep", "-f", pod], capture_output=True).stdout.split():
        time.sleep(0.05)


def first_prompt(argv, prompt=r"\(Pdb\) ", leave="q", wait=30.0, env=None):
    """Seconds to the first prompt, or None when none came within ``wait``; the session is left."""
    started = time.monotonic()
    term = Term(argv, env=env or ENV, cwd=REPO)
    try:
        term.expect(prompt, wait)
        took = time.monotonic() - started
        term.line(leave)
        term.wait(30)
        return took
    except AssertionError:
        return None
    finally:
        term.close()


# Runs the CLI with a few of its functions wrapped to note when each step happened (seconds after the command
# started): the early call's spawns, the API read, the agent's lines, the terminal's launcher being waited for.
# Each is wrapped when its module is first imported (an import hook), so the CLI imports what it imports when it
# does: importing them ahead would move the early call's spawn (quickstart.py runs before the command line's
# modules are imported).
TIMELINE_DRIVER = r"""
import importlib.abc, importlib.machinery, os, sys, time
t0 = float(os.environ["WAND_BENCH_T0"])
out = open(os.environ["WAND_BENCH_EVENTS"], "a")
def mark(what):
    out.write("%.4f %s\n" % (time.time() - t0, what)); out.flush()
mark("CLI's Python running")
def wrap(owner, name, before=None, after=None):
    real = getattr(owner, name)
    def wrapped(*a, **k):
        if before: mark(before(a) if callable(before) else before)
        result = real(*a, **k)
        if after: mark(after(result) if callable(after) else after)
        return result
    setattr(owner, name, wrapped)
def spawning(args):
    if "exec" in args[0] and "-t" in args[0]:
        return "session: spawning its one kubectl exec -it (agent and client)"
    if "exec" in args[0]:
        return "spawning a kubectl exec -i (the lifeline, once the prompt showed)"
    return "spawning kubectl " + " ".join(a for a in args[0][1:] if not a.startswith("-"))[:30]
PATCHES = {
    "kubectl_wand.pipes": lambda m: wrap(m, "spawn", spawning, "spawned"),
    "kubectl_wand.transport.sessionframes": lambda m: wrap(m, "show", "session: its first output shown"),
    "kubectl_wand.kube.resolve": lambda m: wrap(m, "pods", None, "API read of the pod done"),
    "kubectl_wand.agent.protocol": lambda m: wrap(m, "decode", None, lambda r: "agent: " + ",".join(sorted(r)) + (
        " " + ",".join(sorted(r["event"])) if "event" in r else "")),
    "kubectl_wand.transport.kubectl": lambda m: wrap(m.KubectlTransport, "terminal",
                                                     "terminal: waiting for the launcher (the client)"),
    "kubectl_wand.cli": lambda m: mark("CLI's imports: the command line's module"),
}
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real = spec.loader.exec_module
        def exec_module(module):
            real(module)
            PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
from kubectl_wand.launch import main
sys.argv = ["kubectl-wand"] + sys.argv[1:]
main()
"""


def timeline(target, rounds):
    """{event: [seconds after the command, per round]} for `kubectl wand pdb target`, plus 'first prompt'."""
    import tempfile
    seen = {}
    for _ in range(rounds):
        settled(target.split("/")[-1])
        with tempfile.NamedTemporaryFile("r", suffix=".events") as events:
            t0 = time.time()
            env = dict(ENV, WAND_BENCH_T0=repr(t0), WAND_BENCH_EVENTS=events.name)
            took = first_prompt([sys.executable, "-c", TIMELINE_DRIVER, "pdb", "-q", "-n", NS, target], env=env)
            firsts = {}
            for line in events.read().splitlines():
                at, what = line.split(" ", 1)
                firsts.setdefault(what, float(at))
            if took is not None:
                firsts["first (Pdb) prompt"] = took
            for what, at in firsts.items():
                seen.setdefault(what, []).append(at)
    return seen


def spread(values):
    from benchstats import quartiles
    ok = [v for v in values if v is not None]
    if not ok:
        return "no prompt"
    q1, q3 = quartiles(ok)
    missed = len(values) - len(ok)
    return "%.3f s [%.3f-%.3f]%s" % (statistics.median(ok), q1, q3, " (%d without a prompt)" % missed if missed else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    wand = [sys.executable, "-m", "kubectl_wand"]
    pod = deploy("pdb-bench", ["python3", "-c", "import time\nwhile True: time.sleep(0.01)"])
    sleeping = deploy("pdb-bench-sleep", ["python3", "-c", "import time; time.sleep(10**6)"])
    kexec = ["kubectl", "-n", NS, "exec", "-it", pod, "--"]
    cases = [  # (name, argv, prompt, how to leave): interleaved, one of each per round
        ("kubectl wand pdb POD", wand + ["pdb", "-q", "-n", NS, "pod/" + pod], r"\(Pdb\) ", "q"),
        ("kubectl exec -it POD -- python3 -m pdb -p 1", kexec + ["python3", "-m", "pdb", "-p", "1"], r"\(Pdb\) ", "q"),
        ("kubectl wand exec-py -it POD", wand + ["exec-py", "-it", "-q", "-n", NS, "pod/" + pod], r">>> ", "exit()"),
        ("kubectl exec -it POD -- python3", kexec + ["python3"], r">>> ", "exit()"),
        ("part: kubectl exec -it POD -- python3 -c print", kexec + ["python3", "-c", "print('wand-' + 'ready')"],
         r"wand-ready", ""),
        ("part: kubectl exec -it POD -- python3 -c 'import pdb'",
         kexec + ["python3", "-c", "import pdb; print('wand-' + 'ready')"], r"wand-ready", ""),
        ("part: kubectl wand --version (the CLI's start)", wand + ["--version"], r"kubectl-wand \d", ""),
    ]
    try:
        for _name, argv, prompt, leave in cases:  # warm each path once (image pages, kubectl's discovery cache)
            first_prompt(argv, prompt, leave)
        times = {name: [] for name, *_ in cases}
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name, argv, prompt, leave in cases:
                settled(pod)
                times[name].append(first_prompt(argv, prompt, leave))
            load.append(os.getloadavg()[0])
        print("time to the first prompt on a pod, %d interleaved rounds, median [quartiles]; load %.1f-%.1f"
              % (args.rounds, min(load), max(load)))
        for name, *_ in cases:
            print("  %-55s %s" % (name, spread(times[name])))
        med = {name: statistics.median([v for v in vals if v is not None] or [float("nan")])
               for name, vals in times.items()}
        pdb_ratio = med["kubectl wand pdb POD"] / med["kubectl exec -it POD -- python3 -m pdb -p 1"]
        print("  ratio pdb: %.2f (target <= 1.2); exec-py -it against python3's own prompt: %.2f" % (
            pdb_ratio, med["kubectl wand exec-py -it POD"] / med["kubectl exec -it POD -- python3"]))
        print("where kubectl wand pdb POD spends its time (median seconds after the command, %d rounds):"
              % args.rounds)
        events = timeline("pod/" + pod, args.rounds)
        for what, ats in sorted(events.items(), key=lambda kv: statistics.median(kv[1])):
            print("  %6.3f  %s" % (statistics.median(ats), what))
        blocked = subprocess.run(wand + ["pdb", "-n", NS, "pod/" + sleeping, "--timeout", "3"], env=ENV,
                                 capture_output=True, text=True, timeout=60)
        theirs_blocked = first_prompt(["kubectl", "-n", NS, "exec", "-it", sleeping, "--", "python3", "-m", "pdb",
                                       "-p", "1"], wait=15)
        said = [line for line in blocked.stderr.splitlines() if line.strip()]
        print("blocked main thread: kubectl wand pdb exit %d within 60s (%s); python -m pdb -p: %s" % (
            blocked.returncode, said[0] if said else "", "no prompt within 15s" if theirs_blocked is None
            else "prompt"))
        return 0 if pdb_ratio <= 1.2 and blocked.returncode == 5 else 1
    finally:
        kubectl("delete", "deployment", "pdb-bench", "pdb-bench-sleep", "--wait=false", check=False)


if __name__ == "__main__":
    sys.exit(main())
