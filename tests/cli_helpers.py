"""Helpers for tests that call the CLI in-process (a module name unique across test folders)."""

from __future__ import annotations

from edgevit.cli import main


def run_cli(capsys, *argv):
    """``edgevit ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, expected_code, *needles):
    """The exit code is ``expected_code`` and stderr holds exactly one ``edgevit: error:`` line containing every
    needle, and no traceback."""
    assert code == expected_code, err
    lines = [l for l in err.splitlines() if l.startswith("edgevit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
