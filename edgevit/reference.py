"""The numeric reference: onnxruntime on the same ONNX model and inputs, and how outputs are compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ModelImportError
from .frontend import TensorSpec


def random_inputs(specs: list[TensorSpec], seed: int) -> list[np.ndarray]:
    """Seeded standard-normal inputs (integers in [0, 10) for integer inputs) matching ``specs``."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            arrays.append(rng.integers(0, 10, spec.shape).astype(spec.dtype))
        else:
            arrays.append(rng.standard_normal(spec.shape).astype(spec.dtype))
    return arrays


def onnxruntime_session(onnx_path: Path | bytes, threads: int = 1):
    """An onnxruntime CPU session with a fixed intra-op thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)  # a file or serialized model
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelImportError(f"onnxruntime cannot load the reference model: {str(exc).splitlines()[0]}") from None


def run_onnxruntime(onnx_path: Path, inputs: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of onnxruntime for ``inputs`` given in the model's input order."""
    session = onnxruntime_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


@dataclass
class Comparison:
    """How far a result is from the reference, over all outputs."""

    max_abs_error: float
    max_rel_error: float  # max |a - b| / max |b|, per output
    top1_agree: bool      # argmax of the first output's last axis agrees everywhere
    rtol: float

    @property
    def ok(self) -> bool:
        return self.max_rel_error <= self.rtol and self.top1_agree

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-5) -> Comparison:
    """Compare outputs with the reference (shapes must match; a mismatch is an infinite error)."""
    abs_err = rel_err = 0.0
    for a, b in zip(actual, expected, strict=True):
        if a.shape != b.shape:
            return Comparison(float("inf"), float("inf"), False, rtol)
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        abs_err = max(abs_err, diff)
        rel_err = max(rel_err, diff / scale if scale > 0 else diff)
    first_a, first_b = actual[0], expected[0]
    top1 = bool(np.array_equal(first_a.argmax(-1), first_b.argmax(-1))) if first_a.ndim else True
    return Comparison(abs_err, rel_err, top1, rtol)
