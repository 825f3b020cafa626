"""aarch64 builds executed under qemu-aarch64-static with the real aarch64 TVM runtime."""

import pytest

from edgevit import emulation
from edgevit.compiler import compile_for_target
from edgevit.errors import ArtifactError
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.runtime.artifact import Artifact
from edgevit.targets import get_target

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def aarch64_python():
    return emulation.prepare("aarch64")


@pytest.mark.slow
def test_mobilevit_xxs_for_rpi4_runs_under_qemu_and_matches_onnxruntime(aarch64_python, tmp_path):
    model = load_model("mobilevit_xxs")
    path = tmp_path / "mvit_rpi4.tar"
    compile_for_target(model, get_target("rpi4"), path, command="pytest")
    inputs = random_inputs(model.inputs, seed=0)
    with Artifact.open(path) as art:
        assert art.arch == "aarch64"
        assert art.library.read_bytes()[:20][18] == 0xB7, "ELF e_machine must be AArch64"
        outputs, seconds = emulation.run_artifact(aarch64_python, art.dir, inputs)
        result = compare(outputs, run_onnxruntime(art.reference, inputs), rtol=1e-5)
    assert len(seconds) == 1
    assert result.max_rel_error <= 1e-5 and result.top1_agree, result


def test_runner_under_qemu_refuses_a_host_artifact(aarch64_python, tiny_host_artifact):
    # The board-side runner checks the architecture itself, so a wrong artifact fails on the board too.
    with Artifact.open(tiny_host_artifact) as art:
        inputs = random_inputs(load_model(str(art.reference)).inputs, seed=0)
        with pytest.raises(ArtifactError, match="cannot run on this aarch64"):
            emulation.run_artifact(aarch64_python, art.dir, inputs)
