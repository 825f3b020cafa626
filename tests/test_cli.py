"""The command line: what users see, exit codes for each kind of bad input, and never a traceback for them."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cli_helpers import assert_one_line_error, run_cli
from tiny_onnx_models import tiny_cnn_onnx


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "edgevit.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("models", "targets", "compile", "run", "bench"):
        assert command in proc.stdout


def test_targets_table(capsys):
    code, out, _ = run_cli(capsys, "targets")
    assert code == 0
    assert "cortex-a72" in out and "xc7z020clg400-1" in out and "qemu-aarch64-static" in out


def test_unknown_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compile", "mobilevit_huge", "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 3, "unknown model", "mobilevit_xxs")


def test_unknown_target(capsys, tiny_onnx, tmp_path):
    code, _, err = run_cli(capsys, "compile", tiny_onnx, "--target", "rpi9", "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 3, "unknown target", "rpi4")


def test_malformed_onnx(capsys, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x00garbage\xff" * 10)
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 4, "not a valid ONNX model")


def test_unsupported_operator_is_named(capsys, tmp_path):
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 4, "Det")
    assert not (tmp_path / "x.tar").exists()


def test_symbolic_shape_needs_input_shape_then_compiles(capsys, tmp_path):
    path = tiny_cnn_onnx(tmp_path / "dyn.onnx", batch="N")
    code, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 5, "--input-shape")
    code, out, err = run_cli(capsys, "compile", path, "--input-shape", "x:2,3,16,16", "-o", tmp_path / "x.tar")
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", tmp_path / "x.tar", "--verify", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["outputs"] == [{"shape": [2, 10], "dtype": "float32"}]
    assert result["verify"]["ok"] and result["verify"]["max_rel_error"] <= 1e-5


def test_wrong_input_shape(capsys, tiny_host_artifact, tmp_path):
    np.save(tmp_path / "in.npy", np.zeros((1, 3, 32, 32), np.float32))
    code, _, err = run_cli(capsys, "run", tiny_host_artifact, "--input", tmp_path / "in.npy")
    assert_one_line_error(code, err, 5, "float32[1, 3, 16, 16]", "[1, 3, 32, 32]")


def test_unreadable_input_file(capsys, tiny_host_artifact, tmp_path):
    (tmp_path / "in.npy").write_text("not numpy")
    code, _, err = run_cli(capsys, "run", tiny_host_artifact, "--input", tmp_path / "in.npy")
    assert_one_line_error(code, err, 5, "cannot read input")


def test_given_input_is_used_and_output_saved(capsys, tiny_host_artifact, tmp_path):
    x = np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    code, out, err = run_cli(capsys, "run", tiny_host_artifact, "-i", tmp_path / "in.npy", "--output",
                             tmp_path / "out.npy", "--verify")
    assert code == 0, err
    assert "PASS" in out
    from edgevit.reference import run_onnxruntime
    from edgevit.runtime.artifact import Artifact

    with Artifact.open(tiny_host_artifact) as art:
        expected = run_onnxruntime(art.reference, [x])[0]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_missing_cross_compiler(capsys, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: as on a machine without the toolchain
    code, _, err = run_cli(capsys, "compile", tiny_onnx, "--target", "rpi4", "-o", tmp_path / "x.tar")
    assert_one_line_error(code, err, 6, "aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")


def test_missing_qemu(capsys, tiny_rpi4_artifact, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "run", tiny_rpi4_artifact)
    assert_one_line_error(code, err, 6, "qemu-aarch64-static", "apt-get install qemu-user-static")


def test_corrupt_artifact(capsys, tiny_host_artifact, tmp_path):
    data = bytearray(tiny_host_artifact.read_bytes())
    data[len(data) // 2] ^= 0x55
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "run", tmp_path / "bad.tar")
    assert_one_line_error(code, err, 7)


def test_wrong_architecture_for_device(capsys, tiny_rpi4_artifact, tiny_host_artifact):
    code, _, err = run_cli(capsys, "run", tiny_rpi4_artifact, "--device", "local")
    assert_one_line_error(code, err, 7, "aarch64")
    code, _, err = run_cli(capsys, "run", tiny_host_artifact, "--device", "qemu")
    assert_one_line_error(code, err, 7, "--device local")


def test_bench_reports_both_engines(capsys, tiny_onnx, tmp_path):
    code, out, err = run_cli(capsys, "bench", tiny_onnx, "--runs", "3", "--warmup", "1", "--json", tmp_path / "b.json")
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["engines"]) == {"edgevit", "onnxruntime"}
    assert all(e["runs"] == 3 for e in report["engines"].values())
    assert report["tuned"] is False and "untuned" in out
    assert report["agreement"]["ok"]


def test_bench_refuses_a_board_target(capsys, tiny_onnx):
    code, _, err = run_cli(capsys, "bench", tiny_onnx, "--target", "rpi4")
    assert_one_line_error(code, err, 10, "qemu")


def test_bench_quantize_int8_times_both_int8_engines(capsys, tiny_onnx, tmp_path):
    """``bench --quantize int8``: edgevit and onnxruntime on the same QDQ file, edgevit judged group by group as
    by ``run --verify``; the LiteRT line says why it has no int8 row."""
    code, out, err = run_cli(capsys, "bench", tiny_onnx, "--quantize", "int8", "--calibration", "fashion-mnist",
                             "--calib-count", "4", "--per-channel", "--runs", "2", "--warmup", "0",
                             "--json", tmp_path / "b.json")
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["engines"]) == {"edgevit int8", "onnxruntime int8"}
    assert all(e["runs"] == 2 and e["median_ms"] > 0 for e in report["engines"].values())
    ratio = report["engines"]["edgevit int8"]["median_ms"] / report["engines"]["onnxruntime int8"]["median_ms"]
    assert report["ratio_vs_onnxruntime"] == pytest.approx(ratio)
    assert report["model"] == "tiny_cnn-int8" and report["quantization"]["per_channel"]
    assert report["quantization"]["samples"] == 4 and report["agreement"]["ok"]
    rows = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines()
            if line.startswith(("edgevit int8 ", "onnxruntime int8 "))}
    assert set(rows) == {"edgevit int8", "onnxruntime int8"}
    assert f"edgevit int8 / onnxruntime int8 = {ratio:.2f}x" in out
    assert "LiteRT int8: no int8 .tflite for this model (" in out
    # judged by run --verify's rule: every QDQ group, by a probe build
    assert report["agreement"]["groups_checked"] >= 4 and report["agreement"]["groups_failing"] == 0
    assert "QDQ groups within 1 step of onnxruntime on edgevit's inputs" in out and "-> PASS" in out


@pytest.mark.parametrize("extra, needles", [
    (["--quantize", "int8"], ["needs --calibration"]),
    (["--calibration", "fashion-mnist"], ["apply with --quantize int8"]),
    (["--per-channel"], ["apply with --quantize int8"]),
    (["--quantize", "int4", "--calibration", "fashion-mnist"], ["int4"]),
    (["--quantize", "int8", "--calibration", "fashion-mnist", "--threads", "1,2"], ["one thread count"]),
])
def test_bench_quantize_option_mistakes(capsys, tiny_onnx, extra, needles):
    code, _, err = run_cli(capsys, "bench", tiny_onnx, *extra)
    assert_one_line_error(code, err, 2, *needles)


def test_bench_quantize_refuses_an_artifact_and_all(capsys, tiny_host_artifact):
    code, _, err = run_cli(capsys, "bench", tiny_host_artifact, "--quantize", "int8", "--calibration",
                           "fashion-mnist")
    assert_one_line_error(code, err, 2, "float .onnx", "artifact")
    code, _, err = run_cli(capsys, "bench", "all", "--quantize", "int8", "--calibration", "fashion-mnist")
    assert_one_line_error(code, err, 2, "'all'")


@pytest.mark.slow
def test_models_lists_the_zoo_with_params_and_macs(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert len(rows) >= 12
    xxs = rows["mobilevit_xxs"]
    assert xxs["family"] == "MobileViT" and xxs["input_shape"] == [1, 3, 256, 256]
    assert 1.2e6 < xxs["params"] < 1.35e6 and 2e8 < xxs["macs"] < 5e8
