"""stack and profile against real CPython 3.14 processes: the agent's ops in-process, the sampler as it runs
beside a target, and every output format computed from a real profile."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from procs import APPS, REPO, become, default_signals, read_line
from kubectl_wand import profiles, stackview
from kubectl_wand.agent import observe, procfs, runtime
from kubectl_wand.agent.main import handle

pytestmark = pytest.mark.py314
CHAIN = ["storage_read", "service_lookup", "handle_request", "<module>"]


def line_of(app, text):
    with open(os.path.join(APPS, app)) as f:
        return next(n for n, line in enumerate(f, 1) if text in line)


def only(result):
    assert result["status"] == "ok", result
    assert len(result["processes"]) == 1
    return result["processes"][0]


def functions(frames):
    return [f["function"] for f in frames]


def sampler_children():
    """Samplers still running under this test process (none may outlive an op)."""
    found = []
    for pid in procfs.all_pids():
        try:
            proc = procfs.Proc(pid)
        except (ProcessLookupError, ValueError, IndexError):
            continue
        if "RemoteUnwinder" in " ".join(proc.cmdline) and proc.ppid == os.getpid():
            found.append(pid)
    return found


# -- stack ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["disabled", "audit-hook"])
def test_stack_shows_the_blocked_chain_and_the_named_thread_where_injection_cannot(spawn, how):
    if how == "disabled":
        app = spawn("layers.py", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"})
        refused = handle({"op": "exec", "pid": app.pid, "code": "1", "timeout": 2})
        assert refused["status"] == "error" and refused["kind"] == "disabled", refused
    else:
        app = spawn("layers.py", "3600", "--refuse-scripts")
    entry = only(handle({"op": "stack", "pid": app.pid}))
    assert entry["pid"] == app.pid and entry["python"].startswith("3.14")
    threads = {t["name"]: t for t in entry["threads"]}
    main = threads["MainThread"]
    assert entry["threads"][0] is main and main["main"] and main["tid"] == app.pid
    assert functions(main["frames"]) == CHAIN  # innermost first
    assert main["frames"][0]["line"] == line_of("layers.py", "time.sleep(seconds)")
    assert main["frames"][0]["file"].endswith("/layers.py")
    assert main["state"] == "sleeping" and main["syscall"] in ("clock_nanosleep", "nanosleep")
    assert main["gil"] is False
    hot = threads["hot-worker"]
    assert hot["tid"] != app.pid and hot["comm"] == "hot-worker"
    # The whole chain, as py-spy shows it (3.14's reader alone stops at Thread.run: tests/test_fidelity.py)
    assert functions(hot["frames"])[-4:] == ["hot_worker", "Thread.run", "Thread._bootstrap_inner",
                                              "Thread._bootstrap"]
    assert entry["gil_known"] is True and entry["gil_holder"] in (hot["tid"], None)
    text = stackview.render_process(entry, pod="web-1")
    assert text.startswith("Process %d in pod web-1: " % app.pid)
    assert 'Thread %d "MainThread" (sleeping in %s)' % (app.pid, main["syscall"]) in text
    assert 'Thread %d "hot-worker" (' % hot["tid"] in text
    lines = text.splitlines()
    at = lines.index("    storage_read (%s:%d)" % (main["frames"][0]["file"], main["frames"][0]["line"]))
    assert [line.split()[0] for line in lines[at:at + 4]] == CHAIN
    assert app.alive()


def test_stack_of_a_thread_that_moves_all_the_time_still_has_its_outer_frames(spawn):
    # The reader and the walker read a running thread at two moments: its depth and line differ between them.
    # The frames past the C call (Thread.run's) are the same in both; every read must still show them.
    app = spawn("churn.py")
    for _ in range(30):
        entry = only(handle({"op": "stack", "pid": app.pid}))
        churner = next(t for t in entry["threads"] if t["name"] == "churner")
        assert churner["cut"] is None, churner
        assert functions(churner["frames"])[-4:] == ["churn", "Thread.run", "Thread._bootstrap_inner",
                                                     "Thread._bootstrap"], churner


def test_stack_async_shows_the_task_tree_with_names(spawn):
    app = spawn("async_tree.py")
    entry = only(handle({"op": "stack", "pid": app.pid, "async": True}))
    assert entry["asyncio"] is True
    tasks = {t["name"]: t for t in entry["tasks"]}
    assert {"worker-0", "worker-1", "fetch-0-a", "fetch-0-b", "fetch-1-a", "fetch-1-b"} <= set(tasks)
    assert [w["task"] for w in tasks["fetch-1-b"]["awaited_by"]] == [tasks["worker-1"]["id"]]
    assert functions(tasks["fetch-0-a"]["frames"]) == ["sleep", "fetch"]
    main_task = tasks["worker-0"]["awaited_by"][0]["task"]
    assert functions(tasks["worker-0"]["awaited_by"][0]["frames"]) == ["main"]
    tree = stackview.render_tasks(entry)
    assert tree[0] == "asyncio tasks:"
    assert tree[1] == "└── (T) %s" % next(t["name"] for t in entry["tasks"] if t["id"] == main_task)
    depth = {line.split("(T) ")[1]: len(line) - len(line.lstrip("│├└─ ")) for line in tree if "(T) " in line}
    assert depth["worker-0"] < depth["fetch-0-a"] == depth["fetch-0-b"]
    worker_at = next(i for i, line in enumerate(tree) if line.endswith("(T) worker-0"))
    fetch_at = next(i for i, line in enumerate(tree) if line.endswith("(T) fetch-0-a"))
    other_at = next(i for i, line in enumerate(tree) if line.endswith("(T) worker-1"))
    assert worker_at < fetch_at < other_at or other_at < worker_at < fetch_at  # fetch-0-a under worker-0
    assert any(line.strip("│ ").startswith("└── fetch ") for line in tree)


def test_stack_async_without_asyncio(spawn):
    app = spawn("sleeper.py")
    entry = only(handle({"op": "stack", "pid": app.pid, "async": True}))
    assert entry["asyncio"] is False and entry["tasks"] == []
    assert "asyncio is not loaded" in stackview.render_process(entry)


def test_stack_refusals_are_one_line_with_the_fix(spawn):
    old = spawn("busy.py", version="3.13")
    result = handle({"op": "stack", "pid": old.pid})
    assert result["status"] == "error" and result["kind"] == "version"
    assert "3.13" in result["error"] and "3.14+" in result["error"] and "\n" not in result["error"]
    assert handle({"op": "stack", "pid": 1})["kind"] in ("not-python", "permission")
    assert handle({"op": "stack", "pid": 2 ** 22 + 7})["kind"] == "not-found"


def test_stack_without_permission_names_the_fix(spawn, py314):
    if os.geteuid() != 0:
        pytest.skip("needs root to start a target as another uid")
    system = shutil.which("python3", path="/usr/bin:/bin")
    if not system:
        pytest.skip("no system python3 that another user can run")
    app = spawn("sleeper.py", user=1000) if py314.root else spawn(
        "sleeper.py", argv=["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", py314.exe,
                            py314.app("sleeper.py")])
    code = "import json; from kubectl_wand.agent.main import handle; print(json.dumps(handle(%r)))" % (
        {"op": "stack", "pid": app.pid},)
    done = subprocess.run([system, "-c", code], capture_output=True, text=True, timeout=60, preexec_fn=become(1001),
                          cwd="/", env={"PYTHONPATH": REPO})
    result = json.loads(done.stdout)
    assert result["status"] == "error" and result["kind"] == "permission", result
    assert "CAP_SYS_PTRACE" in result["error"]


# -- the reader's code, compiled once by the target's interpreter (runtime.TargetRuntime.compiled) ----------

class DictCache:
    """usercache's interface (read, write) over a dict."""

    def __init__(self):
        self.files, self.writes = {}, 0

    def read(self, name):
        return self.files.get(name)

    def write(self, name, data):
        self.files[name] = data
        self.writes += 1
        return True


