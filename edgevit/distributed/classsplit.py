"""Class-wise split of a ViT (ED-ViT): K pruned sub-models, each responsible for a subset of classes, and a
small fusion head over their outputs.

Host side (torch). The flow is: train (or load) the full model -> assign classes to K groups -> for each
group, rank heads, MLP channels and residual channels by their activation on that group's images, keep the
top ones (structured pruning), then fine-tune the pruned copy by distillation from the full model -> train
the fusion head on the concatenated sub-model outputs. Sub-model ``k`` outputs ``len(group_k) + 1`` logits:
its classes and one "none of mine". Weights are cached under ``cache_dir("distributed", ...)`` keyed by the
whole configuration, so a second run is instant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..settings import cache_dir
from . import fashion
from .plan import fuse


@dataclass(frozen=True)
class VitConfig:
    """A small ViT for 28x28 grey images: ``dim`` residual width, ``heads`` x ``head_dim`` attention."""

    image: int = 28
    patch: int = 7
    channels: int = 1
    dim: int = 64
    depth: int = 4
    heads: int = 4
    head_dim: int = 16
    mlp: int = 128
    classes: int = 10


@dataclass(frozen=True)
class TrainConfig:
    """How the full model and the sub-models are trained (seeded, one thread)."""

    train_images: int = 30000
    epochs: int = 5
    finetune_epochs: int = 4
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0

    def key(self, vit: VitConfig, split: bool = False) -> str:
        """Cache key: the full model depends on everything but ``finetune_epochs``; sub-models on all."""
        fields = asdict(self)
        if not split:
            fields.pop("finetune_epochs")
        blob = json.dumps([asdict(vit), fields], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class SubModelSpec:
    """One sub-model: its classes and kept structure (the pruned widths)."""

    classes: list[int]
    dim: int
    heads: int
    mlp: int
    params: int = 0


def _torch():
    import torch

    torch.set_num_threads(1)
    return torch


def build_vit(cfg: VitConfig, out: int | None = None, dim: int | None = None, heads: int | None = None,
              mlp: int | None = None):
    """A ViT module; ``dim``/``heads``/``mlp`` override the widths (a pruned shape), ``out`` the logits."""
    torch = _torch()
    nn = torch.nn
    dim, heads, mlp = dim or cfg.dim, heads or cfg.heads, mlp or cfg.mlp
    tokens = (cfg.image // cfg.patch) ** 2

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * heads * cfg.head_dim)
            self.proj = nn.Linear(heads * cfg.head_dim, dim)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * cfg.head_dim ** -0.5).softmax(-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, heads * cfg.head_dim))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(dim), Attention()
            self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.Linear(mlp, dim)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

    class Vit(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(cfg.channels, dim, cfg.patch, cfg.patch)
            self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.depth))
            self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, out or cfg.classes)

        def forward(self, x):
            x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x).mean(1))

    return Vit()


def param_count(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _batches(n: int, batch: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for i in range(0, n, batch):
        yield order[i:i + batch]


def _fit(model, x: np.ndarray, loss_fn, epochs: int, cfg: TrainConfig, log=None) -> None:
    torch = _torch()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = epochs * ((len(x) + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(cfg.seed)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in _batches(len(x), cfg.batch, rng):
            loss = loss_fn(model(torch.from_numpy(x[idx])), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}")
    model.eval()


def predict(model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Model outputs for ``x`` as numpy, in batches, without gradients."""
    torch = _torch()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def train_full(vit: VitConfig, cfg: TrainConfig, log=print):
    """The unsplit model trained on Fashion-MNIST (cached by configuration)."""
    torch = _torch()
    torch.manual_seed(cfg.seed)
    model = build_vit(vit)
    path = cache_dir("distributed", "fashion") / f"full-{cfg.key(vit)}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval()
    x, y = fashion.load("train", cfg.train_images)
    labels = torch.from_numpy(y)
    log(f"training the full ViT ({param_count(model)} parameters) on {len(x)} Fashion-MNIST images")
    _fit(model, x, lambda out, idx: torch.nn.functional.cross_entropy(out, labels[idx]), cfg.epochs, cfg, log)
    torch.save(model.state_dict(), path)
    return model


