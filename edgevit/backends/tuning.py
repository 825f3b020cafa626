"""``edgevit tune``: MetaSchedule search over a model's kernels, with edgevit's default schedules as baseline.

Every kernel's rule-based schedule is measured first, with the same builder and runner as the search, and
committed to the database as a tuning record. MetaSchedule's replay-trace search then adds its candidates;
the database keeps the fastest record per kernel, so a tuned kernel is used only where it measured faster than
the rule-based one (``compile --tuning-db`` applies the database, the rules schedule everything else).

Database layout (a directory): MetaSchedule's ``database_workload.json`` and ``database_tuning_record.json``,
plus ``edgevit_tuning.json`` (what was tuned, for which target, and which kernels beat the baseline).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgevitError
from .tvm_compiler import fused_module, make_target

SUMMARY = "edgevit_tuning.json"


@dataclass(frozen=True)
class RpcSettings:
    """Where to measure: a TVM RPC tracker and the key the board's RPC server registered with."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_sec: int = 60


def build_kernel(mod, target, _params):
    """LocalBuilder's build without ``import tvm.s_tir.tensor_intrin`` (26 s per worker on 2 cores)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export_with(compiler: str | None):
    def export(module) -> str:
        import os
        import tempfile

        import tvm.support.cc as cc

        path = os.path.join(tempfile.mkdtemp(prefix="edgevit-tune-"), "kernel.so")
        if compiler:
            module.export_library(path, fcompile=cc.cross_compiler(compiler))
        else:
            module.export_library(path)
        return path

    return export


def open_database(path: Path):
    """The MetaSchedule JSON database in directory ``path`` (created if missing)."""
    from tvm.s_tir import meta_schedule as ms

    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(path_workload=str(path / "database_workload.json"),
                                    path_tuning_record=str(path / "database_tuning_record.json"),
                                    module_equality="structural")


def load_database(path: Path, target_name: str | None = None):
    """Open an existing tuning database for ``compile --tuning-db``.

    Raises
    ------
    EdgevitError
        If ``path`` is not a database written by ``edgevit tune``, or was tuned for another target.
    """
    summary = path / SUMMARY
    if not summary.exists():
        raise EdgevitError(f"{path} is not a tuning database (no {SUMMARY}); create one with `edgevit tune`")
    info = json.loads(summary.read_text())
    if target_name and info.get("target") != target_name:
        raise EdgevitError(f"{path} was tuned for target '{info.get('target')}', not '{target_name}'")
    return open_database(path)


class _Progress:
    def __init__(self, total: int):
        self.total, self.done, self.best, self.start = total, 0, {}, time.monotonic()

    def __call__(self, task_scheduler, task_id, candidates, builder_results, runner_results) -> None:
        self.done += len(candidates)
        for result in runner_results:
            if result.run_secs:
                secs = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best[task_id] = min(self.best.get(task_id, secs), secs)
        width = 30
        filled = int(width * min(self.done, self.total) / max(self.total, 1))
        print(f"\r[edgevit] tuning [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} trials, "
              f"{time.monotonic() - self.start:.0f} s", end="", file=sys.stderr, flush=True)


def _measure_baseline(tasks, target, builder, runner, database) -> dict[str, float]:
    """Measure each task's rule-based schedule and commit it as a tuning record; returns seconds per task."""
    from tvm.s_tir import meta_schedule as ms

    from .cpu_schedules import first_schedule

    candidates = []
    for task in tasks:
        func = task.dispatched[0]["main"]
        _, sch = first_schedule(func, target)
        if sch is not None:
            candidates.append((task, sch, ms.arg_info.ArgInfo.from_prim_func(func)))
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch, _ in candidates])
    runnable = [(c, b) for c, b in zip(candidates, built) if not b.error_msg]
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", args) for (_, _, args), b in runnable])
    seconds = {}
    for ((task, sch, args), _), future in zip(runnable, futures):
        result = future.result()
        if result.error_msg or not result.run_secs:
            continue
        run_secs = [float(s) for s in result.run_secs]
        workload = database.commit_workload(task.dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args))
        seconds[task.task_name] = sum(run_secs) / len(run_secs)
    return seconds


