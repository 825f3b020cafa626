"""ARM table for the zoo: executed aarch64 instructions per inference of edgevit's aarch64 build (rpi4 by
default), onnxruntime and LiteRT (XNNPACK), counted under qemu on Cortex-A72 (Pi 4) or Cortex-A76 (Pi 5) models.

    python tools/bench_arm.py [--models a,b] [--target rpi4] [--cpu cortex-a72] [--keep DIR] [--name bench_arm]
    python tools/bench_arm.py --target rpi5 --cpu cortex-a76 --name bench_arm_a76   # Pi 5: its own build

Writes ``results/NAME.{json,md,png}``. Timings under qemu mean nothing; executed instructions are the speed
proxy (see tools/count_instructions.py, whose counter this uses). All three run one thread on the same weights:
edgevit compiles the zoo's ONNX export for the target, onnxruntime runs that ONNX file, LiteRT runs the .tflite that
tools/setup_litert.sh converted from the same torch model (missing .tflite files are reported, not guessed).
Besides totals the table gives the classes that say how kernels feed their multiply-adds: FMLA count and
scalar float loads (``ldr s``/``ldp s``) as a share of 128-bit vector loads.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit import litert, zoo  # noqa: E402
from edgevit.compiler import compile_for_target  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.frontend import load_model  # noqa: E402
from edgevit.tables import format_table  # noqa: E402
from edgevit.targets import get_target  # noqa: E402

HERE = Path(__file__).resolve().parent


def _counter():
    spec = importlib.util.spec_from_file_location("count_instructions", HERE / "count_instructions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cached_count(kind: str, model: Path, cpus: list[str], runs: int, counter) -> list[dict]:
    """Counts of one runtime on one file (an edgevit artifact, an ONNX or a .tflite file), cached by the file's
    hash, the plugin's source and the runtime's version: a re-run recounts only what changed."""
    import hashlib
    from importlib import metadata

    from edgevit.settings import cache_dir

    package = {"edgevit": "apache-tvm", "onnxruntime": "onnxruntime", "litert": "ai-edge-litert"}[kind]
    key = hashlib.sha256(model.read_bytes() + counter.PLUGIN_SOURCE.read_bytes()
                         + f"{kind} {metadata.version(package)} {cpus} {runs}".encode()).hexdigest()[:20]
    path = cache_dir("bench_arm") / f"{kind}-{model.stem}-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    count = {"edgevit": counter.count_artifact, "onnxruntime": counter.count_onnxruntime,
             "litert": counter.count_litert}[kind]
    rows = count(model, cpus, 1, runs)
    path.write_text(json.dumps(rows))
    return rows


def one_model(name: str, cpus: list[str], keep: Path, counter, runs: int, target: str = "rpi4") -> list[dict]:
    """Count edgevit, onnxruntime and LiteRT on one zoo model; one row per (runtime, cpu)."""
    model = load_model(name)
    artifact = keep / f"{name}-{target}.tar"
    if not artifact.exists():
        print(f"[bench_arm] compiling {name} for {target}", file=sys.stderr, flush=True)
        compile_for_target(model, get_target(target), artifact, command="tools/bench_arm.py")
    rows = [dict(r, runtime="edgevit") for r in cached_count("edgevit", artifact, cpus, runs, counter)]
    rows += [dict(r, runtime="onnxruntime") for r in cached_count("onnxruntime", model.onnx_path, cpus, runs, counter)]
    converted = litert.find_converted(name)
    if converted:
        rows += [dict(r, runtime="litert") for r in cached_count("litert", converted[0], cpus, runs, counter)]
    else:
        print(f"[bench_arm] {name}: LiteRT {litert.SETUP_HINT}", file=sys.stderr, flush=True)
    for row in rows:
        row["model"] = name
    return rows


def summary(rows: list[dict], cpus: list[str], models: list[str]) -> list[dict]:
    """Per model and cpu: millions of instructions of each runtime, the ratios, and the load shares."""
    by_key = {(r["model"], r["runtime"], r["cpu"]): r["per_inference"] for r in rows}
    out = []
    for model in models:
        for cpu in cpus:
            counts = {rt: by_key.get((model, rt, cpu)) for rt in ("edgevit", "onnxruntime", "litert")}
            if counts["edgevit"] is None:
                continue
            line = {"model": model, "cpu": cpu}
            for rt, c in counts.items():
                line[f"{rt}_M"] = c["total"] / 1e6 if c else None
                line[f"{rt}_scalar_per_vector_load"] = c["load_s"] / max(c["load_q"], 1) if c else None
                line[f"{rt}_fmla_M"] = c["fmla"] / 1e6 if c else None
            for peer in ("onnxruntime", "litert"):
                line[f"edgevit_vs_{peer}"] = (line["edgevit_M"] / line[f"{peer}_M"]) if line[f"{peer}_M"] else None
            out.append(line)
    return out


def format_summary(lines: list[dict]) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    return format_table(
        [[s["model"], s["cpu"], num(s["edgevit_M"], ".1f"), num(s["onnxruntime_M"], ".1f"), num(s["litert_M"], ".1f"),
          num(s["edgevit_vs_onnxruntime"], ".2f") + "x", num(s["edgevit_vs_litert"], ".2f") + "x",
          num(s["edgevit_fmla_M"], ".1f"), num(s["litert_fmla_M"], ".1f"),
          num(100 * s["edgevit_scalar_per_vector_load"], ".0f") + " %",
          num(100 * s["litert_scalar_per_vector_load"] if s["litert_M"] else None, ".0f") + " %"]
         for s in lines],
        ["model", "qemu cpu", "edgevit M instr", "ORT M instr", "LiteRT M instr", "edgevit/ORT", "edgevit/LiteRT",
         "edgevit M fmla", "LiteRT M fmla", "edgevit scalar/vector loads", "LiteRT scalar/vector loads"])


def plot(lines: list[dict], cpus: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(cpus), 1, figsize=(11, 3.6 * len(cpus)), squeeze=False)
    for ax, cpu in zip(axes[:, 0], cpus):
        rows = [s for s in lines if s["cpu"] == cpu]
        x = range(len(rows))
        for offset, peer in ((-0.2, "onnxruntime"), (0.2, "litert")):
            ax.bar([i + offset for i in x], [s[f"edgevit_vs_{peer}"] or 0 for s in rows], width=0.4,
                   label=f"edgevit / {'LiteRT' if peer == 'litert' else 'onnxruntime'}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(list(x), [s["model"] for s in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("instructions ratio")
        ax.set_title(f"aarch64 instructions per inference, qemu -cpu {cpu} (lower is better for edgevit)")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo names (default all)")
    parser.add_argument("--target", default="rpi4", help="the aarch64 target edgevit compiles for (default rpi4)")
    parser.add_argument("--cpu", default="cortex-a72", help="qemu CPU models, comma-separated (default cortex-a72, "
                        "the Pi 4's core; the Pi 5's cortex-a76 goes with --target rpi5)")
    parser.add_argument("--runs", type=int, default=1, help="inferences counted after one warm-up (default 1: "
                        "counts repeat exactly)")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the artifacts in this folder")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--name", default="bench_arm")
    args = parser.parse_args()
    models, cpus = args.models.split(","), args.cpu.split(",")
    counter, rows = _counter(), []
    command = " ".join(["python", *sys.argv])
    try:
        for name in models:
            zoo.get_entry(name)
        with tempfile.TemporaryDirectory(prefix="edgevit-bench-arm-") as tmp:
            keep = args.keep or Path(tmp)
            keep.mkdir(parents=True, exist_ok=True)
            for name in models:
                rows += one_model(name, cpus, keep, counter, args.runs, args.target)
                write_results(rows, cpus, [m for m in models if any(r["model"] == m for r in rows)], args,
                              command)  # after each model: a long run that is stopped keeps what it counted
    except EdgevitError as exc:
        print(f"bench_arm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_summary(summary(rows, cpus, models)))
    return 0


def write_results(rows: list[dict], cpus: list[str], models: list[str], args, command: str) -> None:
    """results/NAME.{json,md,png} for the models counted so far."""
    lines = summary(rows, cpus, models)
    text = format_summary(lines)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(
        json.dumps({"command": command, "created": created, "summary": lines, "rows": rows}, indent=1) + "\n")
    (args.results / f"{args.name}.md").write_text(
        f"# aarch64 instructions per inference: edgevit {args.target} build vs onnxruntime vs LiteRT (qemu TCG "
        f"plugin)\n\n"
        f"`{command}` ({created}). One thread each; instructions of {args.runs} inference(s) after one warm-up, "
        f"per inference. Instruction counts, not time: a proxy for speed on the board (qemu timings mean "
        f"nothing). Same weights for all three (the zoo's seeded, trained-looking weights).\n\n"
        f"```\n{text}\n```\n")
    plot(lines, cpus, args.results / f"{args.name}.png")


if __name__ == "__main__":
    sys.exit(main())
