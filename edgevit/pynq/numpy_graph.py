"""Board side: run the part of a model after the accelerator (an ONNX subgraph stored as JSON + npz) in numpy.

The host (:mod:`.cpu_tail`) cuts the model's ONNX graph where the accelerator's output is and stores the rest
as ``cpu_tail.json`` (nodes: op, inputs, outputs, attributes) and ``cpu_tail.npz`` (initializers), so the board
needs neither onnx nor onnxruntime. Float32 throughout, as onnxruntime computes it. Only the operators the
supported zoo tails and the outside-zoo sweep's (tools/outside_zoo.py) use are implemented; :func:`check_ops`
names any other, and any attribute value an operator here does not take, before anything runs. The graph is
untrusted input: what :func:`check_ops` refuses raises ``NotImplementedError`` (:func:`load`: ``ArtifactError``,
exit 7), inputs that do not fit an operator at run time ``ExecutionError`` (exit 9), each one line naming the
node.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ExecutionError

def _attr(node, name, default=None):
    return node["attrs"].get(name, default)


def _pads(node, spatial):
    pads = _attr(node, "pads", [0] * 2 * spatial)
    if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"{node['op']} with auto_pad={_attr(node, 'auto_pad')}")
    return [(pads[k], pads[k + spatial]) for k in range(spatial)]


def _windows(x, kernel, strides, dilations, pads, fill):
    """[N, C, OH, OW, KH, KW] views of the padded NCHW input (2-D only)."""
    x = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    n, c, s = x.shape[0], x.shape[1], x.strides
    return np.lib.stride_tricks.as_strided(x, (n, c, oh, ow, kh, kw),
                                           (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw))


def _conv(node, x, w, b=None):
    if x.ndim != 4:
        raise NotImplementedError("Conv on other than 2-D maps")
    kernel = w.shape[2:]
    win = _windows(x, kernel, _attr(node, "strides", [1, 1]), _attr(node, "dilations", [1, 1]), _pads(node, 2), 0.0)
    g = _attr(node, "group", 1)
    co, cig = w.shape[0], w.shape[1]
    outs = []
    for k in range(g):   # grouped (depthwise when g == channels) as g small convolutions
        xs = win[:, k * cig:(k + 1) * cig]
        ws = w[k * co // g:(k + 1) * co // g]
        outs.append(np.einsum("ncijyx,ocyx->noij", xs, ws, optimize=True))
    y = np.concatenate(outs, axis=1)
    return y + b.reshape(1, -1, 1, 1) if b is not None else y


def _maxpool(node, x):
    win = _windows(x, _attr(node, "kernel_shape"), _attr(node, "strides", [1, 1]), _attr(node, "dilations", [1, 1]),
                   _pads(node, 2), -np.inf)
    if _attr(node, "ceil_mode", 0):
        raise NotImplementedError("MaxPool with ceil_mode")
    return win.max(axis=(4, 5))


def _avgpool(node, x):
    if _attr(node, "ceil_mode", 0) or (any(_attr(node, "pads", [0])) and not _attr(node, "count_include_pad", 0)):
        raise NotImplementedError("AveragePool with ceil_mode or padding excluded from the count")
    win = _windows(x, _attr(node, "kernel_shape"), _attr(node, "strides", [1, 1]), [1, 1], _pads(node, 2), 0.0)
    return win.mean(axis=(4, 5))


def _layernorm(node, x, scale, bias=None):
    axes = tuple(range(_attr(node, "axis", -1) % x.ndim, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + _attr(node, "epsilon", 1e-5)) * scale
    return y + bias if bias is not None else y


def _softmax(node, x):
    e = np.exp(x - x.max(axis=_attr(node, "axis", -1), keepdims=True))
    return e / e.sum(axis=_attr(node, "axis", -1), keepdims=True)


def _reduce(fn):
    def run(node, x, axes=None):
        axes = _attr(node, "axes", None) if axes is None else axes
        if axes is None or len(axes) == 0:
            if _attr(node, "noop_with_empty_axes", 0):
                return x
            axes = None
        return fn(x, axis=None if axes is None else tuple(int(a) for a in axes),
                  keepdims=bool(_attr(node, "keepdims", 1)))
    return run


def _reshape(node, x, shape):
    shape = [int(s) for s in shape]
    if not _attr(node, "allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(node, x, starts, ends, axes=None, steps=None):
    index = [slice(None)] * x.ndim
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _split(node, x, split=None):
    axis = _attr(node, "axis", 0)
    if split is None:
        n = len(node["outputs"])
        split = [x.shape[axis] // n] * n
    return tuple(np.split(x, np.cumsum([int(s) for s in split])[:-1], axis=axis))


def _gemm(node, a, b, c=None):
    a = a.T if _attr(node, "transA", 0) else a
    b = b.T if _attr(node, "transB", 0) else b
    y = _attr(node, "alpha", 1.0) * (a @ b)
    return y + _attr(node, "beta", 1.0) * c if c is not None else y


def _gelu(node, x):
    if _attr(node, "approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x))


def _erf(x):
    # numpy has no erf; math.erf per element is exact and the tails are small
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _batchnorm(node, x, scale, bias, mean, var):
    """BatchNormalization in inference mode: ``(x - mean) / sqrt(var + epsilon) * scale + bias`` over axis 1."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    if x.ndim < 2 or any(np.size(v) != x.shape[1] for v in (scale, bias, mean, var)):
        raise ValueError(f"{x.shape[1] if x.ndim > 1 else 'no'} channels, parameters of "
                         f"{[int(np.size(v)) for v in (scale, bias, mean, var)]} values")
    scale, bias, mean, var = (np.asarray(v, np.float32).reshape(shape) for v in (scale, bias, mean, var))
    return (x - mean) / np.sqrt(var + np.float32(_attr(node, "epsilon", 1e-5))) * scale + bias


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}   # ONNX -> numpy


