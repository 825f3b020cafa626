"""Numerics of every default CPU schedule rule against onnxruntime, on single ops and small graphs.

Each case names the rule that must schedule its main kernel, so a rule that silently stops matching (and leaves
the kernel to a slower fallback) fails here too. No timings are asserted.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import tirx

from edgevit.backends import tvm_compiler
from edgevit.backends.cpu_schedules import CpuInfo, schedule_func, schedule_variants, tiled_reduction
from edgevit.backends.cpu_schedules import attention as attention_rule
from edgevit.backends.cpu_schedules.common import LAYOUT_FREE
from edgevit.backends.pooling import window_counts
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.targets import CpuTarget, get_target

RNG = np.random.default_rng(7)

#: Explicit x86 targets for the tests of a schedule's structure (what gets padded or prepacked depends on the
#: vector registers): they only build schedules, so both run on any host; the numerics tests use the host's.
AVX2 = CpuTarget("x86_64", {"kind": "llvm", "mcpu": "haswell"})            # 8 lanes, 16 registers
AVX512 = CpuTarget("x86_64", {"kind": "llvm", "mcpu": "skylake-avx512"})   # 16 lanes, 32 registers
_ISA_NAMES = {id(AVX2): "avx2", id(AVX512): "avx512"}  # test ids


def _const(name: str, shape, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(path, nodes, inputs: dict, output: tuple[str, list], initializers=()) -> str:
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _conv(path, cin, cout, size, kernel, stride=1, groups=1, act="Sigmoid"):
    pad = kernel // 2
    out = (size + 2 * pad - kernel) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[pad] * 4, strides=[stride] * 2, group=groups),
             helper.make_node(act, ["c"], ["a"]), helper.make_node("Mul", ["c", "a"], ["y"])]
    return _model(path, nodes, {"x": [1, cin, size, size]}, ("y", [1, cout, out, out]),
                  [_const("w", [cout, cin // groups, kernel, kernel]), _const("b", [cout])])


def _conv_gelu(path, cin, cout, size, kernel, groups=1):
    """A convolution and PyTorch's exact GELU, as timm's models export it: ``x * (0.5 * (erf(x / sqrt2) + 1))``."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("sq2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[kernel // 2] * 4, group=groups),
             helper.make_node("Div", ["c", "sq2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["half", "a"], ["h"]),
             helper.make_node("Mul", ["c", "h"], ["y"])]
    return _model(path, nodes, {"x": [1, cin, size, size]}, ("y", [1, cout, size, size]),
                  [_const("w", [cout, cin // groups, kernel, kernel]), _const("b", [cout]), *consts])


def _conv_pad(path, cin, cout, size, pads):
    """A convolution whose output is padded (TorchScript exports of windowed attention): the Pad becomes the
    conv's epilogue, and the padded rows read no element of the conv's tile."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
             helper.make_node("Pad", ["c", "p"], ["y"], mode="constant")]
    shape = [1, cout, size + pads[2] + pads[6], size + pads[3] + pads[7]]
    return _model(path, nodes, {"x": [1, cin, size, size]}, ("y", shape),
                  [_const("w", [cout, cin, 3, 3]), _const("b", [cout]),
                   numpy_helper.from_array(np.array(pads, np.int64), "p")])


def _matmul(path, batch, m, k, n):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Erf", ["a"], ["e"]), helper.make_node("Mul", ["a", "e"], ["y"])]
    return _model(path, nodes, {"x": [batch, m, k]}, ("y", [batch, m, n]), [_const("w", [k, n]), _const("b", [n])])


def _pool_mixer(path, channels, size):
    """EfficientFormer's token mixer: ``(avgpool3x3(x) - x) * scale + x``, the padding left out of the count."""
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[3, 3], pads=[1] * 4, strides=[1, 1],
                              count_include_pad=0),
             helper.make_node("Sub", ["p", "x"], ["d"]), helper.make_node("Mul", ["d", "s"], ["m"]),
             helper.make_node("Add", ["x", "m"], ["y"])]
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, size, size]),
                  [_const("s", [channels, 1, 1])])


def _upsample_gelu(path, channels, size):
    """EfficientFormerV2's 2x bilinear upsample (half-pixel) followed by an exact GELU."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("scales", [1, 1, 2, 2]), ("sq2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="linear",
                              coordinate_transformation_mode="half_pixel"),
             helper.make_node("Div", ["r", "sq2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["r", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, 2 * size, 2 * size]), consts)


def _attention(path, heads, tokens, dim, bias=False):
    """softmax(q kᵀ) v, fused into one kernel; with an attention bias between (EfficientFormer) it is not."""
    scores = "sb" if bias else "s"
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             *([helper.make_node("Add", ["s", "b"], ["sb"])] if bias else []),
             helper.make_node("Softmax", [scores], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    shape = [1, heads, tokens, dim]
    return _model(path, nodes, {"q": shape, "k": shape, "v": shape}, ("y", shape),
                  [_const("b", [heads, tokens, tokens])] if bias else [])


def _layer_norm(path, tokens, dim):
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    return _model(path, nodes, {"x": [1, tokens, dim]}, ("y", [1, tokens, dim]), [_const("g", [dim]), _const("b", [dim])])


def _batch_norm(path, channels, size):
    var = numpy_helper.from_array(RNG.uniform(0.5, 2, channels).astype(np.float32), "v")
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, size, size]),
                  [_const("g", [channels]), _const("b", [channels]), _const("m", [channels]), var])


def _group_norm(path, channels, size):
    nodes = [helper.make_node("InstanceNormalization", ["x", "g", "b"], ["y"], epsilon=1e-5)]
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, size, size]),
                  [_const("g", [channels]), _const("b", [channels])])


def _pool_mean(path, channels, size):
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)]
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, 1, 1]), [axes])


def _whole_tensor_norm(path, channels, size):
    """GroupNorm with one group, as MobileViTv2 exports it: mean and variance over the whole tensor."""
    axes = numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
             helper.make_node("ReduceMean", ["d2", "axes"], ["v"], keepdims=1),
             helper.make_node("Sqrt", ["v"], ["s"]), helper.make_node("Div", ["d", "s"], ["y"])]
    return _model(path, nodes, {"x": [1, channels, size, size]}, ("y", [1, channels, size, size]), [axes])


def _transpose_concat(path):
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Concat", ["t", "t"], ["c"], axis=1),
             helper.make_node("Mul", ["c", "c"], ["y"])]
    return _model(path, nodes, {"x": [1, 24, 40]}, ("y", [1, 80, 24]))


CASES = {
    # name: (builder, rule that must schedule the main kernel, substring of that kernel's name)
    "conv3x3": (lambda p: _conv(p, 8, 32, 20, 3), "TiledReduction", "conv2d"),
    "conv1x1": (lambda p: _conv(p, 16, 32, 32, 1), "TiledReduction", "conv2d"),
    "conv1x1_small_map_packed": (lambda p: _conv(p, 24, 32, 7, 1), "TiledReduction", "ihwo"),
    "conv1x1_220_channels_padded": (lambda p: _conv(p, 64, 220, 7, 1), "TiledReduction", "ihwo"),
    "conv3x3_20_channels_padded": (lambda p: _conv(p, 8, 20, 14, 3, stride=2), "TiledReduction", "ihwo"),
    "conv1x1_prime_channels_padded": (lambda p: _conv(p, 32, 37, 16, 1), "TiledReduction", "strided_slice"),
    "conv1x1_28_map_over_pixels": (lambda p: _conv(p, 24, 40, 28, 1), "TiledReduction", "fused_conv2d_add"),
    "conv3x3_stride2_packed": (lambda p: _conv(p, 16, 32, 14, 3, stride=2), "TiledReduction", "ihwo"),
    "depthwise_padded_per_channel": (lambda p: _conv(p, 16, 16, 24, 3, groups=16), "TiledReduction", "conv2d"),
    "depthwise_stride2": (lambda p: _conv(p, 16, 16, 32, 3, stride=2, groups=16), "TiledReduction", "conv2d"),
    # 7-wide rows: vectorised along the channels, with 1HWC weights and channel-last padding (weight_packing)
    "depthwise_channel_last": (lambda p: _conv(p, 32, 32, 7, 3, groups=32), "TiledReduction", "nchw_hwc"),
    "depthwise_channel_last_stride2": (lambda p: _conv(p, 48, 48, 14, 3, stride=2, groups=48, act="Erf"),
                                       "TiledReduction", "nchw_hwc"),
    # 28-wide rows: with AVX-512 computed 32 wide and cropped (weight_packing.depthwise_conv2d_nchw_wide)
    "depthwise_wide_rows_gelu": (lambda p: _conv_gelu(p, 32, 32, 28, 3, groups=32), "TiledReduction", "conv2d"),
    # 56-wide rows: with AVX-512 8-wide tiles, the epilogue per row of tiles (tiled_reduction._half_vector_rows)
    "depthwise_half_vector_rows": (lambda p: _conv(p, 16, 16, 56, 3, groups=16), "TiledReduction", "conv2d"),
    "matmul_bias_gelu": (lambda p: _matmul(p, 2, 49, 64, 48), "TiledReduction", "matmul"),
    # A padded output: its padding is not computed from any tile (was left unwritten: NaN/garbage)
    "conv3x3_then_pad": (lambda p: _conv_pad(p, 3, 4, 6, [0, 0, 0, 0, 0, 0, 2, 0]), "TiledReduction", "conv2d"),
    "conv3x3_then_pad_both_sides": (lambda p: _conv_pad(p, 8, 16, 14, [0, 0, 1, 3, 0, 0, 2, 1]),
                                    "TiledReduction", "conv2d"),
    # Reductions longer than tiled_reduction.LONG_REDUCTION run in chunks (test_long_reductions_are_chunked).
    "conv1x1_input_panel_packed": (lambda p: _conv(p, 32, 24, 64, 1), "TiledReduction", "conv2d"),
    "conv1x1_56_map_unpacked": (lambda p: _conv(p, 32, 24, 56, 1), "TiledReduction", "conv2d"),
    "conv1x1_long_reduction_chunked": (lambda p: _conv(p, 320, 24, 7, 1), "TiledReduction", "ihwo"),
    # ... over 96 channels on a 14x14 map: 3 panels of 32 on AVX-512, split with the pixels to run in parallel
    "conv1x1_96_channels_chunked": (lambda p: _conv(p, 256, 96, 14, 1), "TiledReduction", "conv2d"),
    "matmul_long_reduction_chunked": (lambda p: _matmul(p, 1, 49, 448, 40), "TiledReduction", "matmul"),
    "matmul_220_columns_padded": (lambda p: _matmul(p, 1, 48, 32, 220), "TiledReduction", "matmul"),
    "matmul_49_columns_padded": (lambda p: _matmul(p, 2, 48, 32, 49), "TiledReduction", "matmul"),
    "conv1x1_8_channels_over_2401_pixels": (lambda p: _conv(p, 8, 8, 49, 1), "TiledReduction", "ihwo"),
    # On AArch64 the 49 pixels are padded to 52 (whole vectors of the broadcast input, see _lane_block_extent)
    "conv1x1_7x7_gelu": (lambda p: _conv(p, 64, 128, 7, 1, act="Erf"), "TiledReduction", "ihwo"),
    # ... and a 49-long reduction over a matmul's rows to 52 (P @ V of attention over a 7x7 map)
    "matmul_49_reduction": (lambda p: _matmul(p, 2, 49, 49, 64), "TiledReduction", "matmul"),
    # GELU epilogues (fast_math.fast_gelu): on AArch64 a loop over the tile, two vectors an iteration
    # (fast_gelu on AArch64 only: on x86 the conv's kernel ends in FastMathTransform's erf)
    "conv1x1_gelu_rolled": (lambda p: _conv_gelu(p, 16, 32, 16, 1), "TiledReduction", "conv2d"),
    "depthwise_gelu_rolled": (lambda p: _conv_gelu(p, 16, 16, 16, 3, groups=16), "TiledReduction", "conv2d"),
    # ... and on a channel-last depthwise conv (7-wide rows), whose tile buffer keeps the channels contiguous
    "depthwise_channel_last_gelu_rolled": (lambda p: _conv_gelu(p, 32, 32, 7, 3, groups=32), "TiledReduction",
                                           "nchw_hwc"),
    # 3x3 average pooling excluding the padding, vectorised along the rows on AArch64 (pooling.py)
    "pool_mixer_28": (lambda p: _pool_mixer(p, 16, 28), "Elementwise", "avg_pool2d"),
    "pool_mixer_14": (lambda p: _pool_mixer(p, 8, 14), "Elementwise", "avg_pool2d"),
    # 2x upsample + GELU: on AArch64 rows first, per map, the columns' stage inlined into the GELU (upsample.py)
    "upsample_gelu": (lambda p: _upsample_gelu(p, 32, 7), "Elementwise", "upsample2x"),
    "attention_fused": (lambda p: _attention(p, 4, 256, 16), "Attention", "fused_attention"),
    "attention_odd_sizes": (lambda p: _attention(p, 3, 49, 20), "Attention", "fused_attention"),
    "attention_prime_tokens": (lambda p: _attention(p, 2, 197, 16), "Attention", "fused_attention"),
    "attention_bias_softmax": (lambda p: _attention(p, 2, 64, 16, bias=True), "RowReduction", "softmax"),
    "layer_norm": (lambda p: _layer_norm(p, 49, 64), "RowReduction", "layer_norm"),
    "batch_norm_relu": (lambda p: _batch_norm(p, 16, 14), "Elementwise", ""),
    "instance_norm": (lambda p: _group_norm(p, 8, 16), "RowReduction", ""),
    "global_mean": (lambda p: _pool_mean(p, 32, 8), "RowReduction", "mean"),
    "transpose_concat": (lambda p: _transpose_concat(p), "Elementwise", ""),
    "whole_tensor_norm": (lambda p: _whole_tensor_norm(p, 16, 32), "Elementwise", "mean"),
}


def _run(model, executable) -> list[np.ndarray]:
    import tvm
    from tvm.runtime import vm

    inputs = random_inputs(model.inputs, 0)
    machine = vm.VirtualMachine(executable, tvm.cpu())
    out = machine["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return inputs, [out.numpy()]


@pytest.mark.parametrize("case", list(CASES))
def test_rule_matches_onnxruntime(case, tmp_path):
    builder, rule, kernel = CASES[case]
    model = load_model(builder(tmp_path / f"{case}.onnx"))
    cpu = get_target("host").cpu
    mod = tvm_compiler.import_onnx(model.load(), model.inputs)

    fused = tvm_compiler.fused_module(mod, cpu)
    target = tvm_compiler.make_target(cpu.tvm)
    rules = {gv.name_hint: schedule_func(f, target)[0] for gv, f in fused.functions_items()
             if gv.name_hint != "main"}
    assert any(kernel in name and used == rule for name, used in rules.items()), rules

    inputs, actual = _run(model, tvm_compiler.build(mod, cpu))
    result = compare(actual, run_onnxruntime(model.onnx_path, inputs))
    assert result.ok, result


def test_every_kernel_gets_a_rule(tmp_path):
    model = load_model(_conv(tmp_path / "c.onnx", 8, 16, 12, 3))
    cpu = get_target("host").cpu
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    target = tvm_compiler.make_target(cpu.tvm)
    assert all(schedule_func(f, target)[0] for gv, f in fused.functions_items() if gv.name_hint != "main")


@pytest.mark.parametrize("target,lanes", [("rpi4", 4), ("rpi5", 4)])
def test_cpu_info_reads_the_vector_width(target, lanes):
    info = CpuInfo.of(tvm_compiler.make_target(get_target(target).cpu.tvm))
    assert info.lanes == lanes and info.cores == 4


def test_cpu_info_host_and_x86_widths():
    host = CpuInfo.of(tvm_compiler.make_target(get_target("host").cpu.tvm))
    assert host.lanes in (4, 8, 16)
    assert CpuInfo.of(tvm_compiler.make_target({"kind": "llvm", "mcpu": "haswell"})).lanes == 8
    assert CpuInfo.of(tvm_compiler.make_target({"kind": "llvm", "mcpu": "skylake-avx512"})).lanes == 16


@pytest.mark.parametrize("case", ["conv3x3", "depthwise_channel_last"])
def test_aarch64_build_uses_the_rules(case, tmp_path):
    model = load_model(CASES[case][0](tmp_path / "c.onnx"))
    cpu = get_target("rpi4").cpu
    executable = tvm_compiler.build(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    tvm_compiler.export_library(executable, cpu, tmp_path / "model.so")
    assert (tmp_path / "model.so").stat().st_size > 0


@pytest.mark.parametrize("case", ["conv1x1_long_reduction_chunked", "matmul_long_reduction_chunked"])
def test_long_reductions_are_chunked(case, tmp_path):
    """The chunked cases above check numerics against onnxruntime; this checks they do exercise the chunking."""
    func, target = _case_kernel(case, tmp_path)
    chunked = tiled_reduction.apply(func, target)
    whole = tiled_reduction.apply(func, target, tiled_reduction.Knobs(reduction=0))
    # The reduction split in chunks of (at most) Knobs.reduction = 64.
    def extents(sch):
        return [int(sch.get(loop).extent) for loop in _update_loops(sch)]

    assert 64 in extents(chunked) and 64 not in extents(whole), (extents(chunked), extents(whole))


@pytest.mark.parametrize("case,packed", [("conv1x1_input_panel_packed", True), ("conv1x1", True),
                                         ("conv1x1_56_map_unpacked", False), ("depthwise_stride2", False),
                                         ("conv3x3_stride2_packed", False), ("matmul_bias_gelu", False),
                                         ("conv1x1_long_reduction_chunked", False)])
def test_input_panels_are_packed(case, packed, tmp_path):
    """Activations re-read by every block of output channels, whose channels are a multiple of 4 KB apart (64x64
    and 32x32 maps), are copied to a contiguous panel first; a 56x56 map's channels (12.25 KB apart) spread over
    the L1 sets and are read in place; weight panels, depthwise and strided inputs are never packed. The
    cases' numerics are checked against onnxruntime above."""
    func, target = _case_kernel(case, tmp_path)

    def copies(knobs):
        sch = tiled_reduction.apply(func, target, knobs)
        return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
                if sch.get(b).name_hint.endswith("_global") and not _prepacks(sch, b)]

    assert bool(copies(tiled_reduction.Knobs())) == packed
    assert not copies(tiled_reduction.Knobs(pack=False))


