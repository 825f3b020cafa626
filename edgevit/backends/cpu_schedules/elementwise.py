"""Everything else: injective functions (transpose, reshape, concat, slices, element-wise chains) and the
reductions no other rule takes. Producers are inlined into their consumers; what remains is vectorised and run
in parallel; long contiguous reductions get one partial result per vector lane."""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import Schedule

from .common import CpuInfo, is_reduction, root_blocks, schedule_elementwise
from .row_reduction import vector_rfactor, vectorize_partials


def apply(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule any function; returns None only if it has no blocks."""
    info = CpuInfo.of(target)
    sch = Schedule(func)
    blocks = root_blocks(sch)
    if not blocks:
        return None
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(sch.get_sblock("root"))}
    for block in reversed(blocks):
        stmt = sch.get(block)
        if stmt.name_hint in outputs or is_reduction(stmt):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - a block with several consumers or a reduction consumer stays
            pass
    for block in root_blocks(sch):
        if not is_reduction(sch.get(block)):
            schedule_elementwise(sch, block, info)
            continue
        try:  # a long contiguous reduction gets one partial sum per vector lane
            partial = vector_rfactor(sch, block, info)
            if partial is not None:
                vectorize_partials(sch, sch.get_sblock(partial))
        except Exception:  # noqa: BLE001 - left as a scalar reduction
            pass
    return sch
