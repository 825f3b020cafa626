"""``relax.quantize`` lowers as onnxruntime's QuantizeLinear computes it, NaN included (``tvm_compiler``)."""

from __future__ import annotations

import numpy as np

from edgevit.backends import tvm_compiler
from edgevit.reference import onnxruntime_session
from edgevit.targets import get_target


def qdq_divide_onnx(path, out_dtype):
    """int8 a, b -> DequantizeLinear -> Div -> QuantizeLinear: 0/0 is NaN before the quantize (efficientvit_b0's
    attention divides by a quantized denominator that rounds to 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    zero = np.int8(3) if out_dtype == np.int8 else np.uint8(130)
    init = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z"),
            numpy_helper.from_array(np.float32(0.05), "sy"), numpy_helper.from_array(zero, "zy")]
    nodes = [helper.make_node("DequantizeLinear", ["a", "s", "z"], ["da"]),
             helper.make_node("DequantizeLinear", ["b", "s", "z"], ["db"]),
             helper.make_node("Div", ["da", "db"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"])]
    kind = TensorProto.INT8 if out_dtype == np.int8 else TensorProto.UINT8
    graph = helper.make_graph(nodes, "divide", [helper.make_tensor_value_info(n, TensorProto.INT8, [1, 256])
                                                for n in "ab"],
                              [helper.make_tensor_value_info("y", kind, [1, 256])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_quantize_of_nan_and_of_every_saturation_equals_onnxruntime(tmp_path):
    """0/0, x/0 (+-inf), and quotients beyond both ends of the int8 and uint8 ranges: every value equals
    onnxruntime's. TVM's own lowering gave the NaN the highest value, onnxruntime gives it the lowest."""
    import onnx
    import tvm
    from tvm.runtime import vm

    from edgevit.frontend import from_onnx_file

    a = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    a[0, ::16] = 0
    b = np.where(np.arange(256) % 3 == 0, 0, np.arange(256) % 7 - 3).astype(np.int8).reshape(1, 256)
    assert np.count_nonzero((a == 0) & (b == 0)) > 0           # some 0/0 among the pairs
    for dtype in (np.int8, np.uint8):
        model = qdq_divide_onnx(tmp_path / f"divide_{dtype.__name__}.onnx", dtype)
        specs = from_onnx_file(model).inputs
        machine = vm.VirtualMachine(tvm_compiler.build(tvm_compiler.import_onnx(onnx.load(str(model)), specs),
                                                       get_target("host").require_cpu()), tvm.runtime.cpu())
        (mine,) = [machine["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()]
        (theirs,) = onnxruntime_session(model).run(None, {"a": a, "b": b})
        nan = (a == 0) & (b == 0)
        assert theirs.dtype == mine.dtype == dtype
        assert np.all(theirs[nan] == np.iinfo(dtype).min)           # onnxruntime: NaN -> the lowest value
        assert np.array_equal(mine, theirs), f"{np.count_nonzero(mine != theirs)} values differ ({dtype.__name__})"
