"""int8 QDQ models on the FPGA backend (edgevit/hls/qdq_import.py, requant.py, hw/include/edgevit/qlinear.h):
the integer requantization against onnxruntime's float32 rule, the golden model against onnxruntime on a small
quantized CNN, the C-simulation against the golden model, and QDQ files the importer must refuse or send to the
CPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgevit.datasets import fashion_mnist
from edgevit.errors import ModelImportError
from edgevit.hls import csim, qdq_import, requant, synth_check
from edgevit.hls.ops import program_units
from edgevit.hls.torch_import import to_accel_layout
from edgevit.reference import onnxruntime_session

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402


def _ort_rule(acc, m, zy, relu=False):
    """onnxruntime's requantization (MlasRequantizeOutput): float32(acc) * M in float32, round half to even."""
    y = np.rint(np.float32(acc.astype(np.float32) * np.float32(m)).astype(np.float64)).astype(np.int64)
    lo = max(-128 - zy, 0) if relu else -128 - zy
    return np.clip(y, lo, 127 - zy)


def _cases():
    rng = np.random.default_rng(7)
    acc = np.concatenate([rng.integers(-2**31, 2**31, 3000), rng.integers(-2**20, 2**20, 3000),
                          rng.integers(-300, 300, 1000)])
    m = np.float32(10.0 ** rng.uniform(-7, 0.5, acc.size))
    ties = np.arange(-600, 600)   # acc * 2^-k lands on half steps: round half to even decides
    acc = np.concatenate([acc, ties, ties * 3 + 1, NEAR_TIES])
    m = np.concatenate([m, np.full(ties.size, np.float32(0.5)), np.full(ties.size, np.float32(0.25)),
                        np.full(NEAR_TIES.size, np.float32(2.0 ** -25))])
    return acc.astype(np.int64), m.astype(np.float32)


# acc * 2^-25 = y + 1/2 + 2^-25: float32(acc) drops the last 1, so onnxruntime rounds the tie to even
NEAR_TIES = (2 * np.arange(-60, 60) + 1) * 2 ** 24 + 1


def test_integer_requantization_is_onnxruntimes_float32_rule():
    acc, m = _cases()
    m0, n = requant.multiplier(m)
    for zy, relu in ((0, False), (-128, True), (37, False), (-5, True)):
        got = np.array([requant.requantize(a, b, c, zy, relu) for a, b, c in zip(acc, m0, n)])
        want = np.array([_ort_rule(np.array([a]), b, zy, relu)[0] for a, b in zip(acc, m)])
        assert np.array_equal(got, want), int((got != want).sum())
    # single rounding of the exact product (no float32 steps) would differ from onnxruntime on these
    exact = np.clip(np.rint(NEAR_TIES * 2.0 ** -25 + 2.0 ** -40), -128, 127)
    assert (exact != _ort_rule(NEAR_TIES, np.float32(2.0 ** -25), 0)).sum() == NEAR_TIES.size // 2


def test_requant_header_matches_golden(tmp_path):
    acc, m = _cases()
    m0, n = requant.multiplier(m)
    exe = csim.build([Path(__file__).parent / "data" / "requant_harness.cpp"], [])
    zy = np.random.default_rng(3).integers(-128, 128, acc.size)
    relu = np.arange(acc.size) % 2
    lines = "".join(f"{a} {b} {c} {z} {r}\n" for a, b, c, z, r in zip(acc, m0, n, zy, relu))
    out = subprocess.run([str(exe)], input=lines, capture_output=True, text=True, check=True).stdout.split()
    want = [requant.requantize(a, b, c, int(z), bool(r)) for a, b, c, z, r in zip(acc, m0, n, zy, relu)]
    assert [int(v) for v in out] == [int(v) for v in want]


def test_multiplier_refuses_bad_scales():
    for bad in (0.0, -1.0, np.nan, np.inf, 1e9, 1e-30):
        with pytest.raises(ValueError):
            requant.multiplier(bad)


class _Small(torch.nn.Module):
    """conv 3x3 stride 2 -> ReLU [-> MaxPool] -> conv 3x3 -> ReLU -> conv 1x1 [-> SiLU] -> mean -> Linear."""

    def __init__(self, silu=False, maxpool=False):
        super().__init__()
        nn = torch.nn
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
        self.fc, self.silu, self.maxpool = nn.Linear(16, 10), silu, maxpool

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = self.c3(torch.relu(self.c2(torch.nn.functional.max_pool2d(x, 2) if self.maxpool else x)))
        return self.fc((x * torch.sigmoid(x) if self.silu else x).mean((2, 3)))


