"""Fast math for CPU builds: TVM's ``FastMathTransform`` plus the sigmoid it leaves out, and division by a
constant as multiplication by its reciprocal.

Without the sigmoid rewrite every SiLU calls a scalar ``expf`` per element (mobilevit_xxs: ~41 ms instead of
~18 ms). :func:`fast_exp` is a clamped polynomial that LLVM vectorises;
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


#: exp's degree-5 minimax polynomial on [-ln2/2, ln2/2] (XNNPACK's ``rr2-p5``: c1..c5) and the Cody-Waite split
#: of ln 2; ``MAGIC`` is 1.5 * 2^23 + 127: added to ``x * log2(e)`` it rounds to an integer ``n`` in the low
#: mantissa bits, already biased by 127, so ``bits << 23`` is the float ``2^n``.
_EXP_POLY = tuple(map(float.fromhex, ("0x1.FFFFF6p-1", "0x1.FFFDC6p-2", "0x1.555A80p-3", "0x1.573A1Ap-5",
                                       "0x1.0F9F9Cp-7")))
_LN2_HI, _LN2_LO, _LOG2E, _MAGIC = map(float.fromhex, ("0x1.62E400p-1", "0x1.7F7D1Cp-20", "0x1.715476p+0",
                                                       "0x1.8000FEp23"))
#: Clamp bounds: 2^n stays a normal float (-126 <= n <= 127).
_EXP_LO, _EXP_HI = -87.33654, 88.0


def fast_exp(x: te.Tensor, nonpositive: bool = False, name: str = "T_fast_exp") -> te.Tensor:
    """``exp(x)`` for float32 as one elementwise block: ``2^n * p(t)`` with ``x = n ln2 + t``.

    The same accuracy as ``topi.fast_exp`` (relative error ~1e-7) in fewer instructions: ``n`` is rounded by
    adding a magic number (no floor, no float-to-int conversion, no bias add), ``t`` comes from a two-constant
    ln 2, and the polynomial is evaluated as ``s + (t s) q(t)``, with no final ``max``. ``nonpositive``: only
    the lower clamp (softmax exponents are ``score - max <= 0``). Saturates to 0 below -87.3 and to
    ``2^127 e^0.03`` above 88. AArch64 (mobilevit_xxs's attention, ``score - max``, exp, store): 75 instructions
    per 8 scores instead of topi's 89, 33 of them LLVM's re-materialised constants (hence the attention
    rule's unrolled exp loop).
    """
    f32 = x.dtype
    c = lambda v: tvm.tirx.const(v, f32)  # noqa: E731

    def body(*i):
        v = tvm.te.max(x(*i), c(_EXP_LO))
        if not nonpositive:
            v = tvm.te.min(v, c(_EXP_HI))
        bits = tvm.tirx.reinterpret("int32", v * c(_LOG2E) + c(_MAGIC))
        scale = tvm.tirx.reinterpret(f32, tvm.tirx.shift_left(bits, tvm.tirx.const(23, "int32")))
        # Through the bits, not ``(z + MAGIC) - MAGIC``, which TVM's simplifier folds back to ``z``.
        n = tvm.tirx.reinterpret(f32, bits) - c(_MAGIC)
        t = v - n * c(_LN2_HI)
        t = t - n * c(_LN2_LO)
        q = c(_EXP_POLY[4])
        for coef in reversed(_EXP_POLY[:4]):
            q = q * t + c(coef)
        return (t * scale) * q + scale

    return te.compute(x.shape, body, name=name, tag="elemwise")


def fast_sigmoid(x: te.Tensor) -> te.Tensor:
    """``1 / (1 + fast_exp(-x))``: vectorisable, saturates to 0 and 1 like the exact sigmoid."""
    e = fast_exp(topi.negative(x))
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
