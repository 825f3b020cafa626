"""Whole-zoo report: compile time, host latency vs onnxruntime, and whether the rpi4 build verifies under qemu.

    python tools/bench_zoo.py [--models a,b] [--runs 10] [--json results/zoo.json]

A benchmark, not a test: latency depends on this machine and its load. qemu is used for correctness only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")

from edgevit import emulation, zoo  # noqa: E402
from edgevit.bench import bench  # noqa: E402
from edgevit.tables import format_table  # noqa: E402
from edgevit.compiler import compile_for_target  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.frontend import load_model  # noqa: E402
from edgevit.reference import compare, random_inputs, run_onnxruntime  # noqa: E402
from edgevit.runtime.artifact import Artifact  # noqa: E402
from edgevit.targets import get_target  # noqa: E402


def one_model(name: str, runs: int, tmp: Path, python) -> dict:
    row = {"model": name}
    start = time.monotonic()
    model = load_model(name)
    row["export_s"] = time.monotonic() - start
    meta = compile_for_target(model, get_target("host"), tmp / f"{name}-host.tar", command="tools/bench_zoo.py")
    row["compile_host_s"] = sum(meta["timings"].values())
    report = bench(str(tmp / f"{name}-host.tar"), runs=runs, warmup=2, threads=1)
    row.update(edgevit_ms=report["engines"]["edgevit"]["median_ms"],
               onnxruntime_ms=report["engines"]["onnxruntime"]["median_ms"],
               ratio=report["ratio_vs_onnxruntime"], host_rel_error=report["agreement"]["max_rel_error"])
    meta = compile_for_target(model, get_target("rpi4"), tmp / f"{name}-rpi4.tar", command="tools/bench_zoo.py")
    row["compile_rpi4_s"] = sum(meta["timings"].values())
    if python is not None:
        inputs = random_inputs(model.inputs, 0)
        try:
            with Artifact.open(tmp / f"{name}-rpi4.tar") as art:
                outputs, seconds = emulation.run_artifact(python, art.dir, inputs)
                result = compare(outputs, run_onnxruntime(art.reference, inputs))
            row.update(rpi4_qemu="verified" if result.ok else "MISMATCH", rpi4_rel_error=result.max_rel_error,
                       rpi4_qemu_s=seconds[0])
        except EdgevitError as exc:
            row["rpi4_qemu"] = f"failed: {exc}"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo names (default all)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--skip-qemu", action="store_true")
    parser.add_argument("--json", default="results/zoo.json")
    args = parser.parse_args()
    python = None if args.skip_qemu else emulation.prepare("aarch64")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"[bench_zoo] {name}", file=sys.stderr, flush=True)
            rows.append(one_model(name, args.runs, Path(tmp), python))
    print(format_table([[r["model"], f"{r['compile_host_s']:.1f}", f"{r['compile_rpi4_s']:.1f}", f"{r['edgevit_ms']:.1f}",
                   f"{r['onnxruntime_ms']:.1f}", f"{r['ratio']:.1f}x", f"{r['host_rel_error']:.1g}",
                   r.get("rpi4_qemu", "skipped")] for r in rows],
                 ["model", "compile host s", "compile rpi4 s", "edgevit ms", "onnxruntime ms", "ratio",
                  "host rel err", "rpi4 under qemu"]))
    print("1 thread each; edgevit builds untuned (default schedules); qemu checks correctness, not speed.")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
