"""Per-channel affine ops in an int8 QDQ model on the accelerator as a 1x1 ``qdwconv`` (edgevit/hls/qdq_import.py
``_channel_affine``): a standalone BatchNormalization (repvit's token mixer, fastvit's identity branch, levit's
Linear + BatchNorm1d), within one output step of onnxruntime for every int8 input of every channel, a Mul / Add by
a per-channel constant (fastvit's layer scale); and the Sub of two int8 tensors (fastvit's RepMixer) as ``qadd``.
C-sim bit-exact with the golden model throughout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevit.datasets import fashion_mnist
from edgevit.hls import csim, qdq_import
from edgevit.hls.torch_import import to_accel_layout
from edgevit.reference import onnxruntime_session

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C, SIDE = 6, 16   # an exhaustive input: 256 pixels per channel, each int8 value once


def _bn_model(sx, zx, sy, zy, scale, beta, mean, var, eps=1e-5):
    """x -> Q -> DQ -> BatchNormalization -> Q -> DQ, as onnxruntime's quantizer writes a standalone BN."""
    c = scale.size
    consts = {"sx": np.float32(sx), "zx": np.int8(zx), "sy": np.float32(sy), "zy": np.int8(zy),
              "scale": scale, "beta": beta, "mean": mean, "var": var}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("BatchNormalization", ["xf", "scale", "beta", "mean", "var"], ["bn"], epsilon=eps),
             helper.make_node("QuantizeLinear", ["bn", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, SIDE, SIDE])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, SIDE, SIDE])],
                          [numpy_helper.from_array(np.asarray(v, np.asarray(v).dtype), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _every_int8_value(sx, zx, c):
    """A float input whose quantization holds every int8 value once in each channel (channels rolled apart)."""
    q = np.arange(-128, 128).reshape(SIDE, SIDE)
    return np.stack([(np.roll(q, k) - zx) * np.float32(sx) for k in range(c)])[None].astype(np.float32)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 16), zx=st.integers(-128, 127), zy=st.integers(-128, 127),
       gain=st.floats(0.05, 8.0), zero_channel=st.booleans())
def test_batchnorm_is_within_one_step_of_onnxruntime_for_every_int8_input(seed, zx, zy, gain, zero_channel):
    rng = np.random.default_rng(seed)
    scale = (rng.standard_normal(C) * 2).astype(np.float32)
    scale[0] = -abs(scale[0])   # a negative scale: weight -127
    if zero_channel:
        scale[1] = 0.0          # the bias alone
    beta, mean = (rng.standard_normal(C) * 3).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    var = rng.uniform(0.01, 4, C).astype(np.float32)
    sx = float(np.float32(10.0 ** rng.uniform(-3, 0)))
    a = np.abs(scale / np.sqrt(var + 1e-5)).max()
    sy = float(np.float32(sx * a * 255 / (gain * 255 + 1e-3)))   # output steps per input step: about gain
    model = _bn_model(sx, zx, sy, zy, scale, beta, mean, var)
    sample = (rng.standard_normal((1, C, SIDE, SIDE)) * sx * 40).astype(np.float32)
    result = qdq_import.lower_qdq(model, sample)
    prog = result.program
    assert result.cut is None and [l.kind for l in prog.layers] == ["qdwconv"]
    x = _every_int8_value(sx, zx, C)
    got = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output]
    sess = onnxruntime_session(model.SerializeToString())
    want = np.rint(sess.run(None, {"x": x})[0][0].transpose(1, 2, 0) / np.float32(sy)).astype(np.int64)
    assert np.abs(got - want).max() <= 1


class _RepBlock(torch.nn.Module):
    """conv 3x3/2 -> ReLU, then BN(depthwise(x) + x) (repvit's token mixer: no conv right before the BN, so
    onnxruntime's pre-processing cannot fold it), then conv 1x1, mean, Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.dw = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.bn, self.pw, self.fc = nn.BatchNorm2d(8), nn.Conv2d(8, 16, 1), nn.Linear(16, 10)
        with torch.no_grad():   # trained-looking statistics, not the identity of a fresh BatchNorm
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.normal_(0, 0.5)
            self.bn.running_mean.normal_(0, 0.3)
            self.bn.running_var.uniform_(0.2, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.fc(torch.relu(self.pw(self.bn(self.dw(x) + x))).mean((2, 3)))


class _LinearBN(torch.nn.Module):
    """levit's stem and LinearNorm: conv 4x4/4 into tokens [1, 49, 24] -> Linear -> BatchNorm1d over the
    flattened tokens -> Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.patch, self.a, self.bn = nn.Conv2d(1, 24, 4, 4), nn.Linear(24, 32, bias=False), nn.BatchNorm1d(32)
        self.b = nn.Linear(32, 10)
        with torch.no_grad():
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.bias.normal_(0, 0.5)
            self.bn.running_var.uniform_(0.2, 2)

    def forward(self, x):
        y = self.a(self.patch(x).flatten(2).transpose(1, 2))
        return self.b(self.bn(y.flatten(0, 1)).reshape_as(y))


