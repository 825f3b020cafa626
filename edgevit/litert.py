"""LiteRT (ai-edge-litert) as a peer in ``edgevit bench``: where converted zoo models and their runtime live.

Converting needs litert-torch, whose dependencies (jax, transformers, torchao) clash with edgevit's venv, so
``tools/setup_litert.sh`` builds a separate venv from ``tools/requirements-litert.lock`` under edgevit's cache and
converts zoo models there with ``edgevit.zoo.build`` (same seed, same torch and timm: the same weights as
edgevit's build). The runtime, ai-edge-litert, is in edgevit's own venv (it works with numpy 2): the bench runs
a converted .tflite there, in a process of its own.
"""

from __future__ import annotations

from pathlib import Path

from .settings import cache_dir

SETUP_HINT = "not converted (run tools/setup_litert.sh)"


def tflite_path(model_name: str, timm_version: str, torch_version: str) -> Path:
    """Where the converted zoo model lives; named by the weights it was made from, as the exported ONNX is."""
    from . import zoo

    return cache_dir("tflite") / f"{zoo.cache_tag(model_name, timm_version, torch_version)}.tflite"


def find_converted(model_name: str) -> tuple[Path, Path] | None:
    """The .tflite of a zoo model and the Python that runs it (this one), or None if it was not converted."""
    import sys

    import timm
    import torch

    path = tflite_path(model_name, timm.__version__, torch.__version__)
    return (path, Path(sys.executable)) if path.exists() else None


def litert_int8_status(model: str) -> str:
    """Why ``edgevit bench --quantize int8`` has no LiteRT int8 row for ``model`` (zoo name or ONNX file).

    No step makes an int8 .tflite yet: ``tools/convert_litert.py`` writes float .tflite files only, and a
    quantized one calibrated like edgevit's QDQ model (same samples, same ranges) does not exist to compare with.
    """
    from . import zoo

    if model not in zoo.ZOO:
        return "LiteRT int8: no int8 .tflite for this model (LiteRT runs converted zoo models only)"
    return ("LiteRT int8: no int8 .tflite for this model (tools/convert_litert.py converts to float .tflite only; "
            "no int8 conversion with the same calibration exists yet)")
