"""``--keep-float N``: the nodes that quantize worst (by measured error) stay in float, are reported, build and
verify; bad values of N are one error line."""

import json

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_line_error, run_cli
from outlier_models import LAYERS, outlier_cnn_onnx
from tiny_onnx_models import tiny_cnn_onnx

from edgevit.frontend import from_onnx_file
from edgevit.quantize import QuantizeSettings, quantize_model
from edgevit.quantize.fallback import name_nodes, sqnr_db


@pytest.mark.parametrize("bad", LAYERS[1:])
def test_the_layer_that_quantizes_badly_is_kept_in_float(tmp_path, bad):
    """Whichever convolution holds the outlier weights is the one picked, although every layer after it has
    as bad an output (the error is measured per node: onnxruntime's accumulated ``xmodel_err`` ranks conv4's
    output below conv2's when conv2 holds the outlier), and keeping it in float restores the outputs."""
    model = from_onnx_file(outlier_cnn_onnx(tmp_path / f"{bad}.onnx", bad))
    summary = quantize_model(model, QuantizeSettings("fashion-mnist", 8, keep_float=1), tmp_path / "q.onnx")
    (kept,) = summary["kept_float"]
    assert kept["node"] == bad and kept["op"] == "Conv" and kept["sqnr_db"] < 3, summary
    assert summary["measured_nodes"] >= len(LAYERS) + 1   # the four convs, pooling, flatten, classifier
    sqnr = summary["output_sqnr_db"]
    assert sqnr["all_int8"] < 3 and sqnr["with_float_fallback"] > 30, sqnr
    # the kept node reads float weights in the QDQ file; the other convolutions still read int8 ones
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    weights = {t.name: t.data_type for t in quantized.graph.initializer}
    assert weights[f"{bad}_w"] == onnx.TensorProto.FLOAT
    assert all(weights[f"{n}_w_quantized"] == onnx.TensorProto.INT8 for n in LAYERS if n != bad)
    assert summary["quantized_ops"]["Conv"] == len(LAYERS) - 1
    # its output stays quantized for a reader with int8 weights (the next conv's int8 kernel), and is float for
    # the others (the pooling after conv4)
    quantized_again = any(n.op_type == "QuantizeLinear" and n.input[0] == f"{bad}_relu" for n in quantized.graph.node)
    after = next(n for n in quantized.graph.node
                 if n.name == (LAYERS[LAYERS.index(bad) + 1] if bad != LAYERS[-1] else "pool"))
    if bad != LAYERS[-1]:
        assert quantized_again and after.input[0] == f"{bad}_relu_DequantizeLinear_Output"
    else:
        assert not quantized_again and after.input[0] == f"{bad}_relu"
    # and it reads its input before quantization, through the ReLU the quantizer had folded (nodes in order)
    before = LAYERS[LAYERS.index(bad) - 1]
    names = [n.name for n in quantized.graph.node]
    kept_node = quantized.graph.node[names.index(bad)]
    assert kept_node.input[0] == f"{before}_relu_float"
    assert names.index(before) < names.index(f"{before}_relu_float") < names.index(bad)
    onnx.checker.check_model(quantized)


def test_without_an_outlier_nothing_scores_that_badly(tmp_path):
    """The control: the same network without the outlier has no node near 0 dB, so the low score above
    comes from the outlier, not from the measurement."""
    path = tmp_path / "clean.onnx"
    onnx_model = onnx.load(str(outlier_cnn_onnx(path, "conv3")))
    for init in onnx_model.graph.initializer:
        if init.name == "conv3_w":
            w = onnx.numpy_helper.to_array(init).copy()
            w[:, 0] /= 1000
            init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(onnx_model, str(path))
    summary = quantize_model(from_onnx_file(path), QuantizeSettings("fashion-mnist", 8, keep_float=1),
                             tmp_path / "q.onnx")
    assert summary["kept_float"][0]["sqnr_db"] > 15, summary
    assert summary["output_sqnr_db"]["all_int8"] > 20


def test_kept_float_build_verifies_and_records_the_choice(capsys, tmp_path):
    """compile --keep-float: the int8 build with a float convolution among int8 ones verifies against
    onnxruntime on the same file; the table is printed and the choice is in the artifact metadata."""
    model = outlier_cnn_onnx(tmp_path / "m.onnx", "conv3")
    code, out, err = run_cli(capsys, "compile", model, "--quantize", "int8", "--calibration", "fashion-mnist",
                             "--calib-count", "8", "--keep-float", "2", "-o", tmp_path / "m.tar")
    assert code == 0, err
    assert "kept in float (2 of" in out and "conv3" in out and "dB all int8 ->" in out
    code, out, err = run_cli(capsys, "run", tmp_path / "m.tar", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["verify"]["ok"] and result["verify"]["max_steps"] <= 1, result["verify"]
    from edgevit.runtime.artifact import Artifact

    with Artifact.open(tmp_path / "m.tar") as artifact:
        quantization = artifact.metadata["model"]["quantization"]
    assert quantization["keep_float"] == 2 and [k["node"] for k in quantization["kept_float"]][0] == "conv3"


def test_keep_float_is_in_the_cache_key(tmp_path):
    from edgevit.quantize import quantize_cached

    model = from_onnx_file(tiny_cnn_onnx(tmp_path / "cnn.onnx"))
    plain = quantize_cached(model, QuantizeSettings("fashion-mnist", 4))
    kept = quantize_cached(model, QuantizeSettings("fashion-mnist", 4, keep_float=1))
    assert plain.onnx_path != kept.onnx_path
    assert "kept_float" not in plain.extra["quantization"] and len(kept.extra["quantization"]["kept_float"]) == 1


def test_node_naming_and_sqnr():
    from onnx import helper

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="Relu_0"),
             helper.make_node("Relu", ["b"], ["c"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    assert name_nodes(model) == 2
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == 3 and names[1] == "Relu_0" and all(names)
    assert sqnr_db(1.0, 0.0) == np.inf
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


@pytest.mark.parametrize("value, code, needle", [
    ("-1", 2, "--keep-float: -1 is not in 0..100000"),
    ("two", 2, "--keep-float: 'two' is not an integer"),
    ("1.5", 2, "--keep-float: '1.5' is not an integer"),
    ("50", 5, "--keep-float 50: cnn has"),
])
def test_bad_keep_float_values(capsys, tmp_path, value, code, needle):
    model = tiny_cnn_onnx(tmp_path / "cnn.onnx")
    got, _, err = run_cli(capsys, "quantize", model, "--calibration", "fashion-mnist", "--calib-count", "2",
                          "--keep-float", value, "-o", tmp_path / "q.onnx")
    assert_one_line_error(got, err, code, needle)
    assert not (tmp_path / "q.onnx").exists()
    got, _, err = run_cli(capsys, "compile", model, "--quantize", "int8", "--calibration", "fashion-mnist",
                          "--calib-count", "2", "--keep-float", value, "-o", tmp_path / "m.tar")
    assert_one_line_error(got, err, code, needle)
    assert not (tmp_path / "m.tar").exists()
    got, _, err = run_cli(capsys, "bench", model, "--quantize", "int8", "--calibration", "fashion-mnist",
                          "--calib-count", "2", "--keep-float", value, "--runs", "1")
    assert_one_line_error(got, err, code, needle)


def test_keep_float_needs_quantize(capsys, tmp_path):
    model = tiny_cnn_onnx(tmp_path / "cnn.onnx")
    for command in ("compile", "bench"):
        code, _, err = run_cli(capsys, command, model, "--keep-float", "1")
        assert_one_line_error(code, err, 2, "--keep-float apply with --quantize int8")
