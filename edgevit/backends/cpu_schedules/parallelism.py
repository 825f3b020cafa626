"""How a scheduled kernel's work splits over threads: its loop nests' parallel extents and static work.

TVM runs a ``parallel`` loop of extent ``E`` on ``T`` threads in ``T`` static chunks of ``ceil(E / T)``
iterations, so a kernel's time on ``T`` threads is bounded below by its serial nests' work plus, per parallel
nest, its work times ``ceil(E / T) / E``: extent 1 gains nothing, extent 3 on 2 threads 1.5x at most. Work is
counted statically: the stores a nest executes (each leaf store times the extents of the loops around it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tvm import tirx

from .tiled_reduction import LAYOUT_REWRITE

_CHILDREN = ("body", "seq", "then_case", "else_case", "block", "init")


@dataclass
class KernelParallelism:
    """The loop nests of one kernel: ``nests`` is one ``(parallel extent or 0 if serial, work)`` per top-level
    loop nest, outermost parallel loop first found; ``work`` their sum."""

    nests: list[tuple[int, int]] = field(default_factory=list)

    @property
    def work(self) -> int:
        return sum(w for _, w in self.nests)

    @property
    def serial_work(self) -> int:
        return sum(w for e, w in self.nests if e == 0)

    @property
    def launches(self) -> int:
        """Parallel regions a call starts (one per parallel nest, also of a single iteration: TVM launches it)."""
        return sum(e > 0 for e, _ in self.nests)

    def extents(self) -> list[int]:
        """The distinct outermost parallel extents, in order."""
        return list(dict.fromkeys(e for e, _ in self.nests if e))

    def time_share(self, threads: int) -> float:
        """Time on ``threads`` threads as a share of the one-thread time (1.0: no gain), from the static split."""
        total = self.work
        if not total:
            return 1.0
        return sum(w * (math.ceil(e / threads) / e if e else 1.0) for e, w in self.nests) / total


def kernel_parallelism(func: tirx.PrimFunc) -> KernelParallelism:
    """Walk a scheduled PrimFunc: per top-level loop nest, its outermost parallel loop's extent and its work."""
    result = KernelParallelism()

    def walk(stmt, iterations: int, top: bool) -> int:
        """Stores executed under ``stmt``; appends a nest to ``result`` for each top-level loop."""
        if isinstance(stmt, tirx.BufferStore):
            return iterations
        if LAYOUT_REWRITE in (getattr(stmt, "annotations", None) or {}):
            return 0  # a weight re-layout: folded into the constants at build time
        if isinstance(stmt, tirx.For):
            n = int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else 1
            work = walk(stmt.body, iterations * n, False)
            if top:
                result.nests.append((_first_parallel(stmt) or 0, work))
            return work
        return sum(walk(child, iterations, top) for child in _children(stmt))

    leftover = walk(func.body, 1, True)
    unattributed = leftover - result.work
    if unattributed > 0:  # stores outside any loop (a scalar kernel)
        result.nests.append((0, unattributed))
    return result


def _children(stmt) -> list:
    found = []
    for name in _CHILDREN:
        child = getattr(stmt, name, None)
        if child is not None:
            many = isinstance(child, (list, tuple)) or type(child).__name__ == "Array"
            found += [item for item in (child if many else [child]) if isinstance(item, tirx.Stmt)]
    return found


def _first_parallel(stmt) -> int | None:
    """The extent of the first (outermost) parallel loop in ``stmt``, or None."""
    if isinstance(stmt, tirx.For) and stmt.kind == tirx.ForKind.PARALLEL:
        return int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else None
    for child in ([stmt.body] if isinstance(stmt, tirx.For) else _children(stmt)):
        found = _first_parallel(child)
        if found is not None:
            return found
    return None


def scheduled_kernels(mod, target) -> dict[str, tirx.PrimFunc]:
    """The kernels of a fused module (``tvm_compiler.fused_module``) as the default rules schedule them, by name."""
    from . import schedule_func

    out = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            out[gv.name_hint] = schedule_func(func, target)[1]
    return out


def launch_cost_us(threads: int, calls: int = 20000) -> float:
    """Microseconds a parallel region costs on ``threads`` threads beyond the same call on one: a kernel of
    ``threads`` iterations of 32 float adds, timed (best of 5 rounds of ``calls``) under each thread count."""
    import time

    import numpy as np
    import tvm
    from tvm.script import tirx as T

    from ...runtime.tvm_runtime import thread_count
    from ..tvm_compiler import host_cpu_name, make_target

    @T.prim_func
    def tiny(a: T.Buffer((threads * 32,), "float32")):
        for i in T.parallel(threads):
            for j in range(32):
                a[i * 32 + j] = a[i * 32 + j] + T.float32(1.0)

    target = make_target({"kind": "llvm", "mcpu": host_cpu_name()})
    kernel = tvm.compile(tvm.IRModule({"main": tiny.with_attr("global_symbol", "main")}), target=target)["main"]
    data = tvm.runtime.tensor(np.zeros(threads * 32, "float32"))

    def best(count: int) -> float:
        with thread_count(count):
            rounds = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(calls):
                    kernel(data)
                rounds.append((time.perf_counter() - start) / calls)
        return min(rounds) * 1e6

    return max(best(threads) - best(1), 0.0)
