"""Run the target's own interpreter beside it, and keep private files where both of us can see them.

``sys.remote_exec`` only talks to an interpreter of the same minor version, so the injector is always the
target's own binary (``/proc/PID/exe``). That binary links against the libraries of the target's root, so:
- same root as ours (a pod, a plain local process): run ``/proc/PID/exe`` directly;
- a chroot in our mount namespace: run it through the target's own dynamic loader and libraries, reached via
  ``/proc/PID/root`` (a chroot would hide ``/proc``, which the injector needs to read the target's maps);
- another mount namespace (a container seen from its host): ``nsenter`` into its mount and pid namespaces and
  its root (``-r``: a chroot inside that namespace; without it the binary's path means nothing there);
- another container of the same pod, from an ephemeral debug container (same PID namespace, no CAP_SYS_ADMIN for
  nsenter): chrooted into ``/proc/PID/root``, with private files lent from our filesystem (``lent``).
Private files (private.py) are made through ``root_dir``, the target's root as we reach it.
"""
from __future__ import annotations

import os

from . import elf, procfs

try:
    from . import lent  # shipped to pods only by --ephemeral (agent.CROSS_CONTAINER); always there locally
except ImportError:
    lent = None

# Code run under the target's interpreter, compiled by that interpreter once: ``-c SOURCE`` compiles the source on
# every start, and for the stack reader (40 KB with framewalk) that was the largest part of a local `stack pid/N`
# after the interpreters' own starts (measured ~10-12 ms of a ~25 ms read beside a 3.14 target, the read itself
# ~1 ms). ``compiled`` keeps the marshalled code object in a cache the caller provides (locally the user's private
# cache directory: usercache); LOAD_CODE runs it from stdin. marshal is bound to the interpreter that wrote it,
# so an entry is keyed by that binary's identity (ctime included: it cannot be set back) and the exact source.
# It moves to / first (posix and marshal are built in: nothing is looked up on sys.path before that), as
# subprocess's cwd="/" would: Spawned cannot change the directory the child starts in.
LOAD_CODE = "import sys,marshal,posix;posix.chdir('/');exec(marshal.loads(sys.stdin.buffer.read()))"
COMPILE_CODE = ("import sys,marshal;sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.buffer.read(),"
                "'<string>','exec')))")
CODE_MAX = 4 << 20  # bytes of marshalled code we take back (the stack reader's is ~90 KB)

LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu",
            "usr/lib/aarch64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib", "usr/local/lib")


class RuntimeProblem(Exception):
    """The target's interpreter cannot be run from here; the message says why and what to do."""
    kind = "runtime"


class Untrusted(RuntimeProblem):
    """Running the target's interpreter from here would run what another uid can change (see ``foreign``)."""
    kind = "refused"


