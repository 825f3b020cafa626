"""A multi-task mixture-of-experts ViT in the style of M³ViT (the model Edge-MoE accelerates); plain PyTorch.

Every other transformer block replaces its MLP by an MoE layer: ``num_experts`` expert MLPs, of which ``top_k``
run per patch, chosen by a gate that depends on the task:

* ``gate="patch"``: each task has its own linear router over the patch (dynamic routing, as in M³ViT), and may be
  limited to a subset of the experts (``task_experts``), so a task's build needs only that subset;
* ``gate="task"``: the gate logits are one learned vector per task (task-static routing): every patch of a task
  uses the same ``top_k`` experts with the same weights, so a task's build needs only those.

The gate weights are the softmax over the ``top_k`` selected logits. :meth:`MoEViT.for_task` returns the
single-task model a build compiles: only the experts the task can reach, routing by gathering each expert's
patches, running the expert once on them and scattering the weighted results back (:func:`dispatch`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class MoEViTConfig:
    """Sizes of a :class:`MoEViT`; ``tasks`` maps task names to class counts (in order)."""

    image_size: int = 8
    in_chans: int = 1
    patch_size: int = 2
    dim: int = 32
    depth: int = 4
    heads: int = 2
    mlp_ratio: float = 2.0
    num_experts: int = 6
    top_k: int = 2
    gate: str = "patch"
    tasks: tuple = (("digit", 10), ("parity", 2))
    task_experts: tuple | None = None   # per task, the expert ids it may route to (None: all)

    def __post_init__(self):
        if self.gate not in ("patch", "task"):
            raise ValueError(f"gate must be 'patch' or 'task', not {self.gate!r}")
        sets = self.task_experts or [range(self.num_experts)] * len(self.tasks)
        if len(sets) != len(self.tasks) or any(len(set(s)) < self.top_k for s in sets):
            raise ValueError("task_experts needs one set per task, each of at least top_k experts")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def task_names(self) -> list[str]:
        return [name for name, _ in self.tasks]


PRESETS = {
    # Dynamic (per-patch) routing; each task may use 4 of the 6 experts, two of them shared.
    "moe_vit_tiny": MoEViTConfig(task_experts=((0, 1, 2, 3), (2, 3, 4, 5))),
    # Task-static routing: each task uses 2 of 6 experts per MoE layer, whatever the patch.
    "moe_vit_tiny_static": MoEViTConfig(gate="task"),
}


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (an expert, or the dense MLP of a non-MoE block)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x, task=None):
        return self.fc2(self.act(self.fc1(x)))


def dispatch(x, experts, idx, weights):
    """Route patches to experts: gather each expert's patches, run it once on them, scatter back weighted.

    Parameters
    ----------
    x
        Patches ``[B, N, D]``.
    experts
        The expert modules; ``idx`` refers to them by position.
    idx, weights
        Per patch, the ``k`` selected experts ``[B, N, k]`` (int) and their gate weights ``[B, N, k]``.
    """
    b, n, d = x.shape
    flat, idx, weights = x.reshape(b * n, d), idx.reshape(b * n, -1), weights.reshape(b * n, -1)
    out = torch.zeros_like(flat)
    for e, expert in enumerate(experts):
        token, slot = torch.nonzero(idx == e, as_tuple=True)
        y = expert(flat.index_select(0, token)) * weights[token, slot].unsqueeze(-1)
        out = out.index_add(0, token, y)
    return out.reshape(b, n, d)


class MoE(nn.Module):
    """``num_experts`` expert MLPs with a task-conditioned top-k gate (see the module docstring)."""

    def __init__(self, cfg: MoEViTConfig, hidden: int):
        super().__init__()
        t, e = len(cfg.tasks), cfg.num_experts
        self.top_k, self.gate = cfg.top_k, cfg.gate
        self.experts = nn.ModuleList(Mlp(cfg.dim, hidden) for _ in range(e))
        self.gate_w = nn.Parameter(torch.randn(t, e, cfg.dim) * 0.02) if cfg.gate == "patch" else None
        self.gate_b = nn.Parameter(torch.randn(t, e) * (0.02 if cfg.gate == "patch" else 1.0))
        allowed = torch.ones(t, e, dtype=torch.bool)
        if cfg.task_experts is not None:
            allowed[:] = False
            for task, ids in enumerate(cfg.task_experts):
                allowed[task, list(ids)] = True
        self.register_buffer("allowed", allowed, persistent=False)

    def logits(self, x, task: int):
        """Gate logits ``[B, N, E]``; experts the task may not use are at -inf."""
        if self.gate_w is None:
            z = self.gate_b[task].expand(*x.shape[:-1], -1)
        else:
            z = x @ self.gate_w[task].T + self.gate_b[task]
        return z.masked_fill(~self.allowed[task], float("-inf"))

    def route(self, x, task: int):
        """The selected experts and their weights (softmax over the top-k logits), each ``[B, N, k]``."""
        val, idx = torch.topk(self.logits(x, task), self.top_k, dim=-1)
        return idx, torch.softmax(val, dim=-1)

    def forward(self, x, task: int):
        idx, weights = self.route(x, task)
        if self.training and self.gate_w is not None:   # kept for the trainer's load-balancing term
            self.aux_loss = load_balancing_loss(self, x, task)
        return dispatch(x, self.experts, idx, weights)

    def reachable(self, task: int) -> list[int]:
        """The experts ``task`` can route to: its top-k if the gate is task-static, else its allowed set."""
        if self.gate == "task":
            idx = torch.topk(self.logits(self.gate_b.new_zeros(1, 1, 1), task), self.top_k, dim=-1).indices
            return sorted(idx.ravel().tolist())
        return torch.nonzero(self.allowed[task]).ravel().tolist()


class TaskMoE(nn.Module):
    """One task's view of an :class:`MoE`: only its reachable experts (shared modules), local expert ids.

    A task-static gate becomes constant weights over those experts (every patch runs all of them); a patch gate
    becomes a linear router over them, followed by top-k and :func:`dispatch`.
    """

    def __init__(self, moe: MoE, task: int):
        super().__init__()
        keep = moe.reachable(task)
        self.expert_ids, self.top_k = keep, moe.top_k
        self.experts = nn.ModuleList(moe.experts[e] for e in keep)
        with torch.no_grad():
            if moe.gate == "task":
                self.router = None
                self.register_buffer("static_weights", torch.softmax(moe.gate_b[task, keep], 0).clone())
            else:
                self.router = nn.Linear(moe.gate_w.shape[-1], len(keep))
                self.router.weight.copy_(moe.gate_w[task, keep])
                self.router.bias.copy_(moe.gate_b[task, keep])

    def forward(self, x, task=None):
        if self.router is None:
            return sum(w * expert(x) for w, expert in zip(self.static_weights, self.experts))
        val, idx = torch.topk(self.router(x), self.top_k, dim=-1)
        return dispatch(x, self.experts, idx, torch.softmax(val, dim=-1))


class Attention(nn.Module):
    """Multi-head self-attention: one qkv projection (q | k | v, heads inside each), softmax(q k^T / sqrt(dh)) v."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block whose MLP is a dense :class:`Mlp`, an :class:`MoE` or a :class:`TaskMoE`."""

    def __init__(self, dim: int, heads: int, mlp: nn.Module):
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim), mlp

    def forward(self, x, task=None):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x), task)


