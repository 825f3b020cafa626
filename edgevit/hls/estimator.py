"""Analytic resource and latency model of the accelerator as its C++ is written, and the lane plan per board.

Real numbers come from Vitis HLS csynth, which does not run here; this model reads the loops of
``hw/include/edgevit/*.h`` and applies a few published scheduling and device facts to them (sources in
``docs/fpga.md``, "The estimator and its calibration"). ``top()`` loops over the layer descriptors and
dispatches each to one shared unit, so resources are those of the units, sized by the lanes and by the buffer
bounds of ``config.h`` (``layer_table.unit_bounds``), and cycles are the sum over descriptors.

Cycles (what the C++ does, loop by loop):

* **Ports.** The m_axi ports are arrays of ``axi_bits``-bit beats (the board's HP width; ``packed.h``), one
  beat per cycle per port and direction (AXI reads and writes are separate channels); ``hls.tcl`` uses the
  Vivado IP flow, where Vitis widens nothing by itself. Loops written a word per iteration (every unit but the
  linear one, through ``word_port``) still move one word a cycle; the linear unit's tile loads and write-back
  move a beat a cycle. A pipelined loop that makes ``n`` accesses to one port per iteration has ``II >= n``.
* **Pipelined loops** take ``trip * II + depth`` cycles per invocation (UG1399); an invocation that reads or
  writes DDR also waits ``AXI_LATENCY`` cycles once (the m_axi latency Vitis schedules by default; a new burst
  starts with every invocation of an inner loop, since the outer loops are not pipelined).
* **Sequential, except where one loop does several things.** There is no DATAFLOW region: a unit's loops run one
  after the other and a layer's cycles are the *sum* of its loops. Overlap exists only inside one pipelined
  loop whose iterations do several things (the linear unit's pass), and is counted as that loop's trip, the
  longest of its parts. ``compute`` is the part spent in the MAC / key-step loops at their ideal rate,
  ``memory`` the rest (loads, write-back, the part of a pass its transfers make longer than its MAC steps, port
  stalls, latencies); ``bound`` names the larger. When a layer is memory bound, more lanes shrink only its
  compute part.
* **Linear unit** (``linear.h``, :func:`linear_loops`): (token tile, weight tile) jobs in the descriptor's
  order (``layer_table.weights_outer``). Per job one pass of ``tm x ceil(K/LI)`` MAC steps that also loads the
  next token tile (ping-pong input tiles, ``Lanes.xtiles`` = 2) and writes back the previous job's ``tm``
  output rows (ping-pong result tiles) a beat a cycle, when every output row is whole beats (``N`` and ``LO``
  multiples of ``WPB``);
  its trip is the longest of the three, or with a residual the MAC steps or the load's beats followed by the
  write-back's (the port reads one beat a cycle). With weight tiles outer, two input tiles and an overlapped
  write-back, a weight tile's passes are one pipelined loop (one m_axi latency per weight tile, not per pass),
  each pass but the last lasting the MAC pipeline's depth past its steps and the read latency past its load (the
  next pass reads what it wrote). The next weight tile (the beats of ``min(LO, N - n0) x K`` words and of their
  64-bit biases) loads over the params port during the run before it, into the other half of the weight banks
  (``Lanes.wtiles`` = 2); the run's last pass lasts until it is in. Run on their own: the first weight tile, the
  write-back of a layer whose rows are not whole beats (a partly covered beat is read first), the token tiles of a
  design with one input tile, the weight tiles of a design with one weight tile, the last job's write-back. A
  token tile is loaded only when the next job's tokens differ, a weight tile only when its rows do.
* **Depthwise unit** (``conv.h``, :func:`depthwise_loops`): per group of ``LD`` channels its weights and biases
  a beat a cycle, then passes over the rows: when a pixel's channels are whole beats (``LD`` and ``C`` multiples
  of ``WPB``), each pass reads an input row and computes the output row its predecessors completed, and all
  passes of a group are one pipelined loop (``II = LD / WPB``); otherwise an input row's read and each output
  row are loops of their own at the beats a pixel's words can span.
* **Attention unit** (``attention.h``, :func:`attention_loops`): per head one pass reading Q, K and V a beat a
  cycle (per token three runs of ``DH`` words, each :func:`row_pass_beats` beats), the key-step loop on chip at
  one step per cycle (``(N-1) * ceil(N/ROWS) + N`` steps), one pass normalising and writing the outputs, ``LNL``
  words a cycle when ``DH`` is whole beats (else a word).
* LayerNorm (gamma and beta read once per layer, then one loop of ``M + 1`` row slots, a row read while the
  previous one is written: :func:`layernorm_loops`), L2 norm (the same loop: :func:`l2norm_loops`), additive
  attention (w_g on chip, then three loops over the tokens' beats: :func:`additive_loops`) and the pool mixer
  (per pixel a pass per window tap and one writing, each the most beats a row can span): ``LNL`` words a
  cycle (:func:`layernorm_lanes`). im2col: one loop, a beat a cycle when the channels are whole beats, else per
  tap row the beats of its ``K C`` words (:func:`ops.im2col_trip`); unfold/fold and concat: one loop, a beat a
  cycle when rows are whole beats, else a word (:func:`ops.mover_trip`). The int8 linear unit
  (:func:`qlinear_loops`): its loops one after the other. The other data movers, MoE copies: their pipelined
  loops at one word per cycle.
* **MoE experts**: fc1 and fc2 of each expert run are linear-unit calls whose weights come from DDR (no on-chip
  expert block), plus the gather, scatter and requantisation loops.
* **DDR.** All ports share the PS DDR (``ddr_gbps`` of ``targets/*.toml``, peak, reads and writes together): a
  layer takes at least the bytes it moves (``ops.LayerKind.traffic``) over that bandwidth (:func:`layer_cycles`).

Resources:

* Units: those the generated top reaches, which are the units of the program's ops (``ops.program_units``;
  ``config.h`` flags the program's ops and ``top.cpp`` has cases only for flagged ones), each counted once.
* DSP48: every multiply of an unrolled (or pipelined, once) loop body, counted by its operand widths against
  the multiplier of the family (DSP48E2 27x18 on UltraScale+, DSP48E1 25x18 on Zynq-7000): one DSP for 16x16,
  partial products for wider ones (:func:`dsp_per_multiply`). Linear ``LI * LO``, depthwise ``LD * KMAXDW^2``,
  attention ``ROWS * DHMAX`` for q.k and the rescale/accumulate multiplies of each row, ``WPB`` epilogues in
  the linear unit's pipelined write loop and ``LD`` in the depthwise unit's unrolled one.
* BRAM36 per partitioned array: each bank is one memory; banks of at most ``LUTRAM_BITS`` go to LUTRAM (LUTs),
  larger ones take BRAM18 halves in the aspect ratio that needs the fewest (1K x 18, 512 x 36, ...: a bank's
  width counts, so a 64-bit bank takes two). Linear: two input tiles of ``max(LI, WPB)`` banks, weight tile
  ``ceil(LO / 2) * max(LI, WPB)`` banks of 32-bit words (the two rows of a pair share a word), two result tiles
  of ``LO`` banks of ``TM`` 64-bit sums in LUTRAM (bound so in the C++: a 32-deep bank would waste a BRAM);
  depthwise line buffer ``(KMAXDW + 1) * KMAXDW * LD`` banks (``KMAXDW + 1`` rows); attention K
  and V one copy per row slot (``ROWS * DHMAX`` banks of ``NMAX`` words each), the queries by slot and the
  rows' 64-bit sums (``NMAX x DHMAX`` in ``DHMAX`` banks). Ping-pong copies only where the C++ has them (the
  linear unit's input and result tiles).
* LUTs: per 16x16 MAC 40 (its share of the adder tree and the 64-bit accumulator), 350 per epilogue, 900 per
  attention row, 15,000 for control, the descriptor decoder and the three m_axi adapters (first-order, not
  calibrated against a Vitis report).
* A design fits when DSP, BRAM36 and LUT use are each at most 80 % of the part (routing headroom).

:func:`choose_lanes` searches the lane space for the lowest estimated latency that fits; among plans within
``LATENCY_TOLERANCE`` of the best it takes the one with the fewest DSPs (lanes that do not shorten the run
are not worth their area).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from .golden import moe_active_experts
from .layer_table import FIELDS, TILE_TOKENS, WORD_BITS, expert_words, unit_bounds, weights_outer
from .ops import KINDS, depthwise_passes, program_units
from .program import Program

UTIL_LIMIT = 0.8
# BRAM18 aspect ratios (depth, width) (UG573 "Block RAM Summary"): 512 x 36 is the simple-dual-port mode (one
# read and one write port), which is all a bank that one loop fills and another reads needs.
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
LUTRAM_BITS = 1024          # a bank this small is distributed RAM (64 x 1 per LUT6), not a block RAM
AXI_LATENCY = 64            # UG1399: default m_axi latency Vitis HLS schedules for, in kernel cycles
DEPTH_IO = 3                # pipeline depth of a load/store loop (address, m_axi read, BRAM write)
DEPTH_MAC = 8               # 16x16 product (DSP48, 3-4 stages), adder tree, 64-bit accumulate
DEPTH_EPILOGUE = 12         # requant, table lookup + interpolation, activation multiply, saturation
DEPTH_ATTENTION = 16        # q.k tree, requant, exp table + interpolation, rescale
DISPATCH_CYCLES = 20        # decode a descriptor and enter the unit
LATENCY_TOLERANCE = 0.01
MULTIPLIER = {"zynquplus": (27, 18), "zynq": (25, 18)}   # DSP48E2 / DSP48E1 signed multiplier inputs

# Operand widths (bits, sign included) of the multiplies in the units' bodies (hw/include/edgevit).
_WORD = WORD_BITS
_EXP = 17            # exp_neg result: EXP_FRAC = 16 fractional bits, <= 1.0
_OACC = 41           # attention output accumulator: 16-bit V << EXP_FRAC plus log2(N) growth
_TABLE = 21          # table values with TABLE_FRAC = 20 fractional bits
_ACT = 40            # the epilogue's internal format (ACT_BITS)
_RQ_ACC = 34         # an int8 layer's accumulator rounded to float32's 24 significant bits, as an integer: int8
                     # products summed over up to 2^16 inputs plus an int32 bias
_RQ_M0 = 25          # float32 M's 24-bit mantissa, signed
_RQ_LUT = 600        # requantize_int8: two 64-bit leading-one detectors and shifters, round-half-even, clip
_NORM = 16           # NORM_FRAC: fractional bits of the L2 norm's and additive attention's intermediates


@dataclass(frozen=True)
class Lanes:
    """Compile-time lanes of the units: ``li x lo`` linear MACs, ``ld`` depthwise channels, ``rows`` attention
    query rows; ``xtiles``: the linear unit's input tiles (2: the next token tile loads during a tile's MAC steps;
    1: between them, for boards whose BRAM cannot hold a second tile); ``wtiles``: its weight tiles (2: the next
    weight tile is prefetched over the params port during a run; 1: it loads between runs, and the BRAM of the
    second tile can buy output lanes instead)."""

    li: int
    lo: int
    ld: int
    rows: int
    xtiles: int = 2
    wtiles: int = 2


def dsp_per_multiply(a_bits: int, b_bits: int, family: str) -> int:
    """DSP48 slices for a signed ``a_bits x b_bits`` multiply on ``family`` (``zynquplus`` or ``zynq``).

    One slice when the operands fit the multiplier (27x18 for DSP48E2, 25x18 for DSP48E1); otherwise one per
    partial product, the operands cut into unsigned chunks one bit narrower than the inputs (the sign stays in
    the top chunk), in the cheaper orientation.
    """
    big, small = MULTIPLIER[family]

    def pieces(bits: int, width: int) -> int:
        return 1 if bits <= width else math.ceil((bits - 1) / (width - 1))

    return min(pieces(a_bits, big) * pieces(b_bits, small), pieces(a_bits, small) * pieces(b_bits, big))


def _epilogue_dsp(family: str) -> int:
    """One ``epilogue`` instance (activation.h): table interpolation, SiLU / Hardswish products, 1/6 scale."""
    return (dsp_per_multiply(_TABLE, 16, family) + 2 * dsp_per_multiply(_ACT, _TABLE, family)
            + dsp_per_multiply(_TABLE + 2, 18, family))


def _memory(words: int, banks: int = 1, bits: int = WORD_BITS, lutram: bool = False) -> tuple[int, int]:
    """(BRAM36, LUT) of an array of ``words`` split into ``banks`` memories of ``bits``-bit words; ``lutram``: the
    C++ binds it to LUTRAM (``BIND_STORAGE ... impl=lutram``), one LUT per 64 bits whatever its size.

    A bank of more than ``LUTRAM_BITS`` (not bound to LUTRAM) takes BRAM18s in the aspect ratio that needs the fewest
    (``BRAM18_SHAPES``): a 16-bit bank of up to 1K words one, a 32-bit one of up to 512 words one, a 64-bit one
    of up to 512 words two (width counts, not only bits)."""
    depth = math.ceil(words / banks)
    if lutram or depth * bits <= LUTRAM_BITS:
        return 0, banks * math.ceil(depth * bits / 64)
    per_bank = min(math.ceil(depth / d) * math.ceil(bits / w) for d, w in BRAM18_SHAPES)
    return math.ceil(banks * per_bank / 2), 0


def _loop(trip: int, ii: int = 1, depth: int = DEPTH_IO, ddr: bool = True) -> int:
    """Cycles of one invocation of a pipelined loop (plus the m_axi latency if it touches DDR)."""
    if trip <= 0:
        return 0
    return trip * ii + depth + (AXI_LATENCY if ddr else 0)


def dispatch_cycles(axi_bits: int) -> int:
    """Cycles to fetch one descriptor (``len(FIELDS)`` 32-bit words over the 32-bit program port), decode it
    and enter the unit. ``axi_bits`` is the board's HP port width, which the program port does not use."""
    del axi_bits   # the program port is an int* m_axi: one 32-bit word per cycle whatever the board offers
    return len(FIELDS) + AXI_LATENCY + DISPATCH_CYCLES


