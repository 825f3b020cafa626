"""Issue 24's int8 commands on every zoo model, verified against onnxruntime on the same QDQ file.

Per model: ``edgevit quantize M --calibration fashion-mnist --per-channel -o M_int8.onnx``, then
``edgevit compile M_int8.onnx --target host`` and ``edgevit run --verify`` (one run per seed); for the rpi4 models
``edgevit compile M --target rpi4 --quantize int8 --calibration fashion-mnist`` (the issue's command: per-tensor
weights) and ``run --verify`` under qemu. ``run --verify`` checks every QDQ group against onnxruntime on
edgevit's own int8 inputs (``edgevit.quantize.groups``; the first run per artifact builds its probe). Each step's record goes to the JSON as soon as it is done, so a
killed run resumes where it stopped (``--fresh`` starts over). Writes ``OUT.json`` and ``OUT.md``.

    python tools/int8_zoo_verify.py [--models a,b] [--rpi4 a,b] [--seeds 0,1,2] [--work /tmp/int8v/zoo2]
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
ZOO = ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050", "mobilevitv2_075", "mobilevitv2_100",
       "swiftformer_xs", "swiftformer_s", "swiftformer_l1", "efficientformer_l1", "efficientformerv2_s0",
       "efficientformerv2_s1"]
NOTES = "## Notes"
RPI4 = ["mobilevitv2_050", "mobilevit_xxs", "mobilevitv2_075", "swiftformer_xs", "efficientformer_l1",
        "efficientformerv2_s0", "swiftformer_s", "mobilevit_s"]


def edgevit(*args: str, seed: int | None = None) -> tuple[subprocess.CompletedProcess, float, str]:
    """Run ``python -m edgevit.cli ARGS`` (1 thread); returns the process, seconds and the command as typed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if seed is not None:
        env["EDGEVIT_SEED"] = str(seed)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgevit.cli", *args], capture_output=True, text=True, env=env)
    command = ("" if seed is None else f"EDGEVIT_SEED={seed} ") + "edgevit " + " ".join(args)
    return proc, time.monotonic() - start, command


