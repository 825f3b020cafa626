"""Fast math for CPU builds: TVM's ``FastMathTransform`` plus the sigmoid it leaves out, the exact (erf) GELU as
one rational function, and division by a constant as multiplication by its reciprocal.

Without the sigmoid rewrite every SiLU calls a scalar ``expf`` per element (mobilevit_xxs: ~41 ms instead of
~18 ms). :func:`fast_exp` is a clamped polynomial that LLVM vectorises;
its relative error (~1e-7) is below the 1e-5 edgevit verifies against. A GELU exported from PyTorch divides by
``sqrt(2)``: an IEEE divide (one per 3.5 cycles and vector on Zen 3) that ``x * (1 / c)`` replaces with a
multiply, at most an ulp away; compilers do not do this on their own since it is not exact.
"""

from __future__ import annotations

import itertools

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.relax import PyExprMutator, expr_functor

from .relax_rewrite import binding_of, is_op, rewrite_functions


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


#: erf's rational approximation in TVM's ``fast_erf`` (Eigen's): ``erf(z) = z P(z^2) / Q(z^2)`` on [-4, 4], with
#: P's coefficients alpha_1 .. alpha_13 and Q's beta_0 .. beta_8, lowest degree first.
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)
#: GELU(x) = x (1/2 + xc P'(y) / Q'(y)) with xc = x clamped to [-4 sqrt2, 4 sqrt2] and y = xc^2 = 2 z^2: the
#: 1/sqrt2 of erf's argument, the 1/2 and the 1 + erf are folded into the coefficients (P' = P(y/2) / (2 sqrt2),
#: Q' = Q(y/2)).
_GELU_P = tuple(a / 2 ** k / (2 * 2 ** 0.5) for k, a in enumerate(_ERF_P))
_GELU_Q = tuple(b / 2 ** k for k, b in enumerate(_ERF_Q))
_GELU_CLAMP = 4 * 2 ** 0.5


def _estrin(coefficients, y, y2, c):
    """``sum(c_k y^k)`` as pairs ``c_2j + c_2j+1 y`` combined by Horner's rule in ``y2 = y^2``: on AArch64 an FMA
    overwrites its addend, so every Horner step in ``y`` copies its constant first (2 instructions); a pair
    costs the same 2 for two coefficients."""
    pairs = [c(coefficients[k]) + c(coefficients[k + 1]) * y for k in range(0, len(coefficients) - 1, 2)]
    acc = c(coefficients[-1]) if len(coefficients) % 2 else pairs.pop()
    for pair in reversed(pairs):
        acc = pair + y2 * acc
    return acc


#: Every constant :func:`fast_gelu` uses, in the order it takes them as parameters.
GELU_CONSTANTS = (0.5, *_GELU_P, *_GELU_Q)


def fast_gelu(x: te.Tensor, *constants: te.Tensor) -> te.Tensor:
    """The exact GELU ``x / 2 (1 + erf(x / sqrt2))`` as one elementwise block, with ``fast_erf``'s rational
    function and its accuracy (float32 error <= 2.7e-7 |x|; TVM's composed ``fast_erf`` GELU: 2.5e-7).

    Folding the argument's scale, the ``1 +`` and the ``/ 2`` into the coefficients (3 operations fewer) and
    evaluating both polynomials by pairs (:func:`_estrin`: 5 register copies fewer) leaves 23 instructions per
    vector on AArch64 (counted in the compiled loop of a conv's epilogue, see ``tiled_reduction``).
    ``constants``: :data:`GELU_CONSTANTS` as scalar tensors (kernel parameters), read instead of immediates, as
    XNNPACK passes its micro-kernels' constants in a parameter struct: LLVM re-materialises immediate vector
    constants inside every loop that uses them (``dup`` from a general register, one per constant and
    vector), but hoists the loads of a parameter out of the loop.
    """
    f32 = x.dtype

    def c(value):
        return constants[GELU_CONSTANTS.index(value)][()] if constants else tvm.tirx.const(value, f32)

    def body(*i):
        v = x(*i)
        # immediate bounds: LLVM clamps by a constant with fminnm/fmaxnm, by a loaded value (maybe NaN) with a
        # compare and a select each
        bound = tvm.tirx.const(_GELU_CLAMP, f32)
        xc = tvm.te.max(tvm.te.min(v, bound), -bound)
        y = xc * xc
        y2 = y * y
        ratio = xc * _estrin(_GELU_P, y, y2, c) / _estrin(_GELU_Q, y, y2, c)
        return v * (ratio + c(0.5))

    return te.compute(x.shape, body, name="T_fast_gelu", tag="elemwise")


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


