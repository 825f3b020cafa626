"""How much memory a model needs at run time, estimated from its ONNX graph before anything is built.

The estimate is a lower bound: the weights, the inputs and the largest tensor any node produces must all be in
memory at once. It catches shapes that cannot fit (a 224 GiB activation) in a second, instead of after the build
or at the first run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ResourceError
from .runtime.memory import format_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of weights, inputs and the largest produced tensor (named), and their sum."""

    weights: int
    inputs: int
    largest: int
    largest_name: str

    @property
    def total(self) -> int:
        return self.weights + self.inputs + self.largest

    def describe(self) -> str:
        return (f"at least {format_bytes(self.total)} (weights {format_bytes(self.weights)}, inputs "
                f"{format_bytes(self.inputs)}, largest tensor '{self.largest_name}' {format_bytes(self.largest)})")


def _bytes(elem_type: int, dims) -> int:
    from onnx import helper

    try:
        itemsize = helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 4
    return math.prod(int(d) for d in dims) * itemsize


def estimate(model, input_specs) -> MemoryEstimate:
    """Estimate the run-time memory of an ONNX ``model`` whose inputs have the static ``input_specs``."""
    import numpy as np
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a refinement only: without it the graph outputs still count
        inferred = model
    graph = inferred.graph
    weights = sum(_bytes(t.data_type, t.dims) for t in graph.initializer)
    inputs = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in input_specs)
    largest, largest_name = 0, "-"
    for value in [*graph.value_info, *graph.output]:
        ttype = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        if not ttype.HasField("shape") or None in dims:
            continue
        size = _bytes(ttype.elem_type, dims)
        if size > largest:
            largest, largest_name = size, value.name
    return MemoryEstimate(weights, inputs, largest, largest_name)


def check_fits(model, input_specs, memory_bytes: int | None, where: str) -> MemoryEstimate:
    """Estimate, and refuse a model that cannot fit ``memory_bytes`` (None: unknown, not checked).

    Raises
    ------
    ResourceError
        With the estimate and the memory of ``where``.
    """
    return refuse_over(estimate(model, input_specs), input_specs, memory_bytes, where)


def refuse_over(found: MemoryEstimate, input_specs, memory_bytes: int | None, where: str) -> MemoryEstimate:
    """Refuse an estimate (of any model format) over ``memory_bytes``; see :func:`check_fits`."""
    if memory_bytes is not None and found.total > memory_bytes:
        shapes = ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in input_specs)
        raise ResourceError(f"the model with input {shapes} needs {found.describe()} at run time, more than the "
                            f"{format_bytes(memory_bytes)} of {where}: use a smaller input shape or a bigger board")
    return found
