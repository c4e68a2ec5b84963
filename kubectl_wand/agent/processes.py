"""List the Python processes visible here and say, for each, what it is and whether we can attach to it."""
from __future__ import annotations

import os
import time

from . import elf, procfs

MIN_VERSION = (3, 14)
HELPER_MARKERS = (
    "multiprocessing.resource_tracker", "multiprocessing.forkserver", "semaphore_tracker",
    "debugpy/adapter", "debugpy.adapter", "debugpy/launcher", "pydevd",
    "kubectl-wand-idle",  # the idle process of a kubectl-wand ephemeral debug container (it shares the PIDs)
)
# kubectl-wand's own processes beside the target are never the app's and never listed: the agent in a pod
# (`python3 -S -c LOADER`, kube/transport.py: the attach watcher lives for the whole attach) and the
# injector (the target's interpreter running agent/passengers/injector.py, for a few milliseconds).
# It drops ``-c``'s '' (the directory it starts in) from sys.path first: a container's working directory is the
# app's, and a module there named as one of the standard library's (struct.py, seen) was imported by the agent,
# as the exec user (root, often).
AGENT_LOADER = "import sys;''in sys.path and sys.path.remove('');exec(sys.stdin.buffer.readline())"
# Loaders of earlier kubectl-wand versions, whose agents may run beside ours
EARLIER_LOADERS = ("import sys;exec(sys.stdin.buffer.readline())",
                   "import sys,json;exec(json.loads(sys.stdin.buffer.readline()))")
INJECTOR_MARK = '"""Runs under the *target\'s* interpreter'
# The starts of the other programs an agent runs under the target's interpreter beside it (runtime.LOAD_CODE and
# COMPILE_CODE, the sampler (observe.sampler_source: framewalk first), pdb's and exec-py -it's client
# (pdbsession.client_source: clientkit first), check's version probe, lent.CHROOT_EXEC before its exec).
# Seen unlisted: a `profile docker/NAME`'s sampler was listed as the app's second process ("main, attachable"),
# so a concurrent exec-py refused "2 Python processes in this container", and a second profile sampled it.
# The first line of the programs a terminal session runs in a pod when its agent and its client share one
# `kubectl exec -it` (transport/sessionexec.py: the agent, the launcher forked from it, the lifeline).
SESSION_MARK = "# kubectl-wand session: the agent and its client in one exec"
OWN_CODE_STARTS = (INJECTOR_MARK, SESSION_MARK, '"""Frames and thread names read from the target', '"""What the two terminal '
                   'clients share', "import sys,marshal,posix;posix.chdir('/');exec(marshal.loads(",
                   "import sys,marshal;sys.stdout.buffer.write(marshal.dumps(compile(",
                   "import sys; print(sys.version.split()[0])", "import os,sys;os.chroot(sys.argv[1]);")
# The last argument of every interpreter the CLI tries in a container before one has greeted (transport/kubectl.py:
# probe_marker): a candidate that never answers is ended by name, by the next agent (end_probes).
PROBE_MARK = "kubectl-wand-probe-"
RELOADER_ENV = ("WERKZEUG_RUN_MAIN", "RUN_MAIN")  # set in the child by werkzeug and django autoreload


