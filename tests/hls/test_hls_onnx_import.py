"""ONNX import of the HLS backend: ops (not torch classes) to the accelerator, the rest to the CPU part."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import assert_one_line_error, run_cli
from edgevit.errors import InputError, ModelImportError, ResourceError
from edgevit.frontend import from_torch
from edgevit.hls import project
from edgevit.hls.onnx_import import lower_onnx
from edgevit.hls.torch_import import to_accel_layout
from edgevit.pynq import numpy_graph
from edgevit.reference import onnxruntime_session
from hls_helpers import csim_vs_golden, program
from tiny_onnx_models import tiny_cnn_onnx


def _gated_cnn():
    """A small hybrid outside the zoo: Conv-BN-ReLU stem, depthwise Conv-BN-Hardswish, a 1x1 conv with a
    residual, an EfficientFormer-style pooling mixer with layer scale, a squeeze-excitation gate, then a softmax
    over the channels (no unit runs it), average pool and a linear head."""
    import torch
    import torch.nn as nn

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.Hardswish())
            self.pw = nn.Conv2d(8, 8, 1)
            self.se = nn.Conv2d(8, 8, 1)
            self.head = nn.Linear(8, 5)
            self.ls = nn.Parameter(torch.linspace(0.2, 1.0, 8).reshape(8, 1, 1))

        def forward(self, x):
            x = self.stem(x)
            x = x + self.pw(self.dw(x))
            x = x + self.ls * (nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x)
            x = x * torch.sigmoid(self.se(x.mean((2, 3), keepdim=True)))
            x = torch.softmax(x, dim=1)
            return self.head(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Gated().eval()
    with torch.no_grad():   # BatchNorm statistics that are not the identity, so folding them is tested
        for bn in (model.stem[1], model.dw[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def gated_onnx():
    return from_torch(_gated_cnn(), (1, 3, 16, 16), "gated_cnn_softmax").onnx_path


@pytest.fixture(scope="module")
def vit_onnx():
    """timm's ViT-Tiny (class token, random weights), two blocks at 32x32: a plain ViT outside the zoo."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2)
    return from_torch(model.eval(), (1, 3, 32, 32), "vit_tiny_d2_32").onnx_path


def _sample(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_plain_vit_runs_entirely_on_the_accelerator_bit_exact(vit_onnx, tmp_path):
    import onnx

    x = _sample((1, 3, 32, 32))
    result, out = project.generate_onnx(onnx.load(str(vit_onnx)), "zcu102", tmp_path / "vit", [x])
    kinds = [l.kind for l in result.program.layers]
    assert result.unsupported is None and result.cut is None and not result.program.cpu_layers
    assert result.accel_nodes == result.total_nodes and result.accel_macs == result.total_macs > 0
    assert kinds.count("attention") == 2 and kinds.count("token_rows") == 2   # class token in, then read out
    assert [l.attrs["act"] for l in result.program.layers if l.kind == "linear"].count("gelu") == 2
    assert not (out / "cpu_tail.json").exists()
    # the program computes what onnxruntime computes on the whole model
    sess = onnxruntime_session(str(vit_onnx))
    want = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    got = result.program.run_float(to_accel_layout(x))[result.program.output]
    assert np.abs(got.ravel() - want.ravel()).max() <= 1e-4 * (1 + np.abs(want).max())
    r = project.run_csim(out)
    assert r["mismatches"] == 0 and r["argmax_agreement"] == 1.0


def test_unsupported_op_is_named_and_the_rest_is_the_cpu_part(gated_onnx, tmp_path):
    import onnx

    mp = onnx.load(str(gated_onnx))
    samples = [_sample((1, 3, 16, 16), s) for s in range(2)]
    result, out = project.generate_onnx(mp, "zcu102", tmp_path / "gated", samples)
    prog = result.program
    op, name, why = result.unsupported
    assert op == "Softmax" and "no accelerator unit" in why
    assert prog.cpu_layers[0].startswith(f"{name} (Softmax: ")
    # BatchNorm folded, activations fused, the residual Add in the 1x1 conv's epilogue, the whole pooling mixer,
    # the gate's branch on the pooled vector and its channel scale
    assert [(l.kind, l.attrs.get("act")) for l in prog.layers] == [
        ("im2col", None), ("linear", "relu"), ("dwconv", "hswish"), ("linear", "none"), ("pool_mixer", None),
        ("avgpool", None), ("linear", "sigmoid"), ("channel_scale", None)]
    assert len(prog.layers[3].inputs) == 2 and "scale" in prog.layers[4].params
    assert 0 < result.accel_macs < result.total_macs and result.accel_nodes < result.total_nodes
    assert project.run_csim(out)["mismatches"] == 0
    # the CPU part, as the board runs it, finishes the accelerator's output into the model's output
    tail = json.loads((out / "cpu_tail.json").read_text())
    assert tail["input"] == result.cut and tail["transpose"] == [2, 0, 1]
    npz = np.load(out / "cpu_tail.npz")
    weights = {n: npz[f"w{k}"] for k, n in enumerate(tail["weights"])}
    acc = prog.run_float(to_accel_layout(samples[1]))[prog.output].transpose(2, 0, 1)[None]
    got = numpy_graph.run(tail, weights, {tail["input"]: acc.astype(np.float32)})[0]
    sess = onnxruntime_session(str(gated_onnx))
    want = sess.run(None, {sess.get_inputs()[0].name: samples[1].astype(np.float32)})[0]
    assert np.abs(got - want).max() <= 1e-4 * (1 + np.abs(want).max())


def test_token_rows_unit_matches_golden(tmp_path):
    """The class-token unit: prepend parameter rows, or copy a row range, in C-sim and golden alike."""
    rng = np.random.default_rng(3)
    layers = [("token_rows", ["input"], "t1", {"start": 0, "rows": 6}, {"tok": rng.standard_normal((2, 8))}),
              ("token_rows", ["t1"], "t2", {"start": 3, "rows": 4}, {})]
    prog = program(layers, {"input": (1, 6, 8), "t1": (1, 8, 8), "t2": (1, 4, 8)})
    samples = [rng.standard_normal((1, 6, 8)), 40 * rng.standard_normal((1, 6, 8))]   # the second saturates
    mismatches, errors, envs = csim_vs_golden(prog, samples, tmp_path)
    assert mismatches == 0
    assert errors[0] < 2e-3
    assert not np.array_equal(envs[0]["t2"], envs[1]["t2"])


def test_channel_scale_unit_matches_golden(tmp_path):
    """The squeeze-excitation unit: a map times a computed per-channel vector, in C-sim and golden alike."""
    rng = np.random.default_rng(4)
    layers = [("avgpool", ["input"], "v", {}, {}), ("channel_scale", ["input", "v"], "y", {}, {})]
    prog = program(layers, {"input": (3, 4, 6), "v": (1, 6), "y": (3, 4, 6)})
    samples = [rng.standard_normal((3, 4, 6)), 30 * rng.standard_normal((3, 4, 6))]   # the second saturates
    mismatches, errors, _ = csim_vs_golden(prog, samples, tmp_path)
    assert mismatches == 0
    assert errors[0] < 2e-3


def test_nothing_supported_names_the_first_op():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=-1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])])
    mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(mp)
    with pytest.raises(ModelImportError, match="first unsupported: Softmax node 'sm'"):
        lower_onnx(mp, _sample((1, 4, 8)))


