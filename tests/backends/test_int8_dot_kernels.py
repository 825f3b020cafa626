"""The int8 dot-product kernels (``edgevit.backends.int8_kernels``): bit-exact int32 against numpy integer math
on small shapes, on the instruction each target selects (x86 VNNI here; aarch64 ``sdot`` for rpi5, run under
qemu), and which targets select which instruction."""

import subprocess

import numpy as np
import pytest
from tvm import relax

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_kernels import dot_kernel_for, emit_conv, emit_matmul
from edgevit.targets import get_target


def conv_reference(xq, wq, strides, padding, dilation, zx):
    """int32 NCHW convolution of int8 values, padded with the zero point ``zx`` (numpy, int64 accumulation)."""
    top, left, bottom, right = padding
    x = np.pad(xq.astype(np.int64), [(0, 0), (0, 0), (top, bottom), (left, right)], constant_values=zx)
    f, c, kh, kw = wq.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((1, f, oh, ow), np.int64)
    for ry in range(kh):
        for rx in range(kw):
            window = x[0, :, ry * dh:ry * dh + sh * (oh - 1) + 1:sh, rx * dw:rx * dw + sw * (ow - 1) + 1:sw]
            out[0] += np.einsum("fc,chw->fhw", wq[:, :, ry, rx].astype(np.int64), window)
    return out


def _conv_module(x_shape, wq, strides, padding, dilation, zx, dot, out_size):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = emit_conv(bb, dot, x, wq, zx, strides, padding, dilation, out_size)
            assert acc is not None
            out = bb.emit_output(bb.emit(acc))
        bb.emit_func_output(out)
    return bb.get()


def _matmul_module(x_shape, wq, dot):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = emit_matmul(bb, dot, x, wq)
            assert acc is not None
            out = bb.emit_output(bb.emit(acc))
        bb.emit_func_output(out)
    return bb.get()


