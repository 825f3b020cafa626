"""``infer --verify`` of int8 (QDQ) pipeline plans: each stage by the per-group rule of ``run --verify`` on its
node's own inputs (edgevit/distributed/pipeline_verify.py). The model is the tiny MobileViT trained on digits,
quantized with Fashion-MNIST calibration, in two stages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from cli_helpers import assert_one_line_error, run_cli
from tiny_onnx_models import tiny_hybrid_onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The float hybrid and its int8 QDQ form."""
    from edgevit.cli import main

    folder = tmp_path_factory.mktemp("int8-pipeline")
    float_model = tiny_hybrid_onnx(folder / "hybrid.onnx")
    assert main(["quantize", str(float_model), "--calibration", "fashion-mnist", "--calib-count", "8",
                 "-o", str(folder / "hybrid_int8.onnx")]) == 0
    return float_model, folder / "hybrid_int8.onnx"


def _plan(model, folder, targets):
    """A two-stage plan of ``model`` for nodes of ``targets`` (key: target), from MAC estimates."""
    from edgevit.distributed.pipeline import build_pipeline_plan
    from edgevit.distributed.plan import NodeSlot

    slots = [NodeSlot(key, i, target, 256) for i, (key, target) in enumerate(targets)]
    build_pipeline_plan(str(model), slots, None, folder, "throughput", stages=2)
    return folder


@pytest.fixture(scope="module")
def host_plan(models, tmp_path_factory):
    return _plan(models[1], tmp_path_factory.mktemp("int8-host") / "plan", [("x86", "host"), ("x86", "host")])


def _infer(capsys, cluster, plan_dir, report, *extra):
    return run_cli(capsys, "infer", plan_dir, "--tracker", cluster.address, *cluster.host_keys, "--stream", 3,
                   "--verify", "--json", report, "--stall-timeout", 120, "--timeout", 120, *extra)


def test_int8_pipeline_over_x86_and_qemu_passes_stage_by_stage(capsys, shared_cluster, models, tmp_path):
    """One stage on an x86 node, one on the aarch64 node under qemu (its probe runs under qemu on the host)."""
    plan_dir = _plan(models[1], tmp_path / "plan", [("x86", "host"), ("rpi4", "rpi4")])
    code, out, err = _infer(capsys, shared_cluster, plan_dir, tmp_path / "report.json")
    assert code == 0, out + err
    verdict = json.loads((tmp_path / "report.json").read_text())["verify"]
    assert verdict["ok"] and verdict["checked"] == 3 and verdict["stream_differs"] == 0
    assert sorted(s["target"] for s in verdict["stages"]) == ["host", "rpi4"]
    for stage in verdict["stages"]:
        assert stage["ok"] and stage["groups_checked"] > 0 and stage["probe_differs"] == 0
        assert f"verify {stage['stage']} ({stage['target']} on " in out
    assert "verify vs onnxruntime (int8 rule, per stage): 2 of 2 stage(s) pass" in out and "-> PASS" in out


def test_a_stage_built_from_another_model_fails_naming_that_stage(capsys, shared_cluster, host_plan, tmp_path):
    """stage1's artifact is compiled from its model with one weight scale x1.5 (the plan's sha256 updated, so
    the node loads it): its node's outputs are not what stage1's QDQ model computes -> exit 8 naming stage1."""
    from edgevit.cli import main
    from edgevit.distributed.client import artifact_digest

    plan_dir = tmp_path / "plan"
    shutil.copytree(host_plan, plan_dir)
    plan = json.loads((plan_dir / "plan.json").read_text())
    stage = plan["stages"][1]
    model = onnx.load(str(plan_dir / stage["onnx"]))
    scale = next(t for t in model.graph.initializer if t.name.endswith("_scale")
                 and any(n.op_type == "DequantizeLinear" and n.input[1] == t.name and n.input[0] in
                         {i.name for i in model.graph.initializer} for n in model.graph.node))
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 1.5, scale.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    assert main(["compile", str(tmp_path / "perturbed.onnx"), "--target", "host", "-o",
                 str(plan_dir / stage["artifact"])]) == 0
    stage["sha256"] = artifact_digest(plan_dir / stage["artifact"])
    (plan_dir / "plan.json").write_text(json.dumps(plan))
    capsys.readouterr()

    code, out, err = _infer(capsys, shared_cluster, plan_dir, tmp_path / "report.json")
    assert_one_line_error(code, err, 8, "pipeline verification failed (int8 rule): stage1: the node's outputs "
                          "differ from the probe build")
    assert "verify stage0 (host on" in out and "-> PASS" in out.split("verify stage0")[1].splitlines()[0]
    assert "-> FAIL" in out.split("verify stage1")[1].splitlines()[0]
    verdict = json.loads((tmp_path / "report.json").read_text())["verify"]
    assert not verdict["ok"] and [s["ok"] for s in verdict["stages"]] == [True, False]


