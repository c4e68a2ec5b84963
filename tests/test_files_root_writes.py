"""Files root writes: the CLI's output file (kubectl_wand/outfile.py) and the agent's paths in loader mode.

Real processes: the attacker is uid 1000, the CLI runs as root, targets are real CPython 3.14 processes.
"""
from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

from procs import become

pytestmark = pytest.mark.py314


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacker runs as another uid (uid 1000)")


def as_uid(uid, fn):
    """Run ``fn`` in a child process of ``uid`` (the attacker's moves)."""
    pid = os.fork()
    if pid == 0:
        try:
            become(uid)()
            fn()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def shared_dir():
    """A directory every uid can write (not sticky: fs.protected_symlinks does not protect root here, so the
    test needs no sysctl change on this shared machine); its parent is reachable by uid 1000."""
    import pathlib
    import tempfile
    base = tempfile.mkdtemp(prefix="wand-ti-", dir="/tmp")
    os.chmod(base, 0o755)
    d = pathlib.Path(base) / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def root_only(tmp_path):
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700)
    f = d / "file"
    f.write_text("root's own\n")
    os.chmod(f, 0o600)
    return f


def one_line(done):
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def timed(wand, *args):
    started = time.monotonic()
    done = wand(*args)
    return done, time.monotonic() - started


def test_profile_never_writes_through_a_planted_symlink(spawn, wand, shared_dir, root_only):
    needs_root()
    app = spawn("busy.py")
    link = shared_dir / "x.svg"
    as_uid(1000, lambda: os.symlink(str(root_only), str(link)))
    done, took = timed(wand, "profile", "pid/%d" % app.pid, "--duration", "30s", "-o", str(link))
    assert done.returncode == 2, done.stderr
    assert "symbolic link" in one_line(done)
    assert took < 15, "refused after sampling, not before (%.1fs)" % took
    assert root_only.read_text() == "root's own\n"
    assert os.path.islink(link)


def test_profile_replaces_a_file_and_never_writes_through_it(spawn, wand, tmp_path):
    """An existing regular file of ours is replaced (said so), by rename: a hard link to it keeps its content."""
    app = spawn("busy.py")
    out = tmp_path / "p.collapsed"
    out.write_text("old\n")
    other = tmp_path / "hardlink"
    os.link(out, other)
    done = wand("profile", "pid/%d" % app.pid, "--duration", "1s", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "replaced the file" in done.stderr
    assert other.read_text() == "old\n"
    assert "busy.py" in out.read_text()
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


@pytest.mark.parametrize("where", ["missing-dir", "a-directory", "file-as-dir"])
def test_profile_output_problems_are_found_before_sampling(spawn, wand, tmp_path, where):
    app = spawn("busy.py")
    (tmp_path / "plain").write_text("x")
    path = {"missing-dir": tmp_path / "nope" / "x.svg", "a-directory": tmp_path,
            "file-as-dir": tmp_path / "plain" / "x.svg"}[where]
    done, took = timed(wand, "profile", "pid/%d" % app.pid, "--duration", "30s", "-o", str(path))
    assert done.returncode == 2, done.stderr
    one_line(done)
    assert took < 15, "found after sampling (%.1fs)" % took


def test_another_users_file_is_not_replaced(spawn, wand, shared_dir):
    needs_root()
    app = spawn("busy.py")
    theirs = shared_dir / "theirs.svg"
    as_uid(1000, lambda: theirs.write_text("uid 1000's\n"))
    done = wand("profile", "pid/%d" % app.pid, "--duration", "30s", "-o", str(theirs))
    assert done.returncode == 2 and "belongs to uid 1000" in one_line(done)
    assert theirs.read_text() == "uid 1000's\n"


# -- loader mode: the target's $TMPDIR names a path in its view only ------------------------------------------

def test_a_targets_tmpdir_never_makes_root_act_in_its_own_view(spawn, py314):
    """Loader mode (a chroot in our mount namespace): the target started with TMPDIR=/X. Root must neither
    create its placeholder in this machine's /X (a root-only directory the target never owned) nor sweep the
    wand-* directories there."""
    needs_root()
    if py314.root is None:
        pytest.skip("loader mode needs the chrooted 3.14 (the target's view differs from ours)")
    name = "/wand-ti-%s" % os.urandom(4).hex()
    host = name  # this machine's /X
    inside = py314.host(name)  # the target's /X
    os.mkdir(host, 0o700)
    os.mkdir(inside, 0o1777)
    try:
        # Named like the private directory of a target that is gone (a pid that does not run, our pid namespace):
        # a sweep of this directory would remove it.
        gone = next(p for p in range(4194000, 4194300) if not os.path.exists("/proc/%d" % p))
        dead = os.path.join(host, "wand-%d-1-%d-aaaaaaaaaaaa" % (gone, os.stat("/proc/self/ns/pid").st_ino))
        os.mkdir(dead, 0o700)
        before = sorted(os.listdir(host)), os.stat(host).st_mtime_ns
        app = spawn("sleeper.py", "0", env={"TMPDIR": name})
        from kubectl_wand.agent import main
        result = main.handle({"op": "exec", "pid": app.pid, "code": "6 * 7", "timeout": 10})
        assert result["status"] == "ok" and result["value"] == "42", result
        assert (sorted(os.listdir(host)), os.stat(host).st_mtime_ns) == before, os.listdir(host)
        assert os.path.isdir(dead)
    finally:
        shutil.rmtree(host, ignore_errors=True)
        shutil.rmtree(inside, ignore_errors=True)