def assign_classes(k: int, classes: int, method: str = "confusion", confusion: np.ndarray | None = None,
                   seed: int = 0) -> list[list[int]]:
    """Split ``classes`` into ``k`` groups of at most ``ceil(classes / k)`` classes.

    ``random``: a seeded shuffle into equal shares. ``confusion``: classes the full model confuses go to the
    same group (they need the same features): starting from one group per class, repeatedly merge the two
    groups with the most confusion between them that still fit the size cap (the two smallest if none is
    confused), until ``k`` groups remain.
    """
    sizes = [classes // k + (1 if i < classes % k else 0) for i in range(k)]
    if method == "random":
        order = np.random.default_rng(seed).permutation(classes).tolist()
        groups, start = [], 0
        for size in sizes:
            groups.append(sorted(order[start:start + size]))
            start += size
        return groups
    if method != "confusion" or confusion is None:
        raise ValueError(f"class assignment '{method}' needs a confusion matrix (methods: confusion, random)")
    sym = confusion + confusion.T
    np.fill_diagonal(sym, 0)
    cap = max(sizes)
    groups = [[c] for c in range(classes)]
    while len(groups) > k:
        pairs = [(sym[np.ix_(a, b)].sum(), -len(a) - len(b), i, j) for i, a in enumerate(groups)
                 for j, b in enumerate(groups) if i < j and len(a) + len(b) <= cap]
        if not pairs:
            pairs = [(0.0, -len(a) - len(b), i, j) for i, a in enumerate(groups) for j, b in enumerate(groups) if i < j]
        _, _, i, j = max(pairs)
        groups[i] = groups[i] + groups.pop(j)
    return sorted(sorted(g) for g in groups)


def _prune(full, vit: VitConfig, spec: SubModelSpec, x_group: np.ndarray):
    """A pruned copy of ``full`` keeping the heads, MLP channels and residual channels most active on
    ``x_group`` (the sub-model's classes), with ``len(classes) + 1`` outputs."""
    torch = _torch()
    seen: dict[str, object] = {}  # inputs of the layers whose input channels we rank

    def keep_input(name):
        return lambda module, args: seen.__setitem__(name, args[0])

    hooks = [full.head.register_forward_pre_hook(keep_input("features"))]
    for i, b in enumerate(full.blocks):
        hooks.append(b.attn.proj.register_forward_pre_hook(keep_input(f"heads{i}")))
        hooks.append(b.fc2.register_forward_pre_hook(keep_input(f"hidden{i}")))
    with torch.no_grad():
        full(torch.from_numpy(x_group))
        head_score = [seen[f"heads{i}"].reshape(*seen[f"heads{i}"].shape[:2], vit.heads, vit.head_dim)
                      .abs().mean((0, 1, 3)) for i in range(vit.depth)]
        mlp_score = [seen[f"hidden{i}"].abs().mean((0, 1)) for i in range(vit.depth)]
        dim_score = seen["features"].abs().mean(0) + sum(b.norm1.weight.abs() for b in full.blocks)
    for hook in hooks:
        hook.remove()
    keep_dim = torch.sort(torch.topk(dim_score, spec.dim).indices).values
    sub = build_vit(vit, out=len(spec.classes) + 1, dim=spec.dim, heads=spec.heads, mlp=spec.mlp)
    hd = vit.head_dim
    with torch.no_grad():
        sub.embed.weight.copy_(full.embed.weight[keep_dim])
        sub.embed.bias.copy_(full.embed.bias[keep_dim])
        sub.pos.copy_(full.pos[:, :, keep_dim])
        for b_full, b_sub, hs, ms in zip(full.blocks, sub.blocks, head_score, mlp_score):
            heads = torch.sort(torch.topk(hs, spec.heads).indices).values
            cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads.tolist()])
            rows = torch.cat([cols + part * vit.heads * hd for part in range(3)])
            ch = torch.sort(torch.topk(ms, spec.mlp).indices).values
            for name in ("norm1", "norm2"):
                getattr(b_sub, name).weight.copy_(getattr(b_full, name).weight[keep_dim])
                getattr(b_sub, name).bias.copy_(getattr(b_full, name).bias[keep_dim])
            b_sub.attn.qkv.weight.copy_(b_full.attn.qkv.weight[rows][:, keep_dim])
            b_sub.attn.qkv.bias.copy_(b_full.attn.qkv.bias[rows])
            b_sub.attn.proj.weight.copy_(b_full.attn.proj.weight[keep_dim][:, cols])
            b_sub.attn.proj.bias.copy_(b_full.attn.proj.bias[keep_dim])
            b_sub.fc1.weight.copy_(b_full.fc1.weight[ch][:, keep_dim])
            b_sub.fc1.bias.copy_(b_full.fc1.bias[ch])
            b_sub.fc2.weight.copy_(b_full.fc2.weight[keep_dim][:, ch])
            b_sub.fc2.bias.copy_(b_full.fc2.bias[keep_dim])
        sub.norm.weight.copy_(full.norm.weight[keep_dim])
        sub.norm.bias.copy_(full.norm.bias[keep_dim])
    return sub