@pytest.mark.parametrize("case,sliced", [("depthwise_padded_per_channel", True), ("depthwise_stride2", True),
                                         ("depthwise_channel_last", True), ("depthwise_channel_last_stride2", True),
                                         ("conv3x3", False)])
def test_depthwise_padding_is_computed_per_channel(case, sliced, tmp_path):
    """A depthwise conv's padded input is made one channel (channel-last: one vector of channels) at a time,
    inside the conv's channel loop (numerics: the cases above); a dense conv's padding, read by every output
    channel, is made once."""
    func, target = _case_kernel(case, tmp_path)
    sch = tiled_reduction.apply(func, target)
    # The padded rows' copy may be partitioned (whole vectors, scalar tail): its blocks are renamed pad_temp_*.
    pad = sch.get_loops(next(b for b in sch.get_child_blocks(sch.get_sblock("root"))
                             if sch.get(b).name_hint.startswith("pad_temp")))
    conv = _update_loops(sch)
    assert sch.get(pad[0]).same_as(sch.get(conv[0])) == sliced


@pytest.mark.parametrize("cpu,size,stride,form", [
    (AVX512, 28, 1, "nchw_wide"), (AVX512, 56, 1, "nchw_wide"),  # 28 -> 32 wide; 56 = 7 half vectors
    (AVX512, 14, 1, "nchw_hwc"), (AVX512, 56, 2, "nchw_hwc"),    # 14 -> 16 and stride 2 measured slower
    (AVX2, 28, 1, "nchw_hwc"), ("rpi4", 28, 1, "fused_conv2d"),  # other ISAs as before
], ids=lambda v: _ISA_NAMES.get(id(v), str(v)))
def test_depthwise_form_follows_the_row_width(cpu, size, stride, form, tmp_path):
    """Which depthwise form a 3x3 conv gets: with 16 lanes, stride-1 rows of 28 or more are computed in NCHW
    over rows a multiple of 8 wide (channel-last transposes the input and stores the output a lane at a time;
    128 x 56x56 + GELU 0.43 -> 0.32 ms on Zen 4); narrower rows and AVX2/NEON keep their forms."""
    model = load_model(_conv(tmp_path / "dw.onnx", 32, 32, size, 3, stride=stride, groups=32))
    cpu = get_target(cpu).cpu if isinstance(cpu, str) else cpu
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    names = [gv.name_hint for gv in fused.get_global_vars() if gv.name_hint != "main"]
    assert any(form in name for name in names), names


