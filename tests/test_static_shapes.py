import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cli_helpers import run_cli
from tiny_onnx_models import shape_arithmetic_onnx, tiny_cnn_onnx
from edgevit.frontend import TensorSpec, load_model
from edgevit.reference import run_onnxruntime
from edgevit.static_shapes import fold_shape_arithmetic, has_shape_arithmetic


def test_shape_arithmetic_is_folded_into_constants(tmp_path):
    path = shape_arithmetic_onnx(tmp_path / "shapes.onnx")
    imported = load_model(str(path))
    folded = imported.load()
    ops = [n.op_type for n in folded.graph.node]
    assert ops == ["Pad", "Conv", "Constant", "Reshape", "Transpose", "Add", "ReduceMean"], ops
    inits = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert inits["pads"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0]
    np.testing.assert_allclose(inits["ramp_s"].ravel(), np.arange(1, 49) * np.float32(0.01), rtol=1e-6)
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 6)).astype(np.float32)
    want, got = run_onnxruntime(path, [x])[0], run_onnxruntime(imported.onnx_path, [x])[0]
    np.testing.assert_array_equal(got, want)
    assert {v.name for v in folded.graph.value_info} >= {"c", "r", "t"}   # shapes inferred for extractors


def test_a_model_with_runtime_pads_and_reshapes_compiles_and_verifies(capsys, tmp_path):
    # TVM 0.27's ONNX import refuses this graph as it is ("Reshape expects the input tensor to have known shape").
    path = shape_arithmetic_onnx(tmp_path / "shapes.onnx")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "a.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "a.tar", "--verify")
    assert code == 0 and "-> PASS" in out, out + err


def test_models_without_shape_arithmetic_are_left_alone(tmp_path):
    path = tiny_cnn_onnx(tmp_path / "cnn.onnx")
    assert not has_shape_arithmetic(onnx.load(str(path)))
    assert load_model(str(path)).onnx_path == path


def test_quantization_ops_on_constant_weights_are_not_folded():
    w = numpy_helper.from_array(np.ones((2, 2), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "dq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=[w, scale])
    assert not has_shape_arithmetic(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_value_dependent_shapes_are_not_folded():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Shape", ["nz"], ["y"])]
    graph = helper.make_graph(nodes, "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    assert not has_shape_arithmetic(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _model(nodes, inits, x_shape, y_shape):
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_constant_arithmetic_on_weights_is_left_to_the_backends():
    # EfficientFormerV2's attention biases: a weight table gathered by constant indices (the zoo's file)
    nodes = [helper.make_node("Unsqueeze", ["idx", "axes"], ["idx1"]),
             helper.make_node("Gather", ["table", "idx1"], ["bias"]), helper.make_node("Add", ["x", "bias"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((4, 3), np.float32), "table"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "idx"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    assert not has_shape_arithmetic(_model(nodes, inits, [1, 2, 3], [1, 2, 3]))


def test_a_quantized_pad_value_is_folded_and_the_weights_stay_quantized():
    # onnxruntime's quantizer writes a Pad's constant value 0 as DequantizeLinear(int8): TVM needs a constant
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "scale"], ["xd"]),
             helper.make_node("DequantizeLinear", ["zero_q", "scale"], ["zero"]),
             helper.make_node("Pad", ["xd", "pads", "zero"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "scale"], ["pq"]),
             helper.make_node("DequantizeLinear", ["pq", "scale"], ["pd"]),
             helper.make_node("DequantizeLinear", ["w_q", "scale"], ["w"]), helper.make_node("MatMul", ["pd", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int8), "zero_q"), numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
             numpy_helper.from_array(np.array([0, 1, 0, 1], np.int64), "pads"),
             numpy_helper.from_array(np.ones((4, 2), np.int8), "w_q")]
    model = _model(nodes, inits, [1, 2], [1, 2])
    assert has_shape_arithmetic(model)
    folded = fold_shape_arithmetic(model, [TensorSpec("x", (1, 2), "float32")])
    assert [n.op_type for n in folded.graph.node] == [
        "QuantizeLinear", "DequantizeLinear", "Pad", "QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "MatMul"]
