"""``compile_for_target``: imported model -> TVM build for a board's CPU -> verified artifact."""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .backends import tvm_compiler
from .errors import EdgevitError, ModelImportError
from .frontend import ImportedModel, TensorSpec, check_operators
from .frontend_tflite import TfliteModel
from .memory_estimate import check_fits, refuse_over
from .outputs import check_output
from .runtime.artifact import write_artifact
from .targets import Target

LIBRARY = "model.so"
REFERENCE = "reference.onnx"
REFERENCE_TFLITE = "reference.tflite"   # a .tflite build is verified against LiteRT on the same file


def _say(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


def compile_for_target(model: ImportedModel | TfliteModel, target: Target, output: Path, command: str | None = None,
                       tuning_db: Path | None = None) -> dict:
    """Compile an imported model for a target's CPU and write a self-describing artifact.

    Parameters
    ----------
    model
        From ``edgevit.frontend`` (zoo name, ONNX file or torch module) or ``edgevit.frontend_tflite``.
    target
        From ``edgevit.targets.get_target``; must have a ``[cpu]`` section.
    output
        The artifact ``.tar`` to write.
    command
        The command line recorded in the metadata (defaults to this process's).
    tuning_db
        A database from ``edgevit tune`` for this target: its kernels replace the default schedules where
        they measured faster.

    Returns
    -------
    dict
        The artifact's metadata, plus ``timings`` (seconds per stage).

    Raises
    ------
    OutputError
        ``output`` is a directory, the model file itself, or not writable.
    ModelImportError
        An operator edgevit cannot build (named with its node), or TVM failing to build the model.
    ResourceError
        The model's estimated memory exceeds the target's.
    """
    cpu = target.require_cpu()
    tflite = isinstance(model, TfliteModel)
    reference = (REFERENCE_TFLITE, model.path) if tflite else (REFERENCE, model.onnx_path)
    check_output(output, [Path(model.source), reference[1]], "-o")
    timings = {}
    start = time.monotonic()
    if tflite:
        mod = _import_tflite(model, cpu, target)
    else:
        onnx_model = model.load()
        check_operators(onnx_model, tvm_compiler.supported_onnx_ops())
        check_fits(onnx_model, model.inputs, cpu.memory_bytes, f"target {target.name}")
        mod = tvm_compiler.import_onnx(onnx_model, model.inputs)
    outputs = [TensorSpec(f"output_{i}" if i else "output", shape, dtype)
               for i, (shape, dtype) in enumerate(tvm_compiler.output_types(mod))]
    timings["import"] = time.monotonic() - start
    tvm_target = tvm_compiler.target_dict(cpu.tvm)
    _say(f"imported {model.name} into Relax in {timings['import']:.1f} s; building for {target.name} "
         f"({cpu.arch}, {tvm_target.get('mcpu', 'generic')})")

    start = time.monotonic()
    database = None
    if tuning_db is not None:
        from .backends import tuning

        database = tuning.load_database(Path(tuning_db), target.name)
    try:
        executable = tvm_compiler.build(mod, cpu, database)
    except EdgevitError:
        raise
    except Exception as exc:  # TVM raises InternalError/TVMError/ValueError alike for what it cannot lower
        lines = str(exc).strip().splitlines()
        raise ModelImportError(f"TVM could not build {model.name} for {target.name}: {type(exc).__name__}: "
                               f"{lines[-1] if lines else ''} (run with --debug for the traceback)") from exc
    timings["build"] = time.monotonic() - start
    with tempfile.TemporaryDirectory(prefix="edgevit-build-") as tmp:
        library = Path(tmp) / LIBRARY
        start = time.monotonic()
        tvm_compiler.export_library(executable, cpu, library)
        timings["link"] = time.monotonic() - start
        linker = cpu.cross_compiler.command if cpu.cross_compiler else "g++"
        _say(f"built in {timings['build']:.1f} s, linked with {linker} in {timings['link']:.1f} s")
        metadata = {
            "model": {"name": model.name, "family": model.family, "source": model.source, **model.extra,
                      **({"format": "tflite", "quantized": model.quantized} if tflite else {})},
            "inputs": [s.to_json() for s in model.inputs],
            "outputs": [s.to_json() for s in outputs],
            "target": {"name": target.name, "description": target.description, "arch": cpu.arch,
                       "tvm": tvm_target},
            "library": LIBRARY,
            "reference": reference[0],
            "tuned": tuning_db is not None,
            "tuning_db": str(tuning_db) if tuning_db is not None else None,
            "versions": {"edgevit": __version__, **tvm_compiler.versions()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command or shlex.join(["edgevit", *sys.argv[1:]]),
        }
        metadata = write_artifact(output, {LIBRARY: library, reference[0]: reference[1]}, metadata)
    return {**metadata, "timings": timings}


def _import_tflite(model: TfliteModel, cpu, target: Target):
    """A checked .tflite file into Relax: operators TVM cannot convert and models too big for the board are
    refused first, by name."""
    from .frontend_tflite import check_operators as check_tflite_operators, memory_estimate

    _, root = model.load()
    check_tflite_operators(root, tvm_compiler.supported_tflite_ops())
    refuse_over(memory_estimate(model), model.inputs, cpu.memory_bytes, f"target {target.name}")
    return tvm_compiler.import_tflite(root, model.inputs)