def no_interpreter_run(*args, **kw):
    raise AssertionError("the reader was compiled again: %r" % (args,))


def test_stack_from_the_kept_compiled_reader_reads_what_the_source_reads(spawn, monkeypatch):
    app = spawn("layers.py")
    cache = DictCache()
    first = only(handle({"op": "stack", "pid": app.pid}, code_cache=cache))
    (name,) = cache.files
    assert name.startswith("compiled-") and cache.writes == 1
    monkeypatch.setattr(runtime.TargetRuntime, "run", no_interpreter_run)  # now only the kept code may serve
    kept = only(handle({"op": "stack", "pid": app.pid, "async": True}, code_cache=cache))
    monkeypatch.undo()
    source = only(handle({"op": "stack", "pid": app.pid, "async": True}))
    assert cache.writes == 1
    for entry in (first, kept):
        assert "error" not in entry, entry
        main = entry["threads"][0]
        assert main["name"] == "MainThread" and functions(main["frames"]) == CHAIN
        assert sorted(t["name"] for t in entry["threads"]) == sorted(t["name"] for t in source["threads"])
        hot = next(t for t in entry["threads"] if t["name"] == "hot-worker")
        assert functions(hot["frames"])[-3:] == ["Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"]
    assert kept["threads"][0]["frames"] == source["threads"][0]["frames"]
    assert kept["asyncio"] == source["asyncio"] is False and kept["tasks"] == source["tasks"] == []


