"""``quantize(avg_pool2d(dequantize(x)))`` on the int8 depthwise kernel (``edgevit.backends.int8``): every value
equals the exact average (float64) requantized, except within float rounding of a half step."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tvm import tirx

from edgevit.backends.pooling import window_counts

#: (input NCHW, kernel, strides, pads t/l/b/r, count_include_pad, sx, zx, sy, zy): EfficientFormer's token mixer
#: (3x3, stride 1, padding left out of the count), the same counting the padding, a strided pool with uneven pads.
BRANCHES = [((1, 8, 14, 20), (3, 3), (1, 1), (1, 1, 1, 1), 0, 0.0123, -7, 0.0119, 3),
            ((1, 4, 9, 16), (3, 3), (1, 1), (1, 1, 1, 1), 1, 0.0311, 11, 0.0173, -20),
            ((1, 4, 7, 7), (2, 2), (2, 2), (0, 0, 1, 1), 0, 0.05, 0, 0.0457, -128)]


def pool_onnx(path):
    """One ``int8 x -> DequantizeLinear -> AveragePool -> QuantizeLinear -> int8`` branch per row of BRANCHES."""
    nodes, inputs, outputs, init = [], [], [], []
    for i, (shape, kernel, strides, pads, include, sx, zx, sy, zy) in enumerate(BRANCHES):
        init += [numpy_helper.from_array(np.float32(sx), f"sx{i}"), numpy_helper.from_array(np.int8(zx), f"zx{i}"),
                 numpy_helper.from_array(np.float32(sy), f"sy{i}"), numpy_helper.from_array(np.int8(zy), f"zy{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"x{i}", f"sx{i}", f"zx{i}"], [f"d{i}"]),
                  helper.make_node("AveragePool", [f"d{i}"], [f"p{i}"], kernel_shape=kernel, strides=strides,
                                   pads=[pads[0], pads[1], pads[2], pads[3]], count_include_pad=include),
                  helper.make_node("QuantizeLinear", [f"p{i}", f"sy{i}", f"zy{i}"], [f"y{i}"])]
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.INT8, shape))
        oh, ow = ((shape[2] + pads[0] + pads[2] - kernel[0]) // strides[0] + 1,
                  (shape[3] + pads[1] + pads[3] - kernel[1]) // strides[1] + 1)
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT8, [1, shape[1], oh, ow]))
    graph = helper.make_graph(nodes, "pool", inputs, outputs, initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def exact_average(xq, kernel, strides, pads, include, sx, zx, sy, zy):
    """(int8 result, distance of the exact value from a half step) in float64 (numpy)."""
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel, strides, pads
    x = np.pad(xq.astype(np.float64) - zx, [(0, 0), (0, 0), (top, bottom), (left, right)])
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    total = sum(x[:, :, ry:ry + sh * (oh - 1) + 1:sh, rx:rx + sw * (ow - 1) + 1:sw]
                for ry in range(kh) for rx in range(kw))
    counts = np.full((oh, ow), kh * kw) if include else np.outer(
        window_counts(xq.shape[2], kh, sh, top, bottom), window_counts(xq.shape[3], kw, sw, left, right))
    value = total / counts * np.float64(np.float32(sx)) / np.float64(np.float32(sy))
    return (np.clip(np.round(value) + zy, -128, 127).astype(np.int8),
            np.abs(np.abs(value - np.floor(value)) - 0.5))


def test_int8_average_pool_equals_the_exact_average(tmp_path):
    import tvm
    from qdq_build import fused_for, host_machine

    _, mod, cpu, fused = fused_for(pool_onnx(tmp_path / "pool.onnx"))
    scripts = [f.script(show_meta=False) for f in fused.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert sum("int8_depthwise_conv" in s for s in scripts) == len(BRANCHES)
    assert not any("pool_sum" in s or "float32" in s for s in scripts if "int8_requantize" not in s)
    machine = host_machine(mod, cpu)
    rng = np.random.default_rng(0)
    xs = [rng.integers(-128, 128, size=b[0], dtype=np.int8) for b in BRANCHES]
    got = machine["main"](*[tvm.runtime.tensor(x) for x in xs])
    for branch, x, y in zip(BRANCHES, xs, got, strict=True):
        expected, from_half = exact_average(x, *branch[1:])
        assert y.numpy().shape == expected.shape
        differ = y.numpy() != expected
        assert np.all(np.abs(y.numpy().astype(int) - expected) <= 1)
        assert np.all(from_half[differ] < 1e-4), f"{branch}: {np.count_nonzero(differ)} values off a half step"


def test_aarch64_builds_keep_the_float_pool(tmp_path):
    """AArch64 builds keep ``pooling.py``'s float pool (it counted fewer instructions on the Cortex-A72)."""
    from qdq_build import fused_for

    fused = fused_for(pool_onnx(tmp_path / "pool.onnx"), "rpi4")[3]
    names = [gv.name_hint for gv in fused.functions]
    assert not any("int8_depthwise" in n for n in names) and any("avg_pool2d" in n for n in names), names
