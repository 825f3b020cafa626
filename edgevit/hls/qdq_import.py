"""Map an int8 QDQ ONNX model (onnxruntime ``quantize_static``, ``edgevit quantize``) onto the accelerator's int8
units with the model's own scales: no fixed-point formats are chosen here.

A QDQ model keeps every operator in float between ``DequantizeLinear`` (int8 -> float) and ``QuantizeLinear``
(float -> int8) nodes. A quantized operator ``DQ(x) -> Conv/Gemm/MatMul(DQ(w), DQ(b)) [-> Relu] -> Q`` becomes an
int8 layer (:mod:`.ops` kind ``qlinear``; ``ReduceMean``/``GlobalAveragePool`` ``qavgpool``): int8 x int8 into an
exact accumulator with onnxruntime's int32 bias, requantized per output channel with ``M = sx * sw / sy`` as
onnxruntime computes it (:mod:`.requant`). Program tensors hold ``q - zero_point`` (:class:`~.fixed.QFmt`);
``DequantizeLinear`` and views (Reshape, Flatten, ...) that keep the values make another name of a tensor.

The accelerator runs a prefix of the graph, as for float models (:mod:`.onnx_import`): the first node no rule
maps ends it (with the reason), and the rest is the CPU part. Every layer is checked on one input against
onnxruntime's int8 tensors (at most one step apart: onnxruntime's unfused graph computes in float32) so a
misread pattern stops the accelerator part instead of computing something else.

Quantization parameters are untrusted input: a scale that is not a positive finite number or a zero point outside
its type's range is refused with :class:`~edgevit.errors.ModelImportError` before onnxruntime runs the file;
legal parameters the int8 units do not take (per-axis activation scales, uint8 or int16 tensors, weights with
zero points) send the node to the CPU with that reason.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelImportError
from . import requant
from .fixed import Fmt, QFmt, int8_format
from .ops import KINDS
from .onnx_import import (ImportResult, _attr, _choose_cut, _intermediates, _macs, _needed_layers, _tail_nodes,
                          cpu_part)
from .program import Layer, Program

PARAM_FMT = Fmt(16, 16)     # integer parameters stored as they are (weights, requantization records)
INT8_FORMATS = "int8_formats"   # program.json meta: tensor -> [scale, zero point] of the int8 tensors
MAX_STEPS = 1               # a layer vs onnxruntime's unfused (float32) graph on the mapping input
TAIL_MAX_STEPS = 4          # the board's numpy CPU part vs onnxruntime, output steps (docs/int8.md's int8 rule)
VIEW_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"}
# elementwise ops a table region may hold: each output element depends only on the same element of one int8
# tensor (other inputs: scalar constants), so the region is a 256-entry function of that tensor's int8 values
ELEMENTWISE_OPS = {"DequantizeLinear", "QuantizeLinear", "Sigmoid", "Mul", "Add", "Sub", "Div", "Relu", "Clip",
                   "Tanh", "Erf", "HardSigmoid", "HardSwish", "LeakyRelu", "Softplus", "Exp", "Neg", "Abs"}
MAX_TABLE_REGION = 16   # nodes in one table region
INT_RANGES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.int8, np.uint8, np.int16, np.uint16,
                                                                       np.int32)}


class Unsupported(Exception):
    """A node the int8 units cannot run (caught by the importer; ends the accelerator part)."""


def validate_qparams(model) -> None:
    """Refuse quantization parameters no int8 model can have, naming the node.

    Raises
    ------
    ModelImportError
        A QuantizeLinear/DequantizeLinear scale that is missing, not finite or not positive, or a zero point outside
        the range of its integer type or of another shape than the scale.
    """
    from onnx import numpy_helper

    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        what = f"{node.op_type} node '{node.name or node.output[0]}'"
        if len(node.input) < 2 or node.input[1] not in consts:
            raise ModelImportError(f"{what} has no constant scale: the accelerator needs the scales at compile time")
        scale = numpy_helper.to_array(consts[node.input[1]]).astype(np.float64)
        if scale.size == 0 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ModelImportError(f"{what} has scale {scale.ravel()[:4].tolist()}: scales must be positive finite "
                                   "numbers; re-quantize the model (edgevit quantize)")
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in consts:
                raise ModelImportError(f"{what} has no constant zero point")
            zp = numpy_helper.to_array(consts[node.input[2]])
            lo, hi = INT_RANGES.get(zp.dtype, (None, None))
            if lo is None:
                raise ModelImportError(f"{what} has a {zp.dtype} zero point: int8/uint8/int16/int32 expected")
            limits = (-128, 127) if node.op_type == "QuantizeLinear" and zp.dtype == np.int32 else (lo, hi)
            if zp.size != scale.size or np.any(zp.astype(np.int64) < limits[0]) or np.any(
                    zp.astype(np.int64) > limits[1]):
                raise ModelImportError(f"{what} has zero point {zp.ravel()[:4].tolist()} (shape {list(zp.shape)}) "
                                       f"for {scale.size} scales: outside {list(limits)} or another "
                                       "count; re-quantize the model")


class _QdqImporter:
    def __init__(self, model, sample: np.ndarray):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.nodes = list(self.graph.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ModelImportError(f"the accelerator takes one input; the graph has {len(inputs)}")
        self.input = inputs[0].name
        self.values = _intermediates(model, self.input, sample)
        self.outputs = {o.name for o in self.graph.output}
        self.consumers: dict = {}
        for k, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, []).append(k)
        self.const_dq: dict = {}   # DequantizeLinear of a constant: output -> (integers, scale, zero point, axis)
        self.alias: dict = {}      # ONNX tensor (int8 or its float view) -> (program tensor, layout)
        self.ort_name: dict = {}   # program tensor -> (ONNX int8 tensor with onnxruntime's values of it, layout)
        self.shapes: dict = {}
        self.formats: dict = {}
        self.layers: list[Layer] = []
        self.done: set = set()
        self.folded: set = set()

    # --- state --------------------------------------------------------------------------------------------

    def snapshot(self):
        return (len(self.layers), dict(self.alias), dict(self.ort_name), dict(self.shapes), dict(self.formats),
                set(self.done))

    def restore(self, snap) -> None:
        n, self.alias, self.ort_name, self.shapes, self.formats, self.done = snap
        del self.layers[n:]

    def qparams(self, node) -> QFmt:
        """The per-tensor int8 format of a QuantizeLinear/DequantizeLinear node (parameters validated)."""
        scale = self.consts[node.input[1]]
        zp = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale.size != 1:
            raise Unsupported(f"per-axis scales on an activation ({scale.size} scales): the int8 units take one "
                              "scale per tensor")
        if zp.dtype != np.int8:
            raise Unsupported(f"{zp.dtype} activations: the int8 units take int8 (edgevit quantize writes int8)")
        return int8_format(float(scale.ravel()[0]), int(zp.ravel()[0]))

    def add(self, kind: str, node, inputs: list, shape: tuple, fmt: QFmt, attrs=None, params=None) -> str:
        name = f"l{len(self.layers)}_{kind}"
        out = f"{name}.out"
        self.layers.append(Layer(kind, name, list(inputs), out, attrs or {}, params or {}, node.name or node.op_type))
        self.shapes[out] = tuple(int(d) for d in shape)
        self.formats[out] = fmt
        for key in (params or {}):
            if key != "b":
                self.formats[f"{name}.{key}"] = PARAM_FMT
        return out

    def source(self, name: str) -> tuple[str, str]:
        if name not in self.alias:
            raise Unsupported(f"input '{name}' is not an int8 tensor the accelerator has computed")
        return self.alias[name]

    def single_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def ort_steps(self, onnx_name: str, tensor: str, layout: str) -> np.ndarray:
        """onnxruntime's int8 values of ``onnx_name`` minus the zero point, in the program's order and shape."""
        shape, v = self.shapes[tensor], self.values[onnx_name].astype(np.int64) - self.formats[tensor].zero_point
        return np.moveaxis(v.reshape((shape[-1],) + shape[:-1]), 0, -1) if layout == "cf" else v.reshape(shape)

    def known(self, tensor: str) -> np.ndarray:
        """onnxruntime's value of a program tensor, or its layer's golden result on onnxruntime's inputs."""
        if tensor in self.ort_name:
            name, layout = self.ort_name[tensor]
            return self.ort_steps(name, tensor, layout)
        layer = next(l for l in reversed(self.layers) if l.output == tensor)
        env = {i: self.known(i) for i in layer.inputs}
        return KINDS[layer.kind].run_fixed(None, layer, env).reshape(self.shapes[tensor])

    def bind_quantized(self, onnx_name: str, tensor: str, layout: str) -> None:
        """Name the int8 tensor ``onnx_name`` as ``tensor`` after checking the layer on onnxruntime's values."""
        layer = self.layers[-1]
        env = {i: self.known(i) for i in layer.inputs}
        got = KINDS[layer.kind].run_fixed(None, layer, env).reshape(self.shapes[tensor])
        want = self.ort_steps(onnx_name, tensor, layout)
        if got.shape != want.shape or int(np.abs(got - want).max()) > MAX_STEPS:
            raise Unsupported(f"the int8 layer differs from onnxruntime by {int(np.abs(got - want).max())} steps")
        self.alias[onnx_name] = (tensor, layout)
        self.ort_name[tensor] = (onnx_name, layout)

    def weights(self, name: str, int_type=np.int8):
        """A DequantizeLinear of a constant: (integers, per-channel scales, axis)."""
        if name not in self.const_dq:
            raise Unsupported(f"'{name}' is not a quantized constant")
        q, scale, zp, axis = self.const_dq[name]
        if q.dtype != int_type:
            raise Unsupported(f"{q.dtype} weights: the int8 units take {np.dtype(int_type)} weights")
        if np.any(zp != 0):
            raise Unsupported("weights with nonzero zero points: the int8 units take symmetric weights")
        return q.astype(np.int64), scale.astype(np.float32), axis

    def output_quantize(self, name: str):
        """The QuantizeLinear that ``name`` (a layer's float result) feeds, through at most one ReLU:
        (its node index, format, relu)."""
        relu = False
        k = self.single_consumer(name)
        if k is not None and self.nodes[k].op_type == "Relu":
            relu, name = True, self.nodes[k].output[0]
            self.done.add(k)
            k = self.single_consumer(name)
        if k is None or self.nodes[k].op_type != "QuantizeLinear":
            raise Unsupported("its result is not quantized (no QuantizeLinear follows): it runs in float")
        self.done.add(k)
        return k, self.qparams(self.nodes[k]), relu

    def requant_records(self, m, fy: QFmt, channels: int) -> np.ndarray:
        try:
            m0, n = requant.multiplier(np.broadcast_to(np.asarray(m, np.float32), (channels,)))
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        return requant.records(m0, n, fy.zero_point)

    # --- the walk -----------------------------------------------------------------------------------------

    def run(self) -> tuple[int, str | None]:
        for k, node in enumerate(self.nodes):
            if k in self.done:
                continue
            if all(i in self.consts for i in node.input if i):   # constants: weights and their scales
                if node.op_type == "DequantizeLinear":
                    zp = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(1, int)
                    self.const_dq[node.output[0]] = (self.consts[node.input[0]],
                                                     self.consts[node.input[1]].astype(np.float32).ravel(),
                                                     zp.astype(np.int64).ravel(), _attr(node, "axis", 1))
                for o in node.output:
                    if o in self.values:
                        self.consts[o] = self.values[o]
                self.done.add(k)
                self.folded.add(k)
                continue
            snap = self.snapshot()
            try:
                rule = RULES.get(node.op_type)
                if rule is None:
                    raise Unsupported("no int8 accelerator unit for this op")
                self.done.add(k)
                rule(self, k, node)
            except Unsupported as why:
                self.restore(snap)
                return k, str(why)
        return len(self.nodes), None