def _pad(node, x, pads=None, value=None, axes=None):
    """Pad (opset 2's attributes or opset 11+'s inputs, negative pads crop), in the four ONNX modes."""
    pads = _attr(node, "pads") if pads is None else pads
    if pads is None:
        raise ValueError("no pads")
    pads = [int(p) for p in np.asarray(pads).ravel()]
    axes = list(range(x.ndim)) if axes is None else [int(a) % max(x.ndim, 1) for a in np.asarray(axes).ravel()]
    if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{len(pads)} pads for axes {axes} of a {x.ndim}-D tensor")
    width = [(0, 0)] * x.ndim
    for k, a in enumerate(axes):
        width[a] = (pads[k], pads[k + len(axes)])
    crop = tuple(slice(max(-lo, 0), x.shape[a] - max(-hi, 0)) for a, (lo, hi) in enumerate(width))
    x = x[crop]
    width = [(max(lo, 0), max(hi, 0)) for lo, hi in width]
    mode = PAD_MODES[_attr(node, "mode", "constant")]
    if mode != "constant":   # onnxruntime reflects at most once: pads below the axis length
        if any(w != (0, 0) and (x.shape[a] == 0 or (mode == "reflect" and max(w) >= x.shape[a]))
               for a, w in enumerate(width)):
            raise ValueError(f"{mode} padding {width} of a tensor of shape {list(x.shape)}")
        return np.pad(x, width, mode=mode)
    fill = _attr(node, "value", 0.0) if value is None or np.size(value) == 0 else np.asarray(value).ravel()[0]
    return np.pad(x, width, mode="constant", constant_values=np.asarray(fill).astype(x.dtype))


