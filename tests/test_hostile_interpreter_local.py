"""A target whose interpreter another uid can change: the injector, the stack reader and pdb's client run the
target's own binary and its standard library beside it, as whoever runs kubectl wand (often root). A Python a
user installed for themselves (pyenv, uv, conda under a home) is theirs: its ``encodings`` runs at every start.
Real CPython 3.14, run by uid 1000 from a copy it owns, whose encodings package records any start as root."""
from __future__ import annotations

import os
import shutil

import pytest

from leftovers import private_dirs

pytestmark = pytest.mark.py314

# appended to the user's own encodings/__init__.py: what a user may put in their interpreter
PLANT = '''
import os as _os
if _os.geteuid() == 0:
    for _where in ("/tmp/%(mark)s", "/proc/self/root/tmp/%(mark)s"):
        try:
            _os.close(_os.open(_where, _os.O_WRONLY | _os.O_CREAT, 0o644))
        except OSError:
            pass
'''


def copied_python(py314, owner, mark):
    """(the copy's prefix here, its prefix in the target's view): the 3.14 binary and its encodings package,
    planted (PLANT), in a new directory owned by ``owner`` (uid, gid), the rest of the standard library linked
    (relative links, the same in the target's root and through /proc/PID/root)."""
    inside = "/tmp/wand-rt-userpy-%d" % os.getpid()
    prefix = py314.host(inside)
    stdlib = py314.host("/usr/lib/python3.14")
    os.makedirs(prefix + "/bin")
    os.makedirs(prefix + "/lib/python3.14")
    shutil.copy2(py314.host("/usr/bin/python3.14"), prefix + "/bin/python3.14")
    for name in os.listdir(stdlib):
        if name != "encodings":
            os.symlink("../../../../usr/lib/python3.14/" + name, prefix + "/lib/python3.14/" + name)
    shutil.copytree(stdlib + "/encodings", prefix + "/lib/python3.14/encodings")
    with open(prefix + "/lib/python3.14/encodings/__init__.py", "a") as f:
        f.write(PLANT % {"mark": mark})
    for top, dirs, files in os.walk(prefix):
        for name in [top] + [os.path.join(top, n) for n in dirs + files]:
            os.lchown(name, *owner)
    return prefix, inside


def remove_copy(py314, prefix, mark):
    shutil.rmtree(prefix, ignore_errors=True)
    for where in ("/tmp/" + mark, py314.host("/tmp/" + mark)):
        if os.path.exists(where):
            os.unlink(where)


@pytest.fixture
def group_python(py314):
    """(the interpreter's path in the target's view, the marker, the group-writable directory there): a copy
    owned by root whose encodings directory is writable by the group of gid 1000 (a shared install a team may
    write into): root's own files, but not only root's to change."""
    if os.geteuid() != 0 or not py314.root:
        pytest.skip("needs root and the py314 root filesystem (a target in a chroot)")
    mark = "wand-rt-ran-as-root-%d" % os.getpid()
    prefix, inside = copied_python(py314, (0, 1000), mark)
    try:
        os.chmod(prefix + "/lib/python3.14/encodings", 0o775)
        yield inside + "/bin/python3.14", mark, inside + "/lib/python3.14/encodings"
    finally:
        remove_copy(py314, prefix, mark)


def test_a_group_writable_interpreter_names_the_group_not_its_owner(spawn, wand, py314, group_python):
    """The refusal named the owner ("which uid 0 can change", and the fix "run the app and kubectl wand as uid
    0", which is what was done) when the group's write permission is what lets another user change it."""
    exe, mark, writable = group_python
    target = spawn("sleeper.py", argv=py314.argv([py314.app("sleeper.py")])[:-2] + [exe, py314.app("sleeper.py")])
    os.unlink(py314.host("/tmp/" + mark))  # the target's own start as root made it
    done = wand("stack", "pid/%d" % target.pid)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 4 and len(lines) == 1, done  # errors.NOT_ATTACHABLE: refused
    assert "runs from %s, which group 1000 (gid)" % writable in lines[0], lines[0]
    assert "uid 0 can change" not in lines[0] and "chmod g-w /proc/%d/root%s" % (target.pid, writable) in lines[0]
    for where in ("/tmp/" + mark, py314.host("/tmp/" + mark)):
        assert not os.path.exists(where), "the group's code ran as root: %s" % where
    assert target.alive()
    assert private_dirs(py314, target.pid) == []


