"""The int8 verification rule: differences counted in output quantization steps, top-1 must agree."""

import numpy as np
import onnx
import pytest

from tiny_onnx_models import tiny_cnn_onnx
from edgevit.quantize import MAX_STEPS, QuantizeSettings, compare_int8, output_steps, quantize_cached
from edgevit.frontend import load_model


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    path = tiny_cnn_onnx(tmp_path_factory.mktemp("int8") / "cnn.onnx")
    return quantize_cached(load_model(str(path)), QuantizeSettings("fashion-mnist", 4))


def test_output_step_is_the_last_dequantize_scale(qdq_model):
    model = qdq_model.load()
    (step,) = output_steps(model)
    scale = next(t for t in model.graph.initializer if t.name == "y_scale")
    assert step == pytest.approx(float(onnx.numpy_helper.to_array(scale)))
    float_model = onnx.load(str(tiny_cnn_onnx(qdq_model.onnx_path.parent / "float_cnn.onnx")))
    assert output_steps(float_model) == [None]


def test_steps_limit_and_top1():
    ref = np.array([[0.0, 0.5, 0.1]], np.float32)
    assert compare_int8([ref.copy()], [ref], [0.1]).max_steps == 0
    near = ref + np.array([[0.0, 0.0, MAX_STEPS * 0.1]], np.float32)
    result = compare_int8([near], [ref], [0.1])
    assert result.ok and result.max_steps == pytest.approx(MAX_STEPS) and result.differing == 1
    far = ref + np.array([[0.0, 0.0, (MAX_STEPS + 1) * 0.1]], np.float32)
    assert not compare_int8([far], [ref], [0.1]).ok
    # every value within the limit (4 x 0.1), but the class changes where the reference's top two are 0.45 apart
    gap = np.array([[0.0, 0.5, 0.05]], np.float32)
    swapped = np.array([[0.0, 0.3, 0.4]], np.float32)
    result = compare_int8([swapped], [gap], [0.1])
    assert result.max_steps <= MAX_STEPS
    assert not result.ok and not result.top1_agree and "DIFFERS" in result.summary()
    # the reference's own top two within the limit: a tie at int8 precision, either class passes
    close = np.array([[0.0, 0.5, 0.45]], np.float32)
    flipped = np.array([[0.0, 0.45, 0.5]], np.float32)
    assert compare_int8([flipped], [close], [0.1]).ok
    assert not compare_int8([flipped], [close], [0.01]).ok  # 5 steps apart: a real disagreement


def test_nonfinite_and_shape_fail():
    ref = np.zeros((1, 3), np.float32)
    assert "NaN" in compare_int8([np.full((1, 3), np.nan, np.float32)], [ref], [0.1]).summary()
    assert compare_int8([np.zeros((1, 4), np.float32)], [ref], [0.1]).max_steps == float("inf")


def test_float_outputs_use_the_float_tolerance():
    ref = np.array([[1.0, 2.0]], np.float32)
    assert compare_int8([ref + 2e-5], [ref], [None]).max_steps == pytest.approx(1.0, rel=1e-3)


def test_step_follows_data_movement_and_scalar_division():
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z"),
            numpy_helper.from_array(np.array(4.0, np.float32), "four"),
            numpy_helper.from_array(np.array([1, 6], np.int64), "shape")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("Reshape", ["d", "shape"], ["r"]),
             helper.make_node("Div", ["r", "four"], ["y"]),
             helper.make_node("Relu", ["d"], ["other"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6]),
                               helper.make_tensor_value_info("other", TensorProto.FLOAT, [2, 3])], initializer=init)
    assert output_steps(helper.make_model(graph)) == [0.125, None]
