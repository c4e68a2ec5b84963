"""The user's cache directory ($WAND_CACHE, else $XDG_CACHE_HOME/kubectl-wand, else ~/.cache/kubectl-wand): files
read only while they are private to us, written without following a name someone else could plant.

What is kept here goes into targets (the debugpy tarball attach ships) or decides where kubectl-wand acts (the
namespace of the kubeconfig's context), and kubectl-wand often runs as root: a cache file or directory that
another uid owns, or that group or others may write, is ignored and never written to, not trusted.
"""
from __future__ import annotations

import os
import stat

MAX_READ = 64 << 20  # no cache file of ours is bigger (the debugpy tarball is ~3 MB)


def base() -> str:
    return os.environ.get("WAND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubectl-wand")


def _private(st) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _open_dir(create: bool):
    """A descriptor of the cache directory, or None when it is missing (and not made) or not private."""
    path = base()
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError:
            return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not _private(os.fstat(fd)):
        os.close(fd)
        return None
    return fd


def read(name: str):
    """The bytes of cache file ``name``, or None (missing, unreadable, or not private)."""
    dir_fd = _open_dir(create=False)
    if dir_fd is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > MAX_READ:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            return f.read(MAX_READ)
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def write(name: str, data: bytes) -> bool:
    """Replace cache file ``name`` with ``data`` (0600, through a fresh temporary name); False when the cache
    cannot be written (read-only, or not private): it only costs recomputing next time."""
    dir_fd = _open_dir(create=True)
    if dir_fd is None:
        return False
    tmp = "%s.%d.%s.tmp" % (name, os.getpid(), os.urandom(6).hex())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return True
        except OSError:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            return False
    except OSError:
        return False
    finally:
        os.close(dir_fd)