# ONNX TensorProto data types this interpreter casts to (16 bfloat16, 8 string and the float8 types: not here)
CAST_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
              9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _per_axis(node, v, x):
    """A scale or zero point: one value, or one per index of ``axis`` of ``x`` (QuantizeLinear's per-axis form)."""
    v = np.asarray(v)
    if v.size <= 1:
        return v.reshape(())
    shape = [1] * x.ndim
    shape[_attr(node, "axis", 1) % x.ndim] = -1
    return v.reshape(shape)


def _dequantize(node, x, scale, zp=None):
    """DequantizeLinear: (x - zero point) * scale in float32."""
    z = 0 if zp is None else _per_axis(node, zp, x).astype(np.int64)
    return ((np.asarray(x).astype(np.int64) - z).astype(np.float32) * _per_axis(node, scale, x).astype(np.float32))


def _quantize(node, x, scale, zp=None):
    """QuantizeLinear: x / scale in float32, round half to even, + zero point, saturated to its type; as in
    onnxruntime, +-inf saturate and NaN gives the type's minimum (a division by a zero sum: efficientvit's
    attention)."""
    dtype = np.dtype(np.uint8) if zp is None else np.asarray(zp).dtype
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    z = 0 if zp is None else _per_axis(node, zp, x).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.rint(np.asarray(x, np.float32) / _per_axis(node, scale, x).astype(np.float32)).astype(np.float64) + z
    return np.clip(np.where(np.isnan(q), lo, q), lo, hi).astype(dtype)


OPS = {
    "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
    "Add": lambda n, a, b: a + b, "Sub": lambda n, a, b: a - b, "Mul": lambda n, a, b: a * b,
    "Div": lambda n, a, b: a / b, "Pow": lambda n, a, b: np.power(a, b), "Sqrt": lambda n, x: np.sqrt(x),
    "MatMul": lambda n, a, b: a @ b, "Gemm": _gemm, "Conv": _conv, "MaxPool": _maxpool, "AveragePool": _avgpool,
    "GlobalAveragePool": lambda n, x: x.mean(axis=(2, 3), keepdims=True),
    "Relu": lambda n, x: np.maximum(x, 0), "Sigmoid": lambda n, x: 1 / (1 + np.exp(-x)),
    "Tanh": lambda n, x: np.tanh(x), "Erf": lambda n, x: _erf(x), "Gelu": _gelu,
    "HardSigmoid": lambda n, x: np.clip(_attr(n, "alpha", 0.2) * x + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda n, x: x * np.clip(x / 6 + 0.5, 0, 1),
    "Clip": lambda n, x, lo=None, hi=None: np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi),
    "Softmax": _softmax, "LayerNormalization": _layernorm,
    "ReduceMean": _reduce(np.mean), "ReduceSum": _reduce(np.sum),
    "ReduceL2": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))),
    "BatchNormalization": _batchnorm, "Pad": _pad,
    "Cast": lambda n, x: np.asarray(x).astype(CAST_TYPES[_attr(n, "to")]),
    "Reshape": _reshape, "Flatten": lambda n, x: x.reshape(int(np.prod(x.shape[:_attr(n, "axis", 1)])), -1),
    "Transpose": lambda n, x: x.transpose(_attr(n, "perm", None)),
    "Squeeze": lambda n, x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "Unsqueeze": lambda n, x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "Concat": lambda n, *xs: np.concatenate(xs, axis=_attr(n, "axis")), "Slice": _slice, "Split": _split,
    "Gather": lambda n, x, idx: np.take(x, idx.astype(np.int64), axis=_attr(n, "axis", 0)),
    "Identity": lambda n, x: x, "Shape": lambda n, x: np.array(x.shape, np.int64),
    "Expand": lambda n, x, shape: x * np.ones([int(s) for s in shape], x.dtype),
}


def _flag(name):
    return lambda v: v in (0, 1) or f"{name}={v!r} (0 or 1 expected)"


