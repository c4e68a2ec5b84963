"""File operations by directory descriptor that never follow a name an unprivileged process could swap.

What private.py and reap.py do to directories another uid owns goes through these: ``openat`` with
``O_NOFOLLOW``, ``mkdirat``/``unlinkat`` relative to a held directory fd, ``fchown`` on the file's own fd.
"""
from __future__ import annotations

import errno
import os
import stat
import time

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
MAX_DEPTH = 64  # removal descends no deeper: a hostile tree cannot exhaust our stack


def open_base(root_fd: int, base: str) -> int:
    """A directory fd for ``base`` (absolute, in the target's view), walked from ``root_fd`` without following
    any symlink or ``..``."""
    fd = os.dup(root_fd)
    try:
        for part in base.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in the path")
            try:
                nxt = os.open(part, O_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OSError(exc.errno, "a symlink or not a directory")
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_root_base(root: str, base: str) -> int:
    """``open_base`` from the root directory ``root`` (``/``, or ``/proc/PID/root``: a magic link we follow)."""
    root_fd = os.open(root, O_DIR & ~os.O_NOFOLLOW)
    try:
        return open_base(root_fd, base)
    finally:
        os.close(root_fd)


def writable_by(st, uid: int, gids) -> bool:
    """Whether a process of ``uid``/``gids`` may create entries in a directory with this stat."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid in gids:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


def same_inode(a, b) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def remove_entry(dir_fd: int, name: str, depth: int = 0, until=None):
    """Remove ``name`` inside ``dir_fd`` and everything under it, never following a symlink; past ``until`` (a
    monotonic time) it leaves the rest."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
        try:
            fd = os.open(name, O_DIR, dir_fd=dir_fd)
        except OSError:
            return  # swapped for something else since: not ours to chase
        try:
            if same_inode(os.fstat(fd), st):
                for entry in os.listdir(fd):
                    if until is not None and time.monotonic() >= until:
                        break
                    remove_entry(fd, entry, depth + 1, until)
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError:
            pass
    else:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass


def fchown(fd: int, owner):
    """os.fchown, with a failure we can tell apart: EPERM here means we lack CAP_CHOWN."""
    try:
        os.fchown(fd, *owner)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, "fchown")


def write_file(dir_fd: int, name: str, data: bytes, owner):
    """Create ``name`` (0600, O_EXCL|O_NOFOLLOW) in ``dir_fd``, write ``data``, chown it by fd to ``owner``."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner:
            fchown(fd, owner)
    finally:
        os.close(fd)
