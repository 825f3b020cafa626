"""Fast math for CPU builds: TVM's ``FastMathTransform`` plus the sigmoid it leaves out.

Without the sigmoid rewrite every SiLU calls a scalar ``expf`` per element (mobilevit_xxs: ~41 ms instead of
~18 ms). ``topi.fast_exp`` is a clamped polynomial that LLVM vectorises;
its relative error (~1e-7) is below the 1e-5 edgevit verifies against.
"""

from __future__ import annotations

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


def fast_math_passes() -> list:
    """The fast-math rewrites, in order (sigmoid first so its ``exp`` is not left to ``FastMathTransform``)."""
    return [FastSigmoid(), relax.transform.FastMathTransform()]
