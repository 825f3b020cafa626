"""``edgevit bench`` extras: FP32 peak, the all-models table and plot (no timings asserted)."""

from __future__ import annotations

from edgevit.bench import fp32_peak_gflops
from edgevit.bench_report import format_all, plot_all


def test_peak_scales_with_threads():
    one, two = fp32_peak_gflops(1), fp32_peak_gflops(2)
    assert two["gflops"] == 2 * one["gflops"] and "lanes" in one["formula"]


def _row(model, threads, ours, peer):
    return {"model": model, "threads": threads, "tuned": False, "fp32_peak": {"gflops": 100.0},
            "ratio_vs_onnxruntime": ours / peer, "agreement": {"max_rel_error": 1e-7},
            "engines": {"edgevit": {"median_ms": ours, "gflops": 10.0},
                        "onnxruntime": {"median_ms": peer, "gflops": 12.0}}}


def test_all_models_table_and_plot(tmp_path):
    result = {"rows": [_row("a", 1, 12.0, 10.0), _row("a", 2, 8.0, 6.0), _row("b", 1, 5.0, 5.0)]}
    table = format_all(result)
    assert "1.20x" in table and "b" in table
    plot_all(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_zoo_table_says_arm_speed_is_not_measured_on_another_host():
    result = {"machine": "x86_64", "rows": [_row("a", 1, 12.0, 10.0)]}
    assert "ARM speed cannot be measured here (x86_64 host)" in format_all(result)
    assert "ARM speed" not in format_all(dict(result, machine="aarch64"))
