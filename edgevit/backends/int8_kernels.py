"""int8 dot-product kernels: convolutions (groups 1) and matmuls by constant weights on the CPU's dot-product
instructions (x86 VNNI ``vpdpbusd``, aarch64 ``sdot``) or, on aarch64 cores without them (Cortex-A53/A72), on
widening NEON multiplies (``smull``/``smlal``/``sadalp``), chosen per target from :data:`DOT_KERNELS`.

Every kernel is one multiply-accumulate shape, the one the instructions compute: ``lanes`` int32 accumulators,
each adding a 4-long dot product of a broadcast operand ``A[0:4]`` with its own row of ``B[lane, 0:4]``:

- **conv**: lanes are output pixels. ``A`` = the weights of one output channel (4 input channels of the
  ``[F, kh*kw*C]`` constant, at compile time), ``B`` = the input packed at run time as ``[K/4, pixels, 4]`` (4
  input channels of a pixel together: :func:`pack_conv_input`, an im2col for kxk kernels). The output comes out
  NCHW, so the requantizing epilogue stores whole vectors of pixels. On ``sdot`` a conv whose output channels
  are a multiple of 4 takes its weights as ``[K/4, F, 4]`` instead: one 16-byte load holds 4 channels' k-block
  and ``sdot`` by element (``sdot v.4s, b.16b, a.4b[r]``) picks each channel's 4 bytes, where the broadcast
  form loaded each channel's 4 bytes on their own (``ld1r``).
- **matmul** by a constant: lanes are output features. ``A`` = 4 consecutive values of an activation row,
  ``B`` = the weights packed at compile time as ``[K/4, N, 4]``. On ``sdot``, when K is a multiple of 16, one
  call takes 4 k-blocks: a row's 16 activations in one load, each k-block's 4 by lane (``sdot v.4s, b.16b,
  a.4b[kb]``), where the broadcast form loaded each k-block's 4 on their own (``ld1r``).

On aarch64 the register tile's accumulators are a "global" buffer (a stack array LLVM keeps in registers), not a
"local" one (a TVMBackendAllocWorkspace buffer, which LLVM kept in memory).

The NEON kernel takes two such k-blocks per call (``blocks``) and keeps 2 int32 partial sums per output
(``partials``), added in the epilogue: that is how ``sadalp`` accumulates without a horizontal add per call. Its
constant operands are stored so that each 16-byte half feeds a widening multiply directly: conv weights
duplicated (:func:`duplicate_pair_weights`), matmul weights two outputs' two k-blocks per 16 bytes
(:func:`pair_matmul_weights`).

x86's ``vpdpbusd`` multiplies unsigned by signed bytes. The activations are shifted by +128 into uint8 (as
onnxruntime and oneDNN do) and ``128 Σw`` is folded into the per-channel int32 constant. For the conv, where
the activations are the vector operand, edgevit registers ``vpdpbusd`` with its operands the other way round
from TVM's ``dot_16x4_vnni`` (signed broadcast, unsigned vectors). The intrinsics are registered here rather
than imported from ``tvm.s_tir.tensor_intrin``: importing that package registers every GPU/DSP intrinsic too
and takes ~40 s on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx
from tvm.s_tir import Schedule, TensorIntrin
from tvm.script import tirx as T

from .cpu_schedules.common import (CpuInfo, inline_injective, largest_divisor, root_blocks, run_in_parallel,
                                   schedule_elementwise)


def _dot_desc(lanes: int, a_dtype: str, b_dtype: str, scope: str = "local"):
    """What an intrinsic computes: ``C[i] += A[k] * B[i, k]`` over ``lanes`` x 4 (``scope``: the accumulators')."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), b_dtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _dot_impl(lanes: int, a_dtype: str, b_dtype: str, llvm_intrinsic: str, broadcast_first: bool):
    """One dot-product instruction: ``llvm_intrinsic(acc, x, y)`` with the broadcast ``A`` as ``x`` or ``y``."""
    a4, b_vec, acc = f"{a_dtype}x4", f"{b_dtype}x{4 * lanes}", f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), b_dtype, offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # LLVM's vpdpbusd takes its operands as <64 x i8> (TVM's own dot_16x4_vnni still passes <16 x i32>,
            # which this LLVM rejects)
            a_words = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], a4), dtype="int32"), lanes),
                                    dtype=f"{a_dtype}x{4 * lanes}")
            b_words = B.vload([0, 0], b_vec)
            if broadcast_first:
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(llvm_intrinsic), C.vload([0], acc), a_words, b_words, dtype=acc)
            else:
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(llvm_intrinsic), C.vload([0], acc), b_words, a_words, dtype=acc)

    return impl


def _sdot(acc, b, a):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), acc, b, a,
                                   dtype="int32x4")


def _word_lane(bytes16, lane: int):
    """32-bit word ``lane`` of 16 bytes over all four words (what ``sdot``'s by-element operand is)."""
    return T.reinterpret(T.Shuffle([T.reinterpret(bytes16, dtype="int32x4")], [lane] * 4), dtype="int8x16")


# The impls below write their operands inline: a named value in an intrinsic's body becomes a "local" buffer, a
# TVMBackendAllocWorkspace call per parallel task (per tile where the tile loop is the parallel one).


def _sdot_impl(scope: str):
    """``sdot`` (aarch64 +dotprod): its operands are 16 bytes each, so the broadcast is reinterpreted as such."""

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = _sdot(
                C.vload([0], "int32x4"), T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"),
                                                                                 dtype="int32"), 4), dtype="int8x16"),
                B.vload([0, 0], "int8x16"))

    return impl


