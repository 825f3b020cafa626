"""Convert zoo models to .tflite with litert-torch, for LiteRT as a peer in ``edgevit bench``.

Runs in the converter venv that tools/setup_litert.sh makes (not in edgevit's venv), with the checkout on
PYTHONPATH. Weights come from ``edgevit.zoo.build`` (same seed, torch and timm as edgevit's build); each
conversion is checked against torch on a seeded input before it is kept.

usage: convert_litert.py [MODEL ...]   (default: every zoo model)
"""

import sys
import time

import numpy as np
import timm
import torch

from edgevit import zoo
from edgevit.litert import tflite_path

RTOL = 1e-4  # XNNPACK reorders float sums; edgevit's own numerics are checked against onnxruntime at 1e-5


def broadcast_instead_of_expand() -> None:
    """MobileViTv2's attention: multiply by the context vector by broadcasting, not ``expand_as``.

    litert-torch 0.10.0 lowers ``relu(value) * context.expand_as(value)`` to a ``tfl.mul`` with shapes it then
    rejects ("operands don't have broadcast-compatible shapes"). Safe: ``expand_as`` followed by an elementwise
    product is the broadcast product; the same weights, the same arithmetic (checked against torch below).
    """
    import torch.nn.functional as F
    from timm.models.mobilevit import LinearSelfAttention

    def self_attention(self, x):
        query, key, value = self.qkv_proj(x).split([1, self.embed_dim, self.embed_dim], dim=1)
        context = (key * self.attn_drop(F.softmax(query, dim=-1))).sum(dim=-1, keepdim=True)
        return self.out_drop(self.out_proj(F.relu(value) * context))

    LinearSelfAttention._forward_self_attn = self_attention


def convert(name: str) -> None:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    path = tflite_path(name, timm.__version__, torch.__version__)
    if path.exists():
        print(f"[convert_litert] {name}: {path} exists", file=sys.stderr)
        return
    model = zoo.build(name)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(zoo.get_entry(name).input_shape, np.float32))
    start = time.monotonic()
    partial = path.with_suffix(".partial")
    try:
        litert_torch.convert(model, (x,)).export(str(partial))
        with torch.no_grad():
            expected = model(x).numpy()
        interpreter = Interpreter(model_path=str(partial))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        rel = float(np.abs(got - expected).max() / np.abs(expected).max())
        if rel > RTOL or got.argmax() != expected.argmax():
            raise ValueError(f"LiteRT output differs from torch (max rel error {rel:.2g}); not kept")
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    print(f"[convert_litert] {name}: {path} ({time.monotonic() - start:.0f} s, max rel error vs torch {rel:.1g})",
          file=sys.stderr)


if __name__ == "__main__":
    broadcast_instead_of_expand()
    failed = []
    for model_name in sys.argv[1:] or list(zoo.ZOO):
        try:
            convert(model_name)
        except Exception as exc:  # one model litert-torch cannot convert should not stop the others
            print(f"[convert_litert] {model_name}: FAILED: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
            failed.append(model_name)
    if failed:
        sys.exit(f"[convert_litert] not converted: {', '.join(failed)} (the bench shows no LiteRT time for them)")