# --- rules: one per ONNX op type ------------------------------------------------------------------------------

def _quantize(im: _QdqImporter, k: int, node) -> None:
    """The graph input's QuantizeLinear: the program input (the host quantizes as onnxruntime does)."""
    if node.input[0] != im.input or "input" in im.shapes:
        raise Unsupported("quantizes a tensor the accelerator did not compute in int8")
    fmt = im.qparams(node)
    x = im.values[im.input]
    if x.ndim == 4 and x.shape[0] == 1:
        shape, layout = (x.shape[2], x.shape[3], x.shape[1]), "cf"
    elif x.ndim == 3 and x.shape[0] == 1:
        shape, layout = tuple(x.shape[1:]), "cl"
    else:
        raise Unsupported(f"input of shape {list(x.shape)}: a batch-1 NCHW image or [1, N, C] tokens expected")
    im.shapes["input"], im.formats["input"] = tuple(int(d) for d in shape), fmt
    im.alias[node.output[0]] = ("input", layout)
    im.ort_name["input"] = (node.output[0], layout)


def _dequantize(im: _QdqImporter, k: int, node) -> None:
    """DequantizeLinear of an int8 tensor the accelerator computed: its float view, the same program tensor."""
    tensor, layout = im.source(node.input[0])
    if im.qparams(node) != im.formats[tensor]:
        raise Unsupported("dequantizes with other parameters than the tensor was quantized with")
    im.alias[node.output[0]] = (tensor, layout)