def _rows_desc(rows: int, scope: str):
    """What the lane-indexed conv intrinsic computes: ``rows`` output channels x 4 pixels, ``C[r, i] += Σ_k
    A[r, k] · B[i, k]``, with the ``rows`` channels' 4 weights side by side in ``A`` (the ``[K/4, F, 4]``
    weight layout) and the accumulator rows ``stride`` apart."""
    stride = T.int32()

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (rows, 4), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (rows, 4), "int32", offset_factor=1, scope=scope, strides=[stride, 1])
        with T.sblock("root"):
            T.reads(C[0:rows, 0:4], A[0:rows, 0:4], B[0:4, 0:4])
            T.writes(C[0:rows, 0:4])
            for r, i, k in T.grid(rows, 4, 4):
                with T.sblock("update"):
                    vr, vi, vk = T.axis.remap("SSR", [r, i, k])
                    C[vr, vi] = C[vr, vi] + T.Cast("int32", A[vr, vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _sdot_rows_impl(scope: str):
    """``sdot`` by element: the 4 channels' weights in one 16-byte load, each channel's 4 bytes taken by lane
    (``sdot v.4s, b.16b, a.4b[r]``) instead of a broadcast load per channel (``ld1r``)."""
    stride = T.int32()

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4, 4), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (4, 4), "int32", offset_factor=1, scope=scope, strides=[stride, 1])
        with T.sblock("root"):
            T.reads(C[0:4, 0:4], A[0:4, 0:4], B[0:4, 0:4])
            T.writes(C[0:4, 0:4])
            C[0, T.ramp(T.int32(0), 1, 4)] = _sdot(C.vload([0, 0], "int32x4"), B.vload([0, 0], "int8x16"),
                                                   _word_lane(A.vload([0, 0], "int8x16"), 0))
            C[1, T.ramp(T.int32(0), 1, 4)] = _sdot(C.vload([1, 0], "int32x4"), B.vload([0, 0], "int8x16"),
                                                   _word_lane(A.vload([0, 0], "int8x16"), 1))
            C[2, T.ramp(T.int32(0), 1, 4)] = _sdot(C.vload([2, 0], "int32x4"), B.vload([0, 0], "int8x16"),
                                                   _word_lane(A.vload([0, 0], "int8x16"), 2))
            C[3, T.ramp(T.int32(0), 1, 4)] = _sdot(C.vload([3, 0], "int32x4"), B.vload([0, 0], "int8x16"),
                                                   _word_lane(A.vload([0, 0], "int8x16"), 3))

    return impl


def _matmul_lane_desc(scope: str):
    """What the lane-indexed matmul intrinsic computes: 4 outputs over 4 k-blocks, ``C[i] += Σ A[4kb + k] ·
    B[kb, i, k]`` (``A`` 16 consecutive activations of a row, ``B`` 4 k-blocks of the ``[K/4, N, 4]`` weights,
    a row of them ``stride`` apart)."""
    stride = T.int32()

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4, 4), "int8", offset_factor=1, strides=[stride, 4, 1])
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:16], B[0:4, 0:4, 0:4])
            T.writes(C[0:4])
            for i, kb, k in T.grid(4, 4, 4):
                with T.sblock("update"):
                    vi, vkb, vk = T.axis.remap("SRR", [i, kb, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vkb * 4 + vk]) * T.Cast("int32", B[vkb, vi, vk])

    return desc


def _sdot_matmul_lane_impl(scope: str):
    """``sdot`` by element for a matmul (XNNPACK's ``qs8-gemm ... neondot`` kernels): a row's 16 activations in
    one load, k-block ``kb``'s 4 taken by lane (``sdot v.4s, b.16b, a.4b[kb]``), where the broadcast form
    loads each k-block's 4 on their own (``ld1r``)."""
    stride = T.int32()

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (16,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4, 4), "int8", offset_factor=1, strides=[stride, 4, 1])
        C = T.match_buffer(c, (4,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:4], A[0:16], B[0:4, 0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = _sdot(_sdot(_sdot(_sdot(
                C.vload([0], "int32x4"), B.vload([0, 0, 0], "int8x16"), _word_lane(A.vload([0], "int8x16"), 0)),
                B.vload([1, 0, 0], "int8x16"), _word_lane(A.vload([0], "int8x16"), 1)),
                B.vload([2, 0, 0], "int8x16"), _word_lane(A.vload([0], "int8x16"), 2)),
                B.vload([3, 0, 0], "int8x16"), _word_lane(A.vload([0], "int8x16"), 3))

    return impl


def _pair_desc(a_size: int, a_offsets, scope: str):
    """What the NEON conv pair intrinsic computes: 4 outputs x 2 k-blocks of 4, each output kept as 2 int32
    partial sums ``C[2i + j]`` over the k with ``k % 4 // 2 == j`` (their sum is the dot product). ``B`` is two
    k-blocks of the ``[K/4, lanes, 4]`` packing, a row apart; k-block ``r``'s values of ``A`` are read from
    ``A[base_r + step_r * j + k]``, ``(base_r, step_r) = a_offsets[r]``."""
    stride = T.int32()
    (r0_base, r0_step), (r1_base, r1_step) = a_offsets

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (a_size,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 4, 4), "int8", offset_factor=1, strides=[stride, 4, 1])
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:a_size], B[0:2, 0:4, 0:4])
            T.writes(C[0:8])
            for i, j, k in T.grid(4, 2, 2):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi * 2 + vj] = C[vi * 2 + vj] + (
                        T.Cast("int32", A[r0_base + vj * r0_step + vk]) * T.Cast("int32", B[0, vi, vj * 2 + vk])
                        + T.Cast("int32", A[r1_base + vj * r1_step + vk]) * T.Cast("int32", B[1, vi, vj * 2 + vk]))

    return desc


