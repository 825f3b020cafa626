"""A tiny MobileViT-style classifier for scikit-learn's 8x8 digits, built from timm's own blocks so the
accelerator is tested on the same module types the zoo uses: stem conv, inverted residual (depthwise),
MobileViT block (unfold, transformer with GELU MLP, fold, fusion) and an average-pool head.
Training is seeded, single-threaded and cached under ``cache_dir("hls")`` by a hash of this file.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

from ..datasets import digits
from ..settings import cache_dir

CONFIG = {"seed": 0, "epochs": 30, "batch": 64, "lr": 3e-3}


def build_tiny_mobilevit():
    """The model, untrained: input [1, 1, 8, 8], 10 logits."""
    import torch.nn as nn
    from timm.layers import ClassifierHead, ConvNormAct
    from timm.models.byobnet import BottleneckBlock, LayerFn
    from timm.models.mobilevit import MobileVitBlock

    layers = LayerFn(conv_norm_act=partial(ConvNormAct, act_layer=nn.SiLU), act=nn.GELU)
    return nn.Sequential(
        ConvNormAct(1, 16, 3, act_layer=nn.SiLU),
        BottleneckBlock(16, 16, bottle_ratio=2.0, group_size=1, linear_out=True, layers=layers),
        MobileVitBlock(16, 16, transformer_dim=32, transformer_depth=1, patch_size=2, num_heads=2, mlp_ratio=2.0,
                       layers=layers),
        ClassifierHead(16, 10, pool_type="avg"),
    )


def _cache_path() -> Path:
    key = hashlib.sha256(Path(__file__).read_bytes() + repr(sorted(CONFIG.items())).encode()).hexdigest()[:16]
    return cache_dir("zoo") / f"tiny_mobilevit-{key}.pt"


def trained_tiny_mobilevit():
    """The trained model in eval mode (trains, about 30 s on one thread, unless cached)."""
    import torch

    from ..training import cached, fit

    def train(model):
        xtr, ytr, _, _ = digits()
        xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
        fit(model, len(xtr), lambda m, idx: torch.nn.functional.cross_entropy(m(xtr[idx]), ytr[idx]),
            CONFIG["epochs"], CONFIG["batch"], CONFIG["lr"], CONFIG["seed"])

    def build():
        torch.manual_seed(CONFIG["seed"])
        return build_tiny_mobilevit()

    return cached(build, _cache_path(), train)


def trained(name: str, log=None):
    """The registry's entry point (:mod:`edgevit.zoo`): the trained model named ``name``."""
    return trained_tiny_mobilevit()