class _Residual(torch.nn.Module):
    """A MobileNetV2-style block: conv 3x3 -> SiLU -> (1x1 -> ReLU6-free depthwise 3x3 -> 1x1) + residual ->
    mean -> Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.expand = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 16, 1)
        self.dw, self.project, self.fc = nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 8, 1), nn.Linear(8, 10)

    def forward(self, x):
        x = torch.nn.functional.silu(self.stem(x))
        return self.fc((x + self.project(torch.relu(self.dw(torch.relu(self.expand(x)))))).mean((2, 3)))


class _PatchTokens(torch.nn.Module):
    """A ViT's patch embedding: conv 4x4 stride 4, flattened and transposed into tokens, then a Linear."""

    def __init__(self):
        super().__init__()
        self.patch, self.fc = torch.nn.Conv2d(1, 16, 4, 4), torch.nn.Linear(16, 10, bias=False)

    def forward(self, x):
        return self.fc(self.patch(x).flatten(2).transpose(1, 2))


class _Tokens(torch.nn.Module):
    """Tokens [1, 16, 24] through two MatMuls (Linear without bias) and a ReLU."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(24, 32, bias=False), torch.nn.Linear(32, 10, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _quantized(module, shape, path, calibration):
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_model

    torch.manual_seed(0)
    net = module.eval()
    torch.onnx.export(net, torch.randn(*shape), str(path.with_suffix(".f32.onnx")), opset_version=17, dynamo=False)
    quantize_model(load_model(str(path.with_suffix(".f32.onnx"))), QuantizeSettings(calibration, 16, True), path)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    return _quantized(_Small(), (1, 1, 28, 28), tmp_path_factory.mktemp("qdq") / "small_int8.onnx", "fashion-mnist")


@pytest.fixture(scope="module")
def images():
    return fashion_mnist("test", 24)[0]


def qdq_import_output_step(model):
    """The scale of the DequantizeLinear producing the model's output."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    return float(consts[node.input[1]])


def _ort_output_steps(model, images, fmt):
    sess = onnxruntime_session(model.SerializeToString())
    outs = [sess.run(None, {sess.get_inputs()[0].name: x[None]})[0] for x in images]
    return np.asarray([np.rint(o.astype(np.float64) / fmt.scale).ravel() for o in outs]).astype(np.int64)


def test_small_cnn_maps_whole_and_golden_matches_onnxruntime(small, images):
    result = qdq_import.lower_qdq(small, images[0][None])
    prog = result.program
    assert result.cut is None and result.accel_nodes == result.total_nodes
    assert [l.kind for l in prog.layers] == ["im2col", "qlinear", "im2col", "qlinear", "qlinear", "qavgpool",
                                             "qlinear"]
    golden = np.asarray([prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].ravel()
                         for x in images])
    ort = _ort_output_steps(small, images, prog.formats[prog.output])
    # onnxruntime's QLinearConv / QGemm requantize as requant.py does; ReduceMean runs in float32 there, so a
    # value may differ by one step near a tie (the documented rule); measured: none on 200 test images
    assert np.abs(golden - ort).max() <= 1
    assert (golden == ort).mean() >= 0.99


def test_small_cnn_csim_is_bit_exact_with_golden(small, images, tmp_path):
    result = qdq_import.lower_qdq(small, images[0][None])
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [x[None] for x in images[:6]])
    _, probes = csim.simulate_project(out, probes=True)
    prog = result.program
    mismatches = 0
    for x, probe in zip(images[:6], probes):
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        mismatches += sum(int((probe[name] != env[name].ravel()).sum()) for name in prog.shapes)
    assert mismatches == 0
    assert (out / "program.json").exists() and not (out / "cpu_tail.json").exists()