def test_kept_reader_code_is_used_only_for_the_same_binary_and_source(spawn):
    app = spawn("sleeper.py")
    rt = runtime.TargetRuntime(procfs.Proc(app.pid))
    cache = DictCache()
    code = rt.compiled(observe.sampler_source(), cache)
    assert code and rt.compiled(observe.sampler_source(), cache) == code and cache.writes == 1
    (name, data), = cache.files.items()
    key = data[:-len(code)]
    for stale in (b"(1, 2, 3, 4, 5)" + key[key.index(b"\0"):],  # another binary (or the same one changed)
                  key[:key.index(b"\0") + 1] + b"an older reader\0"):  # another source
        cache.files[name] = stale + b"\xe3not the code"
        assert rt.compiled(observe.sampler_source(), cache) == code
        assert cache.files[name] == data
    assert rt.compiled(observe.sampler_source() + "\nX = 1\n", cache) != code  # the source is part of the key


def test_stack_reads_from_the_source_when_the_kept_code_does_not_load(spawn):
    app = spawn("sleeper.py")
    rt = runtime.TargetRuntime(procfs.Proc(app.pid))
    cache = DictCache()
    code = rt.compiled(observe.sampler_source(), cache)
    (name, data), = cache.files.items()
    cache.files[name] = data[:-len(code)] + b"\x00 not marshal data"  # the right key, code that does not load
    entry = only(handle({"op": "stack", "pid": app.pid}, code_cache=cache))
    assert "error" not in entry, entry
    assert functions(entry["threads"][0]["frames"]) == ["wait_here", "<module>"]
    assert not sampler_children()


def test_cli_keeps_the_compiled_reader_private_in_the_users_cache(spawn, wand, tmp_path, monkeypatch):
    monkeypatch.setenv("WAND_CACHE", str(tmp_path / "cache"))
    app = spawn("sleeper.py")
    outputs = []
    for _ in range(2):
        done = wand("stack", "pid/%d" % app.pid)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and "wait_here" in outputs[0]
    (name,) = os.listdir(tmp_path / "cache")
    assert name.startswith("compiled-")
    assert oct(os.stat(tmp_path / "cache").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "cache" / name).st_mode & 0o777) == "0o600"


# -- profile -------------------------------------------------------------------------------------------------

