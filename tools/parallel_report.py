"""What caps multi-thread scaling of edgevit's host builds: per kernel, its 1-thread time and how its loops run
in parallel; per model, the Amdahl bound on the speed-up over 1 thread.

    python tools/parallel_report.py [--models a,b] [--threads 2] [--runs 20] [--keep DIR] [--json OUT.json]
                                    [--measure] [--profiles EARLIER.json] [--launch-us US] [--cpu-time]

Wall-clock scaling cannot be measured on a loaded machine; this needs only a 1-thread profile (shares of the
time, ``edgevit bench --profile``'s per-kernel timing) and the scheduled TIR (``cpu_schedules.parallelism``):
per top-level loop nest, the extent of its outermost ``parallel`` loop and its static work. TVM splits a
parallel loop of extent E into ``threads`` chunks of ceil(E / threads), so a kernel on T threads takes at least
its serial nests' share plus ceil(E / T) / E of each parallel nest's. Calls the runtime makes that are no kernel
of the model (VM builtins: allocation, reshapes, tuple handling) and the VM's time between calls are serial.
Each parallel region also costs a launch (waking the other threads and waiting for them): ``--launch-us``,
by default measured here on a tiny kernel, which on a loaded machine is the cost of a wake-up. The bound
ignores memory bandwidth; kernels under ``--tiny`` microseconds per call are flagged. ``--cpu-time`` takes the
1-thread profile in the thread's CPU time: on a loaded machine wall-clock profiles carry other processes' time
slices (tiny kernels 10-100x their CPU time), CPU time does not. Per model it also counts, deterministically,
the VM's calls per inference: kernels, builtins (allocation, views, ``null_value`` from freeing registers) and
parallel launches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit import zoo  # noqa: E402
from edgevit.errors import EdgevitError, UsageError  # noqa: E402
from edgevit.tables import format_table  # noqa: E402


def structure(model, target_name: str = "host") -> dict:
    """Per kernel name: its parallel extents and time share on each thread count (``KernelParallelism``)."""
    from edgevit.backends import tvm_compiler
    from edgevit.backends.cpu_schedules.parallelism import kernel_parallelism, scheduled_kernels
    from edgevit.targets import get_target

    cpu = get_target(target_name).require_cpu()
    fused = tvm_compiler.fused_module(tvm_compiler.import_onnx(model.load(), model.inputs), cpu)
    target = tvm_compiler.make_target(cpu.tvm)
    with target:
        return {name: kernel_parallelism(func) for name, func in scheduled_kernels(fused, target).items()}


def profile(model, artifact: Path, runs: int, threads: int = 1, cpu_time: bool = False) -> tuple[list[dict], float]:
    """(per-kernel profile rows on ``threads`` threads, median ms of a whole inference without the hook);
    ``cpu_time``: the calling thread's CPU time (1 thread only)."""
    from edgevit.reference import random_inputs
    from edgevit.runtime.artifact import Artifact
    from edgevit.runtime.profiling import profile_kernels, time_models
    from edgevit.runtime.tvm_runtime import CompiledModel, thread_count
    from edgevit.settings import seed

    inputs = random_inputs(model.inputs, seed())
    with Artifact.open(artifact) as art, thread_count(threads):
        whole = time_models([art.library], inputs, rounds=3, runs=max(1, runs // 3), cpu_time=cpu_time)[0]
        return profile_kernels(CompiledModel(art.library), inputs, runs, cpu_time=cpu_time), whole


def add_measured(table: list[dict], summary: dict, rows: list[dict], whole_ms: float, one_ms: float) -> None:
    """Put a profile on more threads beside the bound: per kernel ``ms_n`` and its measured speed-up, per
    model ``measured`` (``one_ms`` / ``whole_ms``: whole inferences on 1 and on more threads, no hook). Only
    meaningful on a quiet machine."""
    by_name = {r["name"]: r["ms"] for r in rows}
    for row in table:
        row["ms_n"] = by_name.get(row["name"])
    summary["measured"] = one_ms / whole_ms if whole_ms else None


def bound(rows: list[dict], kernels: dict, whole_ms: float, threads: int, tiny_us: float,
          launch_us: float = 0.0) -> tuple[list, dict]:
    """Join a profile with the kernels' structure: per row its parallel extents and time on ``threads`` (its
    share of the work plus ``launch_us`` per parallel region); the model's Amdahl bound. The VM's time between
    calls (``whole_ms`` minus the calls) counts as serial."""
    table = []
    for row in rows:
        kernel = kernels.get(row["name"])
        share = kernel.time_share(threads) if kernel else 1.0
        extents = kernel.extents() if kernel else []
        launch_ms = row["calls"] * (kernel.launches if kernel else 0) * launch_us / 1e3
        kind = "runtime" if kernel is None else "serial" if share > 0.99 else \
            "tiny" if 1e3 * row["ms"] / max(row["calls"], 1) < tiny_us else \
            "uneven" if share > 1 / threads + 0.02 else "even"
        table.append({**row, "extents": extents, "serial_work": kernel.serial_work if kernel else None,
                      "work": kernel.work if kernel else None, "time_share": share, "launch_ms": launch_ms,
                      "kind": kind, "lost_ms": row["ms"] * (share - 1 / threads) + launch_ms})
    calls = sum(r["ms"] for r in rows)
    vm_ms = max(whole_ms - calls, 0.0)
    table.append({"name": "(VM between calls)", "calls": 0, "ms": vm_ms, "percent": None, "extents": [],
                  "serial_work": None, "work": None, "time_share": 1.0, "launch_ms": 0.0, "kind": "runtime",
                  "lost_ms": vm_ms * (1 - 1 / threads)})
    one = calls + vm_ms
    many = sum(r["ms"] * r["time_share"] + r["launch_ms"] for r in table)
    by_kind = {"launch": sum(r["launch_ms"] for r in table) / one}
    for r in table:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + (r["lost_ms"] - r["launch_ms"]) / one
    return table, {"ms_1_thread": one, "bound": one / many if many else None, "launch_us": launch_us,
                   "launches": sum(r["calls"] * (kernels[r["name"]].launches if r["name"] in kernels else 0)
                                   for r in rows),
                   "kernel_calls": sum(r["calls"] for r in rows if r["name"] in kernels),
                   "builtin_calls": {r["name"]: r["calls"] for r in rows if r["name"] not in kernels},
                   "lost_share": {k: round(v, 4) for k, v in sorted(by_kind.items())}}


def _read_report(path: Path) -> dict:
    """An earlier ``--json`` report, or UsageError."""
    try:
        return json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--profiles {path}: not a parallel_report JSON ({exc})") from None


def _earlier_profile(models: dict, name: str) -> tuple[list[dict], float]:
    """(profile rows, whole-inference ms) of ``name`` from an earlier report, or UsageError."""
    if name not in models:
        raise UsageError(f"--profiles has no {name}: it has {', '.join(models) or 'no models'}")
    rows = [{k: r[k] for k in ("name", "calls", "ms", "percent")} for r in models[name]["kernels"] if r["calls"]]
    return rows, models[name]["whole_ms"]


def format_model(name: str, table: list, summary: dict, threads: int, top: int) -> str:
    lines = sorted(table, key=lambda r: -r["lost_ms"])[:top]
    measured = "measured" in summary
    body = format_table([[r["name"][:64], str(r["calls"]), f"{r['ms']:.3f}", ",".join(map(str, r["extents"])) or "-",
                          r["kind"], f"{r['time_share']:.3f}", f"{100 * r['lost_ms'] / summary['ms_1_thread']:.1f}",
                          *([f"{r['ms'] / r['ms_n']:.2f}x" if r.get("ms_n") else "-"] if measured else [])]
                         for r in lines],
                        ["kernel", "calls", "ms (1 thread)", "parallel extents", "kind",
                         f"time on {threads} / on 1", "% of 1-thread time lost",
                         *([f"measured speed-up on {threads}"] if measured else [])])
    lost = ", ".join(f"{k} {100 * v:.1f} %" for k, v in summary["lost_share"].items() if v > 0)
    seen = f", measured {summary['measured']:.2f}x" if measured and summary["measured"] else ""
    builtins = summary["builtin_calls"]
    calls = f"{summary['kernel_calls']} kernel calls, {sum(builtins.values())} VM builtin calls (" + \
        ", ".join(f"{k} {v}" for k, v in sorted(builtins.items(), key=lambda kv: -kv[1])) + ")"
    return (f"{name}: 1 thread {summary['ms_1_thread']:.2f} ms, {calls}, {summary['launches']} parallel launches of "
            f"{summary['launch_us']:.2f} us; Amdahl bound on {threads} threads {summary['bound']:.2f}x{seen} "
            f"(lost: {lost})\n{body}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.ZOO), help="comma-separated zoo names (default all)")
    parser.add_argument("--threads", type=int, default=2, help="thread count the bound is for (default 2)")
    parser.add_argument("--runs", type=int, default=20, help="profiled inferences (default 20)")
    parser.add_argument("--tiny", type=float, default=20.0, help="flag parallel kernels under this many "
                        "microseconds per call (default 20)")
    parser.add_argument("--launch-us", type=float, help="cost of one parallel region on --threads threads, in "
                        "microseconds (default: measured now on a tiny kernel)")
    parser.add_argument("--measure", action="store_true", help="also profile on --threads threads and show "
                        "the measured speed-ups beside the bound (a quiet machine only; not with --profiles)")
    parser.add_argument("--cpu-time", action="store_true", help="take the 1-thread profile in the thread's CPU "
                        "time (a loaded machine; not with --measure)")
    parser.add_argument("--top", type=int, default=12, help="kernels listed per model (default 12)")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the host artifacts in this folder")
    parser.add_argument("--json", type=Path, help="also write every row as JSON")
    parser.add_argument("--profiles", type=Path, help="take the 1-thread profiles from this earlier --json "
                        "report instead of building and timing (compares schedules on the same times)")
    args = parser.parse_args()
    if args.threads < 2 or args.runs < 1 or (args.launch_us is not None and args.launch_us < 0):
        parser.error("--threads must be >= 2, --runs >= 1 and --launch-us >= 0")
    if args.measure and (args.profiles or args.cpu_time):
        parser.error("--measure profiles a build on several threads: not with --profiles or --cpu-time")
    # The pool must start with --threads threads (thread_count can only lower it).
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from edgevit.compiler import compile_for_target
    from edgevit.frontend import load_model
    from edgevit.targets import get_target

    report = {"command": " ".join(["python", *sys.argv]), "threads": args.threads, "models": {}}
    try:
        earlier = _read_report(args.profiles) if args.profiles else None
        launch_us = args.launch_us
        if launch_us is None:
            from edgevit.backends.cpu_schedules.parallelism import launch_cost_us

            launch_us = launch_cost_us(args.threads)
            print(f"parallel launch on {args.threads} threads: {launch_us:.2f} us (measured; load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
        report["launch_us"] = launch_us
        names = args.models.split(",")
        for name in names:
            zoo.get_entry(name)
        with tempfile.TemporaryDirectory(prefix="edgevit-parallel-") as tmp:
            keep = args.keep or Path(tmp)
            keep.mkdir(parents=True, exist_ok=True)
            for name in names:
                model = load_model(name)
                if earlier is not None:
                    rows, whole = _earlier_profile(earlier, name)
                else:
                    artifact = keep / f"{name}-host.tar"
                    if not artifact.exists():
                        compile_for_target(model, get_target("host"), artifact, command="tools/parallel_report.py")
                    rows, whole = profile(model, artifact, args.runs, cpu_time=args.cpu_time)
                table, summary = bound(rows, structure(model), whole, args.threads, args.tiny, launch_us)
                if args.measure:
                    add_measured(table, summary, *profile(model, artifact, args.runs, args.threads), whole)
                print(format_model(name, table, summary, args.threads, args.top), flush=True)
                report["models"][name] = {**summary, "whole_ms": whole, "kernels": table}
                if args.json:
                    args.json.write_text(json.dumps(report, indent=1) + "\n")
    except EdgevitError as exc:
        print(f"parallel_report: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_table([[n, f"{m['ms_1_thread']:.2f}", str(m["kernel_calls"]), str(sum(m["builtin_calls"].values())),
                         str(m["launches"]), f"{m['bound']:.2f}x",
                         *(f"{100 * m['lost_share'].get(k, 0):.1f}" for k in ("serial", "uneven", "tiny", "runtime",
                                                                               "launch"))]
                        for n, m in report["models"].items()],
                       ["model", "ms (1 thread)", "kernel calls", "VM builtin calls", "launches",
                        f"bound on {args.threads}", "% lost: serial kernels", "uneven split", "tiny", "runtime",
                        "launches"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
