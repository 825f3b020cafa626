"""Lookup tables and the activation units' accuracy (golden model; C-sim equality is in test_kernels)."""

import numpy as np

from edgevit.hls import golden, reference, tables
from edgevit.hls.fixed import Fmt, quantize, to_float

def test_header_matches_table_definitions():
    assert tables.HEADER_PATH.read_text() == tables.header_text(), "run tools/hls_tables.py"


def test_gelu_table_has_177_entries_on_5_5():
    assert len(tables.gelu_delta()) == 177
    assert (len(tables.gelu_delta()) - 1) * 2.0 ** -tables.GELU_STEP_LOG2 == 5.5


def _max_err(act, lo=-8.0, hi=8.0):
    """Error of a table activation in the epilogue's internal format."""
    x = np.linspace(lo, hi, 200001)
    raw = quantize(x, golden.ACT_FMT)
    y, frac = golden.activate(raw, act)
    return float(np.abs(to_float(y, frac) - reference.activate(to_float(raw, golden.ACT_FMT), act)).max())


def test_epilogue_output_is_the_rounded_internal_result():
    # Whatever the output format, the epilogue is the internal activation rounded once to that format.
    acc = quantize(np.linspace(-7, 7, 4001), Fmt(48, 24))
    for fo in (Fmt(16, 3), Fmt(16, -2), Fmt(8, 4)):
        y, frac = golden.activate(golden.convert(acc, 24, golden.ACT_FMT), "gelu")
        assert (golden.epilogue(acc, 24, fo, "gelu") == golden.convert(y, frac, fo)).all()
        ref = np.clip(reference.activate(to_float(acc, 24), "gelu"), *to_float([fo.lo, fo.hi], fo))
        err = np.abs(to_float(golden.epilogue(acc, 24, fo, "gelu"), fo) - ref)
        assert err.max() <= 2.0 ** -fo.frac / 2 + 1e-4


def test_gelu_max_error_below_1e_4():
    err = _max_err("gelu")
    print(f"GELU max abs error on [-8, 8]: {err:.2e}")
    assert err <= 1e-4


def test_sigmoid_silu_hswish_errors():
    errs = {act: _max_err(act) for act in ("sigmoid", "silu", "hswish")}
    print("max abs errors on [-8, 8]:", errs)
    assert errs["sigmoid"] <= 1e-4 and errs["silu"] <= 5e-4 and errs["hswish"] <= 2e-5


def test_exp_and_reciprocal_relative_error():
    x = -np.linspace(0, 10, 5001)
    e = golden.exp_neg(quantize(x, Fmt(32, 8)), 24) / 2.0 ** golden.EXP_FRAC
    assert np.abs(e - np.exp(x)).max() < 5e-5
    lsum = np.arange(1 << 16, 300 << 16, 997)
    m, k = golden.recip_norm(lsum)
    approx = m / 2.0 ** tables.TABLE_FRAC * 2.0 ** (16 - k)
    assert np.abs(approx * (lsum / 2.0 ** 16) - 1).max() < 2e-5
