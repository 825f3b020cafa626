"""``edgevit bench`` engines: each in a process of its own, LiteRT when converted (no timings asserted)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgevit.bench import _time_in_workers, _wait_until_idle
from edgevit.bench_report import format_all, format_report
from edgevit.errors import EdgevitError
from edgevit.frontend import TensorSpec
from edgevit.litert import SETUP_HINT
from edgevit.reference import compare, random_inputs
from edgevit.runtime.artifact import Artifact


def _tiny(artifact_path):
    artifact = Artifact.open(artifact_path)
    specs = [TensorSpec.from_json(s) for s in artifact.metadata["inputs"]]
    return artifact, random_inputs(specs, 0)


def test_engines_take_turns_in_their_own_processes(tiny_host_artifact, tmp_path):
    artifact, inputs = _tiny(tiny_host_artifact)
    with artifact:
        models = {"edgevit": (sys.executable, str(artifact.library)),
                  "onnxruntime": (sys.executable, str(artifact.reference))}
        seconds, outputs, _ = _time_in_workers(models, inputs, threads=1, runs=7, warmup=1, tmp=tmp_path)
    assert [len(v) for v in seconds.values()] == [7, 7]
    assert compare(outputs["edgevit"], outputs["onnxruntime"]).ok


def test_an_engine_that_cannot_load_is_an_error(tmp_path):
    with pytest.raises(EdgevitError, match="onnxruntime benchmark process failed to load the model: .*missing.onnx"):
        _time_in_workers({"onnxruntime": (sys.executable, str(tmp_path / "missing.onnx"))},
                         [np.zeros((1, 3), np.float32)], threads=1, runs=2, warmup=0, tmp=tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_next_block_waits_for_spinning_threads_to_stop():
    # The sleeper says when its start-up (CPU spent importing) is over: on a loaded machine that start-up
    # alone took longer than the bound below, and the test failed in CI.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"],
                               stdout=subprocess.PIPE, text=True)
    spinner = subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline().strip() == "ready"
        assert spinner.stdout.readline().strip() == "spinning"  # past start-up, so it really spins
        start = time.monotonic()
        _wait_until_idle(sleeper.pid, timeout=5.0)
        assert time.monotonic() - start < 4.0
        start = time.monotonic()
        _wait_until_idle(spinner.pid, timeout=0.3)
        assert time.monotonic() - start >= 0.3
    finally:
        sleeper.kill()
        spinner.kill()
        sleeper.wait()
        spinner.wait()


def _report(litert: str, with_litert: bool) -> dict:
    engines = {"edgevit": {"median_ms": 12.0, "min_ms": 11.0, "max_ms": 13.0, "std_ms": 0.5, "runs": 5,
                           "gflops": 10.0, "ratio_vs_onnxruntime": 1.2},
               "onnxruntime": {"median_ms": 10.0, "min_ms": 9.0, "max_ms": 11.0, "std_ms": 0.5, "runs": 5,
                               "gflops": 12.0, "ratio_vs_onnxruntime": 1.0}}
    report = {"model": "mobilevit_xxs", "target": "host", "cpu": "x", "threads": 1, "tuned": False,
              "fp32_peak": {"gflops": 100.0, "formula": "f"}, "ratio_vs_onnxruntime": 1.2,
              "agreement": {"max_rel_error": 1e-7, "top1_agree": True}, "litert": litert,
              "load_average": [0.2, 0.3], "other_cpu_share": 0.01, "engines": engines}
    if with_litert:
        engines["litert"] = {"median_ms": 9.0, "min_ms": 8.0, "max_ms": 10.0, "std_ms": 0.5, "runs": 5,
                             "gflops": 13.3, "ratio_vs_onnxruntime": 0.9}
        report["agreement_litert"] = {"max_rel_error": 2e-7, "top1_agree": True}
    return report


def test_reports_show_litert_when_converted():
    report = _report("ran", with_litert=True)
    text = format_report(report)
    assert "litert" in text and "0.90x" in text and "LiteRT vs onnxruntime outputs" in text
    table = format_all({"rows": [report]})
    assert "LiteRT ms" in table and "9.0" in table and "0.90x" in table and SETUP_HINT not in table


def test_reports_say_how_to_get_litert_when_not_converted():
    report = _report(SETUP_HINT, with_litert=False)
    assert f"LiteRT: {SETUP_HINT}" in format_report(report)
    assert f"LiteRT {SETUP_HINT}: mobilevit_xxs" in format_all({"rows": [report]})



def test_report_says_arm_speed_is_not_measured_on_another_host():
    report = dict(_report("ran", with_litert=False), machine="x86_64")
    assert "ARM speed cannot be measured here (x86_64 host)" in format_report(report)
    assert "ARM speed" not in format_report(dict(report, machine="aarch64"))


DATA = Path(__file__).parent / "data"


def test_litert_engine_runs_a_tflite(tmp_path):
    # tiny.tflite was converted by litert-torch (tools/make_tiny_tflite.py); the runtime is in edgevit's venv.
    with np.load(DATA / "tiny_io.npz") as data:
        x, expected = data["x"], data["y"]
    seconds, outputs, _ = _time_in_workers({"litert": (sys.executable, str(DATA / "tiny.tflite"))}, [x], threads=1,
                                           runs=3, warmup=1, tmp=tmp_path)
    assert len(seconds["litert"]) == 3
    np.testing.assert_allclose(outputs["litert"][0], expected, rtol=1e-5, atol=1e-6)


def test_litert_engine_runs_an_int8_tflite(tmp_path):
    """An int8 .tflite (int8 input and output) takes the float input and gives float output, (de)quantized with
    its scales. tiny_int8.tflite is tiny.tflite through ai-edge-quantizer, static int8, per-channel weights,
    calibrated on 16 seeded normal inputs (default_rng(0)): ``python -m edgevit.litert_int8 tiny.tflite
    SAMPLES.npz tiny_int8.tflite per-channel`` in the LiteRT converter venv."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(DATA / "tiny_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    step = interpreter.get_output_details()[0]["quantization"][0]
    with np.load(DATA / "tiny_io.npz") as data:
        x, expected = data["x"], data["y"]
    seconds, outputs, _ = _time_in_workers({"litert": (sys.executable, str(DATA / "tiny_int8.tflite"))}, [x],
                                           threads=1, runs=2, warmup=0, tmp=tmp_path)
    assert len(seconds["litert"]) == 2
    out = outputs["litert"][0]
    assert out.dtype == np.float32 and out.shape == expected.shape
    # a whole number of output steps from the zero point, and near the float model (quantization error only)
    np.testing.assert_allclose(out / step, np.round(out / step), atol=1e-3)
    assert np.abs(out - expected).max() <= 0.1 * np.abs(expected).max()
    assert out.argmax() == expected.argmax()


