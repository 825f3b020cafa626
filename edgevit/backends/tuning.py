"""``edgevit tune``: measured schedule choices per kernel, with edgevit's default schedules as baseline.

Candidates are measured kernel by kernel with the same builder and runner (locally or on a board through RPC)
and logged in a MetaSchedule database (``measured/``): every kernel's default (rule-based) schedule; for the
slowest kernels, the rule's other tile choices (``SPACE`` in each rule: vector width, unroll, loop order), a
small space that already schedules well; then, optionally, MetaSchedule's random replay-trace search.

A kernel timed alone, repeatedly, has its weights in cache; inside the model they come in cold, and the choice
that wins alone often loses there (measured: tuned builds of efficientformer_l1 whose kernels summed 15 % faster
alone ran no faster as a model). So, when measuring on this machine, the final choice is made inside the model:
the model is built once per tile choice (every kernel its j-th variant) and once with the fastest isolated
record per kernel, every build is profiled kernel by kernel (``runtime.profiling``), and each kernel keeps the
candidate with the lowest in-model time, the default unless another measured faster; then the model built
with those choices is timed against the defaults, and if it is not faster every kernel keeps its default (per-kernel
wins did not always add up: mobilevit_xxs's choices once ran 3 % slower as a model). Through RPC the model
cannot be profiled, and the fastest isolated record is kept.

Database layout (a directory): MetaSchedule's ``database_workload.json`` and ``database_tuning_record.json``
with one record per kernel that does not use its default schedule (``compile --tuning-db`` applies them, the
rules schedule everything else); ``measured/``, every isolated measurement; ``edgevit_tuning.json``, what was
tuned, for which target, and each kernel's times and choice.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgevitError
from .tvm_compiler import fused_module, make_target, target_dict

SUMMARY = "edgevit_tuning.json"


@dataclass(frozen=True)
class RpcSettings:
    """Where to measure: a TVM RPC tracker and the key the board's RPC server registered with."""

    tracker_host: str
    tracker_port: int
    key: str
    session_timeout_sec: int = 60


def build_kernel(mod, target, _params):
    """LocalBuilder's build without ``import tvm.s_tir.tensor_intrin`` (26 s per worker on 2 cores), with the TIR
    pipeline the model's build uses (small buffers on the stack), so a candidate is timed as it will run."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from .stack_buffers import tir_pipeline

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target,
                     pipeline=tir_pipeline())


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
    def __init__(self, total: int, task_index: list[int]):
        self.total, self.done, self.best, self.start = total, 0, {}, time.monotonic()
        self.task_index = task_index  # searched task -> index among all tasks

    def __call__(self, task_scheduler, task_id, candidates, builder_results, runner_results) -> None:
        self.done += len(candidates)
        task = self.task_index[task_id]
        for result in runner_results:
            if result.run_secs:
                secs = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best[task] = min(self.best.get(task, secs), secs)
        width = 30
        filled = int(width * min(self.done, self.total) / max(self.total, 1))
        print(f"\r[edgevit] tuning [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} trials, "
              f"{time.monotonic() - self.start:.0f} s", end="", file=sys.stderr, flush=True)


def _kernel_args(sch):
    """The arguments a scheduled kernel takes once its weight re-layout block is removed (``build_kernel``
    removes it; the model's build folds it into the constants), i.e. with its weights already in panels."""
    from tvm.s_tir import meta_schedule as ms

    return ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)


def _measure(candidates, target, builder, runner, database) -> list[float | None]:
    """Build and run (task, label, schedule) candidates; commit each measured one as a tuning record.

    Returns the mean seconds per candidate (None where it failed to build or run)."""
    from tvm.s_tir import meta_schedule as ms

    inputs = [(task, sch, _kernel_args(sch)) for task, _, sch in candidates]
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch, _ in inputs])
    runnable = [i for i, b in enumerate(built) if not b.error_msg]
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, "cpu", inputs[i][2]) for i in runnable])
    seconds: list[float | None] = [None] * len(candidates)
    for i, future in zip(runnable, futures):
        result = future.result()
        if result.error_msg or not result.run_secs:
            continue
        task, sch, args = inputs[i]
        run_secs = [float(x) for x in result.run_secs]
        workload = database.commit_workload(task.dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, run_secs, target, args))
        seconds[i] = sum(run_secs) / len(run_secs)
    return seconds


