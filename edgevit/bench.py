"""``edgevit bench``: latency of edgevit's build against onnxruntime (and LiteRT), same input, same thread count.

A benchmark, not a test: numbers depend on the machine and its load. Only the host can be timed here;
builds for boards run under qemu, whose timings say nothing about a real board.
"""

from __future__ import annotations

import functools

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EdgevitError, UsageError
from .reference import compare, random_inputs
from .runtime.profiling import profile_kernels
from .settings import seed
from .bench_report import _noise, format_all, plot_all

if TYPE_CHECKING:
    from .quantize import QuantizeSettings


def _time_in_workers(models: dict[str, tuple[str, str]], inputs: list, threads: int, runs: int, warmup: int,
                     tmp: Path) -> tuple[dict[str, list[float]], dict[str, list], float | None]:
    """Time each engine in a process of its own, the engines taking turns in blocks of runs.

    Why: timed in one process, one run each in turn, the engines measured each other's idle threads, not
    their speed. After a run onnxruntime's intra-op threads spin-wait for more work, so at 2 threads on 2 cores
    edgevit shared its second core with them: on an idle machine mobilevit_xxs took 35 ms interleaved, 10-11 ms
    alone or interleaved with onnxruntime's spinning off (1 thread: ~14 ms). Here an engine waits on a pipe
    while another is timed, and the next block starts only once the last engine's threads have stopped
    spinning (``_wait_until_idle``). Taking turns in blocks still spreads slow changes of the machine's load
    over all engines. Each engine keeps its default threading. Other processes still skew timings, 2-thread
    ones most (spin-waiting suffers when cores are shared): hence the share of CPU they took, measured here.

    ``models`` maps an engine name to (Python executable, model path). Returns run times and outputs per engine
    and the share of the machine's CPU that other processes used while engines were timed (None if unknown).
    """
    import json
    import subprocess

    import numpy as np

    np.savez(tmp / "inputs.npz", *inputs)
    checkout = str(Path(__file__).resolve().parents[1])  # a worker's Python need not have edgevit installed
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([checkout, os.environ.get("PYTHONPATH", "")])}
    logs = {name: (tmp / f"{name}.log").open("w") for name in models}
    workers = {name: subprocess.Popen([python, "-m", "edgevit.bench_worker", name, model, str(tmp / "inputs.npz"),
                                       str(tmp / f"{name}-outputs.npz"), str(threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=logs[name], text=True, env=env)
               for name, (python, model) in models.items()}

    def last_log_line(name: str) -> str:
        return ((tmp / f"{name}.log").read_text().strip().splitlines() or ["no message"])[-1]

    try:
        for name, worker in workers.items():
            if worker.stdout.readline().strip() != "ready":
                raise EdgevitError(f"the {name} benchmark process failed to load the model: {last_log_line(name)}")

        def block(name: str, n: int) -> list[float]:
            busy, start = _busy_cpu_seconds(), time.perf_counter()
            workers[name].stdin.write(f"{n}\n")
            workers[name].stdin.flush()
            line = workers[name].stdout.readline()
            if not line:
                raise EdgevitError(f"the {name} benchmark process died: {last_log_line(name)}")
            answer = json.loads(line)
            if busy is not None:
                other[0] += _busy_cpu_seconds() - busy - answer["cpu_s"]
                other[1] += (time.perf_counter() - start) * (os.cpu_count() or 1)
            _wait_until_idle(workers[name].pid)
            return answer["seconds"]

        rounds = max(1, min(5, runs))
        seconds = {name: [] for name in workers}
        other = [0.0, 0.0]  # CPU seconds of other processes, CPU seconds available, over the timed blocks
        for name in workers:
            block(name, warmup)
        other[:] = [0.0, 0.0]
        for r in range(rounds):
            for name in workers:
                seconds[name] += block(name, runs // rounds + (r < runs % rounds))
    finally:
        for name, worker in workers.items():
            worker.stdin.close()
            worker.wait()
            logs[name].close()
    outputs = {}
    for name in workers:
        with np.load(tmp / f"{name}-outputs.npz") as data:
            outputs[name] = [data[f"arr_{i}"] for i in range(len(data.files))]
    return seconds, outputs, max(0.0, other[0]) / other[1] if other[1] else None


def _wait_until_idle(pid: int, timeout: float = 2.0) -> None:
    """Return once process ``pid`` has used no CPU for 20 ms: its thread pool has stopped spin-waiting.

    Measured here at 2 threads: after a block of runs TVM's pool spins on for ~160 ms, onnxruntime's for
    ~45 ms, LiteRT's not at all; the next engine timed would share a core with that spinning thread.
    """
    stat = Path(f"/proc/{pid}/stat")

    def cpu_ticks() -> int:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    try:
        last, quiet, deadline = cpu_ticks(), 0, time.monotonic() + timeout
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            now = cpu_ticks()
            quiet, last = (quiet + 1 if now == last else 0), now
    except (OSError, ValueError, IndexError):  # no /proc (not Linux): give spinning threads time to stop
        time.sleep(0.3)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``), or None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


@functools.lru_cache(maxsize=1)
def _clock_and_lanes() -> tuple[float, int, str]:
    """Nominal clock (MHz, from /proc/cpuinfo; 0 if unknown), float32 vector lanes and LLVM CPU name of the
    host."""
    from .backends.cpu_schedules import CpuInfo
    from .backends.tvm_compiler import make_target, target_dict
    from .targets import get_target

    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    cpu = target_dict(get_target("host").require_cpu().tvm)
    return mhz, CpuInfo.of(make_target(cpu)).lanes, str(cpu.get("mcpu", ""))


def fp32_peak_gflops(threads: int) -> dict:
    """Nominal FP32 peak of this CPU: clock x vector lanes x 2 (FMA) x FMA pipes x threads.

    The clock is the nominal one ``/proc/cpuinfo`` reports (turbo can exceed it); lanes come from the host
    target (16 with AVX-512, 8 with AVX2). Two full-width FMA pipes, except Zen 4, which splits a 512-bit FMA
    over its two 256-bit pipes (one per cycle).
    """
    mhz, lanes, mcpu = _clock_and_lanes()
    pipes = 1 if mcpu == "znver4" and lanes == 16 else 2
    return {"gflops": mhz / 1e3 * lanes * 2 * pipes * threads,
            "formula": f"{mhz:.0f} MHz x {lanes} lanes x 2 (FMA) x {pipes} pipes x {threads} thread(s)"}


def _macs(model_name: str) -> int | None:
    from . import zoo

    return zoo.stats(model_name)["macs"] if model_name in zoo.ZOO else None


def _summary(seconds: list[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "std_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0, "runs": len(ms)}


def bench(model: str, target: str = "host", runs: int = 30, warmup: int = 3, threads: int = 1,
          input_shape: str | None = None, tuning_db: str | None = None, profile: bool = False,
          quantize: QuantizeSettings | None = None, litert: bool = True) -> dict:
    """Time edgevit's build, onnxruntime and (if converted) LiteRT on the same seeded input.

    Each engine runs in a process of its own; they take turns in blocks of runs (see ``_time_in_workers``).
    With ``quantize``, the model is quantized first (``quantize_cached``) and the engines are edgevit and
    onnxruntime on the same QDQ file (``edgevit int8``, ``onnxruntime int8``), edgevit judged by the int8 rule of
    ``run --verify`` (``execute.verify_int8_groups``: every QDQ group against onnxruntime, by a probe build run
    once after the timed runs; ``agreement['ok']``).

    Parameters
    ----------
    model
        Zoo name, ``.onnx`` file, or an artifact ``.tar`` built for ``host``.
    target
        Must be ``host``: other targets cannot be timed on this machine.
    threads
        Thread count for every engine (passed to each engine's process; TVM's as ``TVM_NUM_THREADS``).
    tuning_db
        Compile with this ``edgevit tune`` database (ignored for an artifact).
    profile
        Also time every kernel of edgevit's build (``profile`` in the report).
    quantize
        Calibration settings: bench the int8 QDQ form of ``model`` (a zoo name or float ``.onnx`` file).
    litert
        Also time LiteRT when the zoo model has a converted ``.tflite`` (``tools/setup_litert.sh``); with
        ``quantize``, its int8 form calibrated on the same samples (``litert.int8_tflite``).

    Returns
    -------
    dict
        Machine, model, per-engine summaries (median/min/max/std ms, GFLOP/s for zoo models), ratios to
        onnxruntime, FP32 peak, numeric agreement with onnxruntime, ``litert``: whether LiteRT ran (or why
        not), ``compile_s`` (None for an artifact) and, with ``quantize``, ``quantization``.

    Raises
    ------
    UsageError
        ``quantize`` with an artifact ``.tar`` (only a float model can be calibrated).
    """
    from .compiler import compile_for_target
    from .frontend import TensorSpec, load_model
    from .runtime.artifact import Artifact
    from .runtime.tvm_runtime import CompiledModel
    from .litert import SETUP_HINT, find_converted, int8_tflite
    from .quantize import compare_int8, output_steps, quantize_cached
    from .targets import get_target
    from .zoo import ZOO

    if target != "host":
        raise EdgevitError(f"cannot time target '{target}' here: its code would run under qemu, whose timings "
                           "say nothing about the board. Benchmark on the board itself (see README).")
    if quantize is not None and model.endswith(".tar"):
        raise UsageError(f"--quantize int8 needs a zoo name or float .onnx file, not the artifact {model}: only "
                         "a float model can be calibrated (bench an int8 artifact without --quantize)")
    compile_s = None
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp:
        if model.endswith(".tar"):
            artifact_path = Path(model)
        else:
            artifact_path = Path(tmp) / "model.tar"
            imported = load_model(model, input_shape)
            if quantize is not None:
                imported = quantize_cached(imported, quantize)
            start = time.monotonic()
            compile_for_target(imported, get_target("host"), artifact_path,
                               tuning_db=Path(tuning_db) if tuning_db else None)
            compile_s = time.monotonic() - start
        with Artifact.open(artifact_path) as artifact:
            meta = artifact.metadata
            if artifact.reference is not None and artifact.reference.suffix == ".tflite":
                raise UsageError(f"{model} was built from a .tflite file; edgevit bench times against onnxruntime "
                                 "on an ONNX reference: time it with `edgevit run ARTIFACT --repeat N`")
            specs = [TensorSpec.from_json(s) for s in meta["inputs"]]
            inputs = random_inputs(specs, seed())
            models = {"edgevit": (sys.executable, str(artifact.library)),
                      "onnxruntime": (sys.executable, str(artifact.reference))}
            name = meta["model"]["name"]
            zoo_model = name in ZOO and meta["model"].get("source", "").startswith("zoo:")
            if quantize is not None:
                from .quantize import calibration_inputs

                lite, what = int8_tflite(model, calibration_inputs(quantize.calibration, specs[0], quantize.count),
                                         quantize.per_channel) if litert else (None, "not asked for")
                if lite:
                    models["litert"] = (sys.executable, str(lite))
                litert_status = f"LiteRT int8: {'ran, ' if lite else ''}{what}"
            else:
                converted = find_converted(name) if zoo_model and litert else None
                if converted:
                    models["litert"] = (str(converted[1]), str(converted[0]))
                litert_status = ("ran" if converted else "not asked for" if not litert else SETUP_HINT if zoo_model
                                 else "zoo models only")
            load_before = os.getloadavg()[0]
            seconds, outputs, other_cpu = _time_in_workers(models, inputs, threads, runs, warmup, Path(tmp))
            load_after = os.getloadavg()[0]
            if quantize is not None:
                import onnx

                from .execute import verify_int8_groups

                steps = output_steps(onnx.load(str(artifact.reference)))
                end_to_end = compare_int8(outputs["edgevit"], outputs["onnxruntime"], steps)
                # the rule of run --verify: the probe build runs once, after the timed runs
                verdict = verify_int8_groups(artifact_path, inputs, outputs["edgevit"], end_to_end, "local")
                agreement = {"edgevit": {**{k: v for k, v in verdict.to_json().items() if k != "groups"},
                                         "summary": verdict.summary(),
                                         "failing_groups": [g.line() for g in verdict.failing]}}
                if "litert" in outputs:  # quantized by another tool: its own ranges, so compared as floats
                    agreement["litert"] = compare(outputs["litert"], outputs["onnxruntime"]).to_json()
            else:
                agreement = {e: compare(outputs[e], outputs["onnxruntime"]).to_json() for e in outputs
                             if e != "onnxruntime"}
            kernels = profile_kernels(CompiledModel(artifact.library), inputs, max(3, runs // 3)) \
                if profile else None
    import onnxruntime

    engines = {name: _summary(values) for name, values in seconds.items()}
    macs = _macs(meta["model"]["name"])
    if macs:
        for summary in engines.values():
            summary["gflops"] = 2 * macs / (summary["median_ms"] * 1e-3) / 1e9
    for summary in engines.values():
        summary["ratio_vs_onnxruntime"] = summary["median_ms"] / engines["onnxruntime"]["median_ms"]
    if quantize is not None:  # named for what they ran, so an int8 report cannot pass for a float one
        engines = {f"{engine} int8": summary for engine, summary in engines.items()}
    peak = fp32_peak_gflops(threads)
    report = {
        "model": meta["model"]["name"], "target": meta["target"]["name"],
        "cpu": meta["target"]["tvm"].get("mcpu"), "machine": platform.machine(), "threads": threads,
        "tuned": meta.get("tuned", False), "macs": macs, "fp32_peak": peak,
        "versions": {**meta["versions"], "onnxruntime": onnxruntime.__version__},
        "engines": engines,
        "ratio_vs_onnxruntime": next(iter(engines.values()))["ratio_vs_onnxruntime"],
        "agreement": agreement["edgevit"], "litert": litert_status, "compile_s": compile_s,
        "quantization": meta["model"].get("quantization") if quantize is not None else None,
        # other work on the machine skews timings, 2-thread ones most: say how much there was
        "load_average": [load_before, load_after], "other_cpu_share": other_cpu,
    }
    if "litert" in agreement:
        report["agreement_litert"] = agreement["litert"]
    if kernels is not None:
        report["profile"] = kernels
    return report


def bench_all(models: list[str], threads: list[int], runs: int = 20, warmup: int = 3,
              tuning_db: str | None = None, out_dir: Path = Path("results"), name: str = "bench_zoo") -> dict:
    """Bench several models at several thread counts; write ``NAME.json``, ``NAME.png`` and ``NAME.md``.

    Each model is compiled once, then benched at each thread count (every engine in a process of its own).
    """
    import json

    from .compiler import compile_for_target
    from .frontend import load_model
    from .targets import get_target

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevit-bench-") as tmp:
        for model in models:
            artifact = Path(tmp) / f"{Path(model).stem}.tar"
            start = time.monotonic()
            compile_for_target(load_model(model), get_target("host"), artifact,
                               tuning_db=Path(tuning_db) if tuning_db else None)
            compile_s = time.monotonic() - start
            for n in threads:
                report = bench(str(artifact), runs=runs, warmup=warmup, threads=n)
                report["compile_s"] = compile_s
                rows.append(report)
                print(f"[edgevit] {report['model']} {n} thread(s): " + ", ".join(
                    f"{e} {s['median_ms']:.1f} ms" for e, s in report["engines"].items())
                    + f" ({report['ratio_vs_onnxruntime']:.2f}x); {_noise(report)}",
                    file=sys.stderr, flush=True)
    result = {"command": " ".join(["edgevit", *sys.argv[1:]]), "machine": platform.machine(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(f"`{result['command']}` ({result['created']})\n\n"
                                        f"```\n{format_all(result)}\n```\n")
    plot_all(result, out_dir / f"{name}.png")
    return result


