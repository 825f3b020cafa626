"""Run the ``edgevit`` CLI in-process on a bad input and judge the answer.

A clean answer: the documented non-zero exit code, exactly one line on stderr (progress notes ``[edgevit] ...``
aside) starting with ``edgevit: error:``, no traceback, no protected file changed (sha256 before and after) and
no forbidden file opened (seen through a Python audit hook on ``open``).

With ``EDGEVIT_BAD_INPUTS_LOG=FILE`` every judged case appends one JSON line to FILE: what
``tools/bad_inputs_report.py`` counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from edgevit.cli import main

_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _digest(path: Path) -> str | None:
    path = Path(path)
    if path.is_dir():
        return "dir:" + ",".join(sorted(f"{p.relative_to(path)}={_digest(p)}" for p in path.rglob("*") if p.is_file()))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@dataclass
class Outcome:
    """What one CLI call did."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    crashed: str | None = None              # the traceback of an exception that escaped main()
    changed: list[str] = field(default_factory=list)
    opened_forbidden: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("[edgevit]")]

    @property
    def traceback(self) -> bool:
        return self.crashed is not None or "Traceback" in self.stderr

    def problems(self, code: int | None, needles=(), may_accept: bool = False) -> list[str]:
        """Why this is not a clean refusal with exit ``code`` (None: any non-zero code); empty when clean.

        ``may_accept``: exit 0 is a right answer too (a mutation that left a valid input).
        """
        found = []
        if self.traceback:
            found.append(f"traceback: {(self.crashed or self.stderr)[-1500:]}")
        if self.code == 0:
            if not may_accept:
                found.append("wrongly accepted (exit 0)")
            return found + [f"changed {p}" for p in self.changed] + [f"opened {p}" for p in self.opened_forbidden]
        elif code is not None and self.code != code:
            found.append(f"exit {self.code}, documented {code}")
        lines = self.error_lines
        if len(lines) != 1 or not lines[0].startswith("edgevit: error: "):
            found.append(f"stderr is not one 'edgevit: error:' line: {lines[:5]}")
        else:
            found += [f"'{n}' not in the message" for n in needles if n not in lines[0]]
        found += [f"changed {p}" for p in self.changed]
        found += [f"opened {p}" for p in self.opened_forbidden]
        return found


def run_cli(argv, protect=(), forbidden=()) -> Outcome:
    """Call ``edgevit.cli.main(argv)`` with captured output, watching ``protect`` and ``forbidden`` files."""
    global _OPENED
    argv = [str(a) for a in argv]
    before = {str(p): _digest(p) for p in protect}
    out, err = io.StringIO(), io.StringIO()
    crashed = None
    _OPENED = []
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help / --version only
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # what a user would see as a Python traceback
                crashed, code = traceback.format_exc(), 1
    finally:
        opened, _OPENED = _OPENED, None
    bad = {str(Path(p).resolve()) for p in forbidden}
    return Outcome(argv, code, out.getvalue(), err.getvalue(), crashed,
                   [p for p, digest in before.items() if _digest(p) != digest],
                   sorted({p for p in opened if str(Path(p).resolve()) in bad}))


def record(case: str, outcome: Outcome, code: int | None, problems: list[str], may_accept: bool = False) -> None:
    """Append the judged case to ``$EDGEVIT_BAD_INPUTS_LOG`` (if set)."""
    log = os.environ.get("EDGEVIT_BAD_INPUTS_LOG")
    if not log:
        return
    with open(log, "a") as f:
        f.write(json.dumps({"case": case, "argv": outcome.argv, "code": outcome.code, "expected": code,
                            "clean": not problems, "traceback": outcome.traceback,
                            "wrong_accept": outcome.code == 0 and not may_accept, "problems": problems}) + "\n")


def assert_refused(case: str, argv, code: int | None, needles=(), protect=(), forbidden=(),
                   may_accept: bool = False) -> Outcome:
    """Run ``argv`` and assert a clean refusal (see :meth:`Outcome.problems`); records the case."""
    outcome = run_cli(argv, protect, forbidden)
    problems = outcome.problems(code, needles, may_accept)
    record(case, outcome, code, problems, may_accept)
    assert not problems, f"{case}: {argv}\n" + "\n".join(problems)
    return outcome