@pytest.mark.parametrize("cpu,rows", [(AVX512, True), (AVX2, False)], ids=["avx512", "avx2"])
def test_half_vector_depthwise_epilogue_runs_over_whole_rows(cpu, rows, tmp_path):
    """A depthwise conv whose 56-wide rows take half vectors (AVX-512: 7 x 8) computes its epilogue per row of
    tiles, vectorised over the whole 56-wide row; with whole-vector tiles (AVX2: 8 lanes) per tile, 8 wide
    (numerics: depthwise_half_vector_rows on the host)."""
    func, target = _case_kernel("depthwise_half_vector_rows", tmp_path, cpu)
    sch = tiled_reduction.apply(func, target)
    vectorised = [int(n) for n in re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", sch.mod.script())]
    assert (56 in vectorised) == rows and 8 in vectorised, vectorised


@pytest.mark.parametrize("case", ["depthwise_stride2", "depthwise_padded_per_channel"])
def test_padding_copies_are_vectorised(case, tmp_path):
    """The padded input's copy stores whole vectors: its rows (26 and 33 wide: no multiple of 8) are partitioned
    into whole vectors and a scalar tail, and a stride-2 conv's de-interleaved copy is made one phase at a time
    (numerics: the cases above). Split with a remainder instead, TVM scalarises the whole row."""
    func, target = _case_kernel(case, tmp_path)
    script = tiled_reduction.apply(func, target).mod["main"].script()
    lines = script.splitlines()
    stores = [i for i, line in enumerate(lines) if line.strip().startswith("pad_temp[")]
    assert stores, script
    # The first store into pad_temp sits in a vectorised loop with no predicate.
    above = lines[max(0, stores[0] - 12):stores[0]]
    assert any("T.vectorized" in line for line in above), "\n".join(above)
    assert not any("T.where" in line for line in above), "\n".join(above)


@pytest.mark.parametrize("cpu,case,padded", [
    (AVX2, "matmul_bias_gelu", True), (AVX2, "matmul_long_reduction_chunked", True),
    (AVX2, "matmul_220_columns_padded", True), (AVX2, "matmul_49_columns_padded", True),
    (AVX2, "conv1x1_small_map_packed", True),
    (AVX2, "conv1x1_8_channels_over_2401_pixels", False),  # 1 vector: copy too dear
    (AVX2, "conv3x3_stride2_packed", False), (AVX2, "conv1x1", False),
    (AVX512, "matmul_220_columns_padded", True),  # 220 = 13.75 vectors of 16
    (AVX512, "matmul_49_columns_padded", True),  # to 56, half vectors (64 would add more than 1/7)
    (AVX512, "conv1x1_small_map_packed", False)],  # 32 registers: 2 vectors x 7 of 49 pixels fit unpadded
    ids=lambda v: _ISA_NAMES.get(id(v), str(v)))
def test_badly_divisible_axes_are_padded(cpu, case, padded, tmp_path):
    """A matmul over 49 rows (no register tile of 8+ accumulators divides 49) or 220 columns (4-wide vectors),
    or a 1x1 conv over a 7x7 map's 49 pixels, computes on rows or columns padded to a multiple of a better tile
    (numerics: the cases above); a 3x3 conv is not an einsum (``y + ry``) and is left as it is."""
    func, target = _case_kernel(case, tmp_path, cpu)
    sch = tiled_reduction.apply(func, target)
    pads = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))
            if "_pad" in sch.get(b).name_hint]  # x_pad, or x_pad_* when its copy is partitioned
    assert bool(pads) == padded, pads


