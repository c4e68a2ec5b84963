"""profile's flame graphs rendered by a real headless browser (issue 22): merged and --per-pod, from a real
CPython 3.14 target whose function and file names are hostile (tests/apps/markup_names.py: NUL, controls XML
forbids, markup, ``]]>``, terminal escapes, a 5000-character name, bytes that are not UTF-8). Before: a frame read
badly wrote a raw NUL into the SVG, and the browser showed a parser-error banner over half a graph.

The browser is Debian's chromium-headless-shell, installed by hack/test (hack/browser); its ``--dump-dom`` prints
the document it built: on XML it cannot parse, a ``parsererror`` element and the graph up to the first error."""
from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.py314
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def browser():
    path = os.environ.get("WAND_BROWSER") or shutil.which("chromium-headless-shell")
    if path:
        return path
    why = os.environ.get("WAND_BROWSER_SKIP") or "no chromium-headless-shell (hack/test installs it: hack/browser)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def rendered(browser, svg, tmp_path):
    """The document the browser built from the file, serialized (--dump-dom). --no-sandbox: Chromium refuses to
    run as root with its sandbox, and the tests run as root; the page is our own file, with no script in it."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--user-data-dir=%s" % (tmp_path / "browser"), "--dump-dom", svg.as_uri()],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-3000:]
    return done.stdout.decode("utf-8")


def names():
    """NAMES of tests/apps/markup_names.py (importing the app would run it)."""
    scope = {}
    with open(os.path.join(os.path.dirname(__file__), "apps", "markup_names.py")) as f:
        source = f.read()
    exec(source[source.index("import os"):source.index("never = ")], scope)
    return scope["NAMES"]


@pytest.fixture
def markup(spawn):
    return spawn("markup_names.py")


@pytest.mark.parametrize("per_pod", [False, True], ids=["merged", "per-pod"])
def test_flame_graph_of_hostile_names_renders_whole_in_a_browser(browser, markup, wand, tmp_path, per_pod):
    svg = tmp_path / "p.svg"
    done = wand("profile", "pid/%d" % markup.pid, "--duration", "1s", "--idle", "-o", svg,
                *(["--per-pod"] if per_pod else []))
    assert done.returncode == 0, done.stderr
    data = svg.read_bytes()
    dom = rendered(browser, svg, tmp_path)
    assert "parsererror" not in dom, dom[:3000]
    # the browser built the whole graph: every frame box of the file is in its document
    built = ET.fromstring(dom)
    assert built.tag == SVG + "svg"
    boxes = [g for g in built.iter(SVG + "g") if g.find(SVG + "rect") is not None]
    assert len(boxes) == len(ET.fromstring(data).findall(SVG + "g")) == data.count(b"<g>")
    tips = [g.find(SVG + "title").text for g in boxes]
    hostile = names()
    # each name has its frame, as text: markup as it is, what XML forbids as \\xNN; a name 3.14's reader cannot
    # read (the NUL one; the one not UTF-8, measured) is <unreadable>, never its bytes
    shown = {kind: [t for t in tips if marker in t] for kind, marker in (
        ("markup", hostile["markup"]), ("long", "long<&" + "x" * 1000), ("controls", "c\\x01\\x08\\x0b\\x0c\\x1f"),
        ("terminal", "\\x1b]0;PWNED\\x07\\x1b[2J"), ("unreadable", "<unreadable> (<unreadable>)"))}
    assert all(shown.values()), {k: len(v) for k, v in shown.items()}
    assert b"\x00" not in data and b"\x1b" not in data


def test_every_name_xml_forbids_is_escaped_where_a_browser_reads_it(browser, tmp_path):
    """What the reader may hand over whatever the sampler does: NUL, lone surrogates (bytes that were not UTF-8),
    U+FFFE, markup; as a frame, a file and a pod's root frame, written by profile's own writer."""
    from kubectl_wand import profiles
    from kubectl_wand.commands import profile
    from kubectl_wand.streams import Streams
    import io
    bad = ["nul\x00", "\udcff\udcfe-not-utf8", "\ufffe\uffff\x01\x0b", "a<b>&c]]>d\"e'", "\x1b[31m\x9b\u202e",
           "L" * 5000]
    frames = [{"function": name, "file": "/srv/%s.py" % name, "line": i + 1} for i, name in enumerate(bad)]
    entry = {"pid": 7, "profile": {"frames": frames, "samples": 6,
                                   "stacks": [{"frames": [i], "count": 1, "thread": 1} for i in range(len(bad))]}}
    for per_pod in (False, True):
        opts = profile.Options()
        opts.format, opts.output, opts.quiet, opts.target = "svg", str(tmp_path / "p.svg"), True, "pod/<&\x00>"
        opts.streams = Streams(io.StringIO(), io.StringIO(), io.StringIO())
        opts.write(profiles.merge([("web-<&\x00\udcff>", entry)], per_pod=per_pod))
        data = (tmp_path / "p.svg").read_bytes()
        data.decode("utf-8")  # strict: no byte of a name that was not UTF-8
        dom = rendered(browser, tmp_path / "p.svg", tmp_path)
        assert "parsererror" not in dom, dom[:3000]
        tips = [g.find(SVG + "title").text for g in ET.fromstring(dom).iter(SVG + "g")]
        assert len(tips) == len(bad) + 1 + per_pod, tips  # every frame, the root "all" and the pod's root frame
        for shown in ("nul\\x00", "\\udcff\\udcfe-not-utf8", "\\ufffe\\uffff\\x01\\x0b", "a<b>&c]]>d\"e'", "L" * 5000):
            assert any(shown in t for t in tips), (shown, tips)
