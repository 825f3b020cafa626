"""The numeric reference for builds of ``.tflite`` files: LiteRT (``ai_edge_litert``) running the same file.

A float model is checked by the float rule (``reference.compare``: relative error within ``rtol``, top-1
agreeing). There is no float64 arbitration: nothing evaluates a TFLite model in float64. A fully-int8 model
is checked by the int8 rule (``quantize.compare_int8``), counted in output quantization steps: LiteRT's integer
kernels requantize with fixed-point multipliers and compute LOGISTIC/SOFTMAX/RSQRT with tables or fixed-point
arithmetic, where edgevit computes those operators in float32 between the same quantize steps, so values near a half step can round the
other way (limits and measurements in docs/int8.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .errors import ModelImportError

TFLITE_MAX_STEPS = 4


def run_litert(path: Path, inputs: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of LiteRT for ``inputs`` given in the model's input order, computed in a process of its own.

    LiteRT's C++ parser trusts parts of the file: a damaged .tflite can crash it (a segmentation fault was seen
    with two bytes changed in a small int8 model), so it never runs inside edgevit's process.

    Raises
    ------
    ModelImportError
        LiteRT is missing, cannot load, resize or run the model, or crashed on it.
    """
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from .settings import PACKAGE_PARENT

    with tempfile.TemporaryDirectory(prefix="edgevit-litert-") as tmp:
        given, results = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(given, *inputs)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                          os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-m", "edgevit.reference_litert", str(path), str(given),
                               str(results), str(threads)], capture_output=True, text=True, env=env)
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else ""
            raise ModelImportError(f"LiteRT crashed ({name or f'signal {-proc.returncode}'}) running the reference "
                                   f"model {Path(path).name}: the file is damaged or LiteRT cannot take it")
        if proc.returncode != 0:
            lines = proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or ["no message"]
            raise ModelImportError(lines[-1])
        with np.load(results, allow_pickle=False) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]


def _run_here(path: Path, inputs: list[np.ndarray], threads: int) -> list[np.ndarray]:
    """LiteRT in this process (the worker's side of :func:`run_litert`)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelImportError("verifying a .tflite build needs LiteRT: pip install ai-edge-litert==2.3.0") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        details = interpreter.get_input_details()
        for d, x in zip(details, inputs, strict=True):
            if tuple(d["shape"]) != x.shape:   # a dynamic input, built for the shape given at compile time
                interpreter.resize_tensor_input(d["index"], list(x.shape))
        interpreter.allocate_tensors()
        for d, x in zip(details, inputs):
            interpreter.set_tensor(d["index"], x)
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()]
    except (ValueError, RuntimeError) as exc:  # what LiteRT raises for a model or input it cannot take
        raise ModelImportError(f"LiteRT cannot run the reference model: {str(exc).strip().splitlines()[0]}") from None


def main(argv: list[str]) -> int:
    """``python -m edgevit.reference_litert MODEL INPUTS.npz OUTPUTS.npz THREADS``: one LiteRT run; an error is
    printed as the last line of stdout, exit code 4."""
    import sys

    path, given, results, threads = argv
    try:
        with np.load(given, allow_pickle=False) as data:
            inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        np.savez(results, *_run_here(Path(path), inputs, int(threads)))
    except ModelImportError as exc:
        print(exc, flush=True)
        return exc.exit_code
    sys.stdout.flush()
    return 0


@functools.lru_cache(maxsize=8)
def _int8_steps(path: str, mtime_ns: int) -> tuple | None:
    """The output steps of a fully-int8 .tflite, or None for a float model (read once per file version)."""
    from .frontend_tflite import is_quantized, output_steps, read_tflite

    _, model = read_tflite(Path(path))
    if not is_quantized(model):
        return None
    steps = output_steps(model)
    return tuple(steps) if any(s is not None for s in steps) else None


def verify_tflite(outputs: list[np.ndarray], path: Path, inputs: list[np.ndarray], rtol: float,
                  reference: list[np.ndarray] | None = None):
    """``--verify`` for an artifact built from a ``.tflite`` file: compare with LiteRT on the same file.

    Parameters
    ----------
    outputs
        edgevit's outputs for ``inputs``.
    path
        The artifact's ``reference.tflite``.
    rtol
        The float rule's tolerance (not used by the int8 rule).
    reference
        LiteRT's outputs on ``inputs`` if the caller has them already.

    Returns
    -------
    reference.Comparison or quantize.verify.Int8Comparison
    """
    from .quantize import compare_int8
    from .reference import compare

    if reference is None:
        reference = run_litert(path, inputs)
    steps = _int8_steps(str(path), Path(path).stat().st_mtime_ns)
    if steps is not None:
        return compare_int8(outputs, reference, list(steps), TFLITE_MAX_STEPS)
    return compare(outputs, reference, rtol)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
