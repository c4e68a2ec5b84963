"""attach's first session against a hostile local target (session 8's red team): what the target writes where
attach reads it must end in one line and a documented exit code, never a traceback, and reach the terminal
escaped."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.py314


@pytest.mark.parametrize("since", ['"yesterday"', "Infinity", "NaN", "1e300"])
def test_a_forged_server_record_gives_no_traceback(spawn, wand, since):
    """The app writes the record attach trusts for "already listening" and holds the port it names. Before:
    a string ``since`` raised TypeError and Infinity/NaN OverflowError/ValueError out of the report (exit 1,
    a traceback); a time to come printed a negative age."""
    app = spawn("forged_record.py", since)
    result = wand("attach", "pid/%d" % app.pid, "--port", app.info["port"], "--timeout", "20")
    assert "Traceback" not in result.stderr, result.stderr
    if since.startswith('"'):  # a field of the wrong type: the record is out of protocol
        assert result.returncode == 6, (result.returncode, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "'since' is a JSON string" in result.stderr, result.stderr
    else:  # a number that is no time: the server is reported, without an age
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        assert "already listening on 127.0.0.1:%s" % app.info["port"] in result.stdout, result.stdout
        assert "started by" not in result.stdout, result.stdout
    assert "\x1b" not in result.stdout + result.stderr and "\u202e" not in result.stdout + result.stderr
    assert app.alive()
