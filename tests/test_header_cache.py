"""The agent's header kept in the user's private cache (transport/bundle.py: _cached, _keep): a warm run reads it
instead of scanning the modules and gets the same bytes; an entry that is corrupt, made from other sources, or
not private to us (another uid's, or group-writable) is never used."""
import os
import zlib
import subprocess
import sys

import pytest

from kubectl_wand.transport import bundle

OPS = ("list", "stack", "exec", "profile")


def fresh(monkeypatch):
    """This process forgets the headers it built (as a new CLI run starts)."""
    monkeypatch.setattr(bundle, "_HEADERS", {})


def entries(cache):
    return sorted(p for p in os.listdir(cache) if p.startswith("agent-header-"))


def built_without_cache(monkeypatch, tmp_path, op):
    fresh(monkeypatch)
    monkeypatch.setenv("WAND_CACHE", str(tmp_path / "not-a-dir"))
    (tmp_path / "not-a-dir").write_bytes(b"")  # a file: the cache can be neither read nor written
    header = bundle.agent_header(op)
    fresh(monkeypatch)
    return header


def no_scan(monkeypatch):
    def scan(source):
        raise AssertionError("the modules were scanned: the cache was not used")
    monkeypatch.setattr(bundle, "shipped", scan)
    monkeypatch.setattr(bundle, "_SHIPPED", {})


def test_a_warm_run_reads_the_header_from_the_cache_byte_identical(tmp_path, monkeypatch):
    plain = {op: built_without_cache(monkeypatch, tmp_path, op) for op in OPS}
    cache = tmp_path / "cache"
    monkeypatch.setenv("WAND_CACHE", str(cache))
    fresh(monkeypatch)
    assert {op: bundle.agent_header(op) for op in OPS} == plain  # cold: built and kept
    assert len(entries(cache)) == len(OPS)
    for name in entries(cache):
        st = os.stat(cache / name)
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
    fresh(monkeypatch)
    no_scan(monkeypatch)
    assert {op: bundle.agent_header(op) for op in OPS} == plain  # warm: read


def test_a_second_process_uses_what_the_first_kept(tmp_path):
    """Across real CLI processes, as a user runs them: the second one never scans."""
    env = dict(os.environ, WAND_CACHE=str(tmp_path / "cache"))
    show = "import hashlib,sys; from kubectl_wand.transport import bundle; %s" \
        "sys.stdout.write(hashlib.sha256(bundle.boot_line() + bundle.agent_header('stack')).hexdigest())"
    first = subprocess.run([sys.executable, "-c", show % ""], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    refuse = "bundle.shipped = lambda s: (_ for _ in ()).throw(AssertionError('scanned')); "
    second = subprocess.run([sys.executable, "-c", show % refuse], env=env, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout and len(first.stdout) == 64


def keep_and_find(monkeypatch, cache, op):
    monkeypatch.setenv("WAND_CACHE", str(cache))
    fresh(monkeypatch)
    header = bundle.agent_header(op)
    (name,) = entries(cache)
    fresh(monkeypatch)
    return header, cache / name


@pytest.mark.parametrize("damage", ["header byte", "truncated", "magic", "empty"])
def test_a_corrupt_entry_is_rebuilt_not_used(tmp_path, monkeypatch, damage):
    good, path = keep_and_find(monkeypatch, tmp_path / "cache", "list")
    data = bytearray(path.read_bytes())
    if damage == "header byte":
        data[-10] ^= 0x01
    elif damage == "truncated":
        del data[-100:]
    elif damage == "magic":
        data[0] ^= 0x01
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    scans = []
    real = bundle.shipped
    monkeypatch.setattr(bundle, "shipped", lambda source: scans.append(1) or real(source))
    monkeypatch.setattr(bundle, "_SHIPPED", {})
    assert bundle.agent_header("list") == good and scans
    fresh(monkeypatch)
    scans.clear()
    assert bundle.agent_header("list") == good and not scans  # the rebuilt entry is kept and read


def test_an_entry_made_from_other_sources_is_not_used(tmp_path, monkeypatch):
    good, path = keep_and_find(monkeypatch, tmp_path / "cache", "list")
    changed = dict(bundle.sources(), main=bundle.sources()["main"] + "\nCHANGED = 1\n")
    monkeypatch.setattr(bundle, "_SOURCES", changed)
    monkeypatch.setattr(bundle, "_SHIPPED", {})
    header = bundle.agent_header("list")
    assert header != good and header.count(b"\n", 0, 8) == 1


def plant(path, header):
    """A well-formed entry for ``header`` under the name and key the CLI would look for."""
    _, made = bundle._made_from(*bundle.agent_pkg.modules_for("list"))
    assert path.read_bytes().startswith(made)
    path.write_bytes(made + zlib.crc32(header).to_bytes(4, "big") + header)


def test_a_well_formed_entry_that_is_not_private_is_ignored(tmp_path, monkeypatch):
    good, path = keep_and_find(monkeypatch, tmp_path / "cache", "list")
    planted = b"5\nEVIL!"
    plant(path, planted)
    assert bundle.agent_header("list") == planted  # well formed and ours: it is used (so the checks below can fail)
    fresh(monkeypatch)
    plant(path, planted)
    os.chmod(path, 0o620)  # group may write it
    assert bundle.agent_header("list") == good
    if os.geteuid() == 0:  # another uid's file, mode 0600
        fresh(monkeypatch)
        plant(path, planted)
        os.chmod(path, 0o600)
        os.chown(path, 4321, 4321)
        assert bundle.agent_header("list") == good
        fresh(monkeypatch)
        plant(path, planted)  # the CLI's replace made the entry ours again; now the directory is another uid's
        os.chown(path.parent, 4321, 4321)
        assert bundle.agent_header("list") == good