class MoEViT(nn.Module):
    """The multi-task model: patch embedding, ``depth`` blocks (odd ones MoE), LayerNorm, mean pool, task heads."""

    def __init__(self, cfg: MoEViTConfig):
        super().__init__()
        self.cfg = cfg
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.dim, cfg.patch_size, cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, MoE(cfg, hidden) if i % 2 else Mlp(cfg.dim, hidden)) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.heads = nn.ModuleList(nn.Linear(cfg.dim, classes) for _, classes in cfg.tasks)

    def features(self, x, task: int):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x, task)
        return self.norm(x).mean(1)

    def forward(self, x, task: int):
        """Logits of ``task`` (an index into ``cfg.tasks``) for images ``[B, C, H, W]``."""
        return self.heads[task](self.features(x, task))

    def moe_layers(self) -> list[MoE]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoE)]

    def for_task(self, task: int) -> "TaskModel":
        """The single-task model a per-task build compiles (shares this model's parameters)."""
        return TaskModel(self, task)


class TaskModel(nn.Module):
    """One task of a :class:`MoEViT`, image in, logits out: only the experts the task can reach."""

    def __init__(self, model: MoEViT, task: int):
        super().__init__()
        cfg = model.cfg
        self.task, self.task_name = task, cfg.task_names[task]
        self.input_shape = (1, cfg.in_chans, cfg.image_size, cfg.image_size)
        self.patch_embed, self.pos_embed, self.norm = model.patch_embed, model.pos_embed, model.norm
        self.blocks = nn.ModuleList()
        for block in model.blocks:
            mlp = TaskMoE(block.mlp, task) if isinstance(block.mlp, MoE) else block.mlp
            view = Block(cfg.dim, cfg.heads, mlp)
            view.norm1, view.attn, view.norm2 = block.norm1, block.attn, block.norm2
            self.blocks.append(view)
        self.head = model.heads[task]

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))

    def moe_layers(self) -> list[TaskMoE]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, TaskMoE)]


def build(preset: str = "moe_vit_tiny", **overrides) -> MoEViT:
    """An untrained model of a preset (see ``PRESETS``), with config fields overridden by keyword."""
    if preset not in PRESETS:
        raise KeyError(f"unknown MoE-ViT preset '{preset}'; presets: {', '.join(PRESETS)}")
    return MoEViT(replace(PRESETS[preset], **overrides))


def load_balancing_loss(moe: MoE, x, task: int):
    """Switch-Transformer auxiliary loss over the task's allowed experts: E * sum(fraction routed * mean prob)."""
    logits = moe.logits(x, task)
    probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    idx = torch.topk(logits, moe.top_k, dim=-1).indices.reshape(-1, moe.top_k)
    routed = F.one_hot(idx, logits.shape[-1]).sum(1).float()
    allowed = int(moe.allowed[task].sum())
    return allowed * (routed.mean(0) * probs.mean(0)).sum() / moe.top_k


__all__ = ["MoEViTConfig", "PRESETS", "MoEViT", "MoE", "TaskMoE", "TaskModel", "Mlp", "Attention", "Block",
           "dispatch", "build", "load_balancing_loss"]
