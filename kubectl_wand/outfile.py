"""Files the CLI writes (``profile -o FILE``), safely when it runs as root beside other users.

The rule (docs/security.md): the output name is never followed. In a directory others can write (``/tmp``),
another uid may plant ``FILE -> /a/root-only/file`` and a plain ``open(FILE, "w")`` by root would overwrite
that file. So the directory is opened once, and everything after goes through its fd: the content is written
to a fresh name made with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and renamed over FILE (a rename replaces the name
itself, whatever it is, and never writes through it). A reader of FILE sees the old file or the whole new one.

What is there already: a regular file of ours (or root's) is replaced, and the CLI says so (re-running
``profile -o flame.svg`` is the common case); anything else is refused before any work starts: a symbolic
link, a directory, a device or FIFO, or a file of another uid (replacing it would remove another user's file).
``check`` runs before sampling, ``write`` checks again when writing.
"""
from __future__ import annotations

import errno
import os
import stat

from . import errors
from .errors import WandError

O_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def _split(path: str):
    directory, name = os.path.split(path)
    if not name or name in (".", ".."):
        raise WandError("-o %s names a directory; give a file name, e.g. %s" % (
            path, os.path.join(path or ".", "profile.svg")), errors.USAGE)
    return directory or ".", name


def _open_dir(path: str, directory: str) -> int:
    try:
        return os.open(directory, O_DIR)
    except FileNotFoundError:
        raise WandError("cannot write -o %s: directory %s does not exist; create it or choose another path" % (
            path, directory), errors.USAGE)
    except NotADirectoryError:
        raise WandError("cannot write -o %s: %s is not a directory" % (path, directory), errors.USAGE)
    except OSError as exc:
        raise WandError("cannot write -o %s: %s: %s" % (path, directory, exc.strerror), errors.USAGE)


def _existing(path: str, dir_fd: int, name: str):
    """The lstat of what FILE names now (None: nothing), or a WandError why it may not be replaced."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise WandError("-o %s is a directory; give a file name, e.g. %s" % (path, os.path.join(path, "profile.svg")),
                        errors.USAGE)
    if stat.S_ISLNK(st.st_mode):
        raise WandError("-o %s is a symbolic link: not followed (kubectl wand never writes through a link, which "
                        "another user may have planted); give the real path, or remove the link" % path,
                        errors.USAGE)
    if not stat.S_ISREG(st.st_mode):
        raise WandError("-o %s exists and is not a regular file; choose another path" % path, errors.USAGE)
    if st.st_uid not in (os.geteuid(), 0):
        raise WandError("-o %s exists and belongs to uid %d: not replaced; choose another path" % (path, st.st_uid),
                        errors.USAGE)
    return st


def check(path: str) -> bool:
    """Before any work: can FILE be written? True when it exists (and will be replaced); WandError if not."""
    directory, name = _split(path)
    dir_fd = _open_dir(path, directory)
    try:
        if not os.access(directory, os.W_OK | os.X_OK):
            raise WandError("cannot write -o %s: %s is not writable" % (path, directory), errors.USAGE)
        return _existing(path, dir_fd, name) is not None
    finally:
        os.close(dir_fd)


def write(path: str, data: bytes) -> bool:
    """Write ``data`` as FILE (see the module's rule); True when it replaced an existing file."""
    directory, name = _split(path)
    dir_fd = _open_dir(path, directory)
    try:
        existed = _existing(path, dir_fd, name) is not None
        temp = None
        for _attempt in range(20):
            candidate = ".%s.%s.tmp" % (name[:200], os.urandom(4).hex())
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             getattr(os, "O_CLOEXEC", 0), 0o644, dir_fd=dir_fd)
            except FileExistsError:
                continue
            except OSError as exc:
                raise WandError("cannot write -o %s: %s" % (path, exc.strerror), errors.ENVIRONMENT)
            temp = candidate
            break
        if temp is None:
            raise WandError("cannot write -o %s: no free temporary name in %s" % (path, directory), errors.ENVIRONMENT)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            if isinstance(exc, OSError):
                if exc.errno == errno.EISDIR:
                    raise WandError("-o %s is a directory; give a file name" % path, errors.USAGE)
                raise WandError("cannot write -o %s: %s" % (path, exc.strerror), errors.ENVIRONMENT)
            raise
        return existed
    finally:
        os.close(dir_fd)
