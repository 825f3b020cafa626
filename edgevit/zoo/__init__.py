"""Every model edgevit knows by name, in one registry.

Three kinds of entry, one interface (``name``, ``family``, ``input_shape``, ``data``, ``source``, ``load()``,
``examples(limit)``, ``metadata()``):

==========================  ===============================================  =====================================
kind                        names                                            weights
==========================  ===============================================  =====================================
timm zoo (``ZOO``)          mobilevit_xxs, swiftformer_xs, ...               seeded random, shaped like trained ones
trained here (``TRAINED``)  tiny_mobilevit, fashion-vit, fashion-mobilevit,  trained on scikit-learn digits or
                            fashion-efficientformer, fashion-swiftformer,    Fashion-MNIST, cached
                            ``-tiny`` variants
MoE-ViT task builds         ``PRESET[:TASK]``, e.g. ``moe_vit_tiny:parity``  trained on digits, cached
                            (presets in ``models/moe_vit.py``)
==========================  ===============================================  =====================================

Everything trained here goes through one loop and weight cache (:mod:`edgevit.training`). Every model reaches
the compilers the same way, as ONNX (:mod:`edgevit.frontend`); ``edgevit hls`` lowers the same entries' torch
modules. :func:`lookup` is the one front door.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from ..errors import UnknownNameError
from ..settings import seed
from .timm_models import WEIGHTS_VERSION, ZOO, ZooEntry, build, cache_tag, get_entry, stats

__all__ = ["WEIGHTS_VERSION", "ZOO", "TRAINED", "ZooEntry", "TrainedEntry", "MoeEntry", "build", "cache_tag",
           "get_entry", "stats", "lookup", "is_known"]


def _say(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


def _examples(data: str, limit: int):
    """(calibration, test) images of a dataset shipped in a package, each ``[1, *image]``: the first ``limit`` of
    its training and test splits."""
    from .. import datasets

    if data == "scikit-learn digits":
        x_train, _, x_test, _ = datasets.digits()
    else:
        (x_train, _), (x_test, _) = datasets.fashion_mnist("train", limit), datasets.fashion_mnist("test", limit)
    return [x[None] for x in x_train[:limit]], [x[None] for x in x_test[:limit]]


@dataclass(frozen=True)
class TrainedEntry:
    """A model edgevit trains itself (seeded, one thread, cached), by name.

    ``trainer`` names the submodule of :mod:`edgevit.zoo` whose ``trained(name, log)`` returns it.
    """

    name: str
    family: str
    input_shape: tuple[int, ...]
    data: str          # what it is trained on (a dataset shipped in a package)
    trainer: str

    @property
    def source(self) -> str:
        return f"trained here on {self.data} (seed {seed()})"

    def load(self):
        """The trained ``torch.nn.Module`` in eval mode (trains on first use, then comes from the cache)."""
        return importlib.import_module(f"{__name__}.{self.trainer}").trained(self.name, _say)

    def examples(self, limit: int):
        """(calibration, test) images of its dataset, each ``[1, *input]``: the first ``limit`` of each split."""
        return _examples(self.data, limit)

    def metadata(self) -> dict:
        return {}


def _fashion(name: str, family: str) -> TrainedEntry:
    return TrainedEntry(name, family, (1, 1, 28, 28), "Fashion-MNIST", "fashion_models")


TRAINED: dict[str, TrainedEntry] = {
    "tiny_mobilevit": TrainedEntry("tiny_mobilevit", "MobileViT (timm blocks)", (1, 1, 8, 8), "scikit-learn digits",
                                   "tiny_mobilevit"),
    "fashion-vit": _fashion("fashion-vit", "ViT"),
    "fashion-vit-tiny": _fashion("fashion-vit-tiny", "ViT"),
    "fashion-mobilevit": _fashion("fashion-mobilevit", "MobileViT (timm blocks)"),
    "fashion-mobilevit-tiny": _fashion("fashion-mobilevit-tiny", "MobileViT (timm blocks)"),
    "fashion-efficientformer": _fashion("fashion-efficientformer", "EfficientFormer (timm)"),
    "fashion-swiftformer": _fashion("fashion-swiftformer", "SwiftFormer (timm)"),
}


@dataclass(frozen=True)
class MoeEntry:
    """One task's build of a trained MoE-ViT preset (``PRESET:TASK``, see :mod:`edgevit.moe`)."""

    name: str
    preset: str
    task: str
    input_shape: tuple[int, ...]
    family = "MoE-ViT"
    data = "scikit-learn digits"

    @property
    def source(self) -> str:
        return f"models/moe_vit.py preset {self.preset}, task {self.task} (trained on digits)"

    def load(self):
        """The trained single-task build, eval mode."""
        from .. import moe

        return moe.load_task_model(self.name)

    def examples(self, limit: int):
        """(calibration, test) digits images, as for the tiny MobileViT (one split)."""
        return _examples(self.data, limit)

    def metadata(self) -> dict:
        """What ``edgevit info`` shows about a task build: experts kept per MoE layer and parameters."""
        from .. import moe

        rows = moe.task_build_summary(self.preset)
        return {"moe": next(r for r in rows if r["task"] == self.task)}


def _moe_entry(spec: str) -> MoeEntry:
    from .. import moe

    name = moe.parse_name(spec)
    cfg = moe.model_module().PRESETS[name.preset]
    return MoeEntry(str(name), name.preset, name.task_name, (1, cfg.in_chans, cfg.image_size, cfg.image_size))


def is_known(name: str) -> bool:
    """Whether :func:`lookup` knows ``name`` (without training or building anything)."""
    from .. import moe

    return name in ZOO or name in TRAINED or moe.is_moe_name(name)


def lookup(name: str) -> ZooEntry | TrainedEntry | MoeEntry:
    """The registry entry a model name stands for: a zoo name, a model trained here, or ``PRESET[:TASK]``.

    Raises
    ------
    UnknownNameError
        No model has that name (or the MoE-ViT preset has no such task); the message lists the names.
    """
    from .. import moe

    if name in ZOO:
        return ZOO[name]
    if name in TRAINED:
        return TRAINED[name]
    if moe.is_moe_name(name):
        return _moe_entry(name)
    raise UnknownNameError(f"unknown model '{name}'. Zoo models: {', '.join(ZOO)}; trained here: "
                           f"{', '.join(TRAINED)}; MoE-ViT task builds: PRESET[:TASK] (`edgevit models` lists them); "
                           "or pass a path to an .onnx file")
