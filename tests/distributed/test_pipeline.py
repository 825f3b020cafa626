"""Pipeline split: the cut-point DP, and a profiled plan streamed through x86 and aarch64 (qemu) nodes whose
answers equal the unsplit model's."""

from __future__ import annotations

import json
import subprocess
import sys


from edgevit.distributed.pipeline import choose_cuts
from edgevit.distributed.plan import NodeSlot


def _profile(fast_key_ms: float) -> dict:
    return {"layers": 4, "input_bytes": 1000, "layer_out_bytes": [1000, 1000, 1000, 40],
            "keys": {"a": {"layer_ms": [1.0, 4.0, 4.0, 1.0], "bandwidth_mb_s": 100.0, "rpc_ms": 0.1},
                     "b": {"layer_ms": [fast_key_ms] * 4, "bandwidth_mb_s": 100.0, "rpc_ms": 0.1}}}


def test_dp_latency_keeps_one_stage_throughput_balances():
    slots = [NodeSlot("a", 0, "host", 64), NodeSlot("a", 1, "host", 64)]
    stages, latency = choose_cuts(_profile(9.0), slots, "latency")
    assert [(s.name, i, j) for s, i, j in stages] == [("a#0", 0, 4)]  # extra hops only add transfer
    stages, bottleneck = choose_cuts(_profile(9.0), slots, "throughput")
    assert [(i, j) for _, i, j in stages] == [(0, 2), (2, 4)] and bottleneck < latency


def test_dp_prefers_the_faster_node_kind():
    slots = [NodeSlot("a", 0, "host", 64), NodeSlot("b", 0, "rpi4", 64)]
    stages, _ = choose_cuts(_profile(0.1), slots, "latency")
    assert [(s.key, i, j) for s, i, j in stages] == [("b", 0, 4)]


def _run(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_pipeline_profiled_plan_and_stream(shared_cluster, tmp_path):
    from edgevit.distributed import classsplit as cs, fashion
    from edgevit.distributed.planner import model_configs

    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 2, target: host}\n  - {key: rpi4, target: rpi4}\n")
    profile = tmp_path / "profile.json"
    _run("plan", "fashion-vit-tiny", "--strategy", "pipeline", "--nodes", nodes, "--objective", "throughput",
         "--tracker", shared_cluster.address, "--profile", profile, "-o", tmp_path / "measured.json")
    measured = json.loads(profile.read_text())
    assert set(measured["keys"]) == {"x86", "rpi4"} and all(t > 0 for t in measured["keys"]["rpi4"]["layer_ms"])

    # Profiles are editable: pretend every node is equally (and slowly) fast, so that balancing the stages
    # for throughput needs all three nodes, the aarch64 one included.
    for key in measured["keys"].values():
        key.update(layer_ms=[5.0] * measured["layers"], bandwidth_mb_s=100.0, rpc_ms=0.5)
    profile.write_text(json.dumps(measured))
    plan_path = tmp_path / "plan.json"
    _run("plan", "fashion-vit-tiny", "--strategy", "pipeline", "--nodes", nodes, "--objective", "throughput",
         "--profile", profile, "-o", plan_path)
    plan = json.loads(plan_path.read_text())
    assert [s["slot"] for s in plan["stages"]] == ["x86#0", "x86#1", "rpi4#0"]
    assert [s["layers"][0] for s in plan["stages"]][0] == 0 and plan["stages"][-1]["layers"][1] == measured["layers"]

    report_path = tmp_path / "report.json"
    out = _run("infer", plan_path, "--tracker", shared_cluster.address, "--dataset", "fashion-mnist",
               "--stream", 8, "--json", report_path, "--timeout", 120)
    assert "throughput" in out
    report = json.loads(report_path.read_text())
    assert report["failed"] == 0
    vit, cfg = model_configs("fashion-vit-tiny")
    x, _ = fashion.load("test", 8)
    expected = cs.predict(cs.train_full(vit, cfg), x).argmax(1)
    assert report["predictions"] == expected.tolist()
    assert all(n["calls"] > 0 for n in report["nodes"])
