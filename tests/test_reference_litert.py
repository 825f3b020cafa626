"""edgevit.reference_litert: LiteRT as the reference of .tflite builds, and the rules it verifies them by."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import ModelImportError
from edgevit.reference import random_inputs
from edgevit.frontend_tflite import from_tflite_file
from edgevit.reference_litert import run_litert, verify_tflite

DATA = Path(__file__).resolve().parent / "backends" / "data"


def test_litert_in_its_own_process_gives_the_in_process_result():
    from ai_edge_litert.interpreter import Interpreter

    model = from_tflite_file(DATA / "tiny_int8.tflite")
    x = random_inputs(model.inputs, 0)
    assert x[0].dtype == np.int8 and x[0].min() < -100 and x[0].max() > 100   # the whole int8 range
    interpreter = Interpreter(model_path=str(model.path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[0])
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    (got,) = run_litert(model.path, x)
    assert got.dtype == np.int8 and np.array_equal(got, expected)


def test_the_int8_rule_counts_output_steps_and_the_float_rule_relative_error():
    int8, fp32 = from_tflite_file(DATA / "tiny_int8.tflite"), from_tflite_file(DATA / "tiny.tflite")
    x8, x32 = random_inputs(int8.inputs, 1), random_inputs(fp32.inputs, 1)
    (ref8,), (ref32,) = run_litert(int8.path, x8), run_litert(fp32.path, x32)
    assert verify_tflite([ref8], int8.path, x8, 1e-5, [ref8]).ok
    near = ref8.astype(np.int16)
    near[0, np.argmin(near[0])] += 3         # 3 steps on the lowest class: within the limit (4)
    close = verify_tflite([near.astype(np.int8)], int8.path, x8, 1e-5, [ref8])
    assert close.ok and close.max_steps == 3 and close.differing == 1
    far = ref8.astype(np.int16) - 5
    assert not verify_tflite([far.astype(np.int8)], int8.path, x8, 1e-5, [ref8]).ok
    assert verify_tflite([ref32 * (1 + 1e-6)], fp32.path, x32, 1e-5, [ref32]).ok
    off = verify_tflite([ref32 + 1e-3 * np.abs(ref32).max()], fp32.path, x32, 1e-5, [ref32])
    assert not off.ok and off.max_rel_error == pytest.approx(1e-3, rel=1e-3)


def test_a_litert_crash_is_a_model_import_error(tmp_path, monkeypatch):
    """A damaged file can crash LiteRT's C++ (seen: two flipped bytes, SIGSEGV): the crash stays in the worker."""
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))
    with pytest.raises(ModelImportError, match=r"LiteRT crashed \(SIGSEGV\) running the reference model tiny.tflite"):
        run_litert(DATA / "tiny.tflite", random_inputs(from_tflite_file(DATA / "tiny.tflite").inputs, 0))


def test_litert_refusing_an_input_is_a_model_import_error():
    model = from_tflite_file(DATA / "tiny.tflite")
    with pytest.raises(ModelImportError, match="LiteRT cannot run the reference model"):
        run_litert(model.path, [np.zeros((1, 3, 8), np.float32)])   # a rank LiteRT cannot resize to
