"""Float fallback: measure how much error each quantized node adds, and pick the worst ones to keep in float.

The measurement runs on onnxruntime's QDQ debugging helpers (``onnxruntime.quantization.qdq_loss_debug``):
``create_weight_matching`` pairs each quantized weight/bias with its float original, and
``modify_model_output_intermediate_tensors`` + ``collect_activations`` run a model saving every float tensor.
Their own ``compute_activation_error`` gives ``xmodel_err`` (float model vs QDQ model at the same tensor), which is
cumulative: a node after a badly quantized layer inherits its error, so ranking by it picks the last nodes, not
the layer to blame. The error of a node here is local instead: the QDQ model gets a copy of every quantized node
that reads the same dequantized activations but the float weights and biases and writes its output unquantized;
the node's error is the SQNR of its output after its QuantizeLinear -> DequantizeLinear (what its readers get,
named as ``create_activation_matching`` pairs them) against that copy's output. The SQNR is
``compute_signal_to_quantization_noice_ratio``'s, ``20 log10(|float| / |float - int8|)`` over all samples,
accumulated sample by sample so memory does not grow with the sample count. The N nodes with the lowest SQNR go
to ``quantize_static(nodes_to_exclude=...)``, and :func:`float_outputs` then gives their readers the float
output (what was measured).

SQNR is over the whole tensor: a layer whose huge channel sets the scale and crushes its small channels scores
well when the huge channel dominates the tensor's norm; that loss shows up in the node that reads it.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_REF = "_edgevit_float_ref"
CHUNK = 4  # samples per onnxruntime session of the augmented model: every float tensor of a run is kept


@dataclass(frozen=True)
class NodeError:
    """One quantized node's measured error: its name (what ``nodes_to_exclude`` takes), operator and SQNR."""

    node: str
    op: str
    sqnr_db: float

    def to_json(self) -> dict:
        """``sqnr_db`` is None for a node whose output was exact."""
        return {"node": self.node, "op": self.op,
                "sqnr_db": round(self.sqnr_db, 2) if math.isfinite(self.sqnr_db) else None}


def name_nodes(model) -> int:
    """Give every unnamed node of an ``onnx.ModelProto`` a unique name (``nodes_to_exclude`` selects by name).

    Returns the number of nodes named.
    """
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, named = name, named + 1
            taken.add(name)
    return named


def sqnr_db(signal: float, noise: float) -> float:
    """onnxruntime's SQNR from the sums of squares of the float tensor and of the difference (same eps clamps),
    except that no difference at all is infinite (onnxruntime's clamps give 0 dB for two zero tensors)."""
    if noise == 0:
        return math.inf
    eps = float(np.finfo("float").eps)
    return 20 * math.log10(max(math.sqrt(signal), eps) / max(math.sqrt(noise), eps))


