"""Analytic resource and latency model of the accelerator, per board, and the lane choice that fits.

Model (first-order; real numbers come from Vitis HLS csynth, which does not run here). The accelerator is
``top()`` looping over the layer descriptors (``layer_table``, one per layer) and dispatching each to one of
a fixed set of shared units (``hw/include/edgevit/units.h``), so resources are those of the units, sized by
the lanes and by the buffer bounds of ``config.h`` (``layer_table.unit_bounds``), and cycles are the sum
over descriptors:

* Each descriptor costs ``DISPATCH_CYCLES`` (fetching its words over m_axi, decoding, pipeline fill).
* The shared linear unit of ``li * lo`` MACs (one DSP each: 16x16 fits a DSP48E1/E2) runs every linear layer,
  pointwise conv and im2col'd KxK conv: ``T * ceil(CI/li) * ceil(CO/lo)`` cycles. It holds ``TM`` tokens of
  input and ``lo`` weight rows on chip; per layer the outer loop runs over token tiles (weights re-read
  ``ceil(T/TM)`` times) or weight tiles (input re-read ``ceil(CO/lo)`` times), whichever moves fewer words
  (``layer_table.linear_traffic``).
* The depthwise unit of ``ld`` channel lanes, each ``K*K`` MACs: ``HO * WO * ceil(C/ld)`` cycles; a K-row line
  buffer reads each input once.
* The attention unit runs ``rows`` query rows, each with ``DH`` MACs for q.k and ``DH`` for e.v per key step, one
  exp and one reciprocal per row: ``(N-1) * ceil(N/rows) + N`` cycles per head and group; K and V of a head are
  loaded once.
* LayerNorm and L2 normalisation use ``li`` lanes, two passes: ``2 * T * C / li`` cycles; SwiftFormer's additive
  attention three passes. Data movement (im2col, unfold, fold, concat, pools) moves ``axi_bits/16`` values per
  cycle.
* Every layer streams its input, weights and output over the m_axi ports (``axi_bits`` per cycle); a layer takes
  ``max(compute, memory)`` cycles, i.e. tile loads overlap compute (ping-pong tiles, HLS dataflow: assumed, the
  C++ is written sequentially).
* BRAM36: the units' tile buffers, doubled for ping-pong: linear ``TM x KMAX`` input words in ``li`` banks and
  ``lo x KMAX`` weight words in ``lo`` banks; depthwise line buffer ``K x WMAX x ld``; attention K and V
  ``NMAX x DHMAX`` each in ``rows`` banks; LayerNorm row ``CMAX``; additive scores ``TMAX`` (64 bit); one table
  ROM (<= 257 x 20 bit, half a BRAM36) per activation lane; each buffer at least one BRAM36 per bank.
* LUTs: 40 per MAC (operand muxes, adder tree), 350 per activation lane, 900 per attention row (exp, compare,
  rescale), 15,000 for control, the descriptor decoder and the AXI interfaces.
* MoE layers (``moe.h``): the gate is a linear layer; ``moe_route`` takes ``E + k`` cycles per patch (one
  compare per logit, one exp per kept one). ``moe_experts`` runs each (patch, expert) pair's fc1 and fc2 on
  the linear unit; with patch reordering each active expert's weight block is read once per image (at most
  ``min(E, N k)`` blocks), without it once per pair (``N k`` blocks), the next block loading into a ping-pong
  buffer while the current expert computes. Its buffers: two expert blocks and ``N x D`` 64-bit accumulators.
  :func:`moe_weight_traffic` counts the expert weight bytes per image for the routes actually taken.
* A design fits when DSP, BRAM36 and LUT use are each at most 80 % of the part (routing headroom).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .golden import moe_active_experts
from .layer_table import FIELDS, WORD_BITS, expert_words, linear_traffic, unit_bounds
from .program import Program

UTIL_LIMIT = 0.8
BRAM_BITS = 36 * 1024


@dataclass(frozen=True)
class Lanes:
    li: int
    lo: int
    ld: int
    rows: int


def _bram(words: int, banks: int = 1) -> int:
    return banks * max(1, math.ceil(words / banks * WORD_BITS / BRAM_BITS))


def dispatch_cycles(axi_bits: int) -> int:
    """Cycles to fetch one descriptor (``len(FIELDS)`` 32-bit words), decode it and fill the unit's pipeline."""
    return math.ceil(len(FIELDS) * 32 / axi_bits) + 20