def test_avx512_pads_49_columns_to_half_vectors(tmp_path):
    """49 columns (attention scores over a 7x7 map) on AVX-512: whole vectors (64) would add 15 columns, so
    they are padded to 56 and computed 8 wide (Zen 4's FMA units are 256 bits wide: no loss there); left at
    49 they ran one float at a time (q @ k^T of efficientformerv2_s0: 0.17 -> 0.034 ms)."""
    func, target = _case_kernel("matmul_49_columns_padded", tmp_path, AVX512)
    script = tiled_reduction.apply(func, target).mod.script()
    assert "_pad = T.sblock_alloc_buffer((T.int64(32), T.int64(56)))" in script  # the [32, 49] weights
    sch = tiled_reduction.apply(func, target)
    innermost = sch.get(_update_loops(sch)[-1])
    assert int(innermost.extent) == 8 and innermost.kind == tirx.ForKind.VECTORIZED, innermost


@pytest.mark.parametrize("case,lanes,flat", [("conv1x1_56_map_unpacked", 8, True),  # AVX2: 56 = 7 vectors
                                              ("conv1x1_56_map_unpacked", 16, True),
                                              ("conv1x1_input_panel_packed", 8, False)])  # 64 = 8 vectors
def test_pointwise_maps_are_flattened_when_rows_vectorise_badly(case, lanes, flat, tmp_path):
    """A 1x1 conv iterates over pixels when a row has no 2-register tile and the whole map has."""
    from tvm.s_tir import Schedule

    func, _ = _case_kernel(case, tmp_path)
    sch = Schedule(func)
    info = CpuInfo(lanes, 2 * lanes, 1)
    assert tiled_reduction._flatten_pixels(sch, tiled_reduction._mac_block(sch), info) == flat