# attribute values each operator takes: name -> test returning True or the reason (checked before anything runs)
ATTR_CHECKS = {
    "BatchNormalization": {"training_mode": lambda v: v == 0 or "training_mode=1 (the board runs inference only)",
                           "epsilon": lambda v: (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)
                           or f"epsilon={v!r} (a finite number >= 0 expected)"},
    "Pad": {"mode": lambda v: v in PAD_MODES or f"mode={v!r} ({', '.join(PAD_MODES)} expected)"},
    "Cast": {"to": lambda v: v in CAST_TYPES or f"to={v!r} (a numeric ONNX type, not bfloat16/float8/string)"},
    **{op: {"keepdims": _flag("keepdims"), "noop_with_empty_axes": _flag("noop_with_empty_axes")}
       for op in ("ReduceMean", "ReduceSum", "ReduceL2")},
}
REQUIRED_ATTRS = {"Cast": ("to",)}
MAX_OUTPUTS = {"BatchNormalization": 1}   # the running mean/variance outputs exist in training mode only


def check_ops(graph: dict) -> None:
    """Raise NotImplementedError naming the operators of ``graph`` this interpreter does not have, or the first
    node with an attribute value its operator here does not take."""
    missing = sorted({n["op"] for n in graph["nodes"]} - set(OPS))
    if missing:
        raise NotImplementedError(f"operators not implemented on the board: {', '.join(missing)}")
    for node in graph["nodes"]:
        op, attrs = node["op"], node.get("attrs", {})
        what = f"{op} node '{(node['outputs'] or ['?'])[0]}'"
        for name in REQUIRED_ATTRS.get(op, ()):
            if name not in attrs:
                raise NotImplementedError(f"{what} has no attribute {name}")
        for name, test in ATTR_CHECKS.get(op, {}).items():
            verdict = test(attrs[name]) if name in attrs else True
            if verdict is not True:
                raise NotImplementedError(f"{what}: {verdict}")
        if len([o for o in node["outputs"] if o]) > MAX_OUTPUTS.get(op, len(node["outputs"])):
            raise NotImplementedError(f"{what} has {len(node['outputs'])} outputs (training mode)")


def run(graph: dict, weights: dict, feeds: dict) -> list:
    """Execute ``graph`` (nodes in topological order) on ``feeds``; returns its outputs, float32.

    Raises
    ------
    ExecutionError
        A node whose inputs do not fit its operator (shapes, pads, parameter counts), named in one line.
    """
    env = {k: np.asarray(v) for k, v in weights.items()}
    env.update({k: np.asarray(v, np.float32) for k, v in feeds.items()})
    for node in graph["nodes"]:
        what = f"{node['op']} node '{(node['outputs'] or ['?'])[0]}'"
        if any(name and name not in env for name in node["inputs"]):
            raise ExecutionError(f"{what} reads a tensor no earlier node computes")
        args = [env[name] if name else None for name in node["inputs"]]
        while args and args[-1] is None:
            args.pop()
        try:
            out = OPS[node["op"]](node, *args)
        except (ValueError, IndexError, TypeError, KeyError) as exc:   # inputs that do not fit the operator
            raise ExecutionError(f"{what}: {exc}") from None
        for name, value in zip(node["outputs"], out if isinstance(out, tuple) else (out,)):
            env[name] = np.asarray(value)
    return [env[name] for name in graph["outputs"]]


def load(bundle: Path, graph_file: str, weights_file: str) -> tuple[dict, dict]:
    """A stored graph and its weights (``weights`` in the JSON names the npz's ``w0, w1, ...``).

    Raises
    ------
    ArtifactError
        An operator or attribute value this interpreter does not take (:func:`check_ops`).
    """
    graph = json.loads((Path(bundle) / graph_file).read_text())
    try:
        check_ops(graph)
    except NotImplementedError as exc:
        raise ArtifactError(f"{graph_file}: {exc}") from None
    with np.load(Path(bundle) / weights_file) as npz:
        weights = {name: npz[f"w{k}"] for k, name in enumerate(graph["weights"])}
    return graph, weights
