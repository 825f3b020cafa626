"""The layer program the accelerator runs: tensors, layers on the shared units, and how to execute it.

A :class:`Program` is built by :mod:`edgevit.hls.torch_import` (or by hand in tests) with float parameters.
:func:`calibrate` runs it in float64 on sample inputs and picks one fixed-point format per tensor from the
observed ranges (user overrides win); :meth:`Program.run_fixed` then runs the golden model, which the generated
C++ must match bit for bit. Activations are channels-last: ``[H, W, C]`` maps and ``[T, C]`` token matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import golden, reference
from .fixed import Fmt, fit_format, quantize

ACT_WIDTH = 16
WEIGHT_WIDTH = 16
ACC_GUARD_BITS = 16   # biases are quantized to the accumulator's scale with 16 guard bits (48 bits: fits int64)


@dataclass
class Layer:
    """One accelerator layer: ``kind`` selects the kernel, ``inputs``/``output`` name tensors.

    ``params`` holds float arrays (weights ``w``, bias ``b``, LayerNorm ``gamma``/``beta``); ``attrs`` the
    layer's settings (activation, kernel size, ...) and the lanes of its unit. ``source`` names the torch module.
    """

    kind: str
    name: str
    inputs: list
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class Program:
    """Tensors (name -> shape), layers in execution order, formats once calibrated."""

    input: str
    shapes: dict
    layers: list
    formats: dict = field(default_factory=dict)
    cpu_layers: list = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.layers[-1].output

    def param_formats(self, layer: Layer) -> dict:
        """Formats of a layer's parameters (overridable as ``"<layer>.<param>"``).

        Weights get 16 bits fitted to their peak; LayerNorm's gamma and beta share one format (the kernel adds
        them at one scale); biases are in the accumulator's format so adding them is exact.
        """
        p = layer.params
        if layer.kind == "moe_experts":
            return self._expert_formats(layer)
        peaks = {key: float(np.abs(v).max()) for key, v in p.items() if key not in ("b", "gamma", "beta")}
        if "gamma" in p:
            peaks["gamma"] = peaks["beta"] = float(max(np.abs(p["gamma"]).max(), np.abs(p["beta"]).max()))
        out = {key: self.formats.get(f"{layer.name}.{key}", fit_format(peak, WEIGHT_WIDTH))
               for key, peak in peaks.items()}
        if "b" in p:   # exactly the kernels' accumulator type, so bias and accumulator saturate alike
            fx, fw = self.formats[layer.inputs[0]], out["w"]
            out["b"] = Fmt(fx.w + fw.w + ACC_GUARD_BITS, fx.i + fw.i + ACC_GUARD_BITS)
        return out

    def _expert_formats(self, layer: Layer) -> dict:
        """An MoE layer's experts share one weight format (overridable as ``"<layer>.w"``, one descriptor field);
        fc1's biases are at its accumulator's scale (tokens x weights), fc2's at the hidden activations x weights."""
        p = layer.params
        fw = self.formats.get(f"{layer.name}.w", fit_format(max(float(np.abs(p[k]).max()) for k in ("w1", "w2")),
                                                          WEIGHT_WIDTH))
        acc = [self.formats[layer.inputs[0]], self.formats[layer.name + ".hidden"]]
        fb1, fb2 = (Fmt(f.w + fw.w + ACC_GUARD_BITS, f.i + fw.i + ACC_GUARD_BITS) for f in acc)
        return {"w1": fw, "w2": fw, "b1": fb1, "b2": fb2}

    def quantized_params(self, layer: Layer) -> dict:
        fmts = self.param_formats(layer)
        return {key: (quantize(value, fmts[key]), fmts[key]) for key, value in layer.params.items()}

    def run_float(self, x: np.ndarray, stats: dict | None = None) -> dict:
        """Execute in float64; returns every tensor. ``stats`` (if given) collects the peak |value| of each."""
        env = {self.input: np.asarray(x, np.float64)}
        for layer in self.layers:
            env[layer.output] = _float_layer(layer, env, stats).reshape(self.shapes[layer.output])
        if stats is not None:
            for name, value in env.items():
                stats[name] = max(stats.get(name, 0.0), float(np.abs(value).max()))
        return env

    def run_fixed(self, x_raw: np.ndarray) -> dict:
        """Execute the golden fixed-point model on a raw input; returns every tensor as raw integers."""
        env = {self.input: np.asarray(x_raw, np.int64)}
        for layer in self.layers:
            env[layer.output] = _fixed_layer(self, layer, env).reshape(self.shapes[layer.output])
        return env

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize(x, self.formats[self.input])