class TargetRuntime:
    def __init__(self, proc: "procfs.Proc"):
        self.proc = proc
        pid = proc.pid
        self.same_root = procfs.same_file("/proc/%d/root" % pid, "/")
        self.same_mntns = procfs.same_file("/proc/%d/ns/mnt" % pid, "/proc/self/ns/mnt")
        self.same_pidns = procfs.same_file("/proc/%d/ns/pid" % pid, "/proc/self/ns/pid")
        self.chroot_ok = (lent is not None and not self.same_root and not self.same_mntns and
                          lent.can_chroot(pid, self.same_pidns))
        if not self.same_interpreter():
            self.check_owners()

    def check_owners(self):
        """Refuse (Untrusted) an interpreter that a uid other than root and ours could change. The injector and
        the stack reader run the target's binary, with the standard library beside it, as whoever runs kubectl
        wand, often root; an interpreter a user installed for themselves (pyenv, uv, conda under a home; a
        rootless container's files) is theirs to change, and its ``encodings`` package runs at every start:
        seen, a root `stack pid/N` beside uid 1000's pyenv-like Python appended to a root-owned file."""
        exe = self.proc.in_target_view(self.proc.exe or "").replace(" (deleted)", "")
        if not exe.startswith("/"):
            return  # no binary to run: command() says why
        found = foreign(self.root_dir, exe)
        lib = os.path.dirname(os.path.dirname(exe)) + "/lib"
        import re
        version = re.match(r"python(3\.\d+)", os.path.basename(exe))  # else every python3* there
        wanted = re.compile(r"(lib)?python%s(\D|$)" % (re.escape(version.group(1)) if version else "3"))
        try:
            names = sorted(n for n in os.listdir(self.root_dir.rstrip("/") + lib) if wanted.match(n))
        except OSError:
            names = []
        for name in names:
            found = found or foreign(self.root_dir, lib + "/" + name, entries=name.startswith("python3"))
        if found:
            path, (who, num) = found
            if self.mode == "nsenter":  # a container's files (rootless Podman's are its user's)
                fix = "reach it through its engine instead (podman/NAME or docker/NAME): the agent then runs " \
                      "inside the container, as its exec user"
            elif who == "uid":
                fix = "run kubectl wand as uid %d, the target's (sudo -u '#%d')" % (self.proc.euid, self.proc.euid) \
                    if self.proc.euid != os.geteuid() else "run the app and kubectl wand as uid %d" % num
            else:  # its owner is root or us: the write permission of its group, or of everyone, is the problem
                fix = "make it writable by its owner only (chmod %s %s)" % (
                    "g-w" if who == "gid" else "o-w", self.root_dir.rstrip("/") + path)
            holder = "uid %d" % num if who == "uid" else "group %d (gid), as it is group-writable," % num \
                if who == "gid" else "any user, as it is world-writable,"
            raise Untrusted("process %d's interpreter %s runs from %s, which %s can change: running it as uid "
                            "%d would run code they put there; %s" % (self.proc.pid, exe, path, holder, os.geteuid(),
                                                                    fix))

    def same_interpreter(self) -> bool:
        """Whether this very interpreter is the target's: the same CPython binary, in the same root. In a pod,
        the python3 that runs the agent usually *is* the app's interpreter; then the injector's and the
        sampler's code can run here, in-process, which saves starting a second interpreter (most of an
        injection's or a stack read's time beside the target on a busy node)."""
        import sys
        return (self.mode == "direct" and sys.version_info[:2] >= (3, 14) and
                procfs.same_file("/proc/%d/exe" % self.proc.pid, "/proc/self/exe"))

    @property
    def mode(self) -> str:
        if self.same_root:
            return "direct"
        if self.same_mntns:
            return "loader"
        return "chroot" if self.chroot_ok else "nsenter"

    @property
    def root_dir(self) -> str:
        """The target's root directory, reached from here."""
        return "/" if self.same_root else "/proc/%d/root" % self.proc.pid

    @property
    def injector_pid(self) -> int:
        """The target's pid as the injector sees it."""
        return self.proc.inner_pid if self.mode == "nsenter" else self.proc.pid

    def command(self, args):
        """argv and env that run the target's interpreter with ``args`` (isolated, no site, no user env)."""
        pid = self.proc.pid
        # PYTHONSAFEPATH: where -I cannot be used (PYTHONHOME below), ``-c`` would put the directory it starts in
        # first on sys.path; pdb's and exec-py -it's clients start in the user's (seen: a json.py planted in /tmp
        # ran as root). Older Pythons ignore it; -I implies it.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
               "PYTHONSAFEPATH": "1"}
        if self.mode == "direct":
            return ["/proc/%d/exe" % pid, "-I", "-S"] + list(args), env
        exe_inside = self.proc.in_target_view(self.proc.exe or "").replace(" (deleted)", "")
        if self.mode == "chroot":
            return lent.chroot_argv(pid, exe_inside, args), env
        if self.mode == "nsenter":
            import shutil  # here, not at the top: see run()
            nsenter = shutil.which("nsenter")
            if os.geteuid() != 0 or not nsenter:
                raise RuntimeProblem("target %d runs in another mount namespace (a container): injecting from "
                                     "here needs root and nsenter; run kubectl wand inside its pod instead" % pid)
            return [nsenter, "-t", str(pid), "-m", "-p", "-r", "--", exe_inside, "-I", "-S"] + list(args), env
        root = "/proc/%d/root" % pid
        try:
            loader = elf.interpreter("/proc/%d/exe" % pid)
        except (OSError, ValueError) as exc:
            raise RuntimeProblem("cannot read the target's interpreter binary: %s" % exc)
        if not loader:
            return ["/proc/%d/exe" % pid, "-S"] + list(args), dict(env, PYTHONHOME=self.home(root, exe_inside))
        libs = ":".join(root + "/" + d for d in LIB_DIRS if os.path.isdir(root + "/" + d))
        # No -I: it would ignore PYTHONHOME, which tells the interpreter where its stdlib is in that root.
        # The environment is ours alone, so nothing like PYTHON_DISABLE_REMOTE_DEBUG leaks in.
        argv = [root + loader, "--library-path", libs, root + exe_inside, "-S"] + list(args)
        return argv, dict(env, PYTHONHOME=self.home(root, exe_inside))

    @staticmethod
    def home(root: str, exe_inside: str) -> str:
        return root + os.path.dirname(os.path.dirname(exe_inside))

    def binary(self) -> str:
        """The path of the interpreter binary ``command`` runs, as reached from here."""
        if self.mode == "direct":
            return "/proc/%d/exe" % self.proc.pid
        return self.root_dir + self.proc.in_target_view(self.proc.exe or "").replace(" (deleted)", "")

    def compiled(self, source: str, cache):
        """The marshalled code of ``source`` as the target's interpreter compiles it (for LOAD_CODE): from
        ``cache`` (anything with read(name) -> bytes or None and write(name, data), private to us), else
        compiled now by that interpreter and kept there. None when it cannot be had: then run the source."""
        try:
            st = os.stat(self.binary())
        except OSError:
            return None
        name = "compiled-%d-%d" % (st.st_dev, st.st_ino)  # one entry per binary, replaced when it changes
        key = repr((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)).encode() + b"\0" + \
            source.encode("utf-8") + b"\0"
        data = cache.read(name)
        if data and data.startswith(key):
            return data[len(key):]
        try:
            done = self.run(["-c", COMPILE_CODE], stdin=source.encode("utf-8"), limit=CODE_MAX)
        except Exception:  # a ProtocolError (too big), a failed start, a timeout: the source still works
            return None
        if done.returncode != 0 or not done.stdout:
            return None
        cache.write(name, key + done.stdout)
        return done.stdout

    def run(self, args, stdin: bytes = b"", timeout: float = 10.0, limit: int = None):
        """A CompletedProcess of the target's interpreter run with ``args``; over ``limit`` bytes of stdout
        (default protocol.SMALL_MAX; the target chose the names in it): killed, ProtocolError."""
        # Imported here: in a pod whose python3 is the target's own interpreter nothing is started, and
        # subprocess (with shutil) was ~20 ms of the agent's ~90 ms start-up for `stack` on a 2-core node.
        import subprocess
        from . import protocol
        limit = protocol.SMALL_MAX if limit is None else limit
        argv, env = self.command(args)
        # Its own session, as the sampler's (observe.py): a Ctrl-C in the user's terminal is the CLI's to
        # handle (a `pdb pid/N` given up before its prompt); it reached the injector too, which died with it
        # mid-injection ("the injector failed: exit -2", the bootstrap's fate unknown).
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, cwd="/", start_new_session=True)
        try:
            out, err = bounded_output(child, stdin, timeout, limit)
        except TimedOut:
            raise subprocess.TimeoutExpired(argv, timeout)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout, child.stderr):
                stream.close()
        return subprocess.CompletedProcess(argv, child.returncode, out, err)


