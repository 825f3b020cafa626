"""An int8 build's outputs against a reference engine's on the same quantized model, in output quantization steps.

Both sides compute the same integer tensors up to rounding: a value within float rounding of a half step can
round the other way, and one such flip moves later tensors by whole steps (in random-weight mobilevitv2 up to
27 output steps; ``tools/int8_flip_propagation.py``). So this end-to-end comparison decides only where nothing
finer exists: the ``.tflite`` path against LiteRT (every output within ``MAX_STEPS`` steps, top-1 agreeing) and
``bench``'s report. ``run --verify`` of a QDQ ONNX build judges each QDQ group instead
(:mod:`edgevit.quantize.groups`) and reports this comparison's step count; its top-1 test (the same class, or a
tie within ``MAX_STEPS`` steps in the reference's own top two) is part of that rule. The step is the scale of
the DequantizeLinear producing each output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MAX_STEPS = 4
_MOVES = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def output_steps(model) -> list[float | None]:
    """The quantization step of each graph output of a QDQ ``onnx.ModelProto`` (None for a float output).

    A per-axis output scale gives its largest step. An output computed from a ``DequantizeLinear`` by data
    movement or a multiplication/division by a constant scalar (EfficientFormer averages its two heads: ``/ 2``)
    has that step scaled accordingly.
    """
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producers = {o: n for n in model.graph.node for o in n.output}
    steps = []
    for output in model.graph.output:
        node, factor = producers.get(output.name), 1.0
        while node is not None and node.op_type != "DequantizeLinear":
            scalar = [constants[i] for i in node.input[1:] if i in constants and constants[i].size == 1]
            if node.op_type in _MOVES:
                pass
            elif node.op_type in ("Mul", "Div") and len(node.input) == 2 and len(scalar) == 1 \
                    and node.input[0] in producers and float(scalar[0].reshape(())) != 0:
                value = abs(float(scalar[0].reshape(())))
                factor *= value if node.op_type == "Mul" else 1 / value
            else:
                node = None
                break
            node = producers.get(node.input[0])
        scale = constants.get(node.input[1]) if node is not None else None
        steps.append(float(np.max(np.abs(scale))) * factor if scale is not None else None)
    return steps


@dataclass
class Int8Comparison:
    """edgevit's int8 outputs against onnxruntime's, in output quantization steps."""

    max_steps: float        # the largest difference, in steps of its output
    differing: int          # how many output values differ at all
    top1_agree: bool        # per row: the same class, or a tie within the limit in the reference
    limit: int = MAX_STEPS
    nonfinite: str | None = None

    @property
    def ok(self) -> bool:
        return self.nonfinite is None and self.max_steps <= self.limit and self.top1_agree

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        if self.nonfinite:
            return f"{self.nonfinite} -> FAIL"
        return (f"max difference {self.max_steps:g} output quantization steps (limit {self.limit}), "
                f"{self.differing} values differ, top-1 {'agrees' if self.top1_agree else 'DIFFERS'} -> "
                f"{'PASS' if self.ok else 'FAIL'}")


def compare_int8(actual: list[np.ndarray], expected: list[np.ndarray], steps: list[float | None],
                 limit: int = MAX_STEPS) -> Int8Comparison:
    """Compare an int8 build's outputs with onnxruntime's on the same QDQ model (see the module docstring).

    Outputs without a step (float outputs of a partly quantized model) count in steps of 1e-5 of their largest
    reference value, the float rule's tolerance. Shapes that differ are an infinite difference.
    """
    worst, differing, units = 0.0, 0, []
    for a, b, step in zip(actual, expected, steps, strict=True):
        for side, x in (("edgevit", a), ("onnxruntime", b)):
            if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
                return Int8Comparison(float("nan"), 0, False, limit, f"{side} output has NaN or Inf")
        if a.shape != b.shape:
            return Int8Comparison(float("inf"), 0, False, limit)
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        unit = step or (max(float(np.max(np.abs(b))) * 1e-5, float(np.finfo(np.float32).tiny)) if b.size else 1.0)
        differing += int(np.count_nonzero(diff))
        worst = max(worst, float(np.max(diff)) / unit if diff.size else 0.0)
        units.append(unit)
    return Int8Comparison(round(worst, 3), differing, _top1_agrees(actual[0], expected[0], limit * units[0]), limit)


def _top1_agrees(actual: np.ndarray, expected: np.ndarray, tolerance: float) -> bool:
    """Whether each row's class agrees, or the reference scores both classes within ``tolerance`` (a tie)."""
    if not actual.ndim or not actual.size:
        return True
    mine, theirs = actual.argmax(-1), expected.argmax(-1)
    picked = np.take_along_axis(expected, mine[..., None], -1)[..., 0]
    best = np.take_along_axis(expected, theirs[..., None], -1)[..., 0]
    return bool(np.all((mine == theirs) | (best.astype(np.float64) - picked <= tolerance)))
