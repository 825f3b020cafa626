"""Whole zoo models, one per family, compiled for the host and checked against onnxruntime."""

import pytest

from edgevit.compiler import compile_for_target
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.runner import run_artifact
from edgevit.targets import get_target

ONE_PER_FAMILY = ["mobilevit_xxs", "mobilevitv2_050", "swiftformer_xs", "efficientformer_l1", "efficientformerv2_s0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_host_build_matches_onnxruntime(name, tmp_path):
    model = load_model(name)
    path = tmp_path / f"{name}.tar"
    meta = compile_for_target(model, get_target("host"), path, command="pytest")
    assert meta["model"]["family"] and meta["target"]["arch"] == get_target("host").cpu.arch
    inputs = random_inputs(model.inputs, seed=0)
    with Artifact.open(path) as art:
        outputs, _ = run_artifact(art, inputs)
        result = compare(outputs, run_onnxruntime(art.reference, inputs), rtol=1e-5)
    assert outputs[0].shape == (1, 1000)
    assert result.max_rel_error <= 1e-5, result
    assert result.top1_agree, result
