"""Helpers for the distribution tests (tests/test_dist.py, tests/e2e/test_dist_cluster.py): krew/build runs,
krew's manifest rules, krew installs, and pip/pipx/uv installs into throwaway directories."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KREW_API = "krew.googlecontainertools.github.com/v1alpha2"
# what krew's validate-krew-manifest checks platforms against (krew v0.4.4 cmd/validate-krew-manifest)
KREW_PLATFORMS = [("linux", a) for a in ("386", "amd64", "arm", "arm64", "ppc64le")] + [
    ("darwin", a) for a in ("386", "amd64", "arm64")] + [("windows", a) for a in ("386", "amd64", "arm64")]
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def run(argv, env=None, timeout=60, cwd=None):
    """A real subprocess with text output; ``env`` is the whole environment when given."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def version():
    with open(os.path.join(REPO, "kubectl_wand", "__init__.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


@dataclass
class Release:
    archive: str
    manifest: str
    zipapp: str


def build(out_dir) -> Release:
    """krew/build into out_dir, updating a copy of plugins.yaml there (the checkout stays untouched)."""
    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    manifest = os.path.join(out_dir, "plugins.yaml")
    shutil.copy(os.path.join(REPO, "plugins.yaml"), manifest)
    proc = run([sys.executable, os.path.join(REPO, "krew", "build"), "--out", out_dir, "--manifest", manifest],
               timeout=900)
    assert proc.returncode == 0, proc.stderr
    archive = proc.stdout.strip().splitlines()[-1]
    assert archive == os.path.join(out_dir, "kubectl-wand-v%s.tar.gz" % version())
    return Release(archive=archive, manifest=manifest, zipapp=os.path.join(out_dir, "kubectl-wand"))


# -- krew's manifest rules ---------------------------------------------------------------------------------------

def selector_matches(selector, os_name, arch):
    labels = {"os": os_name, "arch": arch}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        value, op, values = labels.get(expr["key"]), expr["operator"], expr.get("values") or []
        if (op == "In" and value not in values) or (op == "NotIn" and value in values) or (
                op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def manifest_problems(doc, archive_sha256=None):
    """Every krew rule (krew's validation package, validate-krew-manifest, the naming guide) this manifest breaks."""
    problems = []
    spec, name = doc.get("spec") or {}, (doc.get("metadata") or {}).get("name") or ""
    if doc.get("apiVersion") != KREW_API or doc.get("kind") != "Plugin":
        problems.append("apiVersion/kind must be %s Plugin" % KREW_API)
    if not re.fullmatch(r"[\w-]+", name) or name != name.lower() or name.startswith(("kube", "k8s")):
        problems.append("name %r: [\\w-]+, lowercase, no kube/k8s prefix" % name)
    if not SEMVER.match(spec.get("version") or ""):
        problems.append("version %r is not semver with a leading v" % spec.get("version"))
    short = spec.get("shortDescription") or ""
    if not short or "\n" in short or "\r" in short or len(short) > 70:
        problems.append("shortDescription must be one line of at most 70 characters")
    if not spec.get("description") or not str(spec.get("homepage", "")).startswith("https://"):
        problems.append("description and an https homepage are required")
    platforms = spec.get("platforms") or []
    if not platforms:
        problems.append("no platforms")
    for i, p in enumerate(platforms):
        sel = p.get("selector") or {}
        keys = list(sel.get("matchLabels") or {}) + [e.get("key") for e in sel.get("matchExpressions") or []]
        if not keys or set(sel) - {"matchLabels", "matchExpressions"} or set(keys) - {"os", "arch"}:
            problems.append("platform %d: selector may only use os and arch" % i)
        if not any(selector_matches(sel, o, a) for o, a in KREW_PLATFORMS):
            problems.append("platform %d: selector matches no platform krew supports" % i)
        if not str(p.get("uri", "")).startswith("https://"):
            problems.append("platform %d: uri must be https" % i)
        sha = str(p.get("sha256", ""))
        if not re.fullmatch(r"[a-f0-9]{64}", sha) or (archive_sha256 and sha != archive_sha256):
            problems.append("platform %d: sha256 must be the archive's (64 lowercase hex)" % i)
        files = p.get("files")
        if files is not None and (not files or any(not f.get("from") or not f.get("to") for f in files)):
            problems.append("platform %d: files need from and to" % i)
        if not p.get("bin"):
            problems.append("platform %d: bin is required" % i)
        if not any(os.path.basename(f.get("from", "")).upper().startswith(("LICENSE", "COPYING")) for f in files or []):
            problems.append("platform %d: the LICENSE file must be installed" % i)
    for o, a in KREW_PLATFORMS:
        hits = [i for i, p in enumerate(platforms) if selector_matches(p.get("selector") or {}, o, a)]
        if len(hits) > 1:
            problems.append("platforms %s overlap on %s/%s" % (hits, o, a))
    return problems


# -- kubectl, krew ------------------------------------------------------------------------------------------------

def tools_dir(path):
    """A directory holding only kubectl and python3 (what the plugins need), for a PATH with no stray plugins."""
    os.makedirs(str(path), exist_ok=True)
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not on PATH"
    os.symlink(os.path.realpath(kubectl), os.path.join(str(path), "kubectl"))
    # a real interpreter, not a version manager's shim (a shell script that wants more on PATH)
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else os.path.realpath(
        getattr(sys, "_base_executable", sys.executable))
    os.symlink(python, os.path.join(str(path), "python3"))
    return str(path)


def krew_install(krew_bin, release, root, env=None):
    """`kubectl krew install --manifest --archive` into the throwaway KREW_ROOT ``root``."""
    full = dict(os.environ, KREW_ROOT=str(root), PATH=krew_bin + os.pathsep + os.environ["PATH"])
    full.update(env or {})
    return run(["kubectl", "krew", "install", "--manifest=" + release.manifest, "--archive=" + release.archive],
               env=full, timeout=120)


def assert_plugin_list_clean(env, bin_dir, completer):
    """`kubectl plugin list` finds kubectl-wand in bin_dir and warns about nothing (shadowing, not executable)."""
    proc = run(["kubectl", "plugin", "list"], env=env)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "warning" not in text.lower(), text
    assert os.path.join(bin_dir, "kubectl-wand") in proc.stdout.splitlines(), text
    # kubectl lists kubectl-* only; kubectl_complete-wand is its completion helper, never a plugin of its own
    assert "kubectl_complete-wand" not in proc.stdout
    if completer:
        assert os.access(os.path.join(bin_dir, "kubectl_complete-wand"), os.X_OK)


# -- pip, pipx, uv ------------------------------------------------------------------------------------------------

class Installers:
    """One source copy and one wheelhouse (the project's dependencies and build backend) per session, so each
    install below runs offline: `pip install .`, `pipx install .`, `uv tool install .` of the same tree."""

    def __init__(self, base):
        base = str(base)
        self.src = os.path.join(base, "src")
        shutil.copytree(REPO, self.src, ignore=shutil.ignore_patterns(
            ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", "tests", "hack", "bench"))
        self.wheelhouse = os.path.join(base, "wheelhouse")
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        for args in (["wheel", "--wheel-dir", self.wheelhouse, self.src],
                     ["download", "--dest", self.wheelhouse, "--only-binary", ":all:", "setuptools>=61", "wheel"]):
            proc = run(pip + args, timeout=600, env=dict(os.environ))
            assert proc.returncode == 0, proc.stderr
        self.tools = os.path.join(base, "tools")
        self.venv(self.tools)
        proc = run([os.path.join(self.tools, "bin", "pip"), "install", "--quiet", "pipx", "uv"], timeout=600)
        assert proc.returncode == 0, proc.stderr

    @staticmethod
    def venv(path):
        proc = run([sys.executable, "-m", "venv", path], timeout=120)
        assert proc.returncode == 0, proc.stderr

    def offline(self):
        return ["--no-index", "--find-links", self.wheelhouse]

    def pip(self, tmp):
        venv = os.path.join(str(tmp), "venv")
        self.venv(venv)
        proc = run([os.path.join(venv, "bin", "pip"), "install", "--quiet"] + self.offline() + [self.src], timeout=600)
        assert proc.returncode == 0, proc.stderr
        return os.path.join(venv, "bin")

    def pipx(self, tmp):
        tmp = str(tmp)
        env = dict(os.environ, PIPX_HOME=os.path.join(tmp, "pipx"), PIPX_BIN_DIR=os.path.join(tmp, "bin"),
                   PIPX_MAN_DIR=os.path.join(tmp, "man"))
        proc = run([os.path.join(self.tools, "bin", "pipx"), "install", "--python", sys.executable,
                    "--pip-args=" + " ".join(self.offline()), self.src], env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return env["PIPX_BIN_DIR"]

    def uv(self, tmp):
        tmp = str(tmp)
        env = dict(os.environ, UV_TOOL_DIR=os.path.join(tmp, "uv-tools"), UV_TOOL_BIN_DIR=os.path.join(tmp, "bin"),
                   UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=os.path.join(tmp, "uv-cache"))
        proc = run([os.path.join(self.tools, "bin", "uv"), "tool", "install", "--python", sys.executable]
                   + self.offline() + [self.src], env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return env["UV_TOOL_BIN_DIR"]
