"""``stack`` and ``profile`` against py-spy's own output on the same live CPython 3.14 process (issue 22): the same
threads, the same frames in the same order with the same lines, nothing cut silently. py-spy comes from PyPI with
the test dependencies (pyproject's ``test`` extra). SVGs are checked as XML (xml.etree) here, and rendered in a
headless browser by tests/test_render_local.py."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import xml.etree.ElementTree as ET

import pytest

from procs import APPS

pytestmark = pytest.mark.py314
PYSPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
THREAD = re.compile(r'^Thread (\d+) \([^)]*\)(?:: "(.*)")?$')  # no name without the threading module
FRAME = re.compile(r"^    (.+) \((.+):(\d+)\)$")


def hostile_name():
    """HOSTILE of tests/apps/hostile_names.py (importing the app would run it)."""
    scope = {}
    with open(os.path.join(APPS, "hostile_names.py")) as f:
        source = f.read()
    exec(source[source.index("HOSTILE = ("):source.index("# CPython 3.14's stack reader")], scope)
    return scope["HOSTILE"]


def pyspy_dump(pid):
    """{tid: (name, [(function, file basename, line)])} from ``py-spy dump``."""
    if not os.path.exists(PYSPY):
        pytest.fail("py-spy is missing from the test environment (pyproject's test extra installs it)")
    out = subprocess.run([PYSPY, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    threads, current = {}, None
    for line in out.stdout.splitlines():
        m = THREAD.match(line)
        if m:
            current = threads[int(m.group(1))] = (m.group(2), [])
            continue
        m = FRAME.match(line)
        if m and current is not None:
            current[1].append((m.group(1), os.path.basename(m.group(2)), int(m.group(3))))
    assert threads, out.stdout
    return threads


def our_stack(wand, pid):
    done = wand("stack", "pid/%d" % pid, "-o", "json")
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)["items"]
    return {t["tid"]: t for t in entry["threads"]}


def settled(pid):
    """Wait until the main thread sleeps in its loop (poll), so both readers see the same stacks."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/%d/syscall" % pid) as f:
            if f.read().split()[0] in ("7", "73", "219", "128"):  # poll (x86_64), ppoll (aarch64), restarted
                return
        time.sleep(0.02)
    pytest.fail("the main thread of %d never reached its poll loop" % pid)


@pytest.fixture
def cli_chain(spawn, py314):
    """The tests/apps/cli_chain.py module run with ``python -m``, as ``python -m uvicorn`` runs under click."""
    target = spawn("cli_chain.py", argv=py314.argv(["-m", "cli_chain"]), env={"PYTHONPATH": py314.apps})
    settled(target.pid)
    return target


def test_stack_has_every_frame_py_spy_shows(cli_chain, wand):
    """Before: the main thread ended at Command.main (the reader stops where Command.__call__ was entered from C)
    and the worker at Thread.run (3.14 runs it through Context.run), with nothing marking the cut."""
    theirs = pyspy_dump(cli_chain.pid)
    ours = our_stack(wand, cli_chain.pid)
    assert set(ours) == set(theirs)
    for tid, (_name, frames) in theirs.items():
        mine = [(f["function"], os.path.basename(f["file"]), f["line"]) for f in ours[tid]["frames"]]
        assert mine == frames, (tid, mine, frames)
        assert ours[tid]["cut"] is None
    main = [f for f, _file, _line in theirs[cli_chain.pid][1]]
    assert main[-4:] == ["Command.__call__", "<module>", "_run_code", "_run_module_as_main"], main
    worker = next(frames for tid, (_n, frames) in theirs.items() if tid != cli_chain.pid)
    assert [f for f, _file, _line in worker][-2:] == ["Thread._bootstrap_inner", "Thread._bootstrap"]


def test_thread_names_are_python_s_as_py_spy_shows_them(cli_chain, wand):
    """Before: the kernel's 15-byte copy ("AnyIO worker th") shown as if it were the name."""
    theirs = pyspy_dump(cli_chain.pid)
    ours = our_stack(wand, cli_chain.pid)
    assert {tid: name for tid, (name, _f) in theirs.items()} == {tid: t["name"] for tid, t in ours.items()}
    assert "AnyIO worker thread" in {t["name"] for t in ours.values()}
    assert not any(t["name_cut"] for t in ours.values())


def test_without_python_s_names_the_kernel_s_copy_says_it_is_cut(cli_chain, monkeypatch):
    """The fallback (no runtime address: nothing read from memory): the comm, and said to be cut."""
    from kubectl_wand import stackview
    from kubectl_wand.agent import observe, profiling
    from kubectl_wand.agent.main import handle
    # profiling imports the name from observe: patched in both, whichever test imported profiling first
    monkeypatch.setattr(observe, "runtime_args", lambda rt: [])
    monkeypatch.setattr(profiling, "runtime_args", lambda rt: [])
    (entry,) = handle({"op": "stack", "pid": cli_chain.pid})["processes"]
    worker = next(t for t in entry["threads"] if not t["main"])
    assert worker["name"] == "AnyIO worker th" and worker["name_cut"] is True
    assert '"AnyIO worker th" (its first 15 bytes: the kernel\'s copy of the name)' in stackview.render_process(entry)