def test_litert_int8_says_why_there_is_no_int8_tflite(monkeypatch):
    import edgevit.litert as litert

    path, why = litert.int8_tflite("tiny_cnn", [], per_channel=True)
    assert path is None and why == "no int8 .tflite for this model (LiteRT runs converted zoo models only)"
    monkeypatch.setattr(litert, "find_converted", lambda name: None)
    path, why = litert.int8_tflite("mobilevit_xxs", [], per_channel=True)
    assert path is None and "no float .tflite to quantize: run tools/setup_litert.sh mobilevit_xxs" in why


def test_int8_report_names_the_engines_and_says_what_litert_ran():
    report = _report("LiteRT int8: no int8 .tflite for this model (LiteRT runs converted zoo models only)", False)
    report["engines"] = {f"{name} int8": s for name, s in report["engines"].items()}
    # bench.py's int8 agreement: run --verify's per-group verdict (summary, one line per failing group)
    summary = ("3 QDQ groups within 1 step of onnxruntime on edgevit's inputs (1 values at 1 step, 1 of them "
               "half-step ties); end to end max 2 output quantization steps, 3 values differ, top-1 agrees -> PASS")
    report["agreement"] = {"ok": True, "max_steps": 2.0, "differing": 3, "summary": summary, "failing_groups": []}
    report["quantization"] = {"per_channel": True, "method": "minmax", "samples": 32, "calibration": "fashion-mnist"}
    text = format_report(report)
    assert "edgevit int8 / onnxruntime int8 = 1.20x" in text and f"(a probe build, run once untimed): {summary}" in text
    failing = dict(report, agreement=dict(report["agreement"], ok=False, failing_groups=["group n (Conv -> y): FAIL"]))
    assert "edgevit int8 / onnxruntime int8 = 1.20x\ngroup n (Conv -> y): FAIL\nverify vs" in format_report(failing)
    assert "\nLiteRT int8: no int8 .tflite for this model (LiteRT runs converted zoo models only)" in text
    assert "edgevit int8 " in text and "onnxruntime int8 " in text and "FP32 peak" not in text
