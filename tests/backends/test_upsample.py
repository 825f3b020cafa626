"""The 2x bilinear upsample rewrite: bit-identical to TVM's resize2d, close to onnxruntime, and only where exact."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevit.backends import tvm_compiler
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.targets import get_target


def _resize_gelu(path, size: int, scale: float, mode: str = "linear", transform: str = "pytorch_half_pixel") -> str:
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode=mode,
                              coordinate_transformation_mode=transform),
             helper.make_node("Gelu", ["r"], ["y"])]
    out = int(size * scale)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, out, out])],
                              [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    path.write_bytes(model.SerializeToString())
    return str(path)


def _kernels(model) -> dict:
    """The model's fused kernels before scheduling, by name."""
    cpu = get_target("host").cpu
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    return {gv.name_hint: func for gv, func in fused.functions_items()}


def _run(model):
    import tvm
    from tvm.runtime import vm

    inputs = random_inputs(model.inputs, 0)
    executable = tvm_compiler.build(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host").cpu)
    out = vm.VirtualMachine(executable, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return inputs, out.numpy()


@pytest.mark.parametrize("size,transform", [(7, "pytorch_half_pixel"), (5, "half_pixel"), (1, "half_pixel")])
def test_2x_bilinear_is_rewritten_and_matches_onnxruntime(size, transform, tmp_path):
    from edgevit.backends.cpu_schedules import schedule_func

    model = load_model(_resize_gelu(tmp_path / "m.onnx", size, 2.0, transform=transform))
    upsampling = [func for name, func in _kernels(model).items() if "upsample2x" in name]
    assert upsampling
    # The elementwise rule interpolates each map's rows once into a local buffer, the columns inside the GELU.
    rule, scheduled = schedule_func(upsampling[0], tvm_compiler.make_target(get_target("host").cpu.tvm))
    assert rule == "Elementwise" and 'upsample2x_rows_local' in scheduled.script()
    inputs, actual = _run(model)
    result = compare([actual], run_onnxruntime(model.onnx_path, inputs))
    assert result.max_rel_error <= 1e-5, result  # not top-1: an upsampled map has ties


def test_2x_bilinear_is_bit_identical_to_resize2d():
    import tvm
    from tvm import te, topi

    from edgevit.backends.upsample import upsample2x_bilinear

    data = te.placeholder((1, 3, 7, 9), name="x")
    ours = upsample2x_bilinear(data)
    theirs = topi.image.resize2d(data, [0.0] * 4, (14, 18), method="linear",
                                 coordinate_transformation_mode="half_pixel")
    x = np.random.default_rng(0).standard_normal((1, 3, 7, 9)).astype(np.float32) * 10
    results = []
    for out in (ours, theirs):
        lib = tvm.compile(te.create_prim_func([data, out]), target="llvm")
        buffers = [tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros((1, 3, 14, 18), np.float32))]
        lib(*buffers)
        results.append(buffers[1].numpy())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("scale,mode,transform", [(3.0, "linear", "half_pixel"), (2.0, "nearest", "half_pixel"),
                                                  (2.0, "linear", "align_corners")])
def test_other_resizes_are_left_to_tvm(scale, mode, transform, tmp_path):
    model = load_model(_resize_gelu(tmp_path / "m.onnx", 6, scale, mode, transform))
    assert not any("upsample2x" in name for name in _kernels(model))
    inputs, actual = _run(model)
    result = compare([actual], run_onnxruntime(model.onnx_path, inputs))
    assert result.max_rel_error <= 1e-5, result  # not top-1: an upsampled map has ties
