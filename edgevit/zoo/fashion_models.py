"""The models trained here on Fashion-MNIST (28x28 grey images): the class-wise split's and the int8 accuracy's.

A small plain ViT; a reduced-width MobileViT v1 built from timm's own classes (``ByobNet`` with MobileViT's
block types: conv stem, inverted-residual MobileNet blocks, MobileViT blocks that unfold the map into 2x2
patches, run timm ViT transformer blocks and fold back); reduced-width timm EfficientFormer and SwiftFormer
(``TimmConfig``). Each configuration is a frozen dataclass with ``build(out)``, and every model ends in a linear
``head`` (the split replaces it). The ViT's and the MobileViT's attention modules expose ``qkv``, ``num_heads`` and
``attn_dim`` as timm's do, so one structured pruner (``distributed/prune.py``) handles both; the plans
(``edgevit plan --strategy class``) are made for those. The module classes live at module level so pruned models
can be saved whole.

``FASHION_MODELS`` names the configurations the registry (:mod:`edgevit.zoo`) lists: each architecture with
its ``TrainConfig``, trained by :func:`train_full` through the one training loop (:mod:`edgevit.training`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VitConfig:
    """A small ViT for 28x28 grey images: ``dim`` residual width, ``heads`` x ``head_dim`` attention."""

    image: int = 28
    patch: int = 7
    channels: int = 1
    dim: int = 64
    depth: int = 4
    heads: int = 4
    head_dim: int = 16
    mlp: int = 128
    classes: int = 10

    def build(self, out: int | None = None) -> "Vit":
        """The model (random weights), with ``out`` logits (default: ``classes``)."""
        return Vit(self, out or self.classes)

    def unwrapped_parameters(self, model: "Vit") -> dict:
        """Parameters outside ``nn.Module`` layers that pruning must slice, with the dimension to slice."""
        return {model.pos: 2}


class Attention(nn.Module):
    """Multi-head self-attention; the head count is an attribute so pruning whole heads can lower it."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim = heads, head_dim, heads * head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * self.attn_dim)
        self.proj = nn.Linear(self.attn_dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.attn_dim))


