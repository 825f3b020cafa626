"""Map a torch module tree (timm MobileViT parts and our tiny models) to an accelerator :class:`Program`.

Known modules: timm ``ConvNormAct`` / ``nn.Conv2d`` (BatchNorm folded into the weights here), ``BottleneckBlock``
(MobileNetV2 inverted residual), ``MobileVitBlock``, ``MobileVitV2Block`` (GroupNorm and separable self-attention), vision-transformer ``Block``, ``ClassifierHead`` (average
pool), EfficientFormer's ``Pooling`` mixer, SwiftFormer (stem, ``Embedding``, ``ConvEncoder``, its ``Block``
with ``EfficientAdditiveAttention``, head) and EfficientFormer's 4-D part (stem, ``Downsample``, ``MetaBlock2d``;
its attention with learned position biases is not supported). Conv2d/BatchNorm2d/activation siblings are merged into one layer. Modules are visited in execution order; from the first module the accelerator cannot run, that module and
everything after it are left to the ARM CPU and listed in ``Program.cpu_layers``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelImportError
from .import_common import ACT_NAMES, Unsupported, _act, _np
from .moe_import import lower_task_model
from .program import Layer, Program


def _bn_affine(bn):
    """BatchNorm in eval mode as ``x * scale + shift``."""
    scale = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
    return scale, _np(bn.bias) - _np(bn.running_mean) * scale


class _Builder:
    def __init__(self, shape):
        self.shapes = {"input": tuple(shape)}
        self.layers: list[Layer] = []
        self.cur = "input"

    def add(self, kind, source, inputs, shape, attrs=None, params=None) -> str:
        name = f"l{len(self.layers)}_{kind}"
        out = f"{name}.out"
        self.shapes[out] = tuple(shape)
        self.layers.append(Layer(kind, name, list(inputs), out, attrs or {}, params or {}, source))
        return out

    def conv(self, source, conv, bn=None, act="none", residual=None, out_scale=None, in_bn=None,
             in_affine=None) -> None:
        """A convolution with folded BatchNorm after it (``bn``) or before it (``in_bn``, or a per-channel
        ``in_affine`` (scale, shift): 1x1 only) and a per-channel layer scale ``out_scale``: all become the
        weights and bias of one accelerator layer."""
        w, b = _np(conv.weight), (_np(conv.bias) if conv.bias is not None else None)
        if bn is not None:
            scale, shift = _bn_affine(bn)
            w, b = w * scale[:, None, None, None], (b if b is not None else 0.0) * scale + shift
        if in_bn is not None:
            in_affine = _bn_affine(in_bn)
        if in_affine is not None:
            scale, shift = in_affine
            b = (b if b is not None else 0.0) + w[:, :, 0, 0] @ shift
            w = w * scale[None, :, None, None]
        if out_scale is not None:
            w, b = w * out_scale[:, None, None, None], (b if b is not None else 0.0) * out_scale
        co, cig, k, k2 = w.shape
        h, wd, ci = self.shapes[self.cur]
        s, pad = conv.stride[0], conv.padding
        if k != k2 or isinstance(pad, str) or pad[0] != k // 2 or pad[1] != k // 2 or conv.dilation[0] != 1 \
                or conv.stride[0] != conv.stride[1] or type(conv).__name__ != "Conv2d":
            raise Unsupported(f"convolution {type(conv).__name__} k={k} padding={pad}")
        ho, wo = (h + 2 * pad[0] - k) // s + 1, (wd + 2 * pad[0] - k) // s + 1
        params = {"w": None, **({"b": b} if b is not None else {})}
        if conv.groups == ci == co and cig == 1 and residual is None:
            params["w"] = w[:, 0]
            self.cur = self.add("dwconv", source, [self.cur], (ho, wo, co),
                                {"k": k, "stride": s, "pad": pad[0], "act": act}, params)
            return
        if conv.groups != 1:
            raise Unsupported(f"grouped convolution (groups={conv.groups})")
        if k > 1 or s > 1:
            self.cur = self.add("im2col", source, [self.cur], (ho * wo, k * k * ci), {"k": k, "stride": s, "pad": pad[0]})
        params["w"] = w.transpose(0, 2, 3, 1).reshape(co, -1)
        inputs = [self.cur] + ([residual] if residual else [])
        self.cur = self.add("linear", source, inputs, (ho, wo, co), {"act": act}, params)

    def linear(self, source, lin, act="none", residual=None, shape_out=None, w=None, b=None) -> None:
        w = _np(lin.weight) if w is None else w
        b = (_np(lin.bias) if lin.bias is not None else None) if b is None else b
        shape = self.shapes[self.cur][:-1] + (w.shape[0],)
        inputs = [self.cur] + ([residual] if residual else [])
        self.cur = self.add("linear", source, inputs, shape, {"act": act}, {"w": w, **({"b": b} if b is not None else {})})

    def layernorm(self, source, ln) -> None:
        if ln.weight is None or len(ln.normalized_shape) != 1:
            raise Unsupported("LayerNorm without affine parameters")
        params = {"gamma": _np(ln.weight), "beta": _np(ln.bias) if ln.bias is not None else np.zeros(ln.weight.shape)}
        self.cur = self.add("layernorm", source, [self.cur], self.shapes[self.cur], {"eps": ln.eps}, params)


def _conv_norm_act(b: _Builder, name, m, residual=None) -> None:
    if type(m).__name__ == "Conv2d":
        return b.conv(name, m, residual=residual)
    if type(m).__name__ != "ConvNormAct" or type(getattr(m, "aa", None)).__name__ not in ("Identity", "NoneType"):
        raise Unsupported(type(m).__name__)
    bn = m.bn
    act = _act(getattr(bn, "act", None))
    if type(getattr(bn, "drop", None)).__name__ not in ("Identity", "NoneType"):
        raise Unsupported("dropout inside ConvNormAct")
    b.conv(name, m.conv, bn, act, residual)


def _identity(*modules) -> bool:
    """True if every module is absent or does nothing at inference (Identity, Dropout in eval mode)."""
    return all(m is None or type(m).__name__ in ("Identity", "Dropout") for m in modules)


def _bottleneck(b: _Builder, name, m) -> None:
    if not _identity(m.conv2b_kxk, m.attn, m.attn_last, m.drop_path, m.act):
        raise Unsupported("BottleneckBlock with attention, extra conv or output activation")
    if m.shortcut is not None and type(m.shortcut).__name__ != "Identity":
        raise Unsupported("BottleneckBlock with a downsampling shortcut")
    shortcut = b.cur if m.shortcut is not None else None
    _conv_norm_act(b, f"{name}.conv1_1x1", m.conv1_1x1)
    _conv_norm_act(b, f"{name}.conv2_kxk", m.conv2_kxk)
    _conv_norm_act(b, f"{name}.conv3_1x1", m.conv3_1x1, residual=shortcut)


def _vit_block(b: _Builder, name, m) -> None:
    attn, mlp = m.attn, m.mlp
    if not _identity(m.ls1, m.ls2, m.drop_path1, m.drop_path2, attn.q_norm, attn.k_norm,
                     getattr(attn, "norm", None), getattr(mlp, "norm", None)):
        raise Unsupported("transformer block with layer scale or q/k norm")
    g, n, d = b.shapes[b.cur]
    x0 = b.cur
    b.layernorm(f"{name}.norm1", m.norm1)
    w, bias = _np(attn.qkv.weight), _np(attn.qkv.bias) if attn.qkv.bias is not None else np.zeros(3 * d)
    w[:d] *= attn.scale        # score scaling folded into the Q projection
    bias[:d] *= attn.scale
    b.linear(f"{name}.attn.qkv", attn.qkv, w=w, b=bias)
    b.cur = b.add("attention", f"{name}.attn", [b.cur], (g, n, d), {"heads": attn.num_heads, "groups": g, "n": n})
    b.linear(f"{name}.attn.proj", attn.proj, residual=x0)
    x1 = b.cur
    b.layernorm(f"{name}.norm2", m.norm2)
    b.linear(f"{name}.mlp.fc1", mlp.fc1, act=_act(mlp.act))
    b.linear(f"{name}.mlp.fc2", mlp.fc2, residual=x1)


def _mobilevit_block(b: _Builder, name, m) -> None:
    h, w, _ = b.shapes[b.cur]
    ph, pw = m.patch_size
    if h % ph or w % pw:
        raise Unsupported("MobileViT block whose map is not a multiple of the patch (needs interpolation)")
    shortcut = b.cur
    _conv_norm_act(b, f"{name}.conv_kxk", m.conv_kxk)
    _conv_norm_act(b, f"{name}.conv_1x1", m.conv_1x1)
    c = b.shapes[b.cur][-1]
    b.cur = b.add("unfold", f"{name}.unfold", [b.cur], (ph * pw, (h // ph) * (w // pw), c), {"ph": ph, "pw": pw})
    for k, blk in enumerate(m.transformer):
        _vit_block(b, f"{name}.transformer.{k}", blk)
    b.layernorm(f"{name}.norm", m.norm)
    b.cur = b.add("fold", f"{name}.fold", [b.cur], (h, w, c), {"h": h, "w": w, "ph": ph, "pw": pw})
    _conv_norm_act(b, f"{name}.conv_proj", m.conv_proj)
    if m.conv_fusion is not None:
        cat = b.shapes[shortcut][-1] + b.shapes[b.cur][-1]
        b.cur = b.add("concat", f"{name}.concat", [shortcut, b.cur], (h, w, cat))
        _conv_norm_act(b, f"{name}.conv_fusion", m.conv_fusion)


MIN_SEPARABLE_DIM = 16   # the separable attention unit moves LNL <= WPB <= 16 words a cycle (attention.h)


def _global_norm(b: _Builder, source, norm) -> tuple:
    """A GroupNorm with one group as the ``global_norm`` unit; returns its affine (gamma, beta), which the caller
    folds into the 1x1 convolution that follows (``in_affine``)."""
    if type(norm).__name__ not in ("GroupNorm1", "GroupNorm") or norm.num_groups != 1 or not norm.affine:
        raise Unsupported(f"{type(norm).__name__} other than GroupNorm with one group and an affine")
    b.cur = b.add("global_norm", source, [b.cur], b.shapes[b.cur], {"eps": norm.eps})
    return _np(norm.weight), _np(norm.bias)


def _linear_transformer_block(b: _Builder, name, m) -> None:
    """MobileViTv2's LinearTransformerBlock on [P, N, C] patches: x + out_proj(separable attention(qkv_proj(
    norm1(x)))), then x + fc2(act(fc1(norm2(x)))); each GroupNorm's affine folds into the 1x1 conv after it."""
    attn, mlp = m.attn, m.mlp
    if not _identity(attn.attn_drop, attn.out_drop, mlp.drop, mlp.norm) or \
            any(type(p).__name__ not in ("DropPath", "Identity") for p in (m.drop_path1, m.drop_path2)):
        raise Unsupported("LinearTransformerBlock with a norm inside its MLP")
    p, n, d = b.shapes[b.cur]
    if d < MIN_SEPARABLE_DIM:
        raise Unsupported(f"separable attention of {d} < {MIN_SEPARABLE_DIM} features")
    x0 = b.cur
    gamma, beta = _global_norm(b, f"{name}.norm1", m.norm1)
    normed = b.cur
    # qkv_proj as two layers: scores and keys [P, N, 1 + d], and the values with their ReLU [P, N, d]
    w = _np(attn.qkv_proj.weight)[:, :, 0, 0]
    bias = _np(attn.qkv_proj.bias) if attn.qkv_proj.bias is not None else np.zeros(len(w))
    w, bias = w * gamma[None, :], bias + w @ beta
    b.linear(f"{name}.attn.qkv_proj", None, w=w[:1 + d], b=bias[:1 + d])
    qk, b.cur = b.cur, normed
    b.linear(f"{name}.attn.qkv_proj", None, act="relu", w=w[1 + d:], b=bias[1 + d:])
    b.cur = b.add("separable_attention", f"{name}.attn", [qk, b.cur], (p, n, d))
    b.conv(f"{name}.attn.out_proj", attn.out_proj, residual=x0)
    x1 = b.cur
    affine = _global_norm(b, f"{name}.norm2", m.norm2)
    b.conv(f"{name}.mlp.fc1", mlp.fc1, act=_act(mlp.act), in_affine=affine)
    b.conv(f"{name}.mlp.fc2", mlp.fc2, residual=x1)