def test_cli_hls_onnx_file(gated_onnx, tmp_path, capsys):
    out = tmp_path / "prj"
    code, stdout, err = run_cli(capsys, "hls", gated_onnx, "-o", out, "--calib", "2")
    assert code == 0, err
    assert "stops at Softmax node" in stdout and "runs on the ARM CPU" in stdout and "% of the Conv/MatMul/Gemm" in stdout
    assert json.loads((out / "program.json").read_text())["meta"]["cpu_tail_input"]
    code, stdout, err = run_cli(capsys, "hls", "build", out, "--csim")
    assert code == 0 and "0 mismatches" in stdout, err


def test_cli_hls_symbolic_batch_needs_input_shape(tmp_path, capsys):
    """The front door of ``edgevit compile``: a symbolic batch is refused with what to pass, then accepted."""
    path = tiny_cnn_onnx(tmp_path / "cnn.onnx", batch="N")
    code, _, err = run_cli(capsys, "hls", path, "-o", tmp_path / "a")
    assert_one_line_error(code, err, InputError.exit_code, "--input-shape")
    code, stdout, err = run_cli(capsys, "hls", path, "--input-shape", "1,3,16,16", "-o", tmp_path / "b")
    assert code == 0, err
    assert "5 of 5 nodes, 100.0 %" in stdout and "runs on the ARM CPU" not in stdout


def test_cli_hls_refuses_broken_and_hostile_onnx(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage that is not a protobuf" * 3)
    code, _, err = run_cli(capsys, "hls", broken, "-o", tmp_path / "a")
    assert_one_line_error(code, err, ModelImportError.exit_code, "not a valid ONNX model")
    # weights that point outside the model's folder (a path traversal) are refused before anything reads them
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../../etc/passwd")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4])], initializer=[w])
    hostile = tmp_path / "hostile.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(hostile))
    code, _, err = run_cli(capsys, "hls", hostile, "-o", tmp_path / "b")
    assert_one_line_error(code, err, ModelImportError.exit_code, "outside the model's folder")
    # an input of 200 M values is refused before anything that size is allocated
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])])
    huge = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(huge))
    code, _, err = run_cli(capsys, "hls", huge, "--input-shape", "1,3,8192,8192", "-o", tmp_path / "c")
    assert_one_line_error(code, err, ResourceError.exit_code, "too large")
    assert not any((tmp_path / d).exists() for d in "abc")


def _float_out(prog, x):
    return prog.run_float(to_accel_layout(x))[prog.output].ravel()


