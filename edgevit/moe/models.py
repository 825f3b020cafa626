"""Naming, loading and summarising the per-task builds of the MoE-ViT presets in ``models/moe_vit.py``."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnknownNameError
from .definitions import model_module


@dataclass(frozen=True)
class TaskModelName:
    """A parsed ``PRESET[:TASK]``: the preset, the task's index and name."""

    preset: str
    task: int
    task_name: str

    def __str__(self) -> str:
        return f"{self.preset}:{self.task_name}"


def is_moe_name(spec: str) -> bool:
    """Whether ``spec`` names an MoE-ViT preset (with or without a task)."""
    try:
        return spec.partition(":")[0] in model_module().PRESETS
    except ImportError:   # no torch here: no MoE-ViT either, and the caller reports the name as unknown
        return False


def parse_name(spec: str) -> TaskModelName:
    """Parse ``PRESET[:TASK]``; without a task, the preset's first task.

    Raises
    ------
    UnknownNameError
        An unknown preset or task; the message lists the valid ones.
    """
    presets = model_module().PRESETS
    preset, _, task = spec.partition(":")
    if preset not in presets:
        raise UnknownNameError(f"unknown MoE-ViT model '{preset}'; presets: {', '.join(presets)}")
    names = presets[preset].task_names
    task = task or names[0]
    if task not in names:
        raise UnknownNameError(f"{preset} has no task '{task}'; tasks: {', '.join(names)} (e.g. {preset}:{names[-1]})")
    return TaskModelName(preset, names.index(task), task)


def load_task_model(spec: str):
    """The trained single-task model (``TaskModel``, eval mode) that ``PRESET[:TASK]`` names."""
    from .train import trained_moe_vit

    name = parse_name(spec)
    return trained_moe_vit(name.preset).for_task(name.task).eval()


def _params(module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def task_build_summary(preset: str, model=None) -> list[dict]:
    """Per task: experts kept per MoE layer (of how many) and parameters of its build, against the whole model.

    ``model`` defaults to the trained preset (a task-static gate's choice depends on the trained weights).
    """
    if model is None:
        from .train import trained_moe_vit

        model = trained_moe_vit(preset)
    rows = []
    for task, task_name in enumerate(model.cfg.task_names):
        view = model.for_task(task)
        rows.append({"name": f"{preset}:{task_name}", "task": task_name, "gate": model.cfg.gate,
                     "experts": [m.expert_ids for m in view.moe_layers()],
                     "experts_total": model.cfg.num_experts, "params": _params(view),
                     "params_all_tasks": _params(model)})
    return rows


def task_build_rows() -> list[dict]:
    """``edgevit models`` rows for every task build of every preset (trains a preset once if not cached)."""
    rows = []
    for preset, cfg in model_module().PRESETS.items():
        for r in task_build_summary(preset):
            rows.append({**r, "family": "MoE-ViT", "macs": None,
                         "input_shape": [1, cfg.in_chans, cfg.image_size, cfg.image_size]})
    return rows


def format_task_builds(rows: list[dict]) -> str:
    """The per-task builds as a table: experts kept per MoE layer and parameters, against the whole model."""
    from ..tables import format_table

    body = [[r["name"], "task-static" if r["gate"] == "task" else "per patch",
             " ".join(f"{len(e)}/{r['experts_total']}" for e in r["experts"]),
             " ".join(",".join(map(str, e)) for e in r["experts"]),
             f"{r['params']:,}", f"{r['params_all_tasks']:,}", "x".join(map(str, r["input_shape"][1:]))]
            for r in rows]
    return format_table(body, ["task build", "routing", "experts per MoE layer", "expert ids", "params",
                               "all tasks", "input"])
