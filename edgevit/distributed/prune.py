"""Structured pruning for the class-wise split, with torch-pruning (``torch_pruning``).

torch-pruning traces the model into a dependency graph, so channels that must go together (a residual
stream through every block, a conv's output and the BatchNorm and depthwise conv after it, MobileViT's
transformer width through its unfold/fold reshapes) are removed together and the layers really shrink.
Channels are ranked by a first-order Taylor importance of the full model's loss on the sub-model's own
classes (ED-ViT keeps what matters for the classes a sub-model is responsible for); attention loses whole
heads (head dims stay, so the trained softmax scale still holds).
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass on ``example``: torch-pruning's per-layer count (convs,
    linears, norms) plus the two matmuls of each attention (scores and weighted sum), which it leaves out."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    attention = []

    def matmuls(module, args, _output):
        sequences, tokens, _ = args[0].shape
        attention.append(2 * sequences * tokens * tokens * module.attn_dim)

    hooks = [m.register_forward_hook(matmuls) for m in _attentions(model)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return int(macs) + sum(attention), int(params)


def _attentions(model: nn.Module) -> list[nn.Module]:
    """Attention modules in timm's layout: a ``qkv`` linear, ``num_heads`` and ``attn_dim``."""
    return [m for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads")]


def prune_for_classes(model: nn.Module, example: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                      keep: float, unwrapped: dict | None = None) -> nn.Module:
    """Prune ``model`` in place to about ``keep`` of its channels and attention heads.

    Parameters
    ----------
    model
        A trained model ending in a linear ``head`` (its outputs are kept; its inputs are pruned).
    example
        An input of the model's shape, to trace the dependency graph.
    images, labels
        Images of the sub-model's classes and their labels in ``model``'s output space: the Taylor importance
        is taken from the cross-entropy on them.
    keep
        Fraction of channels to keep, in (0, 1]; each attention keeps ``keep`` of its heads, rounded down
        (torch-pruning removes ``ceil((1 - keep) * heads)``), so ``keep`` >= 0.5 always leaves one.
    unwrapped
        Parameters that are not inside a layer, with the dimension to prune (e.g. a position embedding).

    Returns
    -------
    nn.Module
        ``model``, pruned, in eval mode.
    """
    model.eval()  # tracing runs forward passes: they must not move BatchNorm statistics
    attentions = _attentions(model)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupTaylorImportance(), pruning_ratio=1.0 - keep,
        ignored_layers=[model.head], num_heads={m.qkv: m.num_heads for m in attentions}, prune_num_heads=True,
        prune_head_dims=False, head_pruning_ratio=1.0 - keep,
        # documented as a dict, but 1.6 iterates it as (parameter, dim) pairs
        unwrapped_parameters=list((unwrapped or {}).items()))
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    for m in attentions:
        m.num_heads = pruner.num_heads[m.qkv]
        m.attn_dim = m.qkv.out_features // 3
    return model