def test_matmul_tokens_map(tmp_path, images):
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(1)
    for k in range(8):
        np.save(data / f"{k}.npy", rng.standard_normal((1, 16, 24)).astype(np.float32))
    model = _quantized(_Tokens(), (1, 16, 24), tmp_path / "tokens_int8.onnx", str(data))
    xs = [rng.standard_normal((1, 16, 24)).astype(np.float32) for _ in range(4)]
    result = qdq_import.lower_qdq(model, xs[0])
    prog = result.program
    assert result.cut is None and [l.kind for l in prog.layers] == ["qlinear", "qlinear"]
    sess = onnxruntime_session(model.SerializeToString())
    for x in xs:
        got = prog.run_fixed(prog.quantize_input(x[0]))[prog.output]
        want = np.rint(sess.run(None, {sess.get_inputs()[0].name: x})[0][0] / prog.formats[prog.output].scale)
        assert np.abs(got - want).max() <= 1


def test_patch_embedding_views_are_found_by_value(tmp_path, images):
    model = _quantized(_PatchTokens(), (1, 1, 28, 28), tmp_path / "patch_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert result.cut is None and [l.kind for l in prog.layers] == ["im2col", "qlinear", "qlinear"]
    sess = onnxruntime_session(model.SerializeToString())
    for x in images[:8]:
        got = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].reshape(-1, 10)
        want = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0][0] / prog.formats[prog.output].scale
        assert np.abs(got - np.rint(want)).max() <= 1


# --- QDQ files the importer must refuse, or whose nodes go to the CPU with the reason ----------------------------

def _edited(model, name, value):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for k, t in enumerate(m.graph.initializer):
        if t.name == name:
            m.graph.initializer[k].CopyFrom(numpy_helper.from_array(np.asarray(value), name))
            return m
    raise KeyError(name)


def _cli(model, tmp_path, capsys):
    from edgevit.cli import main

    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    code = main(["hls", str(path), "--board", "zcu102", "-o", str(tmp_path / "prj")])
    return code, capsys.readouterr()


@pytest.mark.parametrize("value", [np.float32(-0.5), np.float32(np.nan), np.float32(0.0), np.float32(np.inf)])
def test_bad_scales_are_one_error_line(small, tmp_path, capsys, value):
    code, out = _cli(_edited(small, "/Relu_output_0_scale", value), tmp_path, capsys)
    assert code == ModelImportError.exit_code == 4
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevit: error:") and "positive finite" in lines[0]
    assert "Traceback" not in out.err


def test_zero_point_out_of_range_is_one_error_line(small, tmp_path, capsys):
    code, out = _cli(_edited(small, "/Relu_output_0_zero_point", np.int32(300)), tmp_path, capsys)
    assert code == 4
    assert out.err.startswith("edgevit: error:") and "300" in out.err and len(out.err.strip().splitlines()) == 1


def test_per_axis_activation_scales_go_to_the_cpu(small, images):
    c = 16   # c3's output: per-channel scales on an activation
    model = _edited(_edited(small, "/c3/Conv_output_0_scale", np.full(c, 0.004, np.float32)),
                    "/c3/Conv_output_0_zero_point", np.zeros(c, np.int8))
    for node in model.graph.node:
        if node.input and node.input[0] in ("/c3/Conv_output_0", "/c3/Conv_output_0_QuantizeLinear_Output"):
            node.attribute.append(onnx.helper.make_attribute("axis", 1))
    result = qdq_import.lower_qdq(model, images[0][None])
    op, _, why = result.unsupported
    assert op == "Conv" and "per-axis" in why
    assert [l.kind for l in result.program.layers] == ["im2col", "qlinear", "im2col", "qlinear"]
    assert result.cut is not None


def test_per_axis_scales_on_the_first_layer_are_one_error_line(small, tmp_path, capsys):
    model = _edited(_edited(small, "/Relu_output_0_scale", np.full(8, 0.01, np.float32)), "/Relu_output_0_zero_point",
                    np.zeros(8, np.int8))
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] == "/Relu_output_0_scale":
            node.attribute.append(onnx.helper.make_attribute("axis", 1))
    code, out = _cli(model, tmp_path, capsys)
    assert code == 4 and "per-axis" in out.err and len(out.err.strip().splitlines()) == 1


def test_uint8_weights_go_to_the_cpu(small, images):
    w = numpy_helper.to_array(next(t for t in small.graph.initializer if t.name == "c2.weight_quantized"))
    model = _edited(_edited(small, "c2.weight_quantized", (w.astype(np.int16) + 128).astype(np.uint8)),
                    "c2.weight_zero_point", np.full(16, 128, np.uint8))
    result = qdq_import.lower_qdq(model, images[0][None])
    assert result.unsupported[0] == "Conv" and "uint8 weights" in result.unsupported[2]
    assert [l.kind for l in result.program.layers] == ["im2col", "qlinear"]


