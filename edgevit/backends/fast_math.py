"""Fast math for CPU builds: TVM's ``FastMathTransform`` plus the sigmoid it leaves out, and division by a
constant as multiplication by its reciprocal.

Without the sigmoid rewrite every SiLU calls a scalar ``expf`` per element (mobilevit_xxs: ~41 ms instead of
~18 ms). ``topi.fast_exp`` is a clamped polynomial that LLVM vectorises;
its relative error (~1e-7) is below the 1e-5 edgevit verifies against. A GELU exported from PyTorch divides by
``sqrt(2)``: an IEEE divide (one per 3.5 cycles and vector on Zen 3) that ``x * (1 / c)`` replaces with a
multiply, at most an ulp away; compilers do not do this on their own since it is not exact.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax import PyExprMutator, expr_functor

from .relax_rewrite import is_op, rewrite_functions


def fast_sigmoid(x: te.Tensor) -> te.Tensor:
    """``1 / (1 + fast_exp(-x))``: vectorisable, saturates to 0 and 1 like the exact sigmoid."""
    e = topi.fast_exp(topi.negative(x))
    one = tvm.tirx.const(1.0, x.dtype)
    return te.compute(x.shape, lambda *i: one / (one + e(*i)), name="fast_sigmoid", tag="elemwise")


@expr_functor.mutator
class _SigmoidRewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if is_op(call, "relax.sigmoid"):
            return self.builder_.call_te(fast_sigmoid, self.visit_expr(call.args[0]), primfunc_name_hint="fast_sigmoid")
        return super().visit_call_(call)


@tvm.transform.module_pass(opt_level=0, name="FastSigmoid")
class FastSigmoid:
    """Rewrite ``relax.sigmoid`` to :func:`fast_sigmoid` (safe: same value to ~1e-7, same saturation)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_SigmoidRewriter(mod), mod)


@expr_functor.mutator
class _ReciprocalRewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_op(call, "relax.divide") or not isinstance(call.args[1], tvm.ir.expr.Constant):
            return call
        divisor = call.args[1].value.numpy()
        if divisor.dtype != np.float32:
            return call
        with np.errstate(divide="ignore", over="ignore"):
            reciprocal = np.float32(1) / divisor
        if not np.all(np.isfinite(divisor) & np.isfinite(reciprocal)):
            return call  # x / 0 (inf, nan) and tiny divisors whose reciprocal overflows keep the divide
        return relax.op.multiply(call.args[0], relax.const(reciprocal))


@tvm.transform.module_pass(opt_level=0, name="MultiplyByReciprocal")
class MultiplyByReciprocal:
    """Rewrite ``x / c`` with a finite, nonzero float32 constant ``c`` to ``x * (1 / c)``."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_functions(_ReciprocalRewriter(mod), mod)


def fast_math_passes() -> list:
    """The fast-math rewrites, in order (sigmoid first so its ``exp`` is not left to ``FastMathTransform``)."""
    return [FastSigmoid(), MultiplyByReciprocal(), relax.transform.FastMathTransform()]