def tune(mod, target_obj, database_dir: Path, trials: int = 64, rpc: RpcSettings | None = None,
         min_weight: float = 0.0) -> dict:
    """Tune a model's kernels for a target and write the database to ``database_dir``.

    Parameters
    ----------
    mod
        The imported Relax module (``tvm_compiler.import_onnx``).
    target_obj
        An ``edgevit.targets.Target`` with a CPU side.
    trials
        Search trials per kernel (replay-trace; the rule-based baseline is measured on top).
    rpc
        Measure on a board through a TVM RPC tracker instead of this machine (needed for foreign targets).

    Returns
    -------
    dict
        The summary also written to ``edgevit_tuning.json``: per kernel, baseline and best tuned seconds and
        which one the database will use.
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback.measure_callback import _PyMeasureCallback

    cpu = target_obj.require_cpu()
    if cpu.is_cross and rpc is None:
        raise EdgevitError(f"target '{target_obj.name}' is {cpu.arch}: its kernels can only be measured on the "
                           "board; pass --rpc-tracker HOST:PORT --rpc-key KEY")
    import os

    # MetaSchedule insists on a core count; the host target leaves it to the runtime.
    target = make_target({"num-cores": os.cpu_count() or 1, **cpu.tvm})
    tasks = [t for t in ms.relax_integration.extract_tasks(fused_module(mod, cpu), target)
             if t.weight >= min_weight]
    if not tasks:
        raise EdgevitError("this model has no kernels to tune")
    builder = ms.builder.LocalBuilder(f_build=build_kernel, max_workers=1, timeout_sec=60,
                                      f_export=_export_with(cpu.cross_compiler.command if cpu.cross_compiler
                                                            else None))
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20, enable_cpu_cache_flush=False)
    if rpc is None:
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator)
    else:
        runner = ms.runner.RPCRunner(ms.runner.RPCConfig(rpc.tracker_host, rpc.tracker_port, rpc.key,
                                                         session_timeout_sec=rpc.session_timeout_sec),
                                     evaluator_config=evaluator, max_workers=1)
    try:
        database = open_database(database_dir)
        print(f"[edgevit] {len(tasks)} kernels; measuring the default schedules first", file=sys.stderr,
              flush=True)
        baseline = _measure_baseline(tasks, target, builder, runner, database)
        contexts = [ms.TuneContext(mod=t.dispatched[0], target=target, space_generator="post-order-apply",
                                   search_strategy="replay-trace", task_name=t.task_name, num_threads=1)
                    for t in tasks]
        progress = _Progress(trials * len(tasks))
        start = time.monotonic()
        ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in tasks], work_dir=str(database_dir),
                      max_trials_global=trials * len(tasks), max_trials_per_task=trials,
                      num_trials_per_iter=min(trials, 16), builder=builder, runner=runner, database=database,
                      cost_model="random", task_scheduler="round-robin",
                      measure_callbacks=[*ms.MeasureCallback.create("default"), _PyMeasureCallback(progress)])
    finally:
        # The runner's worker process (~1 GB) outlives this call otherwise, even after the interpreter exits.
        pool = getattr(runner, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
    print(file=sys.stderr)
    kernels = []
    for i, task in enumerate(tasks):
        tuned = progress.best.get(i)
        base = baseline.get(task.task_name)
        kernels.append({"kernel": task.task_name, "calls": int(task.weight), "baseline_s": base, "tuned_s": tuned,
                        "uses": "tuned" if tuned is not None and (base is None or tuned < base) else "default"})
    summary = {"target": target_obj.name, "tvm": cpu.tvm, "trials_per_kernel": trials,
               "measured_on": f"rpc {rpc.tracker_host}:{rpc.tracker_port} key {rpc.key}" if rpc else "local",
               "seconds": time.monotonic() - start, "kernels": kernels}
    (database_dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    return summary
