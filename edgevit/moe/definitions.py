"""The MoE-ViT definitions in ``models/moe_vit.py``, loaded as a module (the model folder is not a package)."""

from __future__ import annotations

import importlib.util
import sys

from ..settings import data_path

MODELS_DIR = data_path("models")


def model_module():
    """``models/moe_vit.py`` as a module."""
    name = "edgevit_models.moe_vit"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MODELS_DIR / "moe_vit.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module   # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]
