"""Model import: a zoo name, an ONNX file or a ``torch.nn.Module`` becomes one ONNX model with static shapes.

ONNX is edgevit's single interchange format: torch models are exported with the dynamo exporter at
opset 18 (the path that worked for every zoo variant), then every backend reads the same file.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, ModelImportError
from .settings import cache_dir
from . import static_shapes, zoo

OPSET = 18
MAX_DIM = (1 << 31) - 1
MAX_RANK = 16
# Ops TVM 0.27's ONNX frontend converts but edgevit's CPU build cannot compile (found by trying them).
BUILD_FAILS = {"NonMaxSuppression": "TVM 0.27 converts it, but its CPU build fails in FlattenBuffer"}
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and numpy dtype name of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict) -> "TensorSpec":
        return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])


@dataclass
class ImportedModel:
    """An ONNX model ready for a backend: file, static input specs and where it came from."""

    name: str
    onnx_path: Path
    inputs: list[TensorSpec]
    source: str
    family: str = ""
    extra: dict = field(default_factory=dict)

    def load(self):
        """The ``onnx.ModelProto`` (with the static input shapes written into it)."""
        import onnx

        return onnx.load(str(self.onnx_path))


def parse_input_shape(text: str) -> dict[str | None, tuple[int, ...]]:
    """Parse ``--input-shape``: ``1,3,224,224`` (the only input) or ``name:1,3,224,224[;name2:...]``."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, dims = part.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise InputError(f"cannot read input shape '{part}': expected e.g. 1,3,224,224 or "
                             "input:1,3,224,224") from None
        if any(d <= 0 or d > MAX_DIM for d in shape) or len(shape) > MAX_RANK:
            raise InputError(f"input shape '{part}' needs 1 to {MAX_RANK} dimensions from 1 to {MAX_DIM}")
        shapes[name or None] = shape
    return shapes


def load_model(spec: str, input_shape: str | None = None) -> ImportedModel:
    """Import a model by name (any :func:`edgevit.zoo.lookup` name) or an ONNX file by path.

    Parameters
    ----------
    spec
        A zoo name, a model trained here (``zoo.TRAINED``), an MoE-ViT ``PRESET[:TASK]`` (``edgevit models``), or
        a path to an ``.onnx`` file.
    input_shape
        Static input shape(s) for ONNX files whose inputs have symbolic dimensions (see ``parse_input_shape``).
    """
    if spec.lower().endswith(".tflite"):
        raise ModelImportError(f"{spec}: only `edgevit compile` takes .tflite files; this command takes an ONNX "
                               "file or a zoo name")
    if spec.endswith(".onnx") or Path(spec).exists():
        return from_onnx_file(Path(spec), input_shape)
    entry = zoo.lookup(spec)
    if input_shape:
        raise InputError(f"--input-shape applies to ONNX files; {spec} has a fixed input size "
                         f"{'x'.join(map(str, entry.input_shape))}")
    if isinstance(entry, zoo.ZooEntry):
        return _export_zoo(entry)
    imported = from_torch(entry.load(), entry.input_shape, name=entry.name)
    imported.family, imported.source, imported.extra = entry.family, entry.source, entry.metadata()
    return imported


def _export_zoo(entry: zoo.ZooEntry) -> ImportedModel:
    """A zoo model, exported once per weights (the ONNX file is cached under its ``zoo.cache_tag``)."""
    import timm
    import torch

    path = cache_dir("onnx") / f"{zoo.cache_tag(entry.name, timm.__version__, torch.__version__)}.onnx"
    if not path.exists():
        _export_torch(entry.load(), entry.input_shape, path)
    imported = from_onnx_file(path)
    imported.name, imported.family, imported.source = entry.name, entry.family, entry.source
    return imported


def from_torch(module, input_shape: tuple[int, ...], name: str = "model") -> ImportedModel:
    """Import a ``torch.nn.Module`` (evaluated in eval mode) through the ONNX exporter.

    Parameters
    ----------
    module
        The model; called with one float32 tensor of ``input_shape``.
    input_shape
        The static input shape, batch included.
    name
        Name recorded in artifacts.
    """
    module = module.eval()
    digest = hashlib.sha256(repr(module).encode() + repr(tuple(input_shape)).encode())
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir("onnx") / f"{name}-{digest.hexdigest()[:16]}.onnx"
    if not path.exists():
        _export_torch(module, tuple(input_shape), path)
    imported = from_onnx_file(path)
    imported.name, imported.source = name, "torch.nn.Module"
    return imported


