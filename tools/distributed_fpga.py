"""A heterogeneous pipeline with an FPGA node: the accelerator part of a zoo model on a (simulated) FPGA board,
the rest on an ARM node (qemu) and an x86 node, verified against onnxruntime on the whole model.

    .venv/bin/python tools/distributed_fpga.py [--model efficientformer_l1] [--board zcu102] [--images 4]
                                               [--json results/distributed_fpga.json]

1. ``edgevit hls MODEL --board BOARD``, then a bundle without bitstream (no Vivado here);
2. a local cluster: an FPGA node (``edgevit node --fpga BUNDLE --simulate``: the bundle's g++ C-simulation
   stands in for the programmable logic, in the pynq venv of ``tools/setup_pynq_env.sh``), an aarch64 node under
   qemu (key rpi4) and an x86 node;
3. ``edgevit plan`` twice: the planner's own choice, and three stages (FPGA, then the two CPU nodes);
4. ``edgevit infer --verify`` on the three-stage plan.

The FPGA stage's cost is the HLS estimator's latency at the board's clock; the rpi4 stage's a MAC estimate;
neither the C-simulation nor qemu is timed for the plan, and their measured times here are not a board's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _say(message: str) -> None:
    print(f"[distributed_fpga] {message}", file=sys.stderr, flush=True)


def pynq_python() -> str:
    proc = subprocess.run(["bash", str(ROOT / "tools" / "setup_pynq_env.sh")], capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientformer_l1")
    parser.add_argument("--board", default="zcu102")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "distributed_fpga.json")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()

    from edgevit import emulation
    from edgevit.cli import main as edgevit
    from edgevit.distributed.local_cluster import LocalCluster
    from edgevit.pynq.bundle import make_bundle

    work = args.work or Path(tempfile.mkdtemp(prefix="edgevit-fpga-"))
    work.mkdir(parents=True, exist_ok=True)
    project, bundle = work / "hls", work / "bundle"
    _say(f"HLS project of {args.model} for {args.board}")
    assert edgevit(["hls", args.model, "--board", args.board, "-o", str(project)]) == 0
    cfg = make_bundle(project, bundle)
    nodes = work / "nodes.yaml"
    nodes.write_text(f"nodes:\n  - {{key: {args.board}, target: {args.board}, bundle: {bundle}}}\n"
                     "  - {key: rpi4, count: 1, target: rpi4}\n  - {key: x86, count: 1, target: host}\n")
    report = {"model": args.model, "board": args.board, "bundle": {"cpu_layers": cfg["cpu_layers"],
                                                                   "estimate": cfg["estimate"]}}
    with LocalCluster() as cluster:
        _say("nodes: FPGA (C-simulation), rpi4 (qemu), x86")
        cluster.add_node(args.board, extra=("--fpga", bundle, "--simulate", "--fpga-python", pynq_python()))
        cluster.add_node("rpi4", emulated=emulation.prepare("aarch64"))
        cluster.add_node("x86")
        common = ["--strategy", "pipeline", "--nodes", str(nodes), "--tracker", cluster.address, *cluster.host_args,
                  "--profile", str(work / "profile.json")]
        assert edgevit(["plan", args.model, *common, "-o", str(work / "free")]) == 0
        assert edgevit(["plan", args.model, *common, "--stages", "3", "-o", str(work / "three")]) == 0
        result = work / "infer.json"
        assert edgevit(["infer", str(work / "three"), "--tracker", cluster.address, *cluster.host_args, "--stream",
                        str(args.images), "--verify", "--json", str(result), "--wait", "300", "--timeout", "600",
                        "--stall-timeout", "600"]) == 0
    for name in ("free", "three"):
        plan = json.loads((work / name / "plan.json").read_text())
        report[f"plan_{name}"] = {
            "stages": [{"node": s["node_key"], "units": s["units"], "predicted_ms": s["predicted"]["compute_ms"],
                        "outputs": s["outputs"], "cost_source": s["cost_source"]} for s in plan["stages"]],
            "predicted": plan["predicted"], "one_node": plan["one_node"],
            "fixed_point": plan["chain_check"].get("fixed_point"), "verify_rtol": plan["verify_rtol"]}
    r = json.loads(result.read_text())
    report["infer_three"] = {"verify": r["verify"], "failed": r["failed"], "images": r["images"],
                             "stages": r["stages"], "note": "measured times: C-simulation and qemu, not boards"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("plan_free", "plan_three")}, indent=1)[:3000])
    print(f"verify: {r['verify']}")
    return 0 if r["verify"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
