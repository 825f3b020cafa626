"""``edgevit plan``: build a class-split plan -- train/prune/fuse, compile each sub-model for the target of
the node it is assigned to, and write the plan JSON next to its artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, UnknownNameError
from . import classsplit as cs
from .client import artifact_digest
from .plan import assign_greedy, model_memory_mib, write_plan

# Built-in models a plan can be made for: the ViT trained here on Fashion-MNIST, and a tiny variant that
# trains in seconds (tests, demos).
MODELS = {
    "fashion-vit": (cs.VitConfig(), cs.TrainConfig()),
    "fashion-vit-tiny": (cs.VitConfig(dim=32, depth=2, heads=2, mlp=64),
                         cs.TrainConfig(train_images=4000, epochs=2, finetune_epochs=1)),
}
RPC_CALL_MS = 0.5  # per remote call (put + run + get) on a LAN, used by the latency prediction


def _say(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


def model_configs(name: str) -> tuple[cs.VitConfig, cs.TrainConfig]:
    if name not in MODELS:
        raise UnknownNameError(f"unknown model '{name}' for a distributed plan; known: {', '.join(MODELS)}")
    return MODELS[name]


def _compile(module, vit: cs.VitConfig, name: str, target_name: str, out: Path) -> Path:
    return _compile_shape(module, (1, vit.channels, vit.image, vit.image), name, target_name, out)


def _compile_shape(module, shape: tuple[int, ...], name: str, target_name: str, out: Path) -> Path:
    """Export ``module`` (torch -> ONNX) and compile it for ``target_name`` into the artifact ``out``."""
    from ..compiler import compile_for_target
    from ..frontend import from_torch
    from ..targets import get_target

    if not out.exists():
        imported = from_torch(module, shape, name)
        compile_for_target(imported, get_target(target_name), out, command=f"edgevit plan ({name})")
    return out


def _profile_ms(artifact: Path, vit: cs.VitConfig, repeat: int = 20) -> float | None:
    """Median local run time of a host artifact (None for other architectures)."""
    from ..runtime import host_arch
    from ..runtime.artifact import Artifact
    from ..runtime.runner import run_artifact

    with Artifact.open(artifact) as art:
        if art.arch != host_arch():
            return None
        x = np.zeros((1, vit.channels, vit.image, vit.image), np.float32)
        _, seconds = run_artifact(art, [x], repeat)
    return float(np.median(seconds) * 1e3)


def build_class_plan(model: str, slots, k: int, output: Path, method: str = "confusion",
                     configs: tuple[cs.VitConfig, cs.TrainConfig] | None = None) -> dict:
    """Split ``model`` into ``k`` class groups, assign them to ``slots``, compile, write the plan.

    Returns
    -------
    dict
        The plan as written (artifact paths relative to the plan file).
    """
    if k < 1 or k > 10:
        raise EdgevitError(f"--k must be between 1 and the number of classes (10), got {k}")
    vit, cfg = configs or model_configs(model)
    full = cs.train_full(vit, cfg, log=_say)
    split = cs.train_split(full, vit, cfg, k, method, log=_say)
    estimates = [model_memory_mib(1 << 20, spec.params) for spec in split.specs]  # ~1 MiB before building
    placed = assign_greedy(estimates, slots)
    art_dir = output.parent / f"{output.stem}-artifacts"
    art_dir.mkdir(parents=True, exist_ok=True)
    full_art = _compile(full, vit, f"{model}-full", "host", art_dir / "full-host.tar")
    submodels = []
    for i, (spec, sub, slot) in enumerate(zip(split.specs, split.submodels, placed)):
        path = _compile(sub, vit, f"{model}-k{k}-sub{i}", slot.target, art_dir / f"sub{i}-{slot.target}.tar")
        submodels.append({
            "name": f"sub{i}", "classes": spec.classes, "params": spec.params,
            "widths": {"dim": spec.dim, "heads": spec.heads, "mlp": spec.mlp},
            "artifact": str(path.relative_to(output.parent)), "sha256": artifact_digest(path),
            "bytes": path.stat().st_size, "target": slot.target, "node_key": slot.key, "slot": slot.name,
            "memory_mib": round(model_memory_mib(path.stat().st_size, spec.params), 2),
            "profile_ms": _profile_ms(path, vit),
            "outputs": len(spec.classes) + 1})
    per_slot: dict[str, float] = {}
    for s in submodels:
        per_slot[s["slot"]] = per_slot.get(s["slot"], 0.0) + (s["profile_ms"] or 0.0) + RPC_CALL_MS
    plan = {
        "strategy": "class", "model": model, "k": k, "assignment": method,
        "input": {"shape": [1, vit.channels, vit.image, vit.image], "dtype": "float32"},
        "classes": vit.classes,
        "vit": vit.__dict__, "train": cfg.__dict__,
        "full": {"params": cs.param_count(full), "bytes": full_art.stat().st_size,
                 "artifact": str(full_art.relative_to(output.parent)), "profile_ms": _profile_ms(full_art, vit)},
        "submodels": submodels,
        "fusion": {"weight": split.fusion_weight.tolist(), "bias": split.fusion_bias.tolist()},
        "predicted_latency_ms": max(per_slot.values()),
    }
    write_plan(output, plan)
    return plan
