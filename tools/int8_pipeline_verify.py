"""``edgevit infer --verify`` on int8 pipeline plans: the per-stage group rule next to the end-to-end rule it
replaced (every output within 4 output quantization steps of onnxruntime on the whole model).

Per model: ``edgevit quantize M --calibration fashion-mnist --per-channel -o M_int8.onnx``, ``edgevit plan
M_int8.onnx --strategy pipeline --stages 2`` for two host nodes, then two local nodes
(``distributed.local_cluster``) and ``edgevit infer PLAN --stream N --verify --json``. The report's per-result
end-to-end comparisons say what the end-to-end rule would have decided. Writes ``OUT.json`` and ``OUT.md``.

    python tools/int8_pipeline_verify.py [--models mobilevitv2_050] [--stream 4] [--work /tmp/int8pipe]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def edgevit(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgevit.cli", *map(str, args)], capture_output=True, text=True,
                          env=ENV)
    if proc.returncode not in (0, 8):
        raise SystemExit(f"edgevit {' '.join(map(str, args))} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc


def measure(model: str, work: Path, stream: int) -> dict:
    """Quantize (reused if present), plan two host stages, stream ``stream`` random inputs with --verify."""
    from edgevit.distributed.local_cluster import LocalCluster

    quantized = work / f"{model}_int8.onnx"
    if not quantized.exists():
        edgevit("quantize", model, "--calibration", "fashion-mnist", "--per-channel", "-o", quantized)
    nodes = work / "nodes.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 2, target: host}\n")
    plan = work / f"plan_{model}"
    edgevit("plan", quantized, "--strategy", "pipeline", "--nodes", nodes, "--stages", 2, "-o", plan)
    report = work / f"{model}_report.json"
    with LocalCluster(members=4) as cluster:
        for _ in range(2):
            cluster.add_node("x86")
        cluster.wait_for("x86", 2)
        start = time.monotonic()
        proc = edgevit("infer", plan, "--tracker", cluster.address, *cluster.host_args, "--stream", stream,
                       "--verify", "--json", report, "--timeout", 600, "--stall-timeout", 600)
        seconds = time.monotonic() - start
    verdict = json.loads(report.read_text())["verify"]
    e2e = verdict["end_to_end"]
    return {"model": model, "stages": [{k: s[k] for k in ("stage", "ok", "groups_checked", "groups_failing",
                                                           "probe_differs")}
                                       | {"one_step": sum(g["one_step"] for g in s["groups"]),
                                          "ties": sum(g["ties"] for g in s["groups"]),
                                          "float_outputs": len(s["float_outputs"])} for s in verdict["stages"]],
            "ok": verdict["ok"], "exit": proc.returncode, "results": len(e2e),
            "e2e_max_steps": [c["max_steps"] for c in e2e], "e2e_rule_ok": all(c["ok"] for c in e2e),
            "infer_seconds": round(seconds, 1),
            "verify_lines": [line for line in proc.stdout.splitlines() if line.startswith("verify")]}


def write_md(path: Path, rows: list[dict], command: str) -> None:
    lines = ["# infer --verify on int8 pipeline plans: per stage vs end to end", "",
             f"`{command}` (two stages on two local host nodes, per-channel weights, 32 Fashion-MNIST "
             "calibration samples, random inputs seeds 0..N-1).", "",
             "| model | stage | groups | failing | values at 1 step | of them ties | float outputs | probe = node |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for s in row["stages"]:
            lines.append(f"| {row['model']} | {s['stage']} | {s['groups_checked']} | {s['groups_failing']} | "
                         f"{s['one_step']} | {s['ties']} | {s['float_outputs']} | "
                         f"{'yes' if s['probe_differs'] == 0 else 'NO'} |")
    lines += ["", "| model | results | end-to-end steps per result | end-to-end rule (before) | per-stage rule "
              "(now) | infer --verify s |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['results']} | {', '.join(f'{x:g}' for x in row['e2e_max_steps'])} | "
                     f"{'PASS' if row['e2e_rule_ok'] else 'FAIL'} | {'PASS' if row['ok'] else 'FAIL'} | "
                     f"{row['infer_seconds']} |")
    lines += ["", "infer --verify seconds include the probe builds of the stages when not cached (2 cores shared "
              "with other jobs)."]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilevitv2_050")
    parser.add_argument("--stream", type=int, default=4)
    parser.add_argument("--work", default="/tmp/int8pipe")
    parser.add_argument("--out", default=str(ROOT / "results" / "int8_pipeline_verify"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = [measure(m, work, args.stream) for m in args.models.split(",")]
    Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
    write_md(Path(args.out + ".md"), rows, "python tools/int8_pipeline_verify.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
