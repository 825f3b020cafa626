"""Register-tiled multiply-accumulate: convolutions (dense, 1x1, depthwise/grouped), dense, (batch) matmul.

The output is computed in tiles of ``block`` x ``vector`` elements held in vector registers: the innermost
output axis is vectorised (``vector`` = 1-4 registers wide), and a second output axis that the vector-loaded
operand does not depend on (a conv's output channels, a matmul's rows) is unrolled ``block`` times, so each
vector load feeds ``block`` FMAs. The tile sizes are chosen together for the most accumulators that fit the
target's registers. The reduction loops sit outside the tile; the epilogue (bias, activation, residual add) is
computed per tile, straight from the registers. A long reduction over a weight panel is split in chunks that
stay in L1 while every tile of the panel uses them; the epilogue then runs per panel. An input panel whose rows
(channels) would evict each other in L1 is first copied to a contiguous buffer, once per row of tiles; a
depthwise conv's padded input is made one channel at a time, while the conv reads it from L1. The model's
weights that a tile reads along a tiled axis are stored in panels of that tile, re-laid out once at compile time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.ir.expr import Expr, TensorLoad
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError
from tvm.sym.analyzer import Analyzer

from .common import (LAYOUT_FREE, CpuInfo, extent, extent_of, inline_injective, is_reduction, largest_divisor,
                     parallel_share, root_blocks, run_in_parallel, schedule_elementwise, splits_evenly, vars_in,
                     vars_in_range, vector_tile)


@dataclass(frozen=True)
class Knobs:
    """The rule's tile choices. The defaults are what ``edgevit compile`` uses; ``edgevit tune`` measures
    the others (:data:`SPACE`) per kernel."""

    vector: int = 32          # vector tile, in floats (at most): 2 AVX-512 registers, 4 AVX2, 8 NEON
    block: int = 16           # block-axis unroll (at most; also bounded by the accumulator registers)
    block_innermost: bool = True  # block axis's outer loop innermost among the tile loops (panel reuse)
    reduction: int = 64       # chunk (at most) of a reduction longer than LONG_REDUCTION; 0 = never chunk
    pack: bool = True         # copy the input panel a row of tiles reads into a contiguous buffer first


#: Reductions longer than this are chunked when the vector operand is a weight panel (packed conv weights, a
#: matmul's constant right-hand side): a tile reads one cache line per reduction step from each operand, and
#: beyond ~128 steps the weight panel and the input lines no longer share a 32 KB L1. Measured on Zen 3: 1x1
#: convs on 14x14 and 7x7 maps 17 % (224 long) to 2x (1792 long) faster in chunks of 56-64; where the vector
#: operand is the input (rows of a 56x56 map) chunking made a 192-long conv 20-60 % slower, so it is not done.
LONG_REDUCTION = 128


SPACE = [Knobs(v, b, o) for v in (16, 32, 64) for b in (4, 8, 16) for o in (True, False)] + \
    [Knobs(reduction=0), Knobs(reduction=128), Knobs(pack=False)]


def _mac_block(sch: Schedule):
    """The single multiply-accumulate reduction block of the function, or None."""
    found = []
    for block in root_blocks(sch):
        stmt = sch.get(block)
        if is_reduction(stmt) and len(stmt.reads) >= 2 and isinstance(stmt.body, tirx.BufferStore) \
                and isinstance(stmt.body.value, tirx.Add) and isinstance(stmt.body.value.b, tirx.Mul):
            found.append(block)
    return found[0] if len(found) == 1 else None


def _choose_axes(stmt: tirx.SBlock, lanes: int):
    """(vector axis index, block axis index or None) among the block's iteration variables.

    The vector axis is the output's innermost axis when its extent has a lane-multiple tile, else an output
    axis along which some operand is contiguous (e.g. the output channel of IHWO-packed weights).
    """
    spatial = [i for i, iv in enumerate(stmt.iter_vars) if iv.iter_type == tirx.IterVar.DataPar]
    out_vars = vars_in(stmt.writes[0])
    reads = [r for r in stmt.reads if not r.source.same_as(stmt.writes[0].source)]
    usable = [i for i in spatial if stmt.iter_vars[i].var.name in out_vars and (extent(stmt.iter_vars[i]) or 0) > 1]
    if not usable:
        return None, None
    vec = usable[-1]

    def tile(i):
        return vector_tile(extent(stmt.iter_vars[i]), lanes, 2 * lanes)

    if tile(vec) < lanes:
        contiguous = [i for i in usable if tile(i) > tile(vec) and
                      any(str(r.region[-1].min) == stmt.iter_vars[i].var.name for r in reads)]
        if contiguous:
            vec = max(reversed(contiguous), key=tile)
    vec_name = stmt.iter_vars[vec].var.name
    vector_operands = [r for r in reads if vec_name in vars_in(r)]
    candidates = [i for i in spatial if i != vec and (extent(stmt.iter_vars[i]) or 0) > 1]
    reusing = [i for i in candidates if all(stmt.iter_vars[i].var.name not in vars_in(r) for r in vector_operands)]
    pool = reusing or candidates
    return vec, (pool[-1] if pool else None)


def apply(func: tirx.PrimFunc, target, knobs: Knobs = Knobs()) -> Schedule | None:
    """Schedule a function with one multiply-accumulate reduction, or return None if it has none."""
    info = CpuInfo.of(target)
    sch = Schedule(func)
    main = _mac_block(sch)
    if main is None:
        return None
    stmt = sch.get(main)
    loops = sch.get_loops(main)
    if len(loops) != len(stmt.iter_vars) or any(extent(iv) is None for iv in stmt.iter_vars):
        return None
    vec, blk = _choose_axes(stmt, info.lanes)
    if vec is None:
        return None
    main_name = stmt.name_hint
    main = _inline_around(sch, func, main_name)
    if _flatten_pixels(sch, main, info):
        main = sch.get_sblock(main_name)
        vec, blk = _choose_axes(sch.get(main), info.lanes)
    if blk is not None and _pad_axes(sch, main, vec, blk, info, knobs):
        main = sch.get_sblock(main_name)
    for consumer in sch.get_consumers(main):
        width = _unflattening_width(sch.get(consumer), sch.get(main).writes[0].source)
        if width:
            _iterate_over_pixels(sch, consumer, width)
    stmt = sch.get(main)
    loops = list(sch.get_loops(main))
    vec_tile, blk_tile = register_tile(extent(stmt.iter_vars[vec]),
                                       extent(stmt.iter_vars[blk]) if blk is not None else 1, info, knobs)
    spatial = [i for i, iv in enumerate(stmt.iter_vars) if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [i for i, iv in enumerate(stmt.iter_vars) if iv.iter_type != tirx.IterVar.DataPar]
    vo, vi = sch.split(loops[vec], [None, vec_tile])
    outer = {vec: vo}
    inner = [vi]
    if blk is not None:
        bo, bi = sch.split(loops[blk], [None, blk_tile])
        outer[blk] = bo
        inner.insert(0, bi)
    # The block axis's outer loop goes innermost among the tile loops: the vector operand's panel (a conv's
    # input rows, a matmul's right-hand columns) is then reused from cache by every block of rows/channels.
    order = [i for i in spatial if i != blk] + ([blk] if blk is not None else [])
    if blk is not None and not knobs.block_innermost:
        order = [i for i in spatial if i != vec] + [vec]
    panel_epilogue = blk is not None and _half_vector_rows(stmt, vec_tile, reduce, info)
    if panel_epilogue:
        # The tiles of a row of tiles one after the other, then the epilogue over those whole rows.
        order = [i for i in spatial if i != vec] + [vec]
    spatial_outer = [outer.get(i, loops[i]) for i in order]
    sch.reorder(*spatial_outer, *[loops[i] for i in reduce], *inner)
    sch.vectorize(vi)
    if blk is not None:
        sch.unroll(inner[0])
    # The epilogue runs per tile from the accumulators, or, when the reduction is chunked, per panel.
    depth, first_reduce = len(spatial_outer) - (1 if panel_epilogue else 0), loops[reduce[0]]
    length = extent(stmt.iter_vars[reduce[0]])
    # On lane-FMA targets a whole number of vectors: broadcast_by_lane loads a matmul's rows a vector per
    # ``lanes`` steps of the chunk (220 in chunks of 55 loaded each value alone: a ``ldr s`` per FMA).
    chunk = largest_divisor(length, knobs.reduction, info.lanes if info.lane_fma else 1) \
        if knobs.reduction and length > LONG_REDUCTION and _weight_panel(stmt, vec) else 0
    panel = order.index(vec) + 1
    if chunk and panel < len(order):
        # A long reduction streams both operand panels through L2 for every tile; chunked, the vector
        # operand's chunk (e.g. kc x 8 weights) stays in L1 for all the tiles inside the vector axis's loop.
        first_reduce, _ = sch.split(first_reduce, [None, chunk])
        panel = _even_panels(sch, spatial_outer, order, panel, info)
        sch.reorder(first_reduce, *spatial_outer[panel:])
        depth = panel
    inside = {order[j] for j in range(depth, len(order))
              if extent_of(sch, spatial_outer[j]) > 1} | {vec} | ({blk} if blk is not None and blk_tile > 1 else set())
    out_dims = [str(r.min) for r in stmt.writes[0].region]
    vec_dim = out_dims.index(stmt.iter_vars[vec].var.name)
    tiled_dims = [d for d, name in enumerate(out_dims) if any(name == stmt.iter_vars[i].var.name for i in inside)]
    per_tile = depth == len(spatial_outer)  # (else per panel, from memory)
    _place_epilogue(sch, main, spatial_outer[depth - 1], depth, tiled_dims, vec_dim,
                    -(-vec_tile // info.lanes) * blk_tile if per_tile else 0, info)
    # On AArch64 a "global" accumulator (a stack array up to 1 KB; see broadcast_by_lane): a "local" one costs
    # a TVMBackendAllocWorkspace call per tile.
    sch.set_scope(main, 0, "global" if info.lane_fma else "local")
    if vec_dim != len(out_dims) - 1:
        # Accumulators contiguous along the vector axis, so they live in vector registers.
        dims = [d for d in range(len(out_dims)) if d != vec_dim] + [vec_dim]
        sch.transform_layout(main, ("write", 0), tirx.IndexMap.from_func(
            lambda *idx: [idx[d] for d in dims], ndim=len(out_dims)))
    prologue = [sch.get(b).name_hint for b in root_blocks(sch)][:_index(sch, main_name)]
    if knobs.pack and blk is not None and knobs.block_innermost and depth == len(spatial_outer) > 1:
        _pack_panel(sch, main, vec, blk, spatial_outer, info)
    sliced = _parallelise(sch, prologue, stmt, order, depth, spatial_outer, first_reduce, info)
    # On lane-FMA targets also along the block axis: its values are then loaded a vector at a time
    # (broadcast_by_lane's strided case).
    strided = [vec] + ([blk] if info.lane_fma and blk is not None else [])
    strides = {name: _deinterleave_strided(sch, sch.get_sblock(name), stmt, strided) for name in prologue}
    tiles = {stmt.iter_vars[vec].var.name: vec_tile}
    if blk is not None:
        tiles[stmt.iter_vars[blk].var.name] = blk_tile
    _prepack_weights(sch, main, func, tiles)
    if info.lane_fma and blk is not None:
        stmt = sch.get(main)
        first_reduce = broadcast_by_lane(sch, main, stmt.iter_vars[blk].var.name, stmt.iter_vars[vec].var.name,
                                         blk_tile, len(inner), first_reduce, info)
    sch.decompose_reduction(main, first_reduce)
    for name in prologue:
        if strides[name]:
            _copy_deinterleaved(sch, sch.get_sblock(name), strides[name], info, parallel=name not in sliced)
        else:
            schedule_elementwise(sch, sch.get_sblock(name), info, parallel=name not in sliced)
    return sch


#: Annotation of the register-sized copy :func:`broadcast_by_lane` makes of a broadcast operand.
LANE_OPERAND = "edgevit.lane_operand"


def broadcast_by_lane(sch: Schedule, main, blk_name: str, vec_name: str, blk_tile: int, n_inner: int,
                      first_reduce, info: CpuInfo):
    """On cores with FMA by lane (AArch64), load the broadcast operand of the register tile a vector at a time,
    and unroll the innermost reduction loop by a vector's lanes.

    Left to LLVM, each value the unrolled block axis multiplies the vector operand by is a scalar load
    (``ldr s``/``ld1r``) per FMA row. Copied into a register-sized buffer with a vector load, AArch64's
    ``fmla v.4s, v.4s, v.s[i]`` uses its lanes in place, as XNNPACK's micro-kernels do. Two layouts qualify:

    - contiguous along the block axis (packed weights ``[f // tile, ..., f % tile]``, an input row along ``x``):
      one load per ``lanes`` rows, per reduction step;
    - contiguous along the innermost reduction axis (a matmul's left operand ``x[i, k]``): one load per row
      every ``lanes`` reduction steps, the steps unrolled.

    Failing both, an operand constant over the tile (a depthwise conv's weights) is loaded once per tile
    (:func:`_lane_tile_constant`).

    Unrolling the reduction by ``lanes`` also spreads the loop's own instructions (counter, compare, branch,
    address arithmetic: 5-6 per step) over 4 steps. Executed instructions (qemu, Cortex-A72), with the register
    tile chosen for it (``register_tile``): a 64->128 1x1 conv on 28x28 3.16 -> 2.53 M, a 32->64 3x3 conv on
    32x32 9.07 -> 6.26 M, a 196x128 @ 128x256 matmul 3.01 -> 2.45 M; mobilevit_xxs 273.6 -> 251.8 M. The
    step is the innermost reduction loop longer than 1 (a 1x1 conv's channels: 48->192 on 56x56 + GELU
    16.38 -> 15.23 M).

    ``main``'s loops end with the reduction step's loop and then the ``n_inner`` tile loops; ``blk_name`` and
    ``vec_name`` are the block's iteration variables of the unrolled and the vectorised axis. Returns the
    outermost reduction loop (``first_reduce``, or what replaced it if it was the one split).
    """
    stmt = sch.get(main)
    reduce = [iv for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    # The innermost reduction loop that does something (a 1x1 conv's ry and rx loops have extent 1); the
    # reduction loops are the ones right above the tile's.
    reduction_loops = sch.get_loops(main)[:-n_inner][-len(reduce):] if reduce else []
    step = next((loop for loop in reversed(reduction_loops) if extent_of(sch, loop) != 1), None)
    length = extent_of(sch, step) if step is not None else None
    if not length:
        return first_reduce
    outer = None
    if length <= info.lanes:
        sch.unroll(step)
    elif length % info.lanes == 0:
        was_first = sch.get_sref(step).same_as(sch.get_sref(first_reduce))
        outer, step = sch.split(step, [None, info.lanes])
        sch.unroll(step)
        first_reduce = outer if was_first else first_reduce
    step_name = ([iv for iv in reduce if extent(iv) != 1] or reduce)[-1].var.name  # the step loop's variable
    for index, region in enumerate(stmt.reads):
        if region.source.same_as(stmt.writes[0].source) or vec_name in vars_in(region):
            continue
        last, others = region.region[-1], region.region[:-1]
        if blk_tile % info.lanes == 0 and blk_name in vars_in_range(last) and not any(
                blk_name in vars_in_range(r) and not _whole_tiles(r.min, blk_name, blk_tile) for r in others):
            at, width = step, blk_tile
        elif outer is not None and step_name in _plain_terms(last.min) and blk_name not in vars_in_range(last) \
                and not any(step_name in vars_in_range(r) for r in others):
            at, width = outer, info.lanes
        elif outer is None and blk_name in vars_in_range(last) and step_name in vars_in_range(last):
            # A stride-2 conv's de-interleaved input ``[.., x % 2, x // 2]`` along the block of output columns:
            # one pass of the (unrolled) column taps reads whole vectors of it (7 columns x 3 taps: 2 x 8).
            at = _above(sch, main, step)
            if at is None or not _copies_whole_vectors(sch, main, index, at, info):
                continue
            width = info.lanes
        else:
            continue
        # "global", not "local": TVM gives a "local" buffer allocated inside a loop a TVMBackendAllocWorkspace call
        # (a heap buffer, one call per iteration), which LLVM cannot keep in registers: it stored the copy and
        # re-read it lane by lane (``ldp s``), 9 of mobilevit_xxs's 11.8 M scalar loads. A small "global" buffer
        # is a stack array that LLVM promotes to registers.
        cache = sch.cache_read(main, index, "global", consumer_blocks=[main])
        sch.annotate(cache, LANE_OPERAND, 1)
        sch.compute_at(cache, at, preserve_unit_loops=False)
        shared = [sch.get_sref(loop) for loop in sch.get_loops(main)]
        copy = [loop for loop in sch.get_loops(cache) if not any(sch.get_sref(loop).same_as(s) for s in shared)]
        if copy and extent_of(sch, copy[-1]) % width == 0:
            sch.vectorize(copy[-1])
            for loop in copy[:-1]:
                sch.unroll(loop)
        break
    else:
        _lane_tile_constant(sch, main, blk_name, vec_name, reduction_loops, info)
    return first_reduce


def _above(sch: Schedule, block, loop):
    """The loop right around ``loop`` among ``block``'s loops, or None."""
    loops = [sch.get_sref(each) for each in sch.get_loops(block)]
    at = next(i for i, each in enumerate(loops) if each.same_as(sch.get_sref(loop)))
    return sch.get_loops(block)[at - 1] if at else None


def _copies_whole_vectors(sch: Schedule, main, index: int, at, info: CpuInfo) -> bool:
    """Whether the values of read ``index`` that ``main`` uses inside loop ``at`` are, copied, whole rows of
    vectors (the innermost extent a multiple of the lanes) and at most 4 of them. Tried on a copy of ``sch``."""
    trial = sch.copy()
    cache = trial.cache_read(main, index, "global", consumer_blocks=[main])
    trial.compute_at(cache, at, preserve_unit_loops=False)
    shared = [trial.get_sref(loop) for loop in trial.get_loops(main)]
    copy = [extent_of(trial, loop) for loop in trial.get_loops(cache)
            if not any(trial.get_sref(loop).same_as(s) for s in shared)]
    return bool(copy) and None not in copy and copy[-1] % info.lanes == 0 and math.prod(copy) <= 4 * info.lanes


def _lane_tile_constant(sch: Schedule, main, blk_name: str, vec_name: str, reduction_loops: list,
                        info: CpuInfo) -> None:
    """On cores with FMA by lane, an operand that is constant over the register tile and has a few values per
    tile (a depthwise conv's 3x3 weights ``w[f, 0, ry, rx]``, the block axis being the output rows) is copied
    into a register-sized buffer a vector at a time, per tile, and the reduction loops are unrolled, so that
    every FMA uses a weight by lane (``fmla v.4s, v.4s, v.s[i]``) from 3 registers. The taps' columns go
    outermost, then the tile's rows, then the taps' rows: an input row is loaded once per column tap and used
    by the up to 3 output rows that read it while they are adjacent in the code (LLVM unrolled the row taps
    itself, held the 9 weights as splats and the input rows across the whole tile: 100 of 337 instructions
    per tile were spills). 3x3 depthwise + GELU, 128 x 56 x 56 (qemu, Cortex-A76): 6.20 -> 5.65 M
    instructions, 192 x 28 x 28: 2.74 -> 2.37 M.
    """
    stmt = sch.get(main)
    extents = {iv.var.name: extent(iv) for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar}
    for index, region in enumerate(stmt.reads):
        used = vars_in(region)
        if region.source.same_as(stmt.writes[0].source) or vec_name in used or blk_name in used:
            continue
        values = math.prod(extents[v] for v in used if v in extents)
        if values == 1 or values > 4 * info.lanes:  # (at most 4 registers of them)
            continue
        loops = sch.get_loops(main)
        first = next(i for i, loop in enumerate(loops)
                     if sch.get_sref(loop).same_as(sch.get_sref(reduction_loops[0])))
        taps = [loop for loop in reduction_loops if extent_of(sch, loop) != 1]
        for loop in taps:
            sch.unroll(loop)
        if len(taps) > 1:
            sch.reorder(taps[-1], loops[-2], *taps[:-1])  # (loops[-2]: the tile's block loop)
        cache = sch.cache_read(main, index, "global", consumer_blocks=[main])
        sch.annotate(cache, LANE_OPERAND, 1)
        sch.compute_at(cache, loops[first - 1], preserve_unit_loops=False)
        shared = [sch.get_sref(loop) for loop in sch.get_loops(main)]
        copy = [loop for loop in sch.get_loops(cache) if not any(sch.get_sref(loop).same_as(s) for s in shared)]
        if len(copy) > 1:
            sch.fuse(*copy)  # 9 contiguous values: 2 vectors and a scalar
        schedule_elementwise(sch, cache, info, parallel=False)
        return


def _whole_tiles(index, name: str, tile: int) -> bool:
    """Whether ``index`` is ``name // k`` with ``k`` a multiple of ``tile`` (a panel number: constant in a tile)."""
    return isinstance(index, tirx.FloorDiv) and isinstance(index.a, tirx.Var) and index.a.name == name \
        and isinstance(index.b, tirx.IntImm) and int(index.b) % tile == 0


def _try_inline(sch: Schedule, block) -> bool:
    """``compute_inline`` where TVM allows it (it refuses blocks whose result is needed elsewhere)."""
    try:
        sch.compute_inline(block)
    except ScheduleError:
        return False
    return True


def _half_vector_rows(stmt: tirx.SBlock, vec_tile: int, reduce: list, info: CpuInfo) -> bool:
    """Whether the epilogue of a per-channel (depthwise) conv runs per row of tiles instead of per tile: its
    tiles are half vectors (56-wide rows with 16 lanes, 8 at a time), so per tile the epilogue ran on half
    vectors in short loops, with the accumulators going through the stack anyway. Per row of tiles (14 rows x
    56) it runs on whole rows: 3x3 depthwise + GELU 128 x 56x56 0.31 -> 0.26 ms, without the GELU 48 x 56x56
    0.069 -> 0.056 ms (Zen 4, 1 thread, CPU time). Not on cores with FMA by lane (measured there by counts).
    """
    steps = [i for i in reduce if (extent(stmt.iter_vars[i]) or 0) > 1]
    return not info.lane_fma and vec_tile < info.lanes and len(steps) == 2


def _inline_around(sch: Schedule, func: tirx.PrimFunc, main_name: str):
    """Inline what surrounds the reduction block ``main_name`` so that one loop nest remains: copy/transpose
    producers before it, intermediate epilogue blocks after it. Returns the reduction block."""
    # Producers that only copy/pad (pad_temp) or transpose are inlined when possible; padded inputs stay
    # materialised (inlining would put a bounds check in the innermost loop).
    for block in root_blocks(sch):
        s = sch.get(block)
        if s.name_hint == main_name:
            break
        if isinstance(s.body, tirx.BufferStore) and not isinstance(s.body.value, TensorLoad):
            continue  # padding (if_then_else) or arithmetic: materialise once rather than per use
        _try_inline(sch, block)
    main = sch.get_sblock(main_name)
    if any(sch.get(main).writes[0].source.same_as(p) for p in func.params):
        sch.cache_write(main, 0, "global")
        main = sch.get_sblock(main_name)
    inline_injective(sch, {main_name} | {sch.get(b).name_hint for b in sch.get_consumers(main)}
                     | {sch.get(b).name_hint for b in root_blocks(sch)[:_index(sch, main_name)]})
    # Any intermediate epilogue blocks left: inline forward, keeping only the last consumer.
    consumers = sch.get_consumers(main)
    for c in consumers[:-1] if len(consumers) > 1 else []:
        _try_inline(sch, c)
    main = sch.get_sblock(main_name)
    # An epilogue chain (bias add -> GELU): fold each intermediate into its consumer, so the last block (the
    # function's output) is computed per tile from the accumulators instead of in a second pass over memory.
    consumers = sch.get_consumers(main)
    while len(consumers) == 1 and sch.get_consumers(consumers[0]):
        if not _try_inline(sch, consumers[0]):
            break
        main = sch.get_sblock(main_name)
        consumers = sch.get_consumers(main)
    return main


def _place_epilogue(sch: Schedule, main, loop, depth: int, tiled_dims: list, vec_dim: int, accumulators: int,
                    info: CpuInfo) -> None:
    """Compute each consumer of ``main`` per tile (under ``loop``), vectorised along the vector axis; on cores
    with FMA by lane, an epilogue whose constants do not fit the registers beside the tile's ``accumulators``
    (0: computed per panel, from memory) is kept a loop (see :func:`_rolled_epilogue`)."""
    produced = [int(d) for d in sch.get(main).writes[0].source.shape]
    for consumer in sch.get_consumers(main):
        written = [int(d) for d in sch.get(consumer).writes[0].source.shape]
        if len(written) == len(produced) and any(w > p for w, p in zip(written, produced)):
            # A padded output (conv -> Pad): its padding reads no element of a tile, so computed per tile it
            # would never be written. It runs after the whole output, vectorised along its rows.
            sch.vectorize(sch.get_loops(consumer)[-1])
            continue
        sch.reverse_compute_at(consumer, loop, preserve_unit_loops=False)
        own = sch.get_loops(consumer)[depth:]
        if not own:
            continue
        if len(own) == len(tiled_dims) and vec_dim in tiled_dims:
            k = tiled_dims.index(vec_dim)
            if k != len(own) - 1:
                sch.reorder(*own[:k], *own[k + 1:], own[k])
        if info.lane_fma and accumulators and _rolled_epilogue(sch.get(consumer), accumulators, info):
            # The accumulators are copied out (unrolled: constant indices, so LLVM keeps the accumulator
            # buffer in registers) into a tile buffer that the epilogue's loop reads. TVM's loop annotations do
            # not reach LLVM, which fully unrolls a loop of few wide iterations (8 rows of <8 x float>).
            acc = sch.get(main).writes[0].source
            index = next(i for i, r in enumerate(sch.get(consumer).reads) if r.source.same_as(acc))
            tile = sch.cache_read(consumer, index, "global")  # (placed under ``loop``, over the tile)
            copy = sch.get_loops(tile)[depth:]
            ndim = len(produced)
            if vec_dim != ndim - 1 and len(copy) == ndim:
                # The tile buffer in the accumulators' layout (vector axis last): a channel-last depthwise
                # conv's was NCHW, so the copy transposed and the epilogue gathered its vectors lane by lane
                # (``ldr s`` + 3 ``ld1 {v.s}[i]``; 384 x 14 x 14 + GELU 1.94 -> 1.72 M, qemu Cortex-A76).
                dims = [d for d in range(ndim) if d != vec_dim] + [vec_dim]
                sch.transform_layout(tile, ("write", 0), tirx.IndexMap.from_func(
                    lambda *idx: [idx[d] for d in dims], ndim=ndim))
                sch.reorder(*[copy[d] for d in dims])
                copy = sch.get_loops(tile)[depth:]
            sch.vectorize(copy[-1])
            for serial in copy[:-1]:
                sch.unroll(serial)
            own = sch.get_loops(consumer)[depth:]
            if extent_of(sch, own[-1]) % info.lanes == 0:
                whole = sch.fuse(*own) if len(own) > 1 else own[0]
                # two vectors an iteration: the loop's own instructions are shared, and a body of <4 x float>
                # operations is large enough that LLVM does not unroll the loop again
                pairs = 2 if extent_of(sch, whole) % (2 * info.lanes) == 0 else 1
                _, pair, lanes = sch.split(whole, [None, pairs, info.lanes])
                sch.unroll(pair)
                sch.vectorize(lanes)
                continue
        sch.vectorize(sch.get_loops(consumer)[-1])


def _rolled_epilogue(stmt: tirx.SBlock, accumulators: int, info: CpuInfo) -> bool:
    """Whether an epilogue is better computed a row of the tile at a time than unrolled over the whole tile.

    LLVM unrolls the epilogue's loops over the tile (8 x 2 vectors) completely; with the 16 accumulators live
    and a GELU's 15 constants the registers run out: it spilled and copied registers, ~37 instructions per
    vector. Kept a loop of two vectors an iteration, the accumulators go through the stack once (a store and
    a load per vector) and the constants stay in registers: 29.5 per vector. A 32->128 1x1 conv + GELU on
    56x56 (qemu, Cortex-A72, with fast_gelu): 7.88 -> 7.22 M instructions; a 3x3 depthwise one 7.74 -> 6.20 M.
    """
    if not isinstance(stmt.body, tirx.BufferStore):
        return False
    scalars = _constants(stmt.body.value)
    parameters = sum(isinstance(s, str) for s in scalars)
    # Only when the constants are mostly parameters: LLVM re-materialises immediate vector constants in every
    # iteration of a loop (a ``dup`` each), so a rolled SiLU (14 immediates) would gain nothing.
    return accumulators + len(scalars) + 4 > info.registers and parameters >= len(scalars) - parameters


def _constants(expr) -> set:
    """The distinct loop-invariant scalars of an arithmetic expression, each a register where it is used: float
    constants and scalar parameters (``fast_math.fast_gelu``'s)."""
    if isinstance(expr, tirx.FloatImm):
        return {float(expr.value)}
    if isinstance(expr, TensorLoad) and not expr.indices:
        return {expr.source.name}
    children = list(getattr(expr, "args", None) or getattr(expr, "indices", None) or [])
    children += [getattr(expr, name) for name in ("a", "b", "value") if hasattr(expr, name)]
    return set().union(*[_constants(c) for c in children if isinstance(c, Expr)])


def _parallelise(sch: Schedule, prologue: list[str], stmt, order: list, depth: int, spatial_outer: list,
                 first_reduce, info: CpuInfo) -> list[str]:
    """Run the outer tile loops in parallel; returns the prologue blocks now computed per slice of them."""
    depths = {name: _slice_depth(sch, sch.get_sblock(name), stmt, order[:depth]) for name in prologue}
    sliced = [name for name, d in depths.items() if d]
    if sliced:
        lead = min(depths[name] for name in sliced)
        # A materialised producer computed per slice (depthwise padding): the slice's loop is as deep as the
        # parallel loop can go, since it now holds two loop nests.
        for name in sliced:
            sch.compute_at(sch.get_sblock(name), spatial_outer[lead - 1], preserve_unit_loops=False)
        run_in_parallel(sch, spatial_outer[:lead], info)
    else:
        _parallel_outer(sch, spatial_outer, depth, first_reduce, info)
    return sliced


#: The block annotation TVM's ``SplitLayoutRewritePreproc`` looks for: such a block only re-lays out a weight,
#: and is split off into a function of its own that ``FoldConstant`` then runs once, at compile time.
LAYOUT_REWRITE = "meta_schedule.layout_rewrite_preproc"


def _prepack_weights(sch: Schedule, main, func: tirx.PrimFunc, tiles: dict) -> None:
    """Re-lay out each weight (a layout-free parameter: a constant of the model) that the tile reads along a
    tiled axis as ``[axis // tile, other dims..., axis % tile]``, at compile time.

    A tile then reads its weights as one contiguous stream (``tile`` floats per reduction step) instead of
    ``tile`` floats every row of the weight matrix: fewer cache lines and TLB pages per panel, no L1 set
    conflicts between rows at power-of-two-ish strides, and a stream the prefetcher follows when the weights
    come in cold from memory, as they do inside a model. ``tiles`` maps the block's iteration variable names
    to their register tile.
    """
    free = {int(i) for i in (func.attrs.get(LAYOUT_FREE, []) if func.attrs else [])}
    weights = [func.params[i] for i in free]
    stmt = sch.get(main)
    for idx, region in enumerate(stmt.reads):
        if not any(region.source.same_as(w) for w in weights):
            continue
        dims = [str(r.min) for r in region.region]
        shape = [int(x) for x in region.source.shape]
        for name, tile in tiles.items():
            if dims.count(name) != 1:
                continue
            d = dims.index(name)
            if not 1 < tile < shape[d] or shape[d] % tile:
                continue
            copy = sch.cache_read(main, idx, "global")
            sch.transform_layout(main, ("read", idx), _panels(d, tile, len(dims)))
            sch.annotate(copy, LAYOUT_REWRITE, 1)
            break


def _panels(d: int, tile: int, ndim: int) -> tirx.IndexMap:
    """``[..., x_d, ...] -> [x_d // tile, ..., x_d % tile]``: dimension ``d`` split in panels of ``tile``."""
    return tirx.IndexMap.from_func(lambda *i: [i[d] // tile, *i[:d], *i[d + 1:], i[d] % tile], ndim=ndim)


def _slice_depth(sch: Schedule, producer, stmt: tirx.SBlock, order: list) -> int:
    """How many of the outer loops (axes in ``order``, outermost first) ``producer`` (a materialised input such
    as padding) can be computed inside, one slice at a time; 0 if none worth it.

    A loop qualifies when its axis indexes one of the producer's dimensions alone (a depthwise conv reads
    channel ``f + rc`` with ``rc`` of extent 1; channel-last padding ``[y + ry, x + rx, c]`` by the vector
    tile's outer loop): the slices do not overlap and nothing is computed twice. Then each slice (one padded
    channel, 13 KB for 56x56; 8 channels of a 9x9 map) is read from L1 while still warm instead of from memory
    after a whole-tensor pass: 3x3 depthwise + GELU on 128x56x56 0.69 -> 0.43 ms with a warm cache, 1.5 -> 0.73
    ms with a cold one; channel-last on 1024x7x7 182 -> 84 us warm, 327 -> 144 us cold (Zen 3).
    """
    written = sch.get(producer).writes[0].source
    region = next((r for r in stmt.reads if r.source.same_as(written)), None)
    if region is None or len(sch.get_consumers(producer)) != 1:
        return 0
    unit = {iv.var.name for iv in stmt.iter_vars if extent(iv) == 1}
    alone = set()
    for rng in region.region:
        used = vars_in_range(rng) - unit
        if len(used) == 1 and used <= _plain_terms(rng.min):
            alone |= used
    count, useful = 0, False
    for i in order:
        name = stmt.iter_vars[i].var.name
        if name in unit:
            count += 1
        elif name in alone:
            count, useful = count + 1, True
        else:
            break
    return count if useful else 0


def _pack_panel(sch: Schedule, main, vec: int, blk: int, spatial_outer: list, info: CpuInfo) -> None:
    """Copy the input panel that one row of tiles reads (every reduction step x the vector tile) into a
    contiguous buffer before the block axis's loop, which then reuses it from L1.

    Why: an NCHW input is read one channel (reduction step) after another, ``H * W`` floats apart. On 32x32
    maps and larger that stride is a multiple of 4 KB, so the panel's cache lines all fall in the same few L1
    sets and evict each other: a 64->128 1x1 conv on a 64x64 map ran at 20 GFLOP/s, packed at 56 (Zen 3).
    Only for an activation (an operand indexed by an output axis outside the tile) that the block axis does
    not index (else there is no reuse), read with unit stride along the vector axis (stride-2 convs keep their
    de-interleaved input instead), and only where the stride does thrash (:func:`_thrashes_l1`): the copy
    costs a pass over the panel, and where the lines spread over L1 it made a 128->32 1x1 conv on 56x56
    (reused by 4 channel blocks) 2x slower.
    """
    if extent_of(sch, spatial_outer[-1]) <= 1:
        return
    stmt = sch.get(main)
    vec_name, blk_name = stmt.iter_vars[vec].var.name, stmt.iter_vars[blk].var.name
    reduce_names = {iv.var.name for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar}
    # Spatial axes outside the panel: an operand indexed by one (a row of the map) is an activation; one that is
    # not is a weight panel, read the same by every tile (chunking serves those, see LONG_REDUCTION).
    outside = {iv.var.name for i, iv in enumerate(stmt.iter_vars) if i not in (vec, blk)
               and iv.iter_type == tirx.IterVar.DataPar and (extent(iv) or 0) > 1}
    for index, region in enumerate(stmt.reads):
        used = vars_in(region)
        if region.source.same_as(stmt.writes[0].source) or blk_name in used or not outside & used \
                or vec_name not in vars_in_range(region.region[-1]) or not reduce_names & used:
            continue
        if vec_name not in _plain_terms(region.region[-1].min) or not _thrashes_l1(region, stmt):
            return
        cache = sch.cache_read(main, index, "global")
        sch.compute_at(cache, spatial_outer[-2], preserve_unit_loops=False)
        schedule_elementwise(sch, cache, info, parallel=False)
        return


#: L1 data cache geometry the panel packing models: 64 sets x 8 ways of 64-byte lines (32 KB), as in AMD Zen
#: and Intel cores since Sandy Bridge. (Cortex-A72's is 256 x 2-way; not measured here, so not modelled.)
L1_SETS, L1_WAYS, LINE = 64, 8, 64


def _thrashes_l1(region, stmt: tirx.SBlock) -> bool:
    """Whether the rows a panel reads along its outermost reduction dimension (the input channels) map to too
    few L1 sets to stay cached together: rows ``stride`` bytes apart fall in ``64 / gcd(stride / 64, 64)``
    sets, which hold 8 rows each. 64x64 maps: 1 set for 64 channels; 56x56: 16 sets, so up to 128 fit."""
    shape = [int(d) for d in region.source.shape]
    extents = {iv.var.name: extent(iv) for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar}
    for dim, rng in enumerate(region.region):
        rows = [extents[v] for v in vars_in_range(rng) if (extents.get(v) or 1) > 1]
        if not rows:
            continue
        stride = 4 * math.prod(shape[dim + 1:])  # float32
        sets = L1_SETS if stride % LINE else L1_SETS // math.gcd(stride // LINE, L1_SETS)
        return rows[0] > sets * L1_WAYS
    return False


def _plain_terms(index) -> set:
    """Names of the variables added with coefficient 1 in an index (``x + rx`` -> {x, rx}; ``x * 2 + rx`` -> {rx})."""
    if isinstance(index, tirx.Var):
        return {index.name}
    if isinstance(index, tirx.Add):
        return _plain_terms(index.a) | _plain_terms(index.b)
    return set()


def _weight_panel(stmt: tirx.SBlock, vec: int) -> bool:
    """Whether the operands read along the vector axis depend on no other output axis (one panel per vector
    tile, reused by every tile of the other axes: packed conv weights, a matmul's right-hand side)."""
    name = stmt.iter_vars[vec].var.name
    others = {iv.var.name for i, iv in enumerate(stmt.iter_vars) if i != vec and iv.iter_type == tirx.IterVar.DataPar}
    operands = [r for r in stmt.reads if not r.source.same_as(stmt.writes[0].source) and name in vars_in(r)]
    return bool(operands) and not any(others & vars_in(r) for r in operands)


#: Accumulators a register tile needs to hide the FMA latency: 2 FMA pipes x 4 cycles (Zen, Intel since Skylake).
MIN_ACCUMULATORS = 8


def _pad_axes(sch: Schedule, main, vec: int, blk: int, info: CpuInfo, knobs: Knobs) -> bool:
    """Pad the vector and block axes to multiples of better register tiles when their extents have no good
    divisor (``pad_einsum``: the operands are copied into zero-padded buffers, the extra rows and columns
    computed and dropped). Returns True if padded; the copy out of the padded result is inlined into the
    epilogue. Only einsums (a matmul; not a conv's ``y + ry``).

    - Vector axis: a whole number of vectors, adding at most 1/7. 220 columns (SwiftFormer's 49x220 @ 220x220)
      take 4-wide vectors; padded to 224, 8-wide (2.1x faster). 49 (attention scores over a 7x7 map) take
      1-wide ones; padded to 56, 8-wide (2.9x). With 16 lanes 49 -> 64 would add more than 1/7: half vectors
      then (56, 8-wide; Zen 4 runs 512-bit FMAs on 256-bit units, so they lose nothing there): q @ k^T + bias
      of efficientformerv2_s0 (8 x 49x32 @ 32x49) 0.171 -> 0.034 ms.
    - Block axis: from fewer accumulators than hide the FMA latency (:data:`MIN_ACCUMULATORS`) to at least
      that many, counting the padded rows' share as lost, adding at most 1/8. A matmul over 49 tokens (a 7x7
      map) takes 1 vector x 7 rows on 16 registers; padded to 54 rows, 2 vectors x 6: 49x448 @ 448x1792
      1.31 -> 1.02 ms on Zen 3, 10 % more FMAs included.
    - On cores with FMA by lane, the axis along which the broadcast operand is contiguous, to whole vectors of
      it (:func:`broadcast_by_lane`): a pointwise conv's 49 pixels to 52 (:func:`_lane_block_extent`), a
      matmul's 49-long reduction over a 7x7 map's tokens to 52. efficientformerv2_s0 (qemu, Cortex-A72):
      204.7 -> 199.9 M instructions, scalar float loads 14.0 -> 2.9 M.
    """
    stmt = sch.get(main)
    vec_extent, blk_extent = extent(stmt.iter_vars[vec]), extent(stmt.iter_vars[blk])
    vec_factor = 1
    # (a 4-wide tile does divide 220: vector_tile is asked for whole vectors only)
    if vector_tile(vec_extent, info.lanes, info.lanes) < info.lanes:
        for lanes in (info.lanes, info.lanes // 2) if info.lanes == 16 else (info.lanes,):
            if vector_tile(vec_extent, lanes, lanes) < lanes and -vec_extent % lanes <= vec_extent // 7:
                vec_factor = lanes
                vec_extent += -vec_extent % lanes
                break

    def tiles(n: int) -> tuple[int, int, int]:
        """(accumulators, vector tile, block tile) for a block axis of extent ``n``."""
        vec_tile, blk_tile = register_tile(vec_extent, n, info, knobs)
        return -(-vec_tile // info.lanes) * blk_tile, vec_tile, blk_tile

    blk_factor = 1
    now, vec_tile, _ = tiles(blk_extent)
    lane_operand = _lane_operand_axis(stmt, vec, blk) if info.lane_fma else None
    if lane_operand == "block" and vec_tile >= info.lanes:
        blk_factor = _lane_block_extent(vec_extent, blk_extent, info, knobs)
    # Not when the vector axis has no whole vector (49 columns): padding rows does not help then; nor when it is
    # short: the copy of the padded rows then costs as much as the FMAs (8 x 2401 @ 8 x 8: 3x slower).
    if blk_factor == 1 and now < MIN_ACCUMULATORS and vec_tile >= info.lanes and vec_extent >= 4 * info.lanes:
        options = []  # (useful accumulators, block tile) of each padded extent
        for n in range(blk_extent + 1, blk_extent + blk_extent // 8 + 1):
            accumulators, _, blk_tile = tiles(n)
            options.append((accumulators * blk_extent / n, blk_tile))
        useful, tile = max(options, default=(0, 1))
        blk_factor = tile if useful >= MIN_ACCUMULATORS else 1
    factors = {vec: vec_factor, blk: blk_factor}
    if lane_operand is not None and lane_operand != "block":
        # The broadcast operand is contiguous along the innermost reduction (a matmul's rows, ``p[i, k]``):
        # broadcast_by_lane loads it a vector per ``lanes`` steps only if the reduction splits into them.
        index, length = lane_operand
        if length % info.lanes and -length % info.lanes <= length // 7:
            factors[index] = info.lanes
    if all(f == 1 for f in factors.values()):
        return False
    try:
        sch.pad_einsum(main, [factors.get(i, 1) for i in range(len(stmt.iter_vars))])
    except Exception:  # noqa: BLE001 - not an einsum (e.g. a conv's padded input, ``y + ry``): left as is
        return False
    if any(factors.get(i, 1) > 1 for i, iv in enumerate(stmt.iter_vars) if iv.iter_type == tirx.IterVar.DataPar):
        for crop in sch.get_consumers(main):  # (a padded reduction alone leaves the output as it was: no crop)
            sch.compute_inline(crop)
    return True


def _lane_operand_axis(stmt: tirx.SBlock, vec: int, blk: int):
    """Along what the operand a register tile broadcasts is contiguous, on cores with FMA by lane: "block" (a
    pointwise conv's input ``x[c, p]`` along the block of pixels), ``(index, extent)`` of the innermost reduction
    axis (a matmul's rows ``x[i, k]``), or None (neither: no vector loads for :func:`broadcast_by_lane`)."""
    vec_name, blk_name = stmt.iter_vars[vec].var.name, stmt.iter_vars[blk].var.name
    steps = [i for i, iv in enumerate(stmt.iter_vars) if iv.iter_type != tirx.IterVar.DataPar and extent(iv) != 1]
    for region in stmt.reads:
        if region.source.same_as(stmt.writes[0].source) or vec_name in vars_in(region):
            continue
        last = str(region.region[-1].min)
        if last == blk_name:
            return "block"
        if steps and last == stmt.iter_vars[steps[-1]].var.name and extent(stmt.iter_vars[steps[-1]]) and \
                blk_name in vars_in(region):
            return steps[-1], extent(stmt.iter_vars[steps[-1]])
    return None


def _lane_block_extent(vec_extent: int, blk_extent: int, info: CpuInfo, knobs: Knobs) -> int:
    """The extent (at most 1/7 more) to pad a block axis to on cores with FMA by lane, or 1 to leave it.

    Why: :func:`broadcast_by_lane` loads the operand contiguous along the block axis a vector at a time only
    when the block tile is a multiple of the lanes; a 7x7 map's 49 pixels split in 7s, so each pixel was its
    own ``ldr s`` (2 vectors x 7 pixels: 9 loads per 14 FMAs). Padded to 52, 4 vectors x 4 pixels take 5 loads
    per 16. Counted per reduction step over the whole kernel: FMAs and operand loads of the register tile, and,
    when padded, the copy into the padded buffer (a load and a store per vector, and its loop).
    """
    def cost(n: int) -> float:
        vec_tile, blk_tile = register_tile(vec_extent, n, info, knobs)
        regs = -(-vec_tile // info.lanes)
        loads = regs + (blk_tile // info.lanes if blk_tile % info.lanes == 0 else blk_tile)
        copy = 3 * n / info.lanes if n > blk_extent else 0
        return vec_extent / vec_tile * n / blk_tile * (regs * blk_tile + loads) + copy

    best = min(range(blk_extent, blk_extent + blk_extent // 7 + 1), key=lambda n: (cost(n), n))
    return best if best > blk_extent and cost(best) < 0.95 * cost(blk_extent) else 1


def register_tile(vec_extent: int, blk_extent: int, info: CpuInfo, knobs: Knobs) -> tuple[int, int]:
    """(vector tile, block tile) with the most accumulator registers, within the knobs' limits.

    The two tiles must divide their axes, so they are chosen together: on a 7x7 map with 16 registers (AVX2),
    2 vectors x 7 pixels does not fit, and a 2-vector tile would leave a block of 1 (2 accumulators) where
    1 vector x 7 pixels holds 7 (measured 2x faster). Ties go to the wider vector tile, or, on cores with FMA
    by lane, to the tile that loads the fewest operand vectors per reduction step.
    """
    budget = info.registers * 3 // 4
    best = (), 1, 1
    # Tiles of 1, 2, 4 .. registers (a 3-register tile, <24 x float>, ran 8x slower), else vector_tile's
    # fallback for extents with no lane-multiple divisor.
    tiles = {vector_tile(vec_extent, info.lanes, info.lanes)}
    tiles |= {info.lanes * r for r in (1, 2, 4, 8, 16) if info.lanes * r <= knobs.vector
              and vec_extent % (info.lanes * r) == 0}
    for tile in sorted(tiles):
        regs = -(-tile // info.lanes)
        block = largest_divisor(blk_extent, max(1, min(budget // regs, knobs.block)))
        # Besides the accumulators, a reduction step holds min(regs, block) operands (the vector loads, or the
        # broadcasts, whichever are fewer) and one more: with 16 registers 4 vectors x 3 rows (12 + 3 + 1)
        # spilled and ran 1.6-2x slower than 2 x 6 or 2 x 4 (96->192 1x1 conv on 64x64, Zen 3).
        while block > 1 and regs * block + min(regs, block) + 1 >= info.registers:
            block = largest_divisor(blk_extent, block - 1)
        if info.lane_fma:
            # Fewest instructions per FMA (the FMAs and the operand loads of a reduction step: the vector
            # operand's ``regs`` loads, plus the broadcast operand's, a vector per ``lanes`` rows, see
            # broadcast_by_lane) among the tiles with enough accumulators, then the most accumulators; every
            # block up to the largest is a candidate. A block that is no multiple of the lanes loads each row's
            # value alone: 1 vector x 15 channels (a 120-channel 1x1 conv over a 14x14 map's pixels) took 16
            # loads per 15 FMAs, 1 x 12 takes 4 per 12.
            for rows in range(block, 0, -1):
                if blk_extent % rows:
                    continue
                accumulators = regs * rows
                loads = regs + (rows // info.lanes if rows % info.lanes == 0 else rows)
                best = max(best, ((accumulators >= MIN_ACCUMULATORS, -(accumulators + loads) / accumulators,
                                   accumulators), tile, rows))
        else:
            best = max(best, ((regs * block, tile), tile, block))
    return best[1], best[2]


def _flatten_pixels(sch: Schedule, main, info: CpuInfo) -> bool:
    """Iterate a pointwise (1x1, stride 1) kernel over pixels ``y * W + x`` instead of rows and columns when the
    map's width has no 2-register tile but its pixel count has one (56x56 and 28x28, with 8 or 16 lanes):
    the pixels are contiguous in NCHW, so the vector axis becomes the whole map instead of a 56-wide row. The
    accumulator and the epilogue are flattened the same way, so the epilogue stays a contiguous vector store.

    Returns True if the block was changed. Only when every operand indexes the map as ``[..., y, x]`` over its
    whole extent (no padding, stride or dilation).
    """
    stmt = sch.get(main)
    out = [str(r.min) for r in stmt.writes[0].region]
    names = [iv.var.name for iv in stmt.iter_vars]
    if len(out) < 2 or out[-2] not in names or out[-1] not in names:
        return False
    iy, ix = names.index(out[-2]), names.index(out[-1])
    height, width = extent(stmt.iter_vars[iy]), extent(stmt.iter_vars[ix])
    # Worth it when a row has no 2-register tile but the map has: 56-wide rows on AVX2 take 1 vector (so
    # 1 x 12 tiles, a broadcast per FMA: load-bound), 3136 pixels take 2 or 4.
    wide = 2 * info.lanes
    pixel_tile = wide if width % info.lanes == 0 else info.lanes  # what the map must split into to gain
    if ix != iy + 1 or not width or width % wide == 0 or (height * width) % pixel_tile:
        return False
    # A 1x1 kernel's unit reduction axes appear in the indices (``y + ry``): they are 0.
    analyzer = Analyzer()
    for iv in stmt.iter_vars:
        if extent(iv) == 1:
            analyzer.bind(iv.var, iv.dom.min)

    def index(rng) -> str:
        return str(analyzer.simplify(rng.min))

    for region in [stmt.writes[0], *stmt.reads]:
        if not {out[-2], out[-1]} & vars_in(region):
            continue
        dims = [int(d) if isinstance(d, tirx.IntImm) else None for d in region.source.shape[-2:]]
        if [index(r) for r in region.region[-2:]] != out[-2:] or dims != [height, width] or \
                {out[-2], out[-1]} & set().union(*[vars_in_range(r) for r in region.region[:-2]]):
            return False
    ndim = len(out)
    sch.transform_layout(main, ("write", 0), tirx.IndexMap.from_func(
        lambda *i: [*i[:-2], i[-2] * width + i[-1]], ndim=ndim))
    sch.transform_block_layout(main, tirx.IndexMap.from_func(
        lambda *v: [*v[:iy], v[iy] * width + v[ix], *v[ix + 1:]], ndim=len(names)))
    for consumer in sch.get_consumers(main):  # its read of the accumulator is now [..., y * W + x]
        _iterate_over_pixels(sch, consumer, width)
    return True


def _iterate_over_pixels(sch: Schedule, block, width: int) -> None:
    """Iterate an elementwise block over pixels ``y * width + x`` instead of its last two axes (rows and
    columns), like the accumulator it reads: an epilogue can then be computed per register tile of pixels.

    Raises if it cannot (the rule then leaves the kernel to the next): left row-wise, the epilogue would be
    placed per tile of pixels all the same, and TVM bounds a row-wise region of ``y * W + x`` wrongly (a 7x7
    map's columns came out as 0..4)."""
    sch.transform_block_layout(block, tirx.IndexMap.from_func(
        lambda *v: [*v[:-2], v[-2] * width + v[-1]], ndim=len(sch.get(block).iter_vars)))


def _unflattening_width(consumer: tirx.SBlock, buffer) -> int | None:
    """``W`` if ``consumer`` reads ``buffer``'s last dimension as ``y * W + x`` over its last two axes (a kernel
    computed over pixels, e.g. :func:`~edgevit.backends.weight_packing.pointwise_nchw_ihwo`), else None."""
    y, x = (iv.var for iv in consumer.iter_vars[-2:]) if len(consumer.iter_vars) >= 2 else (None, None)
    for region in consumer.reads:
        index = region.region[-1].min if region.source.same_as(buffer) else None
        if isinstance(index, tirx.Add) and isinstance(index.a, tirx.Mul) and index.b.same_as(x) \
                and index.a.a.same_as(y) and isinstance(index.a.b, tirx.IntImm):
            return int(index.a.b)
    return None


def _deinterleave_strided(sch: Schedule, producer, stmt: tirx.SBlock, axes: list[int]) -> int:
    """Store a materialised input (padding) de-interleaved when the kernel reads it with a stride along one of
    ``axes`` (the vector axis; stride-2 convolutions): ``x -> (x % s, x // s)`` turns each strided gather into a
    plain vector load. Returns the stride, or 0 if left alone (no stride, or a width that is not a multiple of
    it)."""
    written = sch.get(producer).writes[0].source
    names = {stmt.iter_vars[axis].var.name for axis in axes}
    for region in stmt.reads:
        if not region.source.same_as(written):
            continue
        index = region.region[-1].min
        if not (isinstance(index, tirx.Add) and isinstance(index.a, tirx.Mul) and str(index.a.a) in names
                and isinstance(index.a.b, tirx.IntImm) and int(index.a.b) > 1):
            return 0
        stride = int(index.a.b)
        width = int(written.shape[-1])
        if width % stride:
            return 0
        ndim = len(written.shape)
        sch.transform_layout(producer, ("write", 0), tirx.IndexMap.from_func(
            lambda *idx: [*idx[:-1], idx[-1] % stride, idx[-1] // stride], ndim=ndim))
        return stride
    return 0


def _copy_deinterleaved(sch: Schedule, producer, stride: int, info: CpuInfo, parallel: bool) -> None:
    """Schedule the copy into a de-interleaved buffer one phase (``x % stride``) at a time: within a phase the
    stores are contiguous and vectorised, the loads strided. Vectorised along ``x`` instead, every store
    scatters and TVM scalarises the loop (with a bounds test per lane when the row is ragged): a 128x128 map's
    padding took 60 % of its stride-2 depthwise conv (A/B on Zen 3: that conv 0.65x, stems 0.75-0.89x, two
    65-wide ones 1.06-1.09x)."""
    loops = sch.get_loops(producer)
    outer, row = list(loops[:-1]), loops[-1]
    n = extent_of(sch, row)
    if n is None or n // stride < info.lanes:  # a phase shorter than a vector: left to LLVM
        if parallel:
            run_in_parallel(sch, outer, info)
        return
    if n % stride:
        row, _tail = sch.loop_partition(row, [n - n % stride])
    pairs, phase = sch.split(row, [None, stride])
    sch.reorder(phase, pairs)
    sch.unroll(phase)
    sch.vectorize(sch.split(pairs, [None, vector_tile(n // stride, info.lanes, 4 * info.lanes)])[1])
    if parallel:
        run_in_parallel(sch, outer, info)


def _index(sch: Schedule, name: str) -> int:
    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    return names.index(name) if name in names else len(names)


def _even_panels(sch: Schedule, spatial_outer: list, order: list, panel: int, info: CpuInfo) -> int:
    """Before a chunked reduction: if the ``panel`` tile loops above the chunk loop (the ones that run in
    parallel) do not split evenly over the cores (:func:`splits_evenly`), split the next tile loop by the
    smallest factor that evens them and keep its outer part above the chunk loop too (``spatial_outer`` and
    ``order`` updated in place). Returns the new count of loops above the chunk loop.

    efficientformerv2_s0 (host): three 1x1 convs onto 14x14 maps ran their 96 channels in 3 parallel panels
    (1.5x at most on 2 threads; 2.1 % of the 1-thread time lost, tools/parallel_report.py); split in 2 x 3."""
    n = math.prod(extent_of(sch, loop) or 1 for loop in spatial_outer[:panel])
    following = extent_of(sch, spatial_outer[panel]) or 1
    # the smallest factor that splits evenly, else the one that splits best
    factors = [f for f in range(2, following + 1) if following % f == 0]
    factor = next((f for f in factors if splits_evenly(n * f, info)),
                  min(factors, key=lambda f: (parallel_share(n * f, info), f), default=None))
    if splits_evenly(n, info) or factor is None or parallel_share(n * factor, info) >= parallel_share(n, info):
        return panel
    moved, rest = sch.split(spatial_outer[panel], [factor, None])
    spatial_outer[panel:panel + 1] = [moved, rest]
    order.insert(panel, order[panel])
    return panel + 1


def _parallel_outer(sch: Schedule, spatial_outer: list, depth: int, first_reduce, info: CpuInfo) -> None:
    """Run the tile loops above the innermost one (the block axis's, whose tiles reuse the vector operand's
    panel) in parallel, or, when the reduction is chunked, the loops above the chunk loop (see
    :func:`_even_panels`). When the outer loops do not split evenly over the cores (:func:`splits_evenly`)
    the innermost joins them; when they have a single iteration and it cannot, nothing runs in parallel (a
    launch for nothing). efficientformerv2_s0 (host): its 1x1 convs across the attention heads over the 49x49
    scores (8 calls) ran their 343 pixel tiles as one parallel iteration.
    """
    chunked = depth < len(spatial_outer)
    loops = spatial_outer[:depth] if chunked else spatial_outer[:-1] or spatial_outer
    if not chunked and len(loops) < len(spatial_outer) and \
            not splits_evenly(math.prod(extent_of(sch, loop) or 1 for loop in loops), info):
        loops = spatial_outer
    if math.prod(extent_of(sch, loop) or 1 for loop in loops) == 1:
        return
    try:
        run_in_parallel(sch, loops, info)
    except ScheduleError:  # not adjacent (a packed panel is computed between them): the outer ones only
        run_in_parallel(sch, loops[:-1], info)