def group_targets(teacher_logits: np.ndarray, classes: list[int]) -> np.ndarray:
    """Teacher logits restricted to ``classes`` plus one "none of mine" logit (log-sum-exp of the rest)."""
    rest = np.delete(teacher_logits, classes, axis=1)
    top = rest.max(1, keepdims=True)
    other = top + np.log(np.exp(rest - top).sum(1, keepdims=True))
    return np.concatenate([teacher_logits[:, classes], other], 1).astype(np.float32)


@dataclass
class ClassSplit:
    """The trained split: sub-models (torch), their specs, and the fusion head's weights."""

    groups: list[list[int]]
    specs: list[SubModelSpec]
    submodels: list
    fusion_weight: np.ndarray  # [classes, sum(len(g) + 1)]
    fusion_bias: np.ndarray

    def fuse(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Fusion head: class logits from the sub-models' outputs (in group order)."""
        return fuse(outputs, self.fusion_weight, self.fusion_bias)


def split_widths(vit: VitConfig, k: int) -> tuple[int, int, int]:
    """Kept (dim, heads, mlp) for a K-way split: narrower sub-models for more groups."""
    keep = {1: 1.0, 2: 0.75}.get(k, 0.5)
    return (max(8, int(vit.dim * keep) // 8 * 8), max(1, round(vit.heads * keep)),
            max(8, int(vit.mlp * keep) // 8 * 8))


def train_split(full, vit: VitConfig, cfg: TrainConfig, k: int, method: str = "confusion",
                log=print) -> ClassSplit:
    """Split, prune, fine-tune and fuse (cached by configuration, K and assignment method)."""
    torch = _torch()
    x, y = fashion.load("train", cfg.train_images)
    teacher = predict(full, x)
    confusion = np.zeros((vit.classes, vit.classes))
    np.add.at(confusion, (y, teacher.argmax(1)), 1)
    groups = assign_classes(k, vit.classes, method, confusion, cfg.seed)
    dim, heads, mlp = split_widths(vit, k)
    grouping = hashlib.sha256(json.dumps(groups).encode()).hexdigest()[:8]
    key = f"split-{cfg.key(vit, split=True)}-k{k}-{method}-{grouping}-{dim}-{heads}-{mlp}"
    path = cache_dir("distributed", "fashion") / f"{key}.pt"
    specs = [SubModelSpec(g, dim, heads, mlp) for g in groups]
    if path.exists():
        state = torch.load(path)
        subs = []
        for spec, sd in zip(specs, state["submodels"]):
            sub = build_vit(vit, out=len(spec.classes) + 1, dim=dim, heads=heads, mlp=mlp)
            sub.load_state_dict(sd)
            subs.append(sub.eval())
    else:
        subs = []
        for i, spec in enumerate(specs):
            torch.manual_seed(cfg.seed + i)
            mine = np.isin(y, spec.classes)
            sub = _prune(full, vit, spec, x[mine][:2000])
            target = torch.from_numpy(group_targets(teacher, spec.classes))
            log(f"sub-model {i + 1}/{k}: classes {spec.classes}, {param_count(sub)} parameters; fine-tuning")

            def loss_fn(out, idx, target=target):
                t = torch.softmax(target[idx] / 2.0, -1)
                return torch.nn.functional.kl_div(torch.log_softmax(out / 2.0, -1), t, reduction="batchmean")

            _fit(sub, x, loss_fn, cfg.finetune_epochs, cfg, log)
            subs.append(sub)
        state = {"submodels": [s.state_dict() for s in subs]}
    for spec, sub in zip(specs, subs):
        spec.params = param_count(sub)
    if "fusion" not in state:
        feats = np.concatenate([predict(s, x) for s in subs], 1)
        fusion = torch.nn.Linear(feats.shape[1], vit.classes)
        labels = torch.from_numpy(y)
        features = torch.from_numpy(feats)
        opt = torch.optim.Adam(fusion.parameters(), lr=1e-2)
        for _ in range(300):
            loss = torch.nn.functional.cross_entropy(fusion(features), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        state["fusion"] = {"weight": fusion.weight.detach(), "bias": fusion.bias.detach()}
        torch.save(state, path)
    return ClassSplit(groups, specs, subs, state["fusion"]["weight"].numpy(), state["fusion"]["bias"].numpy())
