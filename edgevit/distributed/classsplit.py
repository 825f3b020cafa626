"""Class-wise split (ED-ViT): K structurally pruned sub-models, each responsible for a subset of classes, and
a small fusion head over their outputs.

Host side (torch). The flow is: train (or load) the full model (:mod:`edgevit.zoo.fashion_models`) -> assign
classes to K groups -> for each group, copy the full model, give it a head for the group's classes plus one "none of mine", prune it with
torch-pruning (``prune.py``: channels and heads ranked by their importance for the group's classes), then
fine-tune it on all training images relabelled for the group (cross-entropy on the relabelled classes plus
distillation from the full model) -> train the fusion head on the concatenated sub-model outputs. Models
are cached under ``cache_dir("distributed", "fashion")`` keyed by the whole configuration, so a second run
is instant.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..datasets import fashion_mnist
from ..errors import UnknownNameError
from ..settings import cache_dir
from ..zoo.fashion_models import TrainConfig, train
from .plan import fuse
from .prune import count, prune_for_classes

PRUNE_IMAGES = 512  # images of a group's classes that rank its channels


@dataclass
class SubModelSpec:
    """One sub-model: its classes, the fraction of channels and heads kept, and its measured size."""

    classes: list[int]
    keep: float
    params: int = 0
    macs: int = 0


def param_count(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return int(sum(p.numel() for p in module.parameters()))


def example_input(arch) -> torch.Tensor:
    """A zero image of the model's input shape (batch 1)."""
    return torch.zeros(1, arch.channels, arch.image, arch.image)


