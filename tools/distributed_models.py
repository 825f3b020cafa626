"""Pipelines of zoo models and an ONNX file from outside the zoo on a local cluster: predicted vs measured.

    .venv/bin/python tools/distributed_models.py [--models mobilevit_s efficientformer_l1 timm:efficientvit_m0]
        [--images 40] [--json results/distributed_models.json]

Starts a tracker, two x86 nodes and one aarch64 node under qemu (key rpi4) on this machine (loopback, CURVE
keys), then per model, sharing one measured profile (units timed through RPC on an x86 node; the qemu node is
never timed, its cost is the labelled MAC estimate):

1. ``3 nodes``: a 3-stage plan over x86, x86 and rpi4 (qemu), ``infer --verify`` on a few inputs. This shows the
   heterogeneous pipeline works and is correct; its times include qemu's and are not compared with anything.
2. ``x86 pipeline``: the planner's choice over the two x86 nodes (objective throughput), ``infer --verify
   --stream N``: predicted vs measured latency and throughput.
3. ``one node``: the whole model on one x86 node, measured the same way: what the pipeline is compared with.

``timm:NAME`` exports a timm model (random weights) to an ONNX file first: a model edgevit's zoo does not have,
given to ``edgevit plan`` as a file. All nodes share this machine's cores, so the throughput of the x86 pipeline
is bounded by the cores, not only by its slowest stage (the report says so next to the numbers).
Writes a table (.md), the JSON and a plot (.png) beside ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


CONFIGS = ["3 nodes", "x86 pipeline", "one node"]


def _say(message: str) -> None:
    print(f"[distributed_models] {message}", file=sys.stderr, flush=True)


def model_spec(name: str, folder: Path) -> str:
    """A zoo name as it is; ``timm:NAME`` exported to ``folder/NAME.onnx`` (random weights, seeded)."""
    if not name.startswith("timm:"):
        return name
    import timm
    import torch

    from edgevit.frontend import from_torch

    arch = name.split(":", 1)[1]
    path = folder / f"{arch}.onnx"
    if not path.exists():
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        path.write_bytes(from_torch(model, (1, 3, 224, 224), arch).onnx_path.read_bytes())
    return str(path)


def run(argv: list[str]) -> dict:
    from edgevit.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"`edgevit {' '.join(argv)}` exited with {code}")
    return {}


def model_rows(name: str, cluster, folder: Path, images: int, chosen: list[str]) -> dict:
    spec = model_spec(name, folder)
    work = folder / Path(spec).stem
    work.mkdir(parents=True, exist_ok=True)
    profile = work / "profile.json"
    every = {"3 nodes": ("nodes:\n  - {key: x86, count: 2, target: host}\n  - {key: rpi4, count: 1, target: rpi4}\n",
                           ["--stages", "3"], 4),
               "x86 pipeline": ("nodes:\n  - {key: x86, count: 2, target: host}\n", ["--objective", "throughput"],
                                images),
               "one node": ("nodes:\n  - {key: x86, count: 1, target: host}\n", ["--stages", "1"], images)}
    configs = {name: every[name] for name in chosen}
    out = {"model": name, "spec": spec, "configs": {}}
    for config, (nodes, options, count) in configs.items():
        _say(f"{name}: {config}")
        (work / f"{config}.yaml").write_text(nodes)
        plan_dir = work / config.replace(" ", "_")
        run(["plan", spec, "--strategy", "pipeline", "--nodes", str(work / f"{config}.yaml"), "--tracker",
             cluster.address, *cluster.host_args, "--profile", str(profile), *options, "-o", str(plan_dir)])
        report = work / f"{config.replace(' ', '_')}.json"
        start = time.perf_counter()
        run(["infer", str(plan_dir), "--tracker", cluster.address, *cluster.host_args, "--stream", str(count),
             "--verify", "--json", str(report), "--wait", "300", "--timeout", "300", "--stall-timeout", "300"])
        r = json.loads(report.read_text())
        plan = json.loads((plan_dir / "plan.json").read_text())
        out["configs"][config] = {
            "stages": [{"node": s["node_key"], "units": s["units"], "predicted_ms": s["predicted"]["compute_ms"],
                        "cost_source": s["cost_source"]} for s in plan["stages"]],
            "predicted_latency_ms": r["predicted_latency_ms"], "latency_ms": r["latency_ms"],
            "predicted_images_per_s": r["predicted_images_per_s"], "images_per_s": r["images_per_s"],
            "images": count, "verify": r["verify"], "failed": r["failed"], "wall_s": time.perf_counter() - start,
            "stage_report": r["stages"], "links": r["links"]}
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | config | stages (node: units) | latency ms predicted / measured | images/s predicted / "
             "measured | verify |", "|---|---|---|---|---|---|"]
    for row in rows:
        for config, c in row["configs"].items():
            stages = ", ".join(f"{s['node']}: {s['units'][0]}-{s['units'][1] - 1}" for s in c["stages"])
            qemu = " (qemu: not a board's)" if config == "3 nodes" else ""
            lines.append(f"| {Path(row['spec']).name} | {config} | {stages} | {c['predicted_latency_ms']:.2f} / "
                         f"{c['latency_ms']:.2f}{qemu} | {c['predicted_images_per_s']:.1f} / {c['images_per_s']:.1f}"
                         f"{qemu} | {'PASS' if c['verify']['ok'] else 'FAIL'} ({c['verify']['checked']}, max rel "
                         f"{c['verify']['max_rel_error']:.1e}) |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels, bars = [], {"pred_lat": [], "lat": [], "pred_tp": [], "tp": []}
    for row in rows:
        for config in ("x86 pipeline", "one node"):
            if config not in row["configs"]:
                continue
            c = row["configs"][config]
            labels.append(f"{Path(row['spec']).stem}\n{config}")
            bars["pred_lat"].append(c["predicted_latency_ms"])
            bars["lat"].append(c["latency_ms"])
            bars["pred_tp"].append(c["predicted_images_per_s"])
            bars["tp"].append(c["images_per_s"])
    x = range(len(labels))
    for ax, (pred, meas, title) in zip(axes, [("pred_lat", "lat", "latency ms"), ("pred_tp", "tp", "images/s")]):
        ax.bar([i - 0.2 for i in x], bars[pred], 0.4, label="predicted")
        ax.bar([i + 0.2 for i in x], bars[meas], 0.4, label="measured")
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.set_title(title)
        ax.legend()
    fig.suptitle("edgevit pipelines on x86 nodes sharing 2 cores (loopback, CURVE): predicted vs measured")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilevit_s", "efficientformer_l1", "timm:efficientvit_m0"])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS,
                        help="which runs per model (default: all three)")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "distributed_models.json")
    parser.add_argument("--work", type=Path, help="folder for plans and reports (default: a temporary one)")
    args = parser.parse_args()

    import tempfile

    from edgevit import emulation
    from edgevit.distributed.local_cluster import LocalCluster

    folder = args.work or Path(tempfile.mkdtemp(prefix="edgevit-models-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with LocalCluster() as cluster:
        if "3 nodes" in args.configs:
            cluster.add_node("rpi4", emulated=emulation.prepare("aarch64"))
        for _ in range(2):
            cluster.add_node("x86")
        for name in args.models:
            rows.append(model_rows(name, cluster, folder, args.images, args.configs))
            args.json.parent.mkdir(parents=True, exist_ok=True)
            report = {"machine": {"cpus": os.cpu_count()}, "note": "all nodes share this machine; the rpi4 node "
                      "runs under qemu (its cost is a MAC estimate, its times are not a board's)", "models": rows}
            args.json.write_text(json.dumps(report, indent=1))
    args.json.with_suffix(".md").write_text(table(rows) + "\n")
    plot(rows, args.json.with_suffix(".png"))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
