"""Calibration samples fitted to a model's input: resizing, grey to RGB, batching."""

import numpy as np
import pytest

from edgevit.errors import InputError
from edgevit.frontend import TensorSpec
from edgevit.quantize.calibration import _fit, _resize_bilinear, _split, calibration_inputs


def test_resize_keeps_constants_and_linear_ramps():
    flat = np.full((2, 1, 28, 28), 0.25, np.float32)
    assert np.allclose(_resize_bilinear(flat, (56, 40)), 0.25)
    ramp = np.tile(np.arange(8, dtype=np.float32), (1, 1, 4, 1))  # value = column index
    wide = _resize_bilinear(ramp, (4, 16))
    # half-pixel centres: output column j samples input column (j + 0.5) / 2 - 0.5, clamped at the borders
    expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
    assert np.allclose(wide[0, 0, 0], expected)


def test_grey_images_become_rgb_of_model_size():
    spec = TensorSpec("x", (1, 3, 32, 32), "float32")
    batch = _fit(np.random.default_rng(0).random((5, 1, 28, 28)), spec, "f")
    assert batch.shape == (5, 3, 32, 32) and batch.dtype == np.float32
    assert np.array_equal(batch[:, 0], batch[:, 2])
    samples = _split(batch, spec)
    assert len(samples) == 5 and samples[0].shape == (1, 3, 32, 32)


def test_model_batch_splits_and_drops_remainder():
    spec = TensorSpec("x", (2, 4), "float32")
    assert [s.shape for s in _split(_fit(np.zeros((5, 4)), spec, "f"), spec)] == [(2, 4), (2, 4)]


def test_channel_count_must_fit():
    with pytest.raises(InputError, match=r"\[1, 2, 28, 28\]"):
        _fit(np.zeros((1, 2, 28, 28), np.float32), TensorSpec("x", (1, 3, 32, 32), "float32"), "f")


def test_fashion_mnist_count_and_shape():
    samples = calibration_inputs("fashion-mnist", TensorSpec("x", (1, 3, 64, 64), "float32"), 3)
    assert len(samples) == 3 and all(s.shape == (1, 3, 64, 64) for s in samples)
    assert len({float(s.sum()) for s in samples}) == 3


def test_integer_input_is_refused():
    with pytest.raises(InputError, match="only float inputs"):
        calibration_inputs("fashion-mnist", TensorSpec("ids", (1, 16), "int64"), 3)
