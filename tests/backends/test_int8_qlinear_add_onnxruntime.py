"""``quantize(dequantize(x) + dequantize(c))`` for a constant ``c`` computes onnxruntime's QLinearAdd bit for bit
(onnxruntime fuses that QDQ group into QLinearAdd, whose float32 arithmetic is not ``(a + b) / sy``)."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.backends import tvm_compiler
from edgevit.reference import onnxruntime_session
from edgevit.targets import get_target

#: (constant first, sa, za, constant, sb, zb, sy, zy). The first is efficientformerv2_s0's ``x + 1``
#: (node_Add_412: sa = 2/255 and sy one float32 ulp above it, so a fifth of the sums sit at a half step).
BRANCHES = [(False, 0.007843137, -1, 127, 0.003921569, -128, 0.007843138, -128),
            (True, 0.007843137, -1, 127, 0.003921569, -128, 0.007843138, -128),
            (False, 0.00784311, -1, 127, 0.003921569, -128, 0.007843138, -128),
            (False, 0.05, 3, -40, 0.02, 5, 0.07, -10),
            (True, 0.5, 0, 1, 0.5, 0, 1.0, 0)]


def qdq_add_onnx(path):
    """One branch per row of BRANCHES: int8 x -> DequantizeLinear -> Add(constant) -> QuantizeLinear -> int8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, init = [], [], [], []
    for i, (first, sa, za, c, sb, zb, sy, zy) in enumerate(BRANCHES):
        init += [numpy_helper.from_array(np.float32(sa), f"sa{i}"), numpy_helper.from_array(np.int8(za), f"za{i}"),
                 numpy_helper.from_array(np.int8(c), f"c{i}"), numpy_helper.from_array(np.float32(sb), f"sb{i}"),
                 numpy_helper.from_array(np.int8(zb), f"zb{i}"), numpy_helper.from_array(np.float32(sy), f"sy{i}"),
                 numpy_helper.from_array(np.int8(zy), f"zy{i}")]
        operands = [f"dc{i}", f"dx{i}"] if first else [f"dx{i}", f"dc{i}"]
        nodes += [helper.make_node("DequantizeLinear", [f"x{i}", f"sa{i}", f"za{i}"], [f"dx{i}"]),
                  helper.make_node("DequantizeLinear", [f"c{i}", f"sb{i}", f"zb{i}"], [f"dc{i}"]),
                  helper.make_node("Add", operands, [f"s{i}"]),
                  helper.make_node("QuantizeLinear", [f"s{i}", f"sy{i}", f"zy{i}"], [f"y{i}"])]
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.INT8, [1, 4, 256]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT8, [1, 4, 256]))
    graph = helper.make_graph(nodes, "add", inputs, outputs, initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return qdq_add_onnx(tmp_path_factory.mktemp("qlinear_add") / "add.onnx")


def test_int8_add_of_a_constant_equals_onnxruntime_qlinearadd(model):
    """Every value of every int8 input equals onnxruntime's. Before (the table evaluated ``(a + b) / sy``), 56 of
    the 256 int8 values differed by one step in the first branch."""
    import onnx
    import tvm
    from tvm.runtime import vm

    from edgevit.frontend import from_onnx_file

    specs = from_onnx_file(model).inputs
    machine = vm.VirtualMachine(tvm_compiler.build(tvm_compiler.import_onnx(onnx.load(str(model)), specs),
                                                   get_target("host").require_cpu()), tvm.runtime.cpu())
    x = np.broadcast_to(np.arange(-128, 128, dtype=np.int8), (1, 4, 256)).copy()   # every int8 value
    mine = [o.numpy() for o in machine["main"](*[tvm.runtime.tensor(x) for _ in specs])]
    theirs = onnxruntime_session(model).run(None, {spec.name: x for spec in specs})
    for branch, a, b in zip(BRANCHES, mine, theirs, strict=True):
        assert a.dtype == b.dtype == np.int8
        differing = np.count_nonzero(a != b)
        assert differing == 0, f"{branch}: {differing} of {a.size} values differ from onnxruntime"


def test_onnxruntime_fuses_the_add_it_is_compared_with(model, tmp_path):
    """The reference really runs QLinearAdd (else the test above would compare with a float Add)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearAdd") == len(BRANCHES) and "Add" not in ops