def _augment(qdq, float_model, float_weights: dict[str, np.ndarray]):
    """The QDQ model plus, per quantized node, a float-weight copy on the same dequantized inputs.

    The quantizer drops a ReLU/Clip whose range the output's quantization covers (the node then writes the
    ReLU's output tensor): the copy gets that float ReLU/Clip back from ``float_model``.

    Returns the model and ``{node name: (op, [outputs as the next node reads them], [copy's outputs])}``.
    """
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import (DEQUANT_OUTPUT_SUFFIX, QUANT_INPUT_SUFFIX,
                                                      TENSOR_NAME_QUANT_SUFFIX)

    def unquantized(name: str) -> str:
        return name[:-len(QUANT_INPUT_SUFFIX)] if name.endswith(QUANT_INPUT_SUFFIX) else name

    initializers = {t.name for t in qdq.graph.initializer}
    weight_of = {n.output[0]: n.input[0][:-len(TENSOR_NAME_QUANT_SUFFIX)] for n in qdq.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in initializers
                 and n.input[0][:-len(TENSOR_NAME_QUANT_SUFFIX)] in float_weights}
    for name in sorted(set(weight_of.values())):  # a bias's DequantizeLinear output has the float name
        qdq.graph.initializer.append(numpy_helper.from_array(float_weights[name], name + _REF))
    dequantized = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    produced = {o for n in qdq.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_model.graph.node}
    consumers: dict[str, list] = {}
    for n in float_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    nodes = {}
    for node in list(qdq.graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or not node.name \
                or not any(i in dequantized for i in node.input) or node.name not in float_nodes:
            continue
        original = float_nodes[node.name]
        chains = [_removed_after(t, unquantized(q), consumers) for t, q in zip(original.output, node.output)]
        if len(original.output) != len(node.output) or any(c is None for c in chains):
            continue  # rewritten in a way this measurement does not follow: not measured
        ours = set(original.output) | {o for chain in chains for c in chain for o in c.output}
        copies = [(original, [weight_of[i] + _REF if i in weight_of else i for i in node.input])]
        copies += [(c, [i + _REF if i in ours else weight_of.get(i, i) for i in c.input])
                   for chain in chains for c in chain]
        for source, inputs in copies:
            copy = qdq.graph.node.add()
            copy.CopyFrom(source)
            copy.name = source.name + _REF
            copy.input[:] = inputs
            copy.output[:] = [o + _REF if o else o for o in source.output]
        outputs = [chain[-1].output[0] if chain else o for chain, o in zip(chains, original.output)]
        read = [unquantized(o) + DEQUANT_OUTPUT_SUFFIX if unquantized(o) + DEQUANT_OUTPUT_SUFFIX in produced
                else unquantized(o) for o in node.output]
        nodes[node.name] = (node.op_type, read, [o + _REF for o in outputs])
    return qdq, nodes


def _removed_after(tensor: str, target: str, consumers: dict) -> list | None:
    """The float nodes (ReLU/Clip) the quantizer removed between ``tensor`` and the QDQ node's output
    ``target``: a single-consumer chain, or None if ``target`` is not reached that way."""
    chain = []
    while tensor != target:
        if len(consumers.get(tensor, [])) != 1 or len(chain) == 4:
            return None
        chain.append(consumers[tensor][0])
        tensor = chain[-1].output[0]
    return chain


def node_errors(float_path: Path, qdq_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[NodeError]:
    """The local error of every quantized node of ``qdq_path`` (see the module docstring), worst first.

    Parameters
    ----------
    float_path
        The float model ``qdq_path`` was quantized from (after ``quant_pre_process``), for the float weights.
    qdq_path
        Its QDQ form; only nodes with a name can be measured (and excluded).
    feeds
        The samples, as onnxruntime input dicts.

    Returns
    -------
    list of NodeError
        One per quantized node whose outputs onnxruntime's helpers could save (float outputs of inferred
        shape), lowest SQNR first.
    """
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_weight_matching,
                                                         modify_model_output_intermediate_tensors)

    float_model = onnx.load(str(float_path))
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.CRITICAL)  # it logs an error for each constant that is not an initializer
    try:
        weights = {k: v["float"] for k, v in create_weight_matching(str(float_path), str(qdq_path)).items()}
    finally:
        logging.getLogger().setLevel(quiet)
    for node in float_model.graph.node:  # constants the exporter wrote as Constant nodes (scalars of Mul/Add)
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            weights.setdefault(node.output[0], numpy_helper.to_array(node.attribute[0].t))
    model, nodes = _augment(onnx.load(str(qdq_path)), float_model, weights)
    sums = {name: [0.0, 0.0] for name in nodes}
    with tempfile.TemporaryDirectory(prefix="edgevit-fallback-") as tmp:
        reference = Path(tmp) / "reference.onnx"
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(reference))
        modify_model_output_intermediate_tensors(str(reference), str(augmented))
        for start in range(0, len(feeds), CHUNK):
            saved = collect_activations(str(augmented), iter(feeds[start:start + CHUNK]))
            for name, (_, read, refs) in nodes.items():
                if not all(r in saved and f in saved for r, f in zip(read, refs)):
                    sums[name] = None
                if sums[name] is None:
                    continue
                for r, f in zip(read, refs):
                    for quantized, exact in zip(saved[r], saved[f]):
                        sums[name][0] += float(np.sum(np.square(exact, dtype=np.float64)))
                        sums[name][1] += float(np.sum(np.square(exact.astype(np.float64) - quantized)))
    errors = [NodeError(name, nodes[name][0], sqnr_db(*s)) for name, s in sums.items() if s is not None]
    return sorted(errors, key=lambda e: (e.sqnr_db, e.node))