def predict(model, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Model outputs for ``x`` as numpy, in batches, without gradients."""
    torch.set_num_threads(1)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def assign_classes(k: int, classes: int, method: str = "confusion", confusion: np.ndarray | None = None,
                   seed: int = 0) -> list[list[int]]:
    """Split ``classes`` into ``k`` groups of at most ``ceil(classes / k)`` classes.

    ``random``: a seeded shuffle into equal shares. ``confusion``: classes the full model confuses go to the
    same group (they need the same features): starting from one group per class, repeatedly merge the two
    groups with the most confusion between them that still fit the size cap (the two smallest if none is
    confused), until ``k`` groups remain.

    Raises
    ------
    UnknownNameError
        ``method`` is neither ``confusion`` nor ``random``.
    """
    if method not in ("confusion", "random"):
        raise UnknownNameError(f"unknown class assignment '{method}'; known: confusion, random")
    sizes = [classes // k + (1 if i < classes % k else 0) for i in range(k)]
    if method == "random":
        order = np.random.default_rng(seed).permutation(classes).tolist()
        groups, start = [], 0
        for size in sizes:
            groups.append(sorted(order[start:start + size]))
            start += size
        return groups
    if confusion is None:
        raise ValueError("the confusion assignment needs the full model's confusion matrix")
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


def group_targets(teacher_logits: np.ndarray, classes: list[int]) -> np.ndarray:
    """Teacher logits restricted to ``classes`` plus one "none of mine" logit (log-sum-exp of the rest)."""
    rest = np.delete(teacher_logits, classes, axis=1)
    top = rest.max(1, keepdims=True)
    other = top + np.log(np.exp(rest - top).sum(1, keepdims=True))
    return np.concatenate([teacher_logits[:, classes], other], 1).astype(np.float32)


def relabel(labels: np.ndarray, classes: list[int], total: int) -> np.ndarray:
    """Labels in a sub-model's output space: position in ``classes``, or ``len(classes)`` ("none of mine")."""
    lookup = np.full(total, len(classes), np.int64)
    lookup[classes] = np.arange(len(classes))
    return lookup[labels]


def keep_ratio(k: int) -> float:
    """Fraction of channels and heads a sub-model keeps in a K-way split: narrower for more groups."""
    return 0.75 if k == 2 else 0.5


def make_submodel(full: nn.Module, arch, classes: list[int], x: np.ndarray, y: np.ndarray,
                  keep: float) -> nn.Module:
    """A structurally pruned copy of ``full`` for ``classes``, before fine-tuning.

    Channels are ranked on the group's own images (``x``, ``y`` of the full training set); the new head
    starts from the full head's rows for ``classes`` and, for "none of mine", the mean of the other rows.
    """
    sub = copy.deepcopy(full)
    mine = np.flatnonzero(np.isin(y, classes))[:PRUNE_IMAGES]
    prune_for_classes(sub, example_input(arch), torch.from_numpy(x[mine]), torch.from_numpy(y[mine]), keep,
                      arch.unwrapped_parameters(sub))
    old = sub.head
    rest = [c for c in range(old.out_features) if c not in classes]
    sub.head = nn.Linear(old.in_features, len(classes) + 1)
    with torch.no_grad():
        sub.head.weight.copy_(torch.cat([old.weight[classes], old.weight[rest].mean(0, keepdim=True)]))
        sub.head.bias.copy_(torch.cat([old.bias[classes], old.bias[rest].mean(0, keepdim=True)]))
    return sub


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


def _finetune(sub: nn.Module, x: np.ndarray, y: np.ndarray, teacher: np.ndarray, classes: list[int],
              cfg: TrainConfig, log) -> None:
    """ED-ViT's fine-tuning on all images relabelled for the group, plus distillation from the full model."""
    hard = torch.from_numpy(relabel(y, classes, teacher.shape[1]))
    soft = torch.softmax(torch.from_numpy(group_targets(teacher, classes)) / 2.0, -1)

    def loss_fn(out, idx):
        distill = nn.functional.kl_div(torch.log_softmax(out / 2.0, -1), soft[idx], reduction="batchmean")
        return 0.5 * nn.functional.cross_entropy(out, hard[idx]) + 0.5 * distill

    train(sub, x, loss_fn, cfg.finetune_epochs, cfg, log)


def _train_fusion(subs: list[nn.Module], x: np.ndarray, y: np.ndarray, classes: int) -> dict:
    feats = torch.from_numpy(np.concatenate([predict(s, x) for s in subs], 1))
    fusion = nn.Linear(feats.shape[1], classes)
    labels = torch.from_numpy(y)
    opt = torch.optim.Adam(fusion.parameters(), lr=1e-2)
    for _ in range(300):
        loss = nn.functional.cross_entropy(fusion(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"weight": fusion.weight.detach(), "bias": fusion.bias.detach()}


def train_split(full: nn.Module, arch, cfg: TrainConfig, k: int, method: str = "confusion",
                log=print) -> ClassSplit:
    """Split, prune, fine-tune and fuse (cached by configuration, K and assignment method)."""
    torch.set_num_threads(1)
    x, y = fashion_mnist("train", cfg.train_images)
    teacher = predict(full, x)
    confusion = np.zeros((arch.classes, arch.classes))
    np.add.at(confusion, (y, teacher.argmax(1)), 1)
    groups = assign_classes(k, arch.classes, method, confusion, cfg.seed)
    keep = keep_ratio(k)
    grouping = hashlib.sha256(json.dumps(groups).encode()).hexdigest()[:8]
    path = cache_dir("distributed", "fashion") / f"split-{cfg.key(arch, split=True)}-k{k}-{method}-{grouping}-{keep}.pt"
    if path.exists():
        # Whole pruned modules are pickled (their shapes differ from any config); only files this function
        # wrote into edgevit's own cache are loaded this way.
        state = torch.load(path, weights_only=False)
    else:
        subs = []
        for i, classes in enumerate(groups):
            torch.manual_seed(cfg.seed + i)
            sub = make_submodel(full, arch, classes, x, y, keep)
            log(f"sub-model {i + 1}/{k}: classes {classes}, {param_count(sub)} parameters after pruning; "
                "fine-tuning")
            _finetune(sub, x, y, teacher, classes, cfg, log)
            subs.append(sub)
        state = {"submodels": subs, "fusion": _train_fusion(subs, x, y, arch.classes)}
        torch.save(state, path)
    subs = [s.eval() for s in state["submodels"]]
    specs = []
    for classes, sub in zip(groups, subs):
        macs, params = count(sub, example_input(arch))
        specs.append(SubModelSpec(classes, keep, params, macs))
    return ClassSplit(groups, specs, subs, state["fusion"]["weight"].numpy(), state["fusion"]["bias"].numpy())
