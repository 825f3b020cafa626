"""Small kernel buffers on the stack: the TIR pipeline edgevit builds CPU kernels with.

TVM 0.27's ``LowerTVMBuiltin`` turns every buffer allocation into a ``TVMBackendAllocWorkspace`` /
``FreeWorkspace`` pair unless it is in "global" scope and under 1024 bytes (``kMaxStackAlloca``, strict). A
register tile's accumulators are such a buffer: with AVX-512 a 16-register tile (2 x 8, 1 x 16, 4 x 4 vectors)
is exactly 1024 bytes, so it was heap memory, allocated per parallel iteration and zeroed by a ``memset`` per
tile that LLVM cannot drop (it cannot keep heap memory in registers). ``LowerTVMBuiltin`` leaves allocations
annotated ``disable_lower_builtin`` to the code generator, which makes them stack arrays (``alloca``), and LLVM
promotes a stack array indexed by constants to registers. :func:`stack_small_buffers` adds that annotation to
every constant-size allocation up to :data:`STACK_LIMIT` bytes, just before ``LowerTVMBuiltin`` (the passes
before it rebuild allocations without their annotations). Larger buffers (a panel of a chunked reduction, a
kernel's intermediate maps) stay workspace allocations.
"""

from __future__ import annotations

import tvm
from tvm import tirx

#: The largest allocation put on the stack: a whole register file of 32 512-bit vectors, the largest register
#: tile (edgevit's tiles use at most 3/4 of the registers).
STACK_LIMIT = 32 * 64

#: The name of the TIR pipeline (TVM's "s_tir" one with :func:`stack_small_buffers`) builds use.
PIPELINE = "edgevit_stack_buffers"

_DISABLE_LOWER_BUILTIN = "disable_lower_builtin"  # TVM's transform::kDisableLowerTVMBuiltin


def _bytes(buffer) -> int | None:
    """The size of a buffer of constant shape, else None."""
    dtype = tvm.DataType(str(buffer.dtype))
    size = dtype.bits * dtype.lanes // 8
    for extent in buffer.shape:
        if not isinstance(extent, tirx.IntImm):
            return None
        size *= extent.value
    return size


def _annotate(stmt):
    """``stmt`` with the small allocations in it annotated; the same object where nothing changed.

    TVM 0.27 has no statement mutator in Python, so the statements that hold others are rebuilt here; an
    allocation inside any other kind of statement is left as it is (a workspace allocation, as before).
    """
    if isinstance(stmt, tirx.AllocBuffer):
        size = _bytes(stmt.buffer)
        if size is None or size > STACK_LIMIT or _DISABLE_LOWER_BUILTIN in stmt.annotations:
            return stmt
        return tirx.AllocBuffer(stmt.buffer, {**stmt.annotations, _DISABLE_LOWER_BUILTIN: tirx.IntImm("bool", 1)},
                                stmt.span)
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_annotate(s) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq)) else tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _annotate(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.For(
            stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations,
            stmt.step, stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        body = _annotate(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body,
                                                                   stmt.span)
    if isinstance(stmt, tirx.While):
        body = _annotate(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _annotate(stmt.then_case)
        other = _annotate(stmt.else_case) if stmt.else_case is not None else None
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    return stmt


@tirx.transform.prim_func_pass(opt_level=0, name="StackSmallBuffers")
def stack_small_buffers(func, _mod, _ctx):
    """Mark the allocations of at most :data:`STACK_LIMIT` bytes to stay stack arrays (see the module)."""
    body = _annotate(func.body)
    return func if body.same_as(func.body) else func.with_body(body)


def _pipeline():
    from tvm.s_tir.pipeline import default_s_tir_pipeline

    lower, tvm_finalize_host, finalize_device = default_s_tir_pipeline()

    def finalize_host():
        # TVM's host finalisation starts with LowerTVMBuiltin: the annotation goes on just before it.
        return tvm.transform.Sequential([stack_small_buffers, tvm_finalize_host()])

    return lower, finalize_host, finalize_device


def tir_pipeline() -> str:
    """The name of edgevit's TIR pipeline, registered with TVM (``tvm.compile(..., tir_pipeline=...)``)."""
    tirx.compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline)
    return PIPELINE
