"""Speed ratios on the real cluster (issue 11, "Faster listing and exec-py"); exit 1 on a missed target.

Each ratio is measured in one run against its reference, interleaved round by round (A B C, A B C, ... with the
order rotated each round), so the load of this 2-core machine hits both sides alike; the listing with debugwand,
exec-py and stack with the bare exec. One table: median, IQR,
ratio of the medians, the IQR of the per-round ratios, target.

  get processes pod/P        / debugwand 0.5.0 `wand pods --with-pids -s SVC` on the same single pod  <= 0.8
  get processes on 20 pods   / 20 bare `kubectl exec POD -- python3 -S -c pass` at once              <= 1.3
  exec-py pod/P -- pass      / bare `kubectl exec P -- python3 -c pass`                              <= 1.5
  stack pod/P                / the same bare exec                                                    <= 1.25

kubectl-wand runs as installed: its bytecode compiled first (compile_bytecode), `python -m kubectl_wand` calling
the same entry as the console script. Then where the time goes: the CLI's start-up, one API read, the bare exec, the agent's call alone (made in this
process: no CLI start), and the start of every kubectl call the CLI makes (its -v 6 lines, stamped on arrival).

The one pod is Deployment + Service `bench-one` (the pod spec of deploy/web), the 20 pods Deployment `speed20`
(bench_cluster.py's), both made here and deleted at the end. debugwand needs Python >= 3.14: it is pip-installed
(pinned, with its dependencies) into the CPython 3.14 root filesystem of hack/py314-rootfs and run chrooted with
a copy of this machine's kubectl and a flattened copy of the kubeconfig (the chroot shares the network, so the
API server on 127.0.0.1 answers). Both live under /root/.cache in the rootfs, which hack/cluster leaves out when
it packs the rootfs into the app image; the kubeconfig copy is removed when the run ends. When debugwand
cannot be installed or run here, its row says why and is skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench_cluster import BENCH_DEPLOY, NS, REPO, exec_floor, sh
from benchstats import quartiles, wand_from

ONE, TWENTY = "bench-one", "speed20"
# debugwand 0.5.0 and what pip resolved for it (2026-11, Python 3.14), installed with --no-deps: the same bytes
# on every machine, whatever PyPI serves later.
DEBUGWAND = ("debugwand==0.5.0 debugpy==1.8.22 rich==15.0.0 typer==0.29.2 markdown-it-py==4.3.0 mdurl==0.1.2 "
             "pygments==2.21.0 shellingham==1.5.4 typing-extensions==4.16.0 annotated-doc==0.0.7 pydantic==2.14.3 "
             "pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5").split()
IN_ROOT = "/root/.cache/kubectl-wand-bench"  # tar --exclude='./root/.cache' in hack/cluster.d/images
ROOT_ENV = ["PATH=%s/bin:/usr/local/bin:/usr/bin:/bin" % IN_ROOT, "HOME=/root",
            "COLUMNS=200"]  # rich would cut a long pod name to fit 80 columns


class Skip(Exception):
    """A reference that cannot be measured on this machine; the message says why and what would fix it."""


def main():
    global ONE
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--rootfs", help="the CPython 3.14 rootfs (default: what hack/py314-rootfs prints)")
    ap.add_argument("--runs", type=int, default=15, help="interleaved rounds per comparison")
    ap.add_argument("--breakdown-runs", type=int, default=9, help="rounds of the where-the-time-goes part; 0: none")
    ap.add_argument("--single", action="store_true",
                    help="only the single pod's rows (exec-py, stack, the bare exec) and the breakdown")
    ap.add_argument("--name", default=ONE, help="the one pod's Deployment and Service (default %s)" % ONE)
    ap.add_argument("--against", metavar="DIR", help="also run exec-py and stack from the kubectl-wand in DIR "
                    "(another checkout, e.g. main's) in the same rounds: rows marked [against]")
    args = ap.parse_args()
    ONE = args.name
    env = dict(os.environ, KUBECONFIG=args.kubeconfig, PYTHONPATH=REPO)
    kubectl = ["kubectl", "--kubeconfig", args.kubeconfig, "-n", NS]
    wand = [sys.executable, "-m", "kubectl_wand"]
    compile_bytecode()
    if args.against:
        import compileall
        compileall.compile_dir(os.path.join(args.against, "kubectl_wand"), quiet=1)
    print("load average at the start %.1f (a busy workload left running skews every ratio: look at `top`)"
          % os.getloadavg()[0], flush=True)
    web = json.loads(must(kubectl + ["get", "deploy/web", "-o", "json"]))
    workdir = None
    try:
        pod = make_one(kubectl, web)
        name = pod["metadata"]["name"]
        # Each comparison is interleaved with its own reference only: debugwand's heavier runs (a chroot, rich,
        # pydantic) between an exec-py and its bare exec would add their load to one side of that pair.
        cases = {
            "gp1": lambda: run(wand + ["get", "processes", "pod/" + name, "-n", NS], env, expect=name),
        }
        exec_cases = {
            "execpy": lambda: run(wand + ["exec-py", "pod/" + name, "-n", NS, "--", "pass"], env),
            "stack": lambda: run(wand + ["stack", "pod/" + name, "-n", NS], env, expect="Thread"),
            "bare": lambda: run(kubectl + ["exec", name, "--", "python3", "-c", "pass"], env),
        }
        if args.against:
            theirs = wand_from(args.against, sys.executable)
            exec_cases["execpy-against"] = lambda: run(theirs + ["exec-py", "pod/" + name, "-n", NS, "--", "pass"], env)
            exec_cases["stack-against"] = lambda: run(theirs + ["stack", "pod/" + name, "-n", NS], env, expect="Thread")
        skipped = None
        if args.single:
            cases, skipped = {}, "not measured (--single)"
        try:
            if args.single:
                raise Skip(skipped)
            workdir, debugwand = install_debugwand(args.rootfs, args.kubeconfig)
            argv = debugwand + ["pods", "--with-pids", "-n", NS, "-s", ONE]
            done = sh(argv, timeout=120)  # first run: checks it works, and warms it up
            if done.returncode != 0 or name not in done.stdout:
                raise Skip("debugwand did not list pod %s (exit %d): %s" % (name, done.returncode,
                                                                          last_line(done.stderr or done.stdout)))
            cases["dw"] = lambda: run(argv, None, expect=name)
        except (Skip, OSError, subprocess.TimeoutExpired) as exc:
            skipped = str(exc)
            print("debugwand row skipped: %s" % skipped, flush=True)
        times = interleave(cases, args.runs) if cases else {}
        times.update(interleave(exec_cases, args.runs))
        if not args.single:
            times.update(twenty_pods(kubectl, wand, env, web, args.runs))
        missed = report(times, name, skipped)
        if args.breakdown_runs > 0:
            breakdown(kubectl, wand, env, args.kubeconfig, pod, args.breakdown_runs)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        sh(kubectl + ["delete", "deploy/%s" % ONE, "svc/%s" % ONE, "deploy/%s" % TWENTY, "--ignore-not-found",
                      "--wait=false"])
    return 1 if missed else 0


def compile_bytecode():
    """kubectl_wand's bytecode in __pycache__, as `pip install .` (and krew's zipapp on its first run) leave it.

    Measured from a source checkout on a machine with PYTHONDONTWRITEBYTECODE=1 (this one), every run would
    otherwise compile each module it imports: ~45 ms per command that no installed kubectl-wand pays."""
    import compileall
    if not compileall.compile_dir(os.path.join(REPO, "kubectl_wand"), quiet=1):
        raise SystemExit("compiling kubectl_wand's bytecode failed")


# -- what is measured ------------------------------------------------------------------------------------------------
def run(argv, env, expect=None):
    """Seconds one command takes, start to exit; a failure (or output without ``expect``) ends the benchmark."""
    t = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=180)
    took = time.perf_counter() - t
    if done.returncode != 0 or expect is not None and expect.encode() not in done.stdout:
        raise SystemExit("failed (exit %d): %s\n%s%s" % (done.returncode, " ".join(argv), done.stdout.decode()[-2000:],
                                                         done.stderr.decode()[-2000:]))
    return took


def interleave(cases, rounds):
    """{name: [seconds]}: one untimed warm-up round, then ``rounds`` rounds each running every case once, the
    order rotated by one each round (no case always runs first, or always after the same one)."""
    names = list(cases)
    for n in names:
        cases[n]()
    times = {n: [] for n in names}
    for i in range(rounds):
        for n in names[i % len(names):] + names[:i % len(names)]:
            times[n].append(cases[n]())
    return times


def twenty_pods(kubectl, wand, env, web, rounds):
    """bench_cluster.py's 20-pod Deployment, under its own name: get processes against the floor."""
    image = web["spec"]["template"]["spec"]["containers"][0]["image"]
    must(kubectl + ["apply", "-f", "-"], input=BENCH_DEPLOY.replace("bench20", TWENTY).replace("IMAGE", image))
    try:
        must(kubectl + ["rollout", "status", "deploy/" + TWENTY, "--timeout=300s"], timeout=320)
        floor = ["python3", "-S", "-c", "pass"]
        times = interleave({
            "gp20": lambda: run(wand + ["get", "processes", "deploy/" + TWENTY, "-n", NS], env, expect=TWENTY),
            "floor20": lambda: exec_floor(kubectl, "app=" + TWENTY, 1, floor)[0],
            "floor20gc": lambda: exec_floor(kubectl, "app=" + TWENTY, 1, floor, {"GOGC": "off"})[0],
        }, rounds)
    finally:
        sh(kubectl + ["delete", "deploy/" + TWENTY, "--wait=false"])
    # 20 pods terminating eat the CPU the breakdown needs (as in bench_cluster.py): wait until they are gone
    sh(kubectl + ["wait", "--for=delete", "pod", "-l", "app=" + TWENTY, "--timeout=180s"], timeout=200)
    return times


