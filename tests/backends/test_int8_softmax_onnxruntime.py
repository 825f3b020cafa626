"""The int8 softmax computes onnxruntime's QLinearSoftmax bit for bit (the int8 reference is onnxruntime on the
same QDQ file, which fuses ``DequantizeLinear -> Softmax -> QuantizeLinear`` into QLinearSoftmax)."""

from __future__ import annotations

import numpy as np

from edgevit.backends import tvm_compiler
from edgevit.reference import onnxruntime_session
from edgevit.targets import get_target

#: (row length, input scale, input zero point) per branch: MobileViTv2's context-score softmaxes have rows of
#: 16-1024 tokens; the quantizer gives every softmax output the scale float32(1/255) and zero point -128.
BRANCHES = [(16, 0.05, 0), (256, 0.3, -20), (1000, 0.02, 7), (64, 1.1, 0)]
SOFTMAX_SCALE = np.float32(1 / 255)


def qdq_softmax_onnx(path, output_scale=SOFTMAX_SCALE):
    """Int8 inputs -> DequantizeLinear -> Softmax(axis=-1) -> QuantizeLinear -> int8 outputs, one branch each."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, init = [], [], [], []
    for b, (length, sx, zx) in enumerate(BRANCHES):
        init += [numpy_helper.from_array(np.float32(sx), f"sx{b}"), numpy_helper.from_array(np.int8(zx), f"zx{b}"),
                 numpy_helper.from_array(np.float32(output_scale), f"sy{b}"),
                 numpy_helper.from_array(np.int8(-128), f"zy{b}")]
        nodes += [helper.make_node("DequantizeLinear", [f"x{b}", f"sx{b}", f"zx{b}"], [f"d{b}"]),
                  helper.make_node("Softmax", [f"d{b}"], [f"s{b}"], axis=-1),
                  helper.make_node("QuantizeLinear", [f"s{b}", f"sy{b}", f"zy{b}"], [f"y{b}"])]
        inputs.append(helper.make_tensor_value_info(f"x{b}", TensorProto.INT8, [1, 2, 8, length]))
        outputs.append(helper.make_tensor_value_info(f"y{b}", TensorProto.INT8, [1, 2, 8, length]))
    graph = helper.make_graph(nodes, "softmax", inputs, outputs, initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def _edgevit_and_onnxruntime(path, seeds=range(3)):
    import onnx
    import tvm
    from tvm.runtime import vm

    from edgevit.frontend import from_onnx_file

    model = from_onnx_file(path)
    cpu = get_target("host").require_cpu()
    machine = vm.VirtualMachine(tvm_compiler.build(tvm_compiler.import_onnx(onnx.load(str(path)), model.inputs),
                                                   cpu), tvm.runtime.cpu())
    session = onnxruntime_session(path)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        # a spread of logits: rows whose largest values are close (outputs near half steps) and far apart
        xs = [(rng.integers(-128, 128, spec.shape) // rng.integers(1, 9)).astype(np.int8) for spec in model.inputs]
        mine = [o.numpy() for o in machine["main"](*[tvm.runtime.tensor(x) for x in xs])]
        yield mine, session.run(None, {spec.name: x for spec, x in zip(model.inputs, xs)})


def test_int8_softmax_equals_onnxruntime_qlinearsoftmax(tmp_path):
    """Every output value equals onnxruntime's. Before edgevit reproduced QLinearSoftmax (which scales by
    ``floor(1 / sy)`` = 254, not 255, and computes ``(e · 254) / Σe``), 0-26 values per branch and input differed
    by one step (up to 6 % of a branch); on mobilevitv2_050 each of its 9 softmaxes differed given identical
    inputs."""
    path = qdq_softmax_onnx(tmp_path / "softmax.onnx")
    for mine, theirs in _edgevit_and_onnxruntime(path):
        for (length, _, _), a, b in zip(BRANCHES, mine, theirs, strict=True):
            assert a.dtype == b.dtype == np.int8
            differing = np.count_nonzero(a != b)
            assert differing == 0, f"row length {length}: {differing} of {a.size} values differ from onnxruntime"


def test_onnxruntime_fuses_the_softmax_it_is_compared_with(tmp_path):
    """The reference really runs QLinearSoftmax (else the test above would compare with a float softmax)."""
    import onnx
    import onnxruntime as ort

    path = qdq_softmax_onnx(tmp_path / "softmax.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearSoftmax") == len(BRANCHES) and "Softmax" not in ops
