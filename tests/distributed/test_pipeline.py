"""Pipeline plans: the DP over node kinds, profiles, and a zoo model planned, compiled and streamed node to
node through two x86 nodes and an aarch64 node under qemu, verified against onnxruntime on the whole model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgevit.distributed import cost
from edgevit.distributed.pipeline import choose_stages
from edgevit.distributed.plan import NodeSlot
from edgevit.errors import EdgevitError, InputError


def _profile(a_ms, b_ms, out_bytes=1000, weight_bytes=0) -> dict:
    units = [{"start": i, "end": i + 1, "macs": 0, "ops": 0, "out_bytes": out_bytes if i < len(a_ms) - 1 else 40,
              "weight_bytes": weight_bytes} for i in range(len(a_ms))]
    kind = {"link_mb_s": 100.0, "message_ms": 0.1}
    return {"format": cost.PROFILE_FORMAT, "input_bytes": 1000, "units": units,
            "kinds": {"a": {"target": "host", "unit_ms": a_ms, **kind, "source": "test"},
                      "b": {"target": "rpi4", "unit_ms": b_ms, **kind, "source": "test"}}}


def _shape(choices):
    return [(c.key, c.first, c.end) for c in choices]


def test_latency_keeps_one_stage_throughput_balances():
    slots = [NodeSlot("a", 0, "host", 64), NodeSlot("a", 1, "host", 64)]
    profile = _profile([1.0, 4.0, 4.0, 1.0], [9.0] * 4)
    choices, latency = choose_stages(profile, slots, "latency")
    assert _shape(choices) == [("a", 0, 4)]  # extra hops only add transfer
    choices, throughput = choose_stages(profile, slots, "throughput")
    assert _shape(choices) == [("a", 0, 2), ("a", 2, 4)]
    assert throughput["bottleneck_ms"] < latency["bottleneck_ms"]


def test_the_faster_kind_wins_and_kinds_mix_in_any_order():
    slots = [NodeSlot("a", 0, "host", 64), NodeSlot("b", 0, "rpi4", 64)]
    choices, _ = choose_stages(_profile([1.0] * 4, [0.1] * 4), slots, "latency")
    assert _shape(choices) == [("b", 0, 4)]
    # b is fast on the first half, a on the second: the throughput plan puts b first although a is listed first
    choices, _ = choose_stages(_profile([9.0, 9.0, 1.0, 1.0], [1.0, 1.0, 9.0, 9.0]), slots, "throughput")
    assert _shape(choices) == [("b", 0, 2), ("a", 2, 4)]


def test_memory_limits_force_a_split_and_exact_stage_counts():
    profile = _profile([1.0] * 4, [1.0] * 4, weight_bytes=10 << 20)  # 10 MiB of weights per unit
    slots = [NodeSlot("a", i, "host", 50) for i in range(3)]
    choices, _ = choose_stages(profile, slots, "latency")
    assert len(choices) >= 2 and all(cost.stage_memory_mib(c.cost) <= 50 for c in choices)
    choices, _ = choose_stages(_profile([1.0] * 4, [1.0] * 4), slots, "latency", stages=3)
    assert len(choices) == 3
    with pytest.raises(EdgevitError, match="fits these nodes' memory"):
        choose_stages(profile, [NodeSlot("a", 0, "host", 20)], "latency")
    with pytest.raises(EdgevitError, match="--stages must be between 1 and 3"):
        choose_stages(profile, slots, "latency", stages=0)
    with pytest.raises(EdgevitError, match="objective"):
        choose_stages(profile, slots, "fastest")


@pytest.mark.parametrize("edit,field", [
    (lambda p: p.update(format="other"), "not an edgevit profile"),
    (lambda p: p.update(units=[]), "'units'"),
    (lambda p: p["units"][1].update(macs="many"), "units\\[1\\].macs"),
    (lambda p: p["kinds"]["a"].update(unit_ms=[1.0]), "kinds.a.unit_ms"),
    (lambda p: p["kinds"]["b"].update(link_mb_s=0), "kinds.b.link_mb_s"),
    (lambda p: p["kinds"]["b"].update(unit_ms=[1.0, float("nan"), 1.0, 1.0]), "kinds.b.unit_ms"),
    (lambda p: p.pop("input_bytes"), "input_bytes"),
])
def test_a_bad_profile_names_the_field(tmp_path, edit, field):
    profile = _profile([1.0] * 4, [1.0] * 4)
    edit(profile)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(profile))
    with pytest.raises(InputError, match=field):
        cost.read_profile(path)


def _edgevit(*args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_zoo_model_pipelined_over_x86_and_qemu_nodes_matches_onnxruntime(shared_cluster, tmp_path):
    """mobilevit_xxs on 3 nodes: profiled on the x86 nodes through RPC, the aarch64 node (qemu) estimated, never
    timed; three stages forced, the last on the aarch64 node; streamed node to node and verified."""
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 2, target: host}\n  - {key: rpi4, target: rpi4}\n")
    plan_dir = tmp_path / "plan"
    _edgevit("plan", "mobilevit_xxs", "--strategy", "pipeline", "--nodes", nodes, "--tracker",
             shared_cluster.address, *shared_cluster.host_keys, "--units", 4, "-o", plan_dir)
    profile = json.loads((plan_dir / "profile.json").read_text())
    assert profile["kinds"]["x86"]["source"].startswith("measured")
    assert profile["kinds"]["rpi4"]["source"].startswith("estimate") and "qemu" in profile["kinds"]["rpi4"]["source"]
    assert all(t > 0 for t in profile["kinds"]["x86"]["unit_ms"])

    # Make the aarch64 node the fastest on the last units (an edited profile, as from a real board), so the
    # throughput plan with three stages puts the last stage on it.
    profile["kinds"]["rpi4"]["unit_ms"] = [100.0] * (len(profile["units"]) - 1) + [0.01]
    (plan_dir / "profile.json").write_text(json.dumps(profile))
    out = _edgevit("plan", "mobilevit_xxs", "--strategy", "pipeline", "--nodes", nodes, "--objective",
                   "throughput", "--stages", 3, "--units", 4, "-o", plan_dir)
    assert "chained stages match the whole model" in out
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [s["node_key"] for s in plan["stages"]][-1] == "rpi4" and len(plan["stages"]) == 3
    assert plan["stages"][0]["inputs"] == [plan["input"]["name"]]
    assert all(a["outputs"] == b["inputs"] for a, b in zip(plan["stages"], plan["stages"][1:]))

    report_path = tmp_path / "report.json"
    out = _edgevit("infer", plan_dir, "--tracker", shared_cluster.address, *shared_cluster.host_keys,
                   "--stream", 4, "--verify", "--json", report_path, "--stall-timeout", 120, "--timeout", 120)
    assert "PASS" in out
    report = json.loads(report_path.read_text())
    assert report["failed"] == 0 and report["verify"]["ok"] and report["verify"]["checked"] == 4
    assert all(s["compute_ms"] > 0 for s in report["stages"])
    assert report["links"][1]["bytes"] == plan["stages"][1]["predicted"]["in_bytes"] > 0
    assert report["links"][1]["transfer_ms"] is not None
    assert report["counters"]["duplicate_results"] == 0


def test_onnx_file_outside_the_zoo_over_x86_and_qemu_nodes(shared_cluster, tmp_path):
    """An ONNX file of a hybrid edgevit's zoo does not have (a MobileViT trained on digits), three stages over
    two x86 nodes and the aarch64 node under qemu, verified on real digits."""
    from edgevit.datasets import digits
    from tiny_onnx_models import tiny_hybrid_onnx

    model = tiny_hybrid_onnx(tmp_path / "digits_hybrid.onnx")
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 2, target: host}\n  - {key: rpi4, target: rpi4}\n")
    plan_dir = tmp_path / "plan"
    _edgevit("plan", model, "--strategy", "pipeline", "--nodes", nodes, "--tracker", shared_cluster.address,
             *shared_cluster.host_keys, "--stages", 3, "-o", plan_dir)
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert sorted(s["node_key"] for s in plan["stages"]) == ["rpi4", "x86", "x86"]
    _, _, xte, yte = digits()
    np.save(tmp_path / "digits.npy", xte[:8])
    report_path = tmp_path / "report.json"
    out = _edgevit("infer", plan_dir, "--tracker", shared_cluster.address, *shared_cluster.host_keys, "--input",
                   tmp_path / "digits.npy", "--verify", "--json", report_path, "--stall-timeout", 120,
                   "--timeout", 120)
    assert "PASS" in out
    report = json.loads(report_path.read_text())
    assert report["verify"]["ok"] and report["verify"]["checked"] == 8 and report["failed"] == 0
    assert np.mean(np.array(report["predictions"]) == yte[:8]) >= 0.75   # trained: it still reads digits


def test_plan_refuses_bad_options_with_one_line(tmp_path):
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 1, target: host}\n")
    file = tmp_path / "plan"
    file.write_text("not a folder")
    for args, message in [(["--max-live", 0], "--max-live"), (["--units", 0], "--units"),
                          (["-o", file], "not a folder")]:
        proc = subprocess.run([sys.executable, "-m", "edgevit.distributed", "plan", "mobilevit_xxs", "--strategy",
                               "pipeline", "--nodes", str(nodes), *map(str, args)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert proc.returncode == InputError.exit_code, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
