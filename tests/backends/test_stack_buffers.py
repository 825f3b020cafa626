"""edgevit's TIR pipeline keeps small kernel buffers (register tiles' accumulators) off TVM's workspace heap."""

from __future__ import annotations

import re

import pytest
from test_cpu_schedules import AVX512, _assembly, _conv
from tvm import tirx

from edgevit.backends import stack_buffers, tvm_compiler
from edgevit.backends.cpu_schedules import tiled_reduction
from edgevit.frontend import load_model


def _workspace_sizes(asm: str) -> list[int]:
    """The byte counts of the kernel's TVMBackendAllocWorkspace calls (x86-64: the size is the third argument)."""
    return [int(n) for n in re.findall(r"movl\s+\$(\d+), %edx\n(?:.*\n){0,8}?\s+callq\s+\*\(%r\w+\)", asm)]


def test_avx512_accumulator_tile_is_not_a_workspace_allocation(tmp_path):
    import tvm

    # A 1x1 conv on a 56x56 map: with AVX-512 its register tile is 2 vectors x 8 channels, 16 accumulators of
    # 64 bytes: 1024 bytes, one more than TVM keeps on the stack.
    model = load_model(_conv(tmp_path / "c.onnx", 32, 32, 56, 1))
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), AVX512)
    func = next(f for gv, f in fused.functions_items() if "conv2d" in gv.name_hint)
    target = tvm_compiler.make_target(AVX512.tvm)
    sch = tiled_reduction.apply(func, target)
    mod = tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")})
    default = _assembly(tvm.compile(mod, target=target))
    # TVM's own pipeline: the tile is heap memory, zeroed by memset (else this case no longer covers anything)
    assert 1024 in _workspace_sizes(default) and "memset" in default
    asm = _assembly(tvm.compile(mod, target=target, tir_pipeline=stack_buffers.tir_pipeline()))
    assert 1024 not in _workspace_sizes(asm) and "memset" not in asm, _workspace_sizes(asm)
    assert re.search(r"vfmadd\w+\s+%zmm\d+, %zmm\d+, %zmm\d+", asm)  # the FMAs on registers


@pytest.mark.parametrize("shape, stacked", [((16, 32), True), ((8, 64), True), ((2, 1024), False)])
def test_only_small_constant_buffers_are_annotated(shape, stacked):
    buffer = tirx.decl_buffer(shape, "float32", "acc")
    stmt = tirx.SeqStmt([tirx.AllocBuffer(buffer), tirx.Evaluate(0)])
    loop = tirx.For(tirx.Var("i", "int32"), 0, 4, tirx.ForKind.PARALLEL, stmt)
    alloc = stack_buffers._annotate(loop).body.seq[0]
    assert ("disable_lower_builtin" in alloc.annotations) == stacked
