"""``edgevit bench``: latency of edgevit's build against onnxruntime, same input, same thread count.

A benchmark, not a test: numbers depend on the machine and its load. Only the host can be timed here;
builds for boards run under qemu, whose timings say nothing about a real board.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

from .errors import EdgevitError
from .reference import compare, onnxruntime_session, random_inputs
from .settings import seed
from .tables import format_table


def _time(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _summary(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "std_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0, "runs": len(ms)}


def bench(model: str, target: str = "host", runs: int = 30, warmup: int = 3, threads: int = 1,
          input_shape: str | None = None) -> dict:
    """Time edgevit's build and onnxruntime on the same seeded input.

    Parameters
    ----------
    model
        Zoo name, ``.onnx`` file, or an artifact ``.tar`` built for ``host``.
    target
        Must be ``host``: other targets cannot be timed on this machine.
    threads
        Thread count for both engines (TVM reads it from ``TVM_NUM_THREADS``, set by the CLI).

    Returns
    -------
    dict
        Machine, model, per-engine summaries (median/min/max/std ms), ratio and numeric agreement.
    """
    from .compiler import compile_for_target
    from .frontend import load_model
    from .runtime.artifact import Artifact
    from .runtime.tvm_runtime import CompiledModel
    from .targets import get_target
    from .frontend import TensorSpec

    if target != "host":
        raise EdgevitError(f"cannot time target '{target}' here: its code would run under qemu, whose timings "
                           "say nothing about the board. Benchmark on the board itself (see README).")
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp:
        if model.endswith(".tar"):
            artifact_path = Path(model)
        else:
            artifact_path = Path(tmp) / "model.tar"
            compile_for_target(load_model(model, input_shape), get_target("host"), artifact_path)
        with Artifact.open(artifact_path) as artifact:
            meta = artifact.metadata
            specs = [TensorSpec.from_json(s) for s in meta["inputs"]]
            inputs = random_inputs(specs, seed())
            compiled = CompiledModel(artifact.library)
            session = onnxruntime_session(artifact.reference, threads)
            feed = dict(zip([i.name for i in session.get_inputs()], inputs))
            ours = _time(lambda: compiled(inputs), runs, warmup)
            peer = _time(lambda: session.run(None, feed), runs, warmup)
            agreement = compare(compiled(inputs), session.run(None, feed))
    import onnxruntime

    engines = {"edgevit": _summary(ours), "onnxruntime": _summary(peer)}
    return {
        "model": meta["model"]["name"], "target": meta["target"]["name"],
        "cpu": meta["target"]["tvm"].get("mcpu"), "machine": platform.machine(), "threads": threads,
        "tuned": meta.get("tuned", False),
        "versions": {**meta["versions"], "onnxruntime": onnxruntime.__version__},
        "engines": engines,
        "ratio_vs_onnxruntime": engines["edgevit"]["median_ms"] / engines["onnxruntime"]["median_ms"],
        "agreement": agreement.to_json(),
    }


def format_report(report: dict) -> str:
    """The bench report as a table with a header line."""
    rows = [[name, f"{s['median_ms']:.2f}", f"{s['min_ms']:.2f}", f"{s['max_ms']:.2f}", f"{s['std_ms']:.2f}",
             s["runs"]] for name, s in report["engines"].items()]
    head = (f"{report['model']} on {report['target']} ({report['cpu']}, {report['threads']} thread(s)); "
            f"edgevit build {'TUNED' if report['tuned'] else 'untuned (default TVM pipeline)'}")
    agree = report["agreement"]
    tail = (f"edgevit / onnxruntime = {report['ratio_vs_onnxruntime']:.2f}x   "
            f"(outputs agree: max rel error {agree['max_rel_error']:.2g}, top-1 "
            f"{'same' if agree['top1_agree'] else 'DIFFERENT'})")
    return "\n".join([head, format_table(rows, ["engine", "median ms", "min ms", "max ms", "std ms", "runs"]), tail])
