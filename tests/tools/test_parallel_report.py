"""tools/parallel_report.py: the Amdahl bound from a profile and the kernels' parallel structure, and its
handling of bad options."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgevit.backends.cpu_schedules.parallelism import KernelParallelism

TOOL = Path(__file__).resolve().parents[2] / "tools" / "parallel_report.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("parallel_report", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bound_counts_serial_uneven_runtime_and_launches():
    tool = load_tool()
    kernels = {"even": KernelParallelism([(64, 100)]), "three": KernelParallelism([(3, 30)]),
               "serial": KernelParallelism([(0, 10)])}
    rows = [{"name": "even", "calls": 2, "ms": 4.0, "percent": 40.0},
            {"name": "three", "calls": 1, "ms": 3.0, "percent": 30.0},
            {"name": "serial", "calls": 1, "ms": 1.0, "percent": 10.0},
            {"name": "vm.builtin.alloc_tensor", "calls": 10, "ms": 0.5, "percent": 5.0}]
    table, summary = tool.bound(rows, kernels, whole_ms=9.0, threads=2, tiny_us=20.0, launch_us=100.0)
    kinds = {r["name"]: r["kind"] for r in table}
    assert kinds == {"even": "even", "three": "uneven", "serial": "serial", "vm.builtin.alloc_tensor": "runtime",
                     "(VM between calls)": "runtime"}
    # on 2 threads: 4 / 2 + 3 * 2/3 + 1 + 0.5 + the VM's 0.5 between calls, plus 3 launches of 0.1 ms
    assert summary["ms_1_thread"] == pytest.approx(9.0)
    assert summary["launches"] == 3
    assert summary["kernel_calls"] == 4 and summary["builtin_calls"] == {"vm.builtin.alloc_tensor": 10}
    assert summary["bound"] == pytest.approx(9.0 / (2.0 + 2.0 + 1.0 + 0.5 + 0.5 + 0.3))
    lost = summary["lost_share"]
    assert lost["uneven"] == pytest.approx(3.0 * (2 / 3 - 1 / 2) / 9.0, abs=1e-4)
    assert lost["serial"] == pytest.approx(0.5 / 9.0, abs=1e-4)
    assert lost["runtime"] == pytest.approx((0.25 + 0.25) / 9.0, abs=1e-4)
    assert lost["launch"] == pytest.approx(0.3 / 9.0, abs=1e-4)


def test_measured_speed_ups_go_beside_the_bound():
    tool = load_tool()
    rows = [{"name": "even", "calls": 1, "ms": 4.0, "percent": 100.0}]
    table, summary = tool.bound(rows, {"even": KernelParallelism([(64, 100)])}, whole_ms=4.0, threads=2,
                                tiny_us=20.0)
    tool.add_measured(table, summary, [{"name": "even", "calls": 1, "ms": 2.5, "percent": 100.0}], 2.5, 4.0)
    assert table[0]["ms_n"] == 2.5 and summary["measured"] == pytest.approx(1.6)
    text = tool.format_model("m", table, summary, 2, 5)
    row = next(line for line in text.splitlines() if line.startswith("even"))
    assert "measured 1.60x" in text and row.endswith("1.60x"), text


@pytest.mark.parametrize("args,message", [
    (["--threads", "1"], "--threads must be >= 2"),
    (["--measure", "--profiles", "x.json"], "not with --profiles"),
    (["--measure", "--cpu-time"], "not with --profiles or --cpu-time"),
    (["--models", "efficientformerv2_s0", "--launch-us", "1", "--profiles", "{missing}"], "not a parallel_report JSON"),
    (["--models", "efficientformerv2_s0", "--launch-us", "1", "--profiles", "{empty}"], "has no efficientformerv2_s0"),
])
def test_bad_options_get_one_error_line(args, message, tmp_path):
    (tmp_path / "empty.json").write_text('{"models": {}}')
    args = [a.format(missing=tmp_path / "missing.json", empty=tmp_path / "empty.json") for a in args]
    proc = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