def foreign(root, path, entries=False):
    """(the first file or directory on the way to ``path`` that a uid other than root and ours could change,
    who can: ("uid", its owner), ("gid", its group: group-writable) or ("anyone", None): world-writable), or
    None. ``path`` is in the target's view, reached under ``root``; symlinks are followed inside
    that root (a link's own owner does not matter: changing it needs its directory). ``entries``: a
    directory's entries too (the standard library's modules). What does not exist is not run: None."""
    import stat
    ours = (0, os.geteuid())

    def changeable(st):
        if stat.S_ISLNK(st.st_mode):
            return None
        if st.st_uid not in ours:
            return "uid", st.st_uid
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None  # /tmp-like: the entries of others are checked on their own
        if st.st_mode & stat.S_IWOTH:
            return "anyone", None
        if st.st_mode & stat.S_IWGRP and st.st_gid not in (0, os.getegid()):
            return "gid", st.st_gid
        return None

    base = root.rstrip("/")
    parts, done, hops = [p for p in path.split("/") if p], [], 40
    try:
        st = os.stat(root)
        if changeable(st):
            return "/", changeable(st)
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                done = done[:-1]
                continue
            here = "/" + "/".join(done + [part])
            st = os.lstat(base + here)
            if changeable(st):
                return here, changeable(st)
            if stat.S_ISLNK(st.st_mode):
                hops -= 1
                link = os.readlink(base + here)
                if hops < 0:
                    return here, ("uid", st.st_uid)
                parts = [p for p in link.split("/") if p] + parts
                if link.startswith("/"):
                    done = []
                continue
            done.append(part)
        if entries:
            where = "/" + "/".join(done)
            for name in sorted(os.listdir(base + where)):
                st = os.lstat(base + where + "/" + name)
                found = (where + "/" + name, changeable(st)) if changeable(st) else \
                    foreign(root, where + "/" + name) if stat.S_ISLNK(st.st_mode) else None
                if found:
                    return found
    except OSError:
        return None
    return None