def test_profile_attributes_the_hot_function_in_every_format(spawn):
    app = spawn("layers.py", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"})
    progress = []
    entry = only(handle({"op": "profile", "pid": app.pid, "rate": 100, "duration": 2}, emit=progress.append))
    prof = entry["profile"]
    assert prof["pid"] == app.pid and prof["stopped_early"] is None and prof["errors"] == 0
    assert 0 < prof["samples"] <= 200 and prof["duration"] >= 2.0
    assert prof["achieved_rate"] == pytest.approx(prof["samples"] / prof["duration"], rel=0.01)
    assert {s["thread"] for s in prof["stacks"]} == {"hot-worker"}  # the sleeping main thread is idle
    partial = [p["partial"] for p in progress if "partial" in p]
    progress = [p for p in progress if "progress" in p]
    assert progress and all(set(p["progress"]) >= {"samples", "errors"} for p in progress)
    # what was counted so far, about every second: the CLI keeps the last one of a pod that goes away
    assert partial and all(p["pid"] == app.pid and p["profile"]["stopped_early"] == "partial" for p in partial)
    assert 0 < partial[-1]["profile"]["samples"] <= prof["samples"]
    assert profiles.top(profiles.merge([("web-1", partial[-1])]), lines=False)[0]["function"] == "crunch"
    merged = profiles.merge([("web-1", entry)])
    assert merged["total"] == prof["recorded"] and merged["samples"] == prof["samples"]

    rows = profiles.top(merged)
    assert rows[0]["function"] == "crunch" and rows[0]["own_pct"] > 25
    by_function = profiles.top(merged, lines=False)
    assert by_function[0]["function"] == "crunch" and by_function[0]["own_pct"] > 50
    worker = next(r for r in by_function if r["function"] == "hot_worker")
    assert worker["total_pct"] == pytest.approx(100.0, abs=0.01) and worker["line"] is None

    collapsed = profiles.to_collapsed(merged).splitlines()
    counts = [(line.rsplit(" ", 1)[0].split(";"), int(line.rsplit(" ", 1)[1])) for line in collapsed]
    assert sum(c for _, c in counts) == merged["total"]
    assert all(chain[0].startswith("Thread._bootstrap (") for chain, _ in counts)  # root first
    assert sum(c for chain, c in counts if chain[-1].startswith("crunch (")) > merged["total"] / 2

    doc = json.loads(json.dumps(profiles.to_speedscope(merged)))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames, (sampled,) = doc["shared"]["frames"], doc["profiles"]
    assert sampled["type"] == "sampled" and sampled["unit"] == "seconds"
    assert len(sampled["samples"]) == len(sampled["weights"])
    assert all(0 <= i < len(frames) for stack in sampled["samples"] for i in stack)
    assert sampled["endValue"] == pytest.approx(sum(sampled["weights"]))
    hot = sum(w for stack, w in zip(sampled["samples"], sampled["weights"]) if frames[stack[-1]]["name"] == "crunch")
    assert hot > sampled["endValue"] / 2
    assert frames[sampled["samples"][0][0]]["name"] == "Thread._bootstrap"

    svg = ET.fromstring(profiles.to_svg(merged, title="layers", lines=False))
    ns = "{http://www.w3.org/2000/svg}"
    tips = [t.text for t in svg.iter(ns + "title")]
    crunch = [t for t in tips if t.startswith("crunch (")]
    assert len(crunch) == 1 and float(crunch[0].rsplit(", ", 1)[1].rstrip("%")) > 50
    assert any(t.text and t.text.startswith("crunch") for t in svg.iter(ns + "text"))
    assert profiles.to_svg(merged) == profiles.to_svg(merged)  # deterministic
    assert sampler_children() == [] and app.alive()


def test_profile_idle_and_gil(spawn):
    app = spawn("layers.py")
    idle = only(handle({"op": "profile", "pid": app.pid, "rate": 50, "duration": 1, "idle": True}))["profile"]
    main = [s for s in idle["stacks"] if s["thread"] == "MainThread"]
    assert [idle["frames"][i]["function"] for i in main[0]["frames"]] == CHAIN
    assert sum(s["count"] for s in main) == idle["samples"]  # sleeping at every sample
    gil = only(handle({"op": "profile", "pid": app.pid, "rate": 50, "duration": 1, "gil": True}))["profile"]
    assert gil["gil"] is True and {s["thread"] for s in gil["stacks"]} == {"hot-worker"}
    assert sum(s["count"] for s in gil["stacks"]) <= gil["samples"]  # at most one holder per sample


def test_profile_stop_event_ends_early_with_a_partial_profile(spawn):
    app = spawn("layers.py")
    stop = threading.Event()

    def emit(event):  # the user pressed Ctrl-C once progress showed samples
        if event.get("progress", {}).get("samples", 0) > 0:
            stop.set()

    entry = only(handle({"op": "profile", "pid": app.pid, "rate": 100, "duration": 120}, emit=emit, stop=stop))
    prof = entry["profile"]
    assert prof["stopped_early"] == "eof" and prof["samples"] > 0 and prof["duration"] < 60
    merged = profiles.merge([(None, entry)])
    assert profiles.top(merged)[0]["function"] == "crunch"
    assert sampler_children() == [] and app.alive()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sampler_reports_what_it_has_on_a_signal(spawn, sig):
    app = spawn("layers.py")
    argv, env = runtime.TargetRuntime(procfs.Proc(app.pid)).command(
        ["-c", observe.sampler_source(), "profile", str(app.pid), "--rate", "100", "--duration", "120"])
    sampler = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/",
                               preexec_fn=default_signals)
    try:
        first = json.loads(read_line(sampler.stdout, 30))
        assert first["progress"]["samples"] > 0
        sampler.send_signal(sig)
        lines = sampler.communicate(timeout=30)[0].decode().splitlines()
        final = json.loads(lines[-1])["profile"]
        assert final["stopped_early"] == "signal" and final["samples"] >= first["progress"]["samples"]
        assert final["stacks"] and sampler.returncode == 0
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait(10)
    assert app.alive()


