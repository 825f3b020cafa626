"""The numeric reference: onnxruntime on the same ONNX model and inputs, and how outputs are compared."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ModelImportError
from .frontend import TensorSpec
from .ort_session import onnxruntime_session  # noqa: F401 - re-exported: the reference session


def random_inputs(specs: list[TensorSpec], seed: int) -> list[np.ndarray]:
    """Seeded standard-normal inputs matching ``specs``: int8/uint8 inputs (quantized values) uniform over their
    whole range, other integer inputs (indices) in [0, 10)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        if spec.dtype in ("int8", "uint8"):
            info = np.iinfo(spec.dtype)
            arrays.append(rng.integers(info.min, info.max, spec.shape, endpoint=True).astype(spec.dtype))
        elif np.issubdtype(np.dtype(spec.dtype), np.integer):
            arrays.append(rng.integers(0, 10, spec.shape).astype(spec.dtype))
        else:
            arrays.append(rng.standard_normal(spec.shape).astype(spec.dtype))
    return arrays


def run_onnxruntime(onnx_path: Path, inputs: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of onnxruntime for ``inputs`` given in the model's input order."""
    session = onnxruntime_session(onnx_path, threads)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def float64_model(onnx_path: Path):
    """The ONNX model with every float32 tensor, initializer, constant and cast target made float64."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(onnx_path))

    def widen(tensor):
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))

    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for tensor in graph.initializer:
            widen(tensor)
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.tensor_type.elem_type == TensorProto.FLOAT:
                value.type.tensor_type.elem_type = TensorProto.DOUBLE
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    widen(attr.t)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attr.g)
                elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.DOUBLE
    return model


def run_float64(onnx_path: Path, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """The model evaluated in float64: onnxruntime where it has float64 kernels, else onnx's numpy evaluator.

    Returns
    -------
    outputs, engine
        The float64 outputs and which engine computed them.
    """
    model = float64_model(onnx_path)
    wide = [x.astype(np.float64) if x.dtype == np.float32 else x for x in inputs]
    names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    try:
        session = onnxruntime_session(model.SerializeToString())
        return session.run(None, dict(zip(names, wide))), "onnxruntime float64"
    except ModelImportError:  # onnxruntime has no float64 kernel for some ops (Conv): numpy evaluates them
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, dict(zip(names, wide))), "onnx reference evaluator float64"


@dataclass
class Comparison:
    """How far a result is from the reference, over all outputs.

    When edgevit and onnxruntime disagree beyond ``rtol``, the model evaluated in float64 decides: the build
    passes if it is within ``rtol`` of the float64 result; ``off`` says which side is not.
    """

    max_abs_error: float
    max_rel_error: float  # max |a - b| / max |b|, per output
    top1_agree: bool      # argmax of the first output's last axis agrees everywhere
    rtol: float
    nonfinite: str | None = None            # "edgevit output 0 has 3 NaN": always a failure
    float64_rel_error: float | None = None  # edgevit vs the float64 evaluation, when it was needed
    reference_float64_rel_error: float | None = None  # onnxruntime vs the float64 evaluation
    float64_top1_agree: bool | None = None
    float64_engine: str | None = None

    @property
    def ok(self) -> bool:
        if self.nonfinite:
            return False
        if self.max_rel_error <= self.rtol and self.top1_agree:
            return True
        return (self.float64_rel_error is not None and self.float64_rel_error <= self.rtol
                and bool(self.float64_top1_agree))

    @property
    def off(self) -> str | None:
        """Which side is off: None (agreement), ``edgevit``, ``onnxruntime``, ``both`` or ``unknown``."""
        if self.nonfinite:
            return self.nonfinite.split()[0]
        if self.max_rel_error <= self.rtol and self.top1_agree:
            return None
        if self.float64_rel_error is None:
            return "unknown"
        edgevit_off = self.float64_rel_error > self.rtol or not self.float64_top1_agree
        reference_off = self.reference_float64_rel_error > self.rtol
        if edgevit_off and reference_off:
            return "both"
        return "edgevit" if edgevit_off else "onnxruntime" if reference_off else None

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok, "off": self.off}

    def summary(self) -> str:
        """One line for the user: errors, tolerance, the float64 arbitration if any, and the verdict."""
        if self.nonfinite:
            return f"{self.nonfinite} -> FAIL"
        text = (f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} (tolerance "
                f"{self.rtol:g}), top-1 {'agrees' if self.top1_agree else 'DIFFERS'}")
        if self.float64_rel_error is not None:
            text += (f"; against float64 ({self.float64_engine}): edgevit {self.float64_rel_error:.3g}, "
                     f"onnxruntime {self.reference_float64_rel_error:.3g}")
        verdict = "PASS" if self.ok else "FAIL"
        return text + f" -> {verdict}" + (f" ({self.off} is off)" if self.off else "")


def _nonfinite(arrays: list[np.ndarray], side: str) -> str | None:
    for i, a in enumerate(arrays):
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
            return f"{side} output {i} has " + " and ".join(f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "Inf")) if n)
    return None


def _errors(actual: list[np.ndarray], expected: list[np.ndarray]) -> tuple[float, float, bool]:
    abs_err = rel_err = 0.0
    for a, b in zip(actual, expected, strict=True):
        if a.shape != b.shape:
            return float("inf"), float("inf"), False
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        abs_err = max(abs_err, diff)
        rel_err = max(rel_err, diff / scale if scale > 0 else diff)
    first_a, first_b = actual[0], expected[0]
    top1 = bool(np.array_equal(first_a.argmax(-1), first_b.argmax(-1))) if first_a.ndim else True
    return abs_err, rel_err, top1


def compare(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-5,
            float64: list[np.ndarray] | None = None, float64_engine: str | None = None) -> Comparison:
    """Compare outputs with the reference (shapes must match; a mismatch is an infinite error).

    NaN or Inf on either side is a failure, named. ``float64`` (the model evaluated in float64) decides when
    the two disagree beyond ``rtol``.
    """
    if len(actual) != len(expected) or not actual:
        return Comparison(float("inf"), float("inf"), False, rtol)
    nonfinite = _nonfinite(actual, "edgevit") or _nonfinite(expected, "onnxruntime")
    if nonfinite:
        return Comparison(float("nan"), float("nan"), False, rtol, nonfinite=nonfinite)
    abs_err, rel_err, top1 = _errors(actual, expected)
    result = Comparison(abs_err, rel_err, top1, rtol)
    if float64 is not None and not result.ok:
        result.float64_rel_error = _errors(actual, float64)[1]
        result.reference_float64_rel_error = _errors(expected, float64)[1]
        result.float64_top1_agree = _errors(actual, float64)[2]
        result.float64_engine = float64_engine
    return result


@functools.lru_cache(maxsize=8)
def _int8_steps(onnx_path: str, mtime_ns: int) -> tuple | None:
    """The output quantization steps of a QDQ model, or None for a float model (read once per file version)."""
    import onnx

    from .quantize import is_qdq_model, output_steps

    model = onnx.load(onnx_path, load_external_data=False)
    return tuple(output_steps(model)) if is_qdq_model(model) else None


def verify(outputs: list[np.ndarray], onnx_path: Path, inputs: list[np.ndarray], rtol: float,
           reference: list[np.ndarray] | None = None):
    """``--verify``: compare edgevit's outputs with onnxruntime, and with float64 when the two disagree.

    ``reference`` is onnxruntime's result on ``inputs`` when the caller has it already (many results of one
    input); otherwise onnxruntime runs here. A quantized (QDQ) model is checked by the int8 rule instead
    (:mod:`edgevit.quantize.verify`: every output within a few output quantization steps of onnxruntime's on
    the same QDQ model, top-1 agreeing; ``rtol`` does not apply), and has no float64 arbitration: the two
    engines compute the same integers, so there is no exact answer for a wider float to approach.

    Returns
    -------
    Comparison or quantize.verify.Int8Comparison
        Both have ``ok``, ``nonfinite``, ``summary()`` and ``to_json()``.
    """
    if reference is None:
        reference = run_onnxruntime(onnx_path, inputs)
    steps = _int8_steps(str(onnx_path), Path(onnx_path).stat().st_mtime_ns)
    if steps is not None:
        from .quantize import compare_int8

        return compare_int8(outputs, reference, list(steps))
    result = compare(outputs, reference, rtol)
    if result.ok or result.nonfinite or result.max_rel_error == float("inf"):
        return result
    wide, engine = run_float64(onnx_path, inputs)
    return compare(outputs, reference, rtol, wide, engine)
