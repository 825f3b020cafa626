"""edgevit.frontend_tflite: reading and checking .tflite files (no build here; builds are in test_cli_tflite.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import EdgevitError, InputError, ModelImportError
from edgevit.frontend_tflite import (builtin_code, check_operators, from_tflite_file, is_quantized, memory_estimate,
                                     operator_name, output_steps, read_tflite)
from tflite_builder import Graph, Op, Tensor, one_op, requantize_then_dense, write

DATA = Path(__file__).resolve().parent / "backends" / "data"
RELU, SKIP_GRAM, CUSTOM = 19, 30, 32   # tflite.BuiltinOperator values


def test_the_fixtures_read_with_their_inputs_and_kind():
    fp32, int8 = from_tflite_file(DATA / "tiny.tflite"), from_tflite_file(DATA / "tiny_int8.tflite")
    assert [(s.shape, s.dtype) for s in fp32.inputs] == [((1, 3, 8, 8), "float32")] and not fp32.quantized
    assert [(s.shape, s.dtype) for s in int8.inputs] == [((1, 3, 8, 8), "int8")] and int8.quantized
    assert fp32.inputs[0].name == int8.inputs[0].name == "serving_default_args_0"
    # int8 outputs are compared in their own integers; a float output has no step
    assert output_steps(int8.load()[1]) == [1.0] and output_steps(fp32.load()[1]) == [None]
    estimate = memory_estimate(int8)
    assert estimate.weights >= 8 * 27 + 4 * 288 and estimate.inputs == 3 * 8 * 8


def test_builtin_code_reads_quantize_where_the_tflite_package_reads_add(tmp_path):
    """ai-edge-quantizer writes QUANTIZE (114) in ``builtin_code`` only; the tflite package's accessor returns
    the absent 8-bit field for codes < 127 (0, ADD). LiteRT takes the larger field, as edgevit does."""
    _, model = read_tflite(requantize_then_dense(tmp_path / "rq.tflite", appended=False))
    code = model.OperatorCodes(model.Subgraphs(0).Operators(0).OpcodeIndex())
    assert code.BuiltinCode() == 0 and builtin_code(code) == 114
    assert operator_name(model, model.Subgraphs(0).Operators(0)) == "QUANTIZE"
    assert is_quantized(model)


def _damaged(tmp_path) -> dict[str, Path]:
    data = (DATA / "tiny_int8.tflite").read_bytes()
    cases = {"empty": b"", "text": b"a text file named .tflite\n", "identifier only": data[:8],
             "a tenth": data[:len(data) // 10], "half": data[:len(data) // 2], "all but 50 bytes": data[:-50]}
    appended = requantize_then_dense(tmp_path / "appended.tflite", appended=True).read_bytes()
    cases["appended weights cut off"] = appended[:-40]
    bad_zero = bytearray(appended)
    assert bad_zero[629] == 255  # the high byte of a zero point: -5 becomes -69269232549893
    bad_zero[629] = 192
    cases["zero point out of int8"] = bytes(bad_zero)
    paths = {}
    for name, blob in cases.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.tflite"
        paths[name].write_bytes(blob)
    paths["schema version 2"] = one_op(tmp_path / "v2.tflite", RELU, version=2)
    (tmp_path / "folder.tflite").mkdir()
    paths["a folder"] = tmp_path / "folder.tflite"
    paths["missing"] = tmp_path / "missing.tflite"
    return paths


@pytest.mark.parametrize("case", ["empty", "text", "identifier only", "a tenth", "half", "all but 50 bytes",
                                  "appended weights cut off", "zero point out of int8", "schema version 2",
                                  "a folder", "missing"])
def test_a_damaged_or_foreign_file_is_one_model_import_error(tmp_path, case):
    path = _damaged(tmp_path)[case]
    with pytest.raises(ModelImportError) as info:
        from_tflite_file(path)
    assert "\n" not in str(info.value) and str(path.name) in str(info.value)


def test_randomly_damaged_files_raise_edgevit_errors_only(tmp_path):
    """Seeded byte flips and truncations of the fixtures through everything compile does before building
    (reading, operator check, memory estimate, output steps, TVM's import): an edgevit error or a model, never
    another exception."""
    from edgevit.backends import tvm_compiler

    supported, outcomes = tvm_compiler.supported_tflite_ops(), {"ok": 0, "refused": 0}
    sources = [DATA / "tiny_int8.tflite", DATA / "tiny.tflite",
               requantize_then_dense(tmp_path / "rq.tflite", appended=True)]
    rng = np.random.default_rng(0)
    path = tmp_path / "damaged.tflite"
    for source in sources:
        data = source.read_bytes()
        for k in range(60):
            blob = bytearray(data[:rng.integers(8, len(data))] if k % 4 == 0 else data)
            if k % 4:
                for i in rng.integers(8, len(blob), rng.integers(1, 20)):
                    blob[i] = rng.integers(0, 256)
            path.write_bytes(bytes(blob))
            try:
                model = from_tflite_file(path)
                _, root = model.load()
                check_operators(root, supported)
                memory_estimate(model), output_steps(root)
                tvm_compiler.import_tflite(root, model.inputs)
                outcomes["ok"] += 1
            except EdgevitError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["ok"] > 0, outcomes


def test_an_operator_tvm_cannot_convert_is_named(tmp_path):
    from edgevit.backends import tvm_compiler

    supported = tvm_compiler.supported_tflite_ops()
    assert {"CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "QUANTIZE"} <= supported
    for code, name in ((SKIP_GRAM, "SKIP_GRAM"), (CUSTOM, "CUSTOM:MyOp")):
        _, model = read_tflite(one_op(tmp_path / f"{code}.tflite", code, custom="MyOp" if code == CUSTOM else None))
        with pytest.raises(ModelImportError, match=f"operator {name} \\(operator 0 of 1\\) is not supported"):
            check_operators(model, supported)


def test_dynamic_dimensions_need_an_input_shape_that_fits(tmp_path):
    path = one_op(tmp_path / "dynamic.tflite", RELU, shape=(1, 4), signature=(-1, 4))
    with pytest.raises(InputError, match=r"input 'input' of dynamic.tflite has dynamic shape \[None, 4\]: give a "
                                         r"static one with --input-shape input:1,4"):
        from_tflite_file(path)
    assert from_tflite_file(path, "3,4").inputs[0].shape == (3, 4)
    assert from_tflite_file(path, "input:2,4").inputs[0].shape == (2, 4)
    for shape in ("3,5", "3,4,1", "4"):
        with pytest.raises(InputError, match="does not fit input 'input' declared as"):
            from_tflite_file(path, shape)
    with pytest.raises(InputError, match="unknown input"):
        from_tflite_file(path, "image:3,4")
    with pytest.raises(InputError, match="does not fit"):   # a static model takes only its own shape
        from_tflite_file(DATA / "tiny.tflite", "2,3,8,8")


def test_an_input_type_an_artifact_cannot_carry_is_refused(tmp_path):
    graph = Graph([Tensor("input", (1, 4), "int16"), Tensor("output", (1, 4), "int16")], [Op(RELU, [0], [1])],
                  [0], [1])
    with pytest.raises(ModelImportError, match="input 'input' has TFLite tensor type int16; edgevit takes float32"):
        from_tflite_file(write(graph, tmp_path / "int16.tflite"))