ROWS = (  # (label, case, reference case, target ratio)
    ("get processes pod/P", "gp1", "dw", 0.8),
    ("  debugwand 0.5.0 wand pods --with-pids", "dw", None, None),
    ("get processes, 20 pods", "gp20", "floor20", 1.3),
    ("  floor: 20 x kubectl exec python3 -S", "floor20", None, None),
    ("  (info) that floor with GOGC=off", "floor20gc", None, None),
    ("exec-py pod/P -- pass", "execpy", "bare", 1.5),  # issue 22 (was 2.5, issue 11)
    ("stack pod/P", "stack", "bare", 1.25),  # issue 22 (was 1.5)
    ("  [against] exec-py pod/P -- pass", "execpy-against", "bare", 1.5),
    ("  [against] stack pod/P", "stack-against", "bare", 1.25),
    ("  bare kubectl exec P -- python3 -c pass", "bare", None, None),
)


def report(times, pod, skipped):
    """The table; True when a target was missed."""
    missed = False
    runs = len(times["bare"])
    print("\nspeed ratios, pod/P = pod/%s; %d interleaved rounds per comparison; load average now %.1f" % (
        pod, runs, os.getloadavg()[0]))
    print("%-42s %7s %13s %6s %13s %6s" % ("benchmark (seconds)", "median", "IQR", "ratio", "its IQR/round", "target"))
    for label, case, ref, target in ROWS:
        if case not in times:
            print("%-42s %s" % (label, "skipped: " + (skipped or "not measured")))
            continue
        med, (q1, q3) = statistics.median(times[case]), quartiles(times[case])
        line = "%-42s %7.3f %6.3f-%6.3f" % (label, med, q1, q3)
        if ref is None:
            print(line)
            continue
        if ref not in times:
            print("%s %6s %13s %6.2f  no reference: not judged" % (line, "-", "-", target))
            continue
        ratio = med / statistics.median(times[ref])
        r1, r3 = quartiles([a / b for a, b in zip(times[case], times[ref])])  # the same round's pair
        ok = ratio <= target
        missed = missed or not ok and "[against]" not in label  # the other checkout is only shown
        print("%s %6.2f %6.2f-%6.2f %6.2f  %s" % (line, ratio, r1, r3, target, "ok" if ok else "MISSED"))
    sys.stdout.flush()
    return missed


