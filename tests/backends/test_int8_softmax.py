"""The int8 softmax kernel (``edgevit.backends.int8_softmax``): the schedule it gets, and its results against
a float64 evaluation of the same table arithmetic on the host and, built for rpi4, under qemu."""

import numpy as np
import pytest
from tvm import relax, te

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_softmax import emit_softmax, schedule_softmax, softmax_int8
from edgevit.targets import get_target

#: (input shape, sx, sy, zy): attention rows of 64 (int8 vectors), 49 (odd: scalar reductions), 7 (shorter
#: than a vector), and 256 with an output scale that saturates at 127.
CASES = [((1, 2, 64, 64), 0.05, 1 / 255, -128), ((1, 3, 49, 49), 0.11, 1 / 250, -120),
         ((2, 5, 7), 0.3, 1 / 255, -128), ((1, 1, 8, 256), 0.02, 1 / 2000, -100)]


def table_of(sx):
    return np.exp(np.float32(sx) * np.arange(-255, 1, dtype=np.float32)).astype(np.float32)


def softmax_steps(xq, sx, sy):
    """The kernel's ``e · (1/sy) / Σe`` before rounding, in float64 (its table values, exact sums)."""
    e = table_of(sx)[xq.astype(np.int64) - xq.max(-1, keepdims=True) + 255].astype(np.float64)
    return e * np.float64(np.float32(1) / np.float32(sy)) / e.sum(-1, keepdims=True)


def assert_matches(got, xq, sx, sy, zy):
    """Equal to ``clip(round(v) + zy)`` except where ``v`` is within float32 rounding of a half step (there
    the kernel's float32 sum may round either way: one step)."""
    v = softmax_steps(xq, sx, sy)
    want = np.clip(np.round(v) + zy, -128, 127)
    tie = np.abs(v - np.floor(v) - 0.5) < 1e-4 * np.maximum(1, v)
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and not np.any(diff[~tie]), (diff.max(), int(np.count_nonzero(diff[~tie])))


def softmax_module(shape, sx, sy, zy):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(emit_softmax(bb, x, table_of(sx), float(np.float32(1) / np.float32(sy)),
                                                      zy)))
        bb.emit_func_output(out)
    return bb.get()


def inputs_for(shape, seed):
    xq = np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)
    xq[..., 0, :] = -128  # a row of one value (all differences 0)
    return xq


@pytest.mark.parametrize("target", ["host", "rpi4"])
@pytest.mark.parametrize("n", [256, 49, 7])
def test_schedule_vectorises_what_the_row_allows(target, n):
    x = te.placeholder((96, n), "int8", name="x")
    table = te.placeholder((256,), "float32", name="table")
    func = te.create_prim_func([x, table, softmax_int8(x, table, 255.0, -128)])
    sch = schedule_softmax(func, tvm_compiler.make_target(get_target(target).require_cpu().tvm))
    script = sch.mod.script()
    # the maximum and the sum split into vector partial results when the row is whole vectors of them
    assert ("int8_softmax_max_rf" in script) == (n == 256) and ("int8_softmax_sum_rf" in script) == (n == 256)
    assert ("T.vectorized" in script) == (n >= (4 if target == "rpi4" else 16))  # rows of a vector or more
    assert "T.unroll" in script  # the lookups are unrolled scalar loads, not a vectorised gather
    other = te.create_prim_func([x, te.compute((96, n), lambda i, j: x[i, j] + 1, name="add")])
    assert schedule_softmax(other, tvm_compiler.make_target(get_target(target).require_cpu().tvm)) is None


@pytest.mark.parametrize("case", CASES, ids=["64", "49", "7", "256-saturating"])
def test_softmax_matches_the_table_arithmetic_on_host(case):
    import tvm
    from tvm.runtime import vm

    shape, sx, sy, zy = case
    cpu = get_target("host").require_cpu()
    machine = vm.VirtualMachine(tvm_compiler.build(softmax_module(shape, sx, sy, zy), cpu), tvm.runtime.cpu())
    xq = inputs_for(shape, len(shape))
    got = machine["main"](tvm.runtime.tensor(xq)).numpy()
    assert got.shape == shape and got.dtype == np.int8
    assert_matches(got, xq, sx, sy, zy)


@pytest.mark.qemu
def test_softmax_for_rpi4_matches_under_qemu(tmp_path):
    """The rpi4 build (int8 ``smax`` vectors, scalar lookups, float32 vectors) under qemu."""
    from test_int8_dot_kernels import _run_under_qemu

    modules = [softmax_module(shape, sx, sy, zy) for shape, sx, sy, zy in CASES]
    inputs = [inputs_for(shape, len(shape)) for shape, *_ in CASES]
    outputs, disassembly = _run_under_qemu("rpi4", modules, inputs, tmp_path)
    for got, xq, (_, sx, sy, zy) in zip(outputs, inputs, CASES):
        assert_matches(got, xq, sx, sy, zy)
    assert "smax\tv" in disassembly[0]  # the 64-long rows' maximum in int8 vectors
