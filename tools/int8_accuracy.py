"""Fashion-MNIST top-1 of trained models in fp32 and in int8 (QDQ), with onnxruntime and edgevit's int8 build.

    python tools/int8_accuracy.py [--models fashion-mobilevit,...] [--images 10000] [--per-channel] [--keep-float N]

The models are the registry's Fashion-MNIST-trained ones (``edgevit.zoo.fashion_models.FASHION_MODELS``): one per
zoo family at reduced width (timm's MobileViT v1, EfficientFormer and SwiftFormer classes) and a plain ViT, trained
once and cached. Each is exported to ONNX, quantized with
``edgevit.quantize`` (MinMax ranges over 128 training images), and scored on the first ``--images`` test images:
fp32 with onnxruntime, int8 with onnxruntime (the QDQ reference) and int8 with edgevit's host build (one image
per call, as deployed). ``--keep-float N`` keeps each model's N worst-quantizing nodes in float (as
``edgevit quantize --keep-float``). Writes results/int8_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TVM_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edgevit.compiler import compile_for_target  # noqa: E402
from edgevit.datasets import fashion_mnist  # noqa: E402
from edgevit.frontend import from_torch  # noqa: E402
from edgevit.quantize import QuantizeSettings, quantize_cached  # noqa: E402
from edgevit.reference import onnxruntime_session  # noqa: E402
from edgevit.runtime.artifact import Artifact  # noqa: E402
from edgevit.runtime.tvm_runtime import CompiledModel  # noqa: E402
from edgevit.tables import format_table  # noqa: E402
from edgevit.targets import get_target  # noqa: E402
from edgevit.zoo.fashion_models import FASHION_MODELS, train_full  # noqa: E402

MODELS = "fashion-mobilevit,fashion-efficientformer,fashion-swiftformer,fashion-vit"


def predictions(run, x: np.ndarray) -> np.ndarray:
    """Class of each image, one image per call."""
    return np.array([int(np.argmax(run(img[None])[0])) for img in x])


def score(name: str, x: np.ndarray, y: np.ndarray, per_channel: bool, tmp: Path, keep_float: int = 0) -> dict:
    arch, cfg = FASHION_MODELS[name]
    trained = train_full(arch, cfg)
    fp32 = from_torch(trained, (1, arch.channels, arch.image, arch.image), name=name)
    int8 = quantize_cached(fp32, QuantizeSettings("fashion-mnist", 128, per_channel, keep_float=keep_float))
    sessions = {kind: onnxruntime_session(m.onnx_path) for kind, m in (("fp32", fp32), ("int8", int8))}
    ort = {kind: predictions(lambda a, s=s: s.run(None, {s.get_inputs()[0].name: a}), x)
           for kind, s in sessions.items()}
    compile_for_target(int8, get_target("host"), tmp / f"{name}.tar", command="tools/int8_accuracy.py")
    with Artifact.open(tmp / f"{name}.tar") as artifact:
        model = CompiledModel(artifact.library)
        edgevit = predictions(lambda a: model([a]), x)
    return {"model": name, "params": sum(p.numel() for p in trained.parameters()), "images": len(y),
            "quantization": int8.extra["quantization"],
            "top1_fp32_onnxruntime": float(np.mean(ort["fp32"] == y)),
            "top1_int8_onnxruntime": float(np.mean(ort["int8"] == y)),
            "top1_int8_edgevit": float(np.mean(edgevit == y)),
            "int8_edgevit_agrees_with_onnxruntime": float(np.mean(edgevit == ort["int8"]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--keep-float", type=int, default=0, metavar="N")
    parser.add_argument("--out", default="results/int8_accuracy")
    args = parser.parse_args()
    x, y = fashion_mnist("test", limit=args.images)
    with tempfile.TemporaryDirectory(prefix="edgevit-int8-acc-") as tmp:
        rows = [score(name, x, y, args.per_channel, Path(tmp), args.keep_float) for name in args.models.split(",")]
    command = " ".join(["python", *sys.argv])
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    table = format_table([[r["model"], f"{r['params']:,}", r["images"], f"{100 * r['top1_fp32_onnxruntime']:.2f}",
                           f"{100 * r['top1_int8_onnxruntime']:.2f}", f"{100 * r['top1_int8_edgevit']:.2f}",
                           f"{100 * (r['top1_int8_edgevit'] - r['top1_fp32_onnxruntime']):+.2f}",
                           f"{100 * r['int8_edgevit_agrees_with_onnxruntime']:.2f}"] for r in rows],
                         ["model", "params", "test images", "fp32 % (ORT)", "int8 % (ORT)", "int8 % (edgevit)",
                          "int8 - fp32 (points)", "edgevit = ORT int8 (%)"])
    text = (f"# Fashion-MNIST top-1, fp32 vs int8\n\nCommand: `{command}`. int8: onnxruntime quantize_static QDQ, "
            f"{'per-channel' if args.per_channel else 'per-tensor'} weights, MinMax over 128 training images"
            f"{f', the {args.keep_float} worst-quantizing nodes kept in float' if args.keep_float else ''}; "
            "edgevit's int8 build for the host, one image per call.\n\n" + table + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