def _mobilevit_v2_block(b: _Builder, name, m) -> None:
    """MobileVitV2Block: depthwise kxk, 1x1, unfold to [P, N, C] patches, LinearTransformerBlocks, GroupNorm,
    fold, 1x1 projection (the norm's affine folded into it)."""
    h, w, _ = b.shapes[b.cur]
    ph, pw = m.patch_size
    if h % ph or w % pw:
        raise Unsupported("MobileViTv2 block whose map is not a multiple of the patch (needs interpolation)")
    _conv_norm_act(b, f"{name}.conv_kxk", m.conv_kxk)
    _conv_norm_act(b, f"{name}.conv_1x1", m.conv_1x1)
    c = b.shapes[b.cur][-1]
    b.cur = b.add("unfold", f"{name}.unfold", [b.cur], (ph * pw, (h // ph) * (w // pw), c), {"ph": ph, "pw": pw})
    for k, blk in enumerate(m.transformer):
        _linear_transformer_block(b, f"{name}.transformer.{k}", blk)
    affine = _global_norm(b, f"{name}.norm", m.norm)
    b.cur = b.add("fold", f"{name}.fold", [b.cur], (h, w, c), {"h": h, "w": w, "ph": ph, "pw": pw})
    proj = m.conv_proj
    if type(proj).__name__ != "ConvNormAct" or not _identity(getattr(proj.bn, "drop", None)) \
            or _act(getattr(proj.bn, "act", None)) != "none":
        raise Unsupported("MobileViTv2 projection other than conv + BatchNorm")
    b.conv(f"{name}.conv_proj", proj.conv, proj.bn, in_affine=affine)


def _head(b: _Builder, name, m) -> None:
    if getattr(m.global_pool, "pool_type", "") != "avg" or not _identity(m.drop, getattr(m, "flatten", None)):
        raise Unsupported("classifier head without average pooling")
    b.cur = b.add("avgpool", f"{name}.global_pool", [b.cur], (1, b.shapes[b.cur][-1]))
    b.linear(f"{name}.fc", m.fc)


def _pool_mixer(b: _Builder, name, m, scale=None) -> None:
    pool = m.pool
    k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    if pool.stride not in (1, (1, 1)) or pool.count_include_pad or pool.padding not in (k // 2, (k // 2, k // 2)):
        raise Unsupported("pooling mixer other than stride 1, same padding, count_include_pad=False")
    params = {"scale": scale} if scale is not None else {}
    b.cur = b.add("pool_mixer", name, [b.cur], b.shapes[b.cur], {"k": k}, params)


def _meta_block_2d(b: _Builder, name, m) -> None:
    """EfficientFormer's MetaBlock2d: x + ls1 * (pool(x) - x), then x + ls2 * mlp(x) with BN folded."""
    if not _identity(m.drop_path1, m.drop_path2, m.mlp.drop):
        raise Unsupported("drop path")
    _pool_mixer(b, f"{name}.token_mixer", m.token_mixer, _layer_scale(m.ls1))
    x = b.cur
    b.conv(f"{name}.mlp.fc1", m.mlp.fc1, m.mlp.norm1, _act(m.mlp.act))
    b.conv(f"{name}.mlp.fc2", m.mlp.fc2, m.mlp.norm2, residual=x, out_scale=_layer_scale(m.ls2))


def _downsample(b: _Builder, name, m) -> None:
    b.conv(f"{name}.conv", m.conv, m.norm)


def _additive_attention(b: _Builder, name, m, out_scale=None, residual=None) -> None:
    x = b.cur
    b.linear(f"{name}.to_query", m.to_query)
    b.cur = b.add("l2norm", f"{name}.normalize_query", [b.cur], b.shapes[b.cur])
    qn = b.cur
    b.cur = x
    b.linear(f"{name}.to_key", m.to_key)
    b.cur = b.add("l2norm", f"{name}.normalize_key", [b.cur], b.shapes[b.cur])
    wg = _np(m.w_g).ravel() * m.scale_factor   # the score scale folded into w_g
    b.cur = b.add("additive", f"{name}.additive", [qn, b.cur], b.shapes[b.cur], {}, {"wg": wg})
    b.linear(f"{name}.proj", m.proj, residual=qn)
    w, bias = _np(m.final.weight), _np(m.final.bias)
    if out_scale is not None:
        w, bias = w * out_scale[:, None], bias * out_scale
    b.linear(f"{name}.final", m.final, residual=residual, w=w, b=bias)


class ConvGroup:
    """Sibling modules Conv2d [+ BatchNorm2d] [+ activation] of a Sequential, lowered as one layer."""

    def __init__(self, conv, bn=None, act=None):
        self.conv, self.bn, self.act = conv, bn, act


class SwiftFormerHead:
    """SwiftFormer's final BatchNorm, average pool and the mean of its two classifier heads."""

    def __init__(self, norm, head, head_dist):
        self.norm, self.head, self.head_dist = norm, head, head_dist


def _conv_group(b: _Builder, name, m: ConvGroup) -> None:
    b.conv(name, m.conv, m.bn, _act(m.act))


def _layer_scale(module):
    return _np(module.gamma).ravel() if type(module).__name__ in ("LayerScale2d", "LayerScale") else None


def _conv_encoder(b: _Builder, name, m) -> None:
    """SwiftFormer's ConvEncoder and LocalRepresentation: dwconv, BN, 1x1, GELU, 1x1, layer scale, residual."""
    if not _identity(m.drop_path):
        raise Unsupported("drop path")
    skip = b.cur
    b.conv(f"{name}.dwconv", m.dwconv, m.norm)
    b.conv(f"{name}.pwconv1", m.pwconv1, act=_act(m.act))
    b.conv(f"{name}.pwconv2", m.pwconv2, residual=skip, out_scale=_layer_scale(m.layer_scale))


def _swiftformer_block(b: _Builder, name, m) -> None:
    if not _identity(m.drop_path, m.linear.drop):
        raise Unsupported("drop path")
    _conv_encoder(b, f"{name}.local_representation", m.local_representation)
    x = b.cur
    _additive_attention(b, f"{name}.attn", m.attn, _layer_scale(m.layer_scale_1), residual=x)
    x = b.cur
    mlp = m.linear
    b.conv(f"{name}.linear.fc1", mlp.fc1, act=_act(mlp.act), in_bn=mlp.norm1)
    b.conv(f"{name}.linear.fc2", mlp.fc2, residual=x, out_scale=_layer_scale(m.layer_scale_2))


def _embedding(b: _Builder, name, m) -> None:
    b.conv(f"{name}.proj", m.proj, m.norm)


def _swiftformer_head(b: _Builder, name, m: SwiftFormerHead) -> None:
    scale, shift = _bn_affine(m.norm)   # BN commutes with the average pool, so it folds into the heads
    w = (_np(m.head.weight) + _np(m.head_dist.weight)) / 2
    bias = (_np(m.head.bias) + _np(m.head_dist.bias)) / 2 + w @ shift
    b.cur = b.add("avgpool", f"{name}.global_pool", [b.cur], (1, b.shapes[b.cur][-1]))
    b.linear(f"{name}.head", m.head, w=w * scale[None, :], b=bias)


HANDLERS = {"ConvNormAct": _conv_norm_act, "Conv2d": _conv_norm_act, "BottleneckBlock": _bottleneck,
            "MobileVitBlock": _mobilevit_block, "MobileVitV2Block": _mobilevit_v2_block, "Block": _vit_block, "ClassifierHead": _head,
            "Pooling": _pool_mixer, "EfficientAdditiveAttention": _additive_attention, "ConvGroup": _conv_group,
            "ConvEncoder": _conv_encoder, "LocalRepresentation": _conv_encoder, "Embedding": _embedding,
            "SwiftFormerHead": _swiftformer_head, "MetaBlock2d": _meta_block_2d, "Downsample": _downsample}
HANDLERS["TaskModel"] = lower_task_model   # MoE-ViT task builds (models/moe_vit.py)
# Block is both timm's vision-transformer block and SwiftFormer's; tell them apart by their module.
BLOCKS = {"timm.models.swiftformer": _swiftformer_block}


def _handler(module):
    if type(module).__name__ == "Block" and type(module).__module__ in BLOCKS:
        return BLOCKS[type(module).__module__]
    return HANDLERS.get(type(module).__name__)


def _sequence(model, prefix=""):
    """The modules of ``model`` in execution order, as (name, module) pairs."""
    import torch.nn as nn

    kind = type(model).__name__
    if _handler(model) is not None:
        return [(prefix or kind, model)]
    if kind == "ByobNet":
        parts = [("stem", model.stem), ("stages", model.stages), ("final_conv", model.final_conv),
                 ("head", model.head)]
    elif kind == "SwiftFormer" and model.global_pool == "avg":
        parts = [("stem", model.stem), ("stages", model.stages),
                 ("norm+head", SwiftFormerHead(model.norm, model.head, model.head_dist))]
    elif kind == "EfficientFormer":
        parts = [("stem", model.stem), ("stages", model.stages), ("norm", model.norm), ("head", model.head),
                 ("head_dist", model.head_dist)]
    elif kind in ("Stage", "EfficientFormerStage"):
        parts = [("downsample", model.downsample), ("blocks", model.blocks)]
    elif isinstance(model, nn.Sequential):
        return _group_convs([(n, m) for n, m in (
            x for sub, mod in model.named_children() for x in _sequence(mod, f"{prefix}.{sub}" if prefix else sub))])
    else:
        return [(prefix or kind, model)]
    out = []
    for sub, mod in parts:
        out += _sequence(mod, f"{prefix}.{sub}" if prefix else sub)
    return [(n, m) for n, m in out if type(m).__name__ != "Identity"]


def _group_convs(seq):
    """Merge Conv2d, BatchNorm2d, activation siblings into one :class:`ConvGroup`; drop Identity modules."""
    seq = [(n, m) for n, m in seq if type(m).__name__ != "Identity"]
    out, k = [], 0
    while k < len(seq):
        name, m = seq[k]
        if type(m).__name__ == "Conv2d":
            bn = act = None
            if k + 1 < len(seq) and type(seq[k + 1][1]).__name__ == "BatchNorm2d":
                k, bn = k + 1, seq[k + 1][1]
            if k + 1 < len(seq) and type(seq[k + 1][1]).__name__ in ACT_NAMES:
                k, act = k + 1, seq[k + 1][1]
            m = ConvGroup(m, bn, act)
        out.append((name, m))
        k += 1
    return out


def lower(model, input_shape) -> Program:
    """Lower ``model`` (eval mode) for an NCHW ``input_shape`` of batch 1, or a token input ``(G, N, C)``.

    Raises
    ------
    ModelImportError
        If not even the first module can run on the accelerator.
    """
    shape = tuple(input_shape)
    if len(shape) == 4:
        if shape[0] != 1:
            raise ModelImportError(f"the accelerator runs batch 1; got input shape {shape}")
        shape = (shape[2], shape[3], shape[1])
    b = _Builder(shape)
    seq = _sequence(model)
    for k, (name, module) in enumerate(seq):
        handler = _handler(module)
        mark = (len(b.layers), dict(b.shapes), b.cur)
        try:
            if handler is None:
                raise Unsupported(type(module).__name__)
            handler(b, name, module)
        except Unsupported as why:
            b.layers, b.shapes, b.cur = b.layers[:mark[0]], mark[1], mark[2]
            cpu = [f"{n} ({type(m).__name__}{': ' + str(why) if i == 0 else ''})" for i, (n, m) in enumerate(seq[k:])]
            break
    else:
        cpu = []
    if not b.layers:
        raise ModelImportError(f"no part of the model runs on the accelerator; first module: {cpu[0]}")
    used = {"input"} | {t for l in b.layers for t in l.inputs} | {l.output for l in b.layers}
    return Program("input", {k: v for k, v in b.shapes.items() if k in used}, b.layers, cpu_layers=cpu)


def to_accel_layout(x: np.ndarray) -> np.ndarray:
    """NCHW batch-1 image to the accelerator's [H, W, C]; token tensors pass through."""
    x = np.asarray(x, np.float64)
    return x[0].transpose(1, 2, 0) if x.ndim == 4 else x
