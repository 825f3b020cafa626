"""Host side: the part of a model after the accelerator, cut out of its ONNX graph for the board's CPU.

The accelerator runs the model up to the first module it cannot run (``Program.cpu_layers`` lists the rest).
To run the rest on the board, the model is exported to ONNX (:func:`edgevit.frontend.from_torch`), onnxruntime
computes every intermediate tensor on a sample input, and the *cut* is the last tensor whose values equal the
accelerator's float output (up to its layout: channels-last on the accelerator, NCHW in ONNX). The subgraph
from the cut to the model's output is stored as plain JSON + npz (:mod:`.numpy_graph` runs it on the board) and
checked against onnxruntime here before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ModelImportError
from ..reference import onnxruntime_session
from . import numpy_graph
from .manifest import TAIL_JSON, TAIL_NPZ
MATCH_RTOL = 1e-4     # float64 program vs float32 onnxruntime
CHECK_RTOL = 1e-4     # numpy interpreter vs onnxruntime


def _intermediates(mp, x: np.ndarray) -> tuple[dict, list]:
    """Every node output of ``mp`` on input ``x`` (onnxruntime), and the names in node order."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(mp)
    names = [o for n in m.graph.node for o in n.output if o]
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.ValueInfoProto(name=o) for o in names if o not in known)
    sess = onnxruntime_session(m.SerializeToString())
    outs = sess.run(None, {m.graph.input[0].name: x.astype(np.float32)})
    return dict(zip([o.name for o in sess.get_outputs()], outs)), names


def _find_cut(values: dict, order: list, acc: np.ndarray) -> tuple[str, list | None]:
    """The tensor equal to the accelerator output ``acc``, and the transpose that maps ``acc`` onto it.

    Of the tensors within ``MATCH_RTOL``, the closest wins: blocks that are nearly the identity (layer scale
    1e-5 in untrained timm models) give near-copies downstream, which must not be taken for the cut. Exact
    copies (Reshape, Identity) tie, and the last of them is taken.
    """
    layouts = [None] + ([[2, 0, 1]] if acc.ndim == 3 else [])     # [H, W, C] -> [C, H, W]
    scale = 1 + np.abs(acc).max()
    found, best = None, MATCH_RTOL
    for name in order:
        v = values[name]
        if v.size != acc.size or v.dtype.kind != "f":
            continue
        for perm in layouts:
            a = acc.transpose(perm) if perm else acc
            err = float(np.abs(v.reshape(a.shape) - a).max() / scale)
            if err <= best:
                found, best = (name, perm), err
    if found is None:
        raise ModelImportError("no tensor of the ONNX graph equals the accelerator's output: the CPU part of this "
                               "model cannot be cut out")
    return found


def _plain(sub) -> tuple[dict, dict]:
    """An extracted ONNX graph as plain nodes (constants become weights) and its weights."""
    from onnx import helper, numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in sub.graph.initializer}
    nodes = []
    for n in sub.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant":    # value (a tensor) or value_float(s) / value_int(s)
            (kind, value), = attrs.items()
            weights[n.output[0]] = numpy_helper.to_array(value) if kind == "value" else np.asarray(value)
            continue
        for k, v in attrs.items():
            if isinstance(v, bytes):
                attrs[k] = v.decode()
            elif isinstance(v, list):
                attrs[k] = [x.decode() if isinstance(x, bytes) else x for x in v]
            elif not isinstance(v, (int, float, str)):
                raise ModelImportError(f"{n.op_type} has a {type(v).__name__} attribute {k}: not supported on the CPU")
        nodes.append({"op": n.op_type, "inputs": list(n.input), "outputs": list(n.output), "attrs": attrs})
    return {"nodes": nodes, "outputs": [o.name for o in sub.graph.output]}, weights


def run_checked(graph: dict, weights: dict, feeds: dict) -> list:
    """:func:`.numpy_graph.run` after :func:`.numpy_graph.check_ops`, on the host while a CPU part is written.

    Raises
    ------
    ModelImportError
        An operator or attribute the board's interpreter does not take, or a node whose inputs do not fit it:
        the model's file, not the board, is at fault here.
    """
    from ..errors import ExecutionError

    try:
        numpy_graph.check_ops(graph)
        return numpy_graph.run(graph, weights, feeds)
    except (NotImplementedError, ExecutionError) as e:
        raise ModelImportError(f"the CPU part of this model cannot run on the board: {e}") from None


def export(model, input_shape: tuple, prog, sample: np.ndarray, out: Path) -> dict:
    """Cut ``model`` after the accelerator's part ``prog`` and write ``cpu_tail.json``/``.npz`` into ``out``.

    Parameters
    ----------
    model : torch.nn.Module
        The whole model (eval mode); ``prog`` is its lowered and calibrated accelerator program.
    input_shape : tuple
        The model's input shape, batch included.
    sample : numpy.ndarray
        One float input of ``input_shape``, to find the cut and check the numpy tail.

    Raises
    ------
    ModelImportError
        If the cut cannot be found, the tail needs tensors from before the cut, uses an operator the board
        interpreter lacks, or differs from onnxruntime.
    """
    import onnx.utils

    from ..frontend import from_torch
    from ..hls.torch_import import to_accel_layout

    mp = from_torch(model, input_shape, name="cpu_tail_source").load()
    values, order = _intermediates(mp, np.asarray(sample, np.float32))
    acc = prog.run_float(to_accel_layout(np.asarray(sample, np.float64)))[prog.output]
    cut, perm = _find_cut(values, order, acc)
    outputs = [o.name for o in mp.graph.output]
    graph, weights = _plain(onnx.utils.Extractor(mp).extract_model([cut], outputs))
    available = {cut, *weights} | {o for n in graph["nodes"] for o in n["outputs"]}
    before = sorted({i for n in graph["nodes"] for i in n["inputs"] if i and i not in available})
    if before:
        raise ModelImportError(f"the CPU part needs tensors from before the accelerator's output ({before[:3]}): "
                               f"not supported")
    got = run_checked(graph, weights, {cut: values[cut]})
    err = float(np.max([np.abs(g - values[o]).max() / (1 + np.abs(values[o]).max()) for g, o in zip(got, outputs)]))
    if not err <= CHECK_RTOL:   # NaN (np.max keeps it) fails too
        raise ModelImportError(f"the numpy CPU part differs from onnxruntime (relative error {err:.2g})")
    names = sorted(weights)
    graph.update(input=cut, input_shape=list(values[cut].shape), transpose=perm, weights=names,
                 check_relative_error=err, sample_output=values[outputs[0]].ravel().tolist())
    np.savez(Path(out) / TAIL_NPZ, **{f"w{k}": weights[n] for k, n in enumerate(names)})
    (Path(out) / TAIL_JSON).write_text(json.dumps(graph))
    return graph
