"""Softmax over the last axis of an int8 tensor, quantized to int8, and its CPU schedule.

``quantize(softmax(dequantize(x)))`` needs only ``exp(sx (x - max x))``: ``x - max x`` is one of 256 values, so
the exponentials come from a table (as onnxruntime's QLinearSoftmax does; ``edgevit.backends.int8_tables``
makes it). The kernel looks each value up once into a row buffer, which the sum and the requantization then
read as whole vectors: a lookup is a scalar load per value (NEON has no gather), so doing it twice cost half of
the kernel.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.s_tir import Schedule

from .cpu_schedules.common import CpuInfo, largest_divisor, root_blocks, schedule_elementwise


def softmax_int8(data: te.Tensor, table: te.Tensor, output_scale: float, zero: int) -> te.Tensor:
    """``e = table[x - max(x) + 255]`` (the exponentials of the 256 possible differences), then
    ``clip(round((e · output_scale) / Σe) + zy)`` as int8, along the rows of a 2-D ``data``: onnxruntime's
    QLinearSoftmax with ``output_scale = floor(1 / sy)`` (``edgevit.backends.int8_tables``)."""
    rows, n = data.shape
    k = te.reduce_axis((0, n), "k")
    top = te.compute((rows,), lambda i: te.max(data[i, k], axis=k), name="int8_softmax_max")
    # x - max(x) + 255 is 0..255: one byte (its int8 arithmetic wraps to the same value)
    index = te.compute((rows, n), lambda i, j: (data[i, j].astype("int32") - top[i].astype("int32") + 255)
                       .astype("uint8"), name="int8_softmax_index")
    exp = te.compute((rows, n), lambda i, j: table[index[i, j]], name="int8_softmax_exp")
    j = te.reduce_axis((0, n), "j")
    total = te.compute((rows,), lambda i: te.sum(exp[i, j], axis=j), name="int8_softmax_sum")
    # no clip at -128: e / Σe >= 0 and zy >= -128. (e * scale) / sum, not e * (scale / sum): onnxruntime's
    # order, so values near a half step round the same way
    return te.compute((rows, n), lambda i, c: te.min(te.round(exp[i, c] * output_scale / total[i]) + zero,
                                                     127.0).astype("int8"), name="int8_softmax")


def emit_softmax(builder, xq, table, output_scale: float, zero: int):
    """Emit :func:`softmax_int8` over the last axis of the int8 ``xq`` (static shape) into a Relax builder:
    the rows are one axis (a reshape), so a group of rows is a range of it."""
    from tvm import relax

    shape = [int(d) for d in xq.ty.shape]
    rows = builder.emit(relax.op.reshape(xq, (-1, shape[-1])))
    out = builder.emit_te(softmax_int8, rows, relax.const(table), output_scale, zero,
                          primfunc_name_hint="int8_softmax")
    return relax.op.reshape(out, shape)


#: Bytes of exponentials buffered per group of rows (within L1 next to the rows themselves).
_GROUP_BYTES = 16 * 1024
#: Table lookups per unrolled step.
_UNROLL = 16


def schedule_softmax(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule a :func:`softmax_int8` kernel over groups of rows: each row's maximum in int8 vectors, the
    group's exponentials looked up into one buffer, then per row their sum and the requantization in float32
    vectors. None for any other function."""
    sch = Schedule(func)
    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    if names != ["int8_softmax_max", "int8_softmax_index", "int8_softmax_exp", "int8_softmax_sum", "int8_softmax"]:
        return None
    info = CpuInfo.of(target)
    # int8 lanes for the maximum (4x the float32 lanes), float32 lanes for the sum; split before compute_at
    top = _vector_rfactor(sch, "int8_softmax_max", 4 * info.lanes)
    total = _vector_rfactor(sch, "int8_softmax_sum", info.lanes)
    row, columns = sch.get_loops(sch.get_sblock("int8_softmax"))
    rows, n = int(sch.get(row).extent), int(sch.get(columns).extent)
    # One buffer for a group of rows: a buffer per row is allocated per row (TVMBackendAllocWorkspace, ~330
    # instructions a row on the A72).
    group, row = sch.split(row, [None, largest_divisor(rows, max(1, _GROUP_BYTES // (4 * n)))])
    if info.cores != 1:
        sch.parallel(group)  # before compute_at: rfactor's write-back blocks would fail the dataflow check
    for name, loop in (("int8_softmax_sum", row), (total, row), ("int8_softmax_exp", group),
                       ("int8_softmax_index", group), ("int8_softmax_max", group), (top, group)):
        if name is not None:
            sch.compute_at(sch.get_sblock(name), loop, preserve_unit_loops=False)
    for name, depth in ((top, 1), (total, 2)):  # below the group loop, below the row loop
        if name is not None:
            _vectorize_partials(sch, sch.get_sblock(name), depth)
    schedule_elementwise(sch, sch.get_sblock("int8_softmax_index"), info, parallel=False)
    # the lookups stay scalar (a load each; vectorised, LLVM moves each lane out and back in), unrolled
    columns = sch.get_loops(sch.get_sblock("int8_softmax_exp"))[-1]
    sch.unroll(sch.split(columns, [None, largest_divisor(n, _UNROLL)])[1])
    schedule_elementwise(sch, sch.get_sblock("int8_softmax"), info, parallel=False)
    return sch


def _vector_rfactor(sch: Schedule, name: str, lanes: int) -> str | None:
    """Split a row reduction into ``lanes`` partial results (one vector; the largest power of two up to
    ``lanes`` that divides the row, at least two vectors long). Returns the partial block's name, or None
    for a row left scalar."""
    loop = sch.get_loops(sch.get_sblock(name))[-1]
    n = int(sch.get(loop).extent)
    while lanes > 1 and (n % lanes or n < 2 * lanes):
        lanes //= 2
    if lanes == 1:
        return None
    _, inner = sch.split(loop, [None, lanes])
    return sch.get(sch.rfactor(inner, 0)).name_hint


def _vectorize_partials(sch: Schedule, block, depth: int) -> None:
    """The loops ``compute_at`` made below loop ``depth`` for an rfactor block are (lane, rows..., reduction)
    (its iteration order): put the lane loop innermost, vectorise it, initialise outside the reduction."""
    lane, *rest = sch.get_loops(block)[depth:]
    sch.reorder(*rest, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, rest[-1])
    sch.vectorize(sch.get_loops(init)[-1])