def _block_desc(scope: str):
    """:func:`_pair_desc` for one k-block (``A[2j + k]``, ``B`` one k-block)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:4, 0:4])
            T.writes(C[0:8])
            for i, j, k in T.grid(4, 2, 2):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi * 2 + vj] = C[vi * 2 + vj] + T.Cast("int32", A[vj * 2 + vk]) \
                        * T.Cast("int32", B[vi, vj * 2 + vk])

    return desc


#: Where the matmul pair intrinsic reads its 8 activations: k-block r at ``4r + 2j + k``.
_PLAIN_A = ((0, 2), (4, 2))
#: Where the conv pair intrinsic reads its weights, stored at compile time as ``[lo lo hi hi | hi hi lo lo]``
#: (32-bit words; lo = the 4 weights of the first k-block, hi the second): lo at 0, hi at 20. Its two 16-byte
#: halves then hold, in each 8-byte half, the weights the neighbouring products need. The intrinsic's region is
#: the first 24 bytes (two reads with the same step in j: a region of constant extent, which tensorize can
#: match); its second 16-byte load reads the 8 bytes after them, the rest of the same 32 (copies of lo).
_DUPLICATED_A = (24, ((0, 2), (20, 2)))


def duplicate_pair_weights(matrix):
    """An ``[F, K]`` weight matrix (K a multiple of 8) in the layout the conv pair intrinsic loads: per 8 k,
    the 32-bit words ``lo lo hi hi hi hi lo lo`` (``[F, K/8, 32]``: a reduction step is its own axis, so that
    the intrinsic's region of it does not depend on the step)."""
    import numpy as np

    f, k = matrix.shape
    words = np.ascontiguousarray(matrix).view(np.int32).reshape(f, k // 8, 2)
    lo, hi = words[..., 0], words[..., 1]
    return np.ascontiguousarray(np.stack([lo, lo, hi, hi, hi, hi, lo, lo], axis=-1)).view(np.int8)


def _smull(a, b):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"), a, b,
                                   dtype="int16x8")


def _saddlp(x):
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), x,
                                   dtype="int32x4")


def _low(x):
    return T.vectorlow(x, dtype="int8x8")


def _high(x):
    return T.vectorhigh(x, dtype="int8x8")


def _spread(bytes8):
    """8 bytes as 32-bit words ``lo lo hi hi`` (``zip1``)."""
    words = T.reinterpret(bytes8, dtype="int32x2")
    return T.reinterpret(T.Shuffle([words, words], [0, 2, 1, 3]), dtype="int8x16")


def _twice(bytes4):
    """4 bytes twice (8 bytes)."""
    return T.reinterpret(T.broadcast(T.reinterpret(bytes4, dtype="int32"), 2), dtype="int8x8")


def _pair_conv_impl(scope: str):
    """NEON without dot products (Cortex-A53/A72), as gemmlowp/ruy/XNNPACK do it: ``smull`` multiplies 8 int8
    pairs into int16, ``smlal`` adds the 8 products of the next k-block to them (two products summed in int16:
    exact while no pair of operands is both -128, i.e. weights in [-127, 127]), ``sadalp`` adds neighbouring
    int16 lanes into the int32 partial sums: 32 multiply-adds in 6 instructions.

    The conv's ``A`` holds the weights as :func:`duplicate_pair_weights` stores them: two 16-byte loads whose
    halves feed ``smull``/``smlal`` (low halves) and ``smull2``/``smlal2`` (high halves) directly."""
    stride = T.int32()
    size = _DUPLICATED_A[0]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (size,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 4, 4), "int8", offset_factor=1, strides=[stride, 4, 1])
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:size], B[0:2, 0:4, 0:4])
            T.writes(C[0:8])
            # A's second 16 bytes: bytes 24..31 are past the region, within the step's 32
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + _saddlp(
                _smull(_low(A.vload([0], "int8x16")), _low(B.vload([0, 0, 0], "int8x16")))
                + _smull(_low(A.vload([16], "int8x16")), _low(B.vload([1, 0, 0], "int8x16"))))
            C[T.ramp(T.int32(4), 1, 4)] = C.vload([4], "int32x4") + _saddlp(
                _smull(_high(A.vload([16], "int8x16")), _high(B.vload([0, 0, 0], "int8x16")))
                + _smull(_high(A.vload([0], "int8x16")), _high(B.vload([1, 0, 0], "int8x16"))))

    return impl


def _pair_matmul_desc(scope: str):
    """:func:`_pair_desc` for a matmul by constant weights packed by :func:`pair_matmul_weights`: ``A`` 8
    activations, ``B[i // 2, r, i % 2, k]`` (the two k-blocks of two neighbouring outputs in 16 bytes)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 2, 2, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:8], B[0:2, 0:2, 0:2, 0:4])
            T.writes(C[0:8])
            for i, j, k in T.grid(4, 2, 2):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi * 2 + vj] = C[vi * 2 + vj] + (
                        T.Cast("int32", A[vj * 2 + vk]) * T.Cast("int32", B[vi // 2, 0, vi % 2, vj * 2 + vk])
                        + T.Cast("int32", A[4 + vj * 2 + vk]) * T.Cast("int32", B[vi // 2, 1, vi % 2, vj * 2 + vk]))

    return desc


def _pair_matmul_impl(scope: str):
    """The matmul's pair intrinsic: the 8 activations loaded once and spread as ``lo lo hi hi`` (``zip1``);
    each 16 bytes of ``B`` hold two outputs' first k-block (low half) and second (high half), so ``smull`` on
    the low halves and ``smlal2`` on the high halves add the two k-blocks' products."""

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (8,), "int8", offset_factor=1)
        B = T.match_buffer(b, (2, 2, 2, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:8], B[0:2, 0:2, 0:2, 0:4])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + _saddlp(
                _smull(_low(_spread(A.vload([0], "int8x8"))), _low(B.vload([0, 0, 0, 0], "int8x16")))
                + _smull(_high(_spread(A.vload([0], "int8x8"))), _high(B.vload([0, 0, 0, 0], "int8x16"))))
            C[T.ramp(T.int32(4), 1, 4)] = C.vload([4], "int32x4") + _saddlp(
                _smull(_low(_spread(A.vload([0], "int8x8"))), _low(B.vload([1, 0, 0, 0], "int8x16")))
                + _smull(_high(_spread(A.vload([0], "int8x8"))), _high(B.vload([1, 0, 0, 0], "int8x16"))))

    return impl


def pair_matmul_weights(wq):
    """``[K, N]`` int8 weights as :func:`_pair_matmul_impl` reads them: ``[K/8, N/2, 2, 2, 4]`` (per 8 k and
    2 outputs: k-block, output, 4 k)."""
    import numpy as np

    k, n = wq.shape
    return np.ascontiguousarray(wq.reshape(k // 8, 2, 4, n // 2, 2).transpose(0, 3, 1, 4, 2))


def _widening_impl(scope: str):
    """The exact NEON intrinsic, for operands that may both be -128: one k-block, each product widened on its
    own (``smull`` + ``sadalp``: 16 multiply-adds in 4 instructions)."""

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (4, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1, scope=scope)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:4, 0:4])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], "int32x4") + _saddlp(
                _smull(_twice(A.vload([0], "int8x4")), _low(B.vload([0, 0], "int8x16"))))
            C[T.ramp(T.int32(4), 1, 4)] = C.vload([4], "int32x4") + _saddlp(
                _smull(_twice(A.vload([0], "int8x4")), _high(B.vload([0, 0], "int8x16"))))

    return impl