def _measure_rules(tasks, variants, target, builder, runner, database, share: float) -> dict[str, dict]:
    """Measure every kernel's default schedule, then the rule's other tile choices for the kernels that make
    up ``share`` of the default run time (slowest first). All go into the database as tuning records.

    Returns per kernel ``{"default": s, "variant": label, "variant_s": s}`` (variant entries only where a
    variant was measured)."""
    defaults = [(t, "default", variants[t.task_name][0][1]) for t in tasks if variants[t.task_name]]
    seconds = _measure(defaults, target, builder, runner, database)
    found = {task.task_name: {"default": s} for (task, _, _), s in zip(defaults, seconds) if s is not None}
    cost = sorted(((found[t.task_name]["default"] * float(t.weight), t) for t in tasks if t.task_name in found),
                  key=lambda c: -c[0])
    total, covered, chosen = sum(c for c, _ in cost), 0.0, []
    for c, task in cost:
        if covered >= share * total:
            break
        covered += c
        chosen += [(task, label, sch) for label, sch in variants[task.task_name][1:]]
    print(f"[edgevit] {len(found)} default schedules measured; {len(chosen)} tile variants of the kernels that "
          f"take {100 * share:.0f} % of the time", file=sys.stderr, flush=True)
    for (task, label, _), s in zip(chosen, _measure(chosen, target, builder, runner, database)):
        best = found[task.task_name]
        if s is not None and s < best.get("variant_s", float("inf")):
            best.update(variant=label, variant_s=s)
    return found


