"""The saturating integer requantization (``edgevit.backends.int8_requantize``) against onnxruntime's float
formula in numpy, ``clip(round_half_even(float32(acc + offset) · M) + zy, -128, 127)``: half-step ties, values
saturating in int16 and beyond int32 (the clamped form), per-channel and per-tensor parameters."""

import numpy as np
import pytest
import tvm
from tvm import te

from edgevit.backends import tvm_compiler
from edgevit.backends.int8_requantize import needs_clamp, requantize
from edgevit.targets import get_target


def reference(acc, offset, multiplier, zy):
    scaled = (acc.astype(np.int64) + offset).astype(np.float32) * multiplier
    return np.clip(np.rint(scaled) + zy, -128, 127).astype(np.int8)


def _run(acc, offset, multiplier, zy, axis, clamp):
    a = te.placeholder(acc.shape, "int32", "acc")
    o = te.placeholder(offset.shape, "int32", "offset")
    m = te.placeholder(multiplier.shape, "float32", "multiplier")
    func = te.create_prim_func([a, o, m, requantize(a, o, m, zy, axis, clamp)])
    cpu = get_target("host").require_cpu()
    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm_compiler.make_target(cpu.tvm))
    out = tvm.runtime.empty(acc.shape, "int8")
    lib["main"](*(tvm.runtime.tensor(x) for x in (acc, offset, multiplier)), out)
    return out.numpy()


@pytest.mark.parametrize("zy", [-128, -9, 0, 127])
def test_ties_and_saturation_match_the_float_formula(zy):
    rng = np.random.default_rng(zy + 200)
    channels = 6
    # multipliers 0.5 and 0.25 put many values exactly on half steps; the others are ordinary
    multiplier = np.array([0.5, 0.25, 0.013, 1.7, 3e-4, 40.0], np.float32)
    acc = rng.integers(-3000, 3000, size=(2, channels, 40), dtype=np.int32)
    acc[0, :, :8] = [[-2**31 + 50, 2**31 - 51, -70000, 70000, -257, 255, 1, -1]]  # int32 / int16 extremes
    offset = rng.integers(-50, 50, size=channels, dtype=np.int32)
    # 2^31 · 40 leaves int32 after scaling: the clamped form
    assert needs_clamp(np.full(channels, 2**31), multiplier)
    got = _run(acc, offset, multiplier, zy, 1, True)
    np.testing.assert_array_equal(got, reference(acc, offset.reshape(1, -1, 1), multiplier.reshape(1, -1, 1), zy))


def test_per_tensor_without_clamp_on_the_last_axis():
    rng = np.random.default_rng(3)
    acc = rng.integers(-5000, 5000, size=(3, 32), dtype=np.int32)
    acc[0, :4] = [-32768 * 4, 32767 * 4, 2, -2]  # beyond int16 after scaling, and ties at 0.5
    multiplier, offset = np.array([0.25], np.float32), np.array([7], np.int32)
    assert not needs_clamp(np.array([2**20]), multiplier)
    np.testing.assert_array_equal(_run(acc, offset, multiplier, -3, -1, False),
                                  reference(acc, offset, multiplier, -3))
