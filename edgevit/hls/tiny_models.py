"""A tiny MobileViT-style classifier for scikit-learn's 8x8 digits, built from timm's own blocks so the
accelerator is tested on the same module types the zoo uses: stem conv, inverted residual (depthwise),
MobileViT block (unfold, transformer with GELU MLP, fold, fusion) and an average-pool head.
Training is seeded, single-threaded and cached under ``cache_dir("hls")`` by a hash of this file.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import numpy as np

from ..settings import cache_dir

CONFIG = {"seed": 0, "epochs": 30, "batch": 64, "lr": 3e-3, "test_fraction": 0.25}


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


def digits_split():
    """(x_train, y_train, x_test, y_test): images scaled to about [-1, 3], shape [n, 1, 8, 8]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = ((data.images / 16.0 - 0.3) / 0.45).astype(np.float32)[:, None]
    rng = np.random.default_rng(CONFIG["seed"])
    order = rng.permutation(len(x))
    n_test = int(len(x) * CONFIG["test_fraction"])
    test, train = order[:n_test], order[n_test:]
    return x[train], data.target[train], x[test], data.target[test]


def _cache_path() -> Path:
    key = hashlib.sha256(Path(__file__).read_bytes() + repr(sorted(CONFIG.items())).encode()).hexdigest()[:16]
    return cache_dir("hls") / f"tiny_mobilevit-{key}.pt"


def trained_tiny_mobilevit():
    """The trained model in eval mode (trains, about 30 s on one thread, unless cached)."""
    import torch

    from ..training import cached, fit

    def train(model):
        xtr, ytr, _, _ = digits_split()
        xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
        fit(model, len(xtr), lambda m, idx: torch.nn.functional.cross_entropy(m(xtr[idx]), ytr[idx]),
            CONFIG["epochs"], CONFIG["batch"], CONFIG["lr"], CONFIG["seed"])

    def build():
        torch.manual_seed(CONFIG["seed"])
        return build_tiny_mobilevit()

    return cached(build, _cache_path(), train)