@pytest.fixture
def user_python(py314):
    """(the interpreter's path in the target's view, the marker file's name): a copy of the 3.14 binary and
    its encodings package in a directory of uid 1000."""
    if os.geteuid() != 0 or not py314.root:
        pytest.skip("needs root and the py314 root filesystem (a target of uid 1000 in a chroot)")
    mark = "wand-rt-ran-as-root-%d" % os.getpid()
    prefix, inside = copied_python(py314, (1000, 1000), mark)
    try:
        yield inside + "/bin/python3.14", mark
    finally:
        remove_copy(py314, prefix, mark)


def test_root_never_runs_an_interpreter_its_user_can_change(spawn, wand, py314, user_python):
    exe, mark = user_python
    target = spawn("sleeper.py", argv=py314.argv([py314.app("sleeper.py")], user=1000)[:-2] +
                   [exe, py314.app("sleeper.py")])
    for verb in (["stack"], ["exec-py"], ["check"]):
        args = verb + ["pid/%d" % target.pid] + (["--", "1 + 1"] if verb == ["exec-py"] else [])
        done = wand(*args)
        if verb == ["check"]:
            assert done.returncode == 1 and "which uid 1000 can change" in done.stdout, done
            continue
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 4, done  # errors.NOT_ATTACHABLE: refused
        assert len(lines) == 1 and "which uid 1000 can change" in lines[0] and "run kubectl wand as uid 1000" \
            in lines[0], done.stderr
    for where in ("/tmp/" + mark, py314.host("/tmp/" + mark)):
        assert not os.path.exists(where), "the user's code ran as root: %s" % where
    assert target.alive()
    assert private_dirs(py314, target.pid) == []


def test_a_session_client_never_imports_from_the_users_directory(spawn, tmp_path):
    """pdb's and exec-py -it's clients run the target's interpreter in the user's terminal, from the directory
    the user is in. For a target in another root (a chroot: the interpreter runs through its loader, without
    -I, which would ignore PYTHONHOME) ``-c`` put that directory first on sys.path: a ``pdb.py`` anyone planted
    in /tmp ran as root when root ran `kubectl wand pdb` there."""
    import sys
    from procs import REPO
    from ptyterm import Term
    if os.geteuid() != 0:
        pytest.skip("needs root (a planted module running as root is the harm)")
    mark = tmp_path / "planted-ran"
    planted = tmp_path / "cwd"
    planted.mkdir()
    for module in ("pdb", "code", "json"):  # the first each client imports past the interpreter's start
        (planted / (module + ".py")).write_text("open(%r, 'a').write('%s\\n')\nraise SystemExit(9)\n" % (
            str(mark), module))
    target = spawn("busy.py")
    for verb, prompt in ((["pdb"], r"\(Pdb\) "), (["exec-py", "-it"], r">>> ")):
        # -P: the CLI itself is started as its installed script starts it, which puts no directory first
        term = Term([sys.executable, "-P", "-m", "kubectl_wand"] + verb + ["pid/%d" % target.pid],
                    env=dict(os.environ, PYTHONPATH=REPO), cwd=str(planted))
        try:
            try:
                term.expect(prompt, timeout=60)
            except AssertionError:
                pass  # the planted module may have ended the client: the mark says
            else:
                term.send("\x04")
                term.wait(30)
        finally:
            term.close()
        assert not mark.exists(), "%s ran a module planted in the user's directory: %s" % (verb, mark.read_text())
    assert target.alive()
