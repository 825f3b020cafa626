"""The datasets edgevit trains and calibrates on, all shipped in packages (no downloads): scikit-learn's 8x8
digits and Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (IDX files, read with numpy)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .errors import InputError

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530
DIGITS_SEED, DIGITS_TEST_FRACTION = 0, 0.25


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (x_train, y_train, x_test, y_test): images ``float32[n, 1, 8, 8]`` scaled to about
    [-1, 3], a seeded 75/25 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = ((data.images / 16.0 - 0.3) / 0.45).astype(np.float32)[:, None]
    order = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    n_test = int(len(x) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return x[train], data.target[train], x[test], data.target[test]
