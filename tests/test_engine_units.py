"""docker/NAME and podman/NAME without an engine: parsing, the one-line refusals made from the CLIs' own
messages (as docker 20.10 and podman 4.3 print them, copied from runs on this machine), the flags that do
not go with a container."""
from __future__ import annotations

import pytest

from kubectl_wand import errors, targets
from kubectl_wand.errors import WandError
from kubectl_wand.transport.engine import Engine
from kubectl_wand.transport.netns import enterable


def test_engine_targets_parse():
    for kind in ("docker", "podman"):
        target = targets.parse("%s/web-1" % kind)
        assert (target.kind, target.name, target.engine, target.local, target.workload) == (
            kind, "web-1", True, False, False)
    assert not targets.parse("deploy/web").engine and not targets.parse("pid/3").engine
    with pytest.raises(WandError) as bad:
        targets.parse("docker/a/b")
    assert bad.value.code == errors.USAGE


@pytest.mark.parametrize("stderr, code, text", [
    ("Error: No such container: web", errors.NOT_FOUND, "docker/web not found: no such container"),
    ("Error: no container with name or ID \"web\" found: no such container", errors.NOT_FOUND,
     "docker/web not found"),
    ("Error response from daemon: Container 0123 is not running", errors.NOT_FOUND, "docker/web is not running"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
     errors.ENVIRONMENT, "no docker engine answers (the default docker engine)"),
    ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: "
     "Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/containers/web/json\": dial unix /var/run/docker.sock: "
     "connect: permission denied", errors.ENVIRONMENT, "no permission on docker's socket"),
])
def test_cli_messages_become_one_line(stderr, code, text, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    error = Engine("docker").failure(stderr, "docker/web")
    assert error.code == code and error.message.startswith(text), error.message
    assert "\n" not in error.message


def test_the_endpoint_named_is_the_one_the_environment_chose(monkeypatch):
    monkeypatch.setenv("CONTAINER_HOST", "ssh://core@build:22/run/podman/podman.sock")
    assert Engine("podman").endpoint() == "CONTAINER_HOST=ssh://core@build:22/run/podman/podman.sock"


def test_a_process_that_is_not_the_container_is_never_entered():
    # this test's own process exists here, but its cgroup names no such container
    import os
    assert "not the container's" in enterable(os.getpid(), "f" * 64)
    assert "does not run on this machine" in enterable(2 ** 22 + 1, "f" * 64)
    assert enterable(0, "f" * 64)
