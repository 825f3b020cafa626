"""Run a compiled artifact on this machine or under qemu, optionally checked against onnxruntime: what
``edgevit run`` does, as a library (the CLI only parses options and prints)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ArtifactError, InputError, VerificationError


@dataclass
class RunResult:
    """One ``run``: the outputs of the last repetition, wall times, and the comparison if ``verify`` was asked."""

    model: str
    target: str
    device: str                      # "local" or "qemu-<arch>"
    outputs: list[np.ndarray]
    seconds: list[float]
    comparison: object | None = None  # reference.Comparison or the int8 rule's result
    reference_engine: str = "onnxruntime"  # what ``comparison`` compared with (LiteRT for .tflite builds)

    def to_json(self, artifact: str) -> dict:
        """The ``--json`` report."""
        result = {"artifact": artifact, "model": self.model, "target": self.target, "device": self.device,
                  "outputs": [{"shape": list(o.shape), "dtype": str(o.dtype)} for o in self.outputs],
                  "seconds": self.seconds}
        if self.outputs and self.outputs[0].ndim == 2:
            result["top5"] = np.argsort(-self.outputs[0][0])[:5].tolist()
        if self.comparison is not None:
            result["verify"] = self.comparison.to_json()
        return result


def load_inputs(paths: list[str] | None, specs, seed: int) -> list[np.ndarray]:
    """One ``.npy`` file per model input, or seeded random inputs of the model's shapes when none are given.

    Raises
    ------
    InputError
        A directory, an unreadable file or an ``.npz`` archive.
    """
    from .reference import random_inputs

    if not paths:
        return random_inputs(specs, seed)
    from .arrays import load_npy

    arrays = []
    for path in paths:
        if Path(path).is_dir():
            raise InputError(f"input {path} is a directory: give one .npy file per model input")
        arrays.append(load_npy(path, "input", "give one .npy file per model input (-i a.npy -i b.npy)"))
    return arrays


def run(artifact_path: Path, input_paths: list[str] | None = None, device: str = "auto", repeat: int = 1,
        verify: bool = False, rtol: float | None = None) -> RunResult:
    """Run an artifact ``repeat`` times on ``device`` ("auto": here if it is built for this machine's
    architecture, else under qemu) and, with ``verify``, compare with onnxruntime on its reference model."""
    from . import emulation
    from .frontend import TensorSpec
    from .reference import verify as compare_with_reference
    from .runtime import host_arch
    from .runtime.artifact import Artifact
    from .runtime.runner import check_inputs, check_memory, run_artifact
    from .settings import seed

    with Artifact.open(Path(artifact_path)) as artifact:
        meta = artifact.metadata
        check_memory(meta)
        specs = [TensorSpec.from_json(s) for s in meta["inputs"]]
        inputs = load_inputs(input_paths, specs, seed())
        check_inputs(meta, inputs)
        if device == "auto":
            device = "local" if artifact.arch == host_arch() else "qemu"
        if device == "qemu":
            if artifact.arch == host_arch():
                raise ArtifactError(f"artifact is for {artifact.arch}, this machine's own architecture: "
                                    "run it with --device local")
            python = emulation.prepare(artifact.arch)
            print(f"[edgevit] running the {artifact.arch} build under {Path(python.qemu).name} "
                  "(emulated: for correctness, not speed)", file=sys.stderr)
            outputs, seconds = emulation.run_artifact(python, artifact.dir, inputs, repeat)
        else:
            outputs, seconds = run_artifact(artifact, inputs, repeat)
        comparison, engine = None, "onnxruntime"
        if verify:
            if artifact.reference is None:
                raise ArtifactError(f"{artifact_path} holds no reference model: --verify needs one")
            if artifact.reference.suffix == ".tflite":  # built from a .tflite file: LiteRT is its reference
                from .reference_litert import verify_tflite

                engine = "LiteRT"
                comparison = verify_tflite(outputs, artifact.reference, inputs, rtol)
            else:
                comparison = compare_with_reference(outputs, artifact.reference, inputs, rtol)
    return RunResult(meta["model"]["name"], meta["target"]["name"],
                     device if device == "local" else f"qemu-{artifact.arch}", outputs, seconds, comparison, engine)


def check_verified(comparison) -> None:
    """Raise :class:`VerificationError` (one line) if a ``verify`` comparison failed."""
    if comparison is None or comparison.ok:
        return
    if comparison.nonfinite:
        raise VerificationError(f"verification failed: {comparison.nonfinite}")
    if not hasattr(comparison, "rtol"):   # an int8 build, checked in output quantization steps
        raise VerificationError(f"verification failed (int8 rule): {comparison.summary()}")
    raise VerificationError(f"verification failed: max rel error {comparison.max_rel_error:.3g} > "
                            f"{comparison.rtol:g} or top-1 differs"
                            + (f"; {comparison.off} is off (float64 evaluation)" if comparison.off != "unknown"
                               else ""))
