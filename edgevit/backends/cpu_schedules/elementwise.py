"""Everything else: injective functions (transpose, reshape, concat, slices, element-wise chains) and the
reductions no other rule takes. Producers are inlined into their consumers; what remains is vectorised and run
in parallel; long contiguous reductions get one partial result per vector lane."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import Schedule

from .common import (CpuInfo, extent, extent_of, is_reduction, root_blocks, run_in_parallel,
                     schedule_elementwise, vector_tile)
from .row_reduction import parallel_rfactor


def apply(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule any function; returns None only if it has no blocks."""
    info = CpuInfo.of(target)
    sch = Schedule(func)
    blocks = root_blocks(sch)
    if not blocks:
        return None
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
    gathers = {sch.get(b).name_hint for b in blocks if _gathers(sch.get(b))} - outputs
    # (AArch64 only for now: counted there, not timed on x86)
    windows = [sch.get(b).name_hint for b in blocks if info.lane_fma and _window(sch.get(b), info)]
    # A window's padded input stays a buffer: inlined, every tap would test its bounds.
    padded = {sch.get(p).name_hint for name in windows for p in sch.get_producers(sch.get_sblock(name))}
    for block in reversed(blocks):
        stmt = sch.get(block)
        if stmt.name_hint in outputs | gathers | padded or is_reduction(stmt):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - a block with several consumers or a reduction consumer stays
            pass
    # Output side first: a gather feeding another (a separable upsample's rows) is then computed per map inside
    # the other's map loop.
    ordered = [sch.get(b).name_hint for b in reversed(root_blocks(sch)) if sch.get(b).name_hint in gathers]
    per_map = {sch.get(c).name_hint for name in ordered for c in _per_map(sch, sch.get_sblock(name))}
    done = {name for window in windows for name in _schedule_window(sch, sch.get_sblock(window), info)}
    for block in root_blocks(sch):
        if sch.get(block).name_hint in done:
            continue
        if sch.get(block).name_hint in gathers:  # computed per map (or inlined): vectorised only
            schedule_elementwise(sch, block, info, parallel=False)
            continue
        if sch.get(block).name_hint in per_map:
            # Its map loops now hold two loop nests (the gather's and its own): only the loops above run in
            # parallel.
            outer = sch.get_loops(block)[:-2]
            schedule_elementwise(sch, block, info, parallel=False)
            run_in_parallel(sch, outer, info)
            continue
        if not is_reduction(sch.get(block)):
            _fuse_ragged_rows(sch, block, info)
            schedule_elementwise(sch, block, info)
            continue
        try:  # a long contiguous reduction gets one partial sum per vector lane
            if not parallel_rfactor(sch, block, info):
                _parallel_outputs(sch, block, info)
        except Exception:  # noqa: BLE001 - left as a scalar reduction
            pass
    return sch


