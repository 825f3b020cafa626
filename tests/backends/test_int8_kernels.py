"""The int8 rewrite of QDQ models: which patterns become integer kernels, that float models are untouched, that
the integer kernels get the tiled schedule, and that the build agrees with onnxruntime on the same QDQ model."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import tirx

from tiny_onnx_models import tiny_cnn_onnx
from edgevit.backends import tvm_compiler
from edgevit.backends.int8 import IntegerQdqKernels, ScheduleIntegerKernels
from edgevit.frontend import load_model
from edgevit.quantize import QuantizeSettings, compare_int8, output_steps, quantize_cached
from edgevit.targets import get_target


def residual_cnn_onnx(path):
    """conv 3x3 (pad 1) -> relu -> conv 1x1 -> + input -> Flatten -> Gemm: a residual add the int8 kernel's
    epilogue must absorb, and padding that must use the input's zero point."""
    rng = np.random.default_rng(3)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
            for n, s in (("w1", (8, 8, 3, 3)), ("b1", (8,)), ("w2", (8, 8, 1, 1)), ("fc", (10, 512)), ("fcb", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Add", ["c2", "x"], ["s"]),
             helper.make_node("Flatten", ["s"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def imported(model):
    return tvm_compiler.import_onnx(model.load(), model.inputs)


def calls(mod, name):
    found = []
    tvm.relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, tvm.relax.Call)
                                        and isinstance(e.op, tvm.ir.Op) and e.op.name == name else None)
    return found


@pytest.fixture(scope="module", params=[False, True], ids=["per-tensor", "per-channel"])
def qdq_residual(request, tmp_path_factory):
    path = residual_cnn_onnx(tmp_path_factory.mktemp("int8") / "residual.onnx")
    return quantize_cached(load_model(str(path)), QuantizeSettings("fashion-mnist", 8, per_channel=request.param))


def test_conv_and_gemm_become_integer(qdq_residual):
    mod = IntegerQdqKernels(16)(imported(qdq_residual))
    convs, matmuls = calls(mod, "relax.nn.conv2d"), calls(mod, "relax.matmul")
    assert len(convs) == 2 and len(matmuls) == 1
    for call in convs + matmuls:
        # int8 values, multiplied as int16 (exact), accumulated in int32
        assert str(call.args[0].ty.dtype) == "int16" and str(call.args[1].ty.dtype) == "int16"
        weights = call.args[1].value.numpy()
        assert weights.min() >= -128 and weights.max() <= 127
        assert str(call.ty.dtype) == "int32"
    widened = calls(mod, "relax.astype")
    assert all(str(c.args[0].ty.dtype) == "int8" for c in widened if str(c.ty.dtype) == "int16")
    assert all(tuple(int(p) for p in c.attrs.padding) == (0, 0, 0, 0) for c in convs)  # padding moved to R.nn.pad
    (pad,) = calls(mod, "relax.nn.pad")
    assert pad.args[0].ty.dtype == "int16"
    # Flatten between two quantize steps of equal parameters moves the int8 tensor, no dequantize/quantize
    (flatten,) = calls(mod, "relax.reshape")
    assert str(flatten.args[0].ty.dtype) == "int8"


def test_float_model_is_unchanged(tmp_path):
    mod = imported(load_model(str(tiny_cnn_onnx(tmp_path / "cnn.onnx"))))
    assert IntegerQdqKernels(16)(mod).same_as(mod)


def test_integer_kernels_get_the_tiled_schedule(qdq_residual):
    cpu = get_target("host").require_cpu()
    fused = tvm_compiler.fused_module(imported(qdq_residual), cpu)
    target = tvm_compiler.make_target(cpu.tvm)
    with target:
        scheduled = ScheduleIntegerKernels(target)(fused)
    integer = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)
               and "int32" in f.script(show_meta=False)
               and any(kind in gv.name_hint for kind in ("conv2d", "matmul", "int8_dot"))]
    assert len(integer) == 3
    for name in integer:
        func = scheduled[name]
        assert func.attrs.get("tirx.is_scheduled", False), name
        # the int16 kernels are vectorised; the dot-product kernels (a CPU with VNNI) call the instruction
        script = func.script(show_meta=False)
        assert "T.vectorized" in script and ("int8_dot" not in name or "call_llvm_pure_intrin" in script), name


def test_build_agrees_with_onnxruntime(qdq_residual, tmp_path):
    from edgevit.compiler import compile_for_target
    from edgevit.reference import random_inputs, run_onnxruntime
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.runner import run_artifact
    compile_for_target(qdq_residual, get_target("host"), tmp_path / "m.tar", command="pytest")
    steps = output_steps(qdq_residual.load())
    with Artifact.open(tmp_path / "m.tar") as artifact:
        for seed in range(3):
            inputs = random_inputs(qdq_residual.inputs, seed)
            outputs, _ = run_artifact(artifact, inputs)
            result = compare_int8(outputs, run_onnxruntime(qdq_residual.onnx_path, inputs), steps)
            assert result.ok and result.max_steps <= 1, result.summary()


def test_small_map_conv_uses_channel_last_weights_and_agrees(tmp_path):
    """A 3x3 conv on a 7x7 map: rows make no vector, its 16 channels do, so the int8 kernel takes IHWO weights."""
    from edgevit.compiler import compile_for_target
    from edgevit.reference import random_inputs, run_onnxruntime
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.runner import run_artifact

    rng = np.random.default_rng(4)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
            for n, s in (("w", (16, 8, 3, 3)), ("b", (16,)), ("fc", (10, 784)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "small_map", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8),
              str(tmp_path / "small.onnx"))
    model = quantize_cached(load_model(str(tmp_path / "small.onnx")), QuantizeSettings("fashion-mnist", 8, True))
    mod = IntegerQdqKernels(16)(imported(model))
    assert not calls(mod, "relax.nn.conv2d") and "conv2d_nchw_ihwo_int8" in [gv.name_hint for gv in mod.functions]
    compile_for_target(model, get_target("host"), tmp_path / "m.tar", command="pytest")
    with Artifact.open(tmp_path / "m.tar") as artifact:
        inputs = random_inputs(model.inputs, 0)
        outputs, _ = run_artifact(artifact, inputs)
    result = compare_int8(outputs, run_onnxruntime(model.onnx_path, inputs), output_steps(model.load()))
    assert result.ok and result.max_steps <= 1, result.summary()