#: (input NCHW, weights OIHW, strides, padding t/l/b/r, dilation): a 1x1 conv, a padded 3x3 with 3 input
#: channels (padded to 4), a stride-2 3x3, one with output channels no multiple of the register tile, and two
#: whose output pixels (49, 196) make no whole 16-lane vectors (padded, cropped by the caller).
CONVS = [((1, 8, 8, 8), (24, 8, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
         ((1, 3, 8, 8), (16, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
         ((1, 12, 16, 8), (20, 12, 3, 3), (2, 1), (1, 1, 1, 1), (1, 1)),
         ((1, 16, 8, 8), (7, 16, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
         ((1, 8, 7, 7), (16, 8, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
         ((1, 4, 14, 14), (8, 4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))]


def _random_int8(rng, shape, low=-128):
    return rng.integers(low, 128, size=shape, dtype=np.int8)


def _host():
    cpu = get_target("host").require_cpu()
    target = tvm_compiler.make_target(cpu.tvm)
    dot = dot_kernel_for(target)
    if dot is None:
        pytest.skip("this CPU has no int8 dot-product instruction edgevit uses")
    return cpu, dot


def _run_on_host(mod, cpu, x):
    import tvm
    from tvm.runtime import vm

    executable = tvm_compiler.build(mod, cpu)
    machine = vm.VirtualMachine(executable, tvm.runtime.cpu())
    return machine["main"](tvm.runtime.tensor(x)).numpy(), executable


def _assembly(executable) -> str:
    def sources(module):
        try:
            text = [module.inspect_source("asm")]
        except Exception:  # noqa: BLE001 - modules without assembly (the VM's own)
            text = []
        return text + [s for m in module.imports for s in sources(m)]
    return "".join(sources(executable.mod))


@pytest.mark.parametrize("case", CONVS, ids=["1x1", "3x3-pad-c3", "3x3-stride2", "f7", "7x7-map", "14x14-map"])
def test_conv_matches_numpy_on_host(case):
    cpu, dot = _host()
    x_shape, w_shape, strides, padding, dilation = case
    rng = np.random.default_rng(len(w_shape) + sum(w_shape))
    xq, wq, zx = _random_int8(rng, x_shape), _random_int8(rng, w_shape, -127), -7
    expected = conv_reference(xq, wq, strides, padding, dilation, zx)
    out_size = expected.shape[2:]
    got, executable = _run_on_host(_conv_module(x_shape, wq, strides, padding, dilation, zx, dot, out_size), cpu, xq)
    if got.ndim == 3:  # pixels padded to whole vectors
        got = got[:, :, :expected.shape[2] * expected.shape[3]].reshape(expected.shape)
    # the kernel adds ``shift`` to every activation (uint8 operand): Σ (x + shift) w
    shift = dot.shift * wq.reshape(wq.shape[0], -1).astype(np.int64).sum(1).reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(got, expected + shift)
    assert {"avx512vnni": "vpdpbusd", "sdot": "sdot"}[dot.isa] in _assembly(executable)


def test_matmul_matches_numpy_on_host():
    cpu, dot = _host()
    rng = np.random.default_rng(5)
    xq, wq = _random_int8(rng, (2, 12, 24)), _random_int8(rng, (24, 32), -127)
    got, _ = _run_on_host(_matmul_module(xq.shape, wq, dot), cpu, xq)
    expected = (xq.astype(np.int64) + dot.shift) @ wq.astype(np.int64)
    np.testing.assert_array_equal(got, expected)


def test_kernel_choice_is_by_cpu_feature():
    def choice(name):
        kernel = dot_kernel_for(tvm_compiler.make_target(get_target(name).require_cpu().tvm))
        return kernel.isa if kernel else None
    assert choice("rpi5") == "sdot"          # Cortex-A76, +dotprod
    assert choice("rpi4") == "neon"          # Cortex-A72: no dot product, smull/smlal/sadalp
    assert choice("zcu102") == "neon"        # Cortex-A53


_QEMU_SCRIPT = """
import sys
import numpy as np
import tvm
from tvm.runtime import vm
for library, x, out in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    machine = vm.VirtualMachine(tvm.runtime.load_module(library), tvm.runtime.cpu())
    np.save(out, machine["main"](tvm.runtime.tensor(np.load(x))).numpy())
"""


def _run_under_qemu(target, modules, inputs, tmp_path):
    """Build Relax modules for an aarch64 target and run each on its input under qemu (one emulated Python for
    all): the outputs and the disassembly of every library."""
    from edgevit import emulation

    cpu = get_target(target).require_cpu()
    python = emulation.prepare("aarch64")
    args, disassembly = [], []
    for i, (mod, x) in enumerate(zip(modules, inputs)):
        library = tmp_path / f"kernel{i}.so"
        tvm_compiler.export_library(tvm_compiler.build(mod, cpu), cpu, library)
        disassembly.append(subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(library)], check=True,
                                          capture_output=True, text=True).stdout)
        np.save(tmp_path / f"x{i}.npy", x)
        args += [str(library), str(tmp_path / f"x{i}.npy"), str(tmp_path / f"out{i}.npy")]
    (tmp_path / "run.py").write_text(_QEMU_SCRIPT)
    subprocess.run(python.command(str(tmp_path / "run.py"), *args), check=True, env=python.environment(),
                   timeout=900)
    return [np.load(tmp_path / f"out{i}.npy") for i in range(len(modules))], disassembly


def _activation_matmul_module(x_shape, y_shape, dot):
    from edgevit.backends.int8_kernels import emit_activation_matmul

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            # the right-hand operand: the same values as the left, transposed (both may hold -128)
            y = bb.emit(relax.op.permute_dims(x, [0, 2, 1]))
            acc = emit_activation_matmul(bb, dot, x, y)
            assert acc is not None
            out = bb.emit_output(bb.emit(acc))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.qemu
def test_neon_kernels_for_rpi4_match_numpy_under_qemu(tmp_path):
    """The Cortex-A72 kernels (int16 pair sums: ``smull``/``smlal``/``sadalp``) agree bit-exactly with numpy's
    int32 results under qemu: every conv of :data:`CONVS` (3x3 with 3 channels: an odd number of k-blocks) and
    one with -128 weights and activations (the exact ``smull``-only kernel), matmuls by constant weights in
    [-127, 127] with activations at -128 (the largest pair sums, 2·128·127) and by weights holding -128 (exact
    kernel), and a product of two activations full of -128 (where pair sums would overflow int16)."""
    dot = dot_kernel_for(tvm_compiler.make_target(get_target("rpi4").require_cpu().tvm))
    assert dot.isa == "neon" and dot.exact_intrin
    rng = np.random.default_rng(11)
    modules, inputs, expected = [], [], []
    for x_shape, w_shape, strides, padding, dilation in [*CONVS, CONVS[2]]:
        xq, wq, zx = _random_int8(rng, x_shape), _random_int8(rng, w_shape, -127), -7
        if len(modules) == len(CONVS):  # the stride-2 3x3 again, with weights and activations at -128
            xq[:] = -128
            wq[:, :, 0] = -128
            zx = -128
        reference = conv_reference(xq, wq, strides, padding, dilation, zx)
        modules.append(_conv_module(x_shape, wq, strides, padding, dilation, zx, dot, reference.shape[2:]))
        inputs.append(xq)
        expected.append(reference)
    extremes = np.full((2, 12, 24), -128, np.int8)
    extremes[1] = _random_int8(rng, (12, 24))
    pair_weights = np.where(rng.random((24, 32)) < 0.5, -127, 127).astype(np.int8)  # largest int16 pair sums
    exact_weights = _random_int8(rng, (24, 32))
    exact_weights[0, :4] = -128                                                       # the exact kernel
    for wq in (pair_weights, exact_weights):
        modules.append(_matmul_module(extremes.shape, wq, dot))
        inputs.append(extremes)
        expected.append(extremes.astype(np.int64) @ wq.astype(np.int64))
    modules.append(_activation_matmul_module(extremes.shape, extremes.shape[::-1], dot))
    inputs.append(extremes)
    expected.append(extremes.astype(np.int64) @ extremes.astype(np.int64).transpose(0, 2, 1))
    outputs, disassembly = _run_under_qemu("rpi4", modules, inputs, tmp_path)
    for got, want in zip(outputs, expected):
        if got.ndim == 3 and want.ndim == 4:  # conv pixels padded to whole vectors
            got = got[:, :, :want.shape[2] * want.shape[3]].reshape(want.shape)
        np.testing.assert_array_equal(got, want)
    assert all("sadalp" in text or "saddlp" in text for text in disassembly)
    assert "smlal" in disassembly[1] and "sadalp" in disassembly[1]  # the 3x3 conv: 10 k-blocks
    assert "smlal" not in disassembly[len(CONVS)]  # -128 weights: no int16 pair sums
    assert "smlal" not in disassembly[-1]  # -128 x -128 twice would overflow an int16 pair sum


@pytest.mark.qemu
def test_sdot_conv_kernels_for_rpi5_match_numpy_under_qemu(tmp_path):
    """The Cortex-A76 conv kernels agree bit-exactly with numpy under qemu: output channels in multiples of 4
    on ``sdot`` by element (one 16-byte weight load for 4 channels), the 7-channel conv on the broadcast form.
    A 1x1 conv with K = 64 shows the by-element form in its loop (with few k-blocks LLVM may hoist the weights'
    lane copies out of the pixel loop instead)."""
    dot = dot_kernel_for(tvm_compiler.make_target(get_target("rpi5").require_cpu().tvm))
    assert dot.isa == "sdot" and dot.conv_rows_intrin
    rng = np.random.default_rng(13)
    modules, inputs, expected = [], [], []
    deep = ((1, 64, 8, 8), (32, 64, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1))
    for x_shape, w_shape, strides, padding, dilation in [*CONVS, deep]:
        xq, wq, zx = _random_int8(rng, x_shape), _random_int8(rng, w_shape), 5
        reference = conv_reference(xq, wq, strides, padding, dilation, zx)
        modules.append(_conv_module(x_shape, wq, strides, padding, dilation, zx, dot, reference.shape[2:]))
        inputs.append(xq)
        expected.append(reference)
    outputs, disassembly = _run_under_qemu("rpi5", modules, inputs, tmp_path)
    for got, want in zip(outputs, expected):
        if got.ndim == 3:  # conv pixels padded to whole vectors
            got = got[:, :, :want.shape[2] * want.shape[3]].reshape(want.shape)
        np.testing.assert_array_equal(got, want)
    assert ".4b[" in disassembly[-1] and ".4b[" not in disassembly[3]  # 32 channels; 7 channels


@pytest.mark.qemu
def test_sdot_matmul_kernels_for_rpi5_match_numpy_under_qemu(tmp_path):
    """The Cortex-A76 matmul kernels agree bit-exactly with numpy under qemu: K = 64 by constant weights and a
    product of two activations with K = 32 (4 k-blocks per call, the activations by lane: ``sdot ... .4b[``),
    and K = 20 (5 k-blocks: the broadcast form, ``ld1r``), with activations and weights at -128."""
    dot = dot_kernel_for(tvm_compiler.make_target(get_target("rpi5").require_cpu().tvm))
    assert dot.isa == "sdot" and dot.matmul_lane_intrin
    rng = np.random.default_rng(17)
    modules, inputs, expected = [], [], []
    for k in (64, 20):
        xq, wq = _random_int8(rng, (2, 12, k)), _random_int8(rng, (k, 32))
        xq[0, 0], wq[:, 0] = -128, -128
        modules.append(_matmul_module(xq.shape, wq, dot))
        inputs.append(xq)
        expected.append(xq.astype(np.int64) @ wq.astype(np.int64))
    xq = _random_int8(rng, (2, 8, 32))
    modules.append(_activation_matmul_module(xq.shape, xq.shape[::-1], dot))
    inputs.append(xq)
    expected.append(xq.astype(np.int64) @ xq.astype(np.int64).transpose(0, 2, 1))
    outputs, disassembly = _run_under_qemu("rpi5", modules, inputs, tmp_path)
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    assert ".4b[" in disassembly[0] and ".4b[" in disassembly[2]
    assert ".4b[" not in disassembly[1] and "ld1r" in disassembly[1]


@pytest.mark.qemu
def test_sdot_build_for_rpi5_agrees_with_onnxruntime_under_qemu(tmp_path, capsys):
    """A QDQ model (padded 3x3 conv, 1x1 conv, Gemm) built for rpi5 uses ``sdot`` and, run under qemu, agrees
    with onnxruntime on x86 by the int8 rule (within one output step here)."""
    import json

    from cli_helpers import run_cli
    from test_int8_kernels import residual_cnn_onnx

    from edgevit.compiler import compile_for_target
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached
    from edgevit.runtime.artifact import Artifact

    model = quantize_cached(load_model(str(residual_cnn_onnx(tmp_path / "residual.onnx"))),
                            QuantizeSettings("fashion-mnist", 8, per_channel=True))
    compile_for_target(model, get_target("rpi5"), tmp_path / "m.tar", command="pytest")
    with Artifact.open(tmp_path / "m.tar") as artifact:
        disassembly = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(artifact.library)], check=True,
                                     capture_output=True, text=True).stdout
    assert "sdot" in disassembly
    code, out, err = run_cli(capsys, "run", tmp_path / "m.tar", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["device"] == "qemu-aarch64"
    assert result["verify"]["ok"] and result["verify"]["max_steps"] <= 1, result["verify"]


def _agrees_with_onnxruntime(model, tmp_path) -> None:
    """The host build of a QDQ model agrees with onnxruntime on the same file within one output step (3 inputs)."""
    from edgevit.compiler import compile_for_target
    from edgevit.quantize import compare_int8, output_steps
    from edgevit.reference import random_inputs, run_onnxruntime
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.runner import run_artifact

    compile_for_target(model, get_target("host"), tmp_path / "m.tar", command="pytest")
    with Artifact.open(tmp_path / "m.tar") as artifact:
        for seed in range(3):
            inputs = random_inputs(model.inputs, seed)
            outputs, _ = run_artifact(artifact, inputs)
            result = compare_int8(outputs, run_onnxruntime(model.onnx_path, inputs), output_steps(model.load()))
            assert result.ok and result.max_steps <= 1, result.summary()


def silu_cnn_onnx(path):
    """conv 1x1 -> SiLU (x * sigmoid(x)) -> conv 1x1 -> Flatten -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(6)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
            for n, s in (("w1", (16, 8, 1, 1)), ("b1", (16,)), ("w2", (8, 16, 1, 1)), ("fc", (10, 512)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("Sigmoid", ["c1"], ["s"]),
             helper.make_node("Mul", ["c1", "s"], ["a"]), helper.make_node("Conv", ["a", "w2"], ["c2"]),
             helper.make_node("Flatten", ["c2"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_silu_becomes_a_table_and_agrees_with_onnxruntime(tmp_path):
    """SiLU between quantize steps is a 256-entry lookup (no float sigmoid left); the build agrees with
    onnxruntime by the int8 rule."""
    from edgevit.backends.int8_tables import Int8ElementwiseTables
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    model = quantize_cached(load_model(str(silu_cnn_onnx(tmp_path / "silu.onnx"))),
                            QuantizeSettings("fashion-mnist", 8, per_channel=True))
    mod = Int8ElementwiseTables()(tvm_compiler.import_onnx(model.load(), model.inputs))
    script = mod.script(show_meta=False)
    assert script.count("cls.int8_lookup") == 1 and "R.sigmoid" not in script and "R.multiply" not in script
    _agrees_with_onnxruntime(model, tmp_path)


def gelu_cnn_onnx(path):
    """conv 1x1 -> GELU as ``x · 0.5 · (1 + erf(x / √2))`` (its constants quantized as QDQ scalars) -> conv 1x1
    -> Flatten -> Gemm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(9)
    init = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
            for n, s in (("w1", (16, 8, 1, 1)), ("b1", (16,)), ("w2", (8, 16, 1, 1)), ("fc", (10, 512)))]
    init += [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("sqrt2", np.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("Div", ["c1", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "one"], ["p"]),
             helper.make_node("Mul", ["c1", "p"], ["m"]), helper.make_node("Mul", ["m", "half"], ["g"]),
             helper.make_node("Conv", ["g", "w2"], ["c2"]), helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=init)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def test_gelu_with_quantized_constants_becomes_one_table_and_agrees_with_onnxruntime(tmp_path):
    """GELU's chain (erf, + 1, · x, · 0.5: its constants are dequantized int8 scalars, each step between quantize
    steps) is a function of the int8 input alone: one 256-entry lookup."""
    from edgevit.backends.int8_tables import Int8ElementwiseTables
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    model = quantize_cached(load_model(str(gelu_cnn_onnx(tmp_path / "gelu.onnx"))),
                            QuantizeSettings("fashion-mnist", 8, per_channel=True))
    assert "DequantizeLinear" in [n.op_type for n in model.load().graph.node if n.input[0] == "one_quantized"]
    mod = Int8ElementwiseTables()(tvm_compiler.import_onnx(model.load(), model.inputs))
    script = mod.script(show_meta=False)
    assert script.count("cls.int8_lookup") == 1 and "R.erf" not in script and "R.multiply" not in script
    _agrees_with_onnxruntime(model, tmp_path)


def test_activation_matmul_uses_the_dot_kernel_and_agrees_with_onnxruntime(tmp_path):
    """x @ transpose(relu(x)) (both int8 activations with zero points) on the dot-product kernel: the zero-point
    terms are right (agrees with onnxruntime)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    _host()
    fc = numpy_helper.from_array((np.random.default_rng(7).standard_normal((10, 2048)) * 0.2).astype(np.float32), "fc")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "t"], ["m"]), helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=[fc])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8),
              str(tmp_path / "attn.onnx"))
    model = quantize_cached(load_model(str(tmp_path / "attn.onnx")), QuantizeSettings("fashion-mnist", 8, True))
    cpu = get_target("host").require_cpu()
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    assert any("int8_dot_matmul" in gv.name_hint for gv in fused.functions)
    _agrees_with_onnxruntime(model, tmp_path)


def test_softmax_becomes_an_integer_kernel_and_agrees_with_onnxruntime(tmp_path):
    """quantize(softmax(dequantize(x))) runs on the int8 values with a table of exponentials."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgevit.backends.int8_tables import Int8ElementwiseTables
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_cached

    fc = numpy_helper.from_array((np.random.default_rng(8).standard_normal((10, 2048)) * 0.2).astype(np.float32), "fc")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "t"], ["m"]), helper.make_node("Softmax", ["m"], ["s"], axis=-1),
             helper.make_node("MatMul", ["s", "x"], ["v"]), helper.make_node("Flatten", ["v"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=[fc])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8),
              str(tmp_path / "softmax.onnx"))
    model = quantize_cached(load_model(str(tmp_path / "softmax.onnx")), QuantizeSettings("fashion-mnist", 8, True))
    script = Int8ElementwiseTables()(tvm_compiler.import_onnx(model.load(), model.inputs)).script(show_meta=False)
    assert "int8_softmax" in script and "R.nn.softmax" not in script
    _agrees_with_onnxruntime(model, tmp_path)
