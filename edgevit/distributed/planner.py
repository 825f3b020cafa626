"""``edgevit plan``: build a class-split plan -- train/prune/fuse, compile each sub-model for the target of
the node it is assigned to, and write the plan JSON next to its artifacts."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, UnknownNameError
from . import classsplit as cs
from .client import artifact_digest
from ..zoo.fashion_models import FASHION_MODELS
from ..zoo.fashion_models import MobileVitConfig, TrainConfig, VitConfig, train_full
from .plan import assign_greedy, model_memory_mib, read_plan, write_plan
from .prune import count

# Built-in models a plan can be made for: those of ``edgevit.zoo.fashion_models``, trained here on Fashion-MNIST.
RPC_CALL_MS = 0.5  # per remote call (put + run + get) on a LAN, used by the latency prediction


def _say(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


Arch = VitConfig | MobileVitConfig


def model_configs(name: str) -> tuple[Arch, TrainConfig]:
    """The architecture and training configuration of a built-in model.

    Raises
    ------
    UnknownNameError
        ``name`` is not in ``FASHION_MODELS``; the message lists the known names.
    """
    if name not in FASHION_MODELS:
        # A class split trains and prunes the model here: a file (float or int8 QDQ) cannot be class-split.
        hint = ("; an ONNX file (float or int8 QDQ) can be split with --strategy pipeline"
                if name.endswith(".onnx") else "")
        raise UnknownNameError(f"unknown model '{name}' for a class split (it trains and prunes one of the models "
                               f"trained here); known: {', '.join(FASHION_MODELS)}{hint}")
    return FASHION_MODELS[name]


def check_k(k, classes: int) -> int:
    """``k`` if it is a valid number of class groups for a class split (2 to ``classes``).

    Raises
    ------
    EdgevitError
        ``k`` is not a whole number, or outside 2..``classes``; the message says what to pass.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise EdgevitError(f"--k must be a whole number of sub-models, got {k!r}")
    if not 2 <= k <= classes:
        raise EdgevitError(f"--k must be between 2 and the number of classes ({classes}) for a class split, got "
                           f"{k}: a class split needs at least two groups and at least one class per group")
    return int(k)


def _input_shape(arch: Arch) -> tuple[int, int, int, int]:
    return (1, arch.channels, arch.image, arch.image)


def _compile(module, arch: Arch, name: str, target_name: str, out: Path) -> Path:
    return _compile_shape(module, _input_shape(arch), name, target_name, out)


def _compile_shape(module, shape: tuple[int, ...], name: str, target_name: str, out: Path) -> Path:
    """Export ``module`` (torch -> ONNX) and compile it for ``target_name`` into the artifact ``out``."""
    from ..compiler import compile_for_target
    from ..frontend import from_torch
    from ..targets import get_target

    if not out.exists():
        imported = from_torch(module, shape, name)
        compile_for_target(imported, get_target(target_name), out, command=f"edgevit plan ({name})")
    return out


def _profile_ms(artifact: Path, arch: Arch, repeat: int = 20) -> float | None:
    """Median local run time of a host artifact (None for other architectures)."""
    from ..runtime import host_arch
    from ..runtime.artifact import Artifact
    from ..runtime.runner import run_artifact

    with Artifact.open(artifact) as art:
        if art.arch != host_arch():
            return None
        _, seconds = run_artifact(art, [np.zeros(_input_shape(arch), np.float32)], repeat)
    return float(np.median(seconds) * 1e3)