def _quantized(module, shape, path, calibration):
    from edgevit.frontend import load_model
    from edgevit.quantize import QuantizeSettings, quantize_model

    torch.manual_seed(0)
    torch.onnx.export(module.eval(), torch.randn(*shape), str(path.with_suffix(".f32.onnx")), opset_version=17,
                      dynamo=False)
    quantize_model(load_model(str(path.with_suffix(".f32.onnx"))), QuantizeSettings(calibration, 16, True), path)
    return onnx.load(str(path))


def test_repvit_style_batchnorm_maps_and_csim_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    images = fashion_mnist("test", 24)[0]
    model = _quantized(_RepBlock(), (1, 1, 28, 28), tmp_path / "rep_int8.onnx", "fashion-mnist")
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)   # still there after quantization
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert result.cut is None, result.unsupported
    bn = [l for l in prog.layers if l.kind == "qdwconv" and l.attrs["k"] == 1]
    assert len(bn) == 1 and "BatchNormalization" in bn[0].source
    # the BN layer against onnxruntime's int8 tensor after it, on every test image
    name = next(n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] ==
                next(b.output[0] for b in model.graph.node if b.op_type == "BatchNormalization"))
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend([helper.make_tensor_value_info(name, TensorProto.INT8, None)])
    sess = onnxruntime_session(m.SerializeToString())
    fy = prog.formats[bn[0].output]
    for x in images:
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        want = sess.run([name], {sess.get_inputs()[0].name: x[None]})[0][0].transpose(1, 2, 0)
        assert np.abs(env[bn[0].output] - (want.astype(np.int64) - fy.zero_point)).max() <= 1
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [x[None] for x in images[:3]])
    _, probes = csim.simulate_project(out, probes=True)
    for x, probe in zip(images[:3], probes):
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        assert all(np.array_equal(probe[t], env[t].ravel()) for t in prog.shapes)


def test_levit_style_linear_batchnorm_maps(tmp_path):
    images = fashion_mnist("test", 8)[0]
    model = _quantized(_LinearBN(), (1, 1, 28, 28), tmp_path / "lin_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert [l.kind for l in prog.layers] == ["im2col", "qlinear", "qlinear", "qdwconv", "qlinear"], result.unsupported
    assert result.cut is None
    sess = onnxruntime_session(model.SerializeToString())
    for x in images:   # the last Linear may carry the BN's step on: within a step of onnxruntime measured here
        got = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].reshape(-1, 10)
        want = sess.run(None, {sess.get_inputs()[0].name: x[None]})[0][0] / prog.formats[prog.output].scale
        assert np.abs(got - np.rint(want)).max() <= 1


def test_batchnorm_on_a_token_list_goes_to_the_cpu_with_its_reason():
    """Tokens the accelerator holds as [T, C] (no map behind them): the node and why are named."""
    rng = np.random.default_rng(4)
    c = 8
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]),
             helper.make_node("Reshape", ["xf", "shape"], ["t"]),
             helper.make_node("BatchNormalization", ["t", "g", "b", "m", "v"], ["bn"], name="bn"),
             helper.make_node("QuantizeLinear", ["bn", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    consts = {"s": np.float32(0.05), "z": np.int8(0), "shape": np.array([5, c]), "g": np.ones(c, np.float32),
              "b": np.zeros(c, np.float32), "m": np.zeros(c, np.float32), "v": np.ones(c, np.float32)}
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, c])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    with pytest.raises(qdq_import.ModelImportError, match="BatchNormalization node 'bn'.*1x1 depthwise unit"):
        qdq_import.lower_qdq(m, rng.standard_normal((1, 5, c)).astype(np.float32))