def _conv(im: _QdqImporter, k: int, node) -> None:
    """A dense Conv (any kernel, stride and symmetric padding) on int8: im2col (if not 1x1) and ``qlinear``; a
    depthwise one (group = channels): ``qdwconv``."""
    src, layout = im.source(node.input[0])
    x = im.values[node.input[0]]
    if layout != "cf" or x.ndim != 4:
        raise Unsupported(f"convolution input of shape {list(x.shape)} is not a batch-1 NCHW map")
    h, w, c = im.shapes[src]
    wq, sw, _ = im.weights(node.input[1])
    co, ci, kh, kw = wq.shape
    pads, strides = _attr(node, "pads", [0] * 4), _attr(node, "strides", [1, 1])
    group = _attr(node, "group", 1)
    depthwise = group > 1 and group == c == co and ci == 1
    if not depthwise and (group != 1 or ci != c):
        raise Unsupported(f"grouped convolution (group {group}) that is not depthwise")
    if kh != kw or len(set(pads)) != 1 or strides[0] != strides[1] or set(_attr(node, "dilations", [1, 1])) != {1}:
        raise Unsupported(f"convolution {kh}x{kw}, strides {strides}, pads {pads}: square kernels, equal strides "
                          "and padding, no dilation")
    fx = im.formats[src]
    bias = _bias(im, node, fx, sw, co)
    qk, fy, relu = im.output_quantize(node.output[0])
    m = (np.float32(fx.scale) * np.broadcast_to(sw, (co,))) / np.float32(fy.scale)   # float32, as onnxruntime
    pad, stride = pads[0], strides[0]
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kh) // stride + 1
    attrs = {"act": "relu" if relu else "none", "m": m.astype(np.float64).tolist(), "zy": fy.zero_point}
    if depthwise:
        out = im.add("qdwconv", node, [src], (ho, wo, c), fy, {**attrs, "k": kh, "stride": stride, "pad": pad},
                     {"w": wq[:, 0], **bias, "rq": im.requant_records(m, fy, co)})
        im.bind_quantized(im.nodes[qk].output[0], out, "cf")
        return
    if kh == 1 and stride == 1 and pad == 0:
        x_in, wmat = src, wq[:, :, 0, 0]
    else:
        x_in = im.add("im2col", node, [src], (ho * wo, kh * kh * c), fx, {"k": kh, "stride": stride, "pad": pad})
        wmat = wq.transpose(0, 2, 3, 1).reshape(co, -1)   # (ky, kx, c): im2col's order
    out = im.add("qlinear", node, [x_in], (ho, wo, co), fy, attrs,
                 {"w": wmat, **bias, "rq": im.requant_records(m, fy, co)})
    im.bind_quantized(im.nodes[qk].output[0], out, "cf")


