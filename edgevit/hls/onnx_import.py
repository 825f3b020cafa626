"""Map an ONNX graph to an accelerator :class:`~edgevit.hls.program.Program`: ops, not torch classes.

Nodes are visited in graph order and each is mapped by the rule for its op type (:data:`RULES`); a rule adds
accelerator layers (:mod:`.ops` kinds) and fuses what follows into them: BatchNormalization, constant per-channel
scales and biases, an activation and a residual ``Add`` go into the epilogue of the convolution or linear layer
before them. Data movement that keeps the values (Reshape, Transpose, Flatten, ...) costs nothing: the ONNX
tensor becomes another name of a program tensor, in channels-last (``cl``) or channels-first (``cf``) order.

Patterns are recognised by their values, not their spelling: onnxruntime computes every tensor of the graph on
one input, and a fused activation, an attention block (heads from the softmax, score scale fitted from the
logits), SwiftFormer's L2 norms and additive attention, EfficientFormer's pooling mixer, MobileViT's unfold /
fold (MobileViTv2's too), MobileViTv2's separable self-attention or a view is accepted only where the float64 model of the layer, fed onnxruntime's values of its inputs,
gives onnxruntime's tensor. Every layer added is checked that way, one layer at a time (float32 drift over many
layers does not add up), so a rule that misreads a node stops the accelerator part there instead of computing
something else.

The accelerator runs a prefix of the graph: from the first node no rule maps, that node and everything after it
run on the CPU. The cut is moved back until exactly one tensor crosses it (``ImportResult.cut``); the CPU part is
the subgraph from that tensor to the outputs (written as ``cpu_tail.json``/``.npz`` by :func:`write_cpu_tail`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelImportError
from .program import Layer, Program
from .ops import KINDS

RTOL = 1e-4   # float64 layer on onnxruntime's inputs vs onnxruntime's float32 output, relative to 1 + its peak
ACTIVATIONS = ("relu", "gelu", "silu", "hswish", "sigmoid")
# elementwise ops an activation may be spelled with (GELU as Div/Erf/Add/Mul, SiLU as x * Sigmoid(x), ...)
ACT_OPS = {"Relu", "Sigmoid", "HardSwish", "HardSigmoid", "Gelu", "Erf", "Tanh", "Mul", "Add", "Sub", "Div",
           "Clip", "Max", "Min", "Pow"}
# ops between the QKV projection and the attention output in exported attention blocks
ATTN_OPS = {"Reshape", "Transpose", "Slice", "Squeeze", "Unsqueeze", "Gather", "Split", "Mul", "Div", "MatMul",
            "Softmax", "Flatten"}
# ops between MobileViTv2's 1x1 projection and its separable attention's output
SEPARABLE_OPS = {"Split", "Slice", "Softmax", "Mul", "ReduceSum", "Relu", "Expand", "Reshape", "Transpose"}
VIEW_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
MAX_REGION = 64      # nodes searched forward for an activation or attention pattern


class Unsupported(Exception):
    """A node the accelerator cannot run (caught by the importer; ends the accelerator part)."""


@dataclass
class ImportResult:
    """The accelerator part of an ONNX model and where the CPU part starts.

    ``cut`` is the ONNX tensor the CPU part reads (``None`` when the accelerator runs the whole graph),
    ``transpose`` the axes that map the program's channels-last output onto it (``None``: same order),
    ``cpu_nodes`` the CPU part's nodes as ``(op_type, name)``, ``unsupported`` the first node no rule maps
    (``op_type``, ``name``, reason), ``accel_nodes``/``total_nodes`` the graph's non-constant nodes on the
    accelerator and in all, ``accel_macs``/``total_macs`` the multiply-accumulates of Conv/MatMul/Gemm;
    ``tail_error`` why the CPU part could not be written for the board, if it could not.
    """

    program: Program
    model: object
    cut: str | None
    transpose: list | None
    cpu_nodes: list = field(default_factory=list)
    unsupported: tuple | None = None
    accel_nodes: int = 0
    total_nodes: int = 0
    accel_macs: int = 0
    total_macs: int = 0
    tail_error: str | None = None


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (1 + np.abs(want).max())) if want.size else 0.0


class _Importer:
    def __init__(self, model, sample: np.ndarray):
        from onnx import numpy_helper

        self.model = model
        self.graph = g = model.graph
        self.nodes = list(g.node)
        self.consts = {t.name: _as_float64(numpy_helper.to_array(t)) for t in g.initializer}
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ModelImportError(f"the accelerator takes one input; the graph has {len(inputs)}")
        self.input = inputs[0].name
        self.values = _intermediates(model, self.input, sample)
        self.consumers: dict = {}
        for k, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, []).append(k)
        self.outputs = {o.name for o in g.output}
        x = self.values[self.input]
        if x.ndim == 4 and x.shape[0] == 1:
            shape, layout = (x.shape[2], x.shape[3], x.shape[1]), "cf"
        elif x.ndim == 3 and x.shape[0] == 1:
            shape, layout = tuple(x.shape), "cl"
        else:
            raise ModelImportError(f"the accelerator takes a batch-1 NCHW image or [1, N, C] tokens; input "
                                   f"'{self.input}' has shape {list(x.shape)}")
        self.shapes = {"input": shape}
        self.alias = {self.input: ("input", layout)}
        # the ONNX tensor whose onnxruntime value each program tensor has (layers are checked one by one on
        # onnxruntime's inputs, so float32 drift over many layers does not add up), or the value itself where a
        # fold changed it (Q scaled by the attention's score scale)
        self.ort_name = {"input": self.input}
        self.fixed: dict = {}
        self.layers: list[Layer] = []
        self.done: set = set()
        self.folded: set = set()   # constant nodes: computed once here, no accelerator work
        # All of them before the walk: an epilogue looks ahead past nodes not visited yet, and TorchScript
        # exports define a constant (GELU's sqrt(2)) just before the node that reads it.
        for k, node in enumerate(self.nodes):
            if all(i in self.consts for i in node.input if i):
                self.consts.update({o: _as_float64(self.values[o]) for o in node.output if o in self.values})
                self.done.add(k)
                self.folded.add(k)

    # --- state --------------------------------------------------------------------------------------------

    def snapshot(self):
        # rules fold into earlier layers (the attention scale into Q's weights): keep their settings too
        kept = [(dict(l.params), dict(l.attrs), list(l.inputs)) for l in self.layers]
        return (kept, dict(self.shapes), dict(self.alias), set(self.done), dict(self.ort_name), dict(self.fixed),
                dict(self.consts))

    def restore(self, snap) -> None:
        kept, self.shapes, self.alias, self.done, self.ort_name, self.fixed, self.consts = snap
        del self.layers[len(kept):]
        for layer, (params, attrs, inputs) in zip(self.layers, kept):
            layer.params, layer.attrs, layer.inputs = params, attrs, inputs

    def const(self, name: str):
        return self.consts.get(name) if name else None

    def source(self, name: str) -> tuple[str, str]:
        """The program tensor (and layout) an ONNX tensor is another name of."""
        if name not in self.alias:
            raise Unsupported(f"input '{name}' is not a tensor the accelerator has computed")
        return self.alias[name]

    def add(self, kind: str, node, inputs: list, shape: tuple, attrs=None, params=None) -> str:
        name = f"l{len(self.layers)}_{kind}"
        out = f"{name}.out"
        layer = Layer(kind, name, list(inputs), out, attrs or {}, params or {}, node.name or node.op_type)
        self.layers.append(layer)
        self.shapes[out] = tuple(int(d) for d in shape)
        return out

    def known(self, tensor: str) -> np.ndarray:
        """onnxruntime's value of a program tensor (program order), computed by its layer where none names it."""
        if tensor in self.fixed:
            return self.fixed[tensor]
        name = self.ort_name.get(tensor)
        return self.ort_value(name) if name is not None else self.local(tensor)

    def local(self, tensor: str) -> np.ndarray:
        """The float64 model of the layer computing ``tensor``, on onnxruntime's values of its inputs."""
        if tensor == "input":
            return self.ort_value(self.input)
        layer = next(l for l in reversed(self.layers) if l.output == tensor)
        env = {i: self.known(i) for i in layer.inputs}
        return KINDS[layer.kind].run_float(layer, env, None).reshape(self.shapes[tensor])

    def as_layout(self, tensor: str, layout: str) -> np.ndarray:
        v = self.local(tensor)
        return np.moveaxis(v, -1, 0) if layout == "cf" else v

    def ort_value(self, onnx_name: str) -> np.ndarray:
        """onnxruntime's value of ``onnx_name`` in the program's order and shape (of the tensor it names)."""
        tensor, layout = self.alias[onnx_name]
        shape, v = self.shapes[tensor], self.values[onnx_name].astype(np.float64)
        return np.moveaxis(v.reshape((shape[-1],) + shape[:-1]), 0, -1) if layout == "cf" else v.reshape(shape)

    def bind(self, onnx_name: str, tensor: str, layout: str) -> None:
        """Name ``onnx_name`` as ``tensor``; raises Unsupported unless onnxruntime computed the same values."""
        want = self.values[onnx_name]
        got = self.as_layout(tensor, layout)
        if got.size != want.size or _rel_err(got.ravel(), want.ravel().astype(np.float64)) > RTOL:
            raise Unsupported("the accelerator's result differs from onnxruntime's here")
        self.alias[onnx_name] = (tensor, layout)
        self.ort_name.setdefault(tensor, onnx_name)

    def require_shape(self, tensor: str, shape: tuple) -> None:
        """Use ``tensor`` (channels-last in the arena) with another shape of the same memory order, e.g. tokens
        [1, H*W, C] as an [H, W, C] map; refused where a layer already read it with a shape that matters."""
        shape = tuple(int(d) for d in shape)
        old = self.shapes[tensor]
        if old == shape:
            return
        if int(np.prod(old)) != int(np.prod(shape)) or old[-1] != shape[-1] or tensor == "input":
            raise Unsupported(f"tensor of shape {list(old)} used as {list(shape)}")
        shaped = {"attention", "dwconv", "im2col", "unfold", "fold", "pool_mixer"}
        if any(tensor in l.inputs and l.kind in shaped for l in self.layers) or any(
                l.output == tensor and l.kind == "fold" for l in self.layers):
            raise Unsupported(f"tensor of shape {list(old)} used as {list(shape)}")
        self.shapes[tensor] = shape
        if tensor in self.fixed:
            self.fixed[tensor] = self.fixed[tensor].reshape(shape)

    def prog_shape(self, onnx_name: str, layout: str) -> tuple:
        """The program shape of an ONNX tensor: [H, W, C] for a channels-first map, else its own shape."""
        shape = tuple(int(d) for d in self.values[onnx_name].shape)
        if layout == "cf":
            if len(shape) != 4 or shape[0] != 1:
                raise Unsupported(f"channels-first tensor of shape {list(shape)}")
            return shape[2], shape[3], shape[1]
        return shape if len(shape) >= 2 else (1,) + shape

    def single_consumer(self, name: str):
        users = self.consumers.get(name, [])
        if name in self.outputs or len(users) != 1 or users[0] in self.done:
            return None
        return users[0]

    # --- the walk -----------------------------------------------------------------------------------------

    def run(self) -> tuple[int, str | None]:
        """Map nodes until one fails; returns its index (len(nodes) if none) and the reason."""
        for k, node in enumerate(self.nodes):
            if k in self.done:
                continue
            snap = self.snapshot()
            try:
                rule = RULES.get(node.op_type)
                if rule is None:
                    raise Unsupported("no accelerator unit for this op")
                self.done.add(k)
                rule(self, k, node)
            except Unsupported as why:
                self.restore(snap)
                if self.pattern_from(node, snap):
                    continue
                return k, str(why)
        return len(self.nodes), None

    # --- epilogues: what follows a convolution / linear layer folds into it -------------------------------

    def epilogue(self, onnx_out: str, layer: Layer, layout: str) -> None:
        """Fold BatchNormalization, constant per-channel scale/bias, one activation and a residual Add that
        follow ``layer`` (output ``onnx_out``) into it; bind the last tensor they produce."""
        cur, passed = onnx_out, []
        while True:
            channel_axis = 1 if layout == "cf" else -1
            k = self.single_consumer(cur)
            node = self.nodes[k] if k is not None else None
            if node is not None and layer.attrs.get("act", "none") == "none" and len(layer.inputs) == 1:
                if node.op_type == "BatchNormalization" and layout == "cf" and all(
                        self.const(i) is not None for i in node.input[1:5]):
                    gamma, beta, mean, var = (self.const(i) for i in node.input[1:5])
                    eps = _attr(node, "epsilon", 1e-5)
                    scale = gamma / np.sqrt(var + eps)
                    self._affine(layer, scale, beta - mean * scale)
                    self.done.add(k)
                    cur = node.output[0]
                    continue
                vec = self._channel_const(node, cur, channel_axis, layer)
                if vec is not None:
                    op, v = vec
                    if op == "Mul":
                        self._affine(layer, v, 0.0)
                    elif op == "Div":
                        self._affine(layer, 1.0 / v, 0.0)
                    else:
                        self._affine(layer, 1.0, v if op == "Add" else -v)
                    self.done.add(k)
                    cur = node.output[0]
                    continue
            if layer.attrs.get("act", "none") == "none" and len(layer.inputs) == 1 and cur not in self.outputs:
                fused = self._activation(cur, layer)
                if fused is not None:
                    cur = fused
                    continue
            if node is not None and node.op_type == "Add" and layer.kind == "linear" and len(layer.inputs) == 1:
                other = node.input[1] if node.input[0] == cur else node.input[0]
                if other in self.alias and self.alias[other][1] == layout:
                    res = self.alias[other][0]
                    # the residual is added to the layer's rows: an im2col input has [H*W, K] of them
                    rows = self.shapes[layer.inputs[0]][:-1] + self.shapes[layer.output][-1:]
                    try:
                        self.require_shape(res, rows)
                    except Unsupported:
                        res = None
                    if res is not None:
                        layer.inputs.append(res)
                        self.done.add(k)
                        cur = node.output[0]
                        continue
            if node is not None and node.op_type in VIEW_OPS:   # look through views (a layer scale after them)
                order = self._view_layout(node.output[0], layer.output)
                if order is not None:
                    self.done.add(k)
                    passed.append(node.output[0])
                    cur, layout = node.output[0], order
                    continue
            break
        for t in passed:   # names of values the layer no longer has
            self.alias.pop(t, None)
        if self.ort_name.get(layer.output) in passed:
            del self.ort_name[layer.output]
        self.bind(cur, layer.output, layout)

    def _view_layout(self, onnx_name: str, tensor: str) -> str | None:
        """The order (``cl``/``cf``) in which ``onnx_name`` holds ``tensor``'s values, if it holds them."""
        for layout in ("cl", "cf"):
            try:
                self.bind(onnx_name, tensor, layout)
                return layout
            except Unsupported:
                continue
        return None

    def _channel_const(self, node, cur: str, axis: int, layer: Layer):
        """``(op, per-channel vector)`` if ``node`` is ``cur`` (+-*/) a constant broadcast over channels."""
        if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
            return None
        other = node.input[1] if node.input[0] == cur else node.input[0]
        c = self.const(other)
        if c is None or c.dtype.kind != "f" or (node.op_type in ("Sub", "Div") and node.input[0] != cur):
            return None
        out_shape = self.values[cur].shape
        channels = self.shapes[layer.output][-1]
        try:
            full = np.broadcast_to(c, out_shape)
        except ValueError:
            return None
        if self.values[node.output[0]].shape != out_shape:
            return None
        vec = np.moveaxis(full, axis, -1).reshape(-1, channels)
        if not np.all(vec == vec[:1]):
            return None
        return node.op_type, vec[0].astype(np.float64)

    @staticmethod
    def _affine(layer: Layer, scale, shift) -> None:
        p = layer.params
        w = p["w"]
        scale = np.broadcast_to(np.asarray(scale, np.float64), (w.shape[0],))
        p["w"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = p.get("b", np.zeros(w.shape[0]))
        p["b"] = b * scale + shift

    def _activation(self, cur: str, layer: Layer) -> str | None:
        """The tensor downstream of ``cur`` equal to an activation of it, if the nodes in between compute only
        that; they are marked done and the activation set on ``layer``."""
        from .reference import activate

        x = self.values[cur].astype(np.float64)
        region = self._region({cur}, ACT_OPS)
        for k in sorted(region):
            for o in self.nodes[k].output:
                v = self.values.get(o)
                if v is None or v.shape != x.shape:
                    continue
                for act in ACTIVATIONS:
                    if _rel_err(v.astype(np.float64), activate(x, act)) <= RTOL \
                            and self._closed({cur}, o, region, exclusive=True):
                        self.done.update(self._between({cur}, o, region))
                        layer.attrs["act"] = act
                        return o
        return None

    def pattern_from(self, node, snap) -> bool:
        """Try the multi-node patterns that start at ``node``: attention, then a patch unfold / fold."""
        for pattern, ops in ((self.attention_from, ATTN_OPS), (self.movement_from, VIEW_OPS)):
            if node.op_type in ops:
                try:
                    pattern(node)
                    return True
                except Unsupported:
                    self.restore(snap)
        return False

    def _region(self, starts: set, ops: set) -> set:
        """Nodes reachable from ``starts`` through ``ops`` (not yet mapped), at most MAX_REGION."""
        region, frontier = set(), list(starts)
        while frontier and len(region) < MAX_REGION:
            t = frontier.pop(0)
            for k in self.consumers.get(t, []):
                if k not in region and k not in self.done and self.nodes[k].op_type in ops:
                    region.add(k)
                    frontier += list(self.nodes[k].output)
        return region

    def _match_end(self, starts: set, region: set, want: np.ndarray, layout: str) -> str | None:
        """The first tensor of ``region`` equal to ``want`` (program order; ``layout`` as in :meth:`bind`) that
        only ``starts`` and constants feed and only its own consumers read."""
        flat = (np.moveaxis(want, -1, 0) if layout == "cf" else want).ravel()
        for kk in sorted(region):
            for o in self.nodes[kk].output:
                got = self.values.get(o)
                if got is not None and got.size == flat.size and _rel_err(got.astype(np.float64).ravel(),
                                                                          flat) <= RTOL \
                        and self._closed(starts, o, region):
                    return o
        return None

    def movement_from(self, node) -> None:
        """A chain of views that unfolds an [H, W, C] map into MobileViT's [PH * PW, N, C] patch sequences, or
        folds them back (found by comparing with :func:`golden.unfold` / :func:`golden.fold`)."""
        from . import golden

        x = next((i for i in node.input if i in self.alias), None)
        if x is None:
            raise Unsupported("not a view of a computed tensor")
        src, _ = self.alias[x]
        starts = {t for t, (p, _) in self.alias.items() if p == src}
        region = self._region(starts, VIEW_OPS)
        v = self.known(src)
        if v.ndim != 3:
            raise Unsupported("data movement of a tensor that is not 3-D")
        h, w, c = v.shape
        for p in (2, 3, 4, 8):   # square patches, as MobileViT uses
            cands = []
            if h % p == 0 and w % p == 0 and src != "input":   # MobileViT's [P, N, C], MobileViTv2's [C, P, N]
                for layout in ("cl", "cf"):
                    cands.append(("unfold", golden.unfold(v, p, p), (p * p, (h // p) * (w // p), c),
                                  {"ph": p, "pw": p}, layout))
            side = int(round(np.sqrt(w)))
            if h == p * p and side * side == w:   # [P, N, C] back to a square map
                hw = side * p
                cands.append(("fold", golden.fold(v, hw, hw, p, p), (hw, hw, c), {"h": hw, "w": hw, "ph": p, "pw": p},
                              "cf"))
            for kind, want, shape, attrs, layout in cands:
                end = self._match_end(starts, region, want, layout)
                if end is not None:
                    self.done.update(self._between(starts, end, region))
                    self.bind(end, self.add(kind, node, [src], shape, attrs), layout)
                    return
        raise Unsupported("moves data in an order the accelerator does not keep")

    # --- attention ----------------------------------------------------------------------------------------

    def attention_from(self, node) -> None:
        """Map the attention block that starts at ``node`` (a view of a QKV projection [1, N, 3D]): heads from
        the softmax's input [1, H, N, N], the score scale fitted from its logits, folded into Q's weights."""
        x = next((i for i in node.input if i in self.alias), None)
        if x is None:
            raise Unsupported("not an attention block")
        qkv, layout = self.alias[x]
        prod = next((l for l in self.layers if l.output == qkv), None)
        shape = self.shapes[qkv]
        if prod is None or prod.kind != "linear" or layout != "cl" or len(shape) != 3 or shape[-1] % 3 \
                or len(prod.inputs) != 1 or prod.attrs.get("act", "none") != "none":
            raise Unsupported("attention whose Q, K and V do not come from one linear projection [1, N, 3D]")
        g, n, d = shape[0], shape[1], shape[2] // 3
        starts = {t for t, (p, _) in self.alias.items() if p == qkv}
        region = self._region(starts, ATTN_OPS)
        softmax = next((self.nodes[k] for k in sorted(region) if self.nodes[k].op_type == "Softmax"), None)
        if softmax is None:
            raise Unsupported("no softmax after the QKV projection")
        logits = self.values[softmax.input[0]].astype(np.float64)
        if logits.ndim != 4 or logits.shape[0] != g or logits.shape[2:] != (n, n) or d % logits.shape[1]:
            raise Unsupported(f"attention logits of shape {list(logits.shape)}")
        heads, dh = logits.shape[1], d // logits.shape[1]
        v = self.ort_value(x)
        q = v[..., :d].reshape(g, n, heads, dh).transpose(0, 2, 1, 3)
        k = v[..., d:2 * d].reshape(g, n, heads, dh).transpose(0, 2, 1, 3)
        raw = q @ k.transpose(0, 1, 3, 2)
        scale = float((raw * logits).sum() / max((raw * raw).sum(), 1e-30))
        if _rel_err(raw * scale, logits) > RTOL:
            raise Unsupported("attention logits are not a scaled Q.K^T (position biases or masks)")
        from .reference import attention

        scaled = np.concatenate([v[..., :d] * scale, v[..., d:]], -1)
        end = self._match_end(starts, region, attention(scaled, heads)[0], "cl")
        if end is None:
            raise Unsupported("attention pattern not recognised (its output does not match scaled-dot-product "
                              "attention over the QKV projection)")
        if any(u not in region and u not in self.done for t in starts for u in self.consumers.get(t, [])) \
                or starts & self.outputs:
            raise Unsupported("the QKV projection is read outside the attention block")
        for kk in self._between(starts, end, region):
            self.done.add(kk)
        self._affine(prod, np.r_[np.full(d, scale), np.ones(2 * d)], 0.0)   # score scale folded into Q
        if not np.any(prod.params["b"]):
            del prod.params["b"]
        for t in starts:
            self.alias.pop(t, None)
        self.ort_name.pop(qkv, None)
        self.fixed[qkv] = scaled
        out = self.add("attention", self.nodes[min(region)], [qkv], (g, n, d), {"heads": heads, "groups": g, "n": n})
        self.bind(end, out, "cl")

    def _between(self, starts: set, end: str, region: set) -> set:
        """Nodes of ``region`` on a path from ``starts`` to ``end``."""
        produced = {o: k for k in region for o in self.nodes[k].output}
        need, stack = set(), [end]
        while stack:
            k = produced.get(stack.pop())
            if k is None or k in need:
                continue
            need.add(k)
            stack += [i for i in self.nodes[k].input if i and i not in starts]
        return need

    def _closed(self, starts: set, end: str, region: set, exclusive: bool = False) -> bool:
        """Whether the nodes from ``starts`` to ``end`` read only ``starts``, constants and each other, and
        nothing outside them reads what they make but ``end`` (nor ``starts``, if ``exclusive``: a layer output
        an activation replaces)."""
        nodes = self._between(starts, end, region)
        made = {o for k in nodes for o in self.nodes[k].output}
        for k in nodes:
            if any(i and i not in starts and i not in made and i not in self.consts for i in self.nodes[k].input):
                return False
        private = (made - {end}) | (set(starts) if exclusive else set())
        return bool(nodes) and not any(t in self.outputs or any(u not in nodes for u in self.consumers.get(t, []))
                                       for t in private)

def _as_float64(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float64) if v.dtype.kind == "f" else v


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _intermediates(model, input_name: str, x: np.ndarray) -> dict:
    """Every tensor of ``model`` on input ``x`` (onnxruntime, float32)."""
    import onnx

    from ..reference import onnxruntime_session

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.ValueInfoProto(name=o) for n in m.graph.node for o in n.output
                          if o and o not in known)
    try:
        sess = onnxruntime_session(m.SerializeToString())
        outs = sess.run(None, {input_name: x.astype(np.float32)})
    except Exception as exc:   # onnxruntime raises its own types for graphs it cannot run
        raise ModelImportError(f"onnxruntime cannot run this model to map it: {str(exc).splitlines()[0]}") from None
    values = dict(zip([o.name for o in sess.get_outputs()], outs))
    values[input_name] = x.astype(np.float32)
    return {k: np.asarray(v) for k, v in values.items()}


# --- rules: one per ONNX op type ------------------------------------------------------------------------------

def _view(im: _Importer, k: int, node) -> None:
    """Reshape and friends: the output is the input's values in channels-last or channels-first order."""
    src, _ = im.source(node.input[0])
    if im._view_layout(node.output[0], src) is None:
        raise Unsupported("moves data in an order the accelerator does not keep")


def _map_input(im: _Importer, name: str) -> tuple[str, tuple]:
    """The program tensor of a channels-first map input [1, C, H, W], shaped [H, W, C]."""
    src, layout = im.source(name)
    shape = im.values[name].shape
    if len(shape) == 4 and shape[2] * shape[3] == 1:   # one pixel: both orders are the same memory
        layout = "cf"
    if layout != "cf" or len(shape) != 4 or shape[0] != 1:
        raise Unsupported(f"convolution input of shape {list(shape)} is not a batch-1 NCHW map")
    im.require_shape(src, (shape[2], shape[3], shape[1]))
    return src, shape


def _conv(im: _Importer, k: int, node) -> None:
    src, (_, ci, h, wd) = _map_input(im, node.input[0])
    w = im.const(node.input[1])
    b = im.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or w.ndim != 4 or (len(node.input) > 2 and node.input[2] and b is None):
        raise Unsupported("convolution whose weights are not constants")
    co, cig, kh, kw = w.shape
    strides = _attr(node, "strides", [1, 1])
    pads = _attr(node, "pads", [0, 0, 0, 0])
    dil = _attr(node, "dilations", [1, 1])
    group = _attr(node, "group", 1)
    if kh != kw or len(set(strides)) != 1 or len(set(pads)) != 1 or set(dil) != {1} \
            or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise Unsupported(f"convolution {kh}x{kw}, strides {strides}, pads {pads}, dilations {dil}")
    s, pad = strides[0], pads[0]
    ho, wo = (h + 2 * pad - kh) // s + 1, (wd + 2 * pad - kh) // s + 1
    params = {**({"b": b} if b is not None else {})}
    if group == ci == co and cig == 1:
        params["w"] = w[:, 0]
        im.add("dwconv", node, [src], (ho, wo, co), {"k": kh, "stride": s, "pad": pad, "act": "none"}, params)
    elif group == 1:
        x = src
        if kh > 1 or s > 1:
            x = im.add("im2col", node, [src], (ho * wo, kh * kh * ci), {"k": kh, "stride": s, "pad": pad})
        params["w"] = w.transpose(0, 2, 3, 1).reshape(co, -1)
        im.add("linear", node, [x], (ho, wo, co), {"act": "none"}, params)
    else:
        raise Unsupported(f"grouped convolution (group={group})")
    im.epilogue(node.output[0], im.layers[-1], "cf")


def _token_input(im: _Importer, name: str) -> tuple[str, tuple]:
    src, layout = im.source(name)
    shape = im.values[name].shape
    if layout != "cl" or shape[-1] != im.shapes[src][-1]:
        raise Unsupported(f"input of shape {list(shape)} is not channels-last")
    return src, shape


def _linear_out_shape(in_shape: tuple, n: int) -> tuple:
    shape = tuple(in_shape[:-1]) + (n,)
    return shape if len(shape) >= 2 else (1,) + shape


def _matmul(im: _Importer, k: int, node) -> None:
    w = im.const(node.input[1])
    if w is None or w.ndim != 2:
        raise Unsupported("matrix product whose second operand is not a constant matrix")
    if w.shape[1] == 1:   # one score per token: SwiftFormer's additive attention starts so
        snap = im.snapshot()
        try:
            return _additive(im, node, w.ravel().copy())
        except Unsupported:
            im.restore(snap)
    src, shape = _token_input(im, node.input[0])
    im.add("linear", node, [src], _linear_out_shape(shape, w.shape[1]), {"act": "none"}, {"w": w.T.copy()})
    im.epilogue(node.output[0], im.layers[-1], "cl")


def _gemm(im: _Importer, k: int, node) -> None:
    w, c = im.const(node.input[1]), im.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if w is None or _attr(node, "transA", 0) or (len(node.input) > 2 and node.input[2] and c is None):
        raise Unsupported("Gemm whose weights are not constants")
    src, shape = _token_input(im, node.input[0])
    w = (w if _attr(node, "transB", 0) else w.T) * _attr(node, "alpha", 1.0)
    params = {"w": w}
    if c is not None:
        params["b"] = np.broadcast_to(c * _attr(node, "beta", 1.0), (w.shape[0],)).astype(np.float64)
    im.add("linear", node, [src], _linear_out_shape(shape, w.shape[0]), {"act": "none"}, params)
    im.epilogue(node.output[0], im.layers[-1], "cl")


def _layernorm(im: _Importer, k: int, node) -> None:
    src, shape = _token_input(im, node.input[0])
    gamma = im.const(node.input[1])
    beta = im.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(shape[-1])
    if _attr(node, "axis", -1) not in (-1, len(shape) - 1) or gamma is None or beta is None:
        raise Unsupported("LayerNormalization over more than the channel axis, or with non-constant scale")
    im.require_shape(src, im.prog_shape(node.input[0], "cl"))
    out = im.add("layernorm", node, [src], im.shapes[src], {"eps": float(_attr(node, "epsilon", 1e-5))},
                 {"gamma": np.broadcast_to(gamma, shape[-1:]).astype(np.float64),
                  "beta": np.broadcast_to(beta, shape[-1:]).astype(np.float64)})
    im.bind(node.output[0], out, "cl")


def _add(im: _Importer, k: int, node) -> None:
    a, b = node.input
    if a in im.consts:
        a, b = b, a
    src, layout = im.source(a)
    if b in im.consts:   # a constant tensor (position embedding) in the program's order
        c = np.broadcast_to(im.consts[b], im.values[a].shape).astype(np.float64)
        if c.shape != im.values[node.output[0]].shape:
            raise Unsupported("addition that broadcasts the activation")
        im.require_shape(src, im.prog_shape(a, layout))
        pos = np.moveaxis(c[0], 0, -1) if layout == "cf" else c
        out = im.add("add", node, [src], im.shapes[src], {}, {"pos": pos.reshape(im.shapes[src])})
        im.bind(node.output[0], out, layout)
        return
    other, layout2 = im.source(b)
    if layout2 != layout or im.values[a].shape != im.values[b].shape:
        raise Unsupported("addition of tensors in different shapes or orders")
    im.require_shape(src, im.prog_shape(a, layout))
    im.require_shape(other, im.shapes[src])
    out = im.add("add", node, [src, other], im.shapes[src])
    im.bind(node.output[0], out, layout)


def _mean(im: _Importer, k: int, node) -> None:
    """Global average pooling: ReduceMean over H, W of a map or over the tokens of [1, N, C]."""
    src, layout = im.source(node.input[0])
    shape = im.values[node.input[0]].shape
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = im.const(node.input[1])
    axes = sorted(int(a) % len(shape) for a in (axes if axes is not None else range(len(shape))))
    pooled = [1] if layout == "cl" and len(shape) == 3 else [2, 3] if layout == "cf" and len(shape) == 4 else None
    if node.op_type == "GlobalAveragePool":
        axes = [2, 3]
    if axes != pooled:
        raise Unsupported(f"mean over axes {axes} of a {list(shape)} tensor")
    out = im.add("avgpool", node, [src], (1, im.shapes[src][-1]))
    im.bind(node.output[0], out, "cl")


def _token_axis(im: _Importer, name: str) -> tuple[str, tuple]:
    """A [1, N, C] token tensor in channels-last order (its program tensor and shape)."""
    src, layout = im.source(name)
    shape = im.values[name].shape
    if layout != "cl" or len(shape) != 3 or shape[0] != 1 or shape[-1] != im.shapes[src][-1]:
        raise Unsupported(f"token operation on a tensor of shape {list(shape)}")
    return src, shape


def _concat(im: _Importer, k: int, node) -> None:
    """Channel concatenation of two computed tensors, or constant tokens (a class token) put before tokens."""
    if len(node.input) != 2:
        raise Unsupported("concatenation of more than two tensors")
    first, second = node.input
    if first in im.consts and second not in im.consts:
        src, shape = _token_axis(im, second)
        tok = im.consts[first]
        if _attr(node, "axis", 0) % 3 != 1 or tok.ndim != 3 or tok.shape[0] != 1 or tok.shape[2] != shape[2]:
            raise Unsupported("concatenation of a constant other than tokens before tokens")
        im.require_shape(src, (1, shape[1], shape[2]))
        out = im.add("token_rows", node, [src], (1, shape[1] + tok.shape[1], shape[2]), {"start": 0, "rows": shape[1]},
                     {"tok": tok[0].astype(np.float64)})
        im.bind(node.output[0], out, "cl")
        return
    if any(i in im.consts for i in node.input):
        raise Unsupported("concatenation with a constant after the tensor")
    (a, la), (b, lb) = im.source(first), im.source(second)
    shape = im.values[first].shape
    axis = _attr(node, "axis", 0) % len(shape)
    if la != lb or axis != (1 if la == "cf" else len(shape) - 1):
        raise Unsupported("concatenation along another axis than the channels")
    im.require_shape(b, im.shapes[a][:-1] + (im.shapes[b][-1],))
    out = im.add("concat", node, [a, b], im.shapes[a][:-1] + (im.shapes[a][-1] + im.shapes[b][-1],))
    im.bind(node.output[0], out, la)


def _token_range(im: _Importer, node, start: int, rows: int) -> None:
    src, shape = _token_axis(im, node.input[0])
    if not 0 <= start < start + rows <= shape[1]:
        raise Unsupported(f"tokens {start}..{start + rows} of {shape[1]}")
    im.require_shape(src, (1, shape[1], shape[2]))
    out = im.add("token_rows", node, [src], (1, rows, shape[2]), {"start": start, "rows": rows})
    im.bind(node.output[0], out, "cl")


def _gather(im: _Importer, k: int, node) -> None:
    """One token of [1, N, C] (a class token read out: ``x[:, 0]``)."""
    idx = im.const(node.input[1])
    if idx is None or idx.size != 1 or _attr(node, "axis", 0) % 3 != 1:
        raise Unsupported("gather other than one token by a constant index")
    n = im.values[node.input[0]].shape[1]
    _token_range(im, node, int(idx.ravel()[0]) % n, 1)


def _slice(im: _Importer, k: int, node) -> None:
    """A range of tokens of [1, N, C] (step 1)."""
    starts, ends = im.const(node.input[1]), im.const(node.input[2])
    axes = im.const(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(len(starts))
    steps = im.const(node.input[4]) if len(node.input) > 4 and node.input[4] else np.ones(len(starts), np.int64)
    if starts is None or ends is None or axes is None or steps is None or len(starts) != 1:
        raise Unsupported("slice with computed bounds or over several axes")
    n = im.values[node.input[0]].shape[1]
    if int(axes[0]) % 3 != 1 or int(steps[0]) != 1:
        raise Unsupported("slice other than a token range")
    start = int(np.clip(starts[0] + n if starts[0] < 0 else starts[0], 0, n))
    end = int(np.clip(ends[0] + n if ends[0] < 0 else ends[0], 0, n))
    _token_range(im, node, start, end - start)


def _gate(im: _Importer, node) -> None:
    """A map times a computed per-channel vector (a squeeze-excitation gate): the channel scale unit."""
    sizes = [im.values[i].size for i in node.input]
    x, s = node.input if sizes[0] >= sizes[1] else node.input[::-1]
    (src, layout), (vec, _) = im.source(x), im.source(s)
    c = im.values[x].shape[1 if layout == "cf" else -1]
    if im.values[s].size != c or im.values[node.output[0]].shape != im.values[x].shape or im.shapes[vec][-1] != c:
        raise Unsupported("product of two computed tensors other than a per-channel gate")
    if layout == "cf":
        im.require_shape(src, im.prog_shape(x, "cf"))
    out = im.add("channel_scale", node, [src, vec], im.shapes[src])
    im.bind(node.output[0], out, layout)


def _channel_affine(im: _Importer, k: int, node) -> None:
    """A BatchNormalization, or a product with (or quotient by) a per-channel constant, that follows no
    convolution or linear layer it could fold into: a 1x1 depthwise convolution (weights = scale, bias = shift)."""
    x = node.input[0]
    if node.op_type == "BatchNormalization":
        params = [im.const(i) for i in node.input[1:5]]
        if any(p is None for p in params) or len(node.output) > 1 and any(node.output[1:]):
            raise Unsupported("BatchNormalization in training mode or with computed statistics")
        gamma, beta, mean, var = params
        scale = gamma / np.sqrt(var + _attr(node, "epsilon", 1e-5))
        shift = beta - mean * scale
    else:
        if x in im.consts:
            if node.op_type == "Div":
                raise Unsupported("division by a computed tensor")
            x = node.input[1]
        other = node.input[1] if x == node.input[0] else node.input[0]
        if other not in im.consts:
            if node.op_type == "Mul":
                return _gate(im, node)
            raise Unsupported("quotient of two computed tensors")
        src, layout = im.source(x)
        c = np.broadcast_to(im.consts[other], im.values[x].shape)
        vec = np.moveaxis(c, 1 if layout == "cf" else -1, -1).reshape(-1, im.shapes[src][-1])
        if c.shape != im.values[node.output[0]].shape or not np.all(vec == vec[:1]):
            raise Unsupported("product with a constant that is not per channel")
        scale, shift = (1.0 / vec[0] if node.op_type == "Div" else vec[0]), np.zeros(vec.shape[1])
    src, layout = im.source(x)
    if layout == "cf":   # the depthwise unit reads the map as [H, W, C]
        im.require_shape(src, im.prog_shape(x, "cf"))
    elif len(im.shapes[src]) == 2:   # [1, C] (a pooled vector) as a one-pixel map
        im.require_shape(src, (1,) + im.shapes[src])
    shape = im.shapes[src]
    if len(shape) != 3 or (layout == "cf") != (len(im.values[x].shape) == 4):
        raise Unsupported(f"per-channel scale of a tensor of shape {list(im.values[x].shape)}")
    im.add("dwconv", node, [src], shape, {"k": 1, "stride": 1, "pad": 0, "act": "none"},
           {"w": scale.reshape(-1, 1, 1).astype(np.float64), "b": shift.astype(np.float64)})
    im.epilogue(node.output[0], im.layers[-1], layout)


def _instance_norm(im: _Importer, k: int, node) -> None:
    """InstanceNormalization of a tensor viewed as one channel ([1, 1, L]: how GroupNorm with one group is
    exported): mean and variance over the whole tensor, the ``global_norm`` unit. Its per-channel affine comes
    after it as Mul and Add nodes (a 1x1 depthwise layer)."""
    src, layout = im.source(node.input[0])
    shape = im.values[node.input[0]].shape
    scale, bias = im.const(node.input[1]), im.const(node.input[2])
    if len(shape) < 3 or shape[:2] != (1, 1) or scale is None or bias is None or scale.size != 1 \
            or float(scale.ravel()[0]) != 1.0 or float(bias.ravel()[0]) != 0.0:
        raise Unsupported(f"instance normalisation of a {list(shape)} tensor other than one group, no affine")
    out = im.add("global_norm", node, [src], im.shapes[src], {"eps": float(_attr(node, "epsilon", 1e-5))})
    im.bind(node.output[0], out, layout)


def _separable(im: _Importer, k: int, node) -> None:
    """MobileViTv2's separable self-attention from ``node`` (the Split of a 1x1 projection [1, 1 + 2D, P, N] into
    scores, keys and values): found by value; the projection becomes two linear layers (scores and keys; values
    with their ReLU) and the ``separable_attention`` unit."""
    from .reference import separable_attention

    qkv, layout = im.source(node.input[0])
    prod = next((l for l in im.layers if l.output == qkv), None)
    shape = im.shapes[qkv]
    if prod is None or prod.kind != "linear" or len(shape) != 3 or shape[-1] % 2 != 1 or len(prod.inputs) != 1 \
            or prod.attrs.get("act", "none") != "none":
        raise Unsupported("split of a tensor that is not a 1x1 projection [P, N, 1 + 2D]")
    g, n, d = shape[0], shape[1], (shape[-1] - 1) // 2
    if d < 16:
        raise Unsupported(f"separable attention of {d} < 16 features")
    im.done.discard(k)   # the Split is the first node of the pattern's region
    starts = {t for t, (p, _) in im.alias.items() if p == qkv}
    region = im._region(starts, SEPARABLE_OPS)
    v = im.ort_value(node.input[0])
    want = separable_attention(v[..., :1 + d], np.maximum(v[..., 1 + d:], 0))
    end = im._match_end(starts, region, want, layout)
    if end is None:
        raise Unsupported("split not recognised as separable self-attention")
    if any(u not in region and u not in im.done for t in starts for u in im.consumers.get(t, [])) \
            or starts & im.outputs:
        raise Unsupported("the projection is read outside the separable attention")
    im.done.update(im._between(starts, end, region))
    w, b = prod.params["w"], prod.params.get("b", np.zeros(2 * d + 1))
    prod.params = {"w": w[:1 + d], "b": b[:1 + d]}
    for t in starts:
        im.alias.pop(t, None)
    im.ort_name.pop(qkv, None)
    im.shapes[qkv] = (g, n, 1 + d)
    im.fixed[qkv] = v[..., :1 + d]
    vals = im.add("linear", node, list(prod.inputs), (g, n, d), {"act": "relu"}, {"w": w[1 + d:], "b": b[1 + d:]})
    im.bind(end, im.add("separable_attention", node, [qkv, vals], (g, n, d)), layout)


def _pool_mixer(im: _Importer, k: int, node) -> None:
    """EfficientFormer's pooling token mixer, ``x + scale * (avgpool(x) - x)`` (or ``avgpool(x) - x``): a
    KxK average pool of stride 1, same padding, padding not counted, then the nodes that make it a mixer."""
    from .reference import pool_mixer

    src, (_, c, h, w) = _map_input(im, node.input[0])
    kk = _attr(node, "kernel_shape", [0])
    pads, strides = _attr(node, "pads", [0] * 4), _attr(node, "strides", [1, 1])
    if len(set(kk)) != 1 or set(strides) != {1} or set(pads) != {kk[0] // 2} or _attr(node, "count_include_pad", 0):
        raise Unsupported(f"average pool {kk} strides {strides} pads {pads} (only KxK, stride 1, same padding, "
                          "padding not counted, as a token mixer)")
    im.done.discard(k)   # the pool is the first node of the pattern
    starts = {t for t, (p, _) in im.alias.items() if p == src}
    region = im._region(starts, {"AveragePool", "Sub", "Mul", "Add"})
    scales = [v.astype(np.float64).ravel() for j in sorted(region) for v in map(im.const, im.nodes[j].input)
              if v is not None and v.size == c and im.nodes[j].op_type == "Mul"]
    for scale in scales + [None]:   # the whole mixer (with its layer scale and residual) before its first part
        end = im._match_end(starts, region, pool_mixer(im.ort_value(node.input[0]), kk[0], scale), "cf")
        if end is not None:
            im.done.update(im._between(starts, end, region))
            params = {"scale": scale} if scale is not None else {}
            im.bind(end, im.add("pool_mixer", node, [src], (h, w, c), {"k": kk[0]}, params), "cf")
            return
    raise Unsupported("average pool that is not a pooling token mixer")


NORM_OPS = {"ReduceL2", "ReduceSumSquare", "ReduceSum", "Sqrt", "Pow", "Mul", "Clip", "Max", "Expand", "Div", "Add"}


def _l2norm(im: _Importer, k: int, node) -> None:
    """x / max(||x||, eps) over the channels (SwiftFormer's query and key normalisation), however spelled."""
    from .reference import l2_normalize

    src, shape = _token_input(im, node.input[0])
    im.done.discard(k)   # the reduction is the first node of the pattern
    starts = {t for t, (p, _) in im.alias.items() if p == src}
    region = im._region(starts, NORM_OPS)
    end = im._match_end(starts, region, l2_normalize(im.ort_value(node.input[0])), "cl")
    if end is None:
        raise Unsupported("L2 norm that is not a normalisation over the channels")
    im.done.update(im._between(starts, end, region))
    im.bind(end, im.add("l2norm", node, [src], im.shapes[src]), "cl")


def _additive(im: _Importer, node, wg: np.ndarray) -> None:
    """SwiftFormer's additive attention from ``node`` = normalised queries x w_g: scores normalised over the
    tokens (any score scale cancels there), their weighted sum of the queries, times the normalised keys."""
    from .reference import additive_attention

    qn, _ = _token_input(im, node.input[0])
    im.done.discard(im.nodes.index(node))   # the scores are the first node of the pattern
    starts = {t for t, (p, _) in im.alias.items() if p == qn}
    region = im._region(starts, NORM_OPS | {"MatMul", "ReduceSum", "Transpose", "Reshape", "Squeeze", "Unsqueeze"})
    keys = {im.alias[i][0]: i for j in sorted(region) for i in im.nodes[j].input
            if i in im.alias and im.alias[i][0] != qn and im.alias[i][1] == "cl"}
    d = im.shapes[qn][-1]
    for kn, name in sorted(keys.items()):
        if im.shapes[kn] != im.shapes[qn] or not any(l.output == kn and l.kind == "l2norm" for l in im.layers):
            continue
        want = additive_attention(im.ort_value(node.input[0]).reshape(-1, d), im.ort_value(name).reshape(-1, d), wg)
        both = starts | {t for t, (p, _) in im.alias.items() if p == kn}
        end = im._match_end(both, region, want.reshape(im.shapes[qn]), "cl")
        if end is not None:
            im.done.update(im._between(both, end, region))
            im.bind(end, im.add("additive", node, [qn, kn], im.shapes[kn], {}, {"wg": wg}), "cl")
            return
    raise Unsupported("not an additive attention")


RULES = {"Conv": _conv, "MatMul": _matmul, "Gemm": _gemm, "LayerNormalization": _layernorm, "Add": _add,
         "ReduceMean": _mean, "GlobalAveragePool": _mean, "Concat": _concat, "Gather": _gather, "Slice": _slice,
         "BatchNormalization": _channel_affine, "Mul": _channel_affine, "Div": _channel_affine,
         "ReduceL2": _l2norm, "AveragePool": _pool_mixer, "InstanceNormalization": _instance_norm,
         "Split": _separable,
         **{op: _view for op in VIEW_OPS}}


def _macs(model, values: dict) -> dict:
    """Multiply-accumulates per node of the matrix ops (Conv, MatMul, Gemm), from the computed shapes."""
    out = {}
    for k, n in enumerate(model.graph.node):
        if n.op_type not in ("Conv", "MatMul", "Gemm") or n.output[0] not in values:
            continue
        y = values[n.output[0]]
        a, b = (values.get(i) for i in n.input[:2])
        if n.op_type == "Conv" and b is not None:
            out[k] = int(y.size * np.prod(b.shape[1:]))
        elif a is not None:
            red = a.shape[-1] if not (n.op_type == "Gemm" and _attr(n, "transA", 0)) else a.shape[0]
            out[k] = int(y.size * red)
    return out


def lower_onnx(model, sample: np.ndarray) -> ImportResult:
    """Map ``model`` (an ``onnx.ModelProto`` with static shapes) to an accelerator program plus its CPU part.

    Parameters
    ----------
    model
        The ONNX model; batch-1 NCHW image or [1, N, C] token input.
    sample
        One input of the model's input shape (float), on which onnxruntime computes the values patterns and
        layers are checked against.

    Raises
    ------
    ModelImportError
        If onnxruntime cannot run the model, or no node at all runs on the accelerator (the message names the
        first node that cannot, with its op type).
    """
    im = _Importer(model, np.asarray(sample))
    stop, why = im.run()
    cut, layout = _choose_cut(im, stop)
    nodes = im.nodes
    first = nodes[stop] if stop < len(nodes) else None
    unsupported = (first.op_type, first.name, why) if first is not None else None
    if cut is None or not im.layers:
        what = f"{first.op_type} node '{first.name}': {why}" if first is not None else "the graph's outputs"
        raise ModelImportError(f"no part of the model runs on the accelerator; first unsupported: {what}")
    keep = _needed_layers(im.layers, im.alias[cut][0])
    layers = _fold_channel_affines([l for l in im.layers if l.name in keep], im.alias[cut][0], im.shapes)
    tail = _tail_nodes(im, cut) if cut is not None and cut not in im.outputs else []
    # the node no rule maps first (with why), then the rest of the CPU part in graph order
    cpu = ([f"{first.name} ({first.op_type}: {why})"] if first is not None else []) + [
        f"{nodes[k].name} ({nodes[k].op_type})" for k in tail if k != stop and k not in im.folded]
    used = {"input"} | {t for l in layers for t in l.inputs} | {l.output for l in layers}
    prog = Program("input", {k: v for k, v in im.shapes.items() if k in used}, layers, cpu_layers=cpu)
    macs = _macs(model, im.values)
    tail_set = set(tail)
    total = sum(macs.values())
    accel = sum(m for k, m in macs.items() if k not in tail_set)
    perm = [2, 0, 1] if layout == "cf" and len(prog.shapes[prog.output]) == 3 else None
    return ImportResult(prog, model, None if cut in im.outputs else cut, perm,
                        [(nodes[k].op_type, nodes[k].name) for k in tail], unsupported,
                        len(set(range(len(nodes))) - im.folded - tail_set), len(nodes) - len(im.folded),
                        accel, total)


def _fold_channel_affines(layers: list, out: str, shapes: dict) -> list:
    """Fold each per-channel affine (a 1x1 depthwise layer without activation, e.g. a GroupNorm's gamma and beta)
    into the linear layers that read it, when only linear layers read it and only as their input (not as a
    residual), it is not the program's output, and it keeps its input's shape: then w x (s * v + t) + b is
    (w s) v + (w t + b) exactly, and the layer goes."""
    for aff in [l for l in layers if l.kind == "dwconv" and l.attrs["k"] == 1 and l.attrs["stride"] == 1
                and l.attrs.get("act", "none") == "none"]:
        readers = [l for l in layers if aff.output in l.inputs]
        if aff.output == out or not readers or shapes[aff.inputs[0]] != shapes[aff.output] or any(
                l.kind != "linear" or l.inputs.index(aff.output) != 0 or aff.output in l.inputs[1:] for l in readers):
            continue
        scale, shift = aff.params["w"].reshape(-1), aff.params.get("b", np.zeros(len(aff.params["w"])))
        for l in readers:
            w = l.params["w"]
            l.params["b"] = l.params.get("b", np.zeros(w.shape[0])) + w @ shift
            l.params["w"] = w * scale[None, :]
            l.inputs[0] = aff.inputs[0]
        layers = [l for l in layers if l is not aff]
    return layers


def _needed_layers(layers: list, out: str) -> set:
    """Names of the layers ``out`` depends on."""
    by_out = {l.output: l for l in layers}
    need, stack = set(), [out]
    while stack:
        layer = by_out.get(stack.pop())
        if layer is None or layer.name in need:
            continue
        need.add(layer.name)
        stack += layer.inputs
    return need


def _tail_nodes(im: _Importer, cut: str) -> list:
    """Indices of the nodes the graph outputs need, given ``cut`` (and constants)."""
    produced = {o: k for k, n in enumerate(im.nodes) for o in n.output}
    need, stack = set(), list(im.outputs)
    while stack:
        t = stack.pop()
        if t == cut or t in im.consts and produced.get(t) is None:
            continue
        k = produced.get(t)
        if k is None or k in need:
            continue
        need.add(k)
        stack += [i for i in im.nodes[k].input if i]
    return sorted(need)


def _choose_cut(im: _Importer, stop: int) -> tuple[str | None, str | None]:
    """The tensor the CPU part reads: the latest computed one with which the CPU part needs nothing else.

    Returns (tensor, layout), or (None, None) if no such tensor exists. When the accelerator ran the whole graph
    the cut is the graph output.
    """
    if stop == len(im.nodes):
        out = next(iter(im.outputs))
        if len(im.outputs) == 1 and out in im.alias:
            return out, im.alias[out][1]
    produced = {o: k for k, n in enumerate(im.nodes) for o in n.output}
    order = sorted((produced.get(t, -1), t) for t in im.alias if im.alias[t][0] != "input")
    for _, t in reversed(order):
        tail = _tail_nodes(im, t)
        if not tail:
            continue
        reads = {i for k in tail for i in im.nodes[k].input if i} - {o for k in tail for o in im.nodes[k].output}
        if reads - {t} - set(im.consts):
            continue
        return t, im.alias[t][1]
    return None, None


def cpu_part(result: ImportResult) -> tuple:
    """The graph from ``result.cut`` to the model's outputs as the board's numpy interpreter runs it
    (:mod:`edgevit.pynq.numpy_graph`): its nodes and weights.

    Raises
    ------
    ModelImportError
        If it uses an operator the interpreter lacks.
    """
    import onnx.shape_inference
    import onnx.utils

    from ..pynq import cpu_tail, numpy_graph

    # onnx's Extractor reads the cut's type from value_info, which files exported without it lack
    mp = onnx.shape_inference.infer_shapes(result.model)
    outputs = [o.name for o in mp.graph.output]
    graph, weights = cpu_tail._plain(onnx.utils.Extractor(mp).extract_model([result.cut], outputs))
    try:
        numpy_graph.check_ops(graph)
    except NotImplementedError as e:
        raise ModelImportError(f"the CPU part of this model cannot run on the board: {e}") from None
    return graph, weights


def write_cpu_tail(result: ImportResult, sample: np.ndarray, out: Path) -> dict | None:
    """Write the CPU part (``cpu_tail.json``/``.npz``, the format :mod:`edgevit.pynq.numpy_graph` runs) into
    ``out``; checked against onnxruntime on ``sample`` first. Returns the tail's description, or None when the
    accelerator runs the whole graph.

    Raises
    ------
    ModelImportError
        If the CPU part uses an operator the board's numpy interpreter lacks, or differs from onnxruntime.
    """
    if result.cut is None:
        return None
    from ..pynq import cpu_tail

    mp = result.model
    outputs = [o.name for o in mp.graph.output]
    graph, weights = cpu_part(result)
    values = _intermediates(mp, mp.graph.input[0].name, np.asarray(sample))
    got = cpu_tail.run_checked(graph, weights, {result.cut: values[result.cut]})
    err = float(np.max([_rel_err(np.asarray(g, np.float64), values[o].astype(np.float64))
                        for g, o in zip(got, outputs)]))
    if not err <= cpu_tail.CHECK_RTOL:   # NaN (np.max keeps it) fails too
        raise ModelImportError(f"the numpy CPU part differs from onnxruntime (relative error {err:.2g})")
    names = sorted(weights)
    graph.update(input=result.cut, input_shape=list(values[result.cut].shape), transpose=result.transpose,
                 weights=names, check_relative_error=err, sample_output=values[outputs[0]].ravel().tolist())
    np.savez(Path(out) / cpu_tail.TAIL_NPZ, **{f"w{k}": weights[n] for k, n in enumerate(names)})
    (Path(out) / cpu_tail.TAIL_JSON).write_text(json.dumps(graph))
    return graph