@pytest.mark.parametrize("case", ["conv1x1_long_reduction_chunked", "conv1x1_96_channels_chunked",
                                  "conv1x1_8_channels_over_2401_pixels", "conv1x1"])
def test_tile_loops_split_evenly_over_the_cores(case, tmp_path):
    """The parallel tile loops split over the target's cores (2 when unknown, as on the host) to within 1/5:
    a chunked reduction's 1 or 3 panels (24 or 96 channels) are split with the pixels below them (7 on a 7x7
    map: 4 + 3), a single tile runs its pixels in parallel (tools/parallel_report.py: a parallel extent of 3
    or 1 capped 2 threads at 1.5x or 1x on those kernels)."""
    from edgevit.backends.cpu_schedules.parallelism import kernel_parallelism

    for cpu, threads in ((AVX512, 2), (AVX2, 2), (get_target("rpi4").cpu, 4)):
        func, target = _case_kernel(case, tmp_path, cpu=cpu)
        split = kernel_parallelism(tiled_reduction.apply(func, target).mod["main"])
        assert split.extents() and split.time_share(threads) <= 1.2 / threads, (cpu.tvm, split.nests)


def _case_kernel(case: str, tmp_path, cpu: CpuTarget | None = None):
    """The fused kernel a case is about, before scheduling, and the target (``cpu``, by default the host's)."""
    builder, _, kernel = CASES[case]
    model = load_model(builder(tmp_path / f"{case}.onnx"))
    cpu = cpu or get_target("host").cpu
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    return next(f for gv, f in fused.functions_items() if kernel in gv.name_hint), tvm_compiler.make_target(cpu.tvm)


def _prepacks(sch, block) -> bool:
    """Whether a block re-lays out a weight (run once, at compile time, by the build's pipeline)."""
    return tiled_reduction.LAYOUT_REWRITE in sch.get(block).annotations


def _update_loops(sch) -> list:
    """The loops around the main reduction's update block (decompose_reduction's ``*_update``)."""
    block = next(b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint.endswith("_update"))
    return list(sch.get_loops(block))


@pytest.mark.parametrize("lanes,registers,vec,blk,expected", [
    (8, 16, 448, 7, (8, 7)),     # AVX2, 7x7 map: 1 vector x 7 pixels, not 2 vectors x 1 pixel
    (8, 16, 896, 14, (32, 2)),   # AVX2, 14x14 map: 4 vectors x 2 pixels (8 accumulators)
    (16, 32, 896, 14, (32, 7)),  # AVX-512: 2 vectors x 7 pixels, as before the joint choice
    (8, 16, 64, 192, (16, 6)),   # AVX2, 64-wide rows, 192 channels: not 4 vectors x 3 (spills), 2 x 6
    (16, 32, 64, 192, (32, 12)), # AVX-512: 2 vectors x 12 channels (24 accumulators)
])
def test_register_tile_maximises_accumulators(lanes, registers, vec, blk, expected):
    assert tiled_reduction.register_tile(vec, blk, CpuInfo(lanes, registers, 1), tiled_reduction.Knobs()) == expected


@pytest.mark.parametrize("vec,blk,expected", [
    (196, 120, (4, 12)),  # 14x14 pixels x 120 channels: 1 x 12 (4 loads per 12 FMAs), not 1 x 15 (16 per 15)
    (196, 480, (4, 16)),
    (128, 52, (16, 4)),   # a 7x7 map padded to 52 pixels: 4 vectors x 4 pixels
    (128, 49, (8, 7)),    # unpadded: 7 pixels, one scalar load each
    (3136, 128, (8, 8)),  # 2 vectors x 8 channels (16 accumulators, 4 loads), not 4 x 4 (5 loads)
])
def test_lane_fma_register_tile_counts_instructions(vec, blk, expected):
    """On AArch64 the tile is the one with the fewest FMA + operand-load instructions per FMA (given 8+
    accumulators): a broadcast block that is no multiple of the lanes costs a load per row."""
    assert tiled_reduction.register_tile(vec, blk, CpuInfo(4, 32, 1, lane_fma=True), tiled_reduction.Knobs()) \
        == expected


@pytest.mark.parametrize("case", ["conv3x3", "conv1x1_small_map_packed", "conv1x1_28_map_over_pixels",
                                  "conv1x1_220_channels_padded", "conv1x1_prime_channels_padded",
                                  "conv1x1_input_panel_packed", "depthwise_channel_last",
                                  "matmul_bias_gelu", "matmul_long_reduction_chunked",
                                  "matmul_220_columns_padded", "attention_fused"])
def test_every_tile_variant_computes_the_same(case, tmp_path):
    """``edgevit tune`` may pick any variant of a rule's SPACE: each must compute what the default computes."""
    import tvm

    func, target = _case_kernel(case, tmp_path)
    variants = schedule_variants(func, target)
    assert len(variants) > 1 and variants[0][0] == "default"
    args = [RNG.standard_normal([int(x) for x in p.ty.shape]).astype(np.float32) for p in func.params]
    outputs = []
    for _, sch in variants:
        lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*tensors)
        outputs.append(tensors[-1].numpy())
    for (label, _), out in zip(variants[1:], outputs[1:]):
        np.testing.assert_allclose(out, outputs[0], rtol=1e-5, atol=1e-6, err_msg=label)


