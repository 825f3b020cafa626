"""The static split of a scheduled kernel's loop nests over threads (cpu_schedules.parallelism)."""

from __future__ import annotations

import pytest
from tvm.script import tirx as T

from edgevit.backends.cpu_schedules.common import CpuInfo, run_in_parallel
from edgevit.backends.cpu_schedules.parallelism import kernel_parallelism


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


def _rows(n: int):
    @T.prim_func(s_tir=True)
    def rows(a: T.Buffer((n, 64), "float32")):
        for i, j in T.grid(n, 64):
            with T.sblock("fill"):
                vi, vj = T.axis.remap("SS", [i, j])
                a[vi, vj] = T.float32(0.0)
    return rows


@pytest.mark.parametrize("rows,nests", [(1, [(0, 64)]), (3, [(3, 192)])])
def test_run_in_parallel_launches_nothing_for_one_iteration(rows, nests):
    """A loop of one iteration is not made a parallel region (TVM would launch one for nothing: MobileViTv2's
    whole-tensor GroupNorm statistics, 21 launches per inference)."""
    from tvm.s_tir import Schedule

    sch = Schedule(_rows(rows))
    run_in_parallel(sch, sch.get_loops(sch.get_sblock("fill"))[:1], CpuInfo(4, 32, 2))
    assert kernel_parallelism(sch.mod["main"]).nests == nests