# -- the bench-one Deployment and Service ------------------------------------------------------------------------------
def make_one(kubectl, web):
    """Deployment + Service bench-one: one replica of deploy/web's pod spec (image, command, SYS_PTRACE). Returns
    its pod once it is the only one, Running and Ready."""
    spec = web["spec"]["template"]["spec"]
    port = next((p["containerPort"] for c in spec["containers"] for p in c.get("ports") or []), 8000)
    objects = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": ONE, "namespace": NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": ONE}},
                  "template": {"metadata": {"labels": {"app": ONE}}, "spec": spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": ONE, "namespace": NS},
         "spec": {"selector": {"app": ONE}, "ports": [{"name": "http", "port": 80, "targetPort": port}]}}]}
    must(kubectl + ["apply", "-f", "-"], input=json.dumps(objects))
    must(kubectl + ["rollout", "status", "deploy/" + ONE, "--timeout=300s"], timeout=320)
    deadline = time.monotonic() + 120
    while True:  # a pod of an earlier run's template may still be terminating: debugwand would list it too
        pods = json.loads(must(kubectl + ["get", "pods", "-l", "app=" + ONE, "-o", "json"]))["items"]
        ready = [p for p in pods if not p["metadata"].get("deletionTimestamp") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
        if len(pods) == 1 and ready:
            return ready[0]
        if time.monotonic() > deadline:
            raise SystemExit("deploy/%s: %d pods, %d ready after 120 s; see kubectl -n %s describe pods -l app=%s"
                             % (ONE, len(pods), len(ready), NS, ONE))
        time.sleep(0.5)


def must(argv, timeout=120, input=None):
    done = sh(argv, timeout=timeout, input=input)
    if done.returncode != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(argv), done.stderr))
    return done.stdout


