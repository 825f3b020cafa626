"""Default CPU schedules: a small library of fixed TensorIR rules that need no tuning.

TVM 0.27 schedules nothing on CPU by itself. Each rule has dlight's shape, ``apply(func, target, tunable)`` →
``Schedule`` or ``None``, and :data:`RULES` is tried in order per fused PrimFunc. The numbers they use (vector
lanes, registers, cores) come from the target (:class:`CpuInfo`), so the same rules serve AVX2, AVX-512 and NEON.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.s_tir import dlight

from . import attention, elementwise, row_reduction, tiled_reduction
from .common import CpuInfo

__all__ = ["CpuInfo", "RULES", "DefaultCpuSchedule", "first_schedule", "schedule_func", "schedule_variants"]


def _try(module, func: tirx.PrimFunc, target, **knobs):
    try:
        return module.apply(func, target, **knobs)
    except Exception:  # noqa: BLE001 - a rule that does not fit this function leaves it to the next
        return None


def _rule(name: str, module):
    @dlight.ScheduleRule.from_callable(name)
    def rule(func: tirx.PrimFunc, target, tunable: bool):  # noqa: ARG001 - fixed rules, never tunable
        return _try(module, func, target)
    return rule


_MODULES = [attention, tiled_reduction, row_reduction, elementwise]
RULES = [_rule(name, module) for name, module in
         zip(["Attention", "TiledReduction", "RowReduction", "Elementwise"], _MODULES)]


def first_schedule(func: tirx.PrimFunc, target) -> tuple[str | None, "tvm.s_tir.Schedule | None"]:
    """The first rule that fits ``func`` and its schedule, or (None, None)."""
    for rule in RULES:
        sch = rule.apply(func, target, False)
        if sch is not None:
            return type(rule).__name__, sch
    return None, None


def schedule_variants(func: tirx.PrimFunc, target) -> list[tuple[str, "tvm.s_tir.Schedule"]]:
    """Every distinct schedule of the first rule that fits ``func``, over that rule's ``SPACE`` of tile choices
    (default first), as (label, schedule). What ``edgevit tune`` measures before any random search."""
    for module in _MODULES:
        default = _try(module, func, target)
        if default is None:
            continue
        found, seen = [("default", default)], {tvm_ffi.structural_hash(default.mod)}
        for knobs in getattr(module, "SPACE", []):
            sch = _try(module, func, target, knobs=knobs)
            key = tvm_ffi.structural_hash(sch.mod) if sch is not None else None
            if key is not None and key not in seen:
                seen.add(key)
                found.append((f"{module.__name__.rsplit('.', 1)[-1]} {knobs}", sch))
        return found
    return []


def schedule_func(func: tirx.PrimFunc, target) -> tuple[str | None, tirx.PrimFunc]:
    """Apply the first rule that fits; returns (rule name or None, scheduled function)."""
    name, sch = first_schedule(func, target)
    return (name, sch.mod["main"]) if sch is not None else (None, func)


@tvm.transform.module_pass(opt_level=0, name="DefaultCpuSchedule")
class DefaultCpuSchedule:
    """Schedule every PrimFunc not already scheduled (e.g. by a tuning database) with :data:`RULES`."""

    def __init__(self, target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updated = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", False):
                continue
            name, scheduled = schedule_func(func, self.target)
            if name is not None:
                updated[gv] = scheduled.with_attr("tirx.is_scheduled", True)
        for gv, func in updated.items():
            mod[gv] = func
        return mod
