"""``edgevit compile FILE.tflite`` and ``edgevit run --verify`` against LiteRT, end to end on the fixtures, and the
one-line errors for .tflite input that cannot be built."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, run_cli
from tflite_builder import one_op, requantize_then_dense

DATA = Path(__file__).resolve().parent / "backends" / "data"
RELU, SKIP_GRAM = 19, 30


def _compile_and_verify(capsys, model, artifact, *options):
    code, out, err = run_cli(capsys, "compile", model, "-o", artifact, *options)
    assert code == 0, err
    code, out, err = run_cli(capsys, "run", artifact, "--verify", "--json")
    assert code == 0, err
    return json.loads(out)


def test_fp32_tflite_compiles_and_verifies_against_litert(capsys, tmp_path):
    result = _compile_and_verify(capsys, DATA / "tiny.tflite", tmp_path / "tiny.tar")
    assert result["verify"]["ok"] and result["verify"]["max_rel_error"] <= 1e-5 and result["verify"]["top1_agree"]
    with tarfile.open(tmp_path / "tiny.tar") as tar:
        names = set(tar.getnames())
        meta = json.load(tar.extractfile("metadata.json"))
        reference = tar.extractfile("reference.tflite").read()
    assert names == {"metadata.json", "model.so", "reference.tflite"}
    assert reference == (DATA / "tiny.tflite").read_bytes()
    assert meta["reference"] == "reference.tflite" and meta["model"]["format"] == "tflite"
    assert not meta["model"]["quantized"] and meta["inputs"][0]["dtype"] == "float32"
    code, out, _ = run_cli(capsys, "run", tmp_path / "tiny.tar", "--verify")
    assert code == 0 and "verify vs LiteRT: " in out and "-> PASS" in out
    code, _, err = run_cli(capsys, "bench", tmp_path / "tiny.tar", "--runs", "1")   # it has no ONNX reference
    assert_one_line_error(code, err, 2, "was built from a .tflite file", "edgevit run ARTIFACT --repeat N")


def test_int8_tflite_compiles_and_verifies_in_output_steps(capsys, tmp_path):
    result = _compile_and_verify(capsys, DATA / "tiny_int8.tflite", tmp_path / "tiny_int8.tar")
    verify = result["verify"]
    assert verify["ok"] and verify["max_steps"] <= verify["limit"] == 4 and verify["top1_agree"]
    assert result["outputs"] == [{"shape": [1, 4], "dtype": "int8"}]


def test_ai_edge_quantizer_layout_compiles_and_verifies(capsys, tmp_path):
    """A QUANTIZE coded in ``builtin_code`` only and weights stored after the flatbuffer: TVM 0.27 alone
    reads the first as ADD and the second as empty."""
    model = requantize_then_dense(tmp_path / "rq.tflite", appended=True)
    verify = _compile_and_verify(capsys, model, tmp_path / "rq.tar")["verify"]
    assert verify["ok"] and verify["max_steps"] <= 1, verify


def test_dynamic_input_compiles_for_the_given_shape_and_litert_is_resized(capsys, tmp_path):
    model = one_op(tmp_path / "dynamic.tflite", RELU, shape=(1, 4), signature=(-1, 4))
    code, _, err = run_cli(capsys, "compile", model, "-o", tmp_path / "d.tar")
    assert_one_line_error(code, err, 5, "dynamic shape [None, 4]", "--input-shape input:1,4")
    result = _compile_and_verify(capsys, model, tmp_path / "d.tar", "--input-shape", "3,4")
    assert result["outputs"][0]["shape"] == [3, 4] and result["verify"]["max_abs_error"] == 0


@pytest.mark.qemu
def test_int8_tflite_for_rpi4_verifies_under_qemu(capsys, tmp_path):
    result = _compile_and_verify(capsys, DATA / "tiny_int8.tflite", tmp_path / "rpi4.tar", "--target", "rpi4")
    assert result["device"] == "qemu-aarch64" and result["verify"]["ok"], result


def test_bad_tflite_input_is_one_line_and_an_exit_code(capsys, tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model\n")
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes((DATA / "tiny_int8.tflite").read_bytes()[:-50])
    out = tmp_path / "m.tar"
    cases = [
        (["compile", text, "-o", out], 4, ["notes.tflite is not a TFLite model"]),
        (["compile", truncated, "-o", out], 4, ["cut.tflite is not a valid TFLite model", "truncated or damaged"]),
        (["compile", one_op(tmp_path / "sg.tflite", SKIP_GRAM), "-o", out], 4,
         ["operator SKIP_GRAM (operator 0 of 1) is not supported by TVM 0.27's TFLite frontend"]),
        (["compile", DATA / "tiny.tflite", "--input-shape", "1,3,8", "-o", out], 5,
         ["--input-shape [1, 3, 8] does not fit input 'serving_default_args_0' declared as [1, 3, 8, 8]"]),
        (["compile", DATA / "tiny.tflite", "--quantize", "int8", "--calibration", "fashion-mnist", "-o", out], 2,
         ["a .tflite file is compiled as it is"]),
        (["compile", DATA / "tiny.tflite", "-o", DATA / "tiny.tflite"], 11, ["writing it would destroy the input"]),
        (["quantize", DATA / "tiny.tflite", "--calibration", "fashion-mnist", "-o", tmp_path / "q.onnx"], 4,
         ["only `edgevit compile` takes .tflite files"]),
    ]
    for argv, expected, needles in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, expected, *needles)
    assert not out.exists()


def test_a_tflite_model_too_big_for_the_board_is_refused_before_building(capsys, tmp_path):
    model = one_op(tmp_path / "dynamic.tflite", RELU, shape=(1, 4), signature=(-1, 4))
    code, _, err = run_cli(capsys, "compile", model, "--target", "rpi4", "--input-shape", "300000000,4",
                           "-o", tmp_path / "big.tar")
    assert_one_line_error(code, err, 12, "needs at least 8.94 GiB", "more than the 4 GiB of target rpi4")