@pytest.mark.parametrize("cpu,case,packed", [
    (AVX2, "conv1x1_small_map_packed", True),  # IHWO weights, vector tile 16 of 32
    (AVX2, "matmul_long_reduction_chunked", True),
    (AVX2, "conv3x3", True),  # OIHW weights, read along the block of channels
    (AVX2, "attention_fused", False),  # no weights: q, k, v are activations
    (AVX512, "matmul_long_reduction_chunked", True),
    (AVX512, "conv1x1_small_map_packed", False)],  # the vector tile (2 x 16) is all 32 channels: nothing to split
    ids=lambda v: _ISA_NAMES.get(id(v), str(v)))
def test_weights_are_prepacked_in_panels(cpu, case, packed, tmp_path):
    """A weight the register tile reads along a tiled axis is re-laid out as ``[axis // tile, ..., axis % tile]``
    by a block marked for TVM's ``SplitLayoutRewritePreproc`` (numerics: the cases above, through the build)."""
    func, target = _case_kernel(case, tmp_path, cpu)
    sch = tiled_reduction.apply(func, target) or schedule_variants(func, target)[0][1]
    packs = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root")) if _prepacks(sch, b)]
    assert bool(packs) == packed
    weights = [func.params[int(i)] for i in (func.attrs.get(LAYOUT_FREE, []) if func.attrs else [])]
    for pack in packs:
        source, panels = pack.reads[0].source, pack.writes[0].source
        assert any(source.same_as(w) for w in weights)
        shape, new = [int(x) for x in source.shape], [int(x) for x in panels.shape]
        tile = new[-1]
        assert 1 < tile and len(new) == len(shape) + 1 and np.prod(new) == np.prod(shape)
        assert new[0] * tile in shape and sorted(new[1:-1] + [new[0] * tile]) == sorted(shape)


def test_prepacking_is_folded_into_the_constants(tmp_path):
    """The build runs the weights' re-layout once, at compile time: the runtime ``main`` calls the prepacked
    kernel with a constant, and no ``*_weight_prepack`` function is left to call. (AVX2, where this kernel's
    weights are packed; ``FoldConstant`` runs the re-layout kernel here, so the target must run on the host.)"""
    model = load_model(CASES["conv1x1_small_map_packed"][0](tmp_path / "c.onnx"))
    mod = tvm_compiler.import_onnx(model.load(), model.inputs)
    lowered = tvm_compiler.cpu_pipeline(tvm_compiler.make_target(AVX2.tvm))(mod)
    main = lowered["main"].script()
    assert "_prepacked" in main and "_weight_prepack" not in main, main


def test_weight_parameters_are_marked_without_renaming_kernels(tmp_path):
    """Each kernel lists the parameters every call passes a constant (the weights), never the input; the
    kernels keep their names (TVM's own marking pass renames every kernel it copies)."""
    func, _ = _case_kernel("matmul_bias_gelu", tmp_path)
    assert [int(i) for i in func.attrs[LAYOUT_FREE]] == [1, 2]  # (x, w, b, out): w and b are constants
    model = load_model(CASES["matmul_bias_gelu"][0](tmp_path / "m.onnx"))
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host").cpu)
    assert "fused_matmul_add_fast_erf_multiply" in [gv.name_hint for gv, _ in fused.functions_items()]


#: Kernels whose broadcast operand AArch64 loads a vector at a time (FMA by lane, see broadcast_by_lane): along
#: the block axis (packed conv weights), along the reduction (a matmul's rows, attention's queries/probabilities).
LANE_CASES = ["conv3x3", "conv1x1", "matmul_long_reduction_chunked", "matmul_bias_gelu", "attention_fused",
              "attention_odd_sizes", "conv1x1_7x7_gelu", "matmul_49_reduction"]


@pytest.mark.parametrize("case", LANE_CASES)
def test_aarch64_loads_broadcast_operands_as_vectors(case, tmp_path):
    func, target = _case_kernel(case, tmp_path, cpu=get_target("rpi4").cpu)
    rule = tiled_reduction if CASES[case][1] == "TiledReduction" else attention_rule
    script = rule.apply(func, target).mod.script()
    # a register-sized copy of the broadcast operand, filled by a vectorised loop, read by the FMA block
    assert re.search(r"for \w+ in T\.vectorized\(T\.int64\((4|8|16)\)\):\s+with T\.sblock\(\"\w+_global\"\)",
                     script), script[:3000]
    host = rule.apply(func, tvm_compiler.make_target(AVX512.tvm)) if CASES[case][1] == "TiledReduction" else None
    assert tiled_reduction.LANE_OPERAND in script
    assert host is None or tiled_reduction.LANE_OPERAND not in host.mod.script()  # x86 broadcasts from memory


@pytest.mark.parametrize("case,padded", [("conv1x1_7x7_gelu", r"lv\d+"), ("matmul_49_reduction", "x")])
def test_aarch64_pads_7x7_axes_to_whole_vectors(case, padded, tmp_path):
    """On AArch64 a 7x7 map's 49 pixels (a pointwise conv's block axis) or 49 reduction steps (a matmul over its
    tokens) are padded to 52, so the broadcast operand is loaded a vector at a time: the FMA loop of the
    compiled kernel has lane-indexed FMAs and no scalar float loads (``ldr s``/``ldp s``) or ``ld1r``. x86 keeps
    them (numerics: the cases' onnxruntime and qemu tests)."""
    import tvm

    func, target = _case_kernel(case, tmp_path, cpu=get_target("rpi4").cpu)
    sch = tiled_reduction.apply(func, target)
    # the input (the broadcast operand) copied into a buffer whose last axis (pixels, reduction) is 52 long
    assert re.search(padded + r"_pad = T\.sblock_alloc_buffer\(\(.*T\.int64\(52\)\)\)$", sch.mod.script(), re.M), \
        sch.mod.script()[:3000]
    for host in (AVX2, AVX512):
        host_func, host_target = _case_kernel(case, tmp_path, cpu=host)
        assert "(52)" not in tiled_reduction.apply(host_func, host_target).mod.script()
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    loop = _hottest_loop(_assembly(lib))
    assert re.search(r"fmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[\d\]", loop), loop
    assert not re.search(r"\b(ldr|ldp)\s+s\d+|ld1r", loop), loop


