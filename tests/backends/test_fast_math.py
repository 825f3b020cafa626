"""Fast-math rewrites: division by a constant becomes a multiply where that is safe, and the result still
matches onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from edgevit.backends import tvm_compiler
from edgevit.backends.fast_math import MultiplyByReciprocal
from edgevit.backends.relax_rewrite import is_op
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.targets import get_target


def _ops(mod: tvm.IRModule) -> list:
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call) else None)
    return calls


def _divide(divisor) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    y = relax.Var("y", relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.divide(x, y if divisor is None else relax.const(divisor)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("divisor,rewritten", [
    (np.float32(np.sqrt(2)), True),                        # GELU's x / sqrt(2)
    (np.array([[2.0], [3.0]], np.float32), True),          # a broadcast constant
    (np.array([[2.0], [0.0]], np.float32), False),         # a zero: x / 0 is inf or nan, keep IEEE semantics
    (np.float32(1e-39), False),                            # a denormal: its reciprocal overflows
    (None, False),                                         # not a constant
])
def test_division_by_a_constant_becomes_a_multiply(divisor, rewritten):
    mod = MultiplyByReciprocal()(_divide(divisor))
    ops = {c.op.name for c in _ops(mod) if isinstance(c.op, tvm.ir.Op)}
    assert ops == ({"relax.multiply"} if rewritten else {"relax.divide"})
    if rewritten:
        (call,) = [c for c in _ops(mod) if is_op(c, "relax.multiply")]
        np.testing.assert_array_equal(call.args[1].value.numpy(), np.float32(1) / divisor)


def test_gelu_with_reciprocal_matches_onnxruntime(tmp_path):
    """PyTorch's exported erf GELU (``x / sqrt(2)``) built with the rewrite, against onnxruntime."""
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("sqrt2", np.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 9, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 9, 11])], consts)
    path = tmp_path / "gelu.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
                     .SerializeToString())
    model = load_model(str(path))
    cpu = get_target("host").cpu
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    assert not any("divide" in gv.name_hint for gv, _ in fused.functions_items())
    from tvm.runtime import vm

    inputs = [x * 4 for x in random_inputs(model.inputs, 0)]
    executable = tvm_compiler.build(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    out = vm.VirtualMachine(executable, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in inputs])
    result = compare([out.numpy()], run_onnxruntime(model.onnx_path, inputs))
    assert result.max_rel_error <= 1e-5, result


@pytest.mark.parametrize("nonpositive", [False, True])
def test_fast_exp_accuracy_and_saturation(nonpositive):
    """``fast_exp`` within 3e-7 of numpy's exp (float64) where exp is a normal float32; 0 far below, finite far
    above (sigmoid's ``exp(-x)`` then gives 0, not nan)."""
    from tvm import te

    from edgevit.backends.fast_math import fast_exp

    x = te.placeholder((4096,), "float32", name="x")
    lib = tvm.compile(te.create_prim_func([x, fast_exp(x, nonpositive=nonpositive)]), target={"kind": "llvm"})
    xs = np.concatenate([np.linspace(-87, 0 if nonpositive else 88, 4000), [-90, -200, -np.inf] + [-1e30] * 93])
    xs = xs.astype(np.float32)
    if not nonpositive:
        xs[-90:] = [100, 1e4, np.inf] * 30
    out = tvm.runtime.tensor(np.zeros_like(xs))
    lib(tvm.runtime.tensor(xs), out)
    got, want = out.numpy(), np.exp(xs[:4000].astype(np.float64))
    assert np.max(np.abs(got[:4000] - want) / want) < 3e-7
    assert np.all(got[4000:4003] < 1e-37)
    assert np.all(np.isfinite(got)) and np.all(got >= 0)


def test_fast_gelu_accuracy_and_saturation():
    """``fast_gelu`` (immediate constants and constants as scalar parameters) within 3e-7 |x| of the exact GELU
    (float64 erf), 0 far below and x far above, like TVM's composed ``fast_erf`` GELU."""
    import math

    from tvm import te

    from edgevit.backends.fast_math import GELU_CONSTANTS, fast_gelu

    x = te.placeholder((8192,), "float32", name="x")
    xs = np.concatenate([np.linspace(-8, 8, 8000), [-1e4, -30, -6, 6, 30, 1e4], np.zeros(186)]).astype(np.float32)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in xs.astype(np.float64)])
    scalars = [te.placeholder((), "float32", name=f"c{i}") for i in range(len(GELU_CONSTANTS))]
    for args, inputs in (([x], []), ([x, *scalars], [np.float32(v) for v in GELU_CONSTANTS])):
        lib = tvm.compile(te.create_prim_func([*args, fast_gelu(*args)]), target={"kind": "llvm"})
        out = tvm.runtime.tensor(np.zeros_like(xs))
        lib(tvm.runtime.tensor(xs), *[tvm.runtime.tensor(np.array(v)) for v in inputs], out)
        got = out.numpy()
        assert np.max(np.abs(got - want) / np.maximum(np.abs(xs), 1)) < 3e-7
        assert got[8000] == 0 and got[8005] == np.float32(1e4)


def _gelu_graph(form: str, half: float = 0.5, same_input: bool = True) -> tvm.IRModule:
    """PyTorch's exact GELU in Relax (``x / sqrt2`` already a multiply), grouped as ``form`` says."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    other = relax.Var("other", relax.TensorType((2, 8), "float32"))
    with bb.function("main", [x, other]):
        with bb.dataflow():
            scaled = bb.emit(relax.op.multiply(x if same_input else other, relax.const(np.float32(2 ** -0.5))))
            shifted = bb.emit(relax.op.add(bb.emit(relax.op.erf(scaled)), relax.const(np.float32(1))))
            if form == "x * (0.5 * (1 + erf))":
                out = relax.op.multiply(x, bb.emit(relax.op.multiply(relax.const(np.float32(half)), shifted)))
            else:
                out = relax.op.multiply(bb.emit(relax.op.multiply(x, shifted)), relax.const(np.float32(half)))
            out = bb.emit_output(out)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("form,half,same_input,rewritten", [
    ("x * (0.5 * (1 + erf))", 0.5, True, True),     # as timm's models export it
    ("(x * (1 + erf)) * 0.5", 0.5, True, True),     # as nn.GELU's decomposition writes it
    ("x * (0.5 * (1 + erf))", 0.25, True, False),   # not a GELU: another factor
    ("x * (0.5 * (1 + erf))", 0.5, False, False),   # erf of another tensor
])
def test_exact_gelu_becomes_one_kernel(form, half, same_input, rewritten):
    from edgevit.backends.fast_math import FastGelu

    mod = FastGelu()(_gelu_graph(form, half, same_input))
    ops = {c.op.name for c in _ops(mod) if isinstance(c.op, tvm.ir.Op)}
    if rewritten:
        assert ops == {"relax.call_tir"} and any("fast_gelu" in gv.name_hint for gv, _ in mod.functions_items())
    else:
        assert "relax.erf" in ops and not any("fast_gelu" in gv.name_hint for gv, _ in mod.functions_items())