def test_onnx_and_torch_paths_agree_on_tiny_mobilevit():
    """The same program from the ONNX graph as from the torch modules: MobileViT's unfold / fold, attention,
    concat and head, found by value in the exported graph."""
    import onnx

    from edgevit.zoo.tiny_mobilevit import trained_tiny_mobilevit
    from edgevit.hls.torch_import import lower

    model = trained_tiny_mobilevit()
    x = _sample((1, 1, 8, 8))
    result = lower_onnx(onnx.load(str(from_torch(model, (1, 1, 8, 8), "tiny_mobilevit").onnx_path)), x)
    torch_prog = lower(model, (1, 1, 8, 8))
    assert [(l.kind, l.attrs.get("act")) for l in result.program.layers] == [
        (l.kind, l.attrs.get("act")) for l in torch_prog.layers]
    # the exporter folds BatchNorm in float32, the torch path in float64
    assert np.abs(_float_out(result.program, x) - _float_out(torch_prog, x)).max() <= 1e-5


def test_swiftformer_maps_whole_with_l2_norms_and_additive_attention():
    """SwiftFormer (a zoo family, here at 64x64) through ONNX: L2 normalisation and additive attention are
    recognised however the exporter spelled them, standalone BatchNorms become 1x1 depthwise layers."""
    import onnx
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("swiftformer_xs", pretrained=False).eval()
    path = from_torch(model, (1, 3, 64, 64), "swiftformer_xs_64").onnx_path
    x = _sample((1, 3, 64, 64))
    result = lower_onnx(onnx.load(str(path)), x)
    kinds = [l.kind for l in result.program.layers]
    assert result.unsupported is None and result.accel_nodes == result.total_nodes
    assert kinds.count("additive") == 4 and kinds.count("l2norm") == 8
    sess = onnxruntime_session(str(path))
    want = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0].ravel()
    assert np.abs(_float_out(result.program, x) - want).max() <= 1e-4 * (1 + np.abs(want).max())


def test_mobilevitv2_maps_whole_with_group_norms_and_separable_attention(tmp_path):
    """mobilevitv2_050 (a zoo family, here at 64x64) through ONNX: its unfold to [C, P, N], GroupNorm exported as
    InstanceNormalization over one channel (global_norm; the affine after it a 1x1 depthwise layer) and the
    separable self-attention after a Split, found by value; the whole model C-simulates bit-exact."""
    import onnx
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("mobilevitv2_050", pretrained=False).eval()
    path = from_torch(model, (1, 3, 64, 64), "mobilevitv2_050_64").onnx_path
    x = _sample((1, 3, 64, 64))
    result, out = project.generate_onnx(onnx.load(str(path)), "zcu102", tmp_path / "v2", [x])
    kinds = [l.kind for l in result.program.layers]
    assert result.unsupported is None and result.accel_nodes == result.total_nodes
    assert kinds.count("separable_attention") == 9 and kinds.count("global_norm") == 21
    sess = onnxruntime_session(str(path))
    want = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0].ravel()
    assert np.abs(_float_out(result.program, x) - want).max() <= 1e-4 * (1 + np.abs(want).max())
    r = project.run_csim(out)
    assert r["mismatches"] == 0


def test_torchscript_export_spelling_maps_and_writes_its_cpu_part(tmp_path):
    # Constants defined after the conv they follow, a residual on a 3x3 (im2col) conv and no value_info: timm's
    # repvit_m0_9 stopped at its first GELU, fastvit_t8 raised a numpy broadcast error, both in `edgevit hls`;
    # every model without value_info failed to write its CPU part.
    import onnx

    from tiny_onnx_models import torchscript_style_cnn_onnx

    path = torchscript_style_cnn_onnx(tmp_path / "ts.onnx")
    samples = [_sample((1, 3, 8, 8), s) for s in range(2)]
    result, out = project.generate_onnx(onnx.load(str(path)), "zcu102", tmp_path / "ts", samples)
    prog = result.program
    assert [(l.kind, l.attrs.get("act")) for l in prog.layers] == [
        ("im2col", None), ("linear", "gelu"), ("linear", "none"), ("im2col", None), ("linear", "none")]
    assert prog.layers[4].inputs[1] == prog.layers[2].output   # the 1x1 branch in the 3x3 conv's epilogue
    assert result.unsupported[0] == "Softmax"
    assert [c.split(" (")[1].split(":")[0].rstrip(")") for c in prog.cpu_layers] == ["Softmax", "Mul"]
    assert project.run_csim(out)["mismatches"] == 0
    tail = json.loads((out / "cpu_tail.json").read_text())
    npz = np.load(out / "cpu_tail.npz")
    weights = {n: npz[f"w{k}"] for k, n in enumerate(tail["weights"])}
    acc = prog.run_float(to_accel_layout(samples[1]))[prog.output].transpose(2, 0, 1)[None]
    got = numpy_graph.run(tail, weights, {tail["input"]: acc.astype(np.float32)})[0]
    sess = onnxruntime_session(str(path))
    want = sess.run(None, {"x": samples[1].astype(np.float32)})[0]
    assert np.abs(got - want).max() <= 1e-4 * (1 + np.abs(want).max())
