"""Tuned vs untuned edgevit builds against onnxruntime and LiteRT, per model.

    python tools/bench_tuned.py [--models a,b] [--trials 8] [--db-root build/tuning] [--rounds 2]
                                [--json results/bench_tuned.json]

Per model: ``edgevit tune`` into DB-ROOT/MODEL-host (skipped when that database exists; its tuning time is read
from the database's summary), then ``rounds`` x (untuned bench, tuned bench), each bench timing edgevit,
onnxruntime and LiteRT (XNNPACK, when tools/setup_litert.sh converted the model) in the same run at 1 thread.
Ratios are medians over the rounds. The bars: tuned <= 0.9x onnxruntime (issue 3) and <= 0.8x LiteRT (issue 25).
Writes the table (.md), the JSON and a plot (.png) side by side. A benchmark, not a test: latency depends on this
machine and its load (each report keeps the load average it saw).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgevit.backends import tuning, tvm_compiler
from edgevit.bench import bench
from edgevit.frontend import load_model
from edgevit.tables import format_table
from edgevit.targets import get_target

MODELS = "mobilevit_xxs,efficientformerv2_s0,swiftformer_xs,efficientformer_l1"


def tune_once(name: str, db: Path, trials: int) -> dict:
    summary = db / tuning.SUMMARY
    if not summary.exists():
        print(f"[bench_tuned] tuning {name} ({trials} search trials per kernel)", file=sys.stderr, flush=True)
        model = load_model(name)
        tuning.tune(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host"), db, trials=trials,
                    threads=1)
    return json.loads(summary.read_text())


def one_model(name: str, db: Path, trials: int, rounds: int, runs: int) -> dict:
    info = tune_once(name, db, trials)
    reports = {"default": [], "tuned": []}
    for _ in range(rounds):
        reports["default"].append(bench(name, runs=runs, threads=1))
        reports["tuned"].append(bench(name, runs=runs, threads=1, tuning_db=str(db)))

    def median(kind: str, engine: str) -> float:
        return statistics.median(r["engines"][engine]["median_ms"] for r in reports[kind])

    def ratio(kind: str) -> float:
        return statistics.median(r["ratio_vs_onnxruntime"] for r in reports[kind])

    def litert_ratio(kind: str) -> float | None:
        ratios = [r["engines"]["edgevit"]["median_ms"] / r["engines"]["litert"]["median_ms"]
                  for r in reports[kind] if "litert" in r["engines"]]
        return statistics.median(ratios) if len(ratios) == len(reports[kind]) else None

    return {"model": name, "tuning_s": info["seconds"], "trials_per_kernel": info["trials_per_kernel"],
            "kernels": len(info["kernels"]), "kernels_changed": sum(k["uses"] != "default" for k in info["kernels"]),
            "default_ms": median("default", "edgevit"), "tuned_ms": median("tuned", "edgevit"),
            "onnxruntime_ms": statistics.median([median("default", "onnxruntime"), median("tuned", "onnxruntime")]),
            "default_ratio": ratio("default"), "tuned_ratio": ratio("tuned"),
            "litert_ms": statistics.median(r["engines"]["litert"]["median_ms"] for rs in reports.values() for r in rs
                                           if "litert" in r["engines"]) if litert_ratio("default") else None,
            "default_vs_litert": litert_ratio("default"), "tuned_vs_litert": litert_ratio("tuned"),
            "litert": reports["default"][0]["litert"],
            "numerics_ok": all(r["agreement"]["ok"] for rs in reports.values() for r in rs),
            "reports": reports}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS, help=f"comma-separated zoo names (default {MODELS})")
    parser.add_argument("--trials", type=int, default=8, help="search trials per kernel for new databases")
    parser.add_argument("--db-root", default="build/tuning", help="where the tuning databases live")
    parser.add_argument("--rounds", type=int, default=2, help="untuned/tuned bench pairs per model")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine per bench")
    parser.add_argument("--json", default="results/bench_tuned.json")
    args = parser.parse_args()
    rows = []
    start = time.monotonic()
    for name in args.models.split(","):
        rows.append(one_model(name, Path(args.db_root) / f"{name}-host", args.trials, args.rounds, args.runs))
    table = format_table([_table_row(r) for r in rows],
                         ["model", "tuning min", "kernels changed", "untuned ms", "tuned ms", "onnxruntime ms",
                          "LiteRT ms", "untuned/ORT", "tuned/ORT", "tuned/LiteRT", "<= 0.9x ORT", "<= 0.8x LiteRT",
                          "numerics"])
    footer = (f"1 thread; ratios to onnxruntime and LiteRT timed in the same bench run, median of {args.rounds} "
              f"rounds; {time.monotonic() - start:.0f} s")
    print(table)
    print(footer)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(f"`python {' '.join(sys.argv)}`\n\n```\n{table}\n```\n\n{footer}\n")
    plot(rows, out.with_suffix(".png"))
    return 0


def _table_row(r: dict) -> list[str]:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    vs_litert = r["tuned_vs_litert"]
    return [r["model"], f"{r['tuning_s'] / 60:.1f}", f"{r['kernels_changed']}/{r['kernels']}", f"{r['default_ms']:.1f}",
            f"{r['tuned_ms']:.1f}", f"{r['onnxruntime_ms']:.1f}", fmt(r["litert_ms"], ".1f"),
            f"{r['default_ratio']:.2f}x", f"{r['tuned_ratio']:.2f}x", fmt(vs_litert, ".2f") + ("x" if vs_litert else ""),
            "yes" if r["tuned_ratio"] <= 0.9 else "NO",
            "-" if vs_litert is None else "yes" if vs_litert <= 0.8 else "NO",
            "ok" if r["numerics_ok"] else "MISMATCH"]


def plot(rows: list[dict], path: Path) -> None:
    """Untuned and tuned edgevit time as a ratio of each peer's, per model (the bars are the goals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (peer, key, goal) in zip(axes, (("onnxruntime", "ratio", 0.9), ("LiteRT", "vs_litert", 0.8))):
        x = range(len(rows))
        for offset, kind in ((-0.2, "default"), (0.2, "tuned")):
            name = f"{kind}_{key}" if key == "vs_litert" else f"{kind}_ratio"
            ax.bar([i + offset for i in x], [r[name] or 0 for r in rows], width=0.4,
                   label="untuned" if kind == "default" else "tuned")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(goal, color="red", linestyle="--", linewidth=0.8, label=f"goal {goal}x")
        ax.set_xticks(list(x), [r["model"] for r in rows], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"edgevit ms / {peer} ms")
        ax.set_title(f"edgevit vs {peer}, host, 1 thread (lower is better)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
