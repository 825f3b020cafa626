"""The board's numpy interpreter against onnxruntime on one-node graphs: BatchNormalization, Pad, Cast and ReduceL2
(the CPU parts of repvit, fastvit, levit, efficientvit and edgenext need them: tools/outside_zoo.py), and its
one-line refusals of attribute values and inputs it does not take."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevit.errors import ArtifactError, ExecutionError, ModelImportError
from edgevit.pynq import cpu_tail, numpy_graph
from edgevit.reference import onnxruntime_session

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(node, inputs: dict, consts: dict, out_type=TensorProto.FLOAT, opset: int = 18):
    g = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                        for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], out_type, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _both(node, inputs: dict, consts: dict, out_type=TensorProto.FLOAT, opset: int = 18):
    """(onnxruntime's output, the interpreter's) for one node, the graph stored as the board gets it."""
    m = _model(node, inputs, consts, out_type, opset)
    want = onnxruntime_session(m.SerializeToString()).run(None, inputs)[0]
    graph, weights = cpu_tail._plain(m)
    numpy_graph.check_ops(graph)
    got = numpy_graph.run(graph, weights, inputs)[0]
    return want, got


def _close(want, got, rtol=1e-5):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.allclose(got, want, rtol=rtol, atol=rtol * (1 + np.abs(want).max()))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), eps=st.sampled_from([1e-5, 1e-3, 0.0, 0.5]),
       seed=st.integers(0, 2 ** 16))
def test_batchnorm_matches_onnxruntime(shape, eps, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    consts = {"s": rng.standard_normal(c), "b": rng.standard_normal(c), "m": rng.standard_normal(c),
              "v": rng.uniform(0.05, 3, c)}
    consts = {k: v.astype(np.float32) for k, v in consts.items()}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=eps)
    _close(*_both(node, {"x": x}, consts))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(),
       mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]), value=st.sampled_from([None, 0.0, -2.5]),
       with_axes=st.booleans())
def test_pad_matches_onnxruntime(shape, data, mode, value, with_axes):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 3
    axes = sorted(data.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))) if with_axes \
        else list(range(len(shape)))
    # reflect takes pads below the axis length (onnxruntime's limit); negative pads (crops) in constant mode
    lo = [data.draw(st.integers(-(shape[a] - 1) if mode == "constant" else 0,
                                shape[a] - 1 if mode == "reflect" else 2 * shape[a] + 1)) for a in axes]
    hi = [data.draw(st.integers(-(shape[a] - 1 - max(-l, 0)) if mode == "constant" else 0,
                                shape[a] - 1 if mode == "reflect" else 2 * shape[a] + 1)) for a, l in zip(axes, lo)]
    consts = {"p": np.array(lo + hi, np.int64)}
    names = ["x", "p"]
    if value is not None:
        consts["v"] = np.array(value, np.float32)
        names.append("v")
    if with_axes:
        consts["a"] = np.array(axes, np.int64)
        names += [""] * (3 - len(names)) + ["a"]
    node = helper.make_node("Pad", names, ["y"], mode=mode)
    want, got = _both(node, {"x": x}, consts)
    assert np.array_equal(got, want)


def test_pad_opset2_attributes_match_onnxruntime():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 2, 0, 0, 1], value=7.0, mode="constant")
    want, got = _both(node, {"x": x}, {}, opset=10)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("src, to", [(np.float32, TensorProto.INT64), (np.float32, TensorProto.INT32),
                                     (np.int64, TensorProto.FLOAT), (np.float32, TensorProto.BOOL),
                                     (np.float32, TensorProto.FLOAT16), (np.int8, TensorProto.FLOAT),
                                     (np.float32, TensorProto.DOUBLE), (np.int32, TensorProto.UINT8)])
def test_cast_matches_onnxruntime(src, to):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 4)) * 40).astype(src) if np.dtype(src).kind == "f" else \
        rng.integers(0 if to == TensorProto.UINT8 else -100, 100, (2, 3, 4)).astype(src)
    x.ravel()[:4] = [0, 1, 2, 3]
    if np.dtype(src).kind == "f":
        x.ravel()[4:8] = [-2.5, 2.5, -0.5, 0.7]   # casts to integers truncate toward zero
    node = helper.make_node("Cast", ["x"], ["y"], to=to)
    want, got = _both(node, {"x": x}, {}, out_type=to)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(), keepdims=st.sampled_from([0, 1]),
       seed=st.integers(0, 2 ** 16))
def test_reduce_l2_matches_onnxruntime(shape, data, keepdims, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    axes = sorted(data.draw(st.sets(st.integers(-len(shape), len(shape) - 1), max_size=len(shape))))
    axes = sorted({a % len(shape) for a in axes})
    consts = {"a": np.array(axes, np.int64)} if axes else {}
    node = helper.make_node("ReduceL2", ["x", "a"] if axes else ["x"], ["y"], keepdims=keepdims)
    _close(*_both(node, {"x": x}, consts))


def _graph(op, attrs, inputs=("x",), outputs=("y",)):
    return {"nodes": [{"op": op, "inputs": list(inputs), "outputs": list(outputs), "attrs": attrs}],
            "outputs": [outputs[0]], "weights": []}


@pytest.mark.parametrize("op, attrs, outputs, words", [
    ("BatchNormalization", {"training_mode": 1}, ("y",), "training_mode=1"),
    ("BatchNormalization", {"epsilon": -1.0}, ("y",), "epsilon=-1.0"),
    ("BatchNormalization", {"epsilon": float("nan")}, ("y",), "epsilon=nan"),
    ("BatchNormalization", {}, ("y", "mean", "var"), "3 outputs"),
    ("Pad", {"mode": "mirror"}, ("y",), "mode='mirror'"),
    ("Cast", {"to": 16}, ("y",), "to=16"),
    ("Cast", {"to": 8}, ("y",), "to=8"),
    ("Cast", {}, ("y",), "no attribute to"),
    ("ReduceL2", {"keepdims": 2}, ("y",), "keepdims=2"),
])
def test_attribute_values_it_does_not_take_are_refused_before_running(op, attrs, outputs, words, tmp_path):
    graph = _graph(op, attrs, outputs=outputs)
    with pytest.raises(NotImplementedError, match=words) as info:
        numpy_graph.check_ops(graph)
    assert "\n" not in str(info.value) and f"{op} node 'y'" in str(info.value)
    with pytest.raises(ModelImportError, match=words):   # the host, writing a CPU part
        cpu_tail.run_checked(graph, {}, {"x": np.zeros((1, 2, 3, 3), np.float32)})
    import json   # the board, loading a bundle's CPU part: ArtifactError (exit 7), one line

    (tmp_path / "t.json").write_text(json.dumps(graph))
    np.savez(tmp_path / "t.npz")
    with pytest.raises(ArtifactError, match=words) as info:
        numpy_graph.load(tmp_path, "t.json", "t.npz")
    assert info.value.exit_code == 7


@pytest.mark.parametrize("op, attrs, inputs, weights, words", [
    ("BatchNormalization", {}, ("x", "s", "s", "s", "s"), {"s": np.ones(3, np.float32)}, "2 channels"),
    ("Pad", {}, ("x", "p"), {"p": np.zeros(3, np.int64)}, "3 pads"),
    ("Pad", {"mode": "reflect"}, ("x", "p"), {"p": np.array([0, 0, 0, 9, 0, 0, 0, 0])}, "reflect"),
    ("Pad", {}, ("x",), {}, "no pads"),
    ("ReduceL2", {}, ("x", "a"), {"a": np.array([7])}, "ReduceL2 node 'y'"),
    ("Relu", {}, ("z",), {}, "reads a tensor no earlier node computes"),
])
def test_inputs_that_do_not_fit_an_operator_are_one_line(op, attrs, inputs, weights, words):
    graph = _graph(op, attrs, inputs)
    numpy_graph.check_ops(graph)
    with pytest.raises(ExecutionError, match=words) as info:   # the board: exit 9
        numpy_graph.run(graph, weights, {"x": np.zeros((1, 2, 3, 3), np.float32)})
    assert "\n" not in str(info.value) and info.value.exit_code == 9
    with pytest.raises(ModelImportError, match=words):
        cpu_tail.run_checked(graph, weights, {"x": np.zeros((1, 2, 3, 3), np.float32)})


@pytest.mark.parametrize("zp", [np.int8(0), np.int8(-20), np.uint8(128)])
def test_quantize_of_infinities_and_nan_is_onnxruntimes(zp):
    """efficientvit's attention divides by a sum that can be 0: onnxruntime saturates +-inf and maps NaN to the
    type's minimum (numpy's cast of inf to an integer does not)."""
    x = np.array([[np.inf, -np.inf, np.nan, 1.0, 0.0]], np.float32)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    want, got = _both(node, {"x": x}, {"s": np.array(0.1, np.float32), "z": np.asarray(zp)},
                      out_type=helper.np_dtype_to_tensor_dtype(zp.dtype), opset=19)
    assert got.dtype == want.dtype and np.array_equal(got, want)
