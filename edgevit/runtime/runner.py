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

from ..errors import ArtifactError, EdgevitError, InputError
from . import host_arch
from .artifact import Artifact


def check_inputs(metadata: dict, inputs: list[np.ndarray]) -> None:
    """Raise ``InputError`` unless ``inputs`` match the artifact's input count, shapes and dtypes."""
    specs = metadata["inputs"]
    if len(inputs) != len(specs):
        raise InputError(f"model takes {len(specs)} input(s) ({', '.join(s['name'] for s in specs)}), "
                         f"got {len(inputs)}")
    for spec, x in zip(specs, inputs):
        if tuple(x.shape) != tuple(spec["shape"]) or str(x.dtype) != spec["dtype"]:
            raise InputError(f"input '{spec['name']}' must be {spec['dtype']}{list(spec['shape'])}, "
                             f"got {x.dtype}{list(x.shape)}")


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
    model = CompiledModel(artifact.library)
    seconds, outputs = [], []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        outputs = model(inputs)
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.runtime.runner", description=__doc__.splitlines()[0])
    parser.add_argument("artifact_dir", type=Path, help="an extracted artifact folder")
    parser.add_argument("--inputs", type=Path, required=True, help=".npz with arrays in input order (arr_0, ...)")
    parser.add_argument("--outputs", type=Path, required=True, help=".npz to write the outputs to")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        artifact = Artifact.from_dir(args.artifact_dir)
        with np.load(args.inputs) as data:
            inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        outputs, seconds = run_artifact(artifact, inputs, args.repeat)
        np.savez(args.outputs, *outputs)
    except EdgevitError as exc:
        print(json.dumps({"error": str(exc), "kind": type(exc).__name__}))
        return exc.exit_code
    print(json.dumps({"seconds": seconds, "arch": host_arch()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