class TimedOut(Exception):
    """A child's output did not end in time (bounded_output, Spawned.wait)."""


class Spawned:
    """A child as ``subprocess.Popen(argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env, start_new_session=True)``
    starts it, with os.posix_spawn: importing subprocess (threading, selectors, contextlib with it) was 3-8 ms of
    a local `stack pid/N` (measured with perf stat, 40 runs each), more than the spawn itself. Only what a stack
    read uses: pid, args, the three pipes, wait(), returncode. posix_spawn (before Python 3.13) cannot change the
    child's directory: the code it runs must move to / itself before it imports anything (LOAD_CODE does)."""

    def __init__(self, argv, env):
        self.args, self.returncode = argv, None
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        theirs = (in_r, out_w, err_w)
        actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(theirs)]
        # As close_fds=True: ours are not inheritable (PEP 446), but one our own parent left open may be; none
        # reaches the target's interpreter.
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in inherited_fds() if fd > 2 and fd not in theirs]
        try:
            self.pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
        except BaseException:
            for fd in theirs + (in_w, out_r, err_r):
                os.close(fd)
            raise
        for fd in theirs:
            os.close(fd)
        self.stdin, self.stdout, self.stderr = open(in_w, "wb", 0), open(out_r, "rb", 0), open(err_r, "rb", 0)

    def wait(self, timeout=None):
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            elif time.monotonic() > deadline:
                raise TimedOut("process %d did not end in %gs" % (self.pid, timeout))
            else:
                time.sleep(0.005)
        return self.returncode


def inherited_fds():
    """Our open descriptors that a child would inherit."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    out = []
    for fd in fds:
        try:
            if os.get_inheritable(fd):
                out.append(fd)
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return out


def bounded_output(child, stdin: bytes, timeout: float, limit: int):
    """(stdout, last 4 KiB of stderr) of ``child`` once both pipes end; ProtocolError over ``limit``, TimedOut
    past ``timeout``."""
    import select
    import time
    from . import protocol
    deadline = time.monotonic() + timeout
    out, err = bytearray(), b""
    reading = {child.stdout.fileno(): "out", child.stderr.fileno(): "err"}
    writing = child.stdin.fileno()
    todo = memoryview(stdin or b"")
    if not todo:
        child.stdin.close()
        writing = None
    while reading:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimedOut("no end of output in %gs" % timeout)
        readable, writable, _ = select.select(list(reading), [writing] if writing is not None else [], [], left)
        if writable:
            try:
                todo = todo[os.write(writing, todo[:1 << 16]):]
            except OSError:  # it exited: its output says why
                todo = todo[:0]
            if not todo:
                child.stdin.close()
                writing = None
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                del reading[fd]
            elif reading[fd] == "out":
                out += chunk
                if len(out) > limit:
                    raise protocol.ProtocolError("its output is over %s" % protocol.size(limit))
            else:
                err = (err + chunk)[-4096:]
    return bytes(out), err
