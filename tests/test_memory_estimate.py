import numpy as np
import onnx
import pytest

from edgevit.errors import ResourceError
from edgevit.frontend import load_model
from edgevit.memory_estimate import check_fits, estimate
from tiny_onnx_models import tiny_cnn_onnx


def test_estimate_counts_weights_inputs_and_the_largest_tensor(tiny_onnx):
    model = load_model(str(tiny_onnx))
    found = estimate(model.load(), model.inputs)
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in model.load().graph.initializer)
    assert found.weights == weights
    assert found.inputs == 1 * 3 * 16 * 16 * 4
    assert (found.largest_name, found.largest) == ("c", 1 * 8 * 16 * 16 * 4)  # the Conv output (Relu's is as big)
    assert found.total == weights + found.inputs + found.largest


def test_a_model_too_big_for_the_board_is_refused_with_the_figure(tmp_path):
    model = load_model(str(tiny_cnn_onnx(tmp_path / "dyn.onnx", batch="N")), "x:100000,3,16,16")
    with pytest.raises(ResourceError, match=r"needs at least 1\.\d+ GiB .* more than the 1 GiB of target tiny"):
        check_fits(model.load(), model.inputs, 1 << 30, "target tiny")
    assert check_fits(model.load(), model.inputs, None, "unknown").total > 1 << 30
    assert np.isclose(check_fits(model.load(), model.inputs, 4 << 30, "rpi4").largest, 100000 * 8 * 256 * 4)