def last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# -- debugwand in the CPython 3.14 rootfs --------------------------------------------------------------------------
def install_debugwand(rootfs, kubeconfig):
    """(a private directory to remove at the end, argv prefix that runs debugwand's `wand` chrooted). Installs
    what is missing (cached, keyed by the pins); raises Skip when it cannot."""
    if os.geteuid() != 0:
        raise Skip("debugwand runs chrooted in the CPython 3.14 rootfs, which needs root")
    if not rootfs:
        done = sh([os.path.join(REPO, "hack", "py314-rootfs")], timeout=2400)
        rootfs = last_line(done.stdout) if done.returncode == 0 else None
        if not rootfs:
            raise Skip("hack/py314-rootfs failed: %s" % last_line(done.stderr))
    if not os.path.exists(os.path.join(rootfs, "usr/bin/python3.14")):
        raise Skip("no python3.14 in %s; run hack/py314-rootfs" % rootfs)
    chroot = [shutil.which("chroot") or "/usr/sbin/chroot", rootfs, "/usr/bin/env", "-i"] + ROOT_ENV
    target = "%s/debugwand-%s" % (IN_ROOT, hashlib.sha256(" ".join(DEBUGWAND).encode()).hexdigest()[:12])
    if not os.path.exists(rootfs + target + "/.complete"):
        print("installing %s into %s%s" % (" ".join(DEBUGWAND), rootfs, target), flush=True)
        for old in os.listdir(rootfs + IN_ROOT) if os.path.isdir(rootfs + IN_ROOT) else []:
            if old.startswith("debugwand-"):  # other pins, or an interrupted install
                shutil.rmtree(os.path.join(rootfs + IN_ROOT, old), ignore_errors=True)
        done = sh(chroot + ["python3.14", "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-cache-dir",
                            "--root-user-action=ignore", "--no-deps", "--target", target + ".tmp"] + DEBUGWAND,
                  timeout=900)
        if done.returncode != 0:
            raise Skip("pip install debugwand==0.5.0 in the rootfs failed (network? PyPI?): %s"
                       % last_line(done.stderr))
        open(rootfs + target + ".tmp/.complete", "w").close()
        os.rename(rootfs + target + ".tmp", rootfs + target)
    # this machine's kubectl, so both tools pay the same client; it must be static to run in the chroot
    host = shutil.which("kubectl")
    if not host:
        raise Skip("kubectl not on PATH")
    host, copy = os.path.realpath(host), rootfs + IN_ROOT + "/bin/kubectl"
    st = os.stat(host)
    if not os.path.exists(copy) or (os.stat(copy).st_size, int(os.stat(copy).st_mtime)) != (st.st_size,
                                                                                             int(st.st_mtime)):
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copy2(host, copy + ".tmp")
        os.rename(copy + ".tmp", copy)
    # the kubeconfig with its certificates inlined (files it names do not exist in the chroot), removed at the end
    flat = sh(["kubectl", "--kubeconfig", kubeconfig, "config", "view", "--raw", "--flatten", "--minify"])
    if flat.returncode != 0:
        raise Skip("kubectl config view --flatten failed: %s" % last_line(flat.stderr))
    workdir = tempfile.mkdtemp(prefix="wand-bench-", dir=os.path.join(rootfs, "tmp"))  # 0700
    fd = os.open(os.path.join(workdir, "config"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(flat.stdout)
    in_root = "/" + os.path.relpath(workdir, rootfs) + "/config"
    try:
        probe = sh(chroot + ["kubectl", "version", "--client"], timeout=60)
    except OSError as exc:
        probe = subprocess.CompletedProcess([], 1, "", str(exc))
    if probe.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise Skip("this machine's kubectl (%s) does not run in the chroot (not a static binary?): %s"
                   % (host, last_line(probe.stderr)))
    return workdir, chroot + ["KUBECONFIG=" + in_root, "PYTHONPATH=" + target, "python3.14", target + "/bin/wand"]


# -- where the time goes ----------------------------------------------------------------------------------------------
def breakdown(kubectl, wand, env, kubeconfig, pod, rounds):
    """The parts, each timed alone, interleaved like the table: what is left to take out of each verb."""
    name = pod["metadata"]["name"]
    cases = {
        "python -m kubectl_wand --help (CLI start)": lambda: run(wand + ["--help"], env),
        "kubectl get --raw .../pods/P (one API read)": lambda: run(
            kubectl + ["get", "--raw", "/api/v1/namespaces/%s/pods/%s" % (NS, name)], env),
        "kubectl exec P -- python3 -S -c pass": lambda: run(kubectl + ["exec", name, "--", "python3", "-S", "-c",
                                                                         "pass"], env),
    }
    plugin = os.path.join(os.path.dirname(sys.executable), "kubectl-wand")
    if os.access(plugin, os.X_OK):
        plugin_env = dict(env, PATH=os.path.dirname(plugin) + os.pathsep + env.get("PATH", ""))
        cases["kubectl wand --help (through kubectl's plugin lookup)"] = lambda: run(
            ["kubectl", "wand", "--help"], plugin_env)
    agent_note = ""
    try:
        sys.path.insert(0, REPO)
        from kubectl_wand.kube.config import KubeFlags
        from kubectl_wand.transport.kubectl import KubectlTransport
        flags = KubeFlags({"kubeconfig": kubeconfig}, namespace=NS)

        def agent(request):
            def once():
                transport = KubectlTransport(flags, pod, [pod["spec"]["containers"][0]["name"]])
                t = time.perf_counter()
                result = transport.agent(dict(request), timeout=60)
                if result.get("status") != "ok":
                    raise SystemExit("agent %s: %s" % (request["op"], result))
                return time.perf_counter() - t
            return once
        cases["agent alone: list with CPU% (get processes')"] = agent({"op": "list", "cpu": True})
        cases["agent alone: list without CPU%"] = agent({"op": "list", "cpu": False})
        cases["agent alone: exec 'pass' (exec-py's)"] = agent({"op": "exec", "code": "pass", "timeout": 10.0,
                                                               "max_output": 1 << 20})
        cases["agent alone: stack"] = agent({"op": "stack"})
    except ImportError as exc:
        agent_note = "agent-alone rows not measured: %s" % exc
    lines = {}

    def timeline(label, argv):
        def once():
            took, marks = calls(argv, env)
            lines.setdefault(label, []).append((took, marks))
            return took
        return once
    cases["get processes pod/P -v 6"] = timeline("get processes pod/P", wand + [
        "-v", "6", "get", "processes", "pod/" + name, "-n", NS])
    cases["exec-py pod/P -- pass -v 6"] = timeline("exec-py pod/P -- pass", wand + [
        "-v", "6", "exec-py", "pod/" + name, "-n", NS, "--", "pass"])
    times = interleave(cases, rounds)
    print("\nwhere the time goes (%d interleaved rounds; seconds: median, IQR)" % rounds)
    for label, values in times.items():
        q1, q3 = quartiles(values)
        print("  %-56s %6.3f  %6.3f-%6.3f" % (label, statistics.median(values), q1, q3))
    if agent_note:
        print("  " + agent_note)
    for label, runs in lines.items():
        runs = runs[-rounds:]  # not the warm-up
        print("\n%s: when each kubectl call starts (its -v 6 line), seconds after the CLI started; medians of %d"
              % (label, len(runs)))
        keys = []
        for _took, marks in runs:
            keys += [k for k, _t in marks if k not in keys]
        for key in keys:
            starts = [dict(marks)[key] for _took, marks in runs if key in dict(marks)]
            print("  %6.3f  %s  (in %d of %d runs)" % (statistics.median(starts), key, len(starts), len(runs)))
        print("  %6.3f  exit" % statistics.median([took for took, _marks in runs]))


def calls(argv, env):
    """(seconds to exit, [(call, seconds to its -v 6 line)]): the CLI writes `+ ARGV` before each kubectl call."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    watchdog = threading.Timer(180, proc.kill)
    watchdog.start()
    marks, seen = [], {}
    try:
        for line in proc.stderr:  # stderr is line-buffered: each line arrives as it is written
            if line.startswith(b"+ "):
                words = line.decode(errors="replace").split()
                verb = "get --raw" if "--raw" in words else next((w for w in words[2:] if not w.startswith("-")
                                                                    and w not in (NS,)), "?")
                seen[verb] = seen.get(verb, 0) + 1
                marks.append(("kubectl %s #%d" % (verb, seen[verb]), time.perf_counter() - t))
        code = proc.wait(timeout=180)
    finally:
        watchdog.cancel()
    if code != 0:
        raise SystemExit("failed (exit %d): %s" % (code, " ".join(argv)))
    return time.perf_counter() - t, marks


if __name__ == "__main__":
    sys.exit(main())