class Block(nn.Module):
    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(cfg.dim), Attention(cfg.dim, cfg.heads, cfg.head_dim)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.mlp), nn.Linear(cfg.mlp, cfg.dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Vit(nn.Module):
    """Patch embedding + position embedding, ``depth`` pre-norm blocks, mean pooling, ``head``."""

    def __init__(self, cfg: VitConfig, out: int):
        super().__init__()
        self.embed = nn.Conv2d(cfg.channels, cfg.dim, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.zeros(1, (cfg.image // cfg.patch) ** 2, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm, self.head = nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, out)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


@dataclass(frozen=True)
class MobileVitConfig:
    """A MobileViT v1 for 28x28 grey images, zero-padded by ``pad`` to 32x32 so every stride-2 stage halves
    the map exactly and 2x2 patches tile it without timm's bilinear resize.

    ``mbconv``: inverted-residual stages as (channels, depth, stride). ``mvit``: MobileViT stages as
    (channels, stride, transformer dim, transformer depth), each an inverted-residual block (doing the stride)
    then one MobileViT block. ``heads`` per transformer block, ``expansion`` the inverted residuals'
    bottleneck ratio, ``features`` the last 1x1 conv's width before pooling. The default has about a tenth
    of ``mobilevit_xxs``'s width and depth budget: 16x16 -> 8x8 -> 4x4 maps.
    """

    image: int = 28
    channels: int = 1
    classes: int = 10
    pad: int = 2
    stem: int = 16
    mbconv: tuple = ((16, 1, 1), (24, 2, 2))
    mvit: tuple = ((32, 1, 48, 2), (48, 2, 64, 2))
    heads: int = 4
    expansion: float = 2.0
    features: int = 128

    def build(self, out: int | None = None) -> "FashionMobileVit":
        """The model (random weights), with ``out`` logits (default: ``classes``)."""
        return FashionMobileVit(self, out or self.classes)

    def unwrapped_parameters(self, model: "FashionMobileVit") -> dict:
        """Parameters outside ``nn.Module`` layers that pruning must slice (none: all are timm layers)."""
        return {}


def _byob_config(cfg: MobileVitConfig):
    import timm.models.mobilevit  # noqa: F401  (registers the 'mobilevit' block type with ByobNet)
    from timm.models.byobnet import ByoBlockCfg, ByoModelCfg

    def inverted_residual(c, d, s):
        return ByoBlockCfg(type="bottle", d=d, c=c, s=s, gs=1, br=cfg.expansion,
                           block_kwargs=dict(bottle_in=True, linear_out=True))

    blocks = [inverted_residual(c, d, s) for c, d, s in cfg.mbconv]
    for c, s, dim, depth in cfg.mvit:
        blocks.append((inverted_residual(c, 1, s),
                       ByoBlockCfg(type="mobilevit", d=1, c=c, s=1,
                                   block_kwargs=dict(transformer_dim=dim, transformer_depth=depth, patch_size=2,
                                                     num_heads=cfg.heads))))
    return ByoModelCfg(blocks=tuple(blocks), stem_chs=cfg.stem, stem_type="3x3", stem_pool="", downsample="",
                       act_layer="silu", num_features=cfg.features)


class FashionMobileVit(nn.Module):
    """timm ``ByobNet`` with MobileViT v1 blocks and no classifier (it pools), then a linear ``head``."""

    def __init__(self, cfg: MobileVitConfig, out: int):
        from timm.models.byobnet import ByobNet

        super().__init__()
        self.pad = cfg.pad
        self.body = ByobNet(_byob_config(cfg), in_chans=cfg.channels, num_classes=0)
        self.head = nn.Linear(cfg.features, out)

    def forward(self, x):
        return self.head(self.body(F.pad(x, (self.pad,) * 4)))


@dataclass(frozen=True)
class TimmConfig:
    """A timm hybrid at reduced width for 28x28 grey images: ``model`` is the class in ``timm.models``
    (``efficientformer.EfficientFormer``), ``kwargs`` its arguments as (name, value) pairs, ``pad`` zero padding
    around the image. timm's own pooled features feed a linear ``head``, as in the other models here."""

    model: str
    kwargs: tuple
    image: int = 28
    channels: int = 1
    classes: int = 10
    pad: int = 0

    def build(self, out: int | None = None) -> "FashionTimm":
        """The model (random weights), with ``out`` logits (default: ``classes``)."""
        return FashionTimm(self, out or self.classes)

    def unwrapped_parameters(self, model: "FashionTimm") -> dict:
        """Parameters outside ``nn.Module`` layers that pruning must slice (none)."""
        return {}


class FashionTimm(nn.Module):
    """A timm model class without its classifier (it pools), then a linear ``head``."""

    def __init__(self, cfg: TimmConfig, out: int):
        import importlib

        super().__init__()
        module, _, name = cfg.model.rpartition(".")
        cls = getattr(importlib.import_module(f"timm.models.{module}"), name)
        self.pad = cfg.pad
        self.body = cls(in_chans=cfg.channels, num_classes=0, **dict(cfg.kwargs))
        self.head = nn.Linear(self.body.num_features, out)

    def forward(self, x):
        return self.head(self.body(F.pad(x, (self.pad,) * 4) if self.pad else x))


CACHE_VERSION = 3  # bump when training or pruning changes, so stale cached models are not reused


@dataclass(frozen=True)
class TrainConfig:
    """How the full model and the class-split sub-models are trained (seeded, one thread)."""

    train_images: int = 30000
    epochs: int = 5
    finetune_epochs: int = 4
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0
    warmup: float = 0.15   # share of the steps the one-cycle schedule spends rising

    def key(self, arch, split: bool = False) -> str:
        """Cache key: the full model depends on the architecture and everything here but
        ``finetune_epochs``; sub-models on all."""
        fields = asdict(self)
        if not split:
            fields.pop("finetune_epochs")
        blob = json.dumps([type(arch).__name__, asdict(arch), fields, CACHE_VERSION], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# A plain ViT and a reduced-width MobileViT v1, each with a tiny variant that trains in seconds (tests, demos), and
# reduced-width EfficientFormer and SwiftFormer (timm's classes) for the int8 accuracy of each zoo family.
FASHION_MODELS = {
    "fashion-vit": (VitConfig(), TrainConfig()),
    "fashion-vit-tiny": (VitConfig(dim=32, depth=2, heads=2, mlp=64),
                         TrainConfig(train_images=4000, epochs=2, finetune_epochs=1)),
    "fashion-mobilevit": (MobileVitConfig(), TrainConfig(train_images=20000, epochs=5, finetune_epochs=2)),
    "fashion-mobilevit-tiny": (MobileVitConfig(stem=8, mbconv=((8, 1, 1), (16, 1, 2)), mvit=((24, 2, 32, 1),),
                                               heads=4, features=64),
                               TrainConfig(train_images=4000, epochs=4, finetune_epochs=2)),
    # EfficientFormer's attention bias is fixed at 7x7 tokens: the stem's /4 gives exactly that, so no stage
    # downsamples and the widths stay equal (timm needs a downsample to change width).
    "fashion-efficientformer": (TimmConfig("efficientformer.EfficientFormer",
                                           (("depths", (2, 2, 2, 2)), ("embed_dims", (48, 48, 48, 48)),
                                            ("downsamples", (False, False, False, False)), ("num_vit", 1))),
                                TrainConfig(train_images=20000, epochs=5, finetune_epochs=2)),
    # SwiftFormer on 32x32 (padded): 8x8 maps, then 4x4 from the second stage on.
    "fashion-swiftformer": (TimmConfig("swiftformer.SwiftFormer",
                                       (("layers", (2, 2, 2, 2)), ("embed_dims", (32, 48, 48, 48)),
                                        ("downsamples", (False, True, False, False))), pad=2),
                            TrainConfig(train_images=20000, epochs=5, finetune_epochs=2)),
}


def train(model: nn.Module, x, loss_fn, epochs: int, cfg: TrainConfig, log=None) -> None:
    """Train ``model`` in place on images ``x`` (numpy) with ``loss_fn(outputs, idx)``, through the one loop."""
    from ..training import fit

    images = torch.from_numpy(x)
    fit(model, len(images), lambda m, idx: loss_fn(m(images[idx]), idx), epochs, cfg.batch, cfg.lr, cfg.seed,
        warmup=cfg.warmup, log=log)


def train_full(arch, cfg: TrainConfig, log=print) -> nn.Module:
    """The unsplit model (``arch.build()``) trained on Fashion-MNIST (cached by configuration)."""
    from ..datasets import fashion_mnist
    from ..settings import cache_dir
    from ..training import cached

    def build():
        torch.set_num_threads(1)
        torch.manual_seed(cfg.seed)
        return arch.build()

    def train_it(model):
        x, y = fashion_mnist("train", cfg.train_images)
        labels = torch.from_numpy(y)
        params = sum(p.numel() for p in model.parameters())
        log(f"training the full {type(model).__name__} ({params} parameters) on {len(x)} Fashion-MNIST images")
        train(model, x, lambda out, idx: nn.functional.cross_entropy(out, labels[idx]), cfg.epochs, cfg, log)

    return cached(build, cache_dir("zoo", "fashion") / f"full-{cfg.key(arch)}.pt", train_it)


def trained(name: str, log=print) -> nn.Module:
    """The registry's entry point (:mod:`edgevit.zoo`): the full model of ``FASHION_MODELS[name]``, trained."""
    arch, cfg = FASHION_MODELS[name]
    return train_full(arch, cfg, log)
