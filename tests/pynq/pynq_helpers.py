"""Helpers shared by the PYNQ tests: run the board bench in the pynq venv, read a bundle's golden outputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BOARD_BENCH = Path(__file__).parent / "board_bench.py"


def run_on_board(python: str, *args, env: dict | None = None) -> dict:
    """Run ``board_bench.py ARGS`` in the pynq venv with edgevit's board side from this checkout; its JSON."""
    proc = subprocess.run([python, str(BOARD_BENCH), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.returncode == 0, f"board bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_golden(bundle: Path) -> np.ndarray:
    cfg = json.loads((bundle / "bundle.json").read_text())
    return np.fromfile(bundle / "testdata" / "golden.bin", "<i2").reshape(-1, cfg["buffers"]["output"]["elements"])
