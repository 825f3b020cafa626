"""``edgevit quantize`` and ``compile --quantize int8``: QDQ models end to end, calibration data checks, and one
clear error line for each kind of bad input."""

import json

import numpy as np
import onnx
import pytest

from cli_helpers import assert_one_line_error, run_cli
from tiny_onnx_models import tiny_attention_onnx, tiny_cnn_onnx

from edgevit.cli import main




def op_types(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return tiny_cnn_onnx(tmp_path_factory.mktemp("quantize") / "cnn.onnx")


def test_quantize_compile_run_verify(capsys, cnn, tmp_path):
    """Fashion-MNIST (28x28 grey) calibrates a 16x16 RGB model; the QDQ file builds and verifies bit-exact here."""
    code, out, err = run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "--calib-count", "8",
                             "--per-channel", "-o", tmp_path / "cnn_int8.onnx", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["samples"] == 8 and summary["per_channel"] and summary["quantized_ops"]["Conv"] == 1
    ops = op_types(tmp_path / "cnn_int8.onnx")
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weight = next(t for t in onnx.load(str(tmp_path / "cnn_int8.onnx")).graph.initializer if t.name == "w_quantized")
    assert weight.data_type == onnx.TensorProto.INT8 and len(weight.dims) == 4
    # symmetric weights stay in [-127, 127]: the Cortex-A72 kernels add two int8 products in int16
    assert onnx.numpy_helper.to_array(weight).min() >= -127
    code, _, err = run_cli(capsys, "compile", tmp_path / "cnn_int8.onnx", "-o", tmp_path / "cnn_int8.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "cnn_int8.tar", "--verify", "--json")
    assert code == 0, err
    assert json.loads(out)["verify"]["ok"]


def test_compile_quantize_in_one_records_settings(capsys, cnn, tmp_path):
    code, out, err = run_cli(capsys, "compile", cnn, "--quantize", "int8", "--calibration", "fashion-mnist",
                             "--calib-count", "4", "-o", tmp_path / "m.tar", "--json")
    assert code == 0, err
    meta = json.loads(out)
    assert meta["model"]["name"] == "cnn-int8"
    assert meta["model"]["quantization"]["samples"] == 4 and not meta["model"]["quantization"]["per_channel"]
    code, out, err = run_cli(capsys, "run", tmp_path / "m.tar", "--verify")
    assert code == 0 and "PASS" in out, err


def test_npy_folder_exact_shapes(capsys, tmp_path):
    """A non-image model calibrated from a folder: one sample per file, with and without batch, and a batch."""
    model = tiny_attention_onnx(tmp_path / "attn.onnx")
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "a.npy", rng.standard_normal((1, 2, 64, 16)).astype(np.float32))
    np.save(data / "b.npy", rng.standard_normal((2, 64, 16)).astype(np.float32))
    np.save(data / "c.npy", rng.standard_normal((3, 2, 64, 16)))  # float64 is taken as float32
    code, out, err = run_cli(capsys, "quantize", model, "--calibration", data, "-o", tmp_path / "q.onnx", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["samples"] == 5 and summary["quantized_ops"]["MatMul"] == 5


@pytest.mark.parametrize("name, array, needles", [
    ("shape.npy", np.zeros((1, 2, 5, 5), np.float32), ["shape.npy", "[1, 2, 5, 5]", "[1, 3, 16, 16]"]),
    ("ints.npy", np.zeros((1, 3, 16, 16), np.int64), ["ints.npy", "int64", "float32"]),
    ("nan.npy", np.full((1, 3, 16, 16), np.nan, np.float32), ["nan.npy", "NaN"]),
    ("empty.npy", np.zeros((0, 3, 16, 16), np.float32), ["empty.npy", "[0, 3, 16, 16]"]),
])
def test_bad_calibration_file(capsys, cnn, tmp_path, name, array, needles):
    data = tmp_path / "calib"
    data.mkdir()
    np.save(data / "good.npy", np.zeros((1, 3, 16, 16), np.float32))
    np.save(data / name, array)
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", data, "-o", tmp_path / "q.onnx")
    assert_one_line_error(code, err, 5, *needles)
    assert not (tmp_path / "q.onnx").exists()


def test_unreadable_calibration_file(capsys, cnn, tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "x.npy").write_text("not numpy")
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", tmp_path / "calib", "-o", tmp_path / "q.onnx")
    assert_one_line_error(code, err, 5, "cannot read calibration file", "x.npy")


@pytest.mark.parametrize("make, needles", [
    (lambda d: d / "missing", ["missing", "neither 'fashion-mnist' nor a folder"]),
    (lambda d: (d / "empty").mkdir() or d / "empty", ["holds no .npy file"]),
    (lambda d: (d / "f.npy").write_bytes(b"") or d / "f.npy", ["(it is a file)"]),
])
def test_bad_calibration_source(capsys, cnn, tmp_path, make, needles):
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", make(tmp_path), "-o", tmp_path / "q.onnx")
    assert_one_line_error(code, err, 5, *needles)


def test_output_folder_missing_or_directory(capsys, cnn, tmp_path):
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "-o",
                           tmp_path / "nowhere" / "q.onnx")
    assert_one_line_error(code, err, 11, "does not exist")
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "-o", tmp_path)
    assert_one_line_error(code, err, 11, "is a directory")
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "-o", cnn)
    assert_one_line_error(code, err, 11, "would destroy the input")


