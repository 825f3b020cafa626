"""Lower one task's build of a multi-task MoE-ViT (``models/moe_vit.py``, ``TaskModel``) to an accelerator program.

Patch embedding -> im2col + linear; position embedding -> ``add`` of a parameter tensor; attention blocks as
timm's (LayerNorm, QKV with the score scale folded into Q, attention, projection + residual); a dense MLP as two
linears; an MoE MLP as LayerNorm, the gate logits (a linear on the shared unit; a task-static gate is a constant
bias: the log of its weights, whose softmax gives them back), ``moe_route`` (top-k + softmax), ``moe_experts``
(only the task's experts, patches reordered per expert) and an ``add`` for the residual; then LayerNorm, mean
pool and the task's head. Tokens are ``[1, N, D]`` (one attention group).
"""

from __future__ import annotations

import numpy as np

from .import_common import Unsupported, _act, _np


def lower_task_model(b, name: str, m, reorder: bool = True) -> None:
    """The ``torch_import`` handler for ``TaskModel``: appends its layers to the builder ``b``."""
    conv = m.patch_embed
    p = conv.kernel_size[0]
    if conv.stride[0] != p or conv.padding not in ((0, 0), 0) or conv.kernel_size[1] != p:
        raise Unsupported("patch embedding other than a non-overlapping p x p convolution")
    h, w, c = b.shapes[b.cur]
    n, d = (h // p) * (w // p), conv.out_channels
    b.cur = b.add("im2col", f"{name}.patch_embed", [b.cur], (1, n, p * p * c), {"k": p, "stride": p, "pad": 0})
    b.linear(f"{name}.patch_embed", conv, w=_np(conv.weight).transpose(0, 2, 3, 1).reshape(d, -1))
    b.cur = b.add("add", f"{name}.pos_embed", [b.cur], (1, n, d), {}, {"pos": _np(m.pos_embed).reshape(n, d)})
    for k, block in enumerate(m.blocks):
        _block(b, f"{name}.blocks.{k}", block, reorder)
    b.layernorm(f"{name}.norm", m.norm)
    b.cur = b.add("avgpool", f"{name}.pool", [b.cur], (1, d))
    b.linear(f"{name}.head", m.head)


def _block(b, name: str, m, reorder: bool) -> None:
    _, n, d = b.shapes[b.cur]
    x0 = b.cur
    attn = m.attn
    b.layernorm(f"{name}.norm1", m.norm1)
    w, bias = _np(attn.qkv.weight), _np(attn.qkv.bias)
    w[:d] *= attn.scale          # score scaling folded into the Q projection
    bias[:d] *= attn.scale
    b.linear(f"{name}.attn.qkv", attn.qkv, w=w, b=bias)
    b.cur = b.add("attention", f"{name}.attn", [b.cur], (1, n, d), {"heads": attn.heads, "groups": 1, "n": n})
    b.linear(f"{name}.attn.proj", attn.proj, residual=x0)
    x1 = b.cur
    b.layernorm(f"{name}.norm2", m.norm2)
    mlp = m.mlp
    if type(mlp).__name__ == "Mlp":
        b.linear(f"{name}.mlp.fc1", mlp.fc1, act=_act(mlp.act))
        b.linear(f"{name}.mlp.fc2", mlp.fc2, residual=x1)
        return
    if type(mlp).__name__ != "TaskMoE":
        raise Unsupported(f"block MLP {type(mlp).__name__}")
    _moe(b, f"{name}.mlp", mlp, reorder)
    b.cur = b.add("add", f"{name}.residual", [b.cur, x1], (1, n, d))


def _moe(b, name: str, m, reorder: bool) -> None:
    tokens = b.cur
    _, n, d = b.shapes[tokens]
    experts = list(m.experts)
    if m.router is not None:
        b.linear(f"{name}.gate", m.router)
    else:
        gate_b = np.log(_np(m.static_weights))
        b.linear(f"{name}.gate", None, w=np.zeros((len(experts), d)), b=gate_b)
    b.cur = b.add("moe_route", f"{name}.route", [b.cur], (n, m.top_k, 2), {"k": m.top_k})
    acts = {_act(e.act) for e in experts}
    if len(acts) != 1:
        raise Unsupported("experts with different activations")
    params = {key: np.stack([_np(getattr(getattr(e, fc), part)) for e in experts])
              for key, fc, part in (("w1", "fc1", "weight"), ("b1", "fc1", "bias"),
                                    ("w2", "fc2", "weight"), ("b2", "fc2", "bias"))}
    b.cur = b.add("moe_experts", f"{name}.experts", [tokens, b.cur], (1, n, d),
                  {"k": m.top_k, "act": acts.pop(), "reorder": int(reorder), "expert_ids": list(m.expert_ids)},
                  params)