def _export_torch(model, input_shape: tuple[int, ...], path: Path) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        tmp_path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(model, (torch.zeros(input_shape),), str(tmp_path), dynamo=True,
                              opset_version=OPSET, input_names=["input"], output_names=["output"],
                              external_data=False, verbose=False)
        except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
            raise ModelImportError(f"ONNX export of the torch model failed: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        shutil.move(str(tmp_path), path)


def from_onnx_file(path: Path, input_shape: str | None = None) -> ImportedModel:
    """Read and check an ONNX file, fixing symbolic input dimensions from ``input_shape``.

    Shape arithmetic (``Shape -> Gather -> Reshape`` and the like) is then folded into constants
    (:mod:`edgevit.static_shapes`): the backends get a model of static shapes, checked against the file.

    Raises
    ------
    ModelImportError
        The file is missing, unreadable or not a valid ONNX model.
    InputError
        An input has symbolic dimensions and no shape was given, or the given shape does not fit.
    """
    import onnx

    if not path.is_file():
        raise ModelImportError(f"model file not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = _check_external_data(model, path)
        if external:  # bundled: the artifact's reference.onnx must be complete on its own
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except ModelImportError:
        raise
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"{path} is not a valid ONNX model: {first}") from None

    overrides = parse_input_shape(input_shape) if input_shape else {}
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if None in overrides:
        if len(graph_inputs) != 1:
            raise InputError(f"{path.name} has {len(graph_inputs)} inputs "
                             f"({', '.join(i.name for i in graph_inputs)}): name them, e.g. --input-shape NAME:1,3,224,224")
        overrides = {graph_inputs[0].name: overrides[None]}
    unknown = set(overrides) - {i.name for i in graph_inputs}
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {sorted(unknown)}; "
                         f"inputs are {[i.name for i in graph_inputs]}")

    specs, changed = [], False
    for value in graph_inputs:
        ttype = value.type.tensor_type
        dims = ttype.shape.dim
        declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        shape = overrides.get(value.name)
        if shape is None:
            if any(d is None for d in declared):
                raise InputError(f"input '{value.name}' of {path.name} has symbolic shape {declared}: "
                                 f"give a static one with --input-shape {value.name}:1,3,224,224")
            shape = tuple(declared)
        else:
            if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
                raise InputError(f"--input-shape {list(shape)} does not fit input '{value.name}' "
                                 f"declared as {declared}")
            for d, s in zip(dims, shape):
                d.dim_value = s
            changed = True
        if ttype.elem_type not in _ONNX_DTYPES:
            raise ModelImportError(f"input '{value.name}' of {path.name} has ONNX element type {ttype.elem_type}; "
                                   f"edgevit takes {', '.join(_ONNX_DTYPES.values())}")
        specs.append(TensorSpec(value.name, tuple(shape), _ONNX_DTYPES[ttype.elem_type]))

    name, source = path.stem, str(path)
    if static_shapes.has_shape_arithmetic(model):  # computed once per file version and input shapes
        digest = hashlib.sha256(model.SerializeToString()).hexdigest()[:16]
        folded = cache_dir("onnx") / f"{path.stem}-static{static_shapes.VERSION}-{digest}.onnx"
        if not folded.exists():
            partial = folded.with_suffix(".partial")
            onnx.save(static_shapes.fold_shape_arithmetic(model, specs), str(partial))
            partial.rename(folded)
        return ImportedModel(name, folded, specs, source)
    if changed or external:  # shapes or bundled data live in a copy; the user's file stays as it was
        path = cache_dir("onnx") / f"{path.stem}-{hashlib.sha256(model.SerializeToString()).hexdigest()[:16]}.onnx"
        if not path.exists():
            onnx.save(model, str(path))
    return ImportedModel(name, path, specs, source)


def _graphs(graph):
    """``graph`` and every subgraph (If/Loop bodies) in it."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _check_external_data(model, path: Path) -> bool:
    """Whether ``model`` keeps tensors in external files; refuse files outside its folder or missing.

    Raises
    ------
    ModelImportError
        A location that is absolute, climbs out with ``..``, is a link, is missing or too short, or data too
        large to bundle into one ONNX file (protobuf's 2 GiB limit).
    """
    from onnx import TensorProto

    folder, total, found = path.parent.resolve(), 0, False
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.data_location != TensorProto.EXTERNAL:
                continue
            found = True
            info = {e.key: e.value for e in tensor.external_data}
            location = info.get("location", "")
            target = folder / location
            if (not location or Path(location).is_absolute() or ".." in Path(location).parts
                    or target.is_symlink() or not target.resolve().is_relative_to(folder)):
                raise ModelImportError(f"{path.name}: tensor '{tensor.name}' keeps its data at '{location}', outside "
                                       f"the model's folder: refused")
            if not target.is_file():
                raise ModelImportError(f"{path.name}: tensor '{tensor.name}' keeps its data in '{location}', which "
                                       f"is missing: keep the data file beside the model")
            try:
                offset, length = int(info.get("offset", 0)), int(info.get("length", target.stat().st_size))
            except ValueError:
                raise ModelImportError(f"{path.name}: tensor '{tensor.name}' has a malformed external data "
                                       "offset or length") from None
            if offset < 0 or length < 0 or offset + length > target.stat().st_size:
                raise ModelImportError(f"{path.name}: tensor '{tensor.name}' reads past the end of '{location}'")
            total += length
    if total >= 2**31 - (1 << 20):
        raise ModelImportError(f"{path.name} keeps {total / 2**30:.1f} GiB of external data: too large to bundle "
                               "into one ONNX file (protobuf's 2 GiB limit); edgevit cannot build it")
    return found


def check_operators(model, supported: set[str]) -> None:
    """Refuse the first node whose operator edgevit cannot build, naming the node.

    Raises
    ------
    ModelImportError
        With the operator, the node's name and index and where the supported list is (``edgevit ops``).
    """
    for graph in _graphs(model.graph):
        for index, node in enumerate(graph.node):
            where = f"node {index}" + (f" '{node.name}'" if node.name else "") + (
                f" of subgraph '{graph.name}'" if graph is not model.graph else "")
            if node.op_type in BUILD_FAILS:
                raise ModelImportError(f"operator {node.op_type} at {where} is not supported: "
                                       f"{BUILD_FAILS[node.op_type]}; `edgevit ops` lists the supported operators")
            if node.op_type not in supported:
                raise ModelImportError(f"operator {node.op_type} at {where} is not supported by TVM 0.27's ONNX "
                                       "frontend; `edgevit ops` lists the supported operators")

