"""Time every call a compiled model's Relax VM makes: where an inference's time goes, kernel by kernel."""

from __future__ import annotations

import time
from pathlib import Path


#: The suffix TVM's ``SplitLayoutRewritePreproc`` gives a kernel whose weights the build re-laid out: such a
#: kernel is reported under its own name, as tuning and the fused module know it.
PREPACKED = "_prepacked"


def _clock(cpu_time: bool):
    """The calling thread's CPU time (``cpu_time``) or wall-clock time, in seconds.

    On a shared machine other processes' time slices land inside wall-clock intervals; the thread's CPU time
    leaves them out. It counts this thread only, so it measures 1-thread runs (TVM runs a parallel loop in the
    calling thread when it has one thread), not the work of a thread pool.
    """
    return time.thread_time if cpu_time else time.perf_counter


def profile_kernels(model, inputs: list, runs: int = 10, cpu_time: bool = False) -> list[dict]:
    """Time every call the Relax VM makes (kernels and builtins) over ``runs`` inferences.

    Uses the VM's instrument hook (TVM 0.27 has no profiling VM): a callback before and after each call. The
    hook stays on ``model`` (a loaded ``tvm_runtime.CompiledModel``) for its later calls: profile it again, but
    time a fresh one. ``cpu_time``: the calling thread's CPU time instead of wall-clock time (1 thread).

    Returns
    -------
    list[dict]
        One row per called function, slowest first: ``name``, ``calls`` per inference, ``ms`` per inference
        and ``percent`` of the total.
    """
    import tvm.runtime

    machine = model.vm
    tensors = [tvm.runtime.tensor(x) for x in inputs]
    machine["main"](*tensors)
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}
    started = [0.0]
    clock = _clock(cpu_time)

    def instrument(_func, name, before, _ret, *_args):
        name = name.removesuffix(PREPACKED)
        if before:
            started[0] = clock()
        else:
            totals[name] = totals.get(name, 0.0) + clock() - started[0]
            calls[name] = calls.get(name, 0) + 1
        return 0  # VMInstrumentReturnKind.NO_OP

    machine.set_instrument(instrument)
    for _ in range(runs):
        machine["main"](*tensors)
    total = sum(totals.values()) or 1.0
    rows = [{"name": n, "calls": calls[n] // runs, "ms": t * 1e3 / runs, "percent": 100 * t / total}
            for n, t in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def time_models(libraries: list[Path], inputs: list, rounds: int = 5, runs: int = 10,
                cpu_time: bool = False) -> list[float]:
    """Median milliseconds per inference of each library, the libraries taking turns in blocks of ``runs``.

    Taking turns spreads slow phases of a shared machine over all of them; no instrument hook is set.
    ``cpu_time``: the calling thread's CPU time per inference instead of wall-clock time (1-thread builds).
    """
    import statistics

    import tvm.runtime

    from .tvm_runtime import CompiledModel

    mains = [CompiledModel(library).vm["main"] for library in libraries]
    tensors = [tvm.runtime.tensor(x) for x in inputs]
    seconds: list[list[float]] = [[] for _ in mains]
    clock = _clock(cpu_time)
    for main in mains:
        main(*tensors)  # warm-up: first-call allocations
    for _ in range(rounds):
        for main, times in zip(mains, seconds):
            for _ in range(runs):
                start = clock()
                main(*tensors)
                times.append(clock() - start)
    return [statistics.median(times) * 1e3 for times in seconds]
