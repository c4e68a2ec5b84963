"""Distribution, for real: krew/build's archive and manifest (checked by krew's own validator and installer),
the zipapp in a clean interpreter, and `pip install .`, `pipx install .`, `uv tool install .` seen through
`kubectl plugin list` and kubectl's plugin completion. Cluster runs: tests/e2e/test_dist_cluster.py."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import zipfile

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
import distkit  # noqa: E402
from distkit import build, manifest_problems, run  # noqa: E402

VERSION = distkit.version()
PLATFORMS = [("linux", "amd64"), ("linux", "arm64"), ("darwin", "amd64"), ("darwin", "arm64")]


# -- the manifest ------------------------------------------------------------------------------------------------

def test_committed_manifest_follows_krew_rules():
    with open(os.path.join(REPO, "plugins.yaml")) as f:
        doc = yaml.safe_load(f)
    assert manifest_problems(doc) == []
    assert doc["spec"]["version"] == "v" + VERSION  # krew/build was run after the last version bump
    assert sorted((p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"])
                  for p in doc["spec"]["platforms"]) == sorted(PLATFORMS)


@pytest.mark.parametrize("breakage, problem", [
    (lambda d: d["metadata"].update(name="kube-wand"), "name"),
    (lambda d: d["metadata"].update(name="Wand"), "name"),
    (lambda d: d["spec"].update(version="0.1.0"), "version"),
    (lambda d: d["spec"].update(shortDescription="two\nlines"), "shortDescription"),
    (lambda d: d["spec"]["platforms"][0]["selector"]["matchLabels"].update(distro="x"), "selector"),
    (lambda d: d["spec"]["platforms"][1]["selector"]["matchLabels"].update(arch="amd64"), "overlap"),
    (lambda d: d["spec"]["platforms"][0].update(sha256="ABC"), "sha256"),
    (lambda d: d["spec"]["platforms"][0].update(files=[{"from": "kubectl-wand", "to": "."}]), "LICENSE"),
    (lambda d: d["spec"]["platforms"][0]["files"][0].pop("to"), "files"),
    (lambda d: d["spec"]["platforms"][0].pop("bin"), "bin"),
])
def test_manifest_checks_catch_each_rule(breakage, problem):
    with open(os.path.join(REPO, "plugins.yaml")) as f:
        doc = yaml.safe_load(f)
    breakage(doc)
    assert any(problem in p for p in manifest_problems(doc)), manifest_problems(doc)


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("release"))


def test_build_records_the_archive_in_the_manifest(release):
    with open(release.manifest) as f:
        text = f.read()
    doc = yaml.safe_load(text)
    with open(release.archive, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert manifest_problems(doc, archive_sha256=sha) == []
    assert all(p["uri"].endswith("/v%s/kubectl-wand-v%s.tar.gz" % (VERSION, VERSION)) for p in doc["spec"]["platforms"])
    with open(os.path.join(REPO, "plugins.yaml")) as f:
        committed = f.read()
    strip = lambda t: re.sub(r"sha256: \S+", "sha256: -", t)  # noqa: E731
    assert strip(text) == strip(committed)  # the build touches the sha256 lines only


def test_build_is_reproducible(release, tmp_path):
    again = build(tmp_path)
    with open(release.archive, "rb") as a, open(again.archive, "rb") as b:
        assert a.read() == b.read()


def test_krew_validator_accepts_the_manifest_and_rejects_overlaps(release, krew_bin, tmp_path):
    good = tmp_path / "good" / "wand.yaml"  # krew takes the plugin name from the file name
    good.parent.mkdir()
    shutil.copy(release.manifest, good)
    proc = run([os.path.join(krew_bin, "validate-krew-manifest"), "-manifest", str(good), "-skip-install"])
    assert proc.returncode == 0 and "no overlapping spec.platform[].selector" in proc.stderr, proc.stderr
    bad = tmp_path / "bad" / "wand.yaml"
    bad.parent.mkdir()
    bad.write_text(good.read_text().replace("os: darwin", "os: linux"))
    proc = run([os.path.join(krew_bin, "validate-krew-manifest"), "-manifest", str(bad), "-skip-install"])
    assert proc.returncode != 0 and "overlapping" in proc.stderr, proc.stderr


# -- the archive and the zipapp ---------------------------------------------------------------------------------

def test_archive_holds_the_executable_zipapp_and_license(release):
    with tarfile.open(release.archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["LICENSE", "kubectl-wand"]
        assert members["kubectl-wand"].mode == 0o755 and members["LICENSE"].mode == 0o644
        app = tar.extractfile("kubectl-wand").read()
        with open(os.path.join(REPO, "LICENSE"), "rb") as f:
            assert tar.extractfile("LICENSE").read() == f.read()
    assert app.startswith(b"#!/usr/bin/env python3\n")
    names = zipfile.ZipFile(io.BytesIO(app)).namelist()
    for needed in ("__main__.py", "kubectl_wand/cli.py", "kubectl_wand/completion.py", "kubectl_wand/agent/boot.py",
                   "yaml/__init__.py", "debugpy/__init__.py",
                   ):
        assert needed in names
    compiled = [n for n in names if n.endswith((".so", ".pyd", ".dll", ".dylib", ".pyc", ".exe"))]
    assert compiled == [] and not any("__pycache__" in n for n in names)
    assert not any(n.startswith(("psutil/", "tabulate")) for n in names)


@pytest.fixture(scope="session")
def clean_python():
    """An interpreter run with -I -S: no site-packages at all, so every import must come from the zipapp."""
    py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return [py, "-I", "-S"]


def test_zipapp_runs_in_a_clean_interpreter(release, clean_python, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "WAND_CACHE": str(tmp_path / "cache")}
    first = run(clean_python + [release.zipapp, "--help"], env=env)
    assert first.returncode == 0 and first.stdout.startswith("Usage:\n  kubectl wand"), first.stderr
    unpacked = [d for d in os.listdir(tmp_path / "cache" / "zipapp") if not d.startswith(".")]
    assert len(unpacked) == 1 and "." not in unpacked[0]  # one complete copy, no leftover temp dir
    root = str(tmp_path / "cache" / "zipapp" / unpacked[0])
    listing = run(clean_python + [release.zipapp, "get", "processes", "-o", "yaml"], env=env, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert isinstance(yaml.safe_load(listing.stdout)["items"], list)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import yaml, debugpy; "
             "from kubectl_wand import debugpy_bundle; import tarfile, io; "
             "names = tarfile.open(fileobj=io.BytesIO(debugpy_bundle.blob())).getnames(); "
             "print(yaml.__with_libyaml__, all(m.__file__.startswith(sys.argv[1]) for m in (yaml, "
             "debugpy)), 'debugpy/__init__.py' in names, any(n.endswith('.so') for n in names))")
    proc = run(clean_python + ["-c", probe, root], env=env, timeout=120)
    assert proc.stdout.split() == ["False", "True", "True", "False"], proc.stdout + proc.stderr


def test_zipapp_runs_after_unpacking_once(release, clean_python, tmp_path):
    # Start-up time is a benchmark (bench/bench_local.py), not a test: here only that it runs, twice.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "WAND_CACHE": str(tmp_path / "cache")}
    assert run(clean_python + [release.zipapp, "--version"], env=env).returncode == 0
    assert (tmp_path / "cache" / "zipapp").is_dir()
    help_text = run(clean_python + [release.zipapp, "--help"], env=env)
    assert help_text.returncode == 0 and help_text.stdout.startswith("Usage:")


# -- krew --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def krew_bin():
    if not shutil.which("go"):
        pytest.skip("go not on PATH: krew is built from the Go module proxy")
    proc = run([os.path.join(REPO, "krew", "install-krew")], timeout=1200)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("os_name, arch", PLATFORMS)
def test_krew_installs_every_platform(release, krew_bin, os_name, arch, tmp_path):
    proc = distkit.krew_install(krew_bin, release, tmp_path / "krew", env={"KREW_OS": os_name, "KREW_ARCH": arch})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = tmp_path / "krew" / "store" / "wand" / ("v" + VERSION)
    assert sorted(os.listdir(store)) == ["LICENSE", "kubectl-wand"]
    assert os.access(tmp_path / "krew" / "bin" / "kubectl-wand", os.X_OK)


def test_krew_installed_plugin_runs_through_kubectl(release, krew_bin, tools_path, tmp_path):
    assert distkit.krew_install(krew_bin, release, tmp_path / "krew").returncode == 0
    bin_dir = str(tmp_path / "krew" / "bin")
    env = {"PATH": bin_dir + os.pathsep + tools_path, "HOME": str(tmp_path), "WAND_CACHE": str(tmp_path / "c")}
    helped = run(["kubectl", "wand", "--help"], env=env)
    assert helped.returncode == 0 and "kubectl wand get processes deploy/web" in helped.stdout, helped.stderr
    listed = run(["kubectl", "wand", "get", "processes"], env=env, timeout=60)
    assert listed.returncode == 0 and listed.stdout.startswith("PID"), listed.stderr
    distkit.assert_plugin_list_clean(env, bin_dir, completer=False)


# -- pip, pipx, uv -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tools_path(tmp_path_factory):
    """A directory with only kubectl and python3: PATH for `kubectl plugin list` without stray plugins."""
    return distkit.tools_dir(tmp_path_factory.mktemp("tools"))


@pytest.fixture(scope="session")
def installers(tmp_path_factory):
    return distkit.Installers(tmp_path_factory.mktemp("installers"))


@pytest.mark.parametrize("how", ["pip", "pipx", "uv"])
def test_install_gives_both_commands_with_a_clean_plugin_list(installers, tools_path, how, tmp_path):
    bin_dir = getattr(installers, how)(tmp_path)
    for name in ("kubectl-wand", "kubectl_complete-wand"):
        assert os.access(os.path.join(bin_dir, name), os.X_OK), os.listdir(bin_dir)
    env = {"PATH": bin_dir + os.pathsep + tools_path, "HOME": str(tmp_path)}
    distkit.assert_plugin_list_clean(env, bin_dir, completer=True)
    version = run(["kubectl", "wand", "--version"], env=env)
    assert version.stdout.strip() == "kubectl-wand " + VERSION, version.stderr
    completed = run(["kubectl", "__complete", "wand", "get", "processes", "-"], env=env)
    assert "--all-namespaces" in completed.stdout.splitlines() and completed.stdout.endswith(":4\n"), completed.stderr
    assert run([os.path.join(bin_dir, "kubectl_complete-wand"), ""], env=env).stdout.split() == [
        "get", "attach", "exec-py", "check", "stack", "profile", "trace", "mem", "pdb", ":4"]