def python_options(cmdline):
    """Interpreter options before the script/-m/-c: (flags set, -X options list)."""
    flags, xopts = set(), []
    args = cmdline[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg in ("-", "--") or arg.startswith("--"):
            break
        if arg in ("-c", "-m") or arg.startswith(("-c", "-m")):
            break
        if arg.startswith(("-X", "-W")):
            value = arg[2:] or (args[i + 1] if i + 1 < len(args) else "")
            if arg.startswith("-X"):
                xopts.append(value)
            i += 1 if arg[2:] else 2
            continue
        flags.update(arg[1:])
        i += 1
    return flags, xopts


def remote_debug_disabled(proc):
    """Why remote debugging is off in this process, or None when it is on (or cannot be told)."""
    flags, xopts = python_options(proc.cmdline)
    if any(x == "disable-remote-debug" or x.startswith("disable-remote-debug=") for x in xopts):
        return "-X disable-remote-debug"
    if "E" in flags or "I" in flags:
        return None  # -E / -I make the interpreter ignore PYTHON_DISABLE_REMOTE_DEBUG
    env = proc.environ()
    if env is not None and "PYTHON_DISABLE_REMOTE_DEBUG" in env:
        return "PYTHON_DISABLE_REMOTE_DEBUG is set"
    return None


def permission_problem(proc):
    """Why we may not ptrace-attach to the process, or None."""
    my_caps = procfs.my_caps()
    has_ptrace = bool(my_caps >> procfs.CAP_SYS_PTRACE & 1)
    if not proc.readable:
        who = "uid %d" % proc.euid
        if has_ptrace:
            return "permission: cannot inspect %s (a security module refuses)" % who
        return "permission: target runs as %s, we are uid %d without CAP_SYS_PTRACE" % (who, os.geteuid())
    if has_ptrace:
        return None
    if proc.euid != os.geteuid() or proc.uid != os.getuid():
        return "permission: target runs as uid %d, we are uid %d without CAP_SYS_PTRACE" % (
            proc.euid, os.geteuid())
    target_prm = int(proc.status.get("CapPrm", "0"), 16)
    my_prm = procfs.my_permitted_caps()
    if target_prm & ~my_prm:
        return "permission: target holds capabilities we lack (need CAP_SYS_PTRACE)"
    scope = procfs.yama_scope()
    if scope and scope >= 1 and not is_ancestor(os.getpid(), proc.pid):
        return "permission: Yama ptrace_scope=%d forbids it without CAP_SYS_PTRACE" % scope
    return None


def is_ancestor(ancestor: int, pid: int) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        try:
            pid = procfs.Proc(pid).ppid
        except ProcessLookupError:
            return False
        if pid == ancestor:
            return True
        seen += 1
    return False


def describe(proc):
    """The facts a user sees about one Python process (without role, CPU and attachability)."""
    runtime = proc.runtime() if proc.readable else None
    if runtime:
        version, free_threaded = elf.version_string(runtime[0]), runtime[1]
        major_minor = (runtime[0] >> 24, (runtime[0] >> 16) & 0xFF)
    else:
        guess = proc.version_from_names()
        major_minor = guess
        version, free_threaded = ("%d.%d" % guess if guess else None), None
    return {
        "pid": proc.pid,
        "ppid": proc.ppid,
        "uid": proc.euid,
        "user": procfs.user_name(proc.euid),
        "python": version,
        "free_threaded": free_threaded,
        "version_tuple": list(major_minor) if major_minor else None,
        "rss": proc.rss,
        "age": max(0.0, round(time.time() - proc.start_time, 1)),
        "command": " ".join(proc.cmdline) or "[%s]" % proc.comm,
        "cwd": proc.in_target_view(proc.cwd),
        "exe": proc.in_target_view(proc.exe),
        "state": proc.state,
    }


def not_attachable_reason(proc, info):
    """None when we can inject into the process, else a short reason: version, disabled, permission."""
    problem = permission_problem(proc)
    if problem and not proc.readable:
        return problem
    vt = info["version_tuple"]
    if vt is None:
        return "version: cannot tell the Python version"
    if tuple(vt) < MIN_VERSION:
        return "version: Python %s (needs 3.14+)" % info["python"]
    disabled = remote_debug_disabled(proc)
    if disabled:
        return "disabled: " + disabled
    return problem


def classify(infos, procs):
    """Set each info's role: main, reload-parent, worker or helper (a supervisor's children are workers)."""
    by_pid = {i["pid"]: i for i in infos}
    children = {}
    for i in infos:
        children.setdefault(i["ppid"], []).append(i)
    for i in infos:
        cmd = i["command"]
        proc = procs[i["pid"]]
        kids = [k for k in children.get(i["pid"], []) if not is_helper(k["command"])]
        if is_helper(cmd):
            i["role"] = "helper"
        elif kids and is_reloader(proc, cmd, [procs[k["pid"]] for k in kids]):
            i["role"] = "reload-parent"
        elif is_worker(i, by_pid.get(i["ppid"]), procs):
            i["role"] = "worker"
        else:
            i["role"] = "main"
        i["server"] = server_kind(cmd)


def is_worker(info, parent, procs) -> bool:
    """A child its Python parent runs as a worker: forked with the same command line (gunicorn, uvicorn
    --workers, multiprocessing fork), started by multiprocessing spawn, or restarted by a reloader. A Python
    program that merely starts another Python program (a test runner, a shell script in Python) is not one."""
    if parent is None or is_helper(parent["command"]):
        return False
    if info["command"] == parent["command"] or "multiprocessing.spawn" in info["command"]:
        return True
    siblings = [procs[p] for p, q in procs.items() if q.ppid == parent["pid"]]
    return is_reloader(procs[parent["pid"]], parent["command"], siblings)


def is_own(cmdline) -> bool:
    """Whether this command line is one of kubectl-wand's own processes."""
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "-c":
            code = cmdline[i + 1]
            return code == AGENT_LOADER or code in EARLIER_LOADERS or code.startswith(OWN_CODE_STARTS)
    return False


def is_helper(cmd: str) -> bool:
    return any(m in cmd for m in HELPER_MARKERS)


def is_reloader(proc, cmd, kids) -> bool:
    if "--reload" in cmd.split() or "watchfiles" in cmd or "watchmedo" in cmd:
        return True
    for kid in kids:
        env = kid.environ() or {}
        if any(env.get(k) == "true" for k in RELOADER_ENV) and not any(
                (proc.environ() or {}).get(k) for k in RELOADER_ENV):
            return True
    return False


def server_kind(cmd: str):
    for name in ("gunicorn", "uvicorn", "hypercorn", "daphne", "celery", "flask", "django", "manage.py",
                 "uwsgi", "granian"):
        if name in cmd:
            return "django" if name == "manage.py" else name
    return None


def came_by_exec() -> bool:
    """Whether this process was started by `kubectl exec` (its parent is outside the container's pid namespace:
    ppid 0). The agent in a pod says so in its listing, so that the CLI chooses from it as the agent would
    (choose.choose_process), not by its own parent on another machine."""
    return os.getppid() == 0


# Set by the agent in a pod (main.serve_stdio): list only the processes of the container it was started in, when
# it can tell them apart. With `shareProcessNamespace: true` every container's processes are visible, and
# container b's Python was listed (and chosen, and read through nsenter, which failed) as container a's.
OWN_CONTAINER_ONLY = False


def cgroup_of(pid="self"):
    """/proc/PID/cgroup as we read it: a container's processes, `kubectl exec`'d ones included, share one (in our
    cgroup namespace "0::/"; another container's reads "0::/../<its scope>"); None when unreadable."""
    return procfs.read_text("/proc/%s/cgroup" % pid)


def in_own_container(procs):
    """The pids of ``procs`` (pid -> Proc) in our own container, or None to keep them all: outside a pod, when
    our cgroup cannot be read, or when only helpers share it (an ephemeral debug container is a container of
    its own, where only its idle process runs Python: the app's processes are in another one, and all of them
    are its targets)."""
    mine = cgroup_of() if OWN_CONTAINER_ONLY else None
    if not mine:
        return None
    same = {pid for pid in procs if cgroup_of(pid) == mine}
    if all(is_helper(" ".join(procs[pid].cmdline)) for pid in same):
        return None
    return same


def list_processes(only_pid=None, cpu: bool = True):
    """Facts about every Python process here (or the one named), sorted by pid; with ``cpu`` their CPU %
    over a short window (procfs.cpu_percent). In a pod, only those of our own container (in_own_container)
    unless a pid is named."""
    procs = {}
    samples = {}
    started = time.monotonic()  # CPU time is read from here on: the CPU window starts now
    pids = [only_pid] if only_pid is not None else procfs.all_pids()
    me = os.getpid()
    ours = set()  # not ours by pid: locally the CLI is the agent, and may be what started the app (a test)
    for pid in pids:
        if pid == me:
            continue
        try:
            proc = procfs.Proc(pid)
        except (ProcessLookupError, ValueError, IndexError):
            continue
        if is_own(proc.cmdline):
            ours.add(pid)
        elif proc.looks_like_python():
            procs[pid] = proc
            if cpu:
                samples[pid] = procfs.cpu_sample(proc)
    for pid in [pid for pid, proc in procs.items() if proc.ppid in ours]:  # what an agent started is ours too
        del procs[pid]
        samples.pop(pid, None)
    own = in_own_container(procs) if only_pid is None else None
    if own is not None:
        procs = {pid: proc for pid, proc in procs.items() if pid in own}
        samples = {pid: sample for pid, sample in samples.items() if pid in own}
    infos = []
    for pid, proc in sorted(procs.items()):
        info = describe(proc)
        reason = not_attachable_reason(proc, info)
        info["attachable"] = reason is None
        info["reason"] = reason
        infos.append(info)
    classify(infos, procs)
    if samples:
        percent = procfs.cpu_percent(samples, started)
        for info in infos:
            info["cpu"] = percent.get(info["pid"], 0.0)
    return infos


def end_probes(markers, settle: float = 1.0):
    """End what the CLI's silent candidates left in this container (a `python3` wrapper that blocks, and what it
    started): every process `kubectl exec` started (ppid 0) whose last argument is one of ``markers``, and its
    descendants, deepest first, each given ``settle`` seconds to be reaped by its parent (killed first, a parent
    would leave its children to pid 1, the app, as zombies). Returns the pids signalled."""
    import signal
    markers = {m for m in markers if isinstance(m, str) and m.startswith(PROBE_MARK) and len(m) < 80}
    if not markers:
        return []
    procs, children = {}, {}
    for pid in procfs.all_pids():
        try:
            proc = procfs.Proc(pid)
        except (ProcessLookupError, ValueError, IndexError):
            continue
        procs[pid] = proc
        children.setdefault(proc.ppid, []).append(pid)
    order = []

    def descend(pid, depth):
        if depth < 64:
            for child in children.get(pid, []):
                descend(child, depth + 1)
        order.append(pid)

    for pid, proc in procs.items():
        if proc.ppid == 0 and proc.cmdline and proc.cmdline[-1] in markers:
            descend(pid, 0)
    ended = []
    for pid in order:  # children before their parents
        if signal_once(procs[pid], signal.SIGKILL):
            ended.append(pid)
            until = time.monotonic() + settle
            while time.monotonic() < until and procfs.read_text("/proc/%d/stat" % pid):
                time.sleep(0.02)  # its parent reaps it (a shell waiting for its child): no event for that
    return ended


def signal_once(proc, signum) -> bool:
    """Send ``signum`` to the process ``proc`` read, not to another that reused its pid since."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:
            return False
        try:
            if procfs.Proc(proc.pid).start_ticks != proc.start_ticks:
                return False
            import signal
            signal.pidfd_send_signal(fd, signum)
            return True
        except (OSError, ProcessLookupError, ValueError, IndexError):
            return False
        finally:
            os.close(fd)
    try:
        os.kill(proc.pid, signum)
        return True
    except OSError:
        return False