def test_a_value_changed_between_stages_is_named_by_the_stage_that_sent_it(host_plan):
    """The library rule on stage runs made here: untouched they pass; one value of stage0's output moved (a node
    that corrupts what it sends) fails stage0 (its probe and onnxruntime disagree with it), while stage1, checked
    on the value it received, passes."""
    from edgevit.distributed.pipeline_verify import verify_int8
    from edgevit.distributed.plan import read_plan
    from edgevit.reference import random_inputs
    from edgevit.frontend import TensorSpec
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.runner import run_artifact

    plan = read_plan(host_plan)
    x = random_inputs([TensorSpec.from_json(s) for s in plan["inputs"]], 0)

    def stage_runs(corrupt: bool):
        runs, inputs = [], x
        for index, spec in enumerate(plan["stages"]):
            with Artifact.open(spec["artifact"]) as artifact:
                outputs = run_artifact(artifact, inputs)[0]
            if corrupt and index == 0:
                sent = outputs[0]
                if sent.dtype.kind == "f":
                    sent.flat[3] += 0.5 * float(np.abs(sent).max()) + 1.0
                else:   # an int8 tensor: 50 steps, staying in range
                    sent.flat[3] = sent.flat[3] + 50 if sent.flat[3] < 0 else sent.flat[3] - 50
            runs.append((inputs, outputs))
            inputs = outputs
        return runs

    for corrupt in (False, True):
        runs = stage_runs(corrupt)
        results = [{"outputs": runs[-1][1], "error": None}]
        verdict = verify_int8(plan, [x], results, runs, ["here", "here"])
        assert [s.ok for s in verdict.stages] == [not corrupt, True]
        assert verdict.ok is not corrupt and verdict.stream_differs == 0
    failing = verdict.stages[0].failing
    assert "differ from the probe build of the stage's model in 1 value(s)" in failing[0]
    if verdict.stages[0].floats:   # the cut sends a float tensor: onnxruntime's value disagrees too
        assert any(line.startswith("float output") and line.endswith("FAIL") for line in failing)
    assert verdict.failure.startswith("stage0: ")


def test_float_plan_keeps_the_whole_model_rule(capsys, shared_cluster, models, tmp_path):
    plan_dir = _plan(models[0], tmp_path / "plan", [("x86", "host"), ("x86", "host")])
    code, out, err = _infer(capsys, shared_cluster, plan_dir, tmp_path / "report.json")
    assert code == 0, out + err
    assert "verify vs onnxruntime (whole model): max rel error" in out and "-> PASS" in out
    assert "int8 rule" not in out
    verdict = json.loads((tmp_path / "report.json").read_text())["verify"]
    assert verdict["ok"] and verdict["checked"] == 3 and verdict["rtol"] == 1e-5


def test_class_split_of_an_onnx_file_says_use_a_pipeline(capsys, models, tmp_path):
    (tmp_path / "nodes.yaml").write_text("nodes:\n  - {key: x86, count: 2, target: host}\n")
    code, _, err = run_cli(capsys, "plan", models[1], "--strategy", "class", "--nodes", tmp_path / "nodes.yaml",
                           "-o", tmp_path / "plan.json")
    assert_one_line_error(code, err, 3, "for a class split", "--strategy pipeline")