def test_silu_is_onnxruntimes_table(tmp_path, images):
    model = _quantized(_Small(silu=True), (1, 1, 28, 28), tmp_path / "silu_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert result.cut is None and "qtable" in [l.kind for l in prog.layers]
    golden = np.asarray([prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].ravel()
                         for x in images])
    assert np.abs(golden - _ort_output_steps(model, images, prog.formats[prog.output])).max() <= 1
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [x[None] for x in images[:3]])
    sim, _ = csim.simulate_project(out)
    assert np.array_equal(np.asarray(sim), golden[:3])


def test_depthwise_and_residual_add(tmp_path, images):
    model = _quantized(_Residual(), (1, 1, 28, 28), tmp_path / "res_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert result.cut is None
    assert {"qdwconv", "qadd", "qtable"} <= {l.kind for l in prog.layers}
    golden = np.asarray([prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].ravel()
                         for x in images])
    # qadd's integer multipliers approximate onnxruntime's float32 QLinearAdd: within a step before the last
    # layers, which may carry it on
    assert np.abs(golden - _ort_output_steps(model, images, prog.formats[prog.output])).max() <= 2
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [x[None] for x in images[:3]])
    _, probes = csim.simulate_project(out, probes=True)
    for x, probe in zip(images[:3], probes):
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        assert all(np.array_equal(probe[name], env[name].ravel()) for name in prog.shapes)
    # the synthesis-mode check covers the int8 units; the top reaches exactly the units the estimator counts (no
    # float linear or depthwise unit)
    report = synth_check.require_synthesizable(out)
    assert report.units == program_units(l.kind for l in prog.layers)
    assert {"qdwconv_unit", "depthwise_unit<1>", "qadd", "qtable"} <= report.units
    assert not {"linear_unit", "depthwise_unit<0>"} & report.units


@pytest.mark.parametrize("li, lo, ld", [(3, 5, 3), (8, 16, 4), (8, 16, 8)])
def test_int8_units_at_other_lanes(tmp_path, images, monkeypatch, li, lo, ld):
    """The C++ must match the golden model at any lanes, odd ones included: token and weight tiles, partial k steps,
    LO beyond N, depthwise channel groups (LD = 8: one beat a pixel, the overlapped rows), and the depthwise and
    int8 linear units' loops are the estimator's."""
    from edgevit.hls import codegen, estimator, layer_table
    from edgevit.targets import get_target

    model = _quantized(_Residual(), (1, 1, 28, 28), tmp_path / "res_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    for layer in prog.layers:
        layer.attrs.update(li=li, lo=lo, ld=ld)
    monkeypatch.setattr(codegen, "lanes_of", lambda p: estimator.Lanes(li, lo, ld, 1))
    out = codegen.write_project(prog, tmp_path / "prj", get_target("zcu102").require_fpga(), "zcu102",
                                np.asarray([to_accel_layout(x[None]) for x in images[:2]]))
    assert f"LI = {li};" in (out / "config.h").read_text() and f"LD = {ld};" in (out / "config.h").read_text()
    _, probes = csim.simulate_project(out, probes=True)
    for x, probe in zip(images[:2], probes):
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        assert all(np.array_equal(probe[name], env[name].ravel()) for name in prog.shapes)
    (layer, d), = [(l, d) for l, d in zip(prog.layers, layer_table.build(prog).descriptors) if l.kind == "qdwconv"]
    loops = [t for t, *_ in estimator.depthwise_loops(*(d[f"d{n}"] for n in range(6)), estimator.Lanes(li, lo, ld, 1),
                                                       "b" in layer.params, True, 8) if t > 0]
    logged = [(l, d) for l, d in zip(prog.layers, layer_table.build(prog).descriptors)
              if l.kind in ("linear", "dwconv", "qdwconv", "im2col", "qlinear")]
    counted = probes[0]["unit_loops"].tolist()   # in call order
    assert len(counted) == len(logged)
    trips, count = counted[[l.kind for l, _ in logged].index("qdwconv")]
    assert count == len(loops) and abs(trips - sum(loops)) <= count
    lanes = estimator.Lanes(li, lo, ld, 1)
    for (layer, d), (trips, count) in zip(logged, counted):
        if layer.kind == "qlinear":   # qgemm_unit: the estimator's loops (a tile's beats within one per loop)
            loops = [t for t, *_ in estimator.qlinear_loops(d["d0"], d["d1"], d["d2"], lanes, "b" in layer.params,
                                                            bool(d["d3"]), 8) if t > 0]
            assert count == len(loops) and abs(trips - sum(loops)) <= count, (layer.name, trips, count, loops)


def test_board_driver_converts_int8_buffers_as_the_golden_model(small, images, tmp_path):
    """regmap.json marks int8 buffers (scale, zero point); the PYNQ driver quantizes the input as the golden
    model does and dequantizes the output as DequantizeLinear does (a fixed-point reading would be wrong)."""
    import json
    from types import SimpleNamespace

    from edgevit.pynq.driver import Accelerator, part_output

    result = qdq_import.lower_qdq(small, images[0][None])
    prog = result.program
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [images[0][None]])
    buffers = json.loads((out / "regmap.json").read_text())["buffers"]
    fi, fo = prog.formats["input"], prog.formats[prog.output]
    assert buffers["input"]["int8"] == {"scale": fi.scale, "zero_point": fi.zero_point}
    x = to_accel_layout(images[1][None])
    raw = Accelerator.quantize(SimpleNamespace(config={"buffers": buffers}), x)
    assert np.array_equal(raw, prog.quantize_input(x).ravel())
    y_raw = prog.run_fixed(prog.quantize_input(x))[prog.output]
    sess = onnxruntime_session(small.SerializeToString())
    want = sess.run(None, {sess.get_inputs()[0].name: images[1][None]})[0]
    got = part_output(y_raw.ravel(), buffers["output"], None)
    assert np.abs(got.ravel() - want.ravel()).max() <= fo.scale * 1.001


