# kubectl-wand as one executable file (a zipapp), made by krew/build.
#
# The archive carries kubectl-wand and its pure-Python dependencies. On the first run it unpacks them once into
# $WAND_CACHE/zipapp/<build id>/ and runs from there: kubectl-wand reads its own files with open()/os.walk (the
# agent sources it sends into pods, debugpy's sources for targets that lack it), which needs real files, and
# modules imported from real files get cached bytecode, so later runs start as fast as a pip install.
import os
import sys

BUILD_ID = "@BUILD_ID@"
MIN_PYTHON = (3, 9)


def cache_base():
    # the same place as kubectl_wand.usercache.base()
    return os.environ.get("WAND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubectl-wand")


def unpack(archive):
    """The directory holding the archive's files: the cached copy, made now if missing (atomically)."""
    root = os.path.join(cache_base(), "zipapp")
    final = os.path.join(root, BUILD_ID)
    if os.path.isfile(os.path.join(final, ".complete")):
        return final
    import shutil
    import tempfile
    import zipfile
    try:
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=BUILD_ID + ".", dir=root)
    except OSError:  # no writable cache: unpack for this run only
        import atexit
        tmp = tempfile.mkdtemp(prefix="kubectl-wand-")
        atexit.register(shutil.rmtree, tmp, True)
        final = None
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp, [n for n in zf.namelist() if n != "__main__.py"])
    with open(os.path.join(tmp, ".complete"), "w") as f:
        f.write(BUILD_ID + "\n")
    if final is None:
        return tmp
    try:
        os.rename(tmp, final)
    except OSError:  # another run unpacked the same build first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main():
    if sys.version_info < MIN_PYTHON:
        sys.stderr.write("error: kubectl-wand needs Python >= %d.%d, this is %s\n"
                         % (MIN_PYTHON + (sys.version.split()[0],)))
        return 1
    archive = os.path.abspath(sys.path[0])
    here = unpack(archive)
    sys.path[0] = here  # import everything from the unpacked copy, nothing from the zip
    from kubectl_wand.launch import main as launch
    launch()


if __name__ == "__main__":
    sys.exit(main())
