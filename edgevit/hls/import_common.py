"""What the torch-module importers share: the exception for what the accelerator cannot run, activation names,
and tensors to numpy. Used by :mod:`.torch_import` (timm model parts) and :mod:`.moe_import` (MoE-ViT builds)."""

from __future__ import annotations

import numpy as np

ACT_NAMES = {"SiLU": "silu", "ReLU": "relu", "GELU": "gelu", "Hardswish": "hswish", "Sigmoid": "sigmoid",
             "Identity": "none"}


class Unsupported(Exception):
    """Raised inside the walker for a module the accelerator cannot run (caught, never escapes)."""


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _act(module) -> str:
    name = type(module).__name__ if module is not None else "Identity"
    if name not in ACT_NAMES:
        raise Unsupported(f"activation {name}")
    return ACT_NAMES[name]
