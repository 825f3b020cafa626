import numpy as np
import pytest

from edgevit.errors import ArtifactError, InputError
from edgevit.reference import compare, run_onnxruntime
from edgevit.runtime import host_arch
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.runner import run_artifact


def test_host_artifact_matches_onnxruntime(tiny_host_artifact):
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with Artifact.open(tiny_host_artifact) as art:
        outputs, seconds = run_artifact(art, [x], repeat=2)
        result = compare(outputs, run_onnxruntime(art.reference, [x]))
    assert len(seconds) == 2
    assert result.max_rel_error <= 1e-5 and result.top1_agree


@pytest.mark.parametrize("x", [np.zeros((1, 3, 8, 8), np.float32), np.zeros((1, 3, 16, 16), np.float64)])
def test_wrong_shape_or_dtype_is_refused(tiny_host_artifact, x):
    with Artifact.open(tiny_host_artifact) as art, pytest.raises(InputError, match="float32"):
        run_artifact(art, [x])


@pytest.mark.skipif(host_arch() == "aarch64", reason="needs a non-aarch64 host")
def test_aarch64_artifact_refused_on_this_cpu(tiny_rpi4_artifact):
    with Artifact.open(tiny_rpi4_artifact) as art, pytest.raises(ArtifactError, match="built for aarch64"):
        run_artifact(art, [np.zeros((1, 3, 16, 16), np.float32)])
