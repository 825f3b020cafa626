"""The static split of a scheduled kernel's loop nests over threads (cpu_schedules.parallelism)."""

from __future__ import annotations

import pytest
from tvm.script import tirx as T

from edgevit.backends.cpu_schedules.common import PARALLEL_WORK, CpuInfo, run_in_parallel
from edgevit.backends.cpu_schedules.parallelism import kernel_parallelism
from edgevit.backends.cpu_schedules.row_reduction import CHUNKS, SUM_WORK, parallel_rfactor


@T.prim_func
def _three_parallel_then_serial(a: T.Buffer((12,), "float32"), b: T.Buffer((4,), "float32")):
    for i in T.parallel(3):
        for j in range(4):
            a[i * 4 + j] = T.float32(0.0)
    for k in range(4):
        b[k] = T.float32(1.0)


@T.prim_func
def _nested_parallel(a: T.Buffer((64,), "float32")):
    for i in range(2):
        for j in T.parallel(8):  # the outermost parallel loop is inside a serial one: 2 launches of 8
            for k in range(4):
                a[i * 32 + j * 4 + k] = T.float32(0.0)


def test_nests_carry_their_outermost_parallel_extent_and_work():
    p = kernel_parallelism(_three_parallel_then_serial)
    assert p.nests == [(3, 12), (0, 4)]
    assert p.extents() == [3] and p.work == 16 and p.serial_work == 4
    # on 2 threads: the parallel nest runs 2 of its 3 iterations on one thread (8 of 12 stores), the serial 4
    assert p.time_share(2) == pytest.approx((8 + 4) / 16)
    assert p.time_share(3) == pytest.approx((4 + 4) / 16)


def test_a_parallel_loop_inside_a_serial_one_counts_its_own_extent():
    p = kernel_parallelism(_nested_parallel)
    assert p.nests == [(8, 64)]
    assert p.time_share(2) == pytest.approx(0.5)
    assert p.time_share(3) == pytest.approx(3 / 8)


def _rows(n: int, width: int = PARALLEL_WORK):
    @T.prim_func(s_tir=True)
    def rows(a: T.Buffer((n, width), "float32")):
        for i, j in T.grid(n, width):
            with T.sblock("fill"):
                vi, vj = T.axis.remap("SS", [i, j])
                a[vi, vj] = T.float32(0.0)
    return rows


@pytest.mark.parametrize("rows,width,nests", [
    (1, PARALLEL_WORK, [(0, PARALLEL_WORK)]),          # one iteration: a launch for nothing
    (3, PARALLEL_WORK, [(3, 3 * PARALLEL_WORK)]),
    (8, PARALLEL_WORK // 16, [(0, PARALLEL_WORK // 2)]),  # less work than a launch is worth
])
def test_run_in_parallel_launches_only_where_it_pays(rows, width, nests):
    """A loop of one iteration, or a nest under ``PARALLEL_WORK`` stores, is not made a parallel region (TVM
    would launch one for nothing: MobileViTv2's whole-tensor GroupNorm statistics, 21 launches per inference)."""
    from tvm.s_tir import Schedule

    sch = Schedule(_rows(rows, width))
    run_in_parallel(sch, sch.get_loops(sch.get_sblock("fill"))[:1], CpuInfo(4, 32, 2))
    assert kernel_parallelism(sch.mod["main"]).nests == nests


def _sum(outputs: int, n: int):
    @T.prim_func(s_tir=True)
    def total(a: T.Buffer((outputs, n), "float32"), out: T.Buffer((outputs,), "float32")):
        for i, k in T.grid(outputs, n):
            with T.sblock("total"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    out[vi] = T.float32(0.0)
                out[vi] = out[vi] + a[vi, vk]
    return total


@pytest.mark.parametrize("outputs,n,extent", [
    (1, 8 * SUM_WORK, CHUNKS),    # one output (a whole-tensor statistic): slices of the sum in parallel
    (48, SUM_WORK // 16, 48),     # outputs that split evenly: in parallel, each with its own partial sums
    (1, SUM_WORK // 2, 0),        # too little work: serial
])
def test_sums_run_their_partial_results_in_parallel(outputs, n, extent):
    """``parallel_rfactor``: the partial sums of a long contiguous reduction run in parallel (two-stage over
    slices when the outputs do not split over the cores) and the result is the sum."""
    import numpy as np
    import tvm
    from tvm.s_tir import Schedule

    func = _sum(outputs, n)
    sch = Schedule(func)
    assert parallel_rfactor(sch, sch.get_sblock("total"), CpuInfo(16, 32, 2))
    scheduled = sch.mod["main"]
    assert kernel_parallelism(scheduled).nests[0][0] == extent
    kernel = tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target="llvm")
    a = np.random.default_rng(0).standard_normal((outputs, n)).astype("float32")
    out = tvm.runtime.tensor(np.zeros(outputs, "float32"))
    kernel(tvm.runtime.tensor(a), out)
    np.testing.assert_allclose(out.numpy(), a.astype("float64").sum(axis=1), rtol=1e-5, atol=1e-3)
