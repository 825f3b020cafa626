"""Fused attention (``edgevit.backends.attention``): one block of query rows at a time, scores kept in L1.

Per block of ``rows`` queries: the scores ``rows x N`` are register-tiled like a matmul (rows unrolled, keys
vectorised, the head dimension as reduction), then the row maxima, ``fast_exp`` and row sums are vectorised
over the keys, then ``exp @ v`` is register-tiled (rows unrolled, output channels vectorised, keys as
reduction) and divided by the row sums on the way out. Batches x row blocks run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.s_tir import Schedule

from ..attention import BLOCKS
from .common import CpuInfo, extent_of, largest_divisor, root_blocks, vector_tile
from .row_reduction import vector_rfactor
from .tiled_reduction import broadcast_by_lane


@dataclass(frozen=True)
class Knobs:
    """Query rows per block (at most; also bounded by the accumulator registers). ``edgevit tune`` measures
    :data:`SPACE`."""

    rows: int = 16


SPACE = [Knobs(2), Knobs(4), Knobs(8)]

#: Vectors of scores per step of the exp loop.
EXP_VECTORS = 4


def apply(func: tirx.PrimFunc, target, knobs: Knobs = Knobs()) -> Schedule | None:
    """Schedule the fused attention kernel; None for any other function."""
    info = CpuInfo.of(target)
    sch = Schedule(func)
    if {sch.get(b).name_hint for b in root_blocks(sch)} != set(BLOCKS):
        return None
    sch.compute_inline(sch.get_sblock("attn_delta"))
    norm = sch.get_sblock("attn_norm")
    *lead, m_loop, c_loop = sch.get_loops(norm)
    m, c = extent_of(sch, m_loop), extent_of(sch, c_loop)
    c_vec = vector_tile(c, info.lanes, 2 * info.lanes)
    c_regs = max(1, -(-c_vec // info.lanes))
    budget = (info.registers * 3 // 4) // c_regs
    if info.lane_fma:
        # Each row's register-sized copy of its query / probabilities (broadcast_by_lane) is a register too:
        # 16 rows x 1 vector took 16 + 16 + 1 of the 32, and LLVM spilled the copies and re-read them lane by
        # lane (mobilevit_s, head dimension 36: 8.3 M ``ldr s``/``ldp s`` per inference).
        budget = min(budget, (info.registers - c_regs) // (c_regs + 1))
    rows = largest_divisor(m, max(1, min(knobs.rows, budget)))
    mo, mi = sch.split(m_loop, [None, rows])
    batch = sch.fuse(*lead, mo) if lead else mo
    if info.cores != 1:
        sch.parallel(batch)
    partials = [vector_rfactor(sch, sch.get_sblock(name), info) for name in ("attn_max", "attn_sum")]
    for partial in filter(None, partials):
        # rfactor puts the lane axis first; a block of rows needs it last to stay a contiguous vector.
        block = sch.get_sblock(partial)
        ndim = len(sch.get(block).writes[0].source.shape)
        sch.transform_layout(block, ("write", 0), tirx.IndexMap.from_func(lambda lane, *row: [*row, lane],
                                                                           ndim=ndim))
    for block in reversed(root_blocks(sch)[:-1]):  # every block but the output, consumers first
        sch.compute_at(block, batch, preserve_unit_loops=True)  # a 1-row block keeps its row loop
    _register_tile(sch, "attn_score", info, info.lanes)
    for partial in filter(None, partials):
        # compute_at regenerated the loops in block-iter order (lane, row, reduction): lanes go innermost.
        block = sch.get_sblock(partial)
        loops = sch.get_loops(block)
        lane, row, red = loops[1], loops[-2], loops[-1]
        sch.reorder(row, red, lane)
        sch.vectorize(lane)
        sch.decompose_reduction(block, red)
    inner = sch.fuse(*sch.get_loops(sch.get_sblock("T_fast_exp"))[-2:])  # rows x keys
    n = extent_of(sch, inner)
    width = vector_tile(n, info.lanes, info.lanes)
    # LLVM re-materialises fast_exp's 11 constants inside the loop (AArch64: mov/movk/dup, 3 instructions
    # each) instead of hoisting them: unrolled over EXP_VECTORS vectors, each costs that once per 4 vectors.
    _, unrolled, lanes = sch.split(inner, [None, largest_divisor(n // width, EXP_VECTORS), width])
    sch.unroll(unrolled)
    sch.vectorize(lanes)
    _register_tile(sch, "attn_out", info, 2 * info.lanes)
    sch.vectorize(sch.split(sch.get_loops(norm)[-1], [None, c_vec])[1])
    return sch


def _register_tile(sch: Schedule, name: str, info: CpuInfo, width: int) -> None:
    """(rows, cols, k) under the batch loop -> cols_o, k, rows (unrolled), cols_i (vectorised, ≤ width); on
    cores with FMA by lane the query rows / probabilities are loaded a vector of ``k`` at a time."""
    block = sch.get_sblock(name)
    rows, cols, k = sch.get_loops(block)[-3:]
    n = extent_of(sch, cols)
    co, ci = sch.split(cols, [None, vector_tile(n, info.lanes, width)])
    sch.reorder(co, k, rows, ci)
    sch.unroll(rows)
    sch.vectorize(ci)
    if info.lane_fma:
        stmt = sch.get(block)
        row_var, col_var = (iv.var.name for iv in stmt.iter_vars[-3:-1])
        k = broadcast_by_lane(sch, block, row_var, col_var, extent_of(sch, rows), 2, k, info)
    sch.decompose_reduction(block, k)