def _assembly(lib) -> str:
    """The assembly of a compiled kernel (the module of the executable that has it)."""
    for module in [lib.mod, *lib.mod.imports]:
        try:
            return module.inspect_source("asm")
        except Exception:  # noqa: BLE001 - a module with no assembly (the host-side wrapper)
            continue
    raise AssertionError("no module with assembly")


def _hottest_loop(asm: str) -> str:
    """The single-block loop (a label, then instructions up to a branch back to it) with the most FMAs."""
    parts = re.split(r"^(\.LBB\w+):$", asm, flags=re.M)  # [before, label, block, label, block, ...]
    loops = []
    for label, block in zip(parts[1::2], parts[2::2]):
        back = re.search(rf"^\s+b(\.\w+)?\s+{re.escape(label)}$", block, flags=re.M)
        if back:
            loops.append(block[:back.end()])
    return max(loops, key=lambda body: body.count("fmla"), default="")


@pytest.mark.parametrize("case", ["conv1x1_gelu_rolled", "depthwise_gelu_rolled"])
def test_aarch64_gelu_epilogue_is_a_loop(case, tmp_path):
    """On AArch64 a GELU epilogue (fast_gelu: its constants are scalar parameters) is computed after the tile's
    accumulators are copied out, in a loop of two vectors an iteration: the compiled kernel has the GELU's
    division twice (LLVM unrolled the whole tile's: 16 times), its constants kept in registers. x86
    keeps the epilogue on the accumulators (numerics: the onnxruntime and qemu tests)."""
    import tvm

    func, target = _case_kernel(case, tmp_path, cpu=get_target("rpi4").cpu)
    sch = tiled_reduction.apply(func, target)
    script = sch.mod.script()
    assert re.search(r"T\.unroll\(T\.int64\(2\)\):\s+for \w+ in T\.vectorized\(T\.int64\(4\)\):\s+"
                     r"with T\.sblock\(\"T_fast_gelu\"\)", script), script[-3000:]
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    asm = _assembly(lib)
    assert asm.count("fdiv\t") == 2, asm.count("fdiv\t")
    gelu_loop = next(body for body in re.split(r"^\.LBB\w+:$", asm, flags=re.M) if "fdiv" in body)
    # the constants stay in registers: no reloads, no re-materialised splats but the clamp's two immediates
    assert not re.search(r"\b(ldr|ldp)\s+s\d+", gelu_loop) and len(re.findall(r"\bdup\b", gelu_loop)) <= 2, gelu_loop
    host_func, host_target = _case_kernel(case, tmp_path, cpu=AVX512)
    assert "T.unroll(T.int64(2))" not in tiled_reduction.apply(host_func, host_target).mod.script()


@pytest.mark.parametrize("case", ["depthwise_padded_per_channel", "depthwise_stride2", "depthwise_gelu_rolled"])
def test_aarch64_depthwise_weights_are_used_by_lane(case, tmp_path):
    """On AArch64 an NCHW depthwise conv's 3x3 weights (constant over a tile of rows x columns) are copied per
    tile into a register-sized buffer a vector at a time, the taps unrolled with the column taps outermost: the
    FMA loop of the compiled kernel uses the weights by lane and has no scalar float loads or ``ld1r``. x86
    broadcasts them from memory (numerics: the onnxruntime and qemu tests)."""
    import tvm

    func, target = _case_kernel(case, tmp_path, cpu=get_target("rpi4").cpu)
    sch = tiled_reduction.apply(func, target)
    script = sch.mod.script()
    assert tiled_reduction.LANE_OPERAND in script, script[:3000]
    assert re.search(r"for rx in T\.unroll\(T\.int64\(3\)\):\s+for \w+ in T\.unroll\(T\.int64\(\d+\)\):\s+"
                     r"for ry in T\.unroll\(T\.int64\(3\)\):", script), script[:4000]
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    # the basic block with the most FMAs: the unrolled taps (the tile loop's body also holds the epilogue)
    taps = max(re.split(r"^\.LBB\w+:$", _assembly(lib), flags=re.M), key=lambda body: body.count("fmla"))
    assert re.search(r"fmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[[1-3]\]", taps), taps
    assert not re.search(r"\b(ldr|ldp)\s+s\d+|ld1r", taps), taps
    host_func, host_target = _case_kernel(case, tmp_path, cpu=AVX512)
    assert tiled_reduction.LANE_OPERAND not in tiled_reduction.apply(host_func, host_target).mod.script()


def test_aarch64_channel_last_tile_buffer_keeps_channels_contiguous(tmp_path):
    """A channel-last depthwise conv's rolled GELU epilogue reads its tile buffer along the channels, the
    accumulators' layout: the copy out of the accumulators and the epilogue's loads are whole vectors (they
    were a transposing copy and lane-by-lane gathers, ``ldr s`` + 3 ``ld1 {v.s}[i]`` per vector)."""
    import tvm

    func, target = _case_kernel("depthwise_channel_last_gelu_rolled", tmp_path, cpu=get_target("rpi4").cpu)
    sch = tiled_reduction.apply(func, target)
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    asm = _assembly(lib)
    gelu_loop = next(body for body in re.split(r"^\.LBB\w+:$", asm, flags=re.M) if "fdiv" in body)
    assert not re.search(r"\b(ldr|ldp)\s+s\d+|ld1\s+\{", gelu_loop), gelu_loop


