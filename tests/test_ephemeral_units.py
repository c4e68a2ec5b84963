"""--ephemeral's decisions that need no cluster: which debug container is reused, what each kubectl error means
(the stderr lines are kubectl 1.32's own, captured from the e2e cluster), what the idle process looks like."""
from __future__ import annotations

from kubectl_wand import errors, printers
from kubectl_wand.agent import processes
from kubectl_wand.kube import ephemeral as debugc
from kubectl_wand import pipes

IMAGE = "localhost/wand-e2e/py314-app:2d27e18c7ab8"


def pod(ephemeral=(), app_state=None, command=("python3", "-m", "uvicorn")):
    specs, statuses = [], []
    for name, target, image, state, ours in ephemeral:
        cmd = ["python3", "-S", "-c", debugc.IDLE, debugc.MARKER] if ours else ["sh"]
        specs.append({"name": name, "targetContainerName": target, "image": image, "command": cmd})
        statuses.append({"name": name, "state": {state: {"startedAt": "2026-11-23T14:%02d:00Z" % len(statuses)}}})
    return {"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "app", "image": IMAGE, "command": list(command)}],
                     "ephemeralContainers": specs},
            "status": {"containerStatuses": [{"name": "app", "state": app_state or {"running": {}}}],
                       "ephemeralContainerStatuses": statuses}}


def test_reuse_only_a_running_container_of_ours_for_the_same_target_and_image():
    p = pod([("wand-old", "app", IMAGE, "terminated", True),
             ("wand-a", "app", IMAGE, "running", True),
             ("wand-b", "app", IMAGE, "running", True),
             ("wand-other", "sidecar", IMAGE, "running", True),
             ("wand-human", "app", IMAGE, "running", False),
             ("debugger", "app", IMAGE, "running", False)])
    assert debugc.reusable(p, "app") == "wand-b"  # the newest running one
    assert debugc.reusable(p, "app", IMAGE) == "wand-b"
    assert debugc.reusable(p, "app", "busybox") is None  # --image asks for another image
    assert debugc.reusable(p, "sidecar") == "wand-other"
    assert debugc.reusable(pod([("wand-old", "app", IMAGE, "terminated", True)]), "app") is None


def test_target_state_and_interpreter():
    assert debugc.target_state(pod(), "app") is None
    waiting = pod(app_state={"waiting": {"reason": "CrashLoopBackOff"}})
    assert debugc.target_state(waiting, "app") == "CrashLoopBackOff"
    assert debugc.interpreter(pod(), "app") == "python3"
    assert debugc.interpreter(pod(command=("/opt/py/bin/python3.14", "app.py")), "app") == "/opt/py/bin/python3.14"
    assert debugc.interpreter(pod(command=("/bin/sh", "-c", "exec python3")), "app") == "python3"


def test_kubectl_debug_errors_are_one_line_with_the_fix():
    p = pod()
    psa = debugc.add_error('Error from server (Forbidden): pods "eph-baseline" is forbidden: violates PodSecurity '
                           '"baseline:latest": non-default capabilities (container "wand-x" must not include '
                           '"SYS_PTRACE" in securityContext.capabilities.add)', p, pipes.last_line)
    assert "'baseline'" in psa.message and "pod-security.kubernetes.io/enforce=baseline" in psa.message
    rbac = debugc.add_error('Error from server (Forbidden): pods "eph-readonly" is forbidden: User "system:service'
                            'account:wand-e2e:eph-exec-only" cannot patch resource "pods/ephemeralcontainers" in API '
                            'group "" in the namespace "wand-e2e"', p, pipes.last_line)
    assert "patch on pods/ephemeralcontainers" in rbac.message and rbac.code == errors.ENVIRONMENT
    other = debugc.add_error('The Pod "eph-readonly" is invalid: spec.ephemeralContainers[1].targetContainerName: '
                             'Not found: "nope"', p, pipes.last_line)
    assert other.message.startswith("kubectl debug on pod/p failed: The Pod")
    for error in (psa, rbac, other):
        assert "\n" not in error.message


def test_start_errors_name_the_image():
    no_python = debugc.start_error("wand-1", "busybox", "StartError", 'failed to create containerd task: exec: '
                                   '"python3": executable file not found in $PATH')
    assert "busybox has no Python" in no_python.message and "--image" in no_python.message
    pull = debugc.start_error("wand-1", "none.invalid/x:1", "ErrImagePull", "failed to resolve reference")
    assert "none.invalid/x:1: ErrImagePull" in pull.message and "--image" in pull.message


def test_the_idle_process_is_a_helper_and_prints_on_one_line():
    command = " ".join(["python3", "-S", "-c", debugc.IDLE, debugc.MARKER])
    assert processes.is_helper(command)
    compile(debugc.IDLE, "<idle>", "exec")  # it is the container's command: it must at least compile
    table = printers.table([{"command": command}], [("COMMAND", "command")])
    assert len(table.splitlines()) == 2
