"""The timm zoo: lightweight hybrid ViTs with seeded random weights (no model hub here), drawn so that they look
like trained ones (see :func:`build`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import UnknownNameError
from ..settings import cache_dir, seed


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: its edgevit name, family and input resolution (batch 1, 3 channels)."""

    name: str
    family: str
    image_size: int

    data = "random (seeded)"

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.image_size, self.image_size)

    @property
    def source(self) -> str:
        return f"zoo:{self.name} (timm, seed {seed()})"

    def load(self):
        """The ``torch.nn.Module`` in eval mode (:func:`build`)."""
        return build(self.name)

    def examples(self, limit: int):
        """None: zoo models have no dataset; callers draw seeded random inputs."""
        return None

    def metadata(self) -> dict:
        return {}


def _entries(family: str, size: int, names: str) -> dict[str, ZooEntry]:
    return {n: ZooEntry(n, family, size) for n in names.split()}


ZOO: dict[str, ZooEntry] = {
    **_entries("MobileViT", 256, "mobilevit_xxs mobilevit_xs mobilevit_s"),
    **_entries("MobileViTv2", 256, "mobilevitv2_050 mobilevitv2_075 mobilevitv2_100"),
    **_entries("SwiftFormer", 224, "swiftformer_xs swiftformer_s swiftformer_l1"),
    **_entries("EfficientFormer", 224, "efficientformer_l1"),
    **_entries("EfficientFormerV2", 224, "efficientformerv2_s0 efficientformerv2_s1"),
}


def get_entry(name: str) -> ZooEntry:
    """Look up a zoo model.

    Raises
    ------
    UnknownNameError
        If ``name`` is not in the zoo; the message lists every model name edgevit knows.
    """
    if name not in ZOO:
        raise UnknownNameError(f"unknown zoo model '{name}'; the zoo: {', '.join(ZOO)} (`edgevit models` lists every "
                               "model edgevit knows)")
    return ZOO[name]


#: Version of how :func:`build` draws weights: part of every cache key of files made from zoo weights (exported
#: ONNX, converted .tflite), so changing the drawing without bumping it would leave stale files behind.
WEIGHTS_VERSION = 2


def cache_tag(name: str, timm_version: str, torch_version: str) -> str:
    """The part of a cache file name that pins a zoo model's weights: name, seed, weights version, timm, torch."""
    return f"{name}-seed{seed()}-w{WEIGHTS_VERSION}-timm{timm_version}-torch{torch_version}"


def build(name: str):
    """Build a zoo model as a ``torch.nn.Module`` in eval mode, with weights drawn from the edgevit seed.

    timm initialises some parameters to exactly zero: the last BatchNorm scale of residual blocks
    (``zero_init_last``: 3 blocks of mobilevit_xxs compute nothing) and EfficientFormer's attention biases.
    Trained weights are never exactly zero, and a converter that folds such dead branches away (the TFLite one
    does) would be timed on a smaller model than the others. Those parameters are redrawn: scales from
    U(0.1, 0.5), the size of trained residual-branch scales, other tensors from N(0, 0.02).
    """
    get_entry(name)
    return build_timm(name)


def build_timm(name: str):
    """Any timm model (zoo or not) in eval mode, weights drawn from the edgevit seed, exact zeros redrawn as
    :func:`build` says."""
    import timm
    import torch

    torch.manual_seed(seed())
    model = timm.create_model(name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(seed())
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for param_name, param in module.named_parameters(recurse=False):
                if param.numel() == 0 or param_name == "bias" or bool(param.any()):
                    continue
                if isinstance(module, torch.nn.modules.batchnorm._NormBase | torch.nn.LayerNorm | torch.nn.GroupNorm):
                    param.copy_(torch.rand(param.shape, generator=generator) * 0.4 + 0.1)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


def stats(name: str) -> dict:
    """Parameter count and multiply-accumulates of one forward pass (cached per torch/timm version).

    MACs are half the FLOPs torch's ``FlopCounterMode`` counts (convolutions and matrix products).
    """
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    path = cache_dir("zoo") / f"stats-timm{timm.__version__}-torch{torch.__version__}.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    if name not in table:
        model = build(name)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(get_entry(name).input_shape))
        table[name] = {"params": sum(p.numel() for p in model.parameters()),
                       "macs": counter.get_total_flops() // 2}
        path.write_text(json.dumps(table, indent=1))
    return table[name]
