"""Analytic resource and latency model of the accelerator, per board, and the lane choice that fits.

Model (first-order; real numbers come from Vitis HLS csynth, which does not run here):

* One shared linear unit of ``li * lo`` MACs (one DSP each: 16x16 fits a DSP48E1/E2) runs every linear layer,
  pointwise conv and im2col'd KxK conv; a layer takes ``T * ceil(CI/li) * ceil(CO/lo)`` cycles.
* A depthwise unit of ``ld`` channel lanes, each ``K*K`` MACs: ``HO * WO * ceil(C/ld)`` cycles.
* The attention unit runs ``rows`` query rows, each with ``DH`` MACs for q.k and ``DH`` for e.v per key step, one
  exp and one reciprocal per row: ``(N-1) * ceil(N/rows) + N`` cycles per head and group.
* LayerNorm and L2 normalisation use ``li`` lanes, two passes: ``2 * T * C / li`` cycles; SwiftFormer's additive
  attention three passes. Data movement (im2col, unfold, fold, concat, pools) moves ``axi_bits/16`` values per
  cycle.
* Every layer streams its input, weights and output over the m_axi ports (``axi_bits`` per cycle, one port
  each way); a layer takes ``max(compute, memory)`` cycles (ping-pong buffers overlap them), plus 20 cycles of
  pipeline fill.
* BRAM36: ping-pong weight tiles ``2 * lo * CI_max`` and input tiles ``2 * li * T_tile`` words, the im2col line
  buffer ``K * W * C``, K and V of one head ``2 * N * DH`` words in ``rows`` banks, one table ROM (<= 257 x 20 bit,
  half a BRAM36) per activation lane; each buffer is at least one BRAM36 per bank.
* LUTs: 40 per MAC (operand muxes, adder tree), 350 per activation lane, 900 per attention row (exp, compare,
  rescale), 15,000 for control and the AXI interfaces.
* A design fits when DSP, BRAM36 and LUT use are each at most 80 % of the part (routing headroom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .program import Program

UTIL_LIMIT = 0.8
WORD_BITS = 16
BRAM_BITS = 36 * 1024


@dataclass(frozen=True)
class Lanes:
    li: int
    lo: int
    ld: int
    rows: int


def _bram(words: int, banks: int = 1) -> int:
    return banks * max(1, math.ceil(words / banks * WORD_BITS / BRAM_BITS))


def layer_cycles(prog: Program, lanes: Lanes, axi_bits: int) -> list[dict]:
    """Cycles of every layer, with the compute and memory parts."""
    per_beat = axi_bits // WORD_BITS
    out = []
    for layer in prog.layers:
        a = layer.attrs
        shape, oshape = prog.shapes[layer.inputs[0]], prog.shapes[layer.output]
        n_in, n_out = int(np.prod(shape)), int(np.prod(oshape))
        n_w = sum(int(np.size(v)) for v in layer.params.values())
        macs = 0
        if layer.kind == "linear":
            t, ci, co = n_in // shape[-1], shape[-1], oshape[-1]
            compute, macs = t * math.ceil(ci / lanes.li) * math.ceil(co / lanes.lo), t * ci * co
        elif layer.kind == "dwconv":
            ho, wo, c = oshape
            compute, macs = ho * wo * math.ceil(c / lanes.ld), ho * wo * c * a["k"] ** 2
        elif layer.kind == "attention":
            g, n, w3 = shape
            dh = w3 // 3 // a["heads"]
            compute = g * a["heads"] * ((n - 1) * math.ceil(n / lanes.rows) + n)
            macs = 2 * g * a["heads"] * n * n * dh
        elif layer.kind in ("layernorm", "l2norm", "additive"):
            compute = (3 if layer.kind == "additive" else 2) * math.ceil(n_in / lanes.li)
        else:
            compute = math.ceil(max(n_in, n_out) / per_beat)
        if len(layer.inputs) > 1:
            n_in += int(np.prod(prog.shapes[layer.inputs[1]]))
        memory = math.ceil((n_in + n_w) / per_beat) + math.ceil(n_out / per_beat)
        out.append({"layer": layer.name, "kind": layer.kind, "source": layer.source, "macs": macs,
                    "compute": compute, "memory": memory, "cycles": max(compute, memory) + 20})
    return out


def resources(prog: Program, lanes: Lanes) -> dict:
    """Estimated DSP, BRAM36 and LUT use of the units and buffers the program needs."""
    kinds = {l.kind for l in prog.layers}
    lin = [l for l in prog.layers if l.kind == "linear"]
    att = [l for l in prog.layers if l.kind == "attention"]
    dw = [l for l in prog.layers if l.kind == "dwconv"]
    ci_max = max((prog.shapes[l.inputs[0]][-1] for l in lin), default=0)
    dsp = lanes.li * lanes.lo + lanes.lo  # MACs + one multiplier per epilogue lane (SiLU, residual scale)
    bram = _bram(2 * lanes.lo * ci_max, lanes.lo) + _bram(2 * lanes.li * 256, lanes.li) + math.ceil(lanes.lo / 2)
    lut = 15000 + 40 * lanes.li * lanes.lo + 350 * lanes.lo
    if dw:
        k = max(l.attrs["k"] for l in dw)
        dsp += lanes.ld * (k * k + 1)
        line = max(l.attrs["k"] * prog.shapes[l.inputs[0]][1] * prog.shapes[l.inputs[0]][2] for l in dw)
        bram += _bram(line, lanes.ld) + math.ceil(lanes.ld / 2)
        lut += 40 * lanes.ld * k * k + 350 * lanes.ld
    if att:
        dh = max(prog.shapes[l.inputs[0]][2] // 3 // l.attrs["heads"] for l in att)
        n = max(prog.shapes[l.inputs[0]][1] for l in att)
        dsp += lanes.rows * (2 * dh + 3)
        bram += _bram(2 * n * dh, lanes.rows) + lanes.rows
        lut += lanes.rows * (900 + 40 * 2 * dh)
    if "im2col" in kinds:
        line = max(l.attrs["k"] * prog.shapes[l.inputs[0]][1] * prog.shapes[l.inputs[0]][2]
                   for l in prog.layers if l.kind == "im2col")
        bram += _bram(line)
    if kinds & {"l2norm", "additive"}:
        dsp += 2 * lanes.li + 2
        tokens = max(int(np.prod(prog.shapes[l.inputs[0]][:-1])) for l in prog.layers if l.kind in ("l2norm", "additive"))
        bram += _bram(2 * tokens)   # the per-token scores a_t (32 bit)
        lut += 200 * lanes.li
    if "layernorm" in kinds:
        dsp += 2 * lanes.li + 2
        bram += _bram(max(prog.shapes[l.inputs[0]][-1] for l in prog.layers if l.kind == "layernorm")) + 1
        lut += 200 * lanes.li
    return {"dsp": dsp, "bram36": bram, "lut": lut}


def fits(res: dict, fpga) -> bool:
    return all(res[k] <= UTIL_LIMIT * getattr(fpga, k) for k in ("dsp", "bram36", "lut"))


def choose_lanes(prog: Program, fpga) -> Lanes:
    """The fastest lane counts (powers of two) that fit ``fpga``; the smallest design if none fits."""
    best, best_cycles = Lanes(1, 1, 1, 1), None
    pow2 = [1, 2, 4, 8, 16, 32, 64]
    for li in pow2:
        for lo in pow2:
            for ld in (1, 4, 16, 32):
                for rows in (1, 2, 4, 8, 16):
                    lanes = Lanes(li, lo, ld, rows)
                    if not fits(resources(prog, lanes), fpga):
                        continue
                    cycles = sum(r["cycles"] for r in layer_cycles(prog, lanes, fpga.axi_bits))
                    key = (cycles, li * lo + ld + rows)
                    if best_cycles is None or key < best_cycles:
                        best, best_cycles = lanes, key
    return best


def apply_lanes(prog: Program, lanes: Lanes) -> None:
    """Write the lane choice into the layers' compile-time attributes (it does not change the numerics)."""
    for layer in prog.layers:
        if layer.kind == "linear":
            layer.attrs.update(li=lanes.li, lo=lanes.lo)
        elif layer.kind == "dwconv":
            layer.attrs.update(ld=lanes.ld)
        elif layer.kind == "attention":
            layer.attrs.update(rows=lanes.rows)


def lanes_of(prog: Program) -> Lanes:
    get = lambda kind, key: next((l.attrs[key] for l in prog.layers if l.kind == kind and key in l.attrs), 1)  # noqa: E731
    return Lanes(get("linear", "li"), get("linear", "lo"), get("dwconv", "ld"), get("attention", "rows"))


def report(prog: Program, fpga) -> dict:
    """Per-layer cycles, totals, resource use against ``fpga`` and whether it fits."""
    lanes = lanes_of(prog)
    layers = layer_cycles(prog, lanes, fpga.axi_bits)
    res = resources(prog, lanes)
    total = sum(r["cycles"] for r in layers)
    return {"lanes": lanes.__dict__, "layers": layers, "resources": res,
            "available": {k: getattr(fpga, k) for k in ("dsp", "bram36", "lut")},
            "fits": fits(res, fpga), "cycles": total, "clock_mhz": fpga.clock_mhz,
            "latency_ms": total / (fpga.clock_mhz * 1e3), "macs": sum(r["macs"] for r in layers)}
