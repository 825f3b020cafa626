"""Run a verified, extracted artifact on this machine: the board-side entry point.

On a board (or under qemu here)::

    python -m edgevit.runtime.runner ARTIFACT_DIR --inputs in.npz --outputs out.npz [--repeat N]

prints one JSON line with the run's timings. Exit codes are those of ``edgevit.errors``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, EdgevitError, ExecutionError, InputError, ResourceError
from . import host_arch
from .artifact import Artifact
from .memory import format_bytes, meminfo


def check_inputs(metadata: dict, inputs: list[np.ndarray]) -> None:
    """Raise ``InputError`` unless ``inputs`` match the artifact's input count, shapes and dtypes."""
    specs = metadata["inputs"]
    if len(inputs) != len(specs):
        raise InputError(f"model takes {len(specs)} input(s) ({', '.join(s['name'] for s in specs)}), "
                         f"got {len(inputs)}")
    for spec, x in zip(specs, inputs):
        if not isinstance(x, np.ndarray):
            raise InputError(f"input '{spec['name']}' must be an array, got {type(x).__name__}")
        if tuple(x.shape) != tuple(spec["shape"]) or str(x.dtype) != spec["dtype"]:
            raise InputError(f"input '{spec['name']}' must be {spec['dtype']}{list(spec['shape'])}, "
                             f"got {x.dtype}{list(x.shape)}")


def check_memory(metadata: dict) -> None:
    """Refuse to allocate inputs and outputs larger than this machine's available memory.

    Raises
    ------
    ResourceError
        With the size the metadata asks for and the memory available.
    """
    need = sum(int(np.prod(t["shape"], dtype=np.float64)) * np.dtype(t["dtype"]).itemsize
               for t in [*metadata["inputs"], *metadata["outputs"]])
    available = meminfo("MemAvailable")
    if available is not None and need > available:
        raise ResourceError(f"the artifact's inputs and outputs alone take {format_bytes(need)}, more than the "
                            f"{format_bytes(available)} available here")


def check_arch(metadata: dict) -> None:
    """Refuse an artifact built for another architecture than this machine's."""
    arch, here = metadata["target"]["arch"], host_arch()
    if arch != here:
        raise ArtifactError(f"artifact was built for {arch} (target '{metadata['target']['name']}') and cannot "
                            f"run on this {here} machine")


def run_artifact(artifact: Artifact, inputs: list[np.ndarray], repeat: int = 1) -> tuple[list[np.ndarray], list[float]]:
    """Execute an opened artifact ``repeat`` times on this machine's CPU.

    Returns
    -------
    outputs, seconds
        The outputs of the last run and the wall time of each run.
    """
    from .tvm_runtime import CompiledModel

    check_arch(artifact.metadata)
    check_inputs(artifact.metadata, inputs)
    try:
        model = CompiledModel(artifact.library)
    except Exception as exc:  # TVM raises its own error types for a library it cannot load
        raise ArtifactError(f"cannot load the artifact's library: {_last_line(exc)}") from exc
    seconds, outputs = [], []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        try:
            outputs = model(inputs)
        except Exception as exc:  # e.g. metadata edited to shapes the library was not built for
            raise ExecutionError(f"the compiled model failed: {_last_line(exc)}") from exc
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def _last_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.runtime.runner", description=__doc__.splitlines()[0])
    parser.add_argument("artifact_dir", type=Path, help="an extracted artifact folder")
    parser.add_argument("--inputs", type=Path, required=True, help=".npz with arrays in input order (arr_0, ...)")
    parser.add_argument("--outputs", type=Path, required=True, help=".npz to write the outputs to")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        artifact = Artifact.from_dir(args.artifact_dir)
        try:
            with np.load(args.inputs, allow_pickle=False) as data:
                inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"cannot read inputs {args.inputs}: an .npz of arr_0, arr_1... ({exc})") from None
        outputs, seconds = run_artifact(artifact, inputs, args.repeat)
        try:
            np.savez(args.outputs, *outputs)
        except OSError as exc:
            raise ExecutionError(f"cannot write outputs {args.outputs}: {exc}") from None
    except EdgevitError as exc:
        print(json.dumps({"error": str(exc), "kind": type(exc).__name__}))
        return exc.exit_code
    print(json.dumps({"seconds": seconds, "arch": host_arch()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