class _RepMixer(torch.nn.Module):
    """fastvit's RepMixer: conv 3x3/2 -> ReLU, then x + layer_scale * (depthwise(x) - BN(x)) + bias, with
    layer_scale and bias [C, 1, 1] constants; mean, Linear."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem, self.dw, self.bn = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8)
        self.scale = nn.Parameter(torch.linspace(-0.8, 1.2, 8).reshape(8, 1, 1))
        self.bias = nn.Parameter(torch.linspace(-0.3, 0.4, 8).reshape(8, 1, 1))
        self.fc = nn.Linear(8, 10)
        with torch.no_grad():
            self.bn.weight.uniform_(-1.5, 1.5)
            self.bn.running_var.uniform_(0.2, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.scale * (self.dw(x) - self.bn(x)) + self.bias
        return self.fc(x.mean((2, 3)))


def test_repmixer_sub_and_per_channel_constants_map_and_csim_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    images = fashion_mnist("test", 24)[0]
    model = _quantized(_RepMixer(), (1, 1, 28, 28), tmp_path / "mixer_int8.onnx", "fashion-mnist")
    ops = {n.op_type for n in model.graph.node}
    assert {"Sub", "Mul", "BatchNormalization"} <= ops
    result = qdq_import.lower_qdq(model, images[0][None])
    prog = result.program
    assert result.cut is None, result.unsupported
    kinds = [l.kind for l in prog.layers]
    subs = [l for l in prog.layers if l.kind == "qadd" and l.attrs["rb"] < 0]
    affine = [l for l in prog.layers if l.kind == "qdwconv" and l.attrs["k"] == 1]
    assert len(subs) == 1 and len(affine) == 3, kinds   # the BN, the layer scale, the bias
    golden = np.asarray([prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))[prog.output].ravel()
                         for x in images])
    sess = onnxruntime_session(model.SerializeToString())
    want = np.asarray([np.rint(sess.run(None, {sess.get_inputs()[0].name: x[None]})[0].ravel()
                               / prog.formats[prog.output].scale) for x in images])
    # qadd approximates onnxruntime's float32 add/sub within a step, which later layers may carry on
    assert np.abs(golden - want).max() <= 2
    out = qdq_import.write_project(result, "zcu102", tmp_path / "prj", [x[None] for x in images[:3]])
    _, probes = csim.simulate_project(out, probes=True)
    for x, probe in zip(images[:3], probes):
        env = prog.run_fixed(prog.quantize_input(to_accel_layout(x[None])))
        assert all(np.array_equal(probe[t], env[t].ravel()) for t in prog.shapes)


def test_an_add_of_a_constant_that_is_not_per_channel_names_its_reason(tmp_path):
    """A position embedding ([1, C, H, W]) is no per-channel affine: the node goes to the CPU with why."""

    class _Pos(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.fc = torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.Linear(8, 10)
            self.pos = torch.nn.Parameter(torch.randn(1, 8, 14, 14))

        def forward(self, x):
            return self.fc((torch.relu(self.stem(x)) + self.pos).mean((2, 3)))

    images = fashion_mnist("test", 2)[0]
    model = _quantized(_Pos(), (1, 1, 28, 28), tmp_path / "pos_int8.onnx", "fashion-mnist")
    result = qdq_import.lower_qdq(model, images[0][None])
    assert result.unsupported[0] == "Add" and "not one value per channel" in result.unsupported[2]


@pytest.mark.parametrize("op, const_first", [("Mul", False), ("Mul", True), ("Add", False), ("Add", True),
                                             ("Sub", False), ("Sub", True)])
def test_per_channel_constants_are_within_one_step_for_every_int8_input(op, const_first):
    rng = np.random.default_rng(11)
    c = np.concatenate([[-1.3, 0.0], rng.standard_normal(C - 2) * 2]).astype(np.float32).reshape(C, 1, 1)
    sx, zx, zy = np.float32(0.02), np.int8(-7), np.int8(12)
    sy = np.float32(0.035 if op == "Mul" else 0.03)
    ins = ["c", "xf"] if const_first else ["xf", "c"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node(op, ins, ["r"]),
             helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    consts = {"sx": sx, "zx": zx, "sy": sy, "zy": zy, "c": c}
    g = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, SIDE, SIDE])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, SIDE, SIDE])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    result = qdq_import.lower_qdq(m, (rng.standard_normal((1, C, SIDE, SIDE)) * 0.5).astype(np.float32))
    prog = result.program
    assert [l.kind for l in prog.layers] == ["qdwconv"], result.unsupported
    x = _every_int8_value(float(sx), int(zx), C)
    got = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output]
    want = np.rint(onnxruntime_session(m.SerializeToString()).run(None, {"x": x})[0][0].transpose(1, 2, 0) / sy)
    assert np.abs(got - want).max() <= 1
