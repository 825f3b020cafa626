"""Depthwise convolutions of int8 activations by int8 weights, accumulated in int32, and their CPU schedule.

A QDQ depthwise conv ran in float between a dequantize and a quantize step. Here it multiplies the int8 input
(padded with its zero point) by the int8 weights: each product is exact in int16 (``|x·w| <= 2^14``), and
two neighbouring taps' products are added in int16 before widening into the int32 accumulator when no weight
is -128 (``|x·w + x'·w'| <= 2·128·127 < 2^15``; onnxruntime's symmetric weights are in [-127, 127]). On NEON
that is ``smull`` + ``smlal`` + ``saddw``/``saddw2``: 16 multiply-adds in 4 instructions. The caller
(``edgevit.backends.int8``) requantizes the accumulator as it does for every int8 conv.
"""

from __future__ import annotations

import numpy as np
from tvm import te, tirx
from tvm.s_tir import Schedule

from .cpu_schedules.common import CpuInfo, largest_divisor, root_blocks, run_in_parallel, schedule_elementwise

#: Output pixels of a row computed together (one int8 vector on NEON); fewer where the row is shorter.
_ROW_TILE = 16


def depthwise_weights(wq: np.ndarray, pair_sums: bool) -> np.ndarray:
    """``[C, 1, kh, kw]`` int8 weights as ``[C, taps / group, group]`` (``group`` = 2 taps added in int16, or 1),
    zero-padded to whole groups."""
    c, _, kh, kw = wq.shape
    group = 2 if pair_sums else 1
    taps = -(-kh * kw // group) * group
    flat = np.zeros((c, taps), np.int8)
    flat[:, :kh * kw] = wq.reshape(c, kh * kw)
    return flat.reshape(c, taps // group, group)


def depthwise_conv2d_int32(data: te.Tensor, weight: te.Tensor, kernel_size, strides, dilation) -> te.Tensor:
    """NCHW depthwise convolution of an already padded int8 input by :func:`depthwise_weights`' int8 weights:
    ``Σ_groups int32(Σ_group int16(x) · int16(w))``, int32 ``[1, C, OH, OW]``.

    With a horizontal stride ``s`` > 1 the input's columns are first split into ``s`` phases (column
    ``j·s + p`` at ``[p, j]``): every tap then reads consecutive values of one phase, which vector loads
    can do (strided, each lane was loaded on its own)."""
    _, c, h, w = (int(d) for d in data.shape)
    kh, kw = kernel_size
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    groups, group = (int(d) for d in weight.shape[1:])
    r = te.reduce_axis((0, groups), "r")
    if sw > 1:
        phases = te.compute((c, h, sw, -(-w // sw)), lambda cc, y, p, j: data[0, cc, y, te.min(j * sw + p, w - 1)],
                            name="int8_depthwise_phases")
        column = lambda cc, row, x, kx: phases[cc, row, kx * dw % sw, x + kx * dw // sw]  # noqa: E731
    else:
        column = lambda cc, row, x, kx: data[0, cc, row, x + kx * dw]  # noqa: E731

    def tap(cc, y, x, t):
        t = te.min(t, kh * kw - 1)  # padded taps (zero weights) read the last tap's value
        return column(cc, y * sh + t // kw * dh, x, t % kw).astype("int16")

    def body(n, cc, y, x):
        products = [tap(cc, y, x, r * group + g) * weight[cc, r, g].astype("int16") for g in range(group)]
        return te.sum(sum(products[1:], products[0]).astype("int32"), axis=r)

    return te.compute((1, c, oh, ow), body, name="int8_depthwise_conv", attrs={"taps": kh * kw})


def emit_depthwise(builder, xq, wq: np.ndarray, zx: int, strides, padding, dilation):
    """Emit an int8 depthwise conv (NCHW, batch 1, ``wq`` ``[C, 1, kh, kw]``) into a Relax builder: pad with the
    zero point (float zero), multiply-accumulate. Returns the int32 accumulator ``Σ xq · wq``, or None for a
    batch."""
    from tvm import relax

    if int(xq.ty.shape[0]) != 1:
        return None
    top, left, bottom, right = padding
    if top or left or bottom or right:
        xq = builder.emit(relax.op.nn.pad(xq, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zx)))
    weights = depthwise_weights(wq, pair_sums=int(wq.min()) > -128)
    return builder.call_te(depthwise_conv2d_int32, xq, relax.const(weights), list(wq.shape[2:]), strides, dilation,
                           primfunc_name_hint="int8_depthwise_conv")


def schedule_depthwise(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule a function holding an ``int8_depthwise_conv`` block: per channel and output row, tiles of
    ``_ROW_TILE`` pixels accumulate in registers over the unrolled taps, and the requantizing epilogue (with
    what fusion added) runs on each tile. A padding fused before it stays a buffer (inlined, every tap would
    test its bounds). None if there is no such block."""
    sch = Schedule(func)
    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    if names.count("int8_depthwise_conv") != 1:
        return None
    info = CpuInfo.of(target)
    conv = sch.get_sblock("int8_depthwise_conv")
    feeding = {r.source for r in sch.get(conv).reads}
    for block in reversed(root_blocks(sch)):
        stmt = sch.get(block)
        if stmt.name_hint == "int8_depthwise_conv" or any(stmt.writes[0].source.same_as(b) for b in feeding):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - e.g. the output block: the epilogue is what remains
            pass
    conv = sch.get_sblock("int8_depthwise_conv")
    consumers = sch.get_consumers(conv)
    if len(consumers) > 1:
        return None
    if not consumers:  # the int32 result is the output: accumulate in registers all the same
        sch.cache_write(conv, 0, "global")
        conv = sch.get_sblock("int8_depthwise_conv")
        consumers = sch.get_consumers(conv)
    epilogue = consumers[0]
    prologue = [b for b in root_blocks(sch) if sch.get(b).name_hint != "int8_depthwise_conv"
                and not sch.get(b).same_as(sch.get(epilogue))]
    n, c, y, x, r = sch.get_loops(conv)
    tile = largest_divisor(int(sch.get(x).extent), _ROW_TILE, multiple_of=info.lanes)
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, c, y, xo, r, xi)
    sch.reverse_compute_at(epilogue, xo, preserve_unit_loops=False)
    own = sch.get_loops(epilogue)[4:]
    if own:
        sch.vectorize(sch.fuse(*own) if len(own) > 1 else own[0])
    run_in_parallel(sch, [n, c], info)  # before decompose_reduction, as vectorize
    sch.set_scope(conv, 0, "local")
    sch.vectorize(xi)  # before decompose_reduction: the update alone is no reduction block
    init = sch.decompose_reduction(conv, r)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(r)
    for block in prologue:
        if sch.get(block).name_hint == "int8_depthwise_phases":
            # left to LLVM's loop vectoriser, which loads the phases of a row interleaved (ld2 on NEON)
            _, _, p, j = sch.get_loops(block)
            sch.reorder(j, p)
            sch.unroll(p)
        else:
            schedule_elementwise(sch, block, info)
    return sch
