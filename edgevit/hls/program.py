"""The layer program the accelerator runs: tensors, layers on the shared units, and how to execute it.

A :class:`Program` is built by :mod:`edgevit.hls.torch_import` (or by hand in tests) with float parameters.
:func:`calibrate` runs it in float64 on sample inputs and picks one fixed-point format per tensor from the
observed ranges (user overrides win); :meth:`Program.run_fixed` then runs the golden model, which the generated
C++ must match bit for bit. Activations are channels-last: ``[H, W, C]`` maps and ``[T, C]`` token matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import golden
from .fixed import Fmt, QFmt, fit_format, quantize
from .ops import KINDS

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
        """Execute in float64; returns every tensor. ``stats`` (if given) collects the peak |value| of each.

        An int8 program (input format :class:`~edgevit.hls.fixed.QFmt`) runs on the quantized input, in steps.
        """
        fi = self.formats.get(self.input)
        env = {self.input: np.asarray(fi.quantize_steps(x) if isinstance(fi, QFmt) else x, np.float64)}
        for layer in self.layers:
            env[layer.output] = KINDS[layer.kind].run_float(layer, env, stats).reshape(self.shapes[layer.output])
        if stats is not None:
            for name, value in env.items():
                stats[name] = max(stats.get(name, 0.0), float(np.abs(value).max()))
        return env

    def run_fixed(self, x_raw: np.ndarray) -> dict:
        """Execute the golden fixed-point model on a raw input; returns every tensor as raw integers."""
        env = {self.input: np.asarray(x_raw, np.int64)}
        for layer in self.layers:
            env[layer.output] = KINDS[layer.kind].run_fixed(self, layer, env).reshape(self.shapes[layer.output])
        return env

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize(x, self.formats[self.input])


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
        if KINDS[layer.kind].fmt == "same":   # data movement keeps its input's format: no converter
            formats[layer.output] = formats[layer.inputs[0]]
        if KINDS[layer.kind].fmt == "gate":   # the MoE route table: expert ids and gate weights
            formats[layer.output] = golden.GATE_FMT
    formats.update(overrides)
    for layer in prog.layers:   # data movement keeps overridden input formats too
        if KINDS[layer.kind].fmt == "same" and layer.output not in overrides:
            formats[layer.output] = formats[layer.inputs[0]]
    prog.formats = formats
    return prog
