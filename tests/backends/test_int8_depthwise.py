"""The int8 depthwise conv kernel (``edgevit.backends.int8_depthwise``): bit-exact int32 against numpy on the
host and, built for rpi4, under qemu; QDQ depthwise convs become it, and the build agrees with onnxruntime."""

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import relax, tirx

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_depthwise import emit_depthwise
from edgevit.targets import get_target

#: (input NCHW, kernel, strides, padding t/l/b/r, dilation, weights hold -128): 3x3 as MobileNet/MobileViT have
#: them (stride 1 and 2, rows of 16 and 56), 5x5 (an odd number of taps), a 7x7 map, dilation 2, and -128
#: weights (then no int16 pair sums).
CASES = [((1, 8, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
         ((1, 8, 16, 16), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
         ((1, 4, 9, 56), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), False),
         ((1, 6, 12, 12), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), False),
         ((1, 16, 7, 7), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1), False),
         ((1, 4, 12, 12), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), True)]
IDS = ["3x3", "3x3-stride2", "3x3-56wide", "5x5", "7x7-map-stride2", "dilated-w128"]


def depthwise_reference(xq, wq, strides, padding, dilation, zx):
    """int64 NCHW depthwise convolution of int8 values, padded with the zero point ``zx`` (numpy)."""
    top, left, bottom, right = padding
    x = np.pad(xq.astype(np.int64), [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=zx)
    _, _, kh, kw = wq.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh, ow = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((1, x.shape[1], oh, ow), np.int64)
    for ry in range(kh):
        for rx in range(kw):
            window = x[0, :, ry * dh:ry * dh + sh * (oh - 1) + 1:sh, rx * dw:rx * dw + sw * (ow - 1) + 1:sw]
            out[0] += wq[:, 0, ry, rx].astype(np.int64)[:, None, None] * window
    return out


def case_data(case, seed):
    x_shape, kernel, strides, padding, dilation, w128 = case
    rng = np.random.default_rng(seed)
    xq = rng.integers(-128, 128, size=x_shape, dtype=np.int8)
    xq[0, 0] = -128  # a channel at -128: the largest products
    wq = rng.integers(-128 if w128 else -127, 128, size=(x_shape[1], 1, *kernel), dtype=np.int8)
    if w128:
        wq[:, 0, 0, 0] = -128
    else:
        wq[0] = np.where(np.arange(kernel[0] * kernel[1]).reshape(kernel) % 2, -127, 127)  # largest pair sums
    zx = -128 if w128 else -5
    return xq, wq, zx, depthwise_reference(xq, wq, strides, padding, dilation, zx)


def depthwise_module(x_shape, wq, zx, strides, padding, dilation):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = emit_depthwise(bb, x, wq, zx, strides, padding, dilation)
            out = bb.emit_output(bb.emit(acc))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_depthwise_matches_numpy_on_host(case):
    import tvm
    from tvm.runtime import vm

    _, _, strides, padding, dilation, _ = case
    xq, wq, zx, expected = case_data(case, 1)
    cpu = get_target("host").require_cpu()
    executable = tvm_compiler.build(depthwise_module(xq.shape, wq, zx, strides, padding, dilation), cpu)
    got = vm.VirtualMachine(executable, tvm.runtime.cpu())["main"](tvm.runtime.tensor(xq)).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.qemu
def test_depthwise_for_rpi4_matches_numpy_under_qemu(tmp_path):
    """The rpi4 build (``smull``/``smlal`` int16 pair sums, widened into int32) is bit-exact under qemu."""
    from test_int8_dot_kernels import _run_under_qemu

    data = [case_data(case, 2) for case in CASES]
    modules = [depthwise_module(xq.shape, wq, zx, *case[2:5]) for case, (xq, wq, zx, _) in zip(CASES, data)]
    outputs, disassembly = _run_under_qemu("rpi4", modules, [xq for xq, *_ in data], tmp_path)
    for got, (*_, expected) in zip(outputs, data):
        np.testing.assert_array_equal(got, expected)
    int16_pair_sums = re.compile(r"smlal2?\tv\d+\.8h")  # the second tap's products added in int16
    assert int16_pair_sums.search(disassembly[0]) and not int16_pair_sums.search(disassembly[-1])  # -128 weights


def depthwise_cnn_onnx(path):
    """conv 1x1 -> depthwise 3x3 (bias) -> relu -> depthwise 3x3 stride 2 -> Flatten -> Gemm."""
    rng = np.random.default_rng(12)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
            for n, s in (("w1", (16, 8, 1, 1)), ("w2", (16, 1, 3, 3)), ("b2", (16,)), ("w3", (16, 1, 3, 3)),
                         ("fc", (10, 256)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2], group=16),
             helper.make_node("Flatten", ["c3"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_qdq_depthwise_becomes_integer_and_agrees_with_onnxruntime(tmp_path):
    from test_int8_dot_kernels import _agrees_with_onnxruntime

    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    model = quantize_cached(load_model(str(depthwise_cnn_onnx(tmp_path / "dw.onnx"))),
                            QuantizeSettings("fashion-mnist", 8, per_channel=True))
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs),
                                      get_target("host").require_cpu())
    assert sum("int8_depthwise_conv" in gv.name_hint for gv in fused.functions) == 2
    assert not any("group_conv2d" in f.script(show_meta=False) for f in fused.functions.values()
                   if isinstance(f, tirx.PrimFunc))  # no float depthwise conv left
    _agrees_with_onnxruntime(model, tmp_path)