def _parallel_outputs(sch: Schedule, block, info: CpuInfo) -> None:
    """Run a strided (not vectorised) reduction's outputs in parallel: its leading loops over output elements,
    fused. SwiftFormer's sums over the 49 tokens of each of 220 channels (its additive attention) ran on one
    thread: 1.8 % of swiftformer_xs's 1-thread time lost on 2 threads (tools/parallel_report.py)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return
    outputs = []
    for loop, iv in zip(loops, stmt.iter_vars):
        if iv.iter_type != tirx.IterVar.DataPar:
            break
        outputs.append(loop)
    n = 1
    for loop in outputs:
        n *= extent_of(sch, loop) or 1
    work = n
    for loop in loops[len(outputs):]:
        work *= extent_of(sch, loop) or 1
    if n > 1:
        run_in_parallel(sch, outputs, info, work=work)


def _gathers(block: tirx.SBlock) -> bool:
    """Whether a spatial block reads more than one element of some input per output element along the
    innermost (vectorised) axis (a resize's taps at computed indices): inlined into an element-wise chain, every
    use of its value gathers again. Taps from other rows are plain vector loads (a separable upsample's second
    stage), cheaper inlined than stored per map and read back (on x86 too: 2x upsample + GELU of 1024 x 7x7,
    rows first, 0.40 -> 0.20 ms on Zen 4 with the second stage inlined, not stored per map)."""
    if is_reduction(block):
        return False
    return any(not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1) for region in block.reads
               for r in region.region[-1:])


def _per_map(sch: Schedule, block) -> list:
    """Compute a gathering block once per 2-D map (e.g. per channel, 14x14 for EfficientFormerV2's upsample)
    into a local buffer that its consumer then reads with plain vector loads, instead of inlining it.
    Measured: 2x upsample + GELU on 1024 x 14 x 14, 1.6 -> 0.6 ms (Zen 3). Inlined if that does not apply.
    Returns the consumer it was computed in (a list of one), or an empty list."""
    consumers = sch.get_consumers(block)
    if len(consumers) == 1:
        loops = sch.get_loops(consumers[0])
        written = sch.get(block).writes[0].source
        # (also inside a consumer that is itself computed per map: more loops than dimensions)
        nested = len(loops) > len(written.shape)
        if len(loops) >= 3 and (len(written.shape) == len(loops) or nested):
            try:
                sch.compute_at(block, loops[-3], preserve_unit_loops=True)
                sch.set_scope(block, 0, "local")
                return consumers
            except Exception:  # noqa: BLE001 - e.g. the consumer reads it transposed
                pass
    try:
        sch.compute_inline(block)
    except Exception:  # noqa: BLE001 - stays a separate pass over memory
        pass
    return []


def _window(block: tirx.SBlock, info: CpuInfo) -> bool:
    """Whether a reduction sums a small window (pooling: at most 7 x 7 taps) of one input along the output's
    innermost axis (at least 4 wide), the window's column added to the output's (``x * s + rx``)."""
    spatial = [iv for iv in block.iter_vars if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv for iv in block.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    sources = [r for r in block.reads if not r.source.same_as(block.writes[0].source)]
    if not is_reduction(block) or not spatial or len(sources) != 1 or \
            any(not extent(iv) or extent(iv) > 7 for iv in reduce):
        return False
    x, rx = spatial[-1].var, reduce[-1].var
    source = sources[0]
    last = {v.name for v in tirx.analysis.undefined_vars(source.region[-1].min, [])}
    return 4 <= (extent(spatial[-1]) or 0) and str(block.writes[0].region[-1].min) == x.name \
        and last == {x.name, rx.name}


def _schedule_window(sch: Schedule, block, info: CpuInfo) -> list[str]:
    """Sum a window a vector of outputs at a time: the taps loop outside the vector of columns, so each tap is
    one (unaligned) vector load and add into registers; the consumer (the epilogue) is computed per vector
    tile from them. Measured on efficientformer_l1's 3x3 pooling (aarch64, qemu count): 147 -> 12 instructions
    per output. Returns the names of the blocks it scheduled."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    n_spatial = sum(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)
    if len(loops) != len(stmt.iter_vars):
        return []
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    width = extent_of(sch, spatial[-1])
    tile = vector_tile(width, info.lanes, 4 * info.lanes)
    if tile < info.lanes:  # 14- or 7-wide rows: the whole row (3 vectors and a half: LLVM splits it)
        tile = width
    outer, lanes = sch.split(spatial[-1], [None, tile])
    sch.reorder(*spatial[:-1], outer, *reduce, lanes)
    names = [stmt.name_hint]
    consumers = sch.get_consumers(block)
    if len(consumers) == 1:
        names.append(sch.get(consumers[0]).name_hint)
        sch.reverse_compute_at(consumers[0], outer, preserve_unit_loops=False)
        sch.vectorize(sch.get_loops(consumers[0])[-1])
        # the tile's sums: a "global" stack array LLVM keeps in registers; "local" is a heap buffer per tile
        sch.set_scope(block, 0, "global" if info.lane_fma else "local")
    sch.vectorize(lanes)
    for loop in reduce:
        sch.unroll(loop)
    run_in_parallel(sch, spatial[:-1], info)  # (before decompose_reduction: TVM checks the loop's dataflow)
    sch.decompose_reduction(block, reduce[0])
    return names + [stmt.name_hint + "_init", stmt.name_hint + "_update"]


def _fuse_ragged_rows(sch: Schedule, block, info: CpuInfo) -> None:
    """Fuse a spatial block's two innermost loops into one when the innermost (a 28-, 14- or 7-wide row of a
    map) is no multiple of the vector and every buffer the block touches through them is indexed ``[..., row,
    column]`` with the map's full shape: the fused loop is then contiguous in all of them, and whole vectors
    cover the map instead of each row leaving its last columns to scalar code. That scalar tail is cheap for
    a float add, not for a chain of quantize steps (a division and a rounding each): efficientformer_l1's int8
    pooling mixer (96 x 28 x 28, four quantize steps) 1.3 -> 0.13-0.3 ms per call (Zen 4, 16 lanes, loaded
    machine). Transposes and gathers (another index order, computed indices) are left as they are."""
    from tvm.s_tir.stmt import SBlockRealize

    loops = sch.get_loops(block)
    stmt = sch.get(block)
    if len(loops) < 2 or len(loops) != len(stmt.iter_vars):
        return
    rows, cols = extent_of(sch, loops[-2]), extent_of(sch, loops[-1])
    if not rows or not cols or rows == 1 or cols % info.lanes == 0:
        return
    realize = sch.get(loops[-1]).body
    if not isinstance(realize, SBlockRealize) or any(
            not value.same_as(sch.get(loop).loop_var) for value, loop in zip(realize.iter_values[-2:], loops[-2:])):
        return
    row, col = (iv.var for iv in stmt.iter_vars[-2:])
    for region in [*stmt.reads, *stmt.writes]:
        ranges = list(region.region)
        uses = [i for i, r in enumerate(ranges)
                if any(v.same_as(row) or v.same_as(col) for v in tirx.analysis.undefined_vars(r.min, []))]
        if not uses:
            continue
        shape = [int(d) if isinstance(d, tirx.IntImm) else None for d in region.source.shape[-2:]]
        if uses != [len(ranges) - 2, len(ranges) - 1] or not ranges[-2].min.same_as(row) or \
                not ranges[-1].min.same_as(col) or shape != [rows, cols] or \
                any(not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1) for r in ranges[-2:]):
            return
    sch.fuse(loops[-2], loops[-1])