AFFINE_WEIGHT = 127   # a per-channel affine's int8 weight magnitude: its bias is in steps of sx |a| / 127


def _channel_affine(im: _QdqImporter, node, name: str, what: str, a: np.ndarray, b: np.ndarray) -> None:
    """``a x + b`` per channel of the int8 tensor ``name`` up to the QuantizeLinear after ``node``: a 1x1
    ``qdwconv``. Weight ``sign(a) 127``, requantization ``M = float32(sx |a| / (127 sy))``, int32 bias
    ``round(b / (sy M))``: the integer result is the exact affine up to half a bias step (``M / 2`` output steps,
    ``sx |a| / (254 sy)``); onnxruntime computes the affine in float32 between its DequantizeLinear and
    QuantizeLinear, so the two agree within one output step (docs/fpga-int8.md)."""
    src, layout = im.source(name)
    x, shape = im.values[name], im.shapes[src]
    c = shape[-1]
    if x.ndim < 2 or x.shape[1] != c or not ((layout == "cf" and x.ndim >= 3) or (layout == "cl" and x.ndim == 2)):
        raise Unsupported(f"a {what} whose channels are not the last axis of the accelerator's map")
    if len(shape) != 3:
        raise Unsupported(f"a {what} on a {list(shape)} tensor: the 1x1 depthwise unit takes [H, W, C] maps")
    a, b = (np.broadcast_to(np.asarray(v, np.float64).ravel(), (c,)) for v in (a, b))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise Unsupported(f"a {what} whose scale or shift is not finite")
    fx = im.formats[src]
    qk, fy, relu = im.output_quantize(node.output[0])
    mag = np.where(a == 0, 1.0, np.abs(a))   # a zero scale: weight 0, the bias alone (in steps as if a were 1)
    m = (np.float32(fx.scale) * mag.astype(np.float32) / np.float32(AFFINE_WEIGHT)) / np.float32(fy.scale)
    bias = np.rint(b / (np.float64(fy.scale) * m.astype(np.float64)))
    if np.any(np.abs(bias) > np.iinfo(np.int32).max):
        raise Unsupported(f"a {what} whose shift does not fit an int32 bias at its scale")
    w = (np.sign(a) * AFFINE_WEIGHT).astype(np.int64).reshape(c, 1, 1)
    out = im.add("qdwconv", node, [src], shape, fy,
                 {"act": "relu" if relu else "none", "m": m.astype(np.float64).tolist(), "zy": fy.zero_point,
                  "k": 1, "stride": 1, "pad": 0},
                 {"w": w, "b": bias.astype(np.int64), "rq": im.requant_records(m, fy, c)})
    im.bind_quantized(im.nodes[qk].output[0], out, layout)