def test_unsupported_quantized_op_goes_to_the_cpu(tmp_path, images, capsys):
    from edgevit.cli import main

    model = _quantized(_Small(maxpool=True), (1, 1, 28, 28), tmp_path / "pool_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    assert result.unsupported[0] == "MaxPool" and "no int8 accelerator unit" in result.unsupported[2]
    assert result.cut is not None and 0 < result.accel_nodes < result.total_nodes
    assert main(["hls", str(tmp_path / "pool_int8.onnx"), "-o", str(tmp_path / "prj")]) == 0
    text = capsys.readouterr().out
    assert "runs on the ARM CPU:" in text and "MaxPool: no int8 accelerator unit" in text
    # the CPU part is written for the board (its numpy interpreter runs QuantizeLinear/DequantizeLinear), and
    # the board's way (accelerator output dequantized as the driver does, then that part) stays within the
    # int8 rule of onnxruntime running the whole file
    import json

    from edgevit.pynq import numpy_graph
    from edgevit.pynq.driver import part_output

    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj2", [x[None] for x in images[:4]])
    assert result.tail_error is None and (out / "cpu_tail.json").exists()
    graph, weights = numpy_graph.load(out, "cpu_tail.json", "cpu_tail.npz")
    spec = json.loads((out / "regmap.json").read_text())["buffers"]["output"]
    sim, _ = csim.simulate_project(out)
    step = qdq_import_output_step(model)
    sess = onnxruntime_session(model.SerializeToString())
    for x, raw in zip(images[:4], sim):
        got = numpy_graph.run(graph, weights, {graph["input"]: part_output(raw, spec, graph)})[0]
        want = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0]
        assert np.abs(got - want).max() <= qdq_import.TAIL_MAX_STEPS * step * 1.001


def test_agreement_tool_rejects_a_file_it_cannot_read_in_one_line(tmp_path):
    import sys

    bad = tmp_path / "bad.onnx"
    bad.write_text("not an onnx protobuf")
    tool = Path(__file__).resolve().parents[2] / "tools" / "hls_int8_agreement.py"
    for path, code in ((bad, 5), (tmp_path / "missing.onnx", 5)):
        run = subprocess.run([sys.executable, str(tool), str(path), "--images", "2"], capture_output=True, text=True)
        assert run.returncode == code
        assert run.stderr.startswith("hls_int8_agreement: error: cannot read") and run.stderr.count("\n") == 1
