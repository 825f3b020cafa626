"""Plans: what runs where. A plan is a JSON file the host writes once (``edgevit plan``) and ``edgevit
infer`` executes; node descriptions come from an editable ``nodes.yaml``::

    nodes:
      - key: x86          # the key the nodes register with (edgevit node --key x86)
        count: 2          # how many nodes of that key to use
        target: host      # target (targets/*.toml) their artifacts are compiled for
        memory_mib: 256   # memory budget per node for models
      - key: zcu102       # an FPGA node (edgevit node --key zcu102 --fpga BUNDLE): runs the bundle's accelerator
        target: zcu102    # part as the first stage; an FPGA target (targets/*.toml with [fpga])
        bundle: ef1_bundle    # the bundle it runs (relative to this file), as flashed on the board

A class-split plan lists the sub-models (artifact, sha256, classes, size), which node slot each goes to
(greedy, largest first, to the slot with the most memory left that fits it) and the fusion head's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, InputError

PLAN_FORMAT = "edgevit-plan"
PLAN_VERSION = 1


@dataclass(frozen=True)
class NodeSlot:
    """One node a plan may use: its key, target, memory budget and index among nodes of that key."""

    key: str
    index: int
    target: str
    memory_mib: float
    bundle: str | None = None   # an FPGA node's bundle folder: the node runs its accelerator part

    @property
    def name(self) -> str:
        return f"{self.key}#{self.index}"


def load_nodes(path: Path) -> list[NodeSlot]:
    """Read ``nodes.yaml`` (or JSON with the same fields) into node slots.

    Raises
    ------
    InputError
        Missing file or missing/invalid fields; the message names the entry.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read nodes file {path}: {exc}") from None
    entries = data.get("nodes") if isinstance(data, dict) else None
    if not entries:
        raise InputError(f"{path} has no 'nodes:' list (see `edgevit plan --help`)")
    slots = []
    for i, entry in enumerate(entries):
        try:
            bundle = entry.get("bundle")
            bundle = str((Path(path).parent / str(bundle)).resolve()) if bundle is not None else None
            for index in range(int(entry.get("count", 1))):
                slots.append(NodeSlot(str(entry["key"]), index, str(entry.get("target", "host")),
                                      float(entry.get("memory_mib", 512)), bundle))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{path}: node entry {i + 1} needs key (and optional count, target, memory_mib, "
                             "bundle)") from None
    bundles = {s.key: s.bundle for s in slots}
    for slot in slots:
        if bundles[slot.key] != slot.bundle:
            raise InputError(f"{path}: the entries of key '{slot.key}' name different bundles: one key, one bundle")
    return slots


def assign_greedy(sizes_mib: list[float], slots: list[NodeSlot]) -> list[NodeSlot]:
    """Place items (largest first) on the slot with the most memory left that can hold them.

    Raises
    ------
    EdgevitError
        Some item fits on no node; the message gives sizes and budgets.
    """
    left = {slot.name: slot.memory_mib for slot in slots}
    placed: list[NodeSlot | None] = [None] * len(sizes_mib)
    for i in sorted(range(len(sizes_mib)), key=lambda i: -sizes_mib[i]):
        # Prefer an empty slot (parallelism), then the one with the most room.
        candidates = [s for s in slots if left[s.name] >= sizes_mib[i]]
        if not candidates:
            raise EdgevitError(f"sub-model {i} needs {sizes_mib[i]:.1f} MiB and no node has that much left "
                               f"(budgets: {left}); add nodes or raise memory_mib in the nodes file")
        used = {p.name for p in placed if p is not None}
        best = max(candidates, key=lambda s: (s.name not in used, left[s.name]))
        placed[i] = best
        left[best.name] -= sizes_mib[i]
    return placed  # type: ignore[return-value]


def model_memory_mib(artifact_bytes: int, params: int) -> float:
    """Estimated memory a node needs for a model: its library plus float32 weights, plus 25 % headroom."""
    return 1.25 * (artifact_bytes + 4 * params) / 2**20