def _beats(words: int, wpb: int) -> int:
    """Beats of a run of ``words`` consecutive words over a port of ``wpb`` words a beat: one more than the
    minimum unless the run is whole beats (a tile does not in general start on a beat)."""
    return math.ceil(words / wpb) + (1 if words % wpb else 0)


def layernorm_lanes(li: int, wpb: int) -> int:
    """Words a cycle of the layernorm passes (``LNL`` in ``config.h``): the largest power of two up to
    ``min(LI, WPB)``, so that it divides the beat. Tied to the linear unit's input lanes, whose search then
    weighs the layernorm's multipliers and cycles too."""
    n = 1
    while 2 * n <= min(li, wpb):
        n *= 2
    return n


def row_pass_beats(c: int, wpb: int) -> int:
    """Beats of each row's pass in the units that walk ``[M][C]`` rows in one loop (``row_pass_beats`` in
    ``packed.h``): ``C / WPB`` when rows are whole beats (arena tensors start on beats), else the most beats a
    run of ``C`` words can span."""
    return c // wpb if c % wpb == 0 else (c + wpb - 2) // wpb + 1


def layernorm_loops(m: int, c: int, li: int, wpb: int = 1) -> list[tuple]:
    """The pipelined loops layernorm_unit runs on ``[M][C]``, as ``(trip, depth)``: gamma and beta a word a cycle,
    then one loop of ``M + 1`` row slots (a row read while the previous one is normalised and written) of
    :func:`row_pass_beats` beats, ``LNL`` words a cycle."""
    slots = (m + 1) * row_pass_beats(c, wpb) * (wpb // layernorm_lanes(li, wpb))
    return [(c, DEPTH_IO)] * 2 + [(slots, DEPTH_EPILOGUE)]


def l2norm_loops(m: int, c: int, li: int, wpb: int = 1) -> list[tuple]:
    """The pipelined loops l2_normalize runs on ``[M][C]``, as ``(trip, depth)``: one loop of ``M + 1`` row slots
    (a row read while the previous one is written) of :func:`row_pass_beats` beats, ``LNL`` words a cycle."""
    return [((m + 1) * row_pass_beats(c, wpb) * (wpb // layernorm_lanes(li, wpb)), DEPTH_EPILOGUE)]


def additive_loops(t: int, d: int, li: int, wpb: int = 1) -> list[tuple]:
    """The pipelined loops additive_attention runs on ``[T][D]``, as ``(trip, depth)``: w_g's beats (a run that
    need not start on a beat), then three passes over the tokens' beats (scores, the global query, the outputs),
    ``LNL`` words a cycle."""
    passes = t * row_pass_beats(d, wpb) * (wpb // layernorm_lanes(li, wpb))
    return [(_beats(d, wpb), DEPTH_IO)] + [(passes, DEPTH_EPILOGUE)] * 3


def linear_loops(m: int, k: int, n: int, lanes: Lanes, bias: bool = True, residual: bool = False,
                 outer_w: bool | None = None, wpb: int = 1, aligned: bool = True,
                 overlap: bool | None = None, runs: bool | None = None) -> list[tuple]:
    """The pipelined loops linear_unit runs on an [M, K] x [K, N] layer, in order, as ``(trip, stall, depth,
    latencies, steps)``: iterations, extra cycles of iterations that read a port twice, pipeline depth, m_axi
    latencies waited, and MAC steps among the iterations. ``outer_w``: the descriptor's loop order (default: the
    one ``layer_table`` writes); ``wpb``: 16-bit words per port beat; ``aligned``: the output and residual start on a
    beat (``layer_table`` lays every tensor out on a 32-word boundary); ``overlap``: whether the write-back runs in
    the passes (default: when ``linear_overlaps`` in the C++ says so; tests force it to show what crediting absent
    overlap would count); ``runs``: whether a weight tile's passes are one loop (default: as ``linear_unit`` decides,
    with weight tiles outer, two input tiles and an overlapped write-back).

    It walks the (token tile, weight tile) jobs as ``linear_unit`` does. A job's pass (in ``linear_run``) runs its MAC
    steps and, in the same loop, the next token tile's load (with two input tiles) and the previous job's
    write-back when the layer overlaps (whole output beats: ``linear_overlaps``); its trip is the longest of the
    three, except that a write-back reading a residual follows the load's beats (one read a cycle). With weight tiles
    outer, two input tiles and an overlapped write-back, the passes of one weight tile are one loop (``linear_run``,
    one m_axi latency), each pass but the run's last at least ``DEPTH_MAC`` past its MAC steps and ``AXI_LATENCY +
    DEPTH_IO`` past its load's beats (the next pass reads what they wrote). A run (one pass when there are no runs)
    also prefetches the next weight tile and its biases over the params port (two weight tiles), the run lasting
    at least their beats. Everything else runs on its own: the first weight tile, the write-back of a layer that
    does not overlap, the token tiles of a design with one input tile, the weight tiles of a design with one
    (after the run before them), the last job's write-back.
    """
    if outer_w is None:
        outer_w = weights_outer(m, k, n, lanes.lo)
    if overlap is None:
        overlap = aligned and lanes.lo % wpb == 0 and n % wpb == 0
    fuse_load = lanes.xtiles == 2
    loops = []

    def tokens(m0: int) -> int:
        return min(TILE_TOKENS, m - m0)

    def w_beats(n0: int) -> list[int]:   # a weight tile's beats and its biases' (runs that need not start on a beat)
        c = min(lanes.lo, n - n0)
        return [_beats(c * k, wpb)] + ([_beats(4 * c, wpb)] if bias else [])

    def run(start: int, words: int) -> int:   # beats of a run of words from word start of an aligned tensor
        return (start % wpb + words - 1) // wpb + 1 if aligned else _beats(words, wpb)

    def load_x(m0: int) -> tuple:
        return (run(m0 * k, tokens(m0) * k), 0, DEPTH_IO, 1, 0)

    written = {}   # a tile's beats depend only on where its first row starts within a beat: most jobs repeat

    def write_back(m0: int, n0: int) -> None:   # a beat per cycle; a partly covered beat is read first
        c = min(lanes.lo, n - n0)
        key = ((m0 * n + n0) % wpb, tokens(m0), c, n0 % wpb)
        if key not in written:
            beats = [run((m0 + em) * n + n0, c) for em in range(tokens(m0))]
            whole = aligned and n % wpb == 0 and n0 % wpb == 0 and c % wpb == 0
            written[key] = (sum(beats), 0 if whole or not residual else sum(min(2, b) for b in beats))
        loops.append((*written[key], DEPTH_EPILOGUE, 2 if residual else 1, 0))

    jobs = math.ceil(m / TILE_TOKENS) * math.ceil(n / lanes.lo)
    if runs is None:
        runs = overlap and fuse_load and outer_w
    m0 = n0 = 0
    prev = None
    loops += [(b, 0, DEPTH_IO, 1, 0) for b in w_beats(0)]
    loops.append(load_x(0))
    passes = []   # the current run's passes: (trip, latencies, writes back, steps)
    for j in range(jobs):
        nm0, nn0 = m0, n0
        if outer_w:
            nm0 += TILE_TOKENS
            if nm0 >= m:
                nm0, nn0 = 0, nn0 + lanes.lo
        else:
            nn0 += lanes.lo
            if nn0 >= n:
                nn0, nm0 = 0, nm0 + TILE_TOKENS
        more = j + 1 < jobs
        new_x, new_w = more and nm0 != m0, more and nn0 != n0
        drain = runs and nn0 == n0 and more   # the run's next pass follows in the same loop
        steps = tokens(m0) * math.ceil(k / lanes.li)
        load = load_x(nm0)[0] if new_x and fuse_load else 0
        out = tokens(prev[0]) * (min(lanes.lo, n - prev[1]) // wpb) if overlap and prev else 0
        trip = max(steps, load + out) if residual else max(steps, load, out)
        if drain:
            trip = max(trip, steps + DEPTH_MAC, load + AXI_LATENCY + DEPTH_IO if load else 0)
        passes.append((trip, (1 if load or out else 0) + (1 if out and residual else 0), bool(out), steps))
        if not drain:
            # the next weight tile, prefetched during the run (two weight tiles): its last pass lasts until the
            # beats are in
            pre = sum(w_beats(nn0)) if new_w and lanes.wtiles == 2 else 0
            trips = sum(p[0] for p in passes)
            trips += max(0, pre - trips)
            loops.append((trips, 0, DEPTH_EPILOGUE if any(p[2] for p in passes) else DEPTH_MAC,
                          max([p[1] for p in passes] + [1 if pre else 0]), sum(p[3] for p in passes)))
            passes = []
            if not overlap:
                write_back(m0, n0)
            if new_x and not fuse_load:
                loops.append(load_x(nm0))
            if new_w and lanes.wtiles == 1:   # one weight tile: the next loads after the run
                loops += [(b, 0, DEPTH_IO, 1, 0) for b in w_beats(nn0)]
        prev = (m0, n0)
        m0, n0 = nm0, nn0
    if overlap:
        write_back(*prev)
    return loops


@functools.lru_cache(maxsize=65536)   # the lane search asks for the same layer shapes under each candidate plan
def _linear(m: int, k: int, n: int, lanes: Lanes, bias: bool = True, residual: bool = False,
            outer_w: bool | None = None, wpb: int = 1, aligned: bool = True) -> tuple[int, int]:
    """(compute, memory) cycles of linear_unit on an [M, K] x [K, N] layer (:func:`linear_loops`): ``compute`` the
    MAC steps of its passes and their pipeline fill, ``memory`` every other cycle (loads, write-back, and the
    part of a pass its load or write-back makes longer than its MAC steps)."""
    loops = linear_loops(m, k, n, lanes, bias, residual, outer_w, wpb, aligned)
    total = sum(trip + stall + depth + lat * AXI_LATENCY for trip, stall, depth, lat, _ in loops if trip > 0)
    compute = sum(steps + DEPTH_MAC for *_, steps in loops if steps > 0)
    return compute, total - compute


def linear_port_floor(prog: Program, axi_bits: int) -> int:
    """Cycles no lane plan or tiling of the linear unit gets its layers below on ports of ``axi_bits``: per linear
    layer the most of its output's beats (each word written once), its input's and residual's beats (read once, on
    the arena's one read channel) and its weights' beats (read once over the params port); the MAC steps are not
    counted. What more DSPs could buy the linear layers is their estimated cycles minus this."""
    wpb = axi_bits // WORD_BITS
    total = 0
    for layer in prog.layers:
        if layer.kind != "linear":
            continue
        shape = prog.shapes[layer.inputs[0]]
        m, k, n = int(np.prod(shape[:-1])), shape[-1], prog.shapes[layer.output][-1]
        reads = m * k + (m * n if len(layer.inputs) > 1 else 0)
        total += max(math.ceil(m * n / wpb), math.ceil(reads / wpb), math.ceil(n * k / wpb))
    return total


def qlinear_loops(m: int, k: int, n: int, lanes: Lanes, bias: bool = True, outer_w: bool | None = None,
                  wpb: int = 1) -> list[tuple]:
    """The pipelined loops qgemm_unit (``qlinear.h``) runs on an [M, K] x [K, N] int8 layer, in order, as ``(trip,
    ii, depth, ddr, steps)``: nothing overlaps. Per weight tile its beats and its biases' (a run that need not start
    on a beat), its ``LO`` requantisation records (``II = 4``); per job the token tile's beats, ``tm x ceil(K/LI)``
    MAC steps on chip, then ``tm x min(LO, N - n0)`` outputs a word a cycle through ``requantize_int8``."""
    if outer_w is None:
        outer_w = weights_outer(m, k, n, lanes.lo)
    loops = []

    def load_w(n0: int) -> None:
        c = min(lanes.lo, n - n0)
        loops.append((_beats(c * k, wpb), 1, DEPTH_IO, True, 0))
        if bias:
            loops.append((_beats(4 * c, wpb), 1, DEPTH_IO, True, 0))
        loops.append((lanes.lo, 4, DEPTH_IO, True, 0))

    def job(m0: int, n0: int) -> None:
        tm = min(TILE_TOKENS, m - m0)
        if outer_w or n0 == 0:
            loops.append(((m0 * k % wpb + tm * k - 1) // wpb + 1, 1, DEPTH_IO, True, 0))
        loops.append((tm * math.ceil(k / lanes.li), 1, DEPTH_MAC, False, tm * math.ceil(k / lanes.li)))
        loops.append((tm * min(lanes.lo, n - n0), 1, DEPTH_EPILOGUE, True, 0))

    tiles_m, tiles_n = range(0, m, TILE_TOKENS), range(0, n, lanes.lo)
    for outer in (tiles_n if outer_w else tiles_m):
        for inner in (tiles_m if outer_w else tiles_n):
            n0, m0 = (outer, inner) if outer_w else (inner, outer)
            if m0 == 0 or not outer_w:
                load_w(n0)
            job(m0, n0)
    return loops


@functools.lru_cache(maxsize=4096)
def _qlinear(m: int, k: int, n: int, lanes: Lanes, bias: bool = True, wpb: int = 1) -> tuple[int, int]:
    """(compute, memory) cycles of qgemm_unit (:func:`qlinear_loops`): ``compute`` its MAC loops, ``memory`` the
    rest."""
    loops = qlinear_loops(m, k, n, lanes, bias, wpb=wpb)
    total = sum(_loop(trip, ii, depth, ddr) for trip, ii, depth, ddr, _ in loops)
    compute = sum(_loop(trip, ii, depth, ddr) for trip, ii, depth, ddr, steps in loops if steps)
    return compute, total - compute


def depthwise_loops(h: int, w: int, c: int, k: int, s: int, pad: int, lanes: Lanes, bias: bool = True,
                    int8: bool = False, wpb: int = 1, overlap: bool | None = None) -> list[tuple]:
    """The pipelined loops depthwise_unit runs on an [H, W, C] map, in order, as ``(trip, ii, depth, steps)``
    (``steps``: output pixels among the iterations). ``overlap``: whether a row's reads and an output row share
    one loop (default: when ``depthwise_overlaps`` in the C++ says so, ``LD`` and ``C`` multiples of ``WPB``;
    ``layer_table`` puts every tensor on a beat).

    Per group of ``LD`` channels: its weights and biases a beat a cycle (a run that need not start on a beat:
    one beat more), for int8 the requantisation records (``LD`` at ``II = 4``), then the row passes of
    :func:`ops.depthwise_passes`. Overlapped, the passes are one loop, each pass ``max(W, WO)`` pixels at
    ``II = LD / WPB`` (a pixel's beats, reads and writes on their own AXI channels); otherwise each is a loop of
    ``W`` or ``WO`` pixels at the ``(LD + WPB - 2) // WPB + 1`` beats a pixel's words can span.
    """
    if overlap is None:
        overlap = lanes.ld % wpb == 0 and c % wpb == 0
    wo = (w + 2 * pad - k) // s + 1
    ii = lanes.ld // wpb if overlap else (lanes.ld + wpb - 2) // wpb + 1
    rows = [(max(w if rd else 0, wo if out else 0), ii, DEPTH_EPILOGUE if out else DEPTH_IO, wo if out else 0)
            for rd, out in depthwise_passes(h, k, s, pad, overlap)]
    if overlap:   # the passes are one loop
        rows = [(sum(r[0] for r in rows), ii, DEPTH_EPILOGUE, sum(r[3] for r in rows))]
    loops = []
    for c0 in range(0, c, lanes.ld):
        n = min(lanes.ld, c - c0)
        loops.append((_beats(n * k * k, wpb), 1, DEPTH_IO, 0))
        if bias:
            loops.append((_beats(4 * n, wpb), 1, DEPTH_IO, 0))
        if int8:
            loops.append((lanes.ld, 4, DEPTH_IO, 0))
        loops += rows
    return loops


@functools.lru_cache(maxsize=4096)
def _depthwise(h: int, w: int, c: int, k: int, s: int, pad: int, lanes: Lanes, bias: bool = True,
               int8: bool = False, wpb: int = 1) -> tuple[int, int]:
    """(compute, memory) cycles of depthwise_unit (:func:`depthwise_loops`): ``compute`` one cycle per output
    pixel of each channel group, ``memory`` every other cycle (weights, reads, a pixel's beats beyond one, the
    m_axi latency of every loop)."""
    loops = depthwise_loops(h, w, c, k, s, pad, lanes, bias, int8, wpb)
    total = sum(_loop(trip, ii, depth) for trip, ii, depth, _ in loops)
    compute = sum(steps for *_, steps in loops)
    return compute, total - compute


def attention_loops(n: int, dh: int, rows: int, wpb: int = 1, li: int = 1) -> list[tuple]:
    """The pipelined loops attention_unit runs per head, as ``(trip, depth, ddr)``: per token three runs of ``dh``
    words (q, k, v) a beat a cycle (:func:`row_pass_beats` beats each), the key steps on chip, the outputs
    ``LNL`` words a cycle when ``dh`` is whole beats (:func:`layernorm_lanes`), else a word a cycle."""
    out = n * dh // (layernorm_lanes(li, wpb) if dh % wpb == 0 else 1)
    return [(3 * n * row_pass_beats(dh, wpb), DEPTH_IO, True), ((n - 1) * math.ceil(n / rows) + n, DEPTH_ATTENTION,
                                                                False), (out, DEPTH_EPILOGUE, True)]


def _attention(g: int, n: int, heads: int, dh: int, lanes: Lanes, wpb: int = 1) -> tuple[int, int]:
    """(compute, memory) of attention_unit (:func:`attention_loops`): ``compute`` the key steps, ``memory`` the
    Q/K/V reads, the output writes and the step loop's fill."""
    (read, d_read, _), (steps, d_steps, _), (write, d_write, _) = attention_loops(n, dh, lanes.rows, wpb, lanes.li)
    return g * heads * steps, g * heads * (_loop(read, depth=d_read) + d_steps + _loop(write, depth=d_write))


def _moe_experts(n: int, dm: int, h: int, e: int, k: int, reorder: bool, lanes: Lanes,
                 wpb: int = 1) -> tuple[int, int]:
    """Cycles of moe_experts with the ``N k`` (patch, expert) pairs split evenly over ``min(E, N k)`` expert runs
    (reordering) or one run per pair; each run's fc1 and fc2 are linear-unit calls reading the expert's weights
    from DDR."""
    runs = [n * k // min(e, n * k)] * min(e, n * k) if reorder else [1] * (n * k)
    compute = memory = 0
    for cnt in runs:
        # moe.h: fc1 and fc2 weight tiles outer; scratch after y: gathered tokens [N][D], hidden [N][H], outputs
        for kk, nn, y in ((dm, h, 2 * n * dm), (h, dm, 2 * n * dm + n * h)):
            c, mem = _linear(cnt, kk, nn, lanes, outer_w=True, wpb=wpb, aligned=y % wpb == 0)
            compute, memory = compute + c, memory + mem
        memory += 2 * cnt * _loop(dm)   # gather and scatter rows
    memory += 2 * n * _loop(dm) + n * k * (2 + AXI_LATENCY)   # clear/requantise accumulators, route table
    return compute, memory


def units(axi_bits: int) -> SimpleNamespace:
    """The unit cycle models each registry entry's cost is written in (see ops.LayerKind), for ports of
    ``axi_bits``: the linear unit (and the MoE experts on it) moves a beat a cycle (``beats``: the beats of a
    run of words), the layernorm passes ``layernorm_lanes(LI)`` words of a beat, the depthwise unit a pixel's
    beats; the other units move one word
    a cycle whatever the width (their loops are written a word per iteration)."""
    wpb = axi_bits // WORD_BITS
    return SimpleNamespace(linear=functools.partial(_linear, wpb=wpb), depthwise=functools.partial(_depthwise, wpb=wpb),
                           qlinear=functools.partial(_qlinear, wpb=wpb),
                           attention=functools.partial(_attention, wpb=wpb), l2norm_loops=functools.partial(l2norm_loops, wpb=wpb),
                           layernorm_loops=functools.partial(layernorm_loops, wpb=wpb),
                           additive_loops=functools.partial(additive_loops, wpb=wpb),
                           row_pass_beats=functools.partial(row_pass_beats, wpb=wpb),
                           moe_experts=functools.partial(_moe_experts, wpb=wpb), loop=_loop,
                           beats=functools.partial(_beats, wpb=wpb), wpb=wpb,
                           layernorm_lanes=functools.partial(layernorm_lanes, wpb=wpb), axi_latency=AXI_LATENCY)


def ddr_bytes_per_cycle(fpga) -> float:
    """Bytes the board's DDR moves per kernel cycle (``ddr_gbps`` of ``targets/*.toml`` at ``clock_mhz``), reads
    and writes together: every m_axi port shares it."""
    return fpga.ddr_gbps * 1e3 / fpga.clock_mhz


def layer_cycles(prog: Program, lanes: Lanes, axi_bits: int, ddr_bytes: float = 0.0) -> list[dict]:
    """Cycles of every descriptor (one per layer): ``compute``, ``memory`` (see the module docstring), their
    sum plus dispatch in ``cycles``, and ``bound`` (``compute`` or ``memory``, whichever is larger, or ``ddr``).

    ``ddr_bytes``: the board's DDR bytes per cycle (:func:`ddr_bytes_per_cycle`; 0: no limit). A layer then takes
    at least its DDR traffic (``ddr_words``, ``ops.LayerKind.traffic``: all ports' reads and writes) over that
    bandwidth (``ddr_cycles``): ports that could together move more than the DDR delivers wait for it, and the
    wait is counted as ``memory`` (``bound`` ``ddr``)."""
    out, u = [], units(axi_bits)
    for layer in prog.layers:
        compute, memory, macs = KINDS[layer.kind].cost(u, layer, prog.shapes[layer.inputs[0]],
                                                       prog.shapes[layer.output], lanes)
        words = KINDS[layer.kind].traffic(prog, layer, lanes)
        ddr = math.ceil(words * WORD_BITS / 8 / ddr_bytes) if ddr_bytes else 0
        bound = "compute" if compute >= memory else "memory"
        if ddr > compute + memory:
            memory, bound = ddr - compute, "ddr"
        cycles = compute + memory + dispatch_cycles(axi_bits)
        out.append({"layer": layer.name, "kind": layer.kind, "source": layer.source, "macs": macs,
                    "compute": compute, "memory": memory, "cycles": cycles, "ddr_words": words,
                    "ddr_cycles": ddr, "bound": bound})
    return out


def resources(prog: Program, lanes: Lanes, family: str = "zynquplus", axi_bits: int = WORD_BITS) -> dict:
    """Estimated DSP, BRAM36 and LUT use of the units (and their on-chip arrays) the generated top reaches for the
    program (``ops.program_units``: exactly the units of its ops), with m_axi ports of ``axi_bits`` (the linear
    unit's tiles get ``max(LI, WPB)`` banks and its write-back ``WPB`` epilogues; the default, one word a beat, is
    the unpacked design)."""
    units = program_units(l.kind for l in prog.layers)
    bound = unit_bounds(prog)
    mul16 = dsp_per_multiply(_WORD, _WORD, family)
    epi = _epilogue_dsp(family)
    usage = {"dsp": 0, "bram36": 0, "lut": 15000}

    def add(dsp: int = 0, lut: int = 0, arrays=()):
        usage["dsp"] += dsp
        usage["lut"] += lut
        for arr in arrays:
            b, l = _memory(*arr)
            usage["bram36"] += b
            usage["lut"] += l

    kmax, tm = bound["KMAX"], bound["TM"]
    wpb = axi_bits // WORD_BITS
    banks = max(lanes.li, wpb)
    # per write-back lane: an LO:1 mux of 64-bit sums (16 LO LUT6), the residual/merge lane selects; per load
    # lane a write to any of the tile's banks
    # weight rows in pairs, each bank a 32-bit word of two rows, the WTILES weight tiles (with two: one in use, the
    # next prefetched) in the same banks; input and result tiles ping-pong pairs, the result tiles' TM-deep banks in
    # LUTRAM (linear.h)
    pairs = math.ceil(lanes.lo / 2)
    if "linear_unit" in units:
        add(lanes.li * lanes.lo * mul16 + wpb * epi, 40 * lanes.li * lanes.lo + 350 + wpb * (16 * lanes.lo + 200),
            [(lanes.xtiles * tm * kmax, lanes.xtiles * banks), (lanes.wtiles * pairs * kmax, pairs * banks, 2 * WORD_BITS),
             (2 * tm * lanes.lo, 2 * lanes.lo, 64, True)])
    requant = dsp_per_multiply(_RQ_ACC, _RQ_M0, family)   # requantize_int8 (requant.h): round_float32(acc) * m0
    # the depthwise unit, float (dwconv) and int8 (qdwconv: depthwise_unit<CFG, true>, a second instance with its
    # own line buffer and weights) each with LD epilogues
    for unit, epilogue, epilogue_lut in (("depthwise_unit<0>", epi, 350), ("depthwise_unit<1>", requant, _RQ_LUT)):
        if unit in units:
            k = bound["KMAXDW"]
            add(lanes.ld * (k * k * mul16 + epilogue), 40 * lanes.ld * k * k + epilogue_lut * lanes.ld,
                [((k + 1) * bound["WMAX"] * lanes.ld, (k + 1) * k * lanes.ld)])
            usage["lut"] += lanes.ld * k * k * WORD_BITS // 2   # the weights of LD channels in registers
    if "qgemm_unit" in units:   # qgemm_unit (qlinear.h): its own input tile (one copy), weight tile (rows in pairs)
        # and result tile (LO banks of TM 64-bit sums), LI x LO MACs, one output a cycle through requantize_int8
        add(lanes.li * lanes.lo * mul16 + requant, 40 * lanes.li * lanes.lo + _RQ_LUT,
            [(tm * kmax, banks), (pairs * kmax, pairs * banks, 2 * WORD_BITS), (tm * lanes.lo, lanes.lo, 64)])
    if "qadd" in units:   # a MA + b MB, a word every two cycles (MA, MB < 2^30)
        add(2 * dsp_per_multiply(_WORD, 31, family), 300)
    if "qavgpool" in units:   # one requantisation a channel
        add(requant, _RQ_LUT)
    if "qtable" in units:   # the 512-entry table on chip
        add(0, 100, [(512, 1)])
    if "concat" in units:   # WPB requantisers (shift, round, saturate) in its beat path
        add(0, 150 * wpb)
    if "attention_unit" in units:
        dh = bound["DHMAX"]
        per_row = dh * (mul16 + dsp_per_multiply(_EXP, _WORD, family) + dsp_per_multiply(_OACC, _EXP, family)) \
            + dsp_per_multiply(26, _EXP, family)
        norm = layernorm_lanes(lanes.li, wpb) * dsp_per_multiply(_OACC, _TABLE, family)   # LNL words out a cycle
        nmax, qmax = bound["NMAX"], math.ceil(bound["NMAX"] / lanes.rows)
        add(lanes.rows * per_row + norm, lanes.rows * (900 + 40 * 2 * dh),
            [(lanes.rows * nmax * dh, lanes.rows * dh)] * 2 + [(lanes.rows * qmax * dh, lanes.rows * dh),
                                                              (nmax * dh, dh, 64), (nmax, 1, 64)])
    if "l2_normalize" in units:   # per LNL lane x^2 and x * rsqrt; two row copies (ping-pong) in WPB banks each
        lnl = layernorm_lanes(lanes.li, wpb)
        add(lnl * (mul16 + dsp_per_multiply(_WORD, _TABLE, family)), 400 * lnl, [(2 * bound["L2MAX"], 2 * wpb)])
    if "additive_attention" in units:   # per LNL lane qn * w_g, an * qn (an <= 1, NORM_FRAC bits), g * kn; the
        lnl = layernorm_lanes(lanes.li, wpb)   # scores, g and w_g on chip (g and w_g in WPB banks)
        add(lnl * (mul16 + dsp_per_multiply(_NORM + 2, _WORD, family) + dsp_per_multiply(_OACC, _WORD, family)),
            400 * lnl, [(bound["TMAX"], 1, 64), (bound["DMAX"], wpb, 64), (bound["DMAX"], wpb)])
    if units & {"l2_normalize", "additive_attention"}:   # rsqrt interpolation, a_t^2, a_t * rsqrt
        add(4 * dsp_per_multiply(_ACT, _TABLE, family), 800)
    if "moe_experts" in units:   # 64-bit accumulators, per-expert queues and the work list; scatter multiply
        mn, e = bound["MNMAX"], bound["EMAX"]
        add(dsp_per_multiply(_WORD, _WORD, family), 2000,
            [(mn * bound["MDMAX"], 1, 64), (e * mn, 1, 32), (e * mn, 1, 64), (3 * e * mn, 1, 32)])
    if "pool_mixer" in units:   # per LNL lane sum * reciprocal, scale * mean; a pixel's window sums, centre, scale
        lnl = layernorm_lanes(lanes.li, wpb)
        add(lnl * (dsp_per_multiply(_ACT, 26, family) + dsp_per_multiply(_WORD, 50, family)), 600 * lnl,
            [(bound["PCMAX"], wpb, 64)] * 2 + [(bound["PCMAX"], wpb)])
    if "moe_route" in units:
        add(2 * dsp_per_multiply(_ACT, _TABLE, family), 500)
    if "layernorm_unit" in units:   # per LNL lane x^2, (C x - S1) * rsqrt, gamma * xhat; two rows, gamma, beta in WPB
        lnl = layernorm_lanes(lanes.li, wpb)   # banks
        add(lnl * (mul16 + dsp_per_multiply(_ACT, _TABLE, family) + dsp_per_multiply(_WORD, 34, family)),
            400 * lnl, [(2 * bound["CMAX"], 2 * wpb)] + [(bound["CMAX"], wpb)] * 2)
    if "global_norm" in units:   # per LNL lane dx^2 and dx * rsqrt; the mean and variance by 2^32 / n once
        lnl = layernorm_lanes(lanes.li, wpb)
        add(lnl * (dsp_per_multiply(21, 21, family) + dsp_per_multiply(21, _TABLE, family))
            + 2 * dsp_per_multiply(_ACT, 33, family), 400 * lnl + 1500)
    if "separable_attention" in units:   # exp, context * reciprocal; per LNL lane e * k and v * context;
        lnl = layernorm_lanes(lanes.li, wpb)   # e[N], the key sums and the context (twice) in LNL banks
        sd = bound["SDMAX"]
        add(dsp_per_multiply(_ACT, _TABLE, family) + dsp_per_multiply(_OACC, _TABLE, family)
            + lnl * (dsp_per_multiply(_EXP, _WORD, family) + dsp_per_multiply(_WORD, 24, family)), 1500 + 400 * lnl,
            [(bound["SNMAX"], 1, 64), (2 * sd + wpb, lnl, 64), (2 * sd, lnl, 64)])
    return usage


def fits(res: dict, fpga) -> bool:
    return all(res[k] <= UTIL_LIMIT * getattr(fpga, k) for k in ("dsp", "bram36", "lut"))


# Lane counts the search tries. Powers of two up to 8, then steps of a quarter to a half of the value: doubling
# alone overshoots the DSP budget (mobilevit_xxs on the ZCU102: LI x LO = 16 x 64 leaves 260 of the 2,016 DSPs
# allowed unused, 16 x 128 needs 2,800). Nothing in the C++ needs powers of two (tests run LI 3, LO 5, LD 3).
LANE_SPACE = {"li": (1, 2, 4, 8, 12, 16, 24, 32),
              "lo": (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256),
              "ld": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64), "rows": (1, 2, 4, 8, 16), "xtiles": (1, 2),
              "wtiles": (1, 2)}


# Kinds whose cycles depend on LI (and LO): the linear unit and the units whose words a cycle are LNL.
LI_KINDS = frozenset({"linear", "qlinear", "moe_experts", "layernorm", "l2norm", "additive", "pool_mixer",
                      "global_norm", "separable_attention"})


def choose_lanes(prog: Program, fpga) -> Lanes:
    """The lane plan with the lowest estimated latency that fits ``fpga`` (the fewest DSPs among plans within
    ``LATENCY_TOLERANCE`` of it); the smallest design if none fits.

    The units' cycles are independent of each other's lanes, so each unit's lanes are scored on its own layers
    and only the combinations are checked against the budget.
    """
    family, ddr = fpga.family, ddr_bytes_per_cycle(fpga)
    kinds = {l.kind for l in prog.layers}
    base = Lanes(1, 1, 1, 1)
    plans = []
    for values in itertools.product(*LANE_SPACE.values()):
        lanes = Lanes(**dict(zip(LANE_SPACE, values)))
        if (lanes.ld > 1 and not kinds & {"dwconv", "qdwconv"}) or (lanes.rows > 1 and "attention" not in kinds):
            continue
        plans.append(lanes)
    per_unit = {}

    def unit_cycles(key: tuple, lanes: Lanes, select) -> int:
        if key not in per_unit:
            per_unit[key] = sum(r["cycles"] for r, l in zip(layer_cycles(prog, lanes, fpga.axi_bits, ddr), prog.layers)
                                if select(l.kind))
        return per_unit[key]

    laned = LI_KINDS | {"dwconv", "qdwconv", "attention"}
    rest = unit_cycles(("rest",), base, lambda kind: kind not in laned)   # layers no lane changes
    scored = []
    for lanes in plans:
        res = resources(prog, lanes, family, fpga.axi_bits)
        if not fits(res, fpga):
            continue
        cycles = (rest + unit_cycles(("li", lanes.li, lanes.lo, lanes.xtiles, lanes.wtiles),
                                     Lanes(lanes.li, lanes.lo, 1, 1, lanes.xtiles, lanes.wtiles),
                                     LI_KINDS.__contains__)
                  + unit_cycles(("ld", lanes.ld), Lanes(1, 1, lanes.ld, 1), {"dwconv", "qdwconv"}.__contains__)
                  + unit_cycles(("rows", lanes.rows, lanes.li), Lanes(lanes.li, 1, 1, lanes.rows),
                                "attention".__eq__))
        scored.append((cycles, res["dsp"], lanes))
    if not scored:
        return base
    best = min(c for c, _, _ in scored)
    return min((dsp, c, (l.li, l.lo, l.ld, l.rows, l.xtiles, l.wtiles)) + (l,) for c, dsp, l in scored
               if c <= best * (1 + LATENCY_TOLERANCE))[-1]


def apply_lanes(prog: Program, lanes: Lanes) -> None:
    """Write the lane choice into the layers' compile-time attributes (it does not change the numerics)."""
    for layer in prog.layers:
        if layer.kind in ("linear", "qlinear"):
            layer.attrs.update(li=lanes.li, lo=lanes.lo, xtiles=lanes.xtiles, wtiles=lanes.wtiles)
        elif layer.kind in ("dwconv", "qdwconv"):
            layer.attrs.update(ld=lanes.ld)
        elif layer.kind == "attention":
            layer.attrs.update(rows=lanes.rows)


def lanes_of(prog: Program) -> Lanes:
    get = lambda kinds, key, default=1: next((l.attrs[key] for l in prog.layers  # noqa: E731
                                              if l.kind in kinds and key in l.attrs), default)
    linear, depthwise = ("linear", "qlinear"), ("dwconv", "qdwconv")
    return Lanes(get(linear, "li"), get(linear, "lo"), get(depthwise, "ld"), get(("attention",), "rows"),
                 get(linear, "xtiles", 2), get(linear, "wtiles", 2))


def report(prog: Program, fpga) -> dict:
    """Per-layer cycles (with compute / memory parts and the bound), totals, resource use against ``fpga`` and
    whether it fits. ``latency_ms``, ``cycles``, ``clock_mhz`` and ``fits`` keep their meaning for callers such
    as the PYNQ bundle; ``memory_bound_share`` is the fraction of cycles in memory-bound layers (ports or DDR),
    ``ddr_bound_share`` of those bound by the DDR bandwidth, ``ddr_cycles`` the sum of the layers' DDR floors."""
    lanes = lanes_of(prog)
    layers = layer_cycles(prog, lanes, fpga.axi_bits, ddr_bytes_per_cycle(fpga))
    res = resources(prog, lanes, fpga.family, fpga.axi_bits)
    total = sum(r["cycles"] for r in layers)
    for r in layers:
        r["ms"] = r["cycles"] / (fpga.clock_mhz * 1e3)
    macs = sum(r["macs"] for r in layers)
    peak = lanes.li * lanes.lo
    return {"lanes": lanes.__dict__, "layers": layers, "resources": res,
            "available": {k: getattr(fpga, k) for k in ("dsp", "bram36", "lut")},
            "fits": fits(res, fpga), "cycles": total, "clock_mhz": fpga.clock_mhz,
            "latency_ms": total / (fpga.clock_mhz * 1e3), "macs": macs,
            "compute_cycles": sum(r["compute"] for r in layers),
            "memory_bound_share": sum(r["cycles"] for r in layers if r["bound"] != "compute") / total if total else 0.0,
            "ddr_gbps": fpga.ddr_gbps, "ddr_cycles": sum(r["ddr_cycles"] for r in layers),
            "ddr_bound_share": sum(r["cycles"] for r in layers if r["bound"] == "ddr") / total if total else 0.0,
            "linear_mac_efficiency": (sum(r["macs"] for r in layers if r["kind"] == "linear")
                                      / (peak * sum(r["cycles"] for r in layers if r["kind"] == "linear") or 1))}


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
