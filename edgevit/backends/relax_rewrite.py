"""What edgevit's Relax rewrites (fast math, weight packing, attention fusion) share."""

from __future__ import annotations

import tvm
from tvm import relax


def is_op(expr, name: str) -> bool:
    """Whether ``expr`` is a call of the Relax operator ``name`` (e.g. ``relax.matmul``)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def static_shape(expr) -> list[int] | None:
    """The static shape of a Relax expression's tensor, or None if it has none."""
    try:
        return [int(v) for v in expr.ty.shape.values]
    except (AttributeError, TypeError):
        return None


def rewrite_functions(mutator, mod: tvm.IRModule) -> tvm.IRModule:
    """Run a ``PyExprMutator`` (built on ``mod``) over every Relax function of ``mod``."""
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def binding_of(mutator, expr):
    """The expression bound to the Relax variable ``expr`` in the function ``mutator`` (a ``PyExprMutator``)
    is visiting, or None (not a variable, or a function parameter)."""
    if isinstance(expr, relax.Var):
        try:
            return mutator.lookup_binding(expr)
        except Exception:  # noqa: BLE001 - TVM raises a plain error for a parameter (no binding)
            return None
    return None
