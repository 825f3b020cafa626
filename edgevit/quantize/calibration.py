"""Calibration inputs for static quantization: Fashion-MNIST or a folder of ``.npy`` files, fitted to a model's
input shape.

Images (rank-4 ``N, C, H, W``) are resized bilinearly to the model's height and width and grey images (one
channel) are repeated over the model's channels, so one data set calibrates every zoo model. Anything else must
have the model's input shape exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..arrays import load_npy
from ..errors import InputError
from ..frontend import TensorSpec

FASHION_MNIST = "fashion-mnist"


def calibration_inputs(source: str, spec: TensorSpec, count: int) -> list[np.ndarray]:
    """Up to ``count`` calibration samples, each of ``spec``'s shape and dtype (batch 1 or the model's batch).

    Parameters
    ----------
    source
        ``fashion-mnist`` (Debian's ``dataset-fashion-mnist``, training split) or a folder of ``.npy`` files.
        Each file holds one sample (the model's input shape, with or without its batch dimension) or a batch
        ``[N, ...]`` of them; rank-4 images may differ in size and be grey (see the module docstring).
    spec
        The model's (single) input.
    count
        How many samples to use at most (files are read in name order).

    Raises
    ------
    InputError
        The data set is not installed, the folder is missing or holds no ``.npy`` file, or a file is unreadable,
        not floating point, holds NaN/Inf or has a shape that does not fit the input (the file is named).
    """
    if not np.issubdtype(np.dtype(spec.dtype), np.floating):
        raise InputError(f"input '{spec.name}' is {spec.dtype}: only float inputs can be calibrated")
    if source == FASHION_MNIST:
        from ..datasets import fashion_mnist as load

        images, _ = load("train", limit=count)
        return _split(_fit(images, spec, FASHION_MNIST), spec)
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"calibration data '{source}' is neither '{FASHION_MNIST}' nor a folder of .npy files"
                         + (" (it is a file)" if folder.exists() else ""))
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise InputError(f"calibration folder {folder} holds no .npy file: put one sample (or a batch) per file")
    samples: list[np.ndarray] = []
    for path in files:
        samples += _split(_fit(_read(path), spec, path.name), spec)
        if len(samples) >= count:
            break
    return samples[:count]


def _read(path: Path) -> np.ndarray:
    array = load_npy(path, "calibration file", "save one array per .npy file")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"calibration file {path} holds {array.dtype}: save float32 samples (scaled as the "
                         "model expects)")
    if array.size and not np.all(np.isfinite(array)):
        raise InputError(f"calibration file {path} holds NaN or Inf values")
    return array


def _fit(array: np.ndarray, spec: TensorSpec, name: str) -> np.ndarray:
    """``array`` as a batch ``[N, *spec.shape[1:]]`` of ``spec``'s dtype."""
    shape = tuple(spec.shape)
    if array.shape == shape[1:]:
        array = array[None]
    if len(shape) == 4 and array.ndim == 3 and array.shape[0] in (1, shape[1]) and shape[1] != 1:
        array = array[None]  # one image without its batch dimension
    if len(shape) == 4 and array.ndim == 4 and array.shape[1] in (1, shape[1]) and array.shape[0] > 0:
        if array.shape[2:] != shape[2:]:
            array = _resize_bilinear(array, shape[2:])
        if array.shape[1] != shape[1]:
            array = np.repeat(array, shape[1], axis=1)
    if array.ndim != len(shape) or array.shape[1:] != shape[1:] or array.shape[0] == 0:
        raise InputError(f"calibration file {name} has shape {list(array.shape)}; input '{spec.name}' takes "
                         f"{list(shape)} (one sample, with or without the batch dimension, or a batch of them)")
    return array.astype(spec.dtype, copy=False)


def _split(batch: np.ndarray, spec: TensorSpec) -> list[np.ndarray]:
    """Samples of the model's batch size (a remainder that does not fill one is dropped)."""
    size = spec.shape[0]
    return [np.ascontiguousarray(batch[i:i + size]) for i in range(0, len(batch) - size + 1, size)]


def _resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[N, C, H, W]`` to ``size`` with half-pixel centres (torch's align_corners=False)."""
    def taps(n_in: int, n_out: int):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(x).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (x - low).astype(np.float32)

    (y0, y1, wy), (x0, x1, wx) = taps(images.shape[2], size[0]), taps(images.shape[3], size[1])
    rows = images[:, :, y0] * (1 - wy)[:, None] + images[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx
