"""Private files for one injection, made and removed without ever acting by path on what the target can change.

We often run as root beside a target of another uid, and the target must own its directory (0700) to read
the bootstrap, connect to the socket and remove them. Anything that uid owns, any of its processes may swap
for a symlink at any moment, and a root ``chown``/``chmod``/``open`` by path would follow it to a file of the
attacker's choosing. So (tests/test_trust_local.py races exactly that):
- the base directory (``/tmp`` in the target's view) is walked from the target's root one component at a
  time with ``O_NOFOLLOW``, and must be one the target's uid could write to itself;
- our directory is created there root-owned and 0700: nobody else can enter it while we fill it; every file
  is created by directory fd with ``O_EXCL|O_NOFOLLOW`` and chowned by its own fd (``fchown``); the Unix
  socket is bound through ``/proc/self/fd/N/`` (the directory itself, not a name), then chmodded and chowned
  while the directory is still ours;
- only then is the directory handed over, by ``fchown`` on its fd. After that we touch its contents only
  through that fd: ``unlinkat``/``mkdirat``/``openat(O_NOFOLLOW)``, never following a name twice.
The name ``wand-PID-START-NS-RANDOM`` carries the target's pid, start time (clock ticks since boot) and pid
namespace, so a later run can tell a directory whose target is gone (reap.py).
"""
from __future__ import annotations

import atexit
import errno
import os
import stat

import _socket

from .fdops import O_DIR, fchown, open_root_base, remove_entry, same_inode, writable_by, write_file
from .procfs import pidns

try:
    from . import lent  # shipped to pods only by --ephemeral (agent.CROSS_CONTAINER); always there locally
except ImportError:
    lent = None



class Socket(_socket.socket):
    """The listener's socket: _socket's, with the accept and ``with`` that socket.py adds. socket.py's import
    (enum, types, io) was ~2.4 ms of an injecting agent's ~18 ms start in a pod (3.14, -S)."""
    __slots__ = ()

    def accept(self):
        fd, address = self._accept()
        conn = Socket(self.family, self.type, self.proto, fileno=fd)
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            conn.setblocking(True)  # as socket.py: a listener's timeout is not its connections'
        return conn, address

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

class NoTempDir(Exception):
    """No candidate directory could hold the files; ``str()`` lists why, per candidate."""


class CannotHandOver(Exception):
    """We may not give files to the target's uid (no CAP_CHOWN): no directory anywhere would do."""


class CannotLend(Exception):
    """A target in another container cannot be handed our files (lent.LendProblem's message)."""


TMP_CANDIDATES = ("/tmp", "/var/tmp", "/dev/shm")


def temp_bases(proc):
    """Where private files may go, in the target's view: its $TMPDIR, then the usual ones. The target's
    environment chose $TMPDIR: only ever followed inside the target's own root (``ours_too`` tells which of
    these may also be acted on in our view)."""
    env = proc.environ() or {}
    seen = []
    for base in ([env["TMPDIR"]] if env.get("TMPDIR", "").startswith("/") else []) + list(TMP_CANDIDATES):
        if base not in seen:
            seen.append(base)
    return seen


def ours_too(base: str) -> bool:
    """Whether ``base``, a path in the target's view, may also be used in ours (loader mode: placeholders and
    the sweep of dead ones): only the usual temporary directories, never one the target's $TMPDIR named. A
    target started with TMPDIR=/x must not make root create or remove anything in this machine's /x."""
    return (base.rstrip("/") or "/") in TMP_CANDIDATES


def lent_bases():
    """Our own temporary directories, for files lent to a target in another container (lent.py)."""
    env = os.environ.get("TMPDIR", "")
    return ([env] if env.startswith("/") and env not in lent.TMP_CANDIDATES else []) + list(lent.TMP_CANDIDATES)


def dir_name(proc, prefix="wand") -> str:
    """``wand-PID-START-NS-RANDOM``: the target's pid in its own pid namespace, its start time in clock
    ticks since boot, that namespace's inode, and 48 random bits (reap.py reads the first three)."""
    return "%s-%d-%d-%d-%s" % (prefix, proc.inner_pid, proc.start_ticks, pidns(proc.pid) or 0,
                                os.urandom(6).hex())


def linger(helper):
    """At exit, for a lent directory whose bootstrap is still queued: answer first (our streams are closed, so
    kubectl exec ends for the CLI), then keep the helper, and so the path the target was given, until the
    target has read and deleted the bootstrap or lent.LINGER passes; the helper, of the target's uid, then
    removes the directory (lent.linger)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
    helper.finish()


class PrivateDir:
    """One ``wand-*`` directory in the target's temporary directory: 0700, owned by the target's uid.

    ``files(target_path)`` gives the files to create (name -> bytes) once the directory's name is known;
    ``socket_name`` is bound as a listening Unix socket (``self.listener``). Both exist, 0600 and owned by the
    target's uid, before the directory is handed over. When the injector runs in our own view (loader mode),
    ``sys.remote_exec`` checks the script exists in *our* view: ``mirror`` names files that get an empty,
    root-owned placeholder at the same path here (never handed over).

    Lent (``rt.mode == "chroot"``: a target in another container of the pod, from an ephemeral debug
    container): the directory is made the same way in *our* temporary directory, owned by the target's fs
    uid/gid, and the target reaches it as ``/proc/<helper>/root<path>`` (lent.Helper: a process of its
    credentials whose root it may open). The files are then written after the hand-over, by directory fd with
    ``O_EXCL|O_NOFOLLOW`` and chowned by their own fd: their content names the helper's pid.
    """

    def __init__(self, rt, bases, files=None, socket_name=None, mirror=(), prefix="wand"):
        self.rt, proc = rt, rt.proc
        self.lent = rt.mode == "chroot" and lent is not None
        uid, gid = lent.fs_ids(proc) if self.lent else (proc.euid, proc.egid)
        # The target's uid must own what it reads; handing it over needs CAP_CHOWN (root). Without it the
        # directory cannot be made for another uid: fchown fails and we say so, nothing is injected.
        self.owner = (uid, gid) if uid != os.geteuid() else None
        self.uid, self.gid = uid, gid
        self.gids = set(int(g) for g in (proc.status.get("Groups") or "").split()) | {gid}
        self.fd = self.base_fd = self.mirror_fd = self.listener = self.helper = None
        self.mirror_names = ()
        self.made = False
        self.root = "/" if self.lent else rt.root_dir
        errors = []
        for base in (lent_bases() if self.lent else bases):
            self.name = dir_name(proc, prefix)
            self.base = base.rstrip("/") or "/"
            self.target_path = self.base.rstrip("/") + "/" + self.name
            if mirror and rt.mode == "loader" and not ours_too(self.base):
                errors.append("%s: the target's $TMPDIR, not used in our view (loader mode)" % base)
                continue
            reach = ("/proc/%d/root" % 4194304 if self.lent else "") + self.target_path  # the longest pid
            if len(reach) > 96:  # the socket inside must stay under the 108-byte AF_UNIX limit
                errors.append("%s: path too long" % base)
                continue
            try:
                self._make(files, socket_name, mirror)
                return
            except OSError as exc:
                self._undo()
                if exc.errno == errno.EPERM and self.owner and getattr(exc, "filename", None) == "fchown":
                    raise CannotHandOver("uid %d" % self.owner[0])
                errors.append("%s: %s" % (base, exc.strerror or exc))
            except Exception as exc:
                self._undo()
                if lent is not None and isinstance(exc, lent.LendProblem):
                    raise CannotLend(str(exc))
                raise
            except BaseException:
                self._undo()
                raise
        raise NoTempDir("; ".join(errors))

    # -- making ----------------------------------------------------------------------------------------
    def _make(self, files, socket_name, mirror):
        self.base_fd = open_root_base(self.root, self.base)
        if not self.lent and not writable_by(os.fstat(self.base_fd), self.uid, self.gids):
            raise OSError(errno.EACCES, "not writable by uid %d" % self.uid)
        os.mkdir(self.name, 0o700, dir_fd=self.base_fd)
        self.made = True
        self.fd = os.open(self.name, O_DIR, dir_fd=self.base_fd)
        st = os.fstat(self.fd)
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EEXIST, "our new directory was replaced")
        os.fchmod(self.fd, 0o700)
        if socket_name:
            self.listener = Socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            self.listener.bind("/proc/self/fd/%d/%s" % (self.fd, socket_name))
            # Safe by name only because the directory is still ours alone (root-owned, 0700).
            os.chmod(socket_name, 0o600, dir_fd=self.fd)
            if self.owner:
                try:
                    os.chown(socket_name, *self.owner, dir_fd=self.fd, follow_symlinks=False)
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, "fchown")
            self.listener.listen(1)
        if self.lent:
            if self.owner:
                fchown(self.fd, self.owner)  # handed over: from here on, by fd only
            self.helper = lent.Helper(self.uid, self.gid, self.target_path)
            self.target_path = "/proc/%d/root%s" % (self.helper.pid, self.target_path)
        for name, data in (files(self.target_path) if files else {}).items():
            write_file(self.fd, name, data, self.owner)
        if mirror and self.rt.mode == "loader":
            self._make_mirror(mirror)
        if self.owner and not self.lent:
            fchown(self.fd, self.owner)  # handed over: from here on, by fd only

    def _make_mirror(self, names):
        self.mirror_fd = open_root_base("/", self.base)
        os.mkdir(self.name, 0o700, dir_fd=self.mirror_fd)
        self.mirror_names = (self.name,)
        fd = os.open(self.name, O_DIR, dir_fd=self.mirror_fd)
        try:
            for name in names:
                write_file(fd, name, b"", None)
        finally:
            os.close(fd)

    def _undo(self):
        """A candidate that failed half-way: nothing of it was handed to anyone yet, remove it all."""
        self.remove()

    @classmethod
    def adopt(cls, rt, base: str, name: str):
        """Take over an existing private directory of this target (a queued injection's), or None."""
        self = cls.__new__(cls)
        self.rt, proc = rt, rt.proc
        self.owner = (proc.euid, proc.egid) if proc.euid != os.geteuid() else None
        self.uid, self.gids = proc.euid, set()
        self.fd = self.base_fd = self.mirror_fd = self.listener = self.helper = None
        self.mirror_names, self.made, self.lent, self.root = (), False, False, rt.root_dir
        self.base, self.name = base, name
        self.target_path = base.rstrip("/") + "/" + name
        try:
            self.base_fd = open_root_base(rt.root_dir, base)
            self.fd = os.open(name, O_DIR, dir_fd=self.base_fd)
            if os.fstat(self.fd).st_uid != proc.euid:
                raise OSError(errno.EPERM, "not the target's")
        except OSError:
            self.close()
            return None
        return self

    def rebind(self, socket_name: str):
        """A new listening socket at ``socket_name`` in a directory already handed over.

        Bound in a root-owned staging directory inside (no one else can touch it there), made 0600 and
        chowned, then renamed into place: ``renameat`` acts on names relative to fds and follows nothing.
        """
        staging = ".bind-" + os.urandom(4).hex()
        os.mkdir(staging, 0o700, dir_fd=self.fd)
        sfd = os.open(staging, O_DIR, dir_fd=self.fd)
        try:
            if os.fstat(sfd).st_uid != os.geteuid():
                raise OSError(errno.EEXIST, "staging directory replaced")
            self.listener = Socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            self.listener.bind("/proc/self/fd/%d/%s" % (sfd, socket_name))
            os.chmod(socket_name, 0o600, dir_fd=sfd)
            if self.owner:
                os.chown(socket_name, *self.owner, dir_fd=sfd, follow_symlinks=False)
            self.listener.listen(1)
            os.rename(socket_name, socket_name, src_dir_fd=sfd, dst_dir_fd=self.fd)
        finally:
            os.close(sfd)
            remove_entry(self.fd, staging)

    # -- after the hand-over -----------------------------------------------------------------------------
    def tampered(self) -> bool:
        """Whether another process replaced what the target was told to open: our directory's name now points
        elsewhere, or an entry in it is a symlink (we never make one). Read by fd and lstat: nothing followed."""
        try:
            base_fd = open_root_base(self.root, self.base)
            try:
                st = os.stat(self.name, dir_fd=base_fd, follow_symlinks=False)
            finally:
                os.close(base_fd)
            if not same_inode(st, os.fstat(self.fd)):
                return True
            for name in os.listdir(self.fd):
                if stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                    return True
        except OSError:
            return True
        return False

    def has(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            return True
        except OSError:
            return False

    def add_tree(self, top: str, members):
        """Create ``top/`` with ``members`` ((relative path, bytes) pairs) inside, then hand it over.

        ``top`` is made root-owned and 0700, filled by directory fds, and chowned (every directory by its
        fd) only when complete: the target never sees half of it. The last file written is ``.complete``.
        """
        os.mkdir(top, 0o700, dir_fd=self.fd)
        top_fd = os.open(top, O_DIR, dir_fd=self.fd)
        dirs = {"": top_fd}
        try:
            st = os.fstat(top_fd)
            if st.st_uid != os.geteuid():
                raise OSError(errno.EEXIST, "%s was replaced" % top)
            for relpath, data in list(members) + [(".complete", b"")]:
                parts = relpath.split("/")
                if any(p in ("", ".", "..") for p in parts) or "\0" in relpath:
                    continue
                parent = ""
                for part in parts[:-1]:
                    here = parent + "/" + part if parent else part
                    if here not in dirs:
                        os.mkdir(part, 0o700, dir_fd=dirs[parent])
                        dirs[here] = os.open(part, O_DIR, dir_fd=dirs[parent])
                    parent = here
                write_file(dirs[parent], parts[-1], data, self.owner)
            if self.owner:
                for key in sorted(dirs, key=len, reverse=True):  # deepest first, the top last
                    fchown(dirs[key], self.owner)
        except BaseException:
            for key, fd in dirs.items():
                if key:
                    os.close(fd)
            dirs = {"": top_fd}
            remove_entry(self.fd, top)
            raise
        finally:
            for fd in dirs.values():
                os.close(fd)

    def remove_mirror(self):
        if self.mirror_fd is not None:
            for name in self.mirror_names:
                remove_entry(self.mirror_fd, name)
            os.close(self.mirror_fd)
            self.mirror_fd = None

    def remove(self, keep=()):
        """Remove everything we made; with ``keep``, leave those entries (and so the directory) in place."""
        self.remove_mirror()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        kept = False
        if self.fd is not None:
            for name in os.listdir(self.fd):
                if name not in keep:
                    remove_entry(self.fd, name)
            kept = any(self.has(name) for name in keep)
            if not kept:
                try:  # only if the name still is our directory: the target's uid may have renamed it
                    if same_inode(os.stat(self.name, dir_fd=self.base_fd, follow_symlinks=False),
                                  os.fstat(self.fd)):
                        os.rmdir(self.name, dir_fd=self.base_fd)
                except OSError:
                    pass
        elif self.made and self.base_fd is not None:  # made, never opened: still ours and empty
            try:
                os.rmdir(self.name, dir_fd=self.base_fd)
            except OSError:
                pass
        self.made = False
        if self.helper is not None:
            if kept:
                atexit.register(linger, self.helper)  # the target still needs the path: see linger()
            else:
                self.helper.finish()
            self.helper = None
        self.close()

    def close(self):
        """Let go of the directory without removing anything."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for attr in ("mirror_fd", "fd", "base_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