def test_profile_of_a_target_that_exits_keeps_what_was_collected(spawn):
    app = spawn("layers.py")

    def emit(event):
        if event.get("progress", {}).get("samples", 0) > 0 and app.alive():
            app.stop()

    prof = only(handle({"op": "profile", "pid": app.pid, "duration": 120}, emit=emit))["profile"]
    assert prof["stopped_early"] == "exited" and prof["samples"] > 0 and prof["stacks"]


def test_profile_merges_replicas_pod_by_pod(spawn):
    apps = [spawn("layers.py"), spawn("layers.py")]
    entries = [only(handle({"op": "profile", "pid": a.pid, "rate": 50, "duration": 1})) for a in apps]
    sources = [("web-a", entries[0]), ("web-b", entries[1]), ("web-c", {"pid": 9, "kind": "runtime", "error": "x"})]
    merged = profiles.merge(sources)
    assert merged["total"] == sum(e["profile"]["recorded"] for e in entries)
    assert [s["pod"] for s in merged["sources"]] == ["web-a", "web-b"]
    assert profiles.top(merged, lines=False)[0]["function"] == "crunch"
    assert not any(f["kind"] == "pod" for f in merged["frames"])
    per_pod = profiles.merge(sources, per_pod=True, threads=True)
    roots = {}
    for line in profiles.to_collapsed(per_pod).splitlines():
        chain, count = line.rsplit(" ", 1)
        roots[chain.split(";")[0]] = roots.get(chain.split(";")[0], 0) + int(count)
        assert chain.split(";")[1] == "thread hot-worker"
    assert roots == {"pod web-a": entries[0]["profile"]["recorded"], "pod web-b": entries[1]["profile"]["recorded"]}
    assert all(not r["function"].startswith(("pod ", "thread ")) for r in profiles.top(per_pod))


def test_profile_bad_input_is_one_line(spawn):
    app = spawn("sleeper.py")
    for request, word in (({"rate": 0}, "--rate"), ({"rate": "fast"}, "numbers"), ({"duration": -1}, "--duration")):
        result = handle(dict(request, op="profile", pid=app.pid))
        assert result["status"] == "error" and result["kind"] == "usage" and word in result["error"]
        assert "\n" not in result["error"]


def test_sampler_json_without_the_json_module_round_trips():
    import io
    from kubectl_wand.agent.passengers import sampler

    class Out:
        buffer = io.BytesIO()
        flush = staticmethod(lambda: None)

    data = {"names": ['quote " back \\ nl \n tab \t ctl \x01', "é 😀", "lone \udc80", ""], "n": [-3, 2.5, 1e-7],
            "flags": [True, False, None], "nested": {"7": [[]]}}
    sampler.emit(Out, data)
    assert json.loads(Out.buffer.getvalue().decode("utf-8")) == data
    assert Out.buffer.getvalue().endswith(b"}\n") and Out.buffer.getvalue().count(b"\n") == 1