def tune(mod, target_obj, database_dir: Path, trials: int = 64, rpc: RpcSettings | None = None,
         min_weight: float = 0.0, share: float = 0.9, threads: int | None = None) -> dict:
    """Tune a model's kernels for a target and write the database to ``database_dir``.

    Parameters
    ----------
    mod
        The imported Relax module (``tvm_compiler.import_onnx``).
    target_obj
        An ``edgevit.targets.Target`` with a CPU side.
    trials
        Random-search trials per kernel (MetaSchedule replay-trace), after the rules' own tile variants;
        0 measures the rules' variants only.
    share
        The rules' tile variants are measured for the slowest kernels that together take this share of the
        default schedules' run time.
    rpc
        Measure on a board through a TVM RPC tracker instead of this machine (needed for foreign targets).
    threads
        TVM threads to measure with (locally: ``TVM_NUM_THREADS`` of the measuring processes and this one's
        thread pool); None leaves TVM's default (every core). Choices made for 1 thread need not suit 2.

    Returns
    -------
    dict
        The summary also written to ``edgevit_tuning.json``: per kernel, the default schedule's seconds, the
        best tile variant's and the best searched one's (alone), the in-model seconds of the default and of
        the choice (local tuning), and which one the database uses.
    """
    import os

    from tvm.s_tir import meta_schedule as ms

    from .cpu_schedules import schedule_variants

    cpu = target_obj.require_cpu()
    if cpu.is_cross and rpc is None:
        raise EdgevitError(f"target '{target_obj.name}' is {cpu.arch}: its kernels can only be measured on the "
                           "board; pass --rpc-tracker HOST:PORT --rpc-key KEY")
    saved_threads = os.environ.get("TVM_NUM_THREADS")
    if threads is not None:
        os.environ["TVM_NUM_THREADS"] = str(threads)  # inherited by the runner's worker process
    # MetaSchedule insists on a core count; the host target leaves it to the runtime.
    target = make_target({"num-cores": os.cpu_count() or 1, **cpu.tvm})
    tasks = [t for t in ms.relax_integration.extract_tasks(fused_module(mod, cpu), target)
             if t.weight >= min_weight]
    if not tasks:
        raise EdgevitError("this model has no kernels to tune")
    variants = {t.task_name: schedule_variants(t.dispatched[0]["main"], target) for t in tasks}
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
    measured = open_database(database_dir / "measured")
    try:
        print(f"[edgevit] {len(tasks)} kernels; measuring the default schedules first", file=sys.stderr,
              flush=True)
        start = time.monotonic()
        rules = _measure_rules(tasks, variants, target, builder, runner, measured, share)
        searched = _search(tasks, target, trials, database_dir, builder, runner, measured) if trials > 0 else {}
    finally:
        # The runner's worker process (~1 GB) outlives this call otherwise, even after the interpreter exits.
        pool = getattr(runner, "pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
        if saved_threads is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = saved_threads
    print(file=sys.stderr)
    isolated = {t.task_name: _fastest_record(measured, t) for t in tasks}
    if rpc is None:
        selection = _select_in_model(mod, cpu, tasks, variants, isolated, target, threads)
    else:
        selection = _select_isolated(tasks, variants, isolated)
    _write_database(database_dir, tasks, selection["choices"])
    kernels = []
    for i, task in enumerate(tasks):
        found, choice = rules.get(task.task_name, {}), selection["choices"][task.task_name]
        kernels.append({"kernel": task.task_name, "calls": int(task.weight), "baseline_s": found.get("default"),
                        "variant": found.get("variant"), "variant_s": found.get("variant_s"),
                        "tuned_s": searched.get(i), "uses": choice.uses, "uses_variant": choice.label,
                        **selection["kernels"][task.task_name]})
    summary = {"target": target_obj.name, "tvm": target_dict(cpu.tvm), "trials_per_kernel": trials, "share": share,
               "threads": threads,
               "measured_on": f"rpc {rpc.tracker_host}:{rpc.tracker_port} key {rpc.key}" if rpc else "local",
               "selected_by": selection["by"], "model_ms": selection.get("model_ms"),
               "seconds": time.monotonic() - start, "kernels": kernels}
    (database_dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _fastest_record(database, task):
    """The database's fastest record for a task's kernel, or None."""
    workload = database.commit_workload(task.dispatched[0])
    top = database.get_top_k(workload, 1)
    return top[0] if top else None


@dataclass(frozen=True)
class _Choice:
    """One candidate schedule of a kernel: ``record`` None means the rules' default schedule."""

    record: object
    uses: str                 # "default" | "variant" | "search"
    label: str | None = None  # the tile variant's knobs

    def timed(self, seconds: float) -> "_Choice":
        """The same schedule as a record whose time is ``seconds`` (what decided it)."""
        from tvm.s_tir import meta_schedule as ms

        if self.record is None:
            return self
        r = self.record
        return _Choice(ms.database.TuningRecord(r.trace, r.workload, [seconds], r.target, r.args_info),
                       self.uses, self.label)


def _variant_choices(task, variants, target) -> list[_Choice]:
    """The rule's tile variants of a task as choices (the first, the default, without a record; the others'
    time a placeholder until :meth:`_Choice.timed`)."""
    from tvm.s_tir import meta_schedule as ms

    workload = ms.database.Workload(task.dispatched[0])
    return [_Choice(None, "default")] + [
        _Choice(ms.database.TuningRecord(sch.trace, workload, [1.0], target, _kernel_args(sch)), "variant", label)
        for label, sch in variants[1:]]


def _isolated_choice(record, variants) -> _Choice:
    """A measured record as a choice, named by what made it: a tile variant (by its schedule) or the search."""
    import tvm_ffi
    from tvm.s_tir import Schedule

    if record is None:
        return _Choice(None, "default")
    replayed = Schedule(record.workload.mod)
    record.trace.apply_to_schedule(replayed, remove_postproc=False)
    key = tvm_ffi.structural_hash(replayed.mod)
    for j, (label, sch) in enumerate(variants):
        if tvm_ffi.structural_hash(sch.mod) == key:
            return _Choice(None, "default") if j == 0 else _Choice(record, "variant", label)
    return _Choice(record, "search")


def _fill(database, tasks, choices: dict):
    """Commit each task's chosen record (none for the default: the rules schedule it) to ``database``."""
    from tvm.s_tir import meta_schedule as ms

    for task in tasks:
        choice = choices.get(task.task_name)
        if choice is None or choice.record is None:
            continue
        r = choice.record
        workload = database.commit_workload(task.dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(r.trace, workload, r.run_secs, r.target,
                                                               r.args_info))
    return database


def _select_isolated(tasks, variants, isolated) -> dict:
    """Each kernel's fastest record measured alone (RPC tuning: the model cannot be profiled on the board)."""
    return {"by": "isolated measurement",
            "choices": {t.task_name: _isolated_choice(isolated[t.task_name], variants[t.task_name]) for t in tasks},
            "kernels": {t.task_name: {} for t in tasks}}


def _select_in_model(mod, cpu, tasks, variants, isolated, target, threads, rounds: int = 3, runs: int = 5) -> dict:
    """Choose each kernel's schedule by its time inside the model (see the module's docstring).

    Builds: ``j`` = every kernel's ``j``-th tile variant (0: the defaults), and one with every kernel's fastest
    record measured alone. Each build is profiled ``rounds`` x ``runs`` inferences, the builds taking turns;
    per kernel, the lowest median (over rounds) of its in-model milliseconds decides.
    """
    import statistics
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    from ..frontend import TensorSpec
    from ..reference import random_inputs
    from ..runtime.profiling import profile_kernels, time_models
    from ..runtime.tvm_runtime import CompiledModel, thread_count
    from ..settings import seed
    from .tvm_compiler import build, export_library, input_types

    per_task = {t.task_name: _variant_choices(t, variants[t.task_name], target) for t in tasks}
    candidates = [{name: c[j] for name, c in per_task.items() if j < len(c)}
                  for j in range(max(len(c) for c in per_task.values()))]
    fastest_alone = {t.task_name: _isolated_choice(isolated[t.task_name], variants[t.task_name]) for t in tasks}
    candidates.append({name: choice for name, choice in fastest_alone.items() if choice.uses != "default"})
    inputs = random_inputs([TensorSpec(f"input{i}", shape, dtype)
                            for i, (shape, dtype) in enumerate(input_types(mod))], seed())
    print(f"[edgevit] choosing inside the model: {len(candidates)} builds, each profiled {rounds} x {runs} "
          "inferences", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="edgevit-select-") as tmp, thread_count(threads):
        def build_library(choices: dict, name: str) -> Path:
            library = Path(tmp) / f"{name}.so"  # a name of its own: dlopen hands back a loaded path's library
            database = _fill(ms.database.MemoryDatabase(module_equality="structural"), tasks, choices)
            export_library(build(mod, cpu, database), cpu, library)
            return library

        libraries = []
        for c, choices in enumerate(candidates):
            libraries.append(build_library(choices, f"candidate{c}"))
            print(f"\r[edgevit] built {c + 1}/{len(candidates)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        models = [CompiledModel(library) for library in libraries]  # loaded once for all rounds
        times = {t.task_name: {} for t in tasks}
        for _ in range(rounds):
            for c, model in enumerate(models):
                for row in profile_kernels(model, inputs, runs):
                    if row["name"] in candidates[c]:
                        times[row["name"]].setdefault(c, []).append(row["ms"])
        chosen, kernels = {}, {}
        for task in tasks:
            ms_per = {c: statistics.median(v) for c, v in times[task.task_name].items()}
            best = min(ms_per, key=ms_per.get) if ms_per else 0
            calls = max(int(task.weight), 1)
            chosen[task.task_name] = candidates[best][task.task_name].timed(ms_per.get(best, 0) / 1e3 / calls)
            kernels[task.task_name] = {"in_model_default_ms": ms_per.get(0), "in_model_ms": ms_per.get(best)}
        model_ms = time_models([libraries[0], build_library(chosen, "chosen")], inputs, rounds=5, runs=10)
    kept = model_ms[1] < model_ms[0]
    print(f"[edgevit] whole model: default schedules {model_ms[0]:.2f} ms, chosen {model_ms[1]:.2f} ms "
          f"(medians of 5 x 10 inferences): {'chosen kept' if kept else 'not faster, the defaults are kept'}",
          file=sys.stderr, flush=True)
    if not kept:  # the per-kernel choices did not add up to a faster model: the rules' schedules stay
        chosen = {name: _Choice(None, "default") for name in chosen}
    return {"by": "in-model profile" if kept else "in-model profile; defaults kept (whole model not faster)",
            "choices": chosen, "kernels": kernels, "model_ms": {"default": model_ms[0], "chosen": model_ms[1]}}


def _write_database(database_dir: Path, tasks, choices: dict) -> None:
    """The database ``compile --tuning-db`` applies: exactly the chosen record per kernel (none: default)."""
    for name in ("database_workload.json", "database_tuning_record.json"):
        (database_dir / name).unlink(missing_ok=True)
    _fill(open_database(database_dir), tasks, choices)


def _search(tasks, target, trials, database_dir, builder, runner, database) -> dict[int, float]:
    """MetaSchedule's replay-trace search, ``trials`` per kernel, into the same database.

    Returns the best measured seconds per index into ``tasks`` (kernels without a search space are skipped)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback.measure_callback import _PyMeasureCallback

    contexts, weights, task_index = [], [], []
    for i, task in enumerate(tasks):
        ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator="post-order-apply",
                             search_strategy="replay-trace", task_name=task.task_name, num_threads=1)
        try:
            ctx.generate_design_space()
        except Exception:  # noqa: BLE001 - MetaSchedule's rules cannot schedule it (fused attention): skip
            print(f"[edgevit] {task.task_name}: no MetaSchedule search space; tile variants only",
                  file=sys.stderr, flush=True)
            continue
        contexts.append(ctx)
        weights.append(float(task.weight))
        task_index.append(i)
    progress = _Progress(trials * len(contexts), task_index)
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(database_dir),
                  max_trials_global=trials * len(contexts), max_trials_per_task=trials,
                  num_trials_per_iter=min(trials, 16), builder=builder, runner=runner, database=database,
                  cost_model="random", task_scheduler="round-robin",
                  measure_callbacks=[*ms.MeasureCallback.create("default"), _PyMeasureCallback(progress)])
    return progress.best
