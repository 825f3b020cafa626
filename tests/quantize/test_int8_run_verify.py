"""``run --verify`` on int8 artifacts: the int8 rule (output quantization steps, top-1) decides, a reference that
does not match the build fails with exit 8, and outputs a few steps off pass or fail at the documented limit."""

import json

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_line_error, run_cli
from tiny_onnx_models import tiny_cnn_onnx

from edgevit.quantize import MAX_STEPS, output_steps
from edgevit.reference import run_onnxruntime, verify
from edgevit.runtime.artifact import Artifact, write_artifact


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8_verify")
    model = tiny_cnn_onnx(folder / "cnn.onnx")
    from edgevit.cli import main

    assert main(["compile", str(model), "--quantize", "int8", "--calibration", "fashion-mnist",
                 "--calib-count", "4", "-o", str(folder / "m.tar")]) == 0
    return folder / "m.tar"


def _repack(artifact: "Artifact", path):
    """Write the (edited) extracted artifact again with fresh hashes: a reference that is intact as a file
    but no longer the model the library was built from."""
    meta = {k: v for k, v in artifact.metadata.items() if k not in ("format", "format_version", "members")}
    write_artifact(path, {name: artifact.dir / name for name in artifact.metadata["members"]}, meta)


def test_untouched_int8_artifact_passes(capsys, int8_artifact):
    code, out, err = run_cli(capsys, "run", int8_artifact, "--verify")
    assert code == 0, err
    assert "QDQ groups within 1 step of onnxruntime on edgevit's inputs" in out and "-> PASS" in out
    assert "end to end max 0 output quantization steps" in out


def test_library_run_verify_checks_every_group(int8_artifact):
    """``execute.run(..., verify=True)``, not only the CLI, judges a QDQ build group by group."""
    from edgevit.execute import run
    from edgevit.quantize.groups import Int8Verification

    ran = run(int8_artifact, verify=True)
    assert isinstance(ran.comparison, Int8Verification) and ran.comparison.ok
    assert len(ran.comparison.groups) >= 4 and ran.comparison.probe_differs == 0
    assert ran.to_json(str(int8_artifact))["verify"]["groups_checked"] == len(ran.comparison.groups)


def test_outputs_computed_elsewhere_are_checked_against_a_probe_of_the_reference(int8_artifact, tmp_path):
    """``verify_int8_reference`` (for a distributed plan's stages): outputs equal to the probe build's pass; one
    value moved by one step is not what the probed groups computed and fails."""
    import shutil

    from edgevit.execute import run, verify_int8_reference
    from edgevit.frontend import TensorSpec
    from edgevit.reference import random_inputs
    from edgevit.settings import seed

    ran = run(int8_artifact, verify=True)
    with Artifact.open(int8_artifact) as artifact:
        reference = shutil.copy(artifact.reference, tmp_path / "whole.onnx")
        inputs = random_inputs([TensorSpec.from_json(s) for s in artifact.metadata["inputs"]], seed())  # run()'s
    good = verify_int8_reference(reference, "host", inputs, ran.outputs, ran.comparison.end_to_end)
    assert good.ok and good.probe_differs == 0 and len(good.groups) == len(ran.comparison.groups)
    moved = [ran.outputs[0].copy()]
    (step,) = output_steps(onnx.load(str(reference)))
    moved[0].flat[0] += step
    bad = verify_int8_reference(reference, "host", inputs, moved, ran.comparison.end_to_end)
    assert not bad.ok and bad.probe_differs == 1 and "the probe build differs from the artifact in 1" in bad.summary()


def test_reference_with_changed_scales_fails_with_exit_8(capsys, int8_artifact, tmp_path):
    with Artifact.open(int8_artifact) as artifact:
        model = onnx.load(str(artifact.reference))
        scale = next(t for t in model.graph.initializer if t.name == "w_scale")
        scale.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(scale) * 1.5, scale.name))
        onnx.save(model, str(artifact.reference))
        _repack(artifact, tmp_path / "tampered.tar")
    code, out, err = run_cli(capsys, "run", tmp_path / "tampered.tar", "--verify")
    # the probe is built from the reference, so it no longer computes what the artifact computes
    assert_one_line_error(code, err, 8, "verification failed (int8 rule)", "the probe build differs from the "
                          "artifact", "FAIL")
    assert "-> FAIL" in out


def test_outputs_off_by_steps(int8_artifact):
    """Outputs moved by MAX_STEPS output steps pass, by one more fail (no float64 arbitration for QDQ)."""
    with Artifact.open(int8_artifact) as artifact:
        (step,) = output_steps(onnx.load(str(artifact.reference)))
        x = [np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)]
        reference = run_onnxruntime(artifact.reference, x)
        top = int(reference[0].argmax())
        for steps, ok in ((MAX_STEPS, True), (MAX_STEPS + 1, False)):
            moved = reference[0].copy()
            moved[0, top] += steps * step   # the top class moves up: top-1 still agrees
            result = verify([moved], artifact.reference, x, rtol=1e-5, reference=reference)
            assert result.ok is ok and result.max_steps == pytest.approx(steps, abs=1e-3)
            assert not hasattr(result, "float64_rel_error")
            assert json.dumps(result.to_json())
