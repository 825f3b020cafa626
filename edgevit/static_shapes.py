"""Fold an ONNX model's shape arithmetic into constants once its input shapes are static.

Models exported with shapes that were dynamic at export time (torch's TorchScript exporter, most ONNX files in
the wild) compute their reshape targets, pads and slice bounds at run time: ``Shape -> Gather -> Concat ->
Reshape``, ``Shape -> ... -> Pad``, ``Shape -> ConstantOfShape -> CumSum`` (positional encodings). With static
input shapes every such value is a constant, but TVM's ONNX frontend keeps them symbolic and then refuses the
model ("Dynamic pads are not supported", "Reshape expects the input tensor to have known shape"). Computing them
once here gives every backend (TVM, the HLS importer, the pipeline planner) a graph of static shapes.

What is folded: ``Shape``/``Size`` and what is computed from them, and constant arithmetic whose results are only
parameters of other nodes (pad and slice bounds, a Pad's constant value written as a DequantizeLinear by a
quantizer); see :func:`_folded_nodes`. Constant arithmetic on weights is left to the backends. A model
with an op whose output shape depends on values (``NonZero``, ``Loop``, ...) or a random op is not folded.
The folded model is checked against the original in onnxruntime on a second random input.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelImportError

VERSION = 2   # of the folding rule: part of the cached file's name, so a changed rule folds again
SHAPE_OPS = {"Shape", "Size"}
# Ops whose output shape depends on values, or whose outputs are not constants: their shapes are not static.
NOT_STATIC = {"NonZero", "NonMaxSuppression", "Unique", "Compress", "Loop", "Scan", "If", "RandomNormal",
              "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
# Inputs that parametrise an op rather than carry its data: TVM's ONNX frontend needs them constant.
PARAMETER_INPUTS = {"Pad": (1, 2, 3), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,),
                    "Resize": (1, 2, 3), "Clip": (1, 2), "ConstantOfShape": (0,), "Unsqueeze": (1,),
                    "Squeeze": (1,), "Split": (1,), "TopK": (1,), "Range": (0, 1, 2), "OneHot": (1,),
                    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceL2": (1,)}
CHECK_RTOL = 1e-5   # folded vs original in onnxruntime, relative to the output's peak (the same kernels run)


def _folded_nodes(graph) -> tuple[list[int], set[str]]:
    """Indices of the nodes to fold, and the tensors they compute.

    A node can be computed now if it is ``Shape``/``Size`` or reads only constants and values computable now.
    Of those, it is folded if it reads a value computed from a shape, or if everything it computes ends, through
    other such nodes, in parameters of other nodes (:data:`PARAMETER_INPUTS`: pad and slice bounds built from
    constants, a Pad's constant value that a quantizer wrote as a DequantizeLinear). Constant arithmetic on
    weights is left to the backends, and a model without shape arithmetic is not changed.
    """
    known = {t.name for t in graph.initializer}
    computable: dict[int, bool] = {}   # node index -> reads a shape-derived value
    shaped: set[str] = set()
    for index, node in enumerate(graph.node):
        inputs, outputs = [i for i in node.input if i], [o for o in node.output if o]
        if node.op_type == "Constant":
            known.update(outputs)
        elif node.op_type in SHAPE_OPS or inputs and all(i in known for i in inputs):
            computable[index] = node.op_type in SHAPE_OPS or any(i in shaped for i in inputs)
            known.update(outputs)
            if computable[index]:
                shaped.update(outputs)
    # backwards: a value is a parameter if every reader takes it as one or is computable and computes parameters
    parameter: dict[str, bool] = {o.name: False for o in graph.output}
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        slots = PARAMETER_INPUTS.get(node.op_type, ())
        feeds = index in computable and all(parameter.get(o, False) for o in node.output if o)
        for slot, name in enumerate(node.input):
            if name:
                parameter[name] = parameter.get(name, True) and (slot in slots or feeds)
    fold = [k for k, from_shape in computable.items()
            if from_shape or all(parameter.get(o, False) for o in graph.node[k].output if o)]
    return sorted(fold), {o for k in fold for o in graph.node[k].output if o}


def _run(model, inputs: dict) -> dict:
    from .ort_session import onnxruntime_session

    session = onnxruntime_session(model.SerializeToString())
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def _random_inputs(specs, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {s.name: (rng.standard_normal(s.shape) if s.dtype.startswith("float")
                     else rng.integers(0, 2, s.shape)).astype(s.dtype) for s in specs}


def has_shape_arithmetic(model) -> bool:
    """Whether ``model`` computes values from tensor shapes, and nothing makes its shapes value-dependent."""
    if any(n.op_type in NOT_STATIC for n in model.graph.node):
        return False
    return bool(_folded_nodes(model.graph)[0])


def fold_shape_arithmetic(model, specs):
    """A copy of ``model`` with its shape arithmetic folded into initializers (shapes inferred into value_info).

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` whose inputs have the static shapes ``specs`` (``frontend.TensorSpec``).

    Raises
    ------
    ModelImportError
        If the folded model's outputs differ from the original's (its shapes depend on input values).
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    fold, values = _folded_nodes(graph)
    kept = [n for k, n in enumerate(graph.node) if k not in set(fold)]
    needed = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    boundary = sorted(values & needed)

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.ValueInfoProto(name=t) for t in boundary)
    try:
        constants = _run(probe, _random_inputs(specs, 0))
    except ModelImportError:
        return model   # onnxruntime cannot run it either: left to the backends' own messages

    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(_live(kept, needed_outputs={o.name for o in graph.output}))
    used = {i for n in folded.graph.node for i in n.input} | {o.name for o in graph.output}
    inits = [t for t in graph.initializer if t.name in used]
    inits += [numpy_helper.from_array(np.asarray(constants[t]), t) for t in boundary]
    del folded.graph.initializer[:]
    folded.graph.initializer.extend(inits)
    del folded.graph.value_info[:]
    folded = onnx.shape_inference.infer_shapes(folded)

    check = _random_inputs(specs, 1)
    want, got = _run(model, check), _run(folded, check)
    for name, w in want.items():
        w, g = np.asarray(w, np.float64), np.asarray(got[name], np.float64)
        err = np.abs(g - w).max() / max(np.abs(w).max(), 1e-30) if w.size and w.shape == g.shape else (
            0.0 if w.shape == g.shape else np.inf)
        if not err <= CHECK_RTOL:
            raise ModelImportError(f"folding the shape arithmetic changed output '{name}' in onnxruntime (relative "
                                   f"error {err:.2g}): its shapes may depend on input values; edgevit builds static "
                                   "shapes only")
    return folded


def _live(nodes: list, needed_outputs: set[str]) -> list:
    """``nodes`` without those whose outputs nothing reads (what only fed the folded shape arithmetic)."""
    live, needed = [], set(needed_outputs)
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]