def layer_cycles(prog: Program, lanes: Lanes, axi_bits: int) -> list[dict]:
    """Cycles of every descriptor (one per layer), with the compute and memory parts."""
    per_beat = axi_bits // WORD_BITS
    out = []
    for layer in prog.layers:
        a = layer.attrs
        shape, oshape = prog.shapes[layer.inputs[0]], prog.shapes[layer.output]
        n_in, n_out = int(np.prod(shape)), int(np.prod(oshape))
        n_w = sum(int(np.size(v)) * (4 if k == "b" else 1) for k, v in layer.params.items())
        macs = 0
        if layer.kind == "linear":
            t, ci, co = n_in // shape[-1], shape[-1], oshape[-1]
            compute, macs = t * math.ceil(ci / lanes.li) * math.ceil(co / lanes.lo), t * ci * co
            x_words, w_words = linear_traffic(t, ci, co, lanes.lo)
            n_in, n_w = x_words, n_w - ci * co + w_words
        elif layer.kind == "dwconv":
            ho, wo, c = oshape
            compute, macs = ho * wo * math.ceil(c / lanes.ld), ho * wo * c * a["k"] ** 2
        elif layer.kind == "attention":
            g, n, w3 = shape
            dh = w3 // 3 // a["heads"]
            compute = g * a["heads"] * ((n - 1) * math.ceil(n / lanes.rows) + n)
            macs = 2 * g * a["heads"] * n * n * dh
        elif layer.kind == "moe_experts":
            e, h, dm = layer.params["w1"].shape
            pairs = n_in // dm * a["k"]
            compute = pairs * (math.ceil(dm / lanes.li) * math.ceil(h / lanes.lo)
                               + math.ceil(h / lanes.li) * math.ceil(dm / lanes.lo))
            macs = pairs * 2 * dm * h
            n_w = (min(e, pairs) if a.get("reorder", 1) else pairs) * expert_words(dm, h)
        elif layer.kind == "moe_route":
            compute = n_in + n_out // 2
        elif layer.kind in ("layernorm", "l2norm", "additive"):
            compute = (3 if layer.kind == "additive" else 2) * math.ceil(n_in / lanes.li)
        else:
            compute = math.ceil(max(n_in, n_out) / per_beat)
        if len(layer.inputs) > 1:
            n_in += int(np.prod(prog.shapes[layer.inputs[1]]))
        memory = math.ceil((n_in + n_w) / per_beat) + math.ceil(n_out / per_beat)
        out.append({"layer": layer.name, "kind": layer.kind, "source": layer.source, "macs": macs,
                    "compute": compute, "memory": memory, "cycles": max(compute, memory) + dispatch_cycles(axi_bits)})
    return out


def resources(prog: Program, lanes: Lanes) -> dict:
    """Estimated DSP, BRAM36 and LUT use of the units (and their tile buffers) the program needs."""
    kinds = {l.kind for l in prog.layers}
    bound = unit_bounds(prog)
    dsp = lanes.li * lanes.lo + lanes.lo  # MACs + one multiplier per epilogue lane (SiLU, residual scale)
    bram = 2 * (_bram(bound["TM"] * bound["KMAX"], lanes.li) + _bram(lanes.lo * bound["KMAX"], lanes.lo)) \
        + math.ceil(lanes.lo / 2)
    lut = 15000 + 40 * lanes.li * lanes.lo + 350 * lanes.lo
    if "dwconv" in kinds:
        k = bound["KMAXDW"]
        dsp += lanes.ld * (k * k + 1)
        bram += _bram(k * bound["WMAX"] * lanes.ld, lanes.ld) + math.ceil(lanes.ld / 2)
        lut += 40 * lanes.ld * k * k + 350 * lanes.ld
    if "attention" in kinds:
        dh = bound["DHMAX"]
        dsp += lanes.rows * (2 * dh + 3)
        bram += 2 * _bram(bound["NMAX"] * dh, lanes.rows) + lanes.rows
        lut += lanes.rows * (900 + 40 * 2 * dh)
    if kinds & {"l2norm", "additive"}:
        dsp += 2 * lanes.li + 2
        bram += _bram(4 * bound["TMAX"])   # the per-token scores a_t (64 bit)
        lut += 200 * lanes.li
    if "moe_experts" in kinds:   # ping-pong expert blocks, 64-bit accumulators, gate-weight multipliers
        dsp += lanes.lo + 4
        bram += 2 * _bram(bound["EWMAX"]) + _bram(4 * bound["MNMAX"] * bound["MDMAX"]) + 1
        lut += 2000 + 100 * lanes.lo
    if "layernorm" in kinds:
        dsp += 2 * lanes.li + 2
        bram += _bram(bound["CMAX"]) + 1
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


def moe_weight_traffic(prog: Program, routes: list[dict]) -> dict:
    """Expert weight bytes read per image by the MoE layers, with and without patch reordering.

    Parameters
    ----------
    routes
        Per image, the route table of each ``moe_route`` layer (name of its output -> raw ``[N, k, 2]``), e.g.
        the golden model's tensors from :meth:`Program.run_fixed`.

    Returns
    -------
    dict
        Per MoE layer (``layers``) and in total, per image on average: ``reordered`` (each active expert's
        block once), ``per_patch`` (one block per (patch, expert) pair), ``all_experts`` (every expert of the
        build once, what a dense schedule would read) and the mean number of ``active`` experts.
    """
    layers, totals = [], {"reordered": 0.0, "per_patch": 0.0, "all_experts": 0.0}
    for layer in prog.layers:
        if layer.kind != "moe_experts":
            continue
        e, h, d = layer.params["w1"].shape
        block = expert_words(d, h) * WORD_BITS // 8
        active = [int((moe_active_experts(r[layer.inputs[1]], e) > 0).sum()) for r in routes]
        pairs = int(np.prod(prog.shapes[layer.inputs[1]][:-1]))
        row = {"layer": layer.name, "experts": e, "expert_bytes": block, "pairs": pairs,
               "active": float(np.mean(active)), "reordered": block * float(np.mean(active)),
               "per_patch": block * pairs, "all_experts": block * e}
        layers.append(row)
        for key in totals:
            totals[key] += row[key]
    return {"layers": layers, **totals,
            "reduction_vs_per_patch": totals["per_patch"] / totals["reordered"] if totals["reordered"] else None}
