"""Run the bad-input suite (tests/hardening) and count its cases: clean, tracebacks, wrongly accepted, other.

    python tools/bad_inputs_report.py [--list] [PYTEST ARGS...]

Every case the suite judges is logged (``EDGEVIT_BAD_INPUTS_LOG``); this prints the totals, then the cases
that were not clean (``--list``: every case). Exit 0 only if every case was clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    show_all = "--list" in argv
    extra = [a for a in argv if a != "--list"]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cases.jsonl"
        env = {**os.environ, "EDGEVIT_BAD_INPUTS_LOG": str(log), "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(REPO / "tests" / "hardening"), *extra], cwd=REPO, env=env,
                              capture_output=True, text=True)
        cases = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    kinds = Counter()
    for case in cases:
        kinds["cases"] += 1
        kinds["clean"] += case["clean"]
        kinds["tracebacks"] += case["traceback"]
        kinds["wrong-accepts"] += case["wrong_accept"]
        kinds["other problems"] += not case["clean"] and not case["traceback"] and not case["wrong_accept"]
        kinds["accepted (valid after mutation)"] += case["code"] == 0 and not case["wrong_accept"]
    print(" / ".join(f"{k} {kinds[k]}" for k in ("cases", "clean", "tracebacks", "wrong-accepts",
                                                  "other problems")))
    print(f"(of the clean: {kinds['accepted (valid after mutation)']} byte mutations that left a valid file, "
          "run normally)")
    for case in cases:
        if show_all or not case["clean"]:
            print(f"{'clean' if case['clean'] else 'NOT CLEAN'}  exit {case['code']} (documented "
                  f"{case['expected']})  {case['case']}" + "".join(f"\n    {p[:300]}" for p in case["problems"]))
    print(f"pytest: {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]}")
    return 0 if cases and kinds["clean"] == kinds["cases"] and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
