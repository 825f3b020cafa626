"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files, read with numpy)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import InputError

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images ``float32[N, 1, 28, 28]`` and labels ``int64[N]`` of the ``train`` or ``test`` split.

    Raises
    ------
    InputError
        The dataset package is not installed.
    """
    prefix = "train" if split == "train" else "t10k"
    images, labels = DATA_DIR / f"{prefix}-images-idx3-ubyte.gz", DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.is_file():
        raise InputError(f"Fashion-MNIST not found in {DATA_DIR}: apt-get install dataset-fashion-mnist")
    x = _read_idx(images)[:limit].astype(np.float32) / 255.0
    y = _read_idx(labels)[:limit].astype(np.int64)
    return ((x - MEAN) / STD)[:, None], y