def _register(name: str, lanes: int, a_dtype: str, b_dtype: str, impl, scope: str = "local") -> str:
    TensorIntrin.register(name, _dot_desc(lanes, a_dtype, b_dtype, scope), impl, override=True)
    return name


def _register_pair(name: str, desc, impl) -> str:
    TensorIntrin.register(name, desc, impl, override=True)
    return name


@dataclass(frozen=True)
class DotKernel:
    """One row of :data:`DOT_KERNELS`: the dot-product instruction of an instruction set and how to feed it."""

    isa: str                  # what the kernels' names say (``int8_dot_conv_avx512vnni``)
    feature: str              # the LLVM CPU feature that selects it
    lanes: int                # int32 accumulators per instruction
    shift: int                # added to the activations to make them the instruction's unsigned operand
    conv_intrin: str          # signed weights broadcast, activations in lanes
    matmul_intrin: str        # activations broadcast, signed weights in lanes
    accumulators: int         # accumulator registers of a register tile (the rest hold operands)
    partials: int = 1         # int32 partial sums per output (over disjoint k), added in the epilogue
    blocks: int = 1           # k-blocks of 4 per intrinsic call (conv/matmul intrinsics)
    exact_intrin: str = ""    # for operands that may both be -128 (pair sums overflow int16; one k-block per
    #                           call); "": the others are exact
    conv_rows_intrin: str = ""  # conv on 4 output channels per call, weights ``[K/4, F, 4]`` (F a multiple of 4)
    matmul_lane_intrin: str = ""  # matmul over 4 k-blocks per call, activations by lane (K a multiple of 16)
    accumulator_scope: str = "local"  # of the register tile's accumulators (see _sdot_kernel)

    @property
    def depth(self) -> int:
        """k per conv/matmul intrinsic call: K must be a multiple of it."""
        return 4 * self.blocks


def _vnni_kernel() -> DotKernel:
    vnni = "llvm.x86.avx512.vpdpbusd.512"
    return DotKernel(
        "avx512vnni", "avx512vnni", 16, 128,
        _register("edgevit_vnni_16x4_s8_bcast_u8", 16, "int8", "uint8", _dot_impl(16, "int8", "uint8", vnni, False)),
        _register("edgevit_vnni_16x4_u8_bcast_s8", 16, "uint8", "int8", _dot_impl(16, "uint8", "int8", vnni, True)),
        24)


def _sdot_kernel() -> DotKernel:
    # The tile's accumulators in a "global" buffer: a stack array, which LLVM keeps in registers. A "local" one
    # is a TVMBackendAllocWorkspace buffer that LLVM must assume the output stores may alias: the tile was
    # zeroed in memory, stored after the reduction and partly reloaded by the epilogue.
    scope = "global"
    sdot = _register("edgevit_sdot_4x4_s8s8", 4, "int8", "int8", _sdot_impl(scope), scope)
    rows = _register_pair("edgevit_sdot_4x4x4_s8s8_lane", _rows_desc(4, scope), _sdot_rows_impl(scope))
    lane = _register_pair("edgevit_sdot_4x16_s8s8_matmul_lane", _matmul_lane_desc(scope),
                          _sdot_matmul_lane_impl(scope))
    return DotKernel("sdot", "dotprod", 4, 0, sdot, sdot, 24, conv_rows_intrin=rows, matmul_lane_intrin=lane,
                     accumulator_scope=scope)


def _neon_kernel() -> DotKernel:
    scope = "global"  # as for sdot
    conv = _register_pair("edgevit_neon_4x8_s8s8_smlal_dup", _pair_desc(*_DUPLICATED_A, scope),
                          _pair_conv_impl(scope))
    matmul = _register_pair("edgevit_neon_4x8_s8s8_smlal_zip", _pair_matmul_desc(scope), _pair_matmul_impl(scope))
    return DotKernel("neon", "neon", 4, 0, conv, matmul, 16, partials=2, blocks=2,
                     exact_intrin=_register_pair("edgevit_neon_4x4_s8s8_smull", _block_desc(scope),
                                                 _widening_impl(scope)), accumulator_scope=scope)


#: Instruction sets with an int8 kernel, best first; a target takes the first whose LLVM feature its
#: mcpu/mattr has. ``neon`` (Cortex-A53/A72: no dot product) widens to int16 (``smull``/``smlal``/``sadalp``).
#: Other CPUs keep the widening int16 kernels of ``edgevit.backends.int8``.
DOT_KERNELS = [("avx512vnni", _vnni_kernel), ("dotprod", _sdot_kernel), ("neon", _neon_kernel)]


def dot_kernel_for(target) -> DotKernel | None:
    """The :data:`DOT_KERNELS` row for a TVM llvm target, or None."""
    from tvm.target import codegen

    for feature, make in DOT_KERNELS:
        if codegen.target_has_features(feature, target):
            return make()
    return None


def _ceil4(n: int) -> int:
    return -(-n // 4) * 4


def pack_conv_input(data: te.Tensor, kh: int, kw: int, strides, dilation, shift: int, dtype: str,
                    pixels: int = 0, rows: int = 0) -> te.Tensor:
    """Pack an already padded NCHW int8 input (channels a multiple of 4) as ``[kh*kw*C/4, OH*OW, 4]``: row
    ``(ry*kw + rx)*C/4 + c/4`` holds, for every output pixel, input channels ``c..c+3`` at kernel tap (ry, rx)
    (plus ``shift``, stored as ``dtype``). For a 1x1 conv this only interleaves 4 channels. ``pixels`` > OH*OW
    pads the pixel axis to whole vectors (repeating the last pixel: those outputs are cropped); ``rows`` >
    kh*kw*C/4 adds rows repeating the last one (their weights are zero)."""
    _, c, h, w = (int(d) for d in data.shape)
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilation)
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    cb = c // 4
    padded = max(pixels, oh * ow)

    def value(kb, p, kk):
        if rows > kh * kw * cb:
            kb = te.min(kb, kh * kw * cb - 1)
        tap, channel = kb // cb, (kb % cb) * 4 + kk
        if padded != oh * ow:
            p = te.min(p, oh * ow - 1)
        y, x = p // ow * sh + tap // kw * dh, p % ow * sw + tap % kw * dw
        return (data[0, channel, y, x].astype("int32") + shift).astype(dtype)

    # The output width lets the schedule iterate over rows and columns instead of dividing the pixel index.
    return te.compute((max(rows, kh * kw * cb), padded, 4), value, name="int8_pack_conv_input",
                      attrs={"out_width": ow if padded == oh * ow else 0, "taps": kh * kw})


def _sum_partials(part: te.Tensor, shape, index) -> te.Tensor:
    """``out[idx] = Σ_j part[index(idx), j]``: the partial sums of :func:`conv_dot`/:func:`matmul_dot` added."""
    partials = int(part.shape[-1])

    def total(*idx):
        where = index(*idx)
        value = part[(*where, 0)]
        for j in range(1, partials):
            value = value + part[(*where, j)]
        return value

    return te.compute(shape, total, name="int8_partial_sums")


def _partial_sum(a, b, blocks: int, a_offsets):
    """The body of a partial sums block: ``Σ_r a(rb, offset of block r) · b(rb, r, k)`` over the ``blocks``
    (1 or 2) k-blocks of reduction step ``rb``; ``a_offsets`` the (base, step in j) of each block in ``a``'s
    step (see :func:`_pair_desc`)."""
    def body(j, rb, rk):
        if blocks == 1:
            return a(rb, j * 2 + rk).astype("int32") * b(rb, 0, j * 2 + rk).astype("int32")
        (base0, step0), (base1, step1) = a_offsets
        return (a(rb, base0 + j * step0 + rk).astype("int32") * b(rb, 0, j * 2 + rk).astype("int32")
                + a(rb, base1 + j * step1 + rk).astype("int32") * b(rb, 1, j * 2 + rk).astype("int32"))
    return body