def test_quantized_model_is_refused(capsys, cnn, tmp_path):
    assert run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "--calib-count", "2", "-o",
                   tmp_path / "q.onnx")[0] == 0
    code, _, err = run_cli(capsys, "quantize", tmp_path / "q.onnx", "--calibration", "fashion-mnist", "-o",
                           tmp_path / "q2.onnx")
    assert_one_line_error(code, err, 5, "quantized already")


def test_option_mistakes(capsys, cnn, tmp_path):
    code, _, err = run_cli(capsys, "quantize", cnn, "-o", tmp_path / "q.onnx")
    assert_one_line_error(code, err, 2, "--calibration")
    code, _, err = run_cli(capsys, "compile", cnn, "--quantize", "int8", "-o", tmp_path / "m.tar")
    assert_one_line_error(code, err, 2, "needs --calibration")
    code, _, err = run_cli(capsys, "compile", cnn, "--calibration", "fashion-mnist", "-o", tmp_path / "m.tar")
    assert_one_line_error(code, err, 2, "apply with --quantize int8")
    code, _, err = run_cli(capsys, "quantize", cnn, "--calibration", "fashion-mnist", "--calib-count", "0",
                           "-o", tmp_path / "q.onnx")
    assert_one_line_error(code, err, 2, "--calib-count")
    code, _, err = run_cli(capsys, "compile", cnn, "--quantize", "int4", "--calibration", "fashion-mnist")
    assert_one_line_error(code, err, 2, "int4")


@pytest.mark.qemu
def test_per_channel_qdq_for_rpi4_verifies_under_qemu(capsys, cnn, tmp_path):
    """The int8 kernels cross-compiled for the Pi (NEON) agree with onnxruntime on x86 (bit-exact here)."""
    code, _, err = run_cli(capsys, "compile", cnn, "--target", "rpi4", "--quantize", "int8", "--calibration",
                           "fashion-mnist", "--calib-count", "4", "--per-channel", "-o", tmp_path / "m.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "m.tar", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["device"] == "qemu-aarch64"
    assert result["verify"]["max_steps"] == 0 and result["verify"]["differing"] == 0   # int8 rule: bit-exact here
    # the probe build ran under qemu too: every group checked, none off
    assert result["verify"]["groups_checked"] >= 4 and result["verify"]["values_one_step"] == 0
    assert result["verify"]["probe_differs"] == 0 and result["verify"]["ok"]


def test_run_verify_checks_an_int8_build_by_the_int8_rule(tmp_path, capsys):
    """`run --verify` on a QDQ build reports in output quantization steps (no float64 fallback, which cannot
    evaluate QDQ models and used to end in a traceback)."""
    model = tiny_cnn_onnx(tmp_path / "cnn.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(calib / f"x{i}.npy", rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert main(["compile", str(model), "--quantize", "int8", "--calibration",
                 str(calib), "-o", str(tmp_path / "m.tar")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.tar"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "output quantization steps" in out and "PASS" in out