def test_profile_has_the_outer_frames(cli_chain, wand, tmp_path):
    out = tmp_path / "p.txt"
    done = wand("profile", "pid/%d" % cli_chain.pid, "--duration", "1s", "--idle", "--format", "collapsed",
                "-o", out)
    assert done.returncode == 0, done.stderr
    stacks = [line.rsplit(" ", 1)[0].split(";") for line in out.read_text().splitlines()]
    main = next(s for s in stacks if any(f.startswith("serve ") for f in s))
    assert [f.split(" (")[0] for f in main[:5]] == ["_run_module_as_main", "_run_code", "<module>",
                                                     "Command.__call__", "Command.main"], main
    worker = next(s for s in stacks if any(f.startswith("worker ") for f in s))
    assert [f.split(" (")[0] for f in worker[:3]] == ["Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run"]
    assert "<outer frames not read>" not in out.read_text()


def test_a_stack_that_cannot_be_completed_says_so(cli_chain, wand, monkeypatch):
    """Without the runtime's address the walk past the reader's cut cannot be made: every thread says its outer
    frames may be missing (text and JSON) instead of ending silently."""
    from kubectl_wand.agent import observe
    monkeypatch.setattr(observe, "runtime_args", lambda rt: [])
    from kubectl_wand.agent.main import handle
    result = handle({"op": "stack", "pid": cli_chain.pid})
    (entry,) = result["processes"]
    main = next(t for t in entry["threads"] if t["main"])
    assert main["cut"] and "runtime" in main["cut"]
    from kubectl_wand import stackview
    assert "outer frames may be missing" in stackview.render_process(entry)


def test_sleep_resumed_after_a_signal_is_named(cli_chain, wand):
    """A sleep interrupted by SIGSTOP/SIGCONT resumes in restart_syscall (219 on x86_64): named, not a number."""
    os.kill(cli_chain.pid, signal.SIGSTOP)
    os.kill(cli_chain.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open("/proc/%d/syscall" % cli_chain.pid) as f:
            nr = f.read().split()[0]
        if nr not in ("running",) and int(nr) in (219, 128):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the main thread did not resume in restart_syscall")
    main = our_stack(wand, cli_chain.pid)[cli_chain.pid]
    assert main["syscall"] == "restart_syscall", main
    done = wand("stack", "pid/%d" % cli_chain.pid)
    assert "sleeping in restart_syscall" in done.stdout


@pytest.fixture
def hostile(spawn):
    return spawn("hostile_names.py")


def test_names_read_badly_are_read_again_never_emitted_with_nuls(hostile, wand, tmp_path):
    """Before: 3.14's reader gave the non-ASCII HOSTILE function and file as raw UCS-2 bytes full of NULs, and
    ``profile --format svg`` wrote them into the SVG (not XML; a browser shows a parser error)."""
    HOSTILE = hostile_name()
    for tid, t in our_stack(wand, hostile.pid).items():
        for f in t["frames"]:
            assert "\x00" not in f["function"] + f["file"], (tid, f)
    functions = {f["function"] for t in our_stack(wand, hostile.pid).values() for f in t["frames"]}
    assert HOSTILE in functions  # read whole by the walker, as py-spy reads it
    for extra in ([], ["--per-pod"]):
        svg = tmp_path / "p.svg"
        done = wand("profile", "pid/%d" % hostile.pid, "--duration", "1s", "--idle", "-o", svg, *extra)
        assert done.returncode == 0, done.stderr
        ET.parse(svg)  # well-formed XML 1.0
        assert b"\x00" not in svg.read_bytes()


def test_a_frame_read_badly_without_a_second_read_is_marked_and_counted():
    from kubectl_wand.agent import observe
    sampler = {}
    exec(compile(observe.sampler_source(), "sampler.py", "exec"), sampler)

    class Info:
        thread_id = 7
        frame_info = [type("F", (), {"funcname": "ok", "filename": "/a.py", "lineno": 3})(),
                      type("F", (), {"funcname": "\x00\x00x\x00", "filename": "\x00", "lineno": 9})()]

    frames, cut, unread = sampler["thread_frames"](None, {}, Info, "no walker here")
    assert frames == [("ok", "/a.py", 3), ("<unreadable>", "<unreadable>", None)]
    assert unread == 1 and cut == "no walker here"


def test_a_deep_stack_across_data_stack_chunks_matches_py_spy(spawn, wand):
    """900 frames: past the first 16 KiB data-stack chunk, which the walker reads in one piece (older chunks are
    read frame by frame), and under _remote_debugging's 1024-frame limit."""
    app = spawn("deep.py", "900")
    theirs = pyspy_dump(app.pid)
    ours = our_stack(wand, app.pid)
    (tid,) = theirs
    mine = [(f["function"], os.path.basename(f["file"]), f["line"]) for f in ours[tid]["frames"]]
    assert len(mine) == 902 and mine == theirs[tid][1]


def test_a_profile_that_cannot_be_completed_marks_and_counts_it(cli_chain, monkeypatch):
    from kubectl_wand import profiles
    from kubectl_wand.agent import observe, profiling
    from kubectl_wand.agent.main import handle
    # profiling imports the name from observe: patched in both, whichever test imported profiling first
    monkeypatch.setattr(observe, "runtime_args", lambda rt: [])
    monkeypatch.setattr(profiling, "runtime_args", lambda rt: [])
    result = handle({"op": "profile", "pid": cli_chain.pid, "duration": 0.5, "rate": 50, "idle": True})
    (entry,) = result["processes"]
    prof = entry["profile"]
    assert prof["cut"] == prof["recorded"] > 0 and "runtime" in prof["cut_reason"]
    merged = profiles.merge([(None, entry)])
    assert merged["cut"] == prof["cut"]
    assert all(merged["frames"][s["frames"][0]]["function"] == "<outer frames not read>" for s in merged["stacks"])