def conv_dot(packed: te.Tensor, weight: te.Tensor, out_height: int, out_width: int, partials: int = 1,
             blocks: int = 1, pair_sums: bool = True, block_major: bool = False) -> te.Tensor:
    """``out[0, f, y, x] = Σ_k weight[f, k] · packed[k/4, y*OW + x, k%4]`` in int32 (weights first: the
    broadcast operand).

    With ``partials`` (2) the reduction block computes 2 sums per output pixel (``[1, F, pixels, 2]``, over the
    k with ``k % 4 // 2 == j``) and a second block adds them; with ``blocks`` (2) each reduction step takes two
    k-blocks, from weights stored by :func:`duplicate_pair_weights`. ``pair_sums`` (annotated on the block) says
    whether the kernel may add two products in int16: no weight is -128. ``block_major``: the weights are
    ``[K/4, F, 4]`` (4 channels' k-block in 16 bytes, for the lane-indexed intrinsic)."""
    kb, pixels, _ = (int(d) for d in packed.shape)
    f = int(weight.shape[1 if block_major else 0])
    flat = pixels != out_height * out_width  # pixels padded to whole vectors: ``[1, F, pixels]``, cropped later
    attrs = {"out_width": 0 if flat else out_width, "int16_pair_sums": int(pair_sums),
             "block_major": int(block_major)}
    if partials > 1:
        rb, rk = te.reduce_axis((0, kb // blocks), "rb"), te.reduce_axis((0, 2), "rk")
        part = te.compute(
            (1, f, pixels, partials),
            lambda n, ff, p, j: te.sum(_partial_sum(
                (lambda r, o: weight[ff, r, o]) if blocks > 1 else (lambda r, o: weight[ff, r * 4 + o]),
                lambda b, r, k: packed[b * blocks + r, p, k], blocks, _DUPLICATED_A[1])(j, rb, rk), axis=[rb, rk]),
            name="int8_dot_conv", attrs=attrs)
        if flat:
            return _sum_partials(part, (1, f, pixels), lambda n, ff, p: (n, ff, p))
        return _sum_partials(part, (1, f, out_height, out_width),
                             lambda n, ff, y, x: (n, ff, y * out_width + x))
    rb, rk = te.reduce_axis((0, kb), "rb"), te.reduce_axis((0, 4), "rk")

    def w(ff):
        return (weight[rb, ff, rk] if block_major else weight[ff, rb * 4 + rk]).astype("int32")

    if flat:
        return te.compute(
            (1, f, pixels), lambda n, ff, p: te.sum(w(ff) * packed[rb, p, rk].astype("int32"), axis=[rb, rk]),
            name="int8_dot_conv", attrs=attrs)
    return te.compute(
        (1, f, out_height, out_width),
        lambda n, ff, y, x: te.sum(w(ff) * packed[rb, y * out_width + x, rk].astype("int32"), axis=[rb, rk]),
        name="int8_dot_conv", attrs=attrs)


def matmul_dot(data: te.Tensor, packed_weight: te.Tensor, partials: int = 1, blocks: int = 1,
               pair_sums: bool = True) -> te.Tensor:
    """``out[..., m, n] = Σ_k data[..., m, k] · packed_weight[..., k/4, n, k%4]`` in int32 (activations first).

    ``packed_weight`` is a constant ``[K/4, N, 4]`` or, for a product of two activations, the right-hand one
    packed at run time with the same batch dimensions as ``data`` (:func:`pack_matmul_operand`). ``partials``,
    ``blocks`` and ``pair_sums`` as in :func:`conv_dot` (the activations are read as they are; with ``blocks``
    2 the constant weights are in :func:`pair_matmul_weights`' layout)."""
    if blocks > 1:
        kb, n = int(packed_weight.shape[0]) * blocks, int(packed_weight.shape[1]) * 2
    else:
        kb, n, _ = (int(d) for d in packed_weight.shape[-3:])
    batched = blocks == 1 and len(packed_weight.shape) > 3
    attrs = {"int16_pair_sums": int(pair_sums)}
    if partials > 1:
        rb, rk = te.reduce_axis((0, kb // blocks), "rb"), te.reduce_axis((0, 2), "rk")

        def value(*idx):
            batch, m, col, j = idx[:-3], idx[-3], idx[-2], idx[-1]
            if blocks > 1:  # constant weights in pair_matmul_weights' layout
                weight = lambda b, r, k: packed_weight[b, col // 2, r, col % 2, k]  # noqa: E731
            else:
                weight = lambda b, r, k: packed_weight[(*(batch if batched else ()), b, col, k)]  # noqa: E731
            return te.sum(_partial_sum(lambda r, o: data[(*batch, m, r * 4 * blocks + o)], weight, blocks,
                                       _PLAIN_A)(j, rb, rk), axis=[rb, rk])

        part = te.compute((*data.shape[:-1], n, partials), value, name="int8_dot_matmul", attrs=attrs)
        return _sum_partials(part, (*data.shape[:-1], n), lambda *idx: idx)
    rb, rk = te.reduce_axis((0, kb), "rb"), te.reduce_axis((0, 4), "rk")
    return te.compute(
        (*data.shape[:-1], n),
        lambda *idx: te.sum(data[(*idx[:-1], rb * 4 + rk)].astype("int32")
                            * packed_weight[(*(idx[:-2] if batched else ()), rb, idx[-1], rk)].astype("int32"),
                            axis=[rb, rk]),
        name="int8_dot_matmul", attrs=attrs)


def pack_matmul_operand(data: te.Tensor) -> te.Tensor:
    """An int8 ``[..., K, N]`` right-hand operand as ``[..., K/4, N, 4]``, at run time."""
    *batch, k, n = (int(d) for d in data.shape)
    return te.compute((*batch, k // 4, n, 4), lambda *i: data[(*i[:-3], i[-3] * 4 + i[-1], i[-2])],
                      name="int8_pack_matmul_operand")


def shift_to_unsigned(data: te.Tensor, shift: int) -> te.Tensor:
    """``uint8(data + shift)``: int8 activations as the unsigned operand of ``vpdpbusd``."""
    return te.compute(data.shape, lambda *i: (data[i].astype("int32") + shift).astype("uint8"),
                      name="int8_shift_to_unsigned")


def conv_weights(wq, cp: int, depth: int = 4):
    """OIHW int8 weights as the ``[F, kh*kw*Cp]`` matrix :func:`pack_conv_input`'s rows multiply (input channels
    zero-padded to ``cp``, innermost; then zero columns up to a multiple of ``depth``)."""
    import numpy as np

    f, c, kh, kw = wq.shape
    padded = np.zeros((f, cp, kh, kw), np.int8)
    padded[:, :c] = wq
    k = kh * kw * cp
    matrix = np.zeros((f, -(-k // depth) * depth), np.int8)
    matrix[:, :k] = padded.transpose(0, 2, 3, 1).reshape(f, k)
    return matrix


def matmul_weights(wq):
    """``[K, N]`` int8 weights as ``[K/4, N, 4]`` (4 consecutive k of an output feature together)."""
    import numpy as np

    k, n = wq.shape
    return np.ascontiguousarray(wq.reshape(k // 4, 4, n).transpose(0, 2, 1))


def emit_conv(builder, dot: DotKernel, xq, wq, zx: int, strides, padding, dilation, out_size):
    """Emit an int8 convolution (groups 1, NCHW, batch 1) on ``dot``'s instruction into a Relax builder: pad
    with the zero point ``zx``, pack (:func:`pack_conv_input`), multiply-accumulate (:func:`conv_dot`).

    Returns the int32 accumulator ``Σ (xq + dot.shift) · wq`` as ``[1, F, OH, OW]``, or as ``[1, F, P]`` when
    the output pixels make no whole vectors (P: padded to whole vectors; the caller crops), or None for a batch.
    """
    import numpy as np
    from tvm import relax

    oh, ow = out_size
    if int(xq.ty.shape[0]) != 1:
        return None
    pixels = -(-oh * ow // dot.lanes) * dot.lanes
    top, left, bottom, right = padding
    channels = wq.shape[1]
    cp = -(-channels // 4) * 4
    if top or left or bottom or right or cp != channels:
        # padding (and the channels up to a multiple of 4) hold the zero point: float zero
        xq = builder.emit(relax.op.nn.pad(xq, [0, 0, 0, cp - channels, top, bottom, left, right], pad_value=float(zx)))
    weights = conv_weights(wq, cp, dot.depth)
    packed = builder.emit_te(pack_conv_input, xq, wq.shape[2], wq.shape[3], strides, dilation, dot.shift,
                             "uint8" if dot.shift else "int8", pixels, weights.shape[1] // 4,
                             primfunc_name_hint="int8_pack_conv_input")
    pair_sums = _pair_sums_fit(dot, wq)
    blocks = dot.blocks if pair_sums else 1
    if blocks > 1:
        weights = duplicate_pair_weights(weights)
    block_major = bool(dot.conv_rows_intrin) and weights.shape[0] % 4 == 0
    if block_major:  # [K/4, F, 4]: 4 channels' k-block in 16 bytes
        weights = np.ascontiguousarray(weights.reshape(weights.shape[0], -1, 4).transpose(1, 0, 2))
    return builder.call_te(conv_dot, packed, relax.const(weights), oh, ow, dot.partials, blocks, pair_sums,
                           block_major, primfunc_name_hint=f"int8_dot_conv_{dot.isa}")


def emit_matmul(builder, dot: DotKernel, xq, wq):
    """Emit ``xq @ wq`` (int8 activations ``[..., M, K]``, constant int8 ``[K, N]``) on ``dot``'s instruction.

    Returns the int32 accumulator ``Σ (xq + dot.shift) · wq``, or None when K is no multiple of the kernel's
    depth or N no whole vectors."""
    from tvm import relax

    k, n = wq.shape
    if k % dot.depth or n % dot.lanes:
        return None
    if dot.shift:
        xq = builder.emit_te(shift_to_unsigned, xq, dot.shift, primfunc_name_hint="int8_shift")
    pair_sums = _pair_sums_fit(dot, wq)
    blocks = dot.blocks if pair_sums else 1
    weights = pair_matmul_weights(wq) if blocks > 1 else matmul_weights(wq)
    return builder.call_te(matmul_dot, xq, relax.const(weights), dot.partials, blocks, pair_sums,
                           primfunc_name_hint=f"int8_dot_matmul_{dot.isa}")


def emit_activation_matmul(builder, dot: DotKernel, xq, yq):
    """Emit ``xq @ yq`` of two int8 activations (``[..., M, K]`` and ``[..., K, N]``, equal batch dimensions)
    on ``dot``'s instruction: ``yq`` is packed at run time. Returns the int32 ``Σ (xq + dot.shift) · yq``, or
    None when the shapes do not fit (K no multiple of 4, N no whole vectors, batch dimensions differing)."""
    x_shape, y_shape = [int(d) for d in xq.ty.shape], [int(d) for d in yq.ty.shape]
    if len(x_shape) != len(y_shape) or x_shape[:-2] != y_shape[:-2] or x_shape[-1] != y_shape[-2] \
            or x_shape[-1] % dot.depth or y_shape[-1] % dot.lanes:
        return None
    packed = builder.emit_te(pack_matmul_operand, yq, primfunc_name_hint="int8_pack_matmul_operand")
    if dot.shift:
        xq = builder.emit_te(shift_to_unsigned, xq, dot.shift, primfunc_name_hint="int8_shift")
    # both operands are activations: either may be -128, so no int16 pair sums
    pair_sums = not dot.exact_intrin
    return builder.call_te(matmul_dot, xq, packed, dot.partials, dot.blocks if pair_sums else 1, pair_sums,
                           primfunc_name_hint=f"int8_dot_matmul_{dot.isa}")


def _pair_sums_fit(dot: DotKernel, wq) -> bool:
    """Whether ``dot`` may add two products in int16 for constant weights ``wq``: none of them is -128 (then
    |a·w + a'·w'| <= 2·128·127 < 2^15 for any int8 activations a, a'). onnxruntime's symmetric int8 weights
    are in [-127, 127]; a model with -128 weights gets the exact kernel."""
    return not dot.exact_intrin or int(wq.min()) > -128


def _pick_tile(rows: int, vectors: int, budget: int, row_step: int = 1) -> tuple[int, int]:
    """(rows, vectors) of the register tile: the most accumulators within ``budget``, rows a multiple of
    ``row_step`` (the rows one intrinsic call takes) dividing ``rows`` and vectors dividing ``vectors`` (at
    most 4: each vector load then feeds every row)."""
    best = (0, 0, row_step, 1)
    for v in (4, 2, 1):
        if vectors % v:
            continue
        r = row_step * largest_divisor(rows // row_step, max(1, budget // v // row_step))
        best = max(best, (r * v, -r // row_step - v, r, v))  # ties: fewer operand loads per step
    return best[2], best[3]


def schedule_dot_kernel(func: tirx.PrimFunc, target, kernel: DotKernel) -> Schedule | None:
    """Schedule a function holding an ``int8_dot_*`` block: register tiles of ``rows x vectors*lanes``
    accumulators over the dot-product instruction (tensorized), the requantizing epilogue per tile from the
    accumulators. Input packing fused into the function is computed first, vectorised. None if no such block."""
    sch = Schedule(func)
    names = [sch.get(b).name_hint for b in root_blocks(sch)]
    dots = [n for n in names if n.startswith("int8_dot_")]
    if len(dots) != 1:
        return None
    name = dots[0]
    conv = name.startswith("int8_dot_conv")
    dot = sch.get_sblock(name)
    feeding = {r.source for r in sch.get(dot).reads}
    prologue = []
    for block in root_blocks(sch):
        stmt = sch.get(block)
        if stmt.name_hint == name:
            break
        if any(stmt.writes[0].source.same_as(b) for b in feeding):
            prologue.append(stmt.name_hint)
        else:
            sch.compute_inline(block)  # e.g. a residual's dequantize: it feeds only the epilogue
    dot = sch.get_sblock(name)
    if not sch.get_consumers(dot):  # the int32 result is the output: accumulate in a local tile all the same
        sch.cache_write(dot, 0, "global")
        dot = sch.get_sblock(name)
    # The epilogue (requantize, and what fusion added: SiLU's Q/DQ steps, a residual add) becomes one block
    # computed per tile from the accumulators.
    inline_injective(sch, {name, *prologue})
    consumers = sch.get_consumers(sch.get_sblock(name))
    if len(consumers) != 1:
        return None
    if conv and int(sch.get(sch.get_sblock(name)).annotations["out_width"]):  # NCHW output (not padded pixels)
        # after inlining: the epilogue block that remains must iterate over pixels too
        _flatten_conv_pixels(sch, sch.get_sblock(name), kernel.partials == 1)
        consumers = sch.get_consumers(sch.get_sblock(name))
    epilogue = consumers[0]
    dot = sch.get_sblock(name)
    if kernel.partials > 1:  # an output's partial sums side by side: the intrinsic's accumulator vectors
        sch.transform_layout(dot, ("write", 0), tirx.IndexMap.from_func(
            lambda *v: [*v[:-2], v[-2] * kernel.partials + v[-1]], ndim=len(sch.get(dot).writes[0].region)))
    intrin = kernel.conv_intrin if conv else kernel.matmul_intrin
    if kernel.exact_intrin and not int(sch.get(dot).annotations["int16_pair_sums"]):
        intrin = kernel.exact_intrin
    loops = sch.get_loops(dot)
    partial = loops[-3:-2] if kernel.partials > 1 else []  # the loop over an output's partial sums
    *lead, rows_loop, cols_loop = loops[:-2 - len(partial)]
    rb, rk = loops[-2:]
    rows, cols = int(sch.get(rows_loop).extent), int(sch.get(cols_loop).extent)
    if cols % kernel.lanes:
        return None
    # lane-indexed conv intrinsic (4 channels per call, one weight load): rows of 4 under the vector loop
    step = 4 if conv and int(sch.get(dot).annotations.get("block_major", 0)) else 1
    by_lane = not conv and bool(kernel.matmul_lane_intrin) and int(sch.get(rb).extent) % 4 == 0 \
        and intrin == kernel.matmul_intrin
    tile_rows, tile_vectors = _pick_tile(rows, cols // kernel.lanes, kernel.accumulators // kernel.partials, step)
    ro, ri = sch.split(rows_loop, [None, tile_rows])
    co, cv, cl = sch.split(cols_loop, [None, tile_vectors, kernel.lanes])
    tensorized = cl
    if step > 1:
        intrin = kernel.conv_rows_intrin
        ri, r4 = sch.split(ri, [None, step])
        sch.reorder(*lead, ro, co, rb, ri, cv, r4, cl, rk)
        tensorized = r4
    elif by_lane:  # 4 k-blocks per call: one load of a row's 16 activations
        intrin = kernel.matmul_lane_intrin
        rb, rb4 = sch.split(rb, [None, 4])
        sch.reorder(*lead, ro, co, rb, ri, cv, cl, rb4, rk)
    else:
        sch.reorder(*lead, ro, co, rb, ri, cv, cl, *partial, rk)
    sch.reverse_compute_at(epilogue, co, preserve_unit_loops=False)
    info = CpuInfo.of(target)
    run_in_parallel(sch, [*lead, ro], info)  # before tensorizing: TVM cannot parallelise over the tensorized block
    loops = sch.get_loops(epilogue)
    own = loops[1 + next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(co))):]
    if own:
        sch.vectorize(own[-1])
        for loop in own[:-1] if kernel.partials == 1 else []:  # the tile's rows: its accumulators stay in
            sch.unroll(loop)                                     # registers (a loop stores and reloads them)
    sch.set_scope(dot, 0, kernel.accumulator_scope)
    init = sch.decompose_reduction(dot, rb)
    init_loops = sch.get_loops(init)[-1 - len(partial):]
    sch.vectorize(sch.fuse(*init_loops) if partial else init_loops[0])
    sch.tensorize(tensorized, intrin)
    sch.unroll(ri)
    sch.unroll(cv)
    for block_name in prologue:
        _schedule_pack(sch, sch.get_sblock(block_name), info)
    return sch


def _flatten_conv_pixels(sch: Schedule, dot, nchw: bool) -> None:
    """Iterate the conv block (``nchw``: unless it writes partial sums over pixels already) and its epilogue
    over output pixels ``y * OW + x``, the packed input's axis."""
    width = int(sch.get(dot).annotations["out_width"])
    if nchw:
        sch.transform_layout(dot, ("write", 0), tirx.IndexMap.from_func(
            lambda n, f, y, x: [n, f, y * width + x], ndim=4))
        sch.transform_block_layout(dot, tirx.IndexMap.from_func(
            lambda n, f, y, x, rb, rk: [n, f, y * width + x, rb, rk], ndim=6))
    for consumer in sch.get_consumers(dot):
        sch.transform_block_layout(consumer, tirx.IndexMap.from_func(
            lambda *v: [*v[:-2], v[-2] * width + v[-1]], ndim=len(sch.get(consumer).iter_vars)))


def _schedule_pack(sch: Schedule, block, info: CpuInfo) -> None:
    """An input packing fused into the kernel: its 4 interleaved channels unrolled, so that LLVM's loop
    vectoriser sees 4 contiguous rows stored interleaved (``st4`` on aarch64, shuffles on x86)."""
    if sch.get(block).name_hint != "int8_pack_conv_input":
        schedule_elementwise(sch, block, info, parallel=False)
        return
    _pack_over_rows(sch, block)
    sch.unroll(sch.get_loops(block)[-1])


def _pack_over_rows(sch: Schedule, block) -> None:
    """Iterate the packing over (tap row, y, x, channel) instead of pixels ``p``: ``x`` is then the
    contiguous (stride-1 convs) loop LLVM vectorises, with no division per element."""
    width = int(sch.get(block).annotations["out_width"])
    if not width:  # pixels padded to whole vectors: no rows to iterate over
        return
    sch.transform_block_layout(block, tirx.IndexMap.from_func(
        lambda kb, p, kk: [kb, p // width, p % width, kk], ndim=3))


def schedule_pack_kernel(func: tirx.PrimFunc, target) -> Schedule | None:
    """Schedule a stand-alone :func:`pack_conv_input` kernel (see :func:`_schedule_pack`), else None."""
    sch = Schedule(func)
    blocks = root_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    if "int8_pack_matmul_operand" in names:
        for block in blocks:
            if sch.get(block).name_hint != "int8_pack_matmul_operand":
                try:
                    sch.compute_inline(block)
                except Exception:  # noqa: BLE001 - not inlinable: computed as it is
                    schedule_elementwise(sch, block, CpuInfo.of(target))
        sch.unroll(sch.get_loops(sch.get_sblock("int8_pack_matmul_operand"))[-1])
        return sch
    if "int8_pack_conv_input" not in names:
        return None
    taps = int(sch.get(sch.get_sblock("int8_pack_conv_input")).annotations["taps"])
    info = CpuInfo.of(target)
    for block in blocks:
        if sch.get(block).name_hint == "int8_pack_conv_input":
            continue
        if taps > 1:  # an im2col reads each value kh*kw times: what fusion put before it is computed once
            schedule_elementwise(sch, block, info)
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - not inlinable: computed as it is
            schedule_elementwise(sch, block, info)
    block = sch.get_sblock("int8_pack_conv_input")
    _pack_over_rows(sch, block)
    kb, *_, kk = sch.get_loops(block)
    sch.unroll(kk)
    run_in_parallel(sch, [kb], info)
    return sch


__all__ = ["DOT_KERNELS", "DotKernel", "conv_dot", "conv_weights", "dot_kernel_for", "emit_activation_matmul",
           "emit_conv", "emit_matmul", "matmul_dot", "matmul_weights", "pack_conv_input", "pack_matmul_operand",
           "schedule_dot_kernel", "schedule_pack_kernel", "shift_to_unsigned"]
