"""The board's numpy interpreter runs QuantizeLinear / DequantizeLinear as onnxruntime does (an int8 model's CPU
part holds them: edgevit/hls/qdq_import.write_int8_cpu_tail)."""

import numpy as np
import pytest

from edgevit.pynq import numpy_graph
from edgevit.reference import onnxruntime_session

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.mark.parametrize("per_axis, zp_type", [(False, np.int8), (True, np.int8), (False, np.uint8)])
def test_quantize_dequantize_match_onnxruntime(per_axis, zp_type):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1, 3, 4, 5)) * 2).astype(np.float32)
    x.ravel()[:6] = [0.5, 1.5, -0.5, -2.5, 1e3, -1e3]   # ties (round half to even) and saturation
    scale = np.array([0.5, 0.02, 0.1], np.float32) if per_axis else np.array(0.5, np.float32)
    zp = (np.array([3, -7, 0]) if per_axis else np.array(5)).astype(zp_type)
    if zp_type == np.uint8:
        zp = zp + np.array(120, np.uint8)
    axis = [helper.make_attribute("axis", 1)] if per_axis else []
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    q.attribute.extend(axis)
    dq.attribute.extend(axis)
    g = helper.make_graph([q, dq], "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("q", helper.np_dtype_to_tensor_dtype(zp.dtype), x.shape),
                           helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
                          [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    want_q, want_y = onnxruntime_session(m.SerializeToString()).run(None, {"x": x})
    graph = {"nodes": [{"op": n.op_type, "inputs": list(n.input), "outputs": list(n.output),
                        "attrs": {"axis": 1} if per_axis else {}} for n in (q, dq)], "outputs": ["q", "y"]}
    got_q, got_y = numpy_graph.run(graph, {"s": scale, "z": zp}, {"x": x})
    assert got_q.dtype == want_q.dtype and np.array_equal(got_q, want_q)
    assert np.array_equal(got_y, want_y)
