"""Pipeline cuts on the ONNX graph of any model edgevit imports.

A *cut* is a point in the graph's topological order; the tensors *live* across it (computed before it from
the model's inputs and read after it, or model outputs computed before it) are what one stage sends the next.
Tensors computed from weights alone (``Constant`` nodes, shape arithmetic on initializers) do not count: the
stage that needs them computes them itself, so they never travel. Candidate cuts are the points where at most
``max_live`` tensors are live -- one, usually: the output of a block.

Stages are extracted with ``onnx.utils.Extractor`` (inputs = the tensors live at the first cut, outputs = those
live at the second), each one a complete ONNX model with static shapes that any backend compiles. ``Units``
are the segments between consecutive chosen candidate cuts; ``coarsen`` merges segments so the planner's
dynamic program sees a few units of similar work instead of hundreds of single-node segments.

Host side only (imports onnx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ModelImportError

_NUMPY_OF_ONNX = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
                  10: np.float16, 11: np.float64}


@dataclass(frozen=True)
class Cut:
    """A point between node ``position - 1`` and node ``position`` and the tensors live across it."""

    position: int
    tensors: tuple[str, ...]
    bytes: int


@dataclass
class Unit:
    """A run of nodes between two cuts, with its estimated work and weight bytes."""

    start: Cut
    end: Cut
    macs: int
    ops: int
    weight_bytes: int
    nodes: int
    op_types: dict[str, int] = field(default_factory=dict)

    @property
    def work(self) -> float:
        """MACs plus other element operations: what the estimated cost model scales."""
        return self.macs + self.ops


def _subgraph_reads(node) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    import onnx

    reads: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                reads.update(x for x in n.input if x and x not in local)
                reads.update(_subgraph_reads(n) - local)
    return reads


class GraphSplitter:
    """The live tensors, costs and stage extraction of one ONNX model with static shapes.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` whose inputs have static shapes (``edgevit.frontend`` makes them so).
    """

    def __init__(self, model):
        import onnx

        try:
            self.model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises InferenceError and others; all mean the same to the user
            raise ModelImportError(f"ONNX shape inference failed, so the graph cannot be split: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        graph = self.model.graph
        self.nodes = list(graph.node)
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs = [o.name for o in graph.output]
        self.types = {v.name: v.type.tensor_type for v in [*graph.value_info, *graph.input, *graph.output]}
        self.node_inputs = [[x for x in n.input if x] + sorted(_subgraph_reads(n)) for n in self.nodes]
        self._dynamic = self._input_dependent()
        self.cuts = self._all_cuts()

    # ---- tensors -----------------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...] | None:
        """Static shape of a tensor, or None if shape inference left it unknown."""
        ttype = self.types.get(name)
        if ttype is None or not ttype.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
        return None if any(d is None for d in dims) else tuple(dims)

    def nbytes(self, name: str) -> int | None:
        shape, ttype = self.shape(name), self.types.get(name)
        if shape is None or ttype is None or ttype.elem_type not in _NUMPY_OF_ONNX:
            return None
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY_OF_ONNX[ttype.elem_type]).itemsize

    def _input_dependent(self) -> set[str]:
        """Tensors whose value depends on a model input (the rest are computed from weights only)."""
        dynamic = set(self.inputs)
        for node, reads in zip(self.nodes, self.node_inputs):
            if any(x in dynamic for x in reads):
                dynamic.update(o for o in node.output if o)
        return dynamic

    def _all_cuts(self) -> list[Cut]:
        """The live input-dependent tensors at every position 0..len(nodes) (sorted by name), in one sweep:
        node ``i`` makes its outputs live and ends the tensors it is the last to read."""
        end = len(self.nodes)
        last_use: dict[str, int] = {}
        for index, reads in enumerate(self.node_inputs):
            for x in reads:
                last_use[x] = index
        for name in self.outputs:
            last_use[name] = end  # model outputs are live to the end
        dies_after: dict[int, list[str]] = {}
        for name, index in last_use.items():
            dies_after.setdefault(index, []).append(name)
        live = {name for name in self.inputs if name in last_use}
        sizes = {}
        cuts = []
        for position in range(end + 1):
            names = tuple(sorted(live))
            for t in names:
                if t not in sizes:
                    sizes[t] = self.nbytes(t)
            known = [sizes[t] for t in names]
            cuts.append(Cut(position, names, -1 if None in known else int(sum(known))))
            if position < end:
                live.update(o for o in self.nodes[position].output if o in self._dynamic and o in last_use)
                live.difference_update(dies_after.get(position, ()))
        return cuts

    def candidate_cuts(self, max_live: int = 1) -> list[Cut]:
        """Cuts with 1..``max_live`` live tensors of known static shape, plus the model's start and end."""
        inner = [c for c in self.cuts[1:-1] if 0 < len(c.tensors) <= max_live and c.bytes >= 0]
        return [self.cuts[0], *inner, self.cuts[-1]]

    # ---- costs -------------------------------------------------------------------------------------------
    def node_cost(self, index: int) -> tuple[int, int]:
        """(MACs, other element operations) of one node, from the inferred shapes."""
        node = self.nodes[index]
        out = self.shape(node.output[0]) if node.output and node.output[0] else None
        elems = int(np.prod(out, dtype=np.int64)) if out is not None else 0
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = self.shape(node.input[1]) or self._initializer_shape(node.input[1])
            x = self.shape(node.input[0])
            if w is not None and out is not None and x is not None:
                if node.op_type == "ConvTranspose":  # every input element meets Cout/groups * kernel weights
                    return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64)), 0
                return elems * int(np.prod(w[1:], dtype=np.int64)), 0  # Cin/groups * kernel per output
        if node.op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"):
            a = self.shape(node.input[0]) or self._initializer_shape(node.input[0])
            if a is not None and out is not None and len(a) >= 1:
                k = a[-1] if node.op_type != "Gemm" or not _attr(node, "transA", 0) else a[0]
                return elems * int(k), 0
        return 0, elems

    def _initializer_shape(self, name: str) -> tuple[int, ...] | None:
        tensor = self.initializers.get(name)
        return tuple(tensor.dims) if tensor is not None else None

    def weight_bytes(self, start: int, end: int) -> int:
        """Bytes of the initializers nodes ``start..end-1`` read (what a stage holding them keeps in memory)."""
        names = {x for reads in self.node_inputs[start:end] for x in reads if x in self.initializers}
        return sum(_tensor_bytes(self.initializers[n]) for n in names)

    def unit(self, start: Cut, end: Cut) -> Unit:
        macs = ops = 0
        op_types: dict[str, int] = {}
        for index in range(start.position, end.position):
            m, o = self.node_cost(index)
            macs, ops = macs + m, ops + o
            op = self.nodes[index].op_type
            op_types[op] = op_types.get(op, 0) + 1
        return Unit(start, end, macs, ops, self.weight_bytes(start.position, end.position),
                    end.position - start.position, op_types)

    def units(self, cuts: list[Cut]) -> list[Unit]:
        """The segments between consecutive ``cuts`` (which must start and end the model)."""
        return [self.unit(a, b) for a, b in zip(cuts, cuts[1:])]

    def coarsen(self, cuts: list[Cut], count: int) -> list[Cut]:
        """At most ``count`` units of similar work: keep the candidate cut nearest each work quantile.

        A cut with fewer live bytes wins a tie, so stages send small tensors.
        """
        if len(cuts) - 1 <= count:
            return list(cuts)
        work = np.cumsum([0.0] + [u.work for u in self.units(cuts)])
        total = work[-1] or 1.0
        chosen = {0, len(cuts) - 1}
        for q in range(1, count):
            target = total * q / count
            best = min(range(1, len(cuts) - 1), key=lambda i: (abs(work[i] - target), cuts[i].bytes))
            chosen.add(best)
        return [cuts[i] for i in sorted(chosen)]

    # ---- stages ------------------------------------------------------------------------------------------
    def extract(self, start: Cut, end: Cut):
        """The ONNX model of the nodes between two cuts: inputs = tensors live at ``start``, outputs = those
        live at ``end``.

        Raises
        ------
        EdgevitError
            The stage would need a tensor that is not among its inputs (not a valid cut).
        """
        import onnx
        from onnx.utils import Extractor

        if end.position <= start.position:
            raise EdgevitError(f"empty stage between positions {start.position} and {end.position}")
        stage = Extractor(self.model).extract_model(list(start.tensors), list(end.tensors))
        produced = {o for n in stage.graph.node for o in n.output} | {i.name for i in stage.graph.initializer}
        needed = {x for n in stage.graph.node for x in n.input if x} - produced
        missing = needed - set(start.tensors)
        if missing:
            raise EdgevitError(f"a stage between positions {start.position} and {end.position} would read "
                               f"{sorted(missing)[:3]} from an earlier stage: not a valid cut")
        onnx.checker.check_model(stage)
        return stage


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _tensor_bytes(tensor) -> int:
    itemsize = np.dtype(_NUMPY_OF_ONNX.get(tensor.data_type, np.float32)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def save_stage(stage, path: Path) -> Path:
    """Write a stage's ONNX model (weights inline)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(stage, str(path))
    return path


def run_chain(stage_paths: list[Path], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run stages one after another in onnxruntime, each reading what the earlier ones produced; returns
    every tensor produced (the last stage's outputs among them)."""
    import onnxruntime as ort

    values = dict(feeds)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    for path in stage_paths:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, {i.name: values[i.name] for i in session.get_inputs()})
        values.update(zip(names, results))
    return values