def _error(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[edgevit]")]
    return lines[-1] if lines else f"exit {proc.returncode}"


def build(step: str, args: list[str], output: Path) -> dict:
    """Run a quantize/compile step unless its output exists; the record says what happened."""
    if output.exists():
        return {"step": step, "command": "edgevit " + " ".join(args), "ok": True, "seconds": None, "reused": True}
    proc, seconds, command = edgevit(*args)
    record = {"step": step, "command": command, "ok": proc.returncode == 0, "seconds": round(seconds, 1)}
    if proc.returncode:
        record.update(exit=proc.returncode, error=_error(proc))
    return record


def verify(artifact: Path, seed: int) -> dict:
    """``edgevit run ARTIFACT --verify --json`` for one seed: the int8 rule's numbers (exit 8 is a FAIL, not an
    error)."""
    proc, seconds, command = edgevit("run", str(artifact), "--verify", "--json", seed=seed)
    record = {"seed": seed, "command": command, "seconds": round(seconds, 1)}
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {**record, "ok": False, "exit": proc.returncode, "error": _error(proc)}
    v = result.get("verify") or {}
    failing = [g for g in v.get("groups", []) if not g["ok"]]
    return {**record, "device": result.get("device"), "ok": bool(v.get("ok")), "exit": proc.returncode,
            **{k: v.get(k) for k in ("groups_checked", "groups_failing", "values_one_step", "values_at_ties",
                                     "probe_differs", "max_steps", "differing", "top1_agree")},
            "farthest_tie": max((g["farthest_tie"] for g in v.get("groups", []) if g["ties"]), default=None),
            "failing_groups": [{k: g[k] for k in ("node", "op", "tensor", "max_steps", "one_step", "ties")}
                               for g in failing]}


def run_model(model: str, target: str, seeds: list[int], work: Path) -> dict:
    steps = []
    if target == "host":
        qdq = work / f"{model}_int8.onnx"
        steps.append(build("quantize", ["quantize", model, "--calibration", "fashion-mnist", "--per-channel",
                                        "-o", str(qdq)], qdq))
        artifact = work / f"{model}_host.tar"
        if steps[-1]["ok"]:
            steps.append(build("compile", ["compile", str(qdq), "--target", "host", "-o", str(artifact)], artifact))
    else:
        artifact = work / f"{model}_rpi4.tar"
        steps.append(build("compile", ["compile", model, "--target", "rpi4", "--quantize", "int8",
                                       "--calibration", "fashion-mnist", "-o", str(artifact)], artifact))
    runs = [verify(artifact, s) for s in seeds] if steps[-1]["ok"] else []
    ok = bool(runs) and all(r["ok"] for r in runs)
    return {"model": model, "target": target, "weights": "per-channel" if target == "host" else "per-tensor",
            "steps": steps, "runs": runs, "pass": ok}


def _cell(runs: list[dict], key: str) -> str:
    return ", ".join("-" if r.get(key) is None else f"{r[key]:g}" if isinstance(r[key], (int, float))
                     and not isinstance(r[key], bool) else str(r[key]) for r in runs)


def write_markdown(records: list[dict], path: Path, seeds: list[int]) -> None:
    lines = ["# int8 on every zoo model: edgevit vs onnxruntime on the same QDQ file", "",
             f"`python tools/int8_zoo_verify.py` (seeds {', '.join(map(str, seeds))} via `EDGEVIT_SEED`; random "
             "standard-normal inputs; 32 Fashion-MNIST calibration samples; models with random weights, "
             "`pretrained=False`). Rule (`edgevit.quantize.groups`, docs/int8.md): every QDQ group within 1 step of "
             "onnxruntime given edgevit's own int8 inputs, every 1-step value at a half-step tie (onnxruntime's "
             "float32 value before QuantizeLinear within 0.01 steps of the midpoint), the probe build equal to the "
             "artifact, top-1 agreeing; the end-to-end step count is reported, not judged. Per row (exact commands "
             "and seconds in `int8_zoo_verify.json`):", "",
             "    host: edgevit quantize M --calibration fashion-mnist --per-channel -o M_int8.onnx",
             "          edgevit compile M_int8.onnx --target host -o M_host.tar",
             "          EDGEVIT_SEED=s edgevit run M_host.tar --verify --json",
             "    rpi4: edgevit compile M --target rpi4 --quantize int8 --calibration fashion-mnist -o M_rpi4.tar",
             "          EDGEVIT_SEED=s edgevit run M_rpi4.tar --verify --json      # under qemu-aarch64", "",
             "| model | target (weights) | groups failing / checked | values at 1 step (at ties) per seed | "
             "probe = artifact | end-to-end max steps per seed | top-1 agrees | result |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        failed = next((s for s in r["steps"] if not s["ok"]), None)
        if failed:
            lines.append(f"| {r['model']} | {r['target']} ({r['weights']}) | {failed['step']} failed: "
                         f"{failed.get('error', '')} | - | - | - | - | ERROR |")
            continue
        runs = r["runs"]
        errors = [x for x in runs if x.get("error")]
        result = "PASS" if r["pass"] else ("ERROR: " + errors[0]["error"] if errors else "FAIL")
        groups = ", ".join(f"{x.get('groups_failing')} / {x.get('groups_checked')}" for x in runs)
        ones = ", ".join(f"{x.get('values_one_step')} ({x.get('values_at_ties')})" for x in runs)
        probe = ", ".join("yes" if x.get("probe_differs") == 0 else f"{x.get('probe_differs')} differ" for x in runs)
        lines.append(f"| {r['model']} | {r['target']} ({r['weights']}) | {groups} | {ones} | {probe} | "
                     f"{_cell(runs, 'max_steps')} | {_cell(runs, 'top1_agree')} | {result} |")
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES):] if NOTES in old else ""  # written by hand: kept across runs
    path.write_text("\n".join(lines) + "\n" + ("\n" + notes if notes else ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(ZOO), help="host models (comma-separated)")
    p.add_argument("--rpi4", default=",".join(RPI4), help="models also built for rpi4 and run under qemu")
    p.add_argument("--seeds", default="0,1,2", help="EDGEVIT_SEED values for host runs")
    p.add_argument("--rpi4-seeds", default="0", help="EDGEVIT_SEED values for rpi4 runs (qemu is slow)")
    p.add_argument("--work", default="/tmp/int8v/zoo2", help="where quantized models and artifacts go")
    p.add_argument("--out", default=str(ROOT / "results" / "int8_zoo_verify"), help="OUT.json and OUT.md")
    p.add_argument("--fresh", action="store_true", help="ignore the records of an earlier run")
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    seeds, rpi4_seeds = [int(s) for s in args.seeds.split(",")], [int(s) for s in args.rpi4_seeds.split(",")]
    data = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() \
        and not args.fresh else {"records": []}
    done = {(r["model"], r["target"]) for r in data["records"]}
    jobs = [(m, "host", seeds) for m in args.models.split(",") if m] + \
           [(m, "rpi4", rpi4_seeds) for m in args.rpi4.split(",") if m]
    for model, target, job_seeds in jobs:
        if (model, target) in done:
            continue
        start = time.monotonic()
        record = run_model(model, target, job_seeds, work)
        data["records"].append(record)
        data["records"].sort(key=lambda r: (r["target"] != "host", ZOO.index(r["model"]) if r["model"] in ZOO else 99))
        data.update(seeds=seeds, rpi4_seeds=rpi4_seeds, commit=subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
        out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
        write_markdown(data["records"], out.with_suffix(".md"), seeds)
        steps = _cell(record["runs"], "max_steps") or "-"
        print(f"{model:22s} {target:5s} max steps {steps:12s} {'PASS' if record['pass'] else 'FAIL'} "
              f"({time.monotonic() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
