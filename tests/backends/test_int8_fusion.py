"""What the int8 rewrites leave for fusion: table lookups that fuse into a neighbouring kernel, matmuls whose
output features make no whole vector on the dot-product kernel (padded, cropped); both agree with onnxruntime."""

import numpy as np
import pytest
from test_int8_dot_kernels import _agrees_with_onnxruntime
from tvm import tirx

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_kernels import dot_kernel_for
from edgevit.targets import get_target


def _quantized(path, build):
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    return quantize_cached(load_model(str(build(path))), QuantizeSettings("fashion-mnist", 8, per_channel=True))


def _fused_kernels(model) -> dict:
    """Name -> PrimFunc of the host build's kernels after fusion, before scheduling."""
    cpu = get_target("host").require_cpu()
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    return {gv.name_hint: f for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)}


def gelu_mlp_onnx(path, features: int = 40):
    """conv 1x1 -> GELU (erf form) -> conv 1x1 -> Flatten -> Gemm to ``features`` outputs -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
            for n, s in (("w1", (32, 16, 1, 1)), ("b1", (32,)), ("w2", (16, 32, 1, 1)), ("fc", (features, 256)),
                         ("fb", (features,)), ("out", (10, features)))]
    init.append(numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"))
    init += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("Div", ["c1", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["p"]),
             helper.make_node("Mul", ["c1", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["g"]),
             helper.make_node("Conv", ["g", "w2"], ["c2"]), helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "out"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "gelu_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_lookup_fuses_into_a_neighbouring_kernel(tmp_path):
    """The GELU table is no kernel of its own (which would take an int32 index from its producer): it is fused
    with the kernel next to it (on x86 with AVX-512 VBMI: one kernel with the conv input packing that reads it),
    and the build agrees with onnxruntime."""
    model = _quantized(tmp_path / "gelu.onnx", gelu_mlp_onnx)
    kernels = _fused_kernels(model)
    holding = [name for name, f in kernels.items()
               if "int8_lookup" in f.script(show_meta=False) or name.startswith("int8_lookup_pack_vbmi")]
    assert holding and all(name.startswith(("fused_", "int8_lookup_pack_vbmi")) for name in holding), holding
    assert not any("take" in name for name in kernels)
    _agrees_with_onnxruntime(model, tmp_path)


def test_matmul_with_ragged_features_runs_on_the_dot_kernel(tmp_path):
    """A Gemm to 40 features (no whole number of the host's 16 int32 lanes) is padded to whole vectors on the
    dot-product kernel, its requantized output cropped, instead of falling back to int16 multiplies."""
    cpu = get_target("host").require_cpu()
    dot = dot_kernel_for(tvm_compiler.make_target(cpu.tvm))
    if dot is None or 40 % dot.lanes == 0:
        pytest.skip("needs a host dot-product kernel whose lanes do not divide 40")
    model = _quantized(tmp_path / "gelu.onnx", gelu_mlp_onnx)
    kernels = _fused_kernels(model)
    padded = [name for name in kernels if "int8_dot_matmul" in name and "strided_slice" in name]
    assert padded, sorted(kernels)
    assert not [name for name in kernels if "matmul" in name and "int8_dot" not in name], sorted(kernels)
    _agrees_with_onnxruntime(model, tmp_path)
