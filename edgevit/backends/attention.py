"""Fused attention for CPU builds: ``matmul -> softmax -> matmul`` becomes one kernel.

Unfused, TVM writes the full score matrix (mobilevit_xxs: 4 x 4 x 256 x 256 floats = 4 MiB) to memory three
times over (scores, softmax, its read by the second matmul): about a quarter of mobilevit_xxs's run time was
those three kernels. The fused kernel computes a block of query rows at a time, so the scores of that block stay
in L1 (``cpu_schedules.attention`` schedules it). The softmax normalisation is deferred to the output
(``(Σ_j e_ij v_j) / Σ_j e_ij``), one division per output element instead of one per score; with the same
``fast_exp`` accuracy as the unfused fast softmax (~1e-7 relative) the result differs from it by rounding only.
"""

from __future__ import annotations

import tvm
from tvm import relax, te
from tvm.relax import PyExprMutator, expr_functor

from .fast_math import fast_exp
from .relax_rewrite import binding_of, is_op, rewrite_functions, static_shape

#: Name of the fused kernel's PrimFunc.
KERNEL = "fused_attention"
#: The blocks :func:`attention` builds (``T_fast_exp``: :func:`~edgevit.backends.fast_math.fast_exp`):
#: ``cpu_schedules.attention`` schedules a function made of exactly these.
BLOCKS = ("attn_score", "attn_max", "attn_delta", "T_fast_exp", "attn_sum", "attn_out", "attn_norm")


def attention(q: te.Tensor, kt: te.Tensor, v: te.Tensor) -> te.Tensor:
    """``softmax(q @ kt, axis=-1) @ v`` for ``q (..., M, D)``, ``kt (..., D, N)``, ``v (..., N, C)``."""
    *lead, m, d = q.shape
    n, c = kt.shape[-1], v.shape[-1]
    rd = te.reduce_axis((0, d), "rd")
    score = te.compute((*lead, m, n), lambda *i: te.sum(q[(*i[:-1], rd)] * kt[(*i[:-2], rd, i[-1])], axis=rd),
                       name="attn_score")
    rn = te.reduce_axis((0, n), "rn")
    peak = te.compute((*lead, m), lambda *i: te.max(score[(*i, rn)], axis=rn), name="attn_max")
    delta = te.compute(score.shape, lambda *i: score[i] - peak[i[:-1]], name="attn_delta")
    exp = fast_exp(delta, nonpositive=True)
    rs = te.reduce_axis((0, n), "rs")
    total = te.compute((*lead, m), lambda *i: te.sum(exp[(*i, rs)], axis=rs), name="attn_sum")
    rj = te.reduce_axis((0, n), "rj")
    out = te.compute((*lead, m, c), lambda *i: te.sum(exp[(*i[:-1], rj)] * v[(*i[:-2], rj, i[-1])], axis=rj),
                     name="attn_out")
    return te.compute(out.shape, lambda *i: out[i] / total[i[:-1]], name="attn_norm")


@expr_functor.mutator
class _Fuser(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        parts = self._match(call)
        if parts is None:
            return super().visit_call_(call)
        q, kt, v = (self.visit_expr(x) for x in parts)
        return self.builder_.call_te(attention, q, kt, v, primfunc_name_hint=KERNEL)

    def _match(self, call: relax.Call):
        """(q, kt, v) when ``call`` is ``matmul(softmax(matmul(q, kt), axis=-1), v)`` on equal float32 batches."""
        if not is_op(call, "relax.matmul"):
            return None
        soft = binding_of(self, call.args[0])
        if not is_op(soft, "relax.nn.softmax"):
            return None
        scores = binding_of(self, soft.args[0])
        if not is_op(scores, "relax.matmul"):
            return None
        q, kt, v = scores.args[0], scores.args[1], call.args[1]
        shapes = [static_shape(x) for x in (q, kt, v)]
        if any(s is None or len(s) < 2 for s in shapes):
            return None
        sq, sk, sv = shapes
        if not (len(sq) == len(sk) == len(sv) and sq[:-2] == sk[:-2] == sv[:-2]
                and sq[-1] == sk[-2] and sk[-1] == sv[-2]):
            return None  # broadcasting batches or mismatched shapes: left to the unfused ops
        axis = int(soft.attrs.axis)
        if axis not in (-1, len(sq) - 1) or any(str(x.ty.dtype) != "float32" for x in (q, kt, v)):
            return None
        return q, kt, v


@tvm.transform.module_pass(opt_level=0, name="FuseAttention")
class FuseAttention:
    """Rewrite ``matmul(softmax(matmul(q, kt), axis=-1), v)`` to one :func:`attention` kernel.

    Only plain float32 attention with equal batch shapes is rewritten; masks, biases or scales between the
    matmul and the softmax make the pattern not match, and those graphs keep the unfused kernels.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return relax.transform.DeadCodeElimination()(rewrite_functions(_Fuser(mod), mod))