def _batchnorm(im: _QdqImporter, k: int, node) -> None:
    """BatchNormalization between a DequantizeLinear and a QuantizeLinear (one onnxruntime's pre-processing did not
    fold into a Conv): per channel ``a x + b``, ``a = scale / sqrt(var + epsilon)``, ``b = B - mean a``."""
    if _attr(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise Unsupported("BatchNormalization in training mode")
    c = im.shapes[im.source(node.input[0])[0]][-1]
    params = [im.consts.get(i) for i in node.input[1:5]]
    if len(params) != 4 or any(p is None or np.size(p) != c for p in params):
        raise Unsupported("a BatchNormalization with parameters that are not constants, one per channel")
    scale, beta, mean, var = (np.asarray(p, np.float64).ravel() for p in params)
    with np.errstate(all="ignore"):
        a = scale / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
    _channel_affine(im, node, node.input[0], "BatchNormalization", a, beta - mean * a)


def _per_channel_constant(im: _QdqImporter, node):
    """(the int8 tensor's name, the constant) of a binary op between a tensor and a constant with one value per
    channel ([C, 1, 1]: a layer scale, a bias); None for two tensors or scalar constants; Unsupported for
    constants of other shapes."""
    const = [i for i in node.input if i in im.consts and np.size(im.consts[i]) > 1]
    tensor = [i for i in node.input if i not in const]
    if len(const) != 1 or len(tensor) != 1:
        return None
    v, x = np.asarray(im.consts[const[0]]), im.values[tensor[0]]
    shape = (1,) * (x.ndim - v.ndim) + v.shape
    if x.ndim < 2 or len(shape) != x.ndim or shape[1] != x.shape[1] or np.prod(shape) != x.shape[1]:
        raise Unsupported(f"a {node.op_type} of a constant tensor that is not one value per channel (a position "
                          "embedding): no int8 unit for it")
    return tensor[0], v


def _mul(im: _QdqImporter, k: int, node) -> None:
    """Mul of an int8 map by a constant with one value per channel: the per-channel affine
    (:func:`_channel_affine`); otherwise an elementwise table region."""
    found = _per_channel_constant(im, node)
    if found is not None:
        return _channel_affine(im, node, found[0], "Mul by a per-channel constant", found[1], 0.0)
    ins = {im.alias[i][0] for i in node.input if i in im.alias}
    if len(ins) == 2:
        raise Unsupported("a Mul of two int8 tensors (a gate: squeeze-excitation, attention): no int8 unit for it")
    _table(im, k, node)


def _bias(im: _QdqImporter, node, fx: QFmt, sw: np.ndarray, n: int, slot: int = 2) -> dict:
    """onnxruntime's int32 bias (scale x_scale * w_scale, zero point 0), or none."""
    if len(node.input) <= slot or not node.input[slot]:
        return {}
    bq, bs, _ = im.weights(node.input[slot], np.int32)
    want = np.float32(fx.scale) * np.broadcast_to(sw, (n,))
    if bq.shape != (n,) or not np.allclose(np.broadcast_to(bs, (n,)), want, rtol=1e-6, atol=0):
        raise Unsupported("an int32 bias whose scale is not input scale x weight scale")
    return {"b": bq}


def _gemm(im: _QdqImporter, k: int, node) -> None:
    """Gemm of a [1, K] int8 tensor by constant int8 weights (transB either way), int32 bias: ``qlinear``."""
    if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
        raise Unsupported("Gemm with transA, alpha or beta")
    wq, sw, axis = im.weights(node.input[1])
    if not _attr(node, "transB", 0):
        wq = wq.T
        axis = 1 - axis if sw.size > 1 else 0
    if sw.size > 1 and axis != 0:
        raise Unsupported("weight scales along the input features")
    _qmatmul(im, node, wq, sw, lambda fx, n: _bias(im, node, fx, sw, n))


def _matmul(im: _QdqImporter, k: int, node) -> None:
    """MatMul of int8 tokens by a constant int8 [K, N] matrix (scales per N or one): ``qlinear`` without bias."""
    wq, sw, axis = im.weights(node.input[1])
    if wq.ndim != 2 or (sw.size > 1 and axis not in (1, -1)):
        raise Unsupported("MatMul by a weight that is not [K, N] with scales per output")
    _qmatmul(im, node, wq.T, sw, lambda fx, n: {})


def _qmatmul(im: _QdqImporter, node, w: np.ndarray, sw: np.ndarray, bias) -> None:
    src, layout = im.source(node.input[0])
    x = im.values[node.input[0]]
    n, kk = w.shape
    if layout != "cl" or x.shape[-1] != kk:
        raise Unsupported(f"input of shape {list(x.shape)} is not tokens [..., {kk}]")
    fx = im.formats[src]
    b = bias(fx, n)
    qk, fy, relu = im.output_quantize(node.output[0])
    m = (np.float32(fx.scale) * np.broadcast_to(sw, (n,))) / np.float32(fy.scale)
    out = im.add("qlinear", node, [src], im.shapes[src][:-1] + (n,), fy,
                 {"act": "relu" if relu else "none", "m": m.astype(np.float64).tolist(), "zy": fy.zero_point},
                 {"w": w, **b, "rq": im.requant_records(m, fy, n)})
    im.bind_quantized(im.nodes[qk].output[0], out, "cl")


def _mean(im: _QdqImporter, k: int, node) -> None:
    """The mean over a map's pixels (ReduceMean over H, W or GlobalAveragePool) on int8: ``qavgpool``."""
    src, layout = im.source(node.input[0])
    x = im.values[node.input[0]]
    axes = _attr(node, "axes", None)
    if node.op_type == "ReduceMean" and axes is None and len(node.input) > 1 and node.input[1] in im.consts:
        axes = im.consts[node.input[1]].tolist()
    if layout != "cf" or x.ndim != 4 or (node.op_type == "ReduceMean" and sorted(a % 4 for a in axes) != [2, 3]):
        raise Unsupported("a mean that is not over a map's pixels")
    h, w, c = im.shapes[src]
    fx = im.formats[src]
    qk, fy, relu = im.output_quantize(node.output[0])
    if relu:
        raise Unsupported("a ReLU after a mean")
    m = np.float32(fx.scale / (fy.scale * h * w))
    y = im.nodes[qk].output[0]
    keep = im.values[y].ndim == 4
    out = im.add("qavgpool", node, [src], (1, 1, c) if keep else (1, c), fy,
                 {"m": [float(m)] * c, "zy": fy.zero_point}, {"rq": im.requant_records(m, fy, c)})
    im.bind_quantized(y, out, "cf" if keep else "cl")


def _table(im: _QdqImporter, k: int, node) -> None:
    """An elementwise region on one int8 tensor ending in a QuantizeLinear (Sigmoid, SiLU as x * Sigmoid(x),
    HardSwish, GELU spelled with Erf, ...): a ``qtable`` layer. The table is what onnxruntime's own kernels give
    for each of the 256 int8 inputs (the region run on them), so the layer is onnxruntime's result exactly
    wherever onnxruntime computes the region element by element."""
    src, layout = next(((t, l) for i in node.input if i in im.alias for t, l in [im.alias[i]]), (None, None))
    if src is None:
        raise Unsupported("input is not an int8 tensor the accelerator has computed")
    starts = {name for name, (t, _) in im.alias.items() if t == src}
    region, frontier = [], [k]
    while frontier and len(region) < MAX_TABLE_REGION:   # forward through elementwise ops
        j = frontier.pop(0)
        n = im.nodes[j]
        if j in region or n.op_type not in ELEMENTWISE_OPS:
            continue
        region.append(j)   # on through Q -> DQ too: SiLU multiplies x by its quantized sigmoid
        frontier += [u for o in n.output for u in im.consumers.get(o, [])]
    region.sort()
    produced = {o: j for j in region for o in im.nodes[j].output}
    for end in sorted((j for j in region if im.nodes[j].op_type == "QuantizeLinear"), reverse=True):
        closure, stack = set(), [end]
        while stack:   # the nodes the end needs, back to the int8 tensor and scalar constants
            j = stack.pop()
            if j in closure:
                continue
            closure.add(j)
            for i in im.nodes[j].input:
                if i and i not in starts and i not in im.consts and i not in im.const_dq:
                    if i not in produced:
                        closure = None
                        break
                    stack.append(produced[i])
            if closure is None:
                break
        if closure is None or k not in closure:
            continue
        inner = {o for j in closure for o in im.nodes[j].output} - {im.nodes[end].output[0]}
        if any(u not in closure for o in inner for u in im.consumers.get(o, [])) or inner & im.outputs:
            continue
        if any(im.consts.get(i, np.zeros(1)).size != 1 for j in closure for i in im.nodes[j].input
               if i in im.consts and im.nodes[j].op_type not in ("QuantizeLinear", "DequantizeLinear")):
            continue
        fy = im.qparams(im.nodes[end])
        table = _region_table(im, sorted(closure), starts, im.nodes[end].output[0], im.formats[src])
        im.done.update(closure)
        shape = im.shapes[src]
        out = im.add("qtable", node, [src], shape, fy, {}, {"w": table - fy.zero_point})
        im.bind_quantized(im.nodes[end].output[0], out, layout)
        return
    raise Unsupported("an elementwise op whose result is not quantized as a function of one int8 tensor")


def _region_table(im: _QdqImporter, closure: list, starts: set, end: str, fx: QFmt) -> np.ndarray:
    """onnxruntime's int8 value of ``end`` for each input ``x - fx.zero_point`` in [-256, 255] (512 entries;
    those no int8 value reaches are 0)."""
    import onnx
    from onnx import helper

    from ..reference import onnxruntime_session

    from ..errors import EdgevitError

    producer = {o: j for j, n in enumerate(im.nodes) for o in n.output}
    views = {i for j in closure for i in im.nodes[j].input if i in starts and im.values[i].dtype != np.int8}
    dqs = sorted({producer[v] for v in views})   # the float views' DequantizeLinear nodes (mapped before)
    if any(im.nodes[j].op_type != "DequantizeLinear" for j in dqs) or len({im.nodes[j].input[0] for j in dqs}) > 1:
        raise Unsupported("an elementwise region on a view the accelerator keeps in another order")
    src_q = im.nodes[dqs[0]].input[0] if dqs else next(i for j in closure for i in im.nodes[j].input if i in starts)
    nodes = [im.nodes[j] for j in dqs + closure]
    used = {i for n in nodes for i in n.input if i}
    consts = [onnx.numpy_helper.from_array(np.asarray(im.consts[i]), i) for i in sorted(used) if i in im.consts]
    for name in sorted(used & set(im.const_dq)):   # constants dequantized by folded nodes: their values
        consts.append(onnx.numpy_helper.from_array(np.asarray(im.values[name]), name))
    g = helper.make_graph(nodes, "table", [helper.make_tensor_value_info(src_q, onnx.TensorProto.INT8, [256])],
                          [helper.make_tensor_value_info(end, onnx.TensorProto.INT8, [256])], consts)
    m = helper.make_model(g, opset_imports=list(im.model.opset_import))
    m.ir_version = im.model.ir_version
    q = np.arange(-128, 128, dtype=np.int8)
    try:
        sess = onnxruntime_session(m.SerializeToString())
        y = np.asarray(sess.run(None, {src_q: q})[0], np.int64)
    except (EdgevitError, RuntimeError, ValueError) as exc:   # onnxruntime's own failure types derive from these
        raise Unsupported(f"onnxruntime cannot run the elementwise region alone: {str(exc).splitlines()[0]}") from None
    table = np.zeros(512, np.int64)
    table[q.astype(np.int64) - fx.zero_point + 256] = y
    return table


def _add(im: _QdqImporter, k: int, node) -> None:
    """Add or Sub of two int8 tensors of one shape (a residual; fastvit's ``mixer(x) - norm(x)``): ``qadd``, a
    Sub with the second multiplier negated; of a tensor and a per-channel constant: the per-channel affine;
    otherwise (scalar constants) an elementwise table region."""
    found = _per_channel_constant(im, node)
    if found is not None:   # x + c, x - c, c - x with c per channel: the per-channel affine
        name, c = found
        a = -1.0 if node.op_type == "Sub" and node.input[1] == name else 1.0
        return _channel_affine(im, node, name, f"{node.op_type} of a per-channel constant", a,
                               -c if node.op_type == "Sub" and a > 0 else c)
    ins = [im.alias.get(i) for i in node.input]
    if len(ins) != 2 or None in ins or ins[0][0] == ins[1][0]:
        return _table(im, k, node)
    (a, la), (b, lb) = ins
    if im.shapes[a] != im.shapes[b] or la != lb or im.values[node.input[0]].shape != im.values[node.input[1]].shape:
        raise Unsupported("an add of two int8 tensors of different shapes or orders")
    qk, fy, relu = im.output_quantize(node.output[0])
    if relu:
        raise Unsupported("a ReLU after an int8 add")
    fa, fb = im.formats[a], im.formats[b]
    ra, rb = float(np.float32(fa.scale) / np.float32(fy.scale)), float(np.float32(fb.scale) / np.float32(fy.scale))
    try:
        rec = requant.add_record(ra, rb, fy.zero_point)
    except ValueError as exc:
        raise Unsupported(str(exc)) from None
    if node.op_type == "Sub":   # MB -> -MB: its words (-MB >> 15, -MB & 32767) read back as -MB (qlinear.h, requant.py)
        mb = -((int(rec[2]) << 15) | int(rec[3]))
        rec[2], rec[3], rb = mb >> 15, mb & 32767, -rb
    out = im.add("qadd", node, [a, b], im.shapes[a], fy, {"ra": ra, "rb": rb, "zy": fy.zero_point}, {"rq": rec})
    im.bind_quantized(im.nodes[qk].output[0], out, la)


def _view(im: _QdqImporter, k: int, node) -> None:
    """Reshape, Flatten, Squeeze, Unsqueeze, Transpose whose result is the program tensor's values in
    channels-last or channels-first order (found by value: a conv's map flattened and transposed into tokens),
    and the QuantizeLinear that re-quantizes the view with the same parameters."""
    src, _ = im.source(node.input[0])
    out = node.output[0]
    have, v, fmt = im.known(src), im.values[out], im.formats[src]
    steps = v.astype(np.int64) - fmt.zero_point if v.dtype == np.int8 else np.rint(v.astype(np.float64) / fmt.scale)
    if steps.size != have.size:
        raise Unsupported("a view that changes the number of values")
    orders = {"cl": have.reshape(-1), "cf": np.moveaxis(have, -1, 0).reshape(-1)}
    prefer = ("cf", "cl") if v.ndim == 4 else ("cl", "cf")
    new = next((o for o in prefer if np.array_equal(steps.reshape(-1), orders[o])), None)
    if new is None or (new == "cl" and v.ndim == 4 and int(np.prod(im.shapes[src][:-1])) > 1) or (
            new == "cl" and v.shape[-1] != im.shapes[src][-1]):
        raise Unsupported("a view that moves data in an order the accelerator does not keep")
    im.alias[out] = (src, new)
    q = im.single_consumer(out)
    if q is not None and im.nodes[q].op_type == "QuantizeLinear":
        if im.qparams(im.nodes[q]) != fmt:
            raise Unsupported("re-quantizes a view with other parameters")
        im.done.add(q)
        im.alias[im.nodes[q].output[0]] = (src, new)


RULES = {**{op: _table for op in ELEMENTWISE_OPS}, "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
         "Add": _add, "Sub": _add, "Mul": _mul, "Conv": _conv, "BatchNormalization": _batchnorm, "Gemm": _gemm,
         "MatMul": _matmul, "ReduceMean": _mean, "GlobalAveragePool": _mean,
         **{op: _view for op in VIEW_OPS}}


def lower_qdq(model, sample: np.ndarray) -> ImportResult:
    """Map a QDQ ``model`` onto the int8 units; the rest of the graph is the CPU part.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` with QuantizeLinear/DequantizeLinear nodes, static shapes, one float input.
    sample
        One input (float, the model's input shape): onnxruntime's tensors on it check every layer.

    Raises
    ------
    ModelImportError
        Invalid quantization parameters (:func:`validate_qparams`), a graph onnxruntime cannot run, or no node
        mapped (the message names the first unsupported node and why).
    """
    import onnx

    validate_qparams(model)
    try:   # the CPU part is cut out by onnx's extractor, which needs every tensor's shape
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:   # noqa: BLE001 (onnx raises several types); the model is used as it is
        pass
    im = _QdqImporter(model, np.asarray(sample))
    stop, why = im.run()
    nodes = im.nodes
    first = nodes[stop] if stop < len(nodes) else None
    if not im.layers:
        what = f"{first.op_type} node '{first.name}': {why}" if first is not None else "the graph's outputs"
        raise ModelImportError(f"no part of the int8 model runs on the accelerator; first unsupported: {what}")
    cut, layout = _choose_cut(im, stop)
    if cut is None:
        raise ModelImportError("no tensor separates the accelerator part from the rest of the int8 model")
    keep = _needed_layers(im.layers, im.alias[cut][0])
    layers = [l for l in im.layers if l.name in keep]
    tail = _tail_nodes(im, cut) if cut not in im.outputs else []
    cpu = ([f"{first.name} ({first.op_type}: {why})"] if first is not None else []) + [
        f"{nodes[k].name} ({nodes[k].op_type})" for k in tail if k != stop and k not in im.folded]
    used = {"input"} | {t for l in layers for t in l.inputs} | {l.output for l in layers}
    formats = {k: v for k, v in im.formats.items() if k in used or k.rsplit(".", 1)[0] in keep}
    prog = Program("input", {k: v for k, v in im.shapes.items() if k in used}, layers, formats, cpu)
    macs = _macs(model, im.values)
    tail_set = set(tail)
    perm = [2, 0, 1] if layout == "cf" and len(prog.shapes[prog.output]) == 3 else None
    return ImportResult(prog, model, None if cut in im.outputs else cut, perm,
                        [(nodes[k].op_type, nodes[k].name) for k in tail], (first.op_type, first.name, why)
                        if first is not None else None,
                        len(set(range(len(nodes))) - im.folded - tail_set), len(nodes) - len(im.folded),
                        sum(v for k, v in macs.items() if k not in tail_set), sum(macs.values()))


def write_project(result: ImportResult, board: str, out, tests, meta: dict | None = None):
    """Write the HLS project of a mapped QDQ model: the formats are the model's (no calibration); lanes are
    chosen for ``board``; ``tests`` (float inputs, the model's shape) become the testbench inputs. The CPU part
    is written as for float models; if it cannot be (``result.tail_error`` says why), the project stands.

    Returns
    -------
    pathlib.Path
        The project directory.
    """
    import json
    from pathlib import Path

    from ..targets import get_target
    from . import codegen, estimator
    from .torch_import import to_accel_layout

    fpga = get_target(board).require_fpga()
    prog = result.program
    estimator.apply_lanes(prog, estimator.choose_lanes(prog, fpga))
    fo = prog.formats[prog.output]
    int8 = {name: [f.scale, f.zero_point] for name, f in prog.formats.items() if isinstance(f, QFmt)}
    meta = {**(meta or {}), INT8_FORMATS: int8, "cpu_tail_input": result.cut,
            "cpu_tail_dequantize": [fo.scale, fo.zero_point], "unsupported": list(result.unsupported or ())}
    path = codegen.write_project(prog, Path(out), fpga, board, np.asarray([to_accel_layout(x) for x in tests]), meta)
    # regmap.json's input and output buffers: the scale and zero point the board's driver converts with
    regmap = json.loads((path / "regmap.json").read_text())
    for port, name in (("input", prog.input), ("output", prog.output)):
        regmap["buffers"][port]["int8"] = {"scale": int8[name][0], "zero_point": int8[name][1]}
    (path / "regmap.json").write_text(json.dumps(regmap, indent=1))
    from ..pynq.manifest import TAIL_JSON, TAIL_NPZ

    for stale in (TAIL_JSON, TAIL_NPZ):
        (path / stale).unlink(missing_ok=True)
    try:
        write_int8_cpu_tail(result, np.asarray(tests[0]), path)
    except (ModelImportError, ValueError) as exc:   # ValueError: onnx's extractor on a tensor without a shape
        result.tail_error = str(exc).splitlines()[0]
    return path


def restore_int8_formats(prog: Program, meta: dict) -> Program:
    """Give a reloaded program (:func:`edgevit.hls.codegen.load_program`, which keeps ``Fmt(9, 9)``) its int8
    tensors' scales and zero points from ``program.json``'s meta; a float program is returned unchanged."""
    for name, (scale, zero_point) in (meta or {}).get(INT8_FORMATS, {}).items():
        prog.formats[name] = int8_format(scale, zero_point)
    return prog


def write_int8_cpu_tail(result: ImportResult, sample: np.ndarray, out) -> dict | None:
    """Write the CPU part of a QDQ model (``cpu_tail.json``/``.npz``, run by :mod:`edgevit.pynq.numpy_graph`,
    QuantizeLinear/DequantizeLinear included) after checking it on ``sample``: fed onnxruntime's value of the cut
    tensor (the accelerator's output dequantized, which the board's driver computes the same way), its outputs
    must be within ``TAIL_MAX_STEPS`` output quantization steps (:func:`edgevit.quantize.verify.output_steps`, the
    int8 rule's unit) of onnxruntime's run of the whole file (the
    numpy float operators between quantize steps are not onnxruntime's fused int8 kernels). Returns the tail's
    description, or None when the accelerator runs the whole graph.

    Raises
    ------
    ModelImportError
        An operator the board's interpreter lacks, or outputs further from onnxruntime than the limit.
    """
    if result.cut is None:
        return None
    import json
    from pathlib import Path

    import onnx

    from ..pynq import cpu_tail
    from ..quantize.verify import output_steps
    from ..reference import onnxruntime_session

    mp = result.model
    outputs = [o.name for o in mp.graph.output]
    graph, weights = cpu_part(result)
    m = onnx.ModelProto()
    m.CopyFrom(mp)
    m.graph.output.extend([onnx.helper.ValueInfoProto(name=result.cut)])
    sess = onnxruntime_session(m.SerializeToString())
    values = dict(zip([o.name for o in sess.get_outputs()],
                      sess.run(None, {sess.get_inputs()[0].name: np.asarray(sample, np.float32)})))
    got = cpu_tail.run_checked(graph, weights, {result.cut: values[result.cut]})
    steps = []
    for g, name, unit in zip(got, outputs, output_steps(mp)):   # the int8 rule's unit (EfficientFormer's / 2 too)
        unit = unit or float(np.abs(values[name]).max() / 127 or 1.0)   # a float output: its range in int8 steps
        steps.append(float(np.abs(np.asarray(g, np.float64) - values[name]).max() / unit))
    if not np.max(steps) <= TAIL_MAX_STEPS:   # NaN (np.max keeps it) fails too
        raise ModelImportError(f"the numpy CPU part is {np.max(steps):.1f} output steps from onnxruntime (limit "
                               f"{TAIL_MAX_STEPS})")
    names = sorted(weights)
    graph.update(input=result.cut, input_shape=list(values[result.cut].shape), transpose=result.transpose,
                 weights=names, check_output_steps=float(np.max(steps)),
                 sample_output=values[outputs[0]].ravel().tolist())
    np.savez(Path(out) / cpu_tail.TAIL_NPZ, **{f"w{k}": weights[n] for k, n in enumerate(names)})
    (Path(out) / cpu_tail.TAIL_JSON).write_text(json.dumps(graph))
    return graph
