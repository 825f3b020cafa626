"""A heterogeneous pipeline: an FPGA node (PYNQ bundle, its C-simulation standing in for the PL) runs the
convolutional and MobileViT part of a small hybrid trained on digits, an x86 node runs the head; verified against
onnxruntime on the whole model within the tolerance measured at plan time, with real digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_onnx_models import tiny_hybrid, tiny_hybrid_onnx


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    """(folder, model.onnx, bundle, digits test set): the tiny hybrid's HLS project, bundle and ONNX file."""
    import torch

    from edgevit.hls import project
    from edgevit.datasets import digits
    from edgevit.pynq.bundle import make_bundle

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("hybrid")
    model = tiny_hybrid()
    xtr, _, xte, yte = digits()
    _, proj = project.generate(model, (1, 1, 8, 8), "pynq-z2", folder / "project", [x[None] for x in xtr[:200]],
                               test_inputs=[x[None] for x in xte[:4]], meta={"model": "tiny_hybrid"})
    # no bitstream: no Vivado here; the FPGA node's simulated device loads a stand-in overlay
    make_bundle(proj, folder / "bundle", model=model, input_shape=(1, 1, 8, 8))
    return folder, tiny_hybrid_onnx(folder / "tiny_hybrid.onnx"), folder / "bundle", (xte, yte)

def _nodes_file(folder: Path, bundle: Path) -> Path:
    path = folder / "nodes.yaml"
    path.write_text(f"nodes:\n  - {{key: pynq, target: pynq-z2, bundle: {bundle}}}\n"
                    "  - {key: x86, count: 1, target: host}\n")
    return path

def test_plan_puts_the_accelerator_part_on_the_fpga_node(hybrid, tmp_path):
    from edgevit.distributed.pipeline import build_pipeline_plan
    from edgevit.distributed.plan import load_nodes, read_plan

    folder, onnx_path, bundle, _ = hybrid
    plan = build_pipeline_plan(str(onnx_path), load_nodes(_nodes_file(folder, bundle)), None, tmp_path / "plan",
                               stages=2)
    first, second = plan["stages"]
    assert first["node_key"] == "pynq" and "artifact" not in first
    assert first["accelerator"]["board"] == "pynq-z2"
    assert json.loads((bundle / "cpu_tail.json").read_text())["input"] == first["outputs"][0]
    assert second["node_key"] == "x86" and second["artifact"].endswith(".tar")
    assert "HLS estimator" in first["cost_source"]
    fixed = plan["chain_check"]["fixed_point"]
    assert fixed["top1_agree"] and 0 < fixed["max_rel_error"] < 0.1
    assert plan["verify_rtol"] == pytest.approx(4 * fixed["max_rel_error"])
    assert fixed["input"] == "the bundle's 4 self-test input(s)"  # every one, not only the first
    assert read_plan(tmp_path / "plan")["stages"][0]["sha256"] == first["sha256"]