def float_outputs(model, kept: list[str], float_model) -> int:
    """Drop the QuantizeLinear -> DequantizeLinear pairs on the outputs of the ``kept`` nodes of a QDQ
    ``onnx.ModelProto`` (in place), so that their readers get the float result, and let the kept nodes read
    their activation inputs before quantization (other readers keep the quantized ones).

    ``nodes_to_exclude`` alone leaves a kept node's output quantized whenever a node reading it is quantized
    (that node asks for int8 inputs), and the output's quantization is part of the error measured here. Readers
    with int8 weights (Conv/Gemm/MatMul: edgevit's int8 kernels) keep the quantized output. A
    ReLU/Clip after the node (which the quantizer folds into the quantization of a quantized node) is followed;
    ``float_model`` (the model that was quantized) gives back a ReLU folded before an input.

    Returns the number of pairs removed (pairs some readers still need are kept for them).
    """
    import onnx
    from onnxruntime.quantization.quant_utils import QUANT_INPUT_SUFFIX

    graph = model.graph
    outputs = {o.name for o in graph.output}

    def readers(tensor: str) -> list:
        return [n for n in graph.node if tensor in n.input]

    initializers = {t.name for t in graph.initializer}
    weight_dq = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers}

    def int8_kernel(node) -> bool:
        # a Conv/Gemm/MatMul with int8 weights: fed a float input, it would run as a float op dequantizing its
        # weights inside the kernel (unscheduled, slow), so it keeps reading the quantized tensor
        return node.op_type in ("Conv", "Gemm", "MatMul") and any(i in weight_dq for i in node.input)

    removed = 0
    for node in [n for n in graph.node if n.name in set(kept)]:
        for tensor in node.output:
            while len(readers(tensor)) == 1 and readers(tensor)[0].op_type in ("Relu", "Clip"):
                tensor = readers(tensor)[0].output[0]
            quantizes = [n for n in readers(tensor) if n.op_type == "QuantizeLinear"]
            for q in quantizes:
                dequantizes = readers(q.output[0])
                if not dequantizes or any(d.op_type != "DequantizeLinear" for d in dequantizes):
                    continue
                dequantized = {d.output[0] for d in dequantizes}
                staying = [n for n in graph.node if int8_kernel(n) and dequantized & set(n.input)]
                final = tensor
                if not staying and tensor.endswith(QUANT_INPUT_SUFFIX) and dequantizes[0].output[0] in outputs:
                    final = dequantizes[0].output[0]  # a graph output keeps its name
                for other in graph.node:
                    if other in staying:
                        continue
                    for k, name in enumerate(other.input):
                        if name in dequantized or (final != tensor and name == tensor):
                            other.input[k] = final
                    for k, name in enumerate(other.output):
                        if final != tensor and name == tensor:
                            other.output[k] = final
                if not staying:
                    for n in [q, *dequantizes]:
                        graph.node.remove(n)
                    removed += 1
    # ... and they read their activations before quantization: a float conv reading a DequantizeLinear gets it
    # fused in front (a prologue the CPU schedules do not take: 30 ms instead of 1 for one mobilevit_xxs conv)
    producers = {o: n for n in graph.node for o in n.output}
    float_producers = {o: n for n in float_model.graph.node for o in n.output}
    for node in [n for n in graph.node if n.name in set(kept)]:
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                continue
            tensor, folded = q.input[0], float_producers.get(q.input[0])
            if folded is not None and tensor in producers and folded.op_type != producers[tensor].op_type:
                if folded.op_type != "Relu":
                    continue  # a folded Clip: its bounds may be gone; keep the quantized input
                relu = onnx.NodeProto()  # the ReLU the quantizer folded into that quantization
                relu.CopyFrom(folded)
                graph.node.insert(list(graph.node).index(producers[tensor]) + 1, relu)  # nodes stay in order
                relu = graph.node[list(graph.node).index(producers[tensor]) + 1]
                relu.name, relu.input[:], relu.output[:] = (f"{folded.name}_float", [tensor],
                                                             [f"{tensor}_float"])
                producers[tensor + "_float"], tensor = relu, tensor + "_float"
            node.input[k] = tensor
    used = {i for n in graph.node for i in n.input}
    for n in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in used
              and n.output[0] not in outputs]:
        graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for n in [n for n in graph.node if n.op_type == "QuantizeLinear" and n.output[0] not in used]:
        graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used and t.name not in outputs]:
        graph.initializer.remove(init)  # the removed pairs' scales and zero points
    return removed


def output_sqnr(float_path: Path, qdq_path: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """SQNR (dB) of the QDQ model's outputs against the float model's, over all outputs and ``feeds``
    (both run by onnxruntime with its default optimisations, as the int8 reference runs)."""
    from ..ort_session import onnxruntime_session

    signal = noise = 0.0
    exact, quantized = onnxruntime_session(float_path), onnxruntime_session(qdq_path)
    for feed in feeds:
        for a, b in zip(exact.run(None, feed), quantized.run(None, feed)):
            signal += float(np.sum(np.square(a, dtype=np.float64)))
            noise += float(np.sum(np.square(a.astype(np.float64) - b)))
    return sqnr_db(signal, noise)
