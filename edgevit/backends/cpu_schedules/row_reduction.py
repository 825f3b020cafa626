"""Row reductions: LayerNorm, softmax, mean/variance, GroupNorm, pooling over trailing axes.

All blocks are computed one row at a time (the leading axes the reductions keep), so each row's data stays in
L1 between the reduction passes and the normalisation; the element-wise parts of a row are vectorised and the
rows run in parallel.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import Schedule

from .common import CpuInfo, extent, extent_of, is_reduction, root_blocks, vector_tile


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
    if info.cores != 1:
        sch.parallel(row)  # before compute_at: rfactor's write-back blocks would fail the dataflow check
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


def vector_rfactor(sch: Schedule, block, info: CpuInfo) -> str | None:
    """Split a contiguous innermost reduction into ``lanes`` partial results (a vector accumulator).

    Returns the name of the new partial-result block, or None when the reduction is left scalar.
    """
    stmt = sch.get(block)
    reduce = [iv for iv in stmt.iter_vars if iv.iter_type != tirx.IterVar.DataPar]
    loops = sch.get_loops(block)
    n = extent(stmt.iter_vars[-1])
    if len(reduce) != 1 or stmt.iter_vars[-1].iter_type == tirx.IterVar.DataPar or not n \
            or n % info.lanes or n < 2 * info.lanes:
        return None
    _, inner = sch.split(loops[-1], [None, info.lanes])
    rf = sch.rfactor(inner, 0)
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