def test_aarch64_stride2_conv_loads_its_input_rows_as_vectors(tmp_path):
    """On AArch64 a stride-2 3x3 conv onto a 7x7 map (a tile of 7 output columns, the block axis) reads its
    padded input de-interleaved (``x % 2, x // 2``): the 7 columns' 3 taps of an input row are 2 x 8 values,
    copied a vector at a time and used by lane. In the FMA loop of the compiled kernel one scalar float load is
    left per input row (LLVM loads the 7 values used of the odd phase as 4 + 2 + 1) where each tap was one
    ``ldr s`` (21 per row, 42 FMAs). x86 reads the padded input as it is (numerics: the onnxruntime and qemu
    tests)."""
    import tvm

    func, target = _case_kernel("conv3x3_stride2_packed", tmp_path, cpu=get_target("rpi4").cpu)
    sch = tiled_reduction.apply(func, target)
    script = sch.mod.script()
    assert re.search(r"pad_temp = T\.sblock_alloc_buffer\(\(.*T\.int64\(2\), T\.int64\(8\)\)\)$", script, re.M), \
        script[:3000]
    assert tiled_reduction.LANE_OPERAND in script
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    loop = _hottest_loop(_assembly(lib))
    fmla = re.findall(r"fmla\s+v\d+\.4s, v\d+\.4s, v\d+\.s\[\d\]", loop)
    scalar = re.findall(r"\b(?:ldr|ldur|ldp)\s+s\d+|ld1r", loop)
    assert fmla and len(scalar) * 32 <= len(fmla), loop
    host_func, host_target = _case_kernel("conv3x3_stride2_packed", tmp_path, cpu=AVX512)
    assert tiled_reduction.LANE_OPERAND not in tiled_reduction.apply(host_func, host_target).mod.script()


def test_window_counts_leave_the_padding_out():
    counts = window_counts(7, 3, 1, 1, 1)
    assert counts.tolist() == [2, 3, 3, 3, 3, 3, 2]
    assert window_counts(8, 3, 2, 1, 0).tolist() == [2, 3, 3, 3]
    padded = np.pad(np.ones(8), (1, 0))  # the same, counted on a padded row
    assert [padded[i * 2:i * 2 + 3].sum() for i in range(4)] == [2, 3, 3, 3]


@pytest.mark.parametrize("case", ["pool_mixer_28", "pool_mixer_14"])
def test_aarch64_pooling_sums_windows_a_vector_at_a_time(case, tmp_path):
    """On AArch64 the pooling kernel multiplies by a constant ``1 / count`` map (a [H, W] parameter) and sums
    each window over a materialised padded input, a row tile at a time, with no bounds test in the sum
    (numerics: the qemu test below); x86 keeps TVM's pooling (the count computed per output)."""
    func, target = _case_kernel(case, tmp_path, cpu=get_target("rpi4").cpu)
    size = int(case.rsplit("_", 1)[1])
    assert [int(d) for d in func.params[1].ty.shape] == [size, size]
    script = schedule_func(func, target)[1].script()
    update = script[script.index('T.sblock("pool_sum_update")') - 400:script.index('T.sblock("pool_sum_update")')]
    assert "T.vectorized" in update and "if_then_else" not in script.split('T.sblock("pool_sum_update")')[1]
    host_func, _ = _case_kernel(case, tmp_path)
    assert len(host_func.params) == len(func.params) - 1  # no 1 / count map on x86


def test_compiled_upsample_interpolates_rows_first():
    """On AArch64 and x86 alike the compiled 2x upsample's rows are interpolated once per map into a small
    buffer, and the columns' interpolation (two rows, plain vector loads) is computed inside the GELU instead of
    stored per map (numerics: the onnxruntime test above and the qemu test below)."""
    import tempfile
    from pathlib import Path

    for cpu in (get_target("rpi4").cpu, AVX512):
        func, target = _case_kernel("upsample_gelu", Path(tempfile.mkdtemp()), cpu=cpu)
        script = schedule_func(func, target)[1].script()
        assert 'upsample2x_rows_local = T.sblock_alloc_buffer' in script and "upsample2x_intermediate" not in script


def test_avx512_schedules_the_rows_first_upsample_per_map():
    """The rows-first 2x upsample (``upsample.upsample2x_bilinear(separable=True)``) + GELU gets the same
    schedule on AVX-512 as on AArch64 (rows per map into a small buffer, the columns inside the GELU), and the
    same result to the bit as the one-stage upsample. Timed on Zen 4 (1024 x 7x7 -> 14x14 + GELU, builds of
    the two forms taking turns in one process): 0.404 -> 0.197 ms."""
    import tvm
    from tvm import te

    from edgevit.backends.cpu_schedules import elementwise
    from edgevit.backends.upsample import upsample2x_bilinear

    data = te.placeholder((1, 32, 7, 7), name="x")
    x = np.random.default_rng(0).standard_normal((1, 32, 7, 7)).astype(np.float32) * 3
    target = tvm_compiler.make_target(AVX512.tvm)
    results = []
    for separable in (True, False):
        up = upsample2x_bilinear(data, separable=separable)
        out = te.compute(up.shape, lambda *i: up(*i) * (tvm.tirx.erf(up(*i) * 0.7071) + 1.0) * 0.5, name="gelu")
        sch = elementwise.apply(te.create_prim_func([data, out]), target)
        script = sch.mod.script()
        if separable:
            assert "upsample2x_rows_local = T.sblock_alloc_buffer" in script and "upsample2x_intermediate" not in script
        buffers = [tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros((1, 32, 14, 14), np.float32))]
        tvm.compile(sch.mod, target="llvm")(*buffers)
        results.append(buffers[1].numpy())
    np.testing.assert_array_equal(results[0], results[1])


#: What the qemu test runs: the lane kernels, the AArch64 pooling and upsample, the rolled GELU epilogues.
QEMU_CASES = LANE_CASES + ["pool_mixer_28", "pool_mixer_14", "upsample_gelu", "conv1x1_gelu_rolled",
                          "depthwise_gelu_rolled", "depthwise_padded_per_channel", "depthwise_stride2",
                          "depthwise_channel_last_gelu_rolled"]


@pytest.mark.qemu
def test_aarch64_lane_kernels_match_onnxruntime(tmp_path):
    """The cases above built for rpi4 and run under qemu: numerics as on the host."""
    from edgevit import emulation
    from edgevit.compiler import compile_for_target
    from edgevit.runtime.artifact import Artifact

    python = emulation.prepare("aarch64")
    for case in QEMU_CASES:
        model = load_model(CASES[case][0](tmp_path / f"{case}.onnx"))
        compile_for_target(model, get_target("rpi4"), tmp_path / f"{case}.tar")
        inputs = random_inputs(model.inputs, 0)
        with Artifact.open(tmp_path / f"{case}.tar") as artifact:
            outputs, _ = emulation.run_artifact(python, artifact.dir, inputs)
        result = compare(outputs, run_onnxruntime(model.onnx_path, inputs))
        assert result.ok, (case, result)
