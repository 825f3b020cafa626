"""Fold an ONNX model's shape arithmetic into constants once its input shapes are static.

Models exported with shapes that were dynamic at export time (torch's TorchScript exporter, most ONNX files in
the wild) compute their reshape targets, pads and slice bounds at run time: ``Shape -> Gather -> Concat ->
Reshape``, ``Shape -> ... -> Pad``, ``Shape -> ConstantOfShape -> CumSum`` (positional encodings). With static
input shapes every such value is a constant, but TVM's ONNX frontend keeps them symbolic and then refuses the
model ("Dynamic pads are not supported", "Reshape expects the input tensor to have known shape"). Computing them
once here gives every backend (TVM, the HLS importer, the pipeline planner) a graph of static shapes.

What is folded: ``Shape``/``Size``, and every node that reads only constants and folded values and either reads
a folded value, computes integers only (pad and slice bounds built from constants; quantization ops excepted) or
computes only parameters of other nodes (a Pad's constant value written as a DequantizeLinear by a quantizer).
Other constant arithmetic (on weights) is left to the backends. A model
with an op whose output shape depends on values (``NonZero``, ``Loop``, ...) or a random op is not folded.
The folded model is checked against the original in onnxruntime on a second random input.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelImportError

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


def _is_quantization(op: str) -> bool:
    return op.startswith(("Quantize", "Dequantize", "DynamicQuantize", "QLinear")) or op.endswith("Integer")


def _integer_typed(model) -> set[str]:
    """The tensors of ``model`` whose inferred element type is an integer or bool (index arithmetic)."""
    import onnx

    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
               onnx.TensorProto.UINT8, onnx.TensorProto.BOOL}
    typed = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True).graph
    values = [*typed.value_info, *typed.output, *typed.input]
    return ({v.name for v in values if v.type.tensor_type.elem_type in integer}
            | {t.name for t in typed.initializer if t.data_type in integer})


def _parameter_reads(graph) -> dict[str, bool]:
    """Per tensor: whether every node that reads it reads it as a parameter (:data:`PARAMETER_INPUTS`)."""
    reads: dict[str, bool] = {}
    for node in graph.node:
        slots = PARAMETER_INPUTS.get(node.op_type, ())
        for slot, name in enumerate(node.input):
            if name:
                reads[name] = reads.get(name, True) and slot in slots
    for output in graph.output:
        reads[output.name] = False
    return reads


def _folded_nodes(graph, integer: set[str]) -> tuple[list[int], set[str]]:
    """Indices of the nodes to fold, and the tensors they compute.

    A node is folded if it is ``Shape``/``Size``, or reads only constants and folded values and either reads a
    value computed from a shape, computes integers only (pads, slice bounds: index arithmetic) or computes only
    parameters of other nodes (a Pad's constant value that a quantizer wrote as a DequantizeLinear). Other
    quantization ops are never folded: a QDQ model's weights stay quantized.
    """
    known = {t.name for t in graph.initializer}
    parameters = _parameter_reads(graph)
    folded: set[str] = set()
    fold = []
    for index, node in enumerate(graph.node):
        inputs = [i for i in node.input if i]
        outputs = [o for o in node.output if o]
        if node.op_type == "Constant":
            known.update(outputs)
            continue
        constant = bool(inputs) and all(i in known or i in folded for i in inputs)
        if node.op_type in SHAPE_OPS or constant and (
                any(i in folded for i in inputs) or all(parameters.get(o, False) for o in outputs)
                or not _is_quantization(node.op_type) and all(o in integer for o in outputs)):
            fold.append(index)
            folded.update(outputs)
    return fold, folded


def _candidates(graph) -> bool:
    """Cheap test before shape inference: a Shape/Size node or a non-Constant node reading only constants."""
    known = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return any(n.op_type in SHAPE_OPS or (n.op_type != "Constant" and n.input and all(i in known for i in n.input if i))
               for n in graph.node)


def _run(model, inputs: dict) -> dict:
    from .reference import onnxruntime_session

    session = onnxruntime_session(model.SerializeToString())
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def _random_inputs(specs, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {s.name: (rng.standard_normal(s.shape) if s.dtype.startswith("float")
                     else rng.integers(0, 2, s.shape)).astype(s.dtype) for s in specs}


def has_shape_arithmetic(model) -> bool:
    """Whether ``model`` computes values from tensor shapes, and nothing makes its shapes value-dependent."""
    if any(n.op_type in NOT_STATIC for n in model.graph.node) or not _candidates(model.graph):
        return False
    return bool(_folded_nodes(model.graph, _integer_typed(model))[0])


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
    fold, values = _folded_nodes(graph, _integer_typed(model))
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
            raise ModelImportError(f"folding the shape arithmetic changed output '{name}' (relative error "
                                   f"{err:.2g}): its shapes depend on input values, which edgevit cannot compile")
    return folded


def _live(nodes: list, needed_outputs: set[str]) -> list:
    """``nodes`` without those whose outputs nothing reads (what only fed the folded shape arithmetic)."""
    live, needed = [], set(needed_outputs)
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]