def measure_plan(output: Path, tracker, runs: int = 40) -> tuple[float, str]:
    """One image's latency of the class plan at ``output``, measured on the tracker's nodes with the code
    ``infer`` runs (``ClassSplitRunner``: every node called at once, outputs fused): the median of ``runs``.

    Calls made at once cost more than the slowest alone (the host serialises and encrypts every request and
    reply; on one machine the nodes share its cores), which a sum of separately timed calls misses (2x here).

    Raises
    ------
    EdgevitError
        A node of the plan runs under qemu: its timings say nothing about a board's.
    """
    from .infer import ClassSplitRunner

    plan = read_plan(output)
    runner = ClassSplitRunner(plan, tracker)
    try:
        runner.open(wait=60)
        emulated = [s.name for s in runner.pool.slots if s.session is not None and s.session.info.get("emulated")]
        if emulated:
            raise EdgevitError(f"node(s) {emulated} run under qemu, whose timings say nothing about a board: plan "
                               "without --tracker (an estimate), or on the real boards")
        x = np.zeros(plan["input"]["shape"], np.float32)
        times = [runner.infer(x).latency_ms for _ in range(runs)]
    finally:
        runner.close()
    return float(np.median(times[runs // 4:])), (f"measured at plan time: {runs - runs // 4} images through the "
                                                 "plan's nodes as infer runs them (median)")


def build_class_plan(model: str, slots, k: int, output: Path, method: str = "confusion",
                     configs: tuple[Arch, TrainConfig] | None = None, tracker=None) -> dict:
    """Split ``model`` into ``k`` class groups, assign them to ``slots``, compile, write the plan.

    The predicted latency is the slowest node's sum of calls (the nodes run at once). With ``tracker`` (a
    ``client.Tracker``) each call is measured on a node of its slot's key, as ``infer`` makes it: one data plane
    round trip with the node's compute; without, it is the sub-model's run time here plus ``RPC_CALL_MS``, an
    estimate (labelled so in the plan).

    Returns
    -------
    dict
        The plan as written (artifact paths relative to the plan file).

    Raises
    ------
    EdgevitError
        ``k`` is not 2..number of classes, or a sub-model fits on no node.
    UnknownNameError
        ``model`` is not a built-in model.
    """
    arch, cfg = configs or model_configs(model)
    k = check_k(k, arch.classes)
    full = train_full(arch, cfg, log=_say)
    split = cs.train_split(full, arch, cfg, k, method, log=_say)
    estimates = [model_memory_mib(1 << 20, spec.params) for spec in split.specs]  # ~1 MiB before building
    placed = assign_greedy(estimates, slots)
    art_dir = output.parent / f"{output.stem}-artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    full_art = _compile(full, arch, f"{model}-full", "host", art_dir / "full-host.tar")
    full_macs, full_params = count(full, cs.example_input(arch))
    submodels = []
    for i, (spec, sub, slot) in enumerate(zip(split.specs, split.submodels, placed)):
        path = _compile(sub, arch, f"{model}-k{k}-sub{i}", slot.target, art_dir / f"sub{i}-{slot.target}.tar")
        submodels.append({
            "name": f"sub{i}", "classes": spec.classes, "params": spec.params, "macs": spec.macs,
            "keep": spec.keep, "artifact": str(path.relative_to(output.parent)), "sha256": artifact_digest(path),
            "bytes": path.stat().st_size, "target": slot.target, "node_key": slot.key, "slot": slot.name,
            "memory_mib": round(model_memory_mib(path.stat().st_size, spec.params), 2),
            "profile_ms": _profile_ms(path, arch),
            "outputs": len(spec.classes) + 1})
    per_slot: dict[str, float] = {}
    for s in submodels:
        per_slot[s["slot"]] = per_slot.get(s["slot"], 0.0) + (s["profile_ms"] or 0.0) + RPC_CALL_MS
    source = (f"estimate: the slowest node's sub-models as run on this host plus {RPC_CALL_MS} ms per call "
              "(not measured; plan with --tracker to measure)")
    plan = {
        "strategy": "class", "model": model, "k": k, "assignment": method,
        "input": {"shape": list(_input_shape(arch)), "dtype": "float32"},
        "classes": arch.classes,
        "arch": {"family": type(arch).__name__, **asdict(arch)}, "train": asdict(cfg),
        "full": {"params": full_params, "macs": full_macs, "bytes": full_art.stat().st_size,
                 "artifact": str(full_art.relative_to(output.parent)), "profile_ms": _profile_ms(full_art, arch)},
        "submodels": submodels,
        "fusion": {"weight": split.fusion_weight.tolist(), "bias": split.fusion_bias.tolist()},
        "predicted_latency_ms": max(per_slot.values()), "predicted_source": source,
    }
    write_plan(output, plan)
    if tracker is not None:
        plan["predicted_latency_ms"], plan["predicted_source"] = measure_plan(output, tracker)
        write_plan(output, plan)
    return plan