def _scalar(expr, value: float, ulps: int = 0) -> bool:
    """Whether ``expr`` is a float32 constant of one element within ``ulps`` float32 steps of ``value``."""
    if not isinstance(expr, tvm.ir.expr.Constant):
        return False
    array = expr.value.numpy()
    if array.dtype != np.float32 or array.size != 1:
        return False
    target = np.float32(value)
    return abs(float(array.reshape(())) - float(target)) <= ulps * float(np.spacing(target))


@expr_functor.mutator
class _GeluRewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        x = self._gelu_input(call)
        if x is None:
            return call
        constants = [relax.const(np.float32(value)) for value in GELU_CONSTANTS]
        return self.builder_.call_te(fast_gelu, x, *constants, primfunc_name_hint="fast_gelu")

    def _gelu_input(self, call: relax.Call):
        """``x`` when ``call`` is the product of ``x``, ``0.5`` and ``1 + erf(x * (1 / sqrt2))`` in any order and
        grouping (PyTorch exports ``x * (0.5 * (erf(x / sqrt2) + 1))``; ``MultiplyByReciprocal`` ran first)."""
        if not is_op(call, "relax.multiply"):
            return None
        for outer, inner in (call.args, call.args[::-1]):
            product = binding_of(self, inner)
            if not is_op(product, "relax.multiply"):
                continue
            for x, half, shifted in itertools.permutations((outer, *product.args)):
                if _scalar(half, 0.5) and self._is_one_plus_erf(shifted, x):
                    return x
        return None

    def _is_one_plus_erf(self, expr, x) -> bool:
        """Whether ``expr`` is bound to ``1 + erf(x * c)`` (either order) with ``c`` within an ulp of 1 / sqrt2."""
        add = binding_of(self, expr)
        if not is_op(add, "relax.add"):
            return False
        for one, erf in (add.args, add.args[::-1]):
            erf = binding_of(self, erf)
            if not (_scalar(one, 1.0) and is_op(erf, "relax.erf")):
                continue
            scaled = binding_of(self, erf.args[0])
            if is_op(scaled, "relax.multiply") and any(
                    a.same_as(x) and _scalar(b, 2 ** -0.5, ulps=1) for a, b in (scaled.args, scaled.args[::-1])):
                return str(x.ty.dtype) == "float32"
        return False


@tvm.transform.module_pass(opt_level=0, name="FastGelu")
class FastGelu:
    """Rewrite the exact GELU, ``x * 0.5 * (1 + erf(x / sqrt2))`` as PyTorch exports it (after
    :class:`MultiplyByReciprocal`), to one :func:`fast_gelu` (safe: the same rational ``erf`` as the
    ``fast_erf`` it replaces, float32 error <= 2.7e-7 |x|, and the same saturation: 0 below -4 sqrt2, x above)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(rewrite_functions(_GeluRewriter(mod), mod))


def fast_math_passes(gelu: bool = True) -> list:
    """The fast-math rewrites, in order (sigmoid first so its ``exp`` is not left to ``FastMathTransform``; the
    GELU after the reciprocal, whose ``x * (1 / sqrt2)`` it matches, and before ``FastMathTransform`` takes its
    ``erf``). ``gelu=False`` leaves the GELU to ``FastMathTransform``'s ``fast_erf``: on x86 the one-kernel GELU
    made efficientformerv2_s1 6.6 % slower (interleaved A/B of whole-model builds, 1 thread, AVX-512)."""
    return [FastSigmoid(), MultiplyByReciprocal(), *([FastGelu()] if gelu else []),
            relax.transform.FastMathTransform()]
