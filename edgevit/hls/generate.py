"""``edgevit hls MODEL``'s library side: from a model name or an ONNX file to a written HLS project.

Names come from the model registry (:mod:`edgevit.zoo`): their torch modules are lowered by the torch importer
(or, for module classes it does not know, exported and mapped op by op like an ONNX file), calibrated on their
own dataset (models trained here) or on seeded random images (the timm zoo). ONNX files
come through :func:`edgevit.frontend.load_model`, the front door of ``edgevit compile``, and the op mapper
(:mod:`.onnx_import`); what it cannot map becomes the CPU part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ResourceError
from ..settings import seed

MAX_INPUT_WORDS = 1 << 24   # 32 MiB of 16-bit words: the arena holds the input and every tensor after it
# A model trained here calibrates on the first images of its training split and is tested on its test split
# (digits: all 450 test images).
CALIBRATION_IMAGES, TEST_IMAGES = 200, 500


@dataclass
class Generated:
    """A written project: its program, directory and testbench inputs; ``onnx`` is the op mapper's result
    (nodes mapped, where it stopped, the CPU part) for ONNX files, else None."""

    program: object
    path: Path
    tests: list
    onnx: object = None


def is_onnx(what: str) -> bool:
    """Whether ``edgevit hls WHAT`` names a file rather than a registered model."""
    return what.endswith(".onnx") or Path(what).is_file()


def generate(what: str, board: str, out: Path, calib: int = 4, input_shape: str | None = None,
             overrides: dict | None = None) -> Generated:
    """Lower ``what`` (a registry name or an ONNX file), calibrate it, choose lanes for ``board``, write ``out``.

    Parameters
    ----------
    calib
        Seeded random calibration images for models without a dataset (the timm zoo and ONNX files).
    overrides
        Fixed-point formats by tensor name (``--format``); every name must exist in the lowered model.

    Raises
    ------
    InputError, ResourceError, UnknownNameError, ModelImportError
        A name no registry entry has, an ONNX input the accelerator cannot take, a ``--format`` naming no tensor.
    """
    overrides = overrides or {}
    if is_onnx(what):
        return _generate_onnx(what, board, out, calib, input_shape, overrides)
    if input_shape:
        raise InputError(f"--input-shape applies to ONNX files; {what} has a fixed input size")
    return _generate_registered(what, board, out, calib, overrides)


def _random_inputs(shape, count: int) -> list:
    rng = np.random.default_rng(seed())
    return [rng.standard_normal(shape) for _ in range(count)]


def _generate_onnx(path: str, board: str, out: Path, calib: int, input_shape, overrides: dict) -> Generated:
    from ..frontend import load_model

    imported = load_model(path, input_shape)
    if len(imported.inputs) != 1 or imported.inputs[0].dtype != "float32":
        raise InputError(f"{imported.name} has inputs {[(i.name, i.dtype) for i in imported.inputs]}: the "
                         "accelerator takes one float32 input")
    shape = imported.inputs[0].shape
    if int(np.prod(shape)) > MAX_INPUT_WORDS:   # before any sample of it is allocated
        raise ResourceError(f"input shape {list(shape)} has more than {MAX_INPUT_WORDS} values: too large for "
                            "the accelerator's arena; export the model at a smaller input size")
    samples = _random_inputs(shape, calib)
    return _write_onnx(imported, board, out, samples, samples[:1], overrides)


def _write_onnx(imported, board: str, out: Path, samples: list, tests: list, overrides: dict) -> Generated:
    """Map an imported ONNX model's ops (:mod:`.onnx_import`) and write its project and CPU part."""
    from ..quantize import is_qdq_model
    from . import project
    from .onnx_import import lower_onnx

    model = imported.load()
    if is_qdq_model(model):   # int8: the model's own scales on the int8 units (qdq_import), no calibration
        from . import qdq_import

        if overrides:
            raise InputError("--format does not apply to an int8 (QDQ) model: its scales are the model's")
        result = qdq_import.lower_qdq(model, samples[0])
        written = qdq_import.write_project(result, board, out, tests,
                                           {"model": imported.name, "onnx": imported.source})
        return Generated(result.program, written, tests, result)
    result = lower_onnx(model, samples[0])
    if overrides:
        check_format_names(result.program, samples[0], overrides)
    written = project.write_onnx(result, board, out, samples, overrides, tests,
                                 {"model": imported.name, "onnx": imported.source})
    return Generated(result.program, written, tests, result)


def _generate_registered(name: str, board: str, out: Path, calib: int, overrides: dict) -> Generated:
    """A registry model: the torch importer, which knows the zoo families' module classes; a model it maps no
    part of (a class it does not know) goes through the ONNX op mapper instead, as an ONNX file would."""
    from .. import zoo
    from ..errors import ModelImportError
    from ..frontend import load_model
    from . import project
    from .torch_import import lower

    entry = zoo.lookup(name)
    model = entry.load()
    examples = entry.examples(TEST_IMAGES)
    if examples is None:   # no dataset: seeded random images, the first one the testbench's
        samples = _random_inputs(entry.input_shape, calib)
        tests = samples[:1]
    else:
        samples, tests = examples[0][:CALIBRATION_IMAGES], examples[1]
    try:
        lowered = lower(model, entry.input_shape)
    except ModelImportError:
        return _write_onnx(load_model(name), board, out, samples, tests, overrides)
    if overrides:
        check_format_names(lowered, samples[0], overrides)
    prog, written = project.write(lowered, board, out, samples, overrides, tests, {"model": entry.name})
    return Generated(prog, written, tests)


def check_format_names(prog, sample, overrides: dict) -> None:
    """Every ``--format`` must name a tensor or parameter of the lowered model (a typo would be silently ignored).

    Raises
    ------
    InputError
        A name that is not a tensor of ``prog``; the message lists some that are.
    """
    from .torch_import import to_accel_layout

    stats: dict = {}
    prog.run_float(to_accel_layout(sample), stats)
    names = set(stats) | {f"{layer.name}.{key}" for layer in prog.layers for key in [*layer.params, "w"]}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"--format names '{unknown[0]}', which is not a tensor of this model (tensors: "
                         f"{', '.join(sorted(stats)[:8])}...; `edgevit hls report` lists the layers)")