def write_plan(path: Path, plan: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"format": PLAN_FORMAT, "format_version": PLAN_VERSION, **plan}, indent=1))


def _plan_schema(strategy: str):
    """What a plan of ``strategy`` must hold (other fields are allowed: plans carry reports and profiles)."""
    from ..runtime import schema as s

    anything = s.Record({}, open=True)
    entry = {"artifact": s.STRING, "sha256": s.STRING, "node_key": s.STRING, "slot": s.STRING, "name": s.STRING}
    if strategy == "pipeline":
        entry.update(inputs=s.ListOf(s.STRING), outputs=s.ListOf(s.STRING), predicted=anything, target=s.STRING)
        # An FPGA node's stage names the bundle the node runs (by sha256) instead of an artifact to upload.
        del entry["artifact"]
        optional = {"artifact": s.STRING,
                    "accelerator": s.Record({"board": s.STRING, "bundle_sha256": s.STRING}, open=True)}
        extra = {"stages": s.ListOf(s.Record(entry, optional, open=True), min_len=1), "predicted": anything,
                 "whole_model": s.STRING}
    else:
        entry.update(outputs=s.int_in(1, 1 << 20), classes=s.ListOf(s.int_in(0, 1 << 20)))
        extra = {"submodels": s.ListOf(s.Record(entry, open=True), min_len=1), "fusion": anything}
    return s.Record({"strategy": s.one_of(strategy), "model": s.STRING, "input": anything, **extra},
                    {"verify_rtol": s.number_in(0, 1)}, open=True)


def read_plan(path: Path) -> dict:
    """Read and check a plan (a class-split plan file, or a pipeline plan's folder), resolving artifact paths
    relative to it.

    Raises
    ------
    InputError
        Unreadable, not a plan, a field missing or of the wrong type (named), or a file it names that lies
        outside the plan's folder.
    """
    from ..runtime.schema import SchemaViolation, check, one_of

    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read plan {path}: {exc}") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise InputError(f"{path} is not an edgevit plan (make one with `edgevit plan`)")
    try:
        one_of("class", "pipeline").check(plan.get("strategy"), "strategy")
        check(plan, _plan_schema(plan["strategy"]))
    except SchemaViolation as exc:
        raise InputError(f"{path}: {exc}") from None
    root = path.parent.resolve()
    if plan["strategy"] == "pipeline":
        _inside(root, plan["whole_model"], path, "whole_model")
        for i, stage in enumerate(plan["stages"]):
            if ("artifact" in stage) == ("accelerator" in stage):
                raise InputError(f"{path}: stages[{i}] needs either an artifact or an accelerator, not "
                                 f"{'both' if 'artifact' in stage else 'neither'}")
    entries_name = "stages" if plan["strategy"] == "pipeline" else "submodels"
    for i, entry in enumerate(plan[entries_name] + ([plan["full"]] if isinstance(plan.get("full"), dict) else [])):
        for name in ("artifact", "onnx"):   # a pipeline stage's model, which the int8 --verify probes
            if name in entry:
                entry[name] = str(_inside(root, entry[name], path, f"{entries_name}[{i}].{name}"))
    plan["artifact_root"] = str(root)
    return plan


def _inside(root: Path, relative: str, path: Path, field: str) -> Path:
    """``root / relative`` if it stays inside ``root`` (no absolute paths, no '..', no links out)."""
    root = root.resolve()
    target = (root / relative).resolve()
    if Path(relative).is_absolute() or not target.is_relative_to(root):
        raise InputError(f"{path}: {field} '{relative}' lies outside the plan's folder: refused")
    return target


def fusion_of(plan: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(plan["fusion"]["weight"], np.float32), np.asarray(plan["fusion"]["bias"], np.float32)


def fuse(outputs: list[np.ndarray], weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The fusion head: class logits from the sub-models' outputs, concatenated in plan order."""
    return np.concatenate(outputs, -1) @ weight.T + bias