def _float_layer(layer: Layer, env: dict, stats: dict | None):
    a, p, k = layer.attrs, layer.params, layer.kind
    x = env[layer.inputs[0]]
    if k == "linear":
        res = env[layer.inputs[1]] if len(layer.inputs) > 1 else None
        return reference.linear(x, p["w"], p.get("b"), a.get("act", "none"), res)
    if k == "dwconv":
        return reference.depthwise_conv(x, p["w"], p.get("b"), a["stride"], a["pad"], a.get("act", "none"))
    if k == "im2col":
        return reference.im2col(x, a["k"], a["stride"], a["pad"])
    if k == "layernorm":
        return reference.layernorm(x, p["gamma"], p["beta"], a["eps"])
    if k == "attention":
        y, peak = reference.attention(x, a["heads"])
        if stats is not None:
            stats[layer.name + ".logits"] = max(stats.get(layer.name + ".logits", 0.0), peak)
        return y
    if k == "unfold":
        return golden.unfold(x, a["ph"], a["pw"])
    if k == "fold":
        return golden.fold(x, a["h"], a["w"], a["ph"], a["pw"])
    if k == "concat":
        return np.concatenate([x, env[layer.inputs[1]]], axis=-1)
    if k == "avgpool":
        return x.reshape(-1, x.shape[-1]).mean(0, keepdims=True)
    if k == "pool_mixer":
        return reference.pool_mixer(x, a["k"], p.get("scale"))
    if k == "l2norm":
        return reference.l2_normalize(x)
    if k == "additive":
        d = x.shape[-1]
        return reference.additive_attention(x.reshape(-1, d), env[layer.inputs[1]].reshape(-1, d), p["wg"])
    if k == "moe_route":
        return reference.moe_route(x, a["k"])
    if k == "moe_experts":
        y, peak_h, peak_o = reference.moe_experts(x, env[layer.inputs[1]], p["w1"], p["b1"], p["w2"], p["b2"],
                                                  a.get("act", "none"))
        if stats is not None:   # the expert outputs share the result's format, so both set its range
            for key, peak in ((layer.name + ".hidden", peak_h), (layer.output, peak_o)):
                stats[key] = max(stats.get(key, 0.0), peak)
        return y
    if k == "add":
        return x + (env[layer.inputs[1]] if len(layer.inputs) > 1 else p["pos"].reshape(x.shape))
    raise ValueError(k)


def _fixed_layer(prog: Program, layer: Layer, env: dict):
    a, k, f = layer.attrs, layer.kind, prog.formats
    x, fx, fo = env[layer.inputs[0]], f[layer.inputs[0]], f[layer.output]
    q = prog.quantized_params(layer)
    if k == "linear":
        res = env[layer.inputs[1]] if len(layer.inputs) > 1 else None
        fr = f[layer.inputs[1]] if res is not None else None
        b = q["b"][0] if "b" in q else None
        return golden.linear(x, fx, q["w"][0], q["w"][1], b, fo, a.get("act", "none"), res, fr)
    if k == "dwconv":
        b = q["b"][0] if "b" in q else None
        return golden.depthwise_conv(x, fx, q["w"][0], q["w"][1], b, fo, a["stride"], a["pad"], a.get("act", "none"))
    if k == "im2col":
        return golden.im2col(x, a["k"], a["stride"], a["pad"])
    if k == "layernorm":
        return golden.layernorm(x, fx, q["gamma"][0], q["beta"][0], q["gamma"][1], fo, a["eps"])
    if k == "attention":
        return golden.attention(x, fx, f[layer.name + ".logits"], fo, a["heads"])
    if k == "unfold":
        return golden.unfold(x, a["ph"], a["pw"])
    if k == "fold":
        return golden.fold(x, a["h"], a["w"], a["ph"], a["pw"])
    if k == "concat":
        return golden.concat(x, fx, env[layer.inputs[1]], f[layer.inputs[1]], fo)
    if k == "avgpool":
        return golden.avgpool(x, fx, fo)
    if k == "pool_mixer":
        scale, fs = q.get("scale", (None, None))
        return golden.pool_mixer(x, fx, fo, a["k"], scale, fs)
    if k == "l2norm":
        return golden.l2_normalize(x, fo)
    if k == "additive":
        d = x.shape[-1]
        return golden.additive_attention(x.reshape(-1, d), fx, env[layer.inputs[1]].reshape(-1, d),
                                         f[layer.inputs[1]], q["wg"][0], q["wg"][1], fo)
    if k == "moe_route":
        return golden.moe_route(x, fx, a["k"], fo)
    if k == "moe_experts":
        return golden.moe_experts(x, fx, env[layer.inputs[1]], f[layer.inputs[1]], q["w1"][0], q["b1"][0],
                                  q["w2"][0], q["b2"][0], q["w1"][1], f[layer.name + ".hidden"], fo,
                                  a.get("act", "none"))
    if k == "add":
        if len(layer.inputs) > 1:
            return golden.add(x, fx, env[layer.inputs[1]], f[layer.inputs[1]], fo)
        return golden.add(x, fx, q["pos"][0], q["pos"][1], fo)
    raise ValueError(k)


# Layers that only move data keep their input's format, so they need no converter.
_SAME_FORMAT = {"im2col", "unfold", "fold"}
# Layers whose output format is fixed by the kernel: the MoE route table (expert ids and gate weights).
_FIXED_FORMAT = {"moe_route": golden.GATE_FMT}


def calibrate(prog: Program, samples, overrides: dict | None = None, headroom: float = 1.25) -> Program:
    """Choose a 16-bit format per tensor from the peak |value| over ``samples`` (plus ``headroom``).

    ``overrides`` maps tensor names (or ``"<layer>.logits"``, ``"<layer>.w"``) to a :class:`Fmt` and wins.
    """
    stats: dict = {}
    for x in samples:
        prog.run_float(x, stats)
    overrides = overrides or {}
    formats = {}
    for name, peak in stats.items():
        formats[name] = fit_format(peak, ACT_WIDTH, headroom)
    for layer in prog.layers:
        if layer.kind in _SAME_FORMAT:
            formats[layer.output] = formats[layer.inputs[0]]
        if layer.kind in _FIXED_FORMAT:
            formats[layer.output] = _FIXED_FORMAT[layer.kind]
    formats.update(overrides)
    for layer in prog.layers:   # data movement keeps overridden input formats too
        if layer.kind in _SAME_FORMAT and layer.output not in overrides:
            formats[layer.output] = formats[layer.inputs[0]]
    prog.formats = formats
    return prog
