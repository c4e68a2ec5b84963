"""Reach a target in another container of the pod: run its interpreter chrooted into its root, and lend it our
private files through ``/proc/<helper>/root`` (kubectl wand --ephemeral: the agent runs in an ephemeral debug
container that shares the target's PID namespace, not its filesystem).

Measured on Kubernetes 1.34 / containerd / runc (a debug container added with ``--target`` and SYS_PTRACE):
- The debug container has CAP_SYS_PTRACE and CAP_SYS_CHROOT but not CAP_SYS_ADMIN, so ``nsenter -m`` is out.
  ``chroot /proc/PID/root`` then exec of the target's own interpreter works (17 ms): it sees the target's files
  under the paths its ``/proc/PID/maps`` names, and the app container's ``/proc`` (same PID namespace).
- The script ``sys.remote_exec`` hands the target must exist in the target's view, and its filesystem may be
  read-only. We keep the files in *our* filesystem and hand the target ``/proc/<helper>/root/tmp/wand-...``
  (the directory itself is made by private.PrivateDir, by fd, as for any target).
  Opening ``/proc/X/root`` needs ptrace-read access to X with the opener's fs credentials
  (PTRACE_MODE_READ_FSCREDS): the target has it to a process X of its own fs uid and gid, with no capability
  the target lacks, that is dumpable. Setting the uid makes a process non-dumpable; ``prctl(PR_SET_DUMPABLE,
  1)`` undoes it. Measured without it: the target's open fails (EACCES) and CPython prints "Can't open
  debugger script" into the app's stderr. So a helper process takes exactly those credentials, and a probe
  (a child with the same credentials) proves the path opens before anything is injected.
- Orphans in the shared PID namespace are reparented to its init, the app's pid 1, and stay zombies there
  (measured): the helper is always reaped by the agent. An injection still pending when the agent answers (the
  main thread blocked in C) needs its script later: the agent then stays (after answering, its streams
  closed) until the target has read and deleted the script, or LINGER seconds pass.
"""
from __future__ import annotations

import os
import select
import sys
import time

from . import procfs

CAP_SYS_CHROOT = 18
PR_SET_DUMPABLE = 4
LINGER = 3600.0          # how long a pending injection's script stays reachable after the agent answered
TMP_CANDIDATES = ("/tmp", "/var/tmp")  # ours; not /dev/shm: the pod's containers share it (it is the app's too)
# Re-exec the target's interpreter with its root as ours: the wrapper is the agent's own Python (a few ms).
CHROOT_EXEC = "import os,sys;os.chroot(sys.argv[1]);os.chdir('/');os.execv(sys.argv[2],sys.argv[2:])"


class LendProblem(Exception):
    """The target cannot be handed our files; the message says why."""


def can_chroot(pid: int, same_pidns: bool) -> bool:
    """Whether the target's interpreter can run here chrooted into its root: same PID namespace (its /proc
    then names the same pids), CAP_SYS_CHROOT, and a /proc inside its root that shows it."""
    return (same_pidns and bool(procfs.my_caps() >> CAP_SYS_CHROOT & 1)
            and os.path.isdir("/proc/%d/root/proc/%d" % (pid, pid)))


def chroot_argv(pid: int, exe_inside: str, args) -> list:
    return [sys.executable or "python3", "-I", "-S", "-c", CHROOT_EXEC, "/proc/%d/root" % pid, exe_inside,
            "-I", "-S"] + list(args)


def fs_ids(proc):
    """(fsuid, fsgid) of the target: the credentials its open() of our path is checked with."""
    uids = proc.status.get("Uid", "0 0 0 0").split()
    gids = proc.status.get("Gid", "0 0 0 0").split()
    return int(uids[-1]), int(gids[-1])


class Helper:
    """A child with the target's fs credentials, no capabilities, dumpable: the process whose root the target
    opens. It lives until ``finish()``: then, if the script is still there (a pending injection), until the
    target has deleted it or LINGER passes."""

    def __init__(self, uid, gid, directory, timeout=5.0):
        try:
            import ctypes  # noqa: F401  (checked here: the child cannot report an import error usefully)
        except ImportError as exc:
            raise LendProblem("the debug container's Python has no ctypes (%s): it cannot lend files to the "
                              "target; choose another --image" % exc)
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            code = 1
            try:
                code = helper_main(uid, gid, directory, life_r, ready_w)
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(life_r)
        self.pid, self.life = pid, life_w
        try:
            answer = read_all(ready_r, timeout)
        finally:
            os.close(ready_r)
        if answer != b"ok":
            self.finish()
            raise LendProblem("the target (uid %d) could not open files lent from the debug container: %s" % (
                uid, answer.decode("utf-8", "replace") or "the helper did not answer"))

    def finish(self):
        if self.life is not None:
            os.close(self.life)  # EOF: the helper ends (or lingers for a pending script)
            self.life = None
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def read_all(fd, timeout):
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data


# -- in the forked helper ----------------------------------------------------------------------------------------

def helper_main(uid, gid, directory, life, ready) -> int:
    # Imported here, not at the top (runtime imports this module on every local read, and shutil with bz2 and
    # lzma costs ~2 ms), and before become(): as the target's uid our own interpreter's files (under /root, say)
    # may not be readable, and the directory was then left behind.
    import shutil
    try:
        only_fds(life, ready)
        libc = become(uid, gid)
        problem = probe("/proc/%d/root%s" % (os.getpid(), directory))
    except Exception as exc:
        problem = "%s: %s" % (type(exc).__name__, exc)
    os.write(ready, (problem or "ok").encode())
    os.close(ready)
    if problem:
        return 1
    while os.read(life, 1):  # the agent writes nothing: EOF when it is done (or gone)
        pass
    linger(libc, directory, shutil)
    return 0


def only_fds(*keep):
    """Drop every inherited descriptor (the agent's stdout is kubectl exec's stream) but ``keep``."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def become(uid, gid):
    """The target's fs uid and gid, no supplementary groups, no capabilities, dumpable."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    # A root target: uid 0 keeps our capabilities unless dropped, and the target's open() needs ours to be a
    # subset of its own. _LINUX_CAPABILITY_VERSION_3, two 32-bit words, all zero.
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    return libc


def probe(path):
    """Open ``path`` from another process with our (the target's) credentials, as the target will."""
    pid = os.fork()
    if pid == 0:
        try:
            os.listdir(path)
            os._exit(0)
        except OSError as exc:
            os.write(2, str(exc).encode())
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return None if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "a process of its uid cannot " \
        "open %s (a security module refuses?)" % path


def linger(libc, directory, shutil):
    """While the injected script is still there (a pending injection), keep our root reachable: wait for the
    target to delete it (inotify), at most LINGER seconds; then remove the directory."""
    script = directory + "/bootstrap.py"
    if not os.path.exists(script):
        return
    deadline = time.monotonic() + LINGER
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd >= 0:  # IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF
        libc.inotify_add_watch(fd, directory.encode(), 0x200 | 0x40 | 0x400)
    while os.path.exists(script) and time.monotonic() < deadline:
        if fd >= 0:
            if select.select([fd], [], [], deadline - time.monotonic())[0]:
                os.read(fd, 4096)
        else:
            time.sleep(1.0)  # no inotify: look once a second (a pending injection waits for the app anyway)
    shutil.rmtree(directory, ignore_errors=True)
