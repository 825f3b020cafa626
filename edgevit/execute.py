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
    # reference.Comparison; quantize.groups.Int8Verification for a QDQ build; quantize.verify.Int8Comparison for
    # an int8 .tflite build (against LiteRT)
    comparison: object | None = None
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
    architecture, else under qemu) and, with ``verify``, compare with its reference model's engine: onnxruntime
    (a float build within ``rtol``; an int8 QDQ build group by group, :func:`verify_int8_groups`), or LiteRT for a
    build from a ``.tflite`` file."""
    from .frontend import TensorSpec
    from .quantize import Int8Comparison
    from .reference import verify as compare_with_reference
    from .runtime.artifact import Artifact
    from .runtime.runner import check_inputs, check_memory
    from .settings import seed

    with Artifact.open(Path(artifact_path)) as artifact:
        meta = artifact.metadata
        check_memory(meta)
        specs = [TensorSpec.from_json(s) for s in meta["inputs"]]
        inputs = load_inputs(input_paths, specs, seed())
        check_inputs(meta, inputs)
        outputs, seconds, device = _execute(artifact, inputs, device, repeat)
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
    if isinstance(comparison, Int8Comparison) and engine == "onnxruntime":   # a QDQ build: judged group by group
        comparison = verify_int8_groups(Path(artifact_path), inputs, outputs, comparison, device)
    return RunResult(meta["model"]["name"], meta["target"]["name"], device, outputs, seconds, comparison, engine)


def _execute(artifact, inputs: list[np.ndarray], device: str, repeat: int) -> tuple[list, list, str]:
    """Run an open artifact; returns outputs, seconds and where it ran ("local" or "qemu-<arch>")."""
    from . import emulation
    from .runtime import host_arch
    from .runtime.runner import run_artifact

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
        return outputs, seconds, f"qemu-{artifact.arch}"
    outputs, seconds = run_artifact(artifact, inputs, repeat)
    return outputs, seconds, device


def verify_int8_groups(artifact_path: Path, inputs: list[np.ndarray], outputs: list[np.ndarray], end_to_end,
                       device: str = "auto"):
    """The int8 rule of ``--verify`` for an artifact built from a QDQ model (docs/int8.md).

    A *probe* build of the artifact's reference that also outputs every activation QuantizeLinear's tensor
    (built once per artifact for its target, cached under ``int8-probe``) runs on ``inputs`` on the same device;
    onnxruntime then computes every QDQ group from the probe's int8 tensors (:mod:`edgevit.quantize.groups`).

    Parameters
    ----------
    artifact_path
        The int8 artifact (its reference is the QDQ ONNX model).
    inputs, outputs
        The inputs the artifact ran on and its outputs (the probe must reproduce them bit for bit).
    end_to_end
        ``quantize.verify.Int8Comparison`` of ``outputs`` against onnxruntime's (reported, not judged).
    device
        Where the artifact ran ("auto", "local", "qemu" or ``RunResult.device``): the probe runs there too.

    Returns
    -------
    quantize.groups.Int8Verification
    """
    from .runtime.artifact import Artifact, sha256_file

    with Artifact.open(Path(artifact_path)) as artifact:
        meta = artifact.metadata
        return verify_int8_reference(artifact.reference, meta["target"]["name"], inputs, outputs, end_to_end, device,
                                     build=sha256_file(artifact.library), name=meta["model"]["name"])


def verify_int8_reference(reference: Path, target: str, inputs: list[np.ndarray], outputs: list[np.ndarray],
                          end_to_end, device: str = "auto", build: str | None = None, name: str | None = None):
    """The int8 rule for outputs computed from the QDQ model ``reference`` by builds for ``target`` (the stages
    of a distributed plan, or one artifact: :func:`verify_int8_groups`).

    The probe is compiled from ``reference`` for ``target`` once, cached by the reference's sha256, ``target``
    and ``build`` (the artifact library's sha256; without one, edgevit's version), and run on ``device``
    (``name`` says which model it is in the build message).
    ``outputs`` must equal the probe's own outputs bit for bit, else the groups checked are not the ones that
    computed them (``probe_differs``).

    Returns
    -------
    quantize.groups.Int8Verification
    """
    from .quantize.groups import Int8Verification, check_groups

    model, probed, tensors = probe_int8(reference, target, inputs, device, build, name)
    differs = sum(int(np.count_nonzero(a != b)) if a.shape == b.shape else a.size
                  for a, b in zip(probed[:len(outputs)], outputs))
    return Int8Verification(end_to_end, check_groups(model, inputs, tensors), differs)


def probe_int8(reference: Path, target: str, inputs: list[np.ndarray], device: str = "auto",
               build: str | None = None, name: str | None = None) -> tuple[object, list[np.ndarray], dict]:
    """Run the probe of the QDQ model ``reference`` built for ``target`` (cached as in
    :func:`verify_int8_reference`) on ``inputs`` on ``device``.

    Returns
    -------
    model, outputs, tensors
        The reference (``onnx.ModelProto``), the probe's outputs (the model's own first) and every activation
        QuantizeLinear's int8 tensor by name.
    """
    import onnx

    from . import __version__
    from .quantize.groups import probe_model, probe_tensors
    from .runtime.artifact import Artifact, sha256_file

    model = onnx.load(str(reference))
    probe, layout = probe_model(model)
    key = f"{sha256_file(reference)} {build or 'edgevit-' + __version__} {target}"
    with Artifact.open(_int8_probe(probe, key, target, name or Path(reference).name)) as built:
        probed = _execute(built, inputs, "qemu" if device.startswith("qemu") else device, 1)[0]
    return model, probed, probe_tensors(probed, layout)


def _int8_probe(probe, key: str, target: str, name: str) -> Path:
    """The probe build (``probe``: a QDQ model with every quantized tensor as an output) for ``target``,
    compiled once per ``key`` and cached."""
    import hashlib

    import onnx

    from .compiler import compile_for_target
    from .frontend import from_onnx_file
    from .settings import cache_dir
    from .targets import get_target

    folder = cache_dir("int8-probe", hashlib.sha256(f"probe 4 {key}".encode()).hexdigest()[:16])
    built = folder / "probe.tar"
    if not built.exists():
        print(f"[edgevit] building the int8 probe of {name} for {target} (every quantized tensor as an output; "
              f"once, cached in {folder})", file=sys.stderr, flush=True)
        onnx.save(probe, str(folder / "probe.onnx"))
        compile_for_target(from_onnx_file(folder / "probe.onnx"), get_target(target), folder / "probe.part.tar",
                           command=f"int8 probe of {name}")
        (folder / "probe.part.tar").rename(built)
    return built


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
