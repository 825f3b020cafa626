"""``quantize(dequantize(a) + dequantize(b))`` of two int8 tensors (a residual add) computes onnxruntime's
QLinearAdd bit for bit (``edgevit.backends.int8``): onnxruntime fuses that QDQ group, and its float32 arithmetic is
not ``(a + b) / sy``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevit.reference import onnxruntime_session

#: (sa, za, sb, zb, sy, zy): efficientformerv2_s0's scales (a fifth of the sums at a half step), two sets where
#: the fixed part's rounding depends on the contraction (fma), an exact one, and a lopsided one.
SCALES = [(0.007843137, -1, 0.003921569, -128, 0.007843138, -128), (0.031, 3, 0.027, -5, 0.044, 7),
          (0.05, 0, 0.02, 5, 0.07, -10), (0.0123, -7, 0.0456, 20, 0.05, 1)]


def qdq_add_onnx(path):
    """One branch per row of SCALES: int8 a, b -> DequantizeLinear each -> Add -> QuantizeLinear -> int8."""
    nodes, inputs, outputs, init = [], [], [], []
    for i, (sa, za, sb, zb, sy, zy) in enumerate(SCALES):
        init += [numpy_helper.from_array(np.float32(sa), f"sa{i}"), numpy_helper.from_array(np.int8(za), f"za{i}"),
                 numpy_helper.from_array(np.float32(sb), f"sb{i}"), numpy_helper.from_array(np.int8(zb), f"zb{i}"),
                 numpy_helper.from_array(np.float32(sy), f"sy{i}"), numpy_helper.from_array(np.int8(zy), f"zy{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"a{i}", f"sa{i}", f"za{i}"], [f"da{i}"]),
                  helper.make_node("DequantizeLinear", [f"b{i}", f"sb{i}", f"zb{i}"], [f"db{i}"]),
                  helper.make_node("Add", [f"da{i}", f"db{i}"], [f"s{i}"]),
                  helper.make_node("QuantizeLinear", [f"s{i}", f"sy{i}", f"zy{i}"], [f"y{i}"])]
        inputs += [helper.make_tensor_value_info(f"{n}{i}", TensorProto.INT8, [1, 256, 256]) for n in "ab"]
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT8, [1, 256, 256]))
    graph = helper.make_graph(nodes, "add", inputs, outputs, initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_int8_add_of_two_tensors_equals_onnxruntime_qlinearadd(tmp_path):
    """Every pair of int8 values, every scale set: 0 values differ (dequantize, add, quantize: up to 2,300)."""
    import tvm
    from qdq_build import fused_for, host_machine

    specs, mod, cpu, fused = fused_for(qdq_add_onnx(tmp_path / "add.onnx"))
    assert sum("int8_add" in gv.name_hint for gv in fused.functions) == len(SCALES)
    machine = host_machine(mod, cpu)
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 256)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256).reshape(1, 256, 256)
    feeds = {spec.name: a if spec.name.startswith("a") else b for spec in specs}
    mine = machine["main"](*[tvm.runtime.tensor(feeds[spec.name]) for spec in specs])
    theirs = onnxruntime_session(tmp_path / "add.onnx").run(None, feeds)
    for scales, x, y in zip(SCALES, mine, theirs, strict=True):
        differing = np.count_nonzero(x.numpy() != y)
        assert differing == 0, f"{scales}: {differing} of {y.size} values differ from onnxruntime"


def test_aarch64_builds_keep_the_float_add(tmp_path):
    """AArch64 builds keep dequantize, add, quantize (QLinearAdd's arithmetic counted more on the Cortex-A72)."""
    from qdq_build import fused_for

    fused = fused_for(qdq_add_onnx(tmp_path / "add.onnx"), "rpi4")[3]
    assert not any("int8_add" in gv.name_hint for gv in fused.functions)
