"""Row reductions: LayerNorm, softmax, mean/variance, GroupNorm, pooling over trailing axes.

All blocks are computed one row at a time (the leading axes the reductions keep), so each row's data stays in
L1 between the reduction passes and the normalisation; the element-wise parts of a row are vectorised and the
rows run in parallel.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import Schedule

from .common import (PARALLEL_WORK, CpuInfo, extent, extent_of, is_reduction, largest_divisor, root_blocks,
                     run_in_parallel, splits_evenly, static_work, vector_tile)


def apply(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule a function whose reductions all keep the same leading axes as its single output."""
    info = CpuInfo.of(target)
    sch = Schedule(func)
    blocks = root_blocks(sch)
    reductions = [b for b in blocks if is_reduction(sch.get(b))]
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    if not reductions or len(outputs) != 1 or is_reduction(sch.get(outputs[0])):
        return None
    out = outputs[0]
    out_stmt = sch.get(out)
    rows = min(sum(iv.iter_type == tirx.IterVar.DataPar and (extent(iv) or 0) > 1 for iv in sch.get(r).iter_vars)
               for r in reductions)
    out_loops = sch.get_loops(out)
    if len(out_loops) != len(out_stmt.iter_vars):
        return None
    # Leading output axes of extent 1 do not count as rows.
    lead = 0
    kept = 0
    while lead < len(out_loops) and kept < rows:
        if (extent(out_stmt.iter_vars[lead]) or 0) > 1:
            kept += 1
        lead += 1
    if rows == 0 or lead >= len(out_loops):
        return None
    row = sch.fuse(*out_loops[:lead]) if lead > 1 else out_loops[0]
    # before compute_at (rfactor's write-back blocks would fail the dataflow check), so the work is the function's
    run_in_parallel(sch, [row], info, work=static_work(func.body))
    out_name = out_stmt.name_hint
    vector_reductions = [vector_rfactor(sch, r, info) for r in reductions]
    others = [b for b in root_blocks(sch) if sch.get(b).name_hint != out_name]
    for block in reversed(others):
        sch.compute_at(block, row, preserve_unit_loops=False)
    for block in [*others, out]:
        stmt = sch.get(block)
        if stmt.name_hint in vector_reductions:
            vectorize_partials(sch, block)
            continue
        if is_reduction(stmt):
            continue
        loops = sch.get_loops(block)
        if len(loops) > 1:
            inner = sch.fuse(*loops[1:]) if len(loops) > 2 else loops[1]
            n = extent_of(sch, inner)
            vec = vector_tile(n, info.lanes, 2 * info.lanes) if n else 1
            if vec > 1:
                sch.vectorize(sch.split(inner, [None, vec])[1])
    return sch


def vector_rfactor(sch: Schedule, block, info: CpuInfo, lanes_last: bool = False) -> str | None:
    """Split a contiguous innermost reduction into ``lanes`` partial results (a vector accumulator).

    ``lanes_last``: the partial results' buffer has the lanes as its last axis (contiguous per output; else
    first, which is what ``compute_at`` into a row loop compacts to the same). Returns the name of the new
    partial-result block, or None when the reduction is left scalar.
    """
    stmt = sch.get(block)
    reduce = [iv for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    loops = sch.get_loops(block)
    n = extent(stmt.iter_vars[-1])
    if len(reduce) != 1 or stmt.iter_vars[-1].iter_type == tirx.IterVar.DataPar or not n \
            or n % info.lanes or n < 2 * info.lanes:
        return None
    _, inner = sch.split(loops[-1], [None, info.lanes])
    rf = sch.rfactor(inner, len(sch.get(block).writes[0].source.shape) if lanes_last else 0)
    return sch.get(rf).name_hint


def vectorize_partials(sch: Schedule, block) -> None:
    """Put the lane loop of a partial-result block innermost and vectorise it (reductions outside).

    rfactor leaves the lane loop innermost at the root, but ``compute_at`` regenerates the loops in block-iter
    order (lane first): in that case the two are swapped.
    """
    own = [loop for loop in sch.get_loops(block) if int(sch.get(loop).extent) > 1]
    try:
        sch.vectorize(own[-1])
    except Exception:  # noqa: BLE001 - the innermost loop is the reduction: swap
        sch.reorder(own[-1], own[-2])
        sch.vectorize(own[-2])
    sch.decompose_reduction(block, sch.get_loops(block)[-2])


#: A vectorised sum costs about a quarter of an element-wise store (MobileViTv2's GroupNorm statistics: 0.06 ns
#: per element, 1-thread CPU time, vs 0.22-0.27 ns, ``common.PARALLEL_WORK``): it runs in parallel from 4 times
#: the work.
SUM_WORK = 4 * PARALLEL_WORK

#: Slices a reduction to too few outputs to keep the cores busy is cut into, each summed by one iteration of a
#: parallel loop (2, 4 and 8 threads split them evenly).
CHUNKS = 8


def parallel_rfactor(sch: Schedule, block, info: CpuInfo) -> bool:
    """Sum a long contiguous reduction (not inside a row loop) into one partial result per vector lane, in
    parallel: over its outputs when they split evenly over the cores, else (MobileViTv2's GroupNorm statistics
    over the whole tensor, one output) in :data:`CHUNKS` slices of the reduction, each slice's partial sums
    in an iteration of the parallel loop, then added up serially (two-stage). The lanes of each output are
    contiguous in the partial results' buffer (no strided stores in the loop), and each output's lanes (or
    slice's) are added up in the same parallel iteration. Below :data:`SUM_WORK` everything stays serial.
    Returns False when the reduction does not fit :func:`vector_rfactor` (nothing changed).
    """
    stmt = sch.get(block)
    outputs = 1
    for iv in stmt.iter_vars:
        if iv.iter_type == tirx.IterVar.DataPar:
            outputs *= extent(iv) or 1
    n = extent(stmt.iter_vars[-1]) or 0
    serial = info.cores == 1 or outputs * n < SUM_WORK
    chunks = largest_divisor(n // info.lanes, CHUNKS) if n % info.lanes == 0 else 1
    sliced = not serial and not splits_evenly(outputs, info) and splits_evenly(outputs * chunks, info) and \
        n // chunks >= 2 * info.lanes
    if sliced:  # the slice loop becomes the first spatial axis of a partial result per slice
        loops = sch.get_loops(block)
        slice_loop, _ = sch.split(loops[-1], [chunks, None])
        block = sch.rfactor(slice_loop, len(stmt.writes[0].source.shape))
        loops = sch.get_loops(block)
        if len(loops) > 2:
            sch.reorder(loops[-2], *loops[:-2])
    partial = vector_rfactor(sch, block, info, lanes_last=True)
    if partial is None:
        if sliced:
            raise ValueError("a sliced reduction's slices must take a vector rfactor")  # chunks were checked
        return False
    partial_block = sch.get_sblock(partial)
    loops = sch.get_loops(partial_block)
    outer = loops[:-2]  # above the reduction and lane loops: the outputs (and slices)
    if not serial and outer:
        run_in_parallel(sch, outer, info, work=outputs * n)
        combine = sch.get_consumers(partial_block)
        try:  # the lanes' (slice's) sum in the same iteration; else it stays a small serial nest
            sch.reverse_compute_at(combine[0], sch.get_loops(partial_block)[0], preserve_unit_loops=False)
        except Exception:  # noqa: BLE001 - e.g. several consumers
            pass
    vectorize_partials(sch, partial_block)
    return True
