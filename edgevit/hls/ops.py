"""The accelerator's layer kinds, one registry entry each: what a ``Layer.kind`` computes and costs.

An entry holds the kind's descriptor op code (``hw/include/edgevit/descriptor.h``), its float64 model and its
golden fixed-point model (the numerics the C++ must match bit for bit), how its output format is chosen, the
descriptor dimensions the generated table carries, the estimator's cycle cost and the loop trip counts the
generated Tcl declares. :mod:`.program`, :mod:`.layer_table`, :mod:`.estimator` and :mod:`.codegen` look a kind up
here instead of testing its name; the importers (:mod:`.onnx_import`, :mod:`.torch_import`) only produce layers.
Adding a kind is adding one entry (plus its C++ unit in ``hw/include/edgevit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import golden, reference, requant
from .fixed import convert


def io_words(prog, layer, lanes) -> int:
    """Words a layer moves over DDR if each input and parameter word is read once and each output word written
    once (64-bit biases are four words): the traffic of the units that stream their operands, and a lower bound
    for the others."""
    params = sum(v.size * (4 if k == "b" else 1) for k, v in layer.params.items() if hasattr(v, "size"))
    return sum(int(np.prod(prog.shapes[t])) for t in {*layer.inputs, layer.output}) + int(params)


@dataclass(frozen=True)
class LayerKind:
    """One kind of accelerator layer.

    ``run_float(layer, env, stats)`` and ``run_fixed(prog, layer, env)`` return the output (``env`` maps tensor
    names to values; ``stats`` collects extra peaks such as attention logits). ``dims(prog, layer)`` gives the
    descriptor's ``d0..d5``; ``cost(units, layer, shape, oshape, lanes)`` gives (compute cycles, memory cycles,
    MACs) from the estimator's unit cycle models ``units``; ``trips(dims, lanes, add, linear)`` reports the loop
    counts of one descriptor. ``units`` names the unit instances (``hw/include/edgevit`` functions, with their
    integral template arguments) a descriptor of the kind reaches from ``edgevit_top``, its dispatch target first.
    ``fmt`` is ``"fitted"`` (calibrated from its range), ``"same"`` (data movement: the
    input's format), ``"gate"`` (fixed by the kernel) or ``"int8"`` (a QDQ model's scale and zero point,
    :class:`~edgevit.hls.fixed.QFmt`). ``fields(prog, layer)`` gives the descriptor fields
    beyond the common ones (an internal format, LayerNorm's eps). ``traffic(prog, layer, lanes)`` gives the 16-bit
    words a descriptor reads and writes in DDR over all ports (the estimator's DDR bandwidth line; default
    :func:`io_words`).
    """

    code: int
    run_float: Callable
    run_fixed: Callable
    dims: Callable
    cost: Callable
    trips: Callable
    fmt: str = "fitted"
    fields: Callable = lambda prog, layer: {}
    units: tuple = ()
    traffic: Callable = io_words


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


TILE_TOKENS = 32   # tokens per input tile of the linear unit (TM)


def linear_traffic(m: int, k: int, n: int, lo: int) -> tuple[int, int]:
    """Words the linear unit reads for an [M, K] x [K, N] layer: (input, weights), in the order
    :func:`weights_outer` picks (each tile of the outer operand is read once, the inner one per outer tile unless
    there is only one, which linear_unit keeps on chip)."""
    if weights_outer(m, k, n, lo):
        return m * k * (math.ceil(n / lo) if m > TILE_TOKENS else 1), n * k
    return m * k, n * k * (math.ceil(m / TILE_TOKENS) if n > lo else 1)


def weights_outer(m: int, k: int, n: int, lo: int) -> bool:
    """Whether weight tiles should be the outer loop (fewer words moved than with token tiles outer)."""
    return m * k * math.ceil(n / lo) + n * k < m * k + n * k * math.ceil(m / TILE_TOKENS)


def _io(prog, layer, env):
    f = prog.formats
    return env[layer.inputs[0]], f[layer.inputs[0]], f[layer.output], prog.quantized_params(layer)


def _second(prog, layer, env):
    return env[layer.inputs[1]], prog.formats[layer.inputs[1]]


def _tokens(shape) -> int:
    return int(np.prod(shape[:-1]))


def _shapes(prog, layer):
    return prog.shapes[layer.inputs[0]], prog.shapes[layer.output]


# --- linear: tokens x weights on the shared MAC array, optional bias, activation and residual -----------------

def _linear_float(layer, env, stats):
    res = env[layer.inputs[1]] if len(layer.inputs) > 1 else None
    return reference.linear(env[layer.inputs[0]], layer.params["w"], layer.params.get("b"),
                            layer.attrs.get("act", "none"), res)


def _linear_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    res, fr = _second(prog, layer, env) if len(layer.inputs) > 1 else (None, None)
    b = q["b"][0] if "b" in q else None
    return golden.linear(x, fx, q["w"][0], q["w"][1], b, fo, layer.attrs.get("act", "none"), res, fr)


def _linear_dims(prog, layer):
    shape, oshape = _shapes(prog, layer)
    m = _tokens(shape)
    return m, shape[-1], oshape[-1], int(weights_outer(m, shape[-1], oshape[-1], layer.attrs.get("lo", 1)))


def _linear_cost(u, layer, shape, oshape, lanes):
    rows, ci, co = _tokens(shape), shape[-1], oshape[-1]
    compute, memory = u.linear(rows, ci, co, lanes, "b" in layer.params, len(layer.inputs) > 1)
    return compute, memory, rows * ci * co


def _qlinear_cost(u, layer, shape, oshape, lanes):
    rows, ci, co = _tokens(shape), shape[-1], oshape[-1]
    compute, memory = u.qlinear(rows, ci, co, lanes, "b" in layer.params)
    return compute, memory, rows * ci * co


def _linear_words(prog, layer, lanes) -> int:
    """DDR words of a linear layer at ``lanes``: input and weight tiles as re-read in linear_unit's loop order
    (:func:`linear_traffic`, the biases with their weights), the residual read once, the output written once."""
    shape, oshape = _shapes(prog, layer)
    m, k, n = _tokens(shape), shape[-1], oshape[-1]
    x, w = linear_traffic(m, k, n, lanes.lo)
    bias = 4 * n * (w // (n * k)) if "b" in layer.params else 0
    return x + w + bias + m * n * (2 if len(layer.inputs) > 1 else 1)


def _linear_trips(dims, lanes, add, linear):
    linear(*dims[:3])


# --- depthwise convolution and im2col share the line-buffer geometry (h, w, c, k, stride, pad) ---------------

def _window_dims(prog, layer):
    a = layer.attrs
    return (*prog.shapes[layer.inputs[0]], a["k"], a["stride"], a["pad"])


def _dwconv_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    a = layer.attrs
    b = q["b"][0] if "b" in q else None
    return golden.depthwise_conv(x, fx, q["w"][0], q["w"][1], b, fo, a["stride"], a["pad"], a.get("act", "none"))


def _dwconv_cost(u, layer, shape, oshape, lanes):
    a = layer.attrs
    compute, memory = u.depthwise(*shape, a["k"], a["stride"], a["pad"], lanes, "b" in layer.params,
                                  layer.kind == "qdwconv")
    return compute, memory, int(np.prod(oshape)) * a["k"] ** 2


def _out_size(h, w, k, s, pad):
    return (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1


def depthwise_passes(h: int, k: int, s: int, pad: int, overlap: bool) -> list[tuple[bool, bool]]:
    """The pipelined row loops depthwise_unit runs on one channel group (conv.h), in order, as (reads an input
    row, computes an output row). ``overlap`` (``depthwise_overlaps``): each pass reads the next input row and
    computes the first output row whose input rows have all arrived before it; otherwise a pass does one of the
    two, an input row and then every output row it completes."""
    ho = _out_size(h, h, k, s, pad)[0]

    def ready(oy: int, rows: int) -> bool:   # output row oy's input rows are all among the first `rows`
        return min(oy * s - pad + k - 1, h - 1) < rows

    passes, iy, oy = [], 0, 0
    while iy < h or oy < ho:
        if overlap:
            step = (iy < h, oy < ho and ready(oy, iy))
        else:
            step = (False, True) if oy < ho and ready(oy, iy) else (True, False)
        passes.append(step)
        iy, oy = iy + step[0], oy + step[1]
    return passes


def _dwconv_trips(dims, lanes, add, linear):
    h, w, c, k, s, pad = dims
    ho, wo = _out_size(h, w, k, s, pad)
    ready, oy = [], 0
    for iy in range(h):   # the sequential schedule: output rows completed per input row
        start = oy
        while oy < ho and min(oy * s - pad + k - 1, h - 1) <= iy:
            oy += 1
        ready.append(oy - start)
    passes = depthwise_passes(h, k, s, pad, True)
    add(dw_channel_groups=_ceil(c, lanes.ld), dw_window=k * k, dw_rows=h, dw_cols=w, dw_rows_ready=ready,
        dw_out_cols=wo, dw_overlapped=sum(max(w if i else 0, wo if o else 0) for i, o in passes))


def mover_trip(words: int, c: int, wpb: int) -> int:
    """Iterations of the one pipelined loop of unfold/fold or concat (layout.h) writing ``words`` words in runs of
    ``c`` (a pixel's channels; concat: the gcd of its inputs' channels): a beat a cycle when ``c`` is whole beats
    (tensors start on a beat), else a word a cycle."""
    return words // wpb if c % wpb == 0 else words


def im2col_trip(pixels: int, k: int, c: int, wpb: int) -> int:
    """Iterations of im2col's one loop (conv.h) for ``pixels`` output pixels of a ``k x k`` window over ``c``
    channels: a beat a cycle when ``c`` is whole beats; otherwise per tap row (``k c`` consecutive input words)
    the beats such a run can span, a beat a cycle."""
    return pixels * k * k * c // wpb if c % wpb == 0 else pixels * k * ((k * c + wpb - 2) // wpb + 1)


def _im2col_trips(dims, lanes, add, linear):
    h, w, c, k, s, pad = dims
    ho, wo = _out_size(h, w, k, s, pad)
    add(im2col_out_rows=ho, im2col_out_cols=wo, im2col_k=k, im2col_channels=c)


def _rows_dims(prog, layer):
    shape = prog.shapes[layer.inputs[0]]
    return _tokens(shape), shape[-1]


def _layernorm_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    return golden.layernorm(x, fx, q["gamma"][0], q["beta"][0], q["gamma"][1], fo, layer.attrs["eps"])


def _layernorm_cost(u, layer, shape, oshape, lanes):
    # gamma and beta a word a cycle, then a row read while the previous one is written (estimator.layernorm_loops)
    loops = u.layernorm_loops(_tokens(shape), shape[-1], lanes.li)
    return 0, sum(u.loop(trip, depth=depth) for trip, depth in loops), 0


# --- attention: Q.K^T, online softmax and .V per head on a [G, N, 3D] QKV tensor (Q pre-scaled) ----------------

def _attention_float(layer, env, stats):
    y, peak = reference.attention(env[layer.inputs[0]], layer.attrs["heads"])
    if stats is not None:
        key = layer.name + ".logits"
        stats[key] = max(stats.get(key, 0.0), peak)
    return y


def _attention_fixed(prog, layer, env):
    x, fx, fo, _ = _io(prog, layer, env)
    return golden.attention(x, fx, prog.formats[layer.name + ".logits"], fo, layer.attrs["heads"])


def _attention_dims(prog, layer):
    g, n, w3 = prog.shapes[layer.inputs[0]]
    return g, n, layer.attrs["heads"], w3 // 3 // layer.attrs["heads"]


def _attention_cost(u, layer, shape, oshape, lanes):
    g, n, w3 = shape
    heads = layer.attrs["heads"]
    dh = w3 // 3 // heads
    compute, memory = u.attention(g, n, heads, dh, lanes)
    return compute, memory, 2 * g * heads * n * n * dh


def _attention_trips(dims, lanes, add, linear):
    g, n, heads, dh = dims[:4]
    add(attn_groups=g, attn_heads=heads, attn_tokens=n, attn_head_dim=dh,
        attn_steps=(n - 1) * _ceil(n, lanes.rows) + n)


def _format_fields(suffix: str):
    """The descriptor's ``fl``/``wl``: a layer's internal format (attention logits, MoE hidden activations)."""
    def fields(prog, layer):
        fmt = prog.formats[layer.name + suffix]
        return {"fl": fmt.frac, "wl": fmt.w}
    return fields


def _eps_fields(prog, layer):
    """LayerNorm's eps at ``2 fx`` fractional bits, as two 32-bit words."""
    e = golden.eps_q(layer.attrs["eps"], prog.formats[layer.inputs[0]])
    lo = e & 0xFFFFFFFF
    return {"eps_lo": lo - (1 << 32) * (lo >> 31), "eps_hi": e >> 32}


# --- data movement ------------------------------------------------------------------------------------------

def _copy_cost(u, layer, shape, oshape, lanes):
    return 0, u.loop(mover_trip(int(np.prod(shape)), shape[-1], u.wpb)), 0


def _concat_cost(u, layer, shape, oshape, lanes):
    return 0, u.loop(mover_trip(int(np.prod(oshape)), math.gcd(shape[-1], oshape[-1] - shape[-1]), u.wpb)), 0


def _avgpool_cost(u, layer, shape, oshape, lanes):
    return 0, shape[-1] * (u.loop(_tokens(shape)) + u.axi_latency), 0


def _pool_mixer_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    scale, fs = q.get("scale", (None, None))
    return golden.pool_mixer(x, fx, fo, layer.attrs["k"], scale, fs)


def _pool_mixer_cost(u, layer, shape, oshape, lanes):
    # the layer scale once into an on-chip copy (a word a cycle); then one pipelined loop: per pixel a pass over
    # the beats of its channels per window tap and one writing them, each pass the most beats a row can span
    # (rows start on beats when C is a multiple of WPB: arena tensors are aligned), LNL words a cycle
    h, w, c = shape
    kk, wpb = layer.attrs["k"], u.wpb
    beats = u.row_pass_beats(c)
    scale = u.loop(c) if "scale" in layer.params else 0
    return 0, scale + u.loop(h * w * (kk * kk + 1) * beats * (wpb // u.layernorm_lanes(lanes.li))), 0


def _l2norm_cost(u, layer, shape, oshape, lanes):
    # one loop: a row read while the previous one is written, LNL words a cycle (estimator.l2norm_loops)
    return 0, sum(u.loop(trip, depth=depth) for trip, depth in u.l2norm_loops(_tokens(shape), shape[-1], lanes.li)), 0


def _additive_float(layer, env, stats):
    d = env[layer.inputs[0]].shape[-1]
    return reference.additive_attention(env[layer.inputs[0]].reshape(-1, d), env[layer.inputs[1]].reshape(-1, d),
                                        layer.params["wg"])


def _additive_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    k, fk = _second(prog, layer, env)
    d = x.shape[-1]
    return golden.additive_attention(x.reshape(-1, d), fx, k.reshape(-1, d), fk, q["wg"][0], q["wg"][1], fo)


def _additive_cost(u, layer, shape, oshape, lanes):
    # w_g a beat a cycle, then three loops over the tokens' beats, LNL words a cycle (estimator.additive_loops)
    loops = u.additive_loops(_tokens(shape), shape[-1], lanes.li)
    return 0, sum(u.loop(trip, depth=depth) for trip, depth in loops), 0


# --- MoE: top-k routing and the experts' MLPs (patches queued per expert) --------------------------------------

def _moe_route_cost(u, layer, shape, oshape, lanes):
    # top-k insertion in loops that are not pipelined: each logit is a single m_axi read
    e, k = shape[-1], layer.attrs["k"]
    rows = _tokens(shape)
    return rows * e * k, rows * (e * (1 + u.axi_latency) + u.loop(2 * k)), 0


def _moe_route_trips(dims, lanes, add, linear):
    n, e, k = dims[:3]
    add(route_patches=n, route_experts=e, route_kept=[0, k])


def _moe_experts_float(layer, env, stats):
    p = layer.params
    y, peak_h, peak_o = reference.moe_experts(env[layer.inputs[0]], env[layer.inputs[1]], p["w1"], p["b1"], p["w2"],
                                              p["b2"], layer.attrs.get("act", "none"))
    if stats is not None:   # the expert outputs share the result's format, so both set its range
        for key, peak in ((layer.name + ".hidden", peak_h), (layer.output, peak_o)):
            stats[key] = max(stats.get(key, 0.0), peak)
    return y


def _moe_experts_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    route, fg = _second(prog, layer, env)
    return golden.moe_experts(x, fx, route, fg, q["w1"][0], q["b1"][0], q["w2"][0], q["b2"][0], q["w1"][1],
                              prog.formats[layer.name + ".hidden"], fo, layer.attrs.get("act", "none"))


def _moe_experts_dims(prog, layer):
    e, h, dm = layer.params["w1"].shape
    return _tokens(prog.shapes[layer.inputs[0]]), dm, h, e, layer.attrs["k"], int(layer.attrs.get("reorder", 1))


def _moe_experts_cost(u, layer, shape, oshape, lanes):
    e, h, dm = layer.params["w1"].shape
    a, rows = layer.attrs, _tokens(shape)
    compute, memory = u.moe_experts(rows, dm, h, e, a["k"], bool(a.get("reorder", 1)), lanes)
    return compute, memory, rows * a["k"] * 2 * dm * h


def _moe_experts_trips(dims, lanes, add, linear):
    n, dm, h, e, k, reorder = dims
    runs = [1, min(e, n * k)] if reorder else [n * k]
    add(moe_patches=n, moe_dim=dm, moe_expert_count=e, moe_kept=k, moe_work_items=runs,
        moe_queue=[1, n] if reorder else [1])
    for m in (1, n):   # fc1 and fc2 on the linear unit, over one to all patches
        linear(m, dm, h)
        linear(m, h, dm)


# --- add: a second tensor or a parameter (position embedding) -------------------------------------------------

def _add_float(layer, env, stats):
    x = env[layer.inputs[0]]
    return x + (env[layer.inputs[1]] if len(layer.inputs) > 1 else layer.params["pos"].reshape(x.shape))


def _add_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    if len(layer.inputs) > 1:
        return golden.add(x, fx, *_second(prog, layer, env), fo)
    return golden.add(x, fx, q["pos"][0], q["pos"][1], fo)


def _add_cost(u, layer, shape, oshape, lanes):
    ii = 1 + (len(layer.inputs) > 1 or "pos" in layer.params)
    return 0, u.loop(int(np.prod(oshape)), ii=ii), 0


# --- token rows: parameter rows (a class token) then a row range of the input ----------------------------------

def _token_rows_float(layer, env, stats):
    a, x = layer.attrs, _x(layer, env)
    rows = x.reshape(-1, x.shape[-1])[a["start"]:a["start"] + a["rows"]]
    return np.concatenate([layer.params["tok"].reshape(-1, x.shape[-1]), rows]) if "tok" in layer.params else rows


def _token_rows_fixed(prog, layer, env):
    x, fx, fo, q = _io(prog, layer, env)
    a, c = layer.attrs, x.shape[-1]
    rows = convert(x.reshape(-1, c)[a["start"]:a["start"] + a["rows"]], fx.frac, fo)
    if "tok" not in q:
        return rows
    return np.concatenate([convert(q["tok"][0].reshape(-1, c), q["tok"][1].frac, fo), rows])


def _token_rows_dims(prog, layer):
    c = prog.shapes[layer.inputs[0]][-1]
    tok = layer.params.get("tok")
    return layer.attrs["rows"], c, layer.attrs["start"], 0 if tok is None else tok.size // c


def _token_rows_cost(u, layer, shape, oshape, lanes):
    c, tok = shape[-1], layer.params.get("tok")
    return 0, u.loop(0 if tok is None else tok.size) + u.loop(layer.attrs["rows"] * c), 0


# --- channel scale: a map times a computed per-channel vector (squeeze-excitation) ------------------------------

def _channel_scale_fixed(prog, layer, env):
    x, fx, fo, _ = _io(prog, layer, env)
    s, fs = _second(prog, layer, env)
    c = x.shape[-1]
    return convert(x.reshape(-1, c) * np.asarray(s, np.int64).reshape(1, c), fx.frac + fs.frac, fo)


# --- MobileViTv2: GroupNorm with one group, separable self-attention -------------------------------------------

def _global_norm_cost(u, layer, shape, oshape, lanes):
    # three passes over the beats of the whole tensor (sum, squared deviations, write), LNL words a cycle
    return 0, 3 * u.loop(u.beats(int(np.prod(shape))) * (u.wpb // u.layernorm_lanes(lanes.li))), 0


def _separable_dims(prog, layer):
    g, n, w = prog.shapes[layer.inputs[0]]
    return g, n, w - 1


def _separable_cost(u, layer, shape, oshape, lanes):
    # per group: the scores a word a cycle (one per row) and their exponentials on chip; the beats of the keys,
    # LNL words a cycle; the context normalised on chip (II=2); the beats of the values in and the outputs out
    g, n, w = shape
    d, loop, steps = w - 1, u.loop, u.wpb // u.layernorm_lanes(lanes.li)
    per_group = (loop(n) + loop(n, ddr=False) + loop(u.beats(n * w) * steps) + loop(d, ii=2, ddr=False)
                 + loop(u.beats(n * d) * steps))
    return 0, g * per_group, 2 * g * n * d


def _x(layer, env):
    return env[layer.inputs[0]]


# --- int8 kinds of QDQ models: tensors hold q - zero point (fixed.QFmt), parameters are onnxruntime's integers,
# requant.py is the golden model (qlinear.h, requant.h); the float model computes in steps of the output --------

def _qlinear_float(layer, env, stats):
    p, a = layer.params, layer.attrs
    x = _x(layer, env)
    return requant.qlinear_float(x.reshape(-1, x.shape[-1]), p["w"], p.get("b"), a["m"], a["zy"],
                                 a.get("act") == "relu")


def _qlinear_fixed(prog, layer, env):
    p, x = layer.params, _x(layer, env)
    return requant.qlinear(x.reshape(-1, x.shape[-1]), p["w"], p.get("b"), p["rq"], layer.attrs.get("act") == "relu")


def _qavgpool_float(layer, env, stats):
    x, a = _x(layer, env), layer.attrs
    s = x.reshape(-1, x.shape[-1]).sum(0, keepdims=True)
    return np.clip(np.rint(s * np.asarray(a["m"], np.float64)), -128 - a["zy"], 127 - a["zy"])


def _qdwconv_float(layer, env, stats):
    p, a = layer.params, layer.attrs
    acc = reference.depthwise_conv(_x(layer, env), p["w"], p.get("b"), a["stride"], a["pad"], "none")
    lo = max(-128 - a["zy"], 0) if a.get("act") == "relu" else -128 - a["zy"]
    return np.clip(np.rint(acc * np.asarray(a["m"], np.float64)), lo, 127 - a["zy"])


def _qadd_float(layer, env, stats):
    a = layer.attrs
    y = np.rint(_x(layer, env) * a["ra"] + env[layer.inputs[1]].reshape(np.shape(_x(layer, env))) * a["rb"])
    return np.clip(y, -128 - a["zy"], 127 - a["zy"])


def _qtable(layer, env):
    """``qlinear.h`` (``qtable``): each word ``x`` of the input replaced by ``w[x + 256]`` (512 entries: every
    ``q - zero_point`` an int8 tensor can hold)."""
    return np.asarray(layer.params["w"], np.int64)[np.asarray(_x(layer, env), np.int64) + requant.TABLE_OFFSET]


def _trips(**names):
    """Trip counts that are the descriptor's dims in order: ``_trips(l2_channels=1)``."""
    return lambda dims, lanes, add, linear: add(**{name: dims[i] for name, i in names.items()})


KINDS = {
    "linear": LayerKind(1, _linear_float, _linear_fixed, _linear_dims, _linear_cost, _linear_trips,
                        units=("linear_unit",), traffic=_linear_words),
    "dwconv": LayerKind(
        2, lambda l, env, s: reference.depthwise_conv(_x(l, env), l.params["w"], l.params.get("b"), l.attrs["stride"],
                                                      l.attrs["pad"], l.attrs.get("act", "none")),
        _dwconv_fixed, _window_dims, _dwconv_cost, _dwconv_trips,
        units=("depthwise_unit<0>",)),   # depthwise_unit<CFG, INT8 = false>
    "im2col": LayerKind(
        3, lambda l, env, s: reference.im2col(_x(l, env), l.attrs["k"], l.attrs["stride"], l.attrs["pad"]),
        lambda p, l, env: golden.im2col(_x(l, env), l.attrs["k"], l.attrs["stride"], l.attrs["pad"]),
        _window_dims, lambda u, l, sh, osh, lanes: (0, u.loop(im2col_trip(_tokens(osh), l.attrs["k"], sh[-1],
                                                                          u.wpb)), 0),
        # each output word is one input word (or padding, not read): the output's words in and out
        _im2col_trips, "same", units=("im2col",),
        traffic=lambda p, l, lanes: 2 * int(np.prod(p.shapes[l.output]))),
    "layernorm": LayerKind(
        4, lambda l, env, s: reference.layernorm(_x(l, env), l.params["gamma"], l.params["beta"], l.attrs["eps"]),
        _layernorm_fixed, _rows_dims, _layernorm_cost,
        lambda dims, lanes, add, linear: add(ln_slots=dims[0] + 1, ln_channels=dims[1]), fields=_eps_fields,
        units=("layernorm_unit",)),
    "attention": LayerKind(5, _attention_float, _attention_fixed, _attention_dims, _attention_cost,
                           _attention_trips, fields=_format_fields(".logits"), units=("attention_unit",)),
    "unfold": LayerKind(
        6, lambda l, env, s: golden.unfold(_x(l, env), l.attrs["ph"], l.attrs["pw"]),
        lambda p, l, env: golden.unfold(_x(l, env), l.attrs["ph"], l.attrs["pw"]),
        lambda p, l: (*p.shapes[l.inputs[0]], l.attrs["ph"], l.attrs["pw"]), _copy_cost,
        lambda dims, lanes, add, linear: add(unfold_words=dims[0] * dims[1] * dims[2]), "same",
        units=("unfold_fold",)),
    "fold": LayerKind(
        7, lambda l, env, s: golden.fold(_x(l, env), l.attrs["h"], l.attrs["w"], l.attrs["ph"], l.attrs["pw"]),
        lambda p, l, env: golden.fold(_x(l, env), l.attrs["h"], l.attrs["w"], l.attrs["ph"], l.attrs["pw"]),
        lambda p, l: (*p.shapes[l.output], l.attrs["ph"], l.attrs["pw"]), _copy_cost,
        lambda dims, lanes, add, linear: add(unfold_words=dims[0] * dims[1] * dims[2]), "same",
        units=("unfold_fold",)),
    "concat": LayerKind(
        8, lambda l, env, s: np.concatenate([_x(l, env), env[l.inputs[1]]], axis=-1),
        lambda p, l, env: golden.concat(_x(l, env), p.formats[l.inputs[0]], *_second(p, l, env),
                                        p.formats[l.output]),
        lambda p, l: (*_rows_dims(p, l), p.shapes[l.inputs[1]][-1]), _concat_cost,
        lambda dims, lanes, add, linear: add(concat_words=dims[0] * (dims[1] + dims[2])), units=("concat",)),
    "avgpool": LayerKind(
        9, lambda l, env, s: _x(l, env).reshape(-1, _x(l, env).shape[-1]).mean(0, keepdims=True),
        lambda p, l, env: golden.avgpool(_x(l, env), p.formats[l.inputs[0]], p.formats[l.output]),
        _rows_dims, _avgpool_cost, _trips(avgpool_tokens=0, avgpool_channels=1), units=("avgpool",)),
    "pool_mixer": LayerKind(
        10, lambda l, env, s: reference.pool_mixer(_x(l, env), l.attrs["k"], l.params.get("scale")),
        _pool_mixer_fixed, lambda p, l: (*p.shapes[l.inputs[0]], l.attrs["k"]), _pool_mixer_cost,
        _trips(pool_rows=0, pool_cols=1, pool_channels=2, pool_k=3), units=("pool_mixer",)),
    "l2norm": LayerKind(
        11, lambda l, env, s: reference.l2_normalize(_x(l, env)),
        lambda p, l, env: golden.l2_normalize(_x(l, env), p.formats[l.output]), _rows_dims,
        _l2norm_cost, lambda dims, lanes, add, linear: add(l2_slots=dims[0] + 1, l2_channels=dims[1]),
        units=("l2_normalize",)),
    "additive": LayerKind(12, _additive_float, _additive_fixed, _rows_dims, _additive_cost,
                          _trips(additive_tokens=0, additive_dim=1), units=("additive_attention",)),
    "moe_route": LayerKind(
        13, lambda l, env, s: reference.moe_route(_x(l, env), l.attrs["k"]),
        lambda p, l, env: golden.moe_route(_x(l, env), p.formats[l.inputs[0]], l.attrs["k"], p.formats[l.output]),
        lambda p, l: (*_rows_dims(p, l), l.attrs["k"]), _moe_route_cost, _moe_route_trips, "gate",
        units=("moe_route",)),
    "moe_experts": LayerKind(14, _moe_experts_float, _moe_experts_fixed, _moe_experts_dims, _moe_experts_cost,
                             _moe_experts_trips, fields=_format_fields(".hidden"),
                             units=("moe_experts", "linear_unit")),   # fc1 and fc2 on the linear unit
    "add": LayerKind(15, _add_float, _add_fixed, _rows_dims, _add_cost,
                     lambda dims, lanes, add, linear: add(add_words=dims[0] * dims[1]), units=("add_tensors",)),
    "token_rows": LayerKind(16, _token_rows_float, _token_rows_fixed, _token_rows_dims, _token_rows_cost,
                            lambda dims, lanes, add, linear: add(token_param_words=dims[3] * dims[1],
                                                                 token_copy_words=dims[0] * dims[1]),
                            units=("token_rows",)),
    "channel_scale": LayerKind(
        17, lambda l, env, s: _x(l, env).reshape(-1, _x(l, env).shape[-1]) * env[l.inputs[1]].reshape(1, -1),
        _channel_scale_fixed, _rows_dims, lambda u, l, sh, osh, lanes: (0, u.loop(int(np.prod(sh)), ii=2), 0),
        lambda dims, lanes, add, linear: add(scale_words=dims[0] * dims[1]), units=("channel_scale",)),
    "global_norm": LayerKind(
        18, lambda l, env, s: reference.global_norm(_x(l, env), l.attrs["eps"]),
        lambda p, l, env: golden.global_norm(_x(l, env), p.formats[l.inputs[0]], p.formats[l.output], l.attrs["eps"]),
        _rows_dims, _global_norm_cost, lambda dims, lanes, add, linear: add(gn_words=dims[0] * dims[1]),
        fields=_eps_fields, units=("global_norm",)),
    "separable_attention": LayerKind(
        19, lambda l, env, s: reference.separable_attention(_x(l, env), env[l.inputs[1]]),
        lambda p, l, env: golden.separable_attention(_x(l, env), p.formats[l.inputs[0]], *_second(p, l, env),
                                                     p.formats[l.output]),
        _separable_dims, _separable_cost, _trips(sep_groups=0, sep_tokens=1, sep_dim=2),
        units=("separable_attention",)),
    "qlinear": LayerKind(20, _qlinear_float, _qlinear_fixed, _linear_dims, _qlinear_cost, _linear_trips, "int8",
                         units=("qgemm_unit",)),
    "qavgpool": LayerKind(
        21, _qavgpool_float, lambda p, l, env: requant.qavgpool(_x(l, env), l.params["rq"]), _rows_dims,
        _avgpool_cost, _trips(avgpool_tokens=0, avgpool_channels=1), "int8", units=("qavgpool",)),
    "qdwconv": LayerKind(
        23, _qdwconv_float,
        lambda p, l, env: requant.qdepthwise(_x(l, env), l.params["w"], l.params.get("b"), l.params["rq"],
                                             l.attrs["stride"], l.attrs["pad"], l.attrs.get("act") == "relu"),
        _window_dims, _dwconv_cost, _dwconv_trips, "int8",
        units=("qdwconv_unit", "depthwise_unit<1>")),   # its own depthwise_unit instance, INT8 = true
    "qadd": LayerKind(
        24, _qadd_float, lambda p, l, env: requant.qadd(_x(l, env), env[l.inputs[1]], l.params["rq"]), _rows_dims,
        lambda u, l, sh, osh, lanes: (0, u.loop(int(np.prod(osh)), ii=2), 0),
        lambda dims, lanes, add, linear: add(add_words=dims[0] * dims[1]), "int8", units=("qadd",)),
    "qtable": LayerKind(
        22, lambda l, env, s: _qtable(l, env), lambda p, l, env: _qtable(l, env), _rows_dims,
        lambda u, l, sh, osh, lanes: (0, u.loop(requant.TABLE_WORDS) + u.loop(int(np.prod(sh))), 0),
        lambda dims, lanes, add, linear: add(add_words=dims[0] * dims[1]), "int8",   # an elementwise pass
        units=("qtable",)),
}
CODES = {name: kind.code for name, kind in KINDS.items()}
# Every unit instance of the library (hw/include/edgevit/units.h) that a descriptor can reach.
UNITS = frozenset(unit for kind in KINDS.values() for unit in kind.units)


def program_units(kinds) -> frozenset:
    """The unit instances ``edgevit_top`` reaches for a program of ``kinds``: ``config.h`` flags only the program's
    ops (``EDGEVIT_OP_<KIND>``) and ``top.cpp`` dispatches only flagged ones, so these are what Vitis would build
    and what :func:`~edgevit.hls.estimator.resources` counts."""
    return frozenset(unit for kind in set(kinds) for unit in KINDS[kind].units)
