"""Host latency of int8 builds: edgevit int8 vs onnxruntime int8 (the same QDQ model) vs edgevit fp32.

    python tools/bench_int8.py [--models mobilevit_xxs,efficientformer_l1,swiftformer_xs] [--runs 20]

For each zoo model: quantize it (per-channel weights, 32 Fashion-MNIST calibration samples), build both the QDQ
and the float model for the host, then time two pairs, each with its engines taking turns in blocks of runs in
processes of their own (``edgevit.bench.bench``, as ``edgevit bench --quantize int8`` and ``edgevit bench``):
edgevit int8 with onnxruntime int8 and LiteRT int8 (ai-edge-quantizer on the same calibration samples), then
edgevit fp32 with onnxruntime fp32 and LiteRT fp32. LiteRT rows need ``tools/setup_litert.sh``; without it the
report says why they are missing. 1 thread. Also
records how far edgevit int8 is from onnxruntime int8, in output quantization steps (``edgevit.quantize.verify``).
Writes results/int8_host.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit.bench import bench  # noqa: E402
from edgevit.quantize import QuantizeSettings  # noqa: E402
from edgevit.tables import format_table  # noqa: E402


def bench_model(name: str, runs: int, warmup: int) -> dict:
    """Quantize, build and time one zoo model (see the module docstring): ``edgevit bench --quantize int8``,
    then ``edgevit bench``."""
    int8 = bench(name, runs=runs, warmup=warmup, threads=1,
                 quantize=QuantizeSettings("fashion-mnist", 32, per_channel=True))
    fp32 = bench(name, runs=runs, warmup=warmup, threads=1)
    row = {"model": name, "quantization": int8["quantization"],
           "compile_s_int8": round(int8["compile_s"], 1), "compile_s_fp32": round(fp32["compile_s"], 1),
           "other_cpu_share_int8": int8["other_cpu_share"], "other_cpu_share_fp32": fp32["other_cpu_share"],
           "litert_int8": int8["litert"], "litert_fp32": fp32["litert"],
           "engines": {**int8["engines"], **{f"{engine} fp32": s for engine, s in fp32["engines"].items()}}}
    ms = {k: v["median_ms"] for k, v in row["engines"].items()}
    row["ratios"] = {"edgevit int8 / onnxruntime int8": ms["edgevit int8"] / ms["onnxruntime int8"],
                     "edgevit int8 / edgevit fp32": ms["edgevit int8"] / ms["edgevit fp32"],
                     "onnxruntime int8 / onnxruntime fp32": ms["onnxruntime int8"] / ms["onnxruntime fp32"]}
    if "litert int8" in ms:
        row["ratios"]["edgevit int8 / litert int8"] = ms["edgevit int8"] / ms["litert int8"]
    row["agreement_int8"] = int8["agreement"]
    return row


def _litert_status(report: dict) -> str:
    """What LiteRT int8 was (or why it is missing), once when every model says the same."""
    said = {r["litert_int8"] for r in report["models"]}
    if len(said) == 1:
        return said.pop()
    return "; ".join(f"{r['model']}: {r['litert_int8']}" for r in report["models"])


def markdown(report: dict) -> str:
    rows = []
    for r in report["models"]:
        ms = {k: v["median_ms"] for k, v in r["engines"].items()}
        lite = r["ratios"].get("edgevit int8 / litert int8")
        rows.append([r["model"], f"{ms['edgevit int8']:.1f}", f"{ms['onnxruntime int8']:.1f}",
                     f"{ms['litert int8']:.1f}" if "litert int8" in ms else "-",
                     f"{ms['edgevit fp32']:.1f}", f"{ms['onnxruntime fp32']:.1f}",
                     f"{ms['litert fp32']:.1f}" if "litert fp32" in ms else "-",
                     f"{r['ratios']['edgevit int8 / onnxruntime int8']:.2f}x",
                     f"{lite:.2f}x" if lite else "-",
                     f"{r['ratios']['edgevit int8 / edgevit fp32']:.2f}x",
                     f"{r['agreement_int8']['max_steps']:g} ({'ok' if r['agreement_int8']['ok'] else 'FAIL'})",
                     f"{100 * max(r['other_cpu_share_int8'] or 0, r['other_cpu_share_fp32'] or 0):.0f} %"])
    table = format_table(rows, ["model", "edgevit int8 ms", "ORT int8 ms", "LiteRT int8 ms", "edgevit fp32 ms",
                                "ORT fp32 ms", "LiteRT fp32 ms", "int8: edgevit/ORT", "int8: edgevit/LiteRT",
                                "edgevit int8/fp32", "int8 diff (steps)", "other CPU use"])
    return (f"# int8 on the host ({report['cpu']}, 1 thread)\n\n"
            f"Command: `{report['command']}` ({report['date']}). Medians of {report['runs']} runs; each group "
            "(edgevit int8 with onnxruntime int8 on the same QDQ file and LiteRT int8 quantized by ai-edge-quantizer "
            "on the same calibration images; edgevit fp32 with onnxruntime fp32 and LiteRT fp32) "
            "timed taking turns in its own processes. LiteRT: " +
            _litert_status(report) + ". QDQ models: onnxruntime quantize_static, per-channel "
            "weights, MinMax over 32 Fashion-MNIST images. edgevit int8 runs conv (groups 1), matmul/Gemm by "
            "constant weights and attention's activation matmuls on the CPU's dot-product instruction (VNNI "
            "vpdpbusd here), elementwise functions between quantize steps (SiLU...) as 256-entry tables, softmax "
            "on int8 values with a table of exponentials, moves int8 tensors through reshape/transpose/slice; "
            "depthwise convs and average pools on int8 with a requantizing epilogue, residual adds as onnxruntime's "
            "QLinearAdd; LayerNorm and the other operators run as dequantize -> fp32 -> quantize "
            "(docs/int8.md). 'other CPU use': share of the machine other "
            "processes used while timing (the box is shared, so absolute times vary run to run; the pairs' "
            "ratios are what to read).\n\n" + table + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilevit_xxs,efficientformer_l1,swiftformer_xs")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="results/int8_host")
    args = parser.parse_args()
    from edgevit.backends.tvm_compiler import host_cpu_name

    report = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "cpu": host_cpu_name(), "machine": platform.machine(), "runs": args.runs, "models": []}
    for name in args.models.split(","):
        print(f"[bench_int8] {name}", file=sys.stderr, flush=True)
        report["models"].append(bench_model(name, args.runs, args.warmup))
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
