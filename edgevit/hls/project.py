"""The HLS backend's library API: model -> calibrated program -> project; C-simulation checks; reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, ModelImportError, VerificationError
from ..pynq.manifest import TAIL_JSON, TAIL_NPZ
from ..targets import get_target
from . import codegen, csim, estimator
from .fixed import Fmt, to_float
from .onnx_import import ImportResult, lower_onnx, write_cpu_tail
from .program import Program, calibrate
from .qdq_import import restore_int8_formats
from .torch_import import lower, to_accel_layout


def generate(model, input_shape, board: str, out: Path, samples, overrides: dict | None = None,
             test_inputs=None, meta: dict | None = None, testbench: bool = True,
             every_unit: bool = False) -> tuple[Program, Path]:
    """Lower ``model``, calibrate on ``samples`` (NCHW or token arrays), pick lanes for ``board``, write ``out``.

    ``test_inputs`` (default: the first calibration sample) become the testbench's inputs. With
    ``testbench=False`` no ``testdata/`` is written (no golden-model run): the sources synthesis reads only.
    ``every_unit``: the top dispatches every op, not only the model's (``codegen.dispatched_kinds``).
    """
    return write(lower(model, input_shape), board, out, samples, overrides, test_inputs, meta, testbench, every_unit)


def generate_onnx(model, board: str, out: Path, samples, overrides: dict | None = None, test_inputs=None,
                  meta: dict | None = None) -> tuple[ImportResult, Path]:
    """:func:`generate` for an ``onnx.ModelProto``: map its ops (:mod:`.onnx_import`) and :func:`write_onnx`."""
    result = lower_onnx(model, np.asarray(samples[0]))
    return result, write_onnx(result, board, out, samples, overrides, test_inputs, meta)


def write_onnx(result: ImportResult, board: str, out: Path, samples, overrides: dict | None = None,
               test_inputs=None, meta: dict | None = None) -> Path:
    """Write the project of an imported ONNX model and, if the model continues after the accelerator's part,
    that part as ``cpu_tail.json``/``.npz`` beside it (checked against onnxruntime on the first sample). If the
    CPU part cannot be written (an op the board's numpy interpreter lacks), ``result.tail_error`` says why."""
    meta = {**(meta or {}), "cpu_tail_input": result.cut, "unsupported": list(result.unsupported or ())}
    _, path = write(result.program, board, out, samples, overrides, test_inputs, meta)
    for stale in (TAIL_JSON, TAIL_NPZ):
        (path / stale).unlink(missing_ok=True)
    try:
        write_cpu_tail(result, np.asarray(samples[0]), path)
    except ModelImportError as exc:   # the accelerator project stands; only the board's CPU part is missing
        result.tail_error = str(exc)
    return path


def write(prog: Program, board: str, out: Path, samples, overrides: dict | None = None, test_inputs=None,
          meta: dict | None = None, testbench: bool = True, every_unit: bool = False) -> tuple[Program, Path]:
    """Calibrate a lowered ``prog`` on ``samples``, pick lanes for ``board`` and write the project ``out``."""
    fpga = get_target(board).require_fpga()
    samples = [to_accel_layout(x) for x in samples]
    calibrate(prog, samples, overrides)
    estimator.apply_lanes(prog, estimator.choose_lanes(prog, fpga))
    tests = samples[:1] if test_inputs is None else [to_accel_layout(x) for x in test_inputs]
    codegen.write_project(prog, out, fpga, board, np.asarray(tests) if testbench else None, meta, every_unit)
    return prog, Path(out)


def run_csim(project: Path) -> dict:
    """C-simulate a project on its test inputs; compare bit for bit with the golden model and with float64.

    Raises
    ------
    VerificationError
        If any value of any tensor differs from the golden model.
    """
    project = Path(project)
    if not (project / "program.json").exists():
        raise InputError(f"{project} is not an edgevit HLS project (no program.json); create one with `edgevit hls MODEL -o DIR`")
    if not (project / "program.bin").exists() or not (project / "testdata" / "samples.npy").exists():
        raise InputError(f"{project} has no layer program or no test data (made by an older edgevit, or without "
                         f"samples): regenerate it with `edgevit hls MODEL -o {project}`")
    prog, doc = codegen.load_program(project)
    restore_int8_formats(prog, doc.get("meta"))   # an int8 (QDQ) project: its tensors' scales and zero points
    samples = np.load(project / "testdata" / "samples.npy")
    outputs, probes = csim.simulate_project(project, probes=True)
    fo = prog.formats[prog.output]
    mismatches, errors, agree = {}, [], 0
    for x, out, probe in zip(samples, outputs, probes):
        env = prog.run_fixed(prog.quantize_input(x))
        for name in prog.shapes:
            mismatches[name] = mismatches.get(name, 0) + int((probe[name] != env[name].ravel()).sum())
        ref = prog.run_float(x)[prog.output].ravel()
        got = to_float(out, fo)
        errors.append(float(np.abs(got - ref).max()))
        agree += int(np.argmax(got) == np.argmax(ref))
    total = sum(mismatches.values())
    result = {"inputs": len(samples), "mismatches": total, "per_tensor_mismatches": mismatches,
              "max_abs_error_vs_float": max(errors), "output_format": str(fo),
              "argmax_agreement": agree / len(samples)}
    if total:
        bad = [k for k, v in mismatches.items() if v]
        raise VerificationError(f"C-simulation differs from the golden model in {total} values (tensors {bad[:5]})")
    return result


def parse_formats(specs: list[str]) -> dict:
    """``name=W,I`` strings to format overrides."""
    out = {}
    for spec in specs or []:
        try:
            name, wi = spec.split("=")
            w, i = (int(v) for v in wi.split(","))
        except ValueError:
            raise InputError(f"bad --format '{spec}': expected TENSOR=W,I such as l3_linear.out=16,6") from None
        out[name] = Fmt(w, i)
    return out
