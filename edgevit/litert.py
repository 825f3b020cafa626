"""LiteRT (ai-edge-litert) as a peer in ``edgevit bench``: where converted zoo models and their runtime live.

Converting needs litert-torch, whose dependencies (jax, transformers, torchao) clash with edgevit's venv, so
``tools/setup_litert.sh`` builds a separate venv from ``tools/requirements-litert.lock`` under edgevit's cache and
converts zoo models there with ``edgevit.zoo.build`` (same seed, same torch and timm: the same weights as
edgevit's build). The runtime, ai-edge-litert, is in edgevit's own venv (it works with numpy 2): the bench runs
a converted .tflite there, in a process of its own. For ``edgevit bench --quantize int8``, ``int8_tflite``
quantizes the float .tflite in that venv (``edgevit.litert_int8``, ai-edge-quantizer) on the calibration samples
edgevit's QDQ model was made from, once per model and samples.
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


def converter_python() -> Path | None:
    """The Python of the converter venv ``tools/setup_litert.sh`` made (named by its lock file's hash), or None."""
    import hashlib

    lock = Path(__file__).resolve().parents[1] / "tools" / "requirements-litert.lock"
    if not lock.exists():
        return None
    venv = cache_dir() / f"litert-venv-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    return venv / "bin" / "python" if (venv / ".complete").exists() else None


def int8_tflite(model: str, samples: list, per_channel: bool) -> tuple[Path | None, str]:
    """The int8 .tflite of zoo model ``model`` calibrated on ``samples``, made once (``edgevit.litert_int8``).

    Returns the path and what it is, or None and why there is none (the bench prints that reason).
    """
    import hashlib
    import os
    import subprocess
    import tempfile

    import numpy as np

    from . import zoo

    if model not in zoo.ZOO:
        return None, "no int8 .tflite for this model (LiteRT runs converted zoo models only)"
    converted, python = find_converted(model), converter_python()
    if converted is None or python is None:
        return None, ("no int8 .tflite for this model (no float .tflite to quantize: run "
                      f"tools/setup_litert.sh {model})")
    digest = hashlib.sha256(f"{per_channel}".encode())
    for sample in samples:
        digest.update(np.ascontiguousarray(sample).tobytes())
    path = converted[0].with_name(f"{converted[0].stem}-int8-{digest.hexdigest()[:16]}.tflite")
    what = (f"ai-edge-quantizer static int8 ({'per-channel' if per_channel else 'per-tensor'} weights, min/max "
            f"ranges from the same {len(samples)} samples)")
    if path.exists():
        return path, what
    checkout = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # a killed run leaves no half-written model
        np.savez(Path(tmp) / "samples.npz", *samples)
        partial = Path(tmp) / path.name
        proc = subprocess.run([str(python), "-m", "edgevit.litert_int8", str(converted[0]),
                               str(Path(tmp) / "samples.npz"), str(partial),
                               "per-channel" if per_channel else "per-tensor"],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": checkout})
        if proc.returncode != 0 or not partial.exists():
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return None, f"no int8 .tflite for this model (ai-edge-quantizer failed: {last})"
        partial.rename(path)
    return path, what
