"""The project's own set-up scripts (hack/py314-rootfs, hack/cluster) under concurrency and after failures.

The scripts run for real, as root, against a private $WAND_CACHE; only their slow steps are stand-ins: a
debootstrap (and chroot) on PATH that writes a tiny root in a second, mounts what a failing debootstrap
leaves mounted and fails on request; for hack/cluster, a copy of hack/ whose Kubernetes build, sid packages,
certificates and image build are stand-ins, run in private mount and network namespaces (its own /run, no
ports, no bridge): the shared cluster and the shared cache are never touched. What is tested is the scripts'
own locking, clean-up and retry. A few seconds each.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap

import pytest

from procs import REPO, default_signals, wait_for

pytestmark = pytest.mark.provision


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the provisioning tests need root (mounts, namespaces)")
        pytest.skip("the provisioning tests need root (mounts, namespaces)")


def mounts_under(path):
    path = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [m for m in points if m == path or m.startswith(path + "/")]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def write_exe(path, text):
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip())
    os.chmod(path, 0o755)


# ------------------------------------------------------------------------------------------- hack/py314-rootfs

DEBOOTSTRAP = r"""
    #!/bin/bash
    # debootstrap stand-in: [--options] SUITE TARGET MIRROR. Logs its calls to $STUB/calls, notes any overlap
    # with another call in $STUB/overlaps, and fails (leaving mounts, as a real failing one does) while
    # $STUB/failures holds a count above 0.
    set -u
    target=${@: -2:1}
    echo "start $$" >> "$STUB/calls"
    [ -e "$STUB/running" ] && echo "overlap with $(cat "$STUB/running")" >> "$STUB/overlaps"
    echo $$ > "$STUB/running"
    mkdir -p "$target/usr/bin" "$target/etc/ssl/certs" "$target/proc"
    echo $$ > "$target/.owner"
    sleep 1   # a real one takes minutes: long enough for a second run to step on it
    [ "$(cat "$target/.owner" 2>/dev/null)" = $$ ] || echo "target clobbered under $$" >> "$STUB/overlaps"
    rm -f "$STUB/running"
    n=$(cat "$STUB/failures" 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
      echo $((n - 1)) > "$STUB/failures"
      # what a failing debootstrap leaves: a mount in the target, another on top of it, one of them busy
      mount -t tmpfs wand-test "$target/proc" && mkdir -p "$target/proc/sys" \
        && mount -t tmpfs wand-test "$target/proc/sys"
      (cd "$target/proc/sys" && exec setsid sleep 300) </dev/null >/dev/null 2>&1 &
      echo $! >> "$STUB/holders"
      echo "E: stand-in failure" >&2
      exit 1
    fi
    for v in 3.14 3.13; do printf '#!/bin/sh\n' > "$target/usr/bin/python$v"; chmod 755 "$target/usr/bin/python$v"; done
"""


@pytest.fixture
def rootfs_env(tmp_path):
    """Run hack/py314-rootfs against a private cache with the stand-in debootstrap: run() -> Popen."""
    stub, bin_dir, cache = tmp_path / "stub", tmp_path / "bin", tmp_path / "cache"
    for d in (stub, bin_dir):
        d.mkdir()
    write_exe(bin_dir / "debootstrap", DEBOOTSTRAP)
    write_exe(bin_dir / "chroot", '#!/bin/sh\necho "chroot $*" >> "$STUB/chroot-calls"\n')
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), WAND_CACHE=str(cache), STUB=str(stub))
    started = []

    def run():
        proc = subprocess.Popen([os.path.join(REPO, "hack", "py314-rootfs")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    env_ns = type("RootfsEnv", (), {})()
    env_ns.run, env_ns.stub, env_ns.cache, env_ns.debootstrap = run, stub, cache, str(bin_dir / "debootstrap")
    env_ns.calls = lambda: (stub / "calls").read_text().splitlines() if (stub / "calls").exists() else []
    env_ns.overlaps = lambda: (stub / "overlaps").read_text() if (stub / "overlaps").exists() else ""
    yield env_ns
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    holders = (stub / "holders").read_text().split() if (stub / "holders").exists() else []
    for pid in holders:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    for m in mounts_under(tmp_path):
        subprocess.run(["umount", "-l", m], check=False, capture_output=True)


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_two_rootfs_builds_at_once_build_it_once(rootfs_env):
    first, second = rootfs_env.run(), rootfs_env.run()
    results = [finish(first), finish(second)]
    for rc, out, err in results:
        assert rc == 0, err
        assert out.strip().splitlines()[-1] == str(rootfs_env.cache / "py314-rootfs")
    assert rootfs_env.overlaps() == ""
    assert len(rootfs_env.calls()) == 1, rootfs_env.calls()  # the one that waited found it built
    assert any("waiting for another run" in err for _, _, err in results)
    assert not (rootfs_env.cache / "py314-rootfs.tmp").exists()


def test_a_failed_debootstrap_is_unmounted_removed_and_retried_once(rootfs_env):
    (rootfs_env.stub / "failures").write_text("1")
    rc, out, err = finish(rootfs_env.run())
    assert rc == 0, err
    assert "retrying the build once" in err
    assert len(rootfs_env.calls()) == 2
    assert mounts_under(rootfs_env.cache) == []
    assert os.path.isfile(str(rootfs_env.cache / "py314-rootfs" / "usr" / "bin" / "python3.14"))


def test_two_failures_give_up_with_nothing_left_behind(rootfs_env):
    (rootfs_env.stub / "failures").write_text("2")
    rc, out, err = finish(rootfs_env.run())
    assert rc == 1
    assert err.strip().splitlines()[-1] == "error: building the Python 3.14 rootfs failed twice (see above)"
    assert mounts_under(rootfs_env.cache) == []
    assert not (rootfs_env.cache / "py314-rootfs.tmp").exists() and not (rootfs_env.cache / "py314-rootfs").exists()


def test_a_run_after_one_killed_mid_build_cleans_its_mounts(rootfs_env):
    # What a killed run (SIGKILL: no clean-up of its own) leaves: /proc-like mounts in the temporary root,
    # one on top of another, one busy.
    (rootfs_env.stub / "failures").write_text("1")
    subprocess.run([rootfs_env.debootstrap, "sid", str(rootfs_env.cache / "py314-rootfs.tmp"), "http://mirror"],
                   env=dict(os.environ, STUB=str(rootfs_env.stub)), capture_output=True, timeout=30)
    assert len(mounts_under(rootfs_env.cache)) == 2  # the stand-in left them, as a killed run would
    rc, out, err = finish(rootfs_env.run())
    assert rc == 0, err
    assert mounts_under(rootfs_env.cache) == []
    assert os.path.isfile(str(rootfs_env.cache / "py314-rootfs" / "usr" / "bin" / "python3.13"))


# ------------------------------------------------------------------------------------------------ hack/cluster

BUILD_K8S = r"""
    #!/bin/bash
    # build-k8s stand-in: notes a start while an earlier build still runs, then "compiles" like
    # `timeout 3600 go build` does: in a process group of its own, for minutes.
    set -u
    for p in $(cat "$STUB/build-pids" 2>/dev/null); do
      if [ -d /proc/$p ] && [ "$(cut -d' ' -f3 /proc/$p/stat)" != Z ]; then
        echo "build $$ while $p runs" >> "$STUB/overlaps"
      fi
    done
    echo $$ >> "$STUB/build-pids"
    echo "build $$" >> "$STUB/builds"
    timeout 300 sleep 300 &
    echo $! >> "$STUB/build-pids"
    sleep 0.2; pgrep -P $! >> "$STUB/build-pids"
    wait
"""
IMAGES = r"""
    #!/bin/bash
    # images stand-in: fails, once the Kubernetes build of the same `up` is under way.
    set -u
    echo "images $$" >> "$STUB/images"
    [ -e "$STUB/images-running" ] && echo "images $$ while another runs" >> "$STUB/overlaps"
    touch "$STUB/images-running"
    for i in $(seq 100); do
      [ "$(wc -l < "$STUB/builds" 2>/dev/null || echo 0)" -ge "$(wc -l < "$STUB/images")" ] && break
      sleep 0.1
    done
    [ -e "$STUB/hang" ] && exec sleep 300   # until Ctrl-C
    sleep 0.5
    rm -f "$STUB/images-running"
    echo "stand-in image build failed" >&2
    exit 1
"""
SID_PKGS = '#!/bin/bash\nmkdir -p "$WAND_CACHE/sid-pkgs/root" && echo "$WAND_CACHE/sid-pkgs/root"\n'
PKI = '#!/bin/bash\nmkdir -p "$1" && echo "$1"\n'  # openssl's keys take seconds on a busy machine
# Private mount and network namespaces: hack/cluster's /run/wand-cluster and its lock, its ports and
# ip_forward are this test's own; the shared cluster's are not seen.
IN_NAMESPACES = ["unshare", "--mount", "--net", "--fork", "bash", "-c"]
GO_PATH = "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def cluster_copy(tmp_path):
    """A copy of hack/ whose Kubernetes build, sid packages, certificates and images are stand-ins."""
    if not (shutil.which("go", path=GO_PATH) and shutil.which("kubectl", path=GO_PATH)):
        pytest.skip("hack/cluster up needs a Go toolchain and kubectl before anything else (exit 4)")
    if not shutil.which("unshare"):
        pytest.skip("no unshare (util-linux) for private namespaces")
    hack, stub = tmp_path / "hack", tmp_path / "stub"
    shutil.copytree(os.path.join(REPO, "hack"), str(hack))
    stub.mkdir()
    write_exe(hack / "cluster.d" / "build-k8s", BUILD_K8S)
    write_exe(hack / "cluster.d" / "images", IMAGES)
    write_exe(hack / "cluster.d" / "sid-pkgs", SID_PKGS)
    write_exe(hack / "cluster.d" / "pki", PKI)
    env = dict(os.environ, WAND_CACHE=str(tmp_path / "cache"), STUB=str(stub), CLUSTER=str(hack / "cluster"))
    copy = type("ClusterCopy", (), {})()
    copy.env, copy.stub = env, stub
    copy.read = lambda name: (stub / name).read_text() if (stub / name).exists() else ""
    yield copy
    for pid in copy.read("build-pids").split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def builds_left(copy):
    return [int(p) for p in copy.read("build-pids").split() if alive(int(p))]


def test_a_failed_cluster_up_leaves_nothing_running(cluster_copy):
    script = ('mount -t tmpfs wand-test /run && "$CLUSTER" up; rc=$?\n'
              '[ -e /run/wand-cluster ] && echo "RUN LEFT"; exit $rc')
    done = subprocess.run(IN_NAMESPACES + [script], env=cluster_copy.env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "building the images failed" in done.stderr and "stand-in image build failed" in done.stderr
    assert len(cluster_copy.read("builds").splitlines()) == 1  # the build was under way when the images failed
    assert wait_for(lambda: builds_left(cluster_copy) == [], timeout=5), builds_left(cluster_copy)
    assert "RUN LEFT" not in done.stdout


def test_cluster_ups_at_once_take_turns(cluster_copy):
    script = ('mount -t tmpfs wand-test /run || exit 9\n'
              '"$CLUSTER" up > "$STUB/up1.err" 2>&1 & a=$!\n'
              '"$CLUSTER" up > "$STUB/up2.err" 2>&1 & b=$!\n'
              'wait $a; echo "up1 $?"; wait $b; echo "up2 $?"\n')
    done = subprocess.run(IN_NAMESPACES + [script], env=cluster_copy.env, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)
    errs = cluster_copy.read("up1.err") + cluster_copy.read("up2.err")
    assert done.stdout.split() == ["up1", "1", "up2", "1"], done.stdout + done.stderr + errs
    assert cluster_copy.read("overlaps") == "", errs  # no second build (or image build) beside the first
    assert len(cluster_copy.read("builds").splitlines()) == 2
    assert "waiting for another run to finish" in errs
    assert wait_for(lambda: builds_left(cluster_copy) == [], timeout=5), builds_left(cluster_copy)


def test_ctrl_c_during_cluster_up_leaves_nothing_running(cluster_copy):
    (cluster_copy.stub / "hang").touch()
    script = 'mount -t tmpfs wand-test /run && exec "$CLUSTER" up'
    proc = subprocess.Popen(IN_NAMESPACES + [script], env=cluster_copy.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=default_signals)
    try:
        assert wait_for(lambda: len(builds_left(cluster_copy)) == 3 and cluster_copy.read("images"), timeout=30)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: the whole foreground group
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # unshare may end before the script's clean-up does: wait for what the clean-up must have stopped
    assert wait_for(lambda: builds_left(cluster_copy) == [], timeout=15), builds_left(cluster_copy)


def test_cluster_up_that_cannot_start_says_why_last_and_starts_nothing(cluster_copy):
    script = ('mount -t tmpfs wand-test /run && ip link set lo up || exit 9\n'
              'mkfifo "$STUB/ready"\n'
              'python3 -c "import socket, time; s = socket.socket(); s.bind((\'127.0.0.1\', 6443)); s.listen();'
              ' open(\'$STUB/ready\', \'w\').close(); time.sleep(60)" & listener=$!\n'
              'read -r _ < "$STUB/ready"; "$CLUSTER" up; echo "rc $?"; kill $listener\n')
    done = subprocess.run(IN_NAMESPACES + [script], env=cluster_copy.env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert "rc 5" in done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        "hack/cluster: cannot start: TCP port 6443 is already in use by another program"
    assert cluster_copy.read("builds") == ""


def test_a_daemon_keeps_no_descriptor_of_whoever_started_it(tmp_path):
    """hack/lib.sh detach: a lock held by the caller (`flock /tmp/wand-e2e.lock hack/test` starting dockerd) is
    not inherited by the daemon, so it ends with the caller; the daemon has its own session."""
    lock, out = tmp_path / "held.lock", tmp_path / "daemon.log"
    script = textwrap.dedent("""
        . "$1/hack/lib.sh"
        exec 7>"$2" 8<"$2"
        flock 7
        detach "$3" sleep 60
        echo $!
    """)
    started = subprocess.run(["bash", "-c", script, "-", REPO, str(lock), str(out)], capture_output=True,
                             text=True, timeout=30, preexec_fn=default_signals)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[-1])
    try:
        assert wait_for(lambda: os.path.exists("/proc/%d" % pid) and
                        open("/proc/%d/cmdline" % pid, "rb").read().startswith(b"sleep\0"), timeout=10)
        fds = sorted(int(fd) for fd in os.listdir("/proc/%d/fd" % pid))
        assert fds == [0, 1, 2], [os.readlink("/proc/%d/fd/%d" % (pid, fd)) for fd in fds]
        assert os.getsid(pid) == pid
        taken = subprocess.run(["flock", "-n", str(lock), "true"], timeout=10)
        assert taken.returncode == 0  # the caller ended: nobody holds its lock any more
    finally:
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------- hack/lib.sh apt_install

APT_GET = r"""
    #!/bin/bash
    # apt-get stand-in: logs its calls to $STUB/calls; like the real one, fails while another apt-get runs (apt's
    # lists and dpkg locks: "Unable to lock directory"), fails while $STUB/failures holds a count above 0 (as after
    # a dpkg a kill interrupted), and an install marks its packages installed, starting a daemon that keeps every
    # descriptor it was given (a maintainer script starting a service), its pid in $STUB/daemon.
    words=("$@"); verb=""; for w in "$@"; do case $w in update|install) verb=$w;; esac; done
    echo "apt-get $verb" >> "$STUB/calls"
    mkdir "$STUB/apt.lock" 2>/dev/null || { echo "E: Unable to lock directory" >&2; exit 100; }
    trap 'rmdir "$STUB/apt.lock"' EXIT
    sleep 0.3
    if [ "$verb" = install ]; then
      n=$(cat "$STUB/failures" 2>/dev/null || echo 0)
      if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$STUB/failures"; echo "E: dpkg was interrupted" >&2; exit 100; fi
      for w in "${words[@]}"; do case $w in -*|install|DPkg*) ;; *) echo installed > "$STUB/status-$w";; esac; done
      sleep 60 >/dev/null 2>&1 & echo $! > "$STUB/daemon"
    fi