def test_fpga_node_runs_its_stage_verified_end_to_end(hybrid, pynq_python, cluster, tmp_path):
    from edgevit.cli import main

    folder, onnx_path, bundle, (xte, yte) = hybrid
    nodes = _nodes_file(folder, bundle)
    fpga = cluster.add_node("pynq", extra=("--fpga", bundle, "--simulate", "--fpga-python", pynq_python))
    cluster.add_node("x86")
    cluster.wait_for("pynq", 1)
    info = [r for r in cluster.client().nodes() if r["key"] == "pynq"]
    assert info and "C-simulation" in json.dumps(info)
    plan_dir = tmp_path / "plan"
    assert main(["plan", str(onnx_path), "--strategy", "pipeline", "--nodes", str(nodes), "--stages", "2",
                 "-o", str(plan_dir)]) == 0
    np.save(tmp_path / "digits.npy", xte[:12])
    report = tmp_path / "r.json"
    assert main(["infer", str(plan_dir), "--tracker", cluster.address, *cluster.host_keys, "--input",
                 str(tmp_path / "digits.npy"), "--verify", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["verify"]["ok"] and result["verify"]["checked"] == 12
    assert result["failed"] == 0
    # the digits are real: the split model still classifies them (the float model gets these right too)
    assert np.mean(np.array(result["predictions"]) == yte[:12]) >= 0.9
    assert fpga.popen.poll() is None

def test_wrong_bundle_on_the_fpga_node_is_named(hybrid, pynq_python, cluster, tmp_path):
    """A node that runs another bundle (or none) than the plan's: a clear error, no waiting for nodes."""
    from edgevit.cli import main

    folder, onnx_path, bundle, _ = hybrid
    plan_dir = tmp_path / "plan"
    assert main(["plan", str(onnx_path), "--strategy", "pipeline", "--nodes", str(_nodes_file(folder, bundle)),
                 "--stages", "2", "-o", str(plan_dir)]) == 0
    cluster.add_node("pynq")   # no --fpga
    cluster.add_node("x86")
    cluster.wait_for("pynq", 1)
    code = main(["infer", str(plan_dir), "--tracker", cluster.address, *cluster.host_keys, "--wait", "20"])
    assert code == 7   # ArtifactError


def _profile(fpga_ms: float) -> dict:
    from edgevit.distributed import cost

    units = [{"start": i, "end": i + 1, "macs": 1e6, "ops": 0, "out_bytes": 1000, "weight_bytes": 1000}
             for i in range(4)]
    cpu = {"target": "host", "unit_ms": [5.0, 5.0, 1.0, 1.0], "link_mb_s": 1000.0, "message_ms": 0.1,
           "source": "test"}
    fpga = cost.accelerator_kind("zcu102", units, 2, {"latency_ms": fpga_ms, "cycles": 1, "clock_mhz": 300})
    return {"units": units, "input_bytes": 1000, "kinds": {"fpga": fpga, "cpu": cpu}}


def test_dp_gives_the_fpga_kind_exactly_its_accelerator_part():
    from edgevit.distributed.pipeline import choose_stages
    from edgevit.distributed.plan import NodeSlot

    slots = [NodeSlot("fpga", 0, "zcu102", 512, "bundle"), NodeSlot("cpu", 0, "host", 512),
             NodeSlot("cpu", 1, "host", 512)]
    choices, predicted = choose_stages(_profile(1.0), slots, "latency")
    assert [(c.key, c.first, c.end) for c in choices] == [("fpga", 0, 2), ("cpu", 2, 4)]
    # compute 1 + 2 ms; into the FPGA node over the default LAN estimate (100 MB/s, 0.3 ms a message), then
    # into and out of the CPU node over its measured link (1000 MB/s, 0.1 ms)
    assert predicted["latency_ms"] == pytest.approx(3.0 + (1e-2 + 0.3) + 2 * (1e-3 + 0.1), rel=1e-6)
    # an accelerator slower than the CPU for its part is left out
    choices, _ = choose_stages(_profile(50.0), slots, "latency")
    assert all(c.key == "cpu" for c in choices)
    # and it never runs anything but its part, even when forced to be used
    choices, _ = choose_stages(_profile(50.0), slots, "latency", stages=3)
    assert [(c.key, c.first, c.end) for c in choices][0] == ("fpga", 0, 2)


@pytest.mark.parametrize("extra, message", [
    (["--simulate"], "apply only with --fpga"),
    (["--fpga-python", "python3"], "apply only with --fpga"),
    (["--fpga", "/nonexistent/bundle"], "not a bundle folder"),
])
def test_fpga_options_are_checked_before_the_node_starts(extra, message, capsys):
    from edgevit.distributed import node
    from edgevit.errors import InputError

    code = node.main(["--tracker", "127.0.0.1:1", "--key", "fpga", "--insecure-plaintext", *extra])
    assert code == InputError.exit_code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_damaged_bundle_is_refused_by_the_fpga_node(hybrid, tmp_path):
    """A bundle member changed after bundling: the worker refuses it (sha256), the node says so."""
    import shutil

    from edgevit.distributed.accelerator_stage import AcceleratorStage
    from edgevit.errors import ArtifactError

    _, _, bundle, _ = hybrid
    damaged = tmp_path / "bundle"
    shutil.copytree(bundle, damaged)
    with open(damaged / "params.bin", "r+b") as f:
        f.write(b"\x01\x02")
    stage = AcceleratorStage(damaged, sys.executable)   # manifest.load fails before pynq is needed
    with pytest.raises(ArtifactError, match="params.bin does not match"):
        stage.start()
    stage.close()
