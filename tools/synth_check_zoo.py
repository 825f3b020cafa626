"""Generate the HLS project of every zoo model the FPGA backend supports and run the synthesis-mode check on it.

    python tools/synth_check_zoo.py [--board zcu102] [--out DIR] [--every-unit] [MODEL ...]

Projects are written without testbench data (the check reads only what synthesis reads), calibrated on one
seeded random input; each top dispatches only its model's ops, so the check sees the units synthesis would build
(``--every-unit``: every op, the whole unit library). Exit 0 when every project passes; otherwise the violations
are printed, file:line.
tests/hls/test_synth_check.py runs the same check on the same models in CI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevit import zoo
from edgevit.hls import project, synth_check
from edgevit.settings import seed

MODELS = ("tiny_mobilevit", "mobilevit_xxs", "swiftformer_xs", "efficientformer_l1", "mobilevitv2_050")


def generate_sources(name: str, board: str, out: Path, every_unit: bool = False) -> Path:
    """The project of zoo model ``name`` (or tiny_mobilevit) for ``board``, without testbench data (``every_unit``:
    dispatching every op)."""
    if name == "tiny_mobilevit":
        from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit

        model, shape = build_tiny_mobilevit().eval(), (1, 1, 8, 8)
    else:
        model, shape = zoo.build(name), zoo.get_entry(name).input_shape
    sample = np.random.default_rng(seed()).standard_normal(shape).astype(np.float32)
    _, path = project.generate(model, shape, board, out, [sample], meta={"model": name}, testbench=False,
                                  every_unit=every_unit)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--board", default="zcu102")
    parser.add_argument("--out", type=Path, help="where to keep the projects (default: a temporary folder)")
    parser.add_argument("--every-unit", action="store_true", help="dispatch every op, not only the model's")
    args = parser.parse_args(argv)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for name in args.models:
            t0 = time.perf_counter()
            path = generate_sources(name, args.board, root / name, args.every_unit)
            t1 = time.perf_counter()
            report = synth_check.check_project(path)
            t2 = time.perf_counter()
            print(f"{name}: generated in {t1 - t0:.1f} s, checked in {t2 - t1:.1f} s: {report.summary()}\n"
                  f"  units: {' '.join(sorted(report.units))}", flush=True)
            failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