"""
DPKG_QUERY = r"""
    #!/bin/bash
    # dpkg-query stand-in: -W -f=... PKG prints the status in $STUB/status-PKG (none: not known, exit 1)
    for last; do :; done
    [ -f "$STUB/status-$last" ] || exit 1
    cat "$STUB/status-$last"
"""
DPKG = r"""
    #!/bin/bash
    echo "dpkg $*" >> "$STUB/calls"
"""


@pytest.fixture
def apt_env(tmp_path):
    stub, bin_dir = tmp_path / "stub", tmp_path / "bin"
    stub.mkdir()
    bin_dir.mkdir()
    for name, text in (("apt-get", APT_GET), ("dpkg-query", DPKG_QUERY), ("dpkg", DPKG)):
        write_exe(bin_dir / name, text)
    env = dict(os.environ, STUB=str(stub), PATH="%s:%s" % (bin_dir, os.environ["PATH"]),
               WAND_APT_LOCK=str(tmp_path / "apt.lock"))
    env.pop("WAND_APT_UPDATED", None)

    class Env:
        path, lock = stub, tmp_path / "apt.lock"

        def start(self, *packages):
            return subprocess.Popen(["bash", "-c", '. "$0/hack/lib.sh"; apt_install "$@"', REPO, *packages],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=default_signals)

        def run(self, *packages):
            proc = self.start(*packages)
            out, err = proc.communicate(timeout=60)
            return proc.returncode, err

        def calls(self):
            path = stub / "calls"
            return path.read_text().splitlines() if path.exists() else []

    yield Env()
    daemon = stub / "daemon"
    if daemon.exists():
        try:
            os.kill(int(daemon.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_two_apt_installs_at_once_install_once(apt_env):
    """Before: the second run's apt-get update failed on apt's lock ("Unable to lock directory"), and hack/test
    died with it."""
    runs = [apt_env.start("pkg-a"), apt_env.start("pkg-a")]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in runs]
    assert [code for code, _err in results] == [0, 0], results
    assert apt_env.calls() == ["apt-get update", "apt-get install"]  # the second found it installed


def test_a_package_a_failed_run_left_half_installed_is_installed_again(apt_env):
    """Before: `dpkg -s` said yes for a package a killed run left unpacked, and it was never configured."""
    (apt_env.path / "status-pkg-a").write_text("unpacked")
    assert apt_env.run("pkg-a")[0] == 0
    assert apt_env.calls() == ["apt-get update", "apt-get install"]
    assert apt_env.run("pkg-a")[0] == 0 and len(apt_env.calls()) == 2  # installed now: nothing to do


def test_an_interrupted_dpkg_is_finished_and_the_install_tried_once_more(apt_env):
    (apt_env.path / "failures").write_text("1")
    code, err = apt_env.run("pkg-a")
    assert code == 0, err
    assert apt_env.calls() == ["apt-get update", "apt-get install", "dpkg --configure -a", "apt-get install"]
    (apt_env.path / "failures").write_text("2")
    code, err = apt_env.run("pkg-b")
    assert code != 0 and "apt-get install pkg-b failed" in err


def test_a_daemon_a_package_starts_does_not_keep_the_apt_lock(apt_env):
    assert apt_env.run("pkg-a")[0] == 0
    daemon = int((apt_env.path / "daemon").read_text())
    assert os.path.exists("/proc/%d" % daemon)  # still running
    taken = subprocess.run(["flock", "-n", str(apt_env.lock), "true"], timeout=10)
    assert taken.returncode == 0  # a later run would not wait on it
