"""The user's cache is trusted only while private, and the kubeconfig namespace kept there follows every edit."""
from __future__ import annotations

import os

import pytest

from kubectl_wand import usercache
from kubectl_wand.kube import config

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: one
  context: {cluster: c, user: u, namespace: %s}
- name: two
  context: {cluster: c, user: u}
current-context: one
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WAND_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def flags(path, context=None):
    return config.KubeFlags({"kubeconfig": str(path), "context": context})


def test_private_files_are_read_and_others_are_not(cache):
    assert usercache.write("x", b"data") and usercache.read("x") == b"data"
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700" and oct(os.stat(cache / "x").st_mode & 0o777) == "0o600"
    os.chmod(cache / "x", 0o620)  # group may write it: someone else could have
    assert usercache.read("x") is None
    os.chmod(cache / "x", 0o600)
    os.chown(cache / "x", 65534, 65534)  # another uid's file
    assert usercache.read("x") is None
    os.unlink(cache / "x")
    target = cache.parent / "elsewhere"
    target.write_bytes(b"planted")
    os.symlink(target, cache / "x")  # a name pointing elsewhere is never followed
    assert usercache.read("x") is None
    assert usercache.write("x", b"mine") and target.read_bytes() == b"planted"  # replaced, not written through
    assert usercache.read("x") == b"mine"
    os.chmod(cache, 0o777)  # a directory others may write: nothing in it is trusted, nothing is written
    assert usercache.read("x") is None and not usercache.write("y", b"z")
    assert not (cache / "y").exists()


def test_namespace_comes_from_the_context_and_is_kept_until_the_file_changes(cache, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % "team-a")
    assert flags(kubeconfig).namespace() == "team-a"
    assert flags(kubeconfig, "two").namespace() == "default"  # its context names none
    monkeypatch.setattr(config.KubeFlags, "merged_kubeconfig", lambda self: pytest.fail("parsed again"))
    assert flags(kubeconfig).namespace() == "team-a" and flags(kubeconfig, "two").namespace() == "default"
    monkeypatch.undo()
    monkeypatch.setenv("WAND_CACHE", str(cache))
    before = os.stat(kubeconfig)
    kubeconfig.write_text(KUBECONFIG % "team-b")  # the same size...
    os.utime(kubeconfig, ns=(before.st_atime_ns, before.st_mtime_ns))  # ...and time, as a 1 s-granular filesystem
    assert os.stat(kubeconfig).st_size == before.st_size
    assert flags(kubeconfig).namespace() == "team-b"
    assert flags(kubeconfig, "two").namespace() == "default"
    assert config.KubeFlags({"kubeconfig": str(kubeconfig)}, namespace="given").namespace() == "given"


def test_inside_a_pod_a_context_without_namespace_means_the_pods_own(cache, tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % "team-a")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    (account / "namespace").write_text("apps\n")
    monkeypatch.setattr(config, "SERVICE_ACCOUNT", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert flags(kubeconfig, "two").namespace() == "apps"  # as kubectl: the service account's namespace
    assert flags(kubeconfig).namespace() == "team-a"  # a context that names one wins
    monkeypatch.setenv("POD_NAMESPACE", "downward")
    assert flags(kubeconfig, "two").namespace() == "downward"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert flags(kubeconfig, "two").namespace() == "default"  # not in a pod


def test_a_remembered_interpreter_is_only_ever_one_of_the_candidates(tmp_path, monkeypatch):
    """transport/interpreters.py: the file says which interpreter to try first in a pod's container; a name that
    is not one of the container's candidates (a tampered or stale file) is never run, and the file stays bounded."""
    import json
    from kubectl_wand import usercache
    from kubectl_wand.transport import interpreters
    monkeypatch.setenv("WAND_CACHE", str(tmp_path))
    monkeypatch.setattr(interpreters, "_known", None)
    owned = {"metadata": {"namespace": "ns", "name": "web-1", "uid": "p1",
                          "ownerReferences": [{"controller": True, "uid": "rs1"}]}}
    sibling = {"metadata": {"namespace": "ns", "name": "web-2", "uid": "p2",
                            "ownerReferences": [{"controller": True, "uid": "rs1"}]}}
    usual = ["python3", "python", "python3.14", "/usr/bin/python3.14"]
    assert usercache.write(interpreters.FILE, json.dumps({interpreters.key(owned, "app"): "/bin/sh"}).encode())
    assert interpreters.first(owned, "app", usual) == usual
    interpreters.remember(owned, "app", "/usr/bin/python3.14")
    monkeypatch.setattr(interpreters, "_known", None)  # as the next run reads it
    assert interpreters.first(sibling, "app", usual) == ["/usr/bin/python3.14", "python3", "python", "python3.14"]
    assert interpreters.first(sibling, "other", usual) == usual
    for n in range(interpreters.MAX_ENTRIES + 10):
        interpreters.remember({"metadata": {"namespace": "ns", "uid": "u%d" % n}}, "app", "python")
    assert len(json.loads(usercache.read(interpreters.FILE))) == interpreters.MAX_ENTRIES
    interpreters.forget(sibling, "app")
    assert interpreters.first(owned, "app", usual) == usual
