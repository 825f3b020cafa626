"""Seeded, single-threaded training of the MoE-ViT presets on two tasks of scikit-learn's digits (the digit and
its parity), cached under ``cache_dir("moe")`` by a hash of the model file, this file and the settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..settings import cache_dir
from .definitions import MODELS_DIR, model_module

CONFIG = {"seed": 0, "epochs": 40, "batch": 64, "lr": 3e-3, "aux_weight": 0.01}


def task_labels(y: np.ndarray) -> list[np.ndarray]:
    """The labels of each task of the presets, from digit labels: the digit, and its parity (0 even, 1 odd)."""
    return [y, y % 2]


def digits_tasks():
    """(x_train, labels_train, x_test, labels_test): images ``[n, 1, 8, 8]``, one label array per task.

    The same split and scaling as the tiny MobileViT's (:func:`edgevit.datasets.digits`).
    """
    from ..datasets import digits

    xtr, ytr, xte, yte = digits()
    return xtr, task_labels(ytr), xte, task_labels(yte)


def _cache_path(preset: str) -> Path:
    digest = hashlib.sha256((MODELS_DIR / "moe_vit.py").read_bytes() + Path(__file__).read_bytes()
                            + repr((preset, sorted(CONFIG.items()))).encode())
    return cache_dir("moe") / f"{preset}-{digest.hexdigest()[:16]}.pt"


def trained_moe_vit(preset: str = "moe_vit_tiny"):
    """The preset trained on both tasks, in eval mode (about a minute on one thread unless cached)."""
    import torch

    from ..training import cached, fit

    mv = model_module()

    def train(model):
        xtr, labels, _, _ = digits_tasks()
        xtr = torch.from_numpy(xtr)
        labels = [torch.from_numpy(y).long() for y in labels]

        def batch_loss(m, idx):
            loss = 0.0
            for task, y in enumerate(labels):   # every task on every batch: the backbone is shared
                loss = loss + torch.nn.functional.cross_entropy(m(xtr[idx], task), y[idx])
                loss = loss + CONFIG["aux_weight"] * sum(getattr(layer, "aux_loss", 0.0) for layer in m.moe_layers())
            return loss

        fit(model, len(xtr), batch_loss, CONFIG["epochs"], CONFIG["batch"], CONFIG["lr"], CONFIG["seed"])

    def build():
        torch.manual_seed(CONFIG["seed"])
        return mv.build(preset)

    return cached(build, _cache_path(preset), train)


def accuracy(model, x: np.ndarray, labels: list[np.ndarray]) -> list[float]:
    """Top-1 accuracy of each task of the multi-task ``model`` on images ``x``."""
    import torch

    with torch.no_grad():
        xt = torch.from_numpy(x)
        return [float((model(xt, task).argmax(1).numpy() == y).mean()) for task, y in enumerate(labels)]
