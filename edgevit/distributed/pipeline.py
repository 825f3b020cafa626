"""Pipeline split of any model on its ONNX graph (PipeEdge-style): consecutive stages, one node each, chosen by
a dynamic program over a cost profile, each stage compiled for its node's target.

``build_pipeline_plan`` is ``edgevit plan --strategy pipeline``: import the model (anything ``edgevit
compile`` takes, plus the trained distributed-demo models), find the cut candidates on the graph
(``graph_split``), profile the units between them on each node kind (``cost``), choose the stages, extract and
check them (the chained stages in onnxruntime must equal the whole model in onnxruntime), compile each stage,
and write ``PLAN_DIR/plan.json`` with the stage models and artifacts beside it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, InputError, VerificationError
from . import accelerator_part, cost
from .graph_split import GraphSplitter, run_chain, save_stage
from .client import artifact_digest
from .plan import NodeSlot, write_plan

PROFILE_RUNS = 7
CHAIN_RTOL = 1e-5


def _say(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StageChoice:
    """One stage of a chosen pipeline: units ``first..end-1`` on a node of ``key`` and its predicted cost."""

    key: str
    first: int
    end: int
    cost: dict


def choose_stages(profile: dict, slots: list[NodeSlot], objective: str = "latency",
                  stages: int | None = None) -> tuple[list[StageChoice], dict]:
    """The DP: split the profile's units into consecutive stages, each on a distinct node, nodes of any kind
    in any order, within each node's memory.

    Parameters
    ----------
    profile
        A cost profile (``cost.read_profile``) with an entry for every key in ``slots``.
    slots
        The nodes the plan may use (``plan.load_nodes``); nodes of one key are interchangeable.
    objective
        ``latency`` (one image's time through all stages and links) or ``throughput`` (the slowest stage's
        period: the longer of its compute and its transfers, which overlap in a stream; ties broken by latency).
    stages
        Use exactly this many stages (default: whatever the objective prefers).

    Returns
    -------
    choices, prediction
        The stages in order, and ``{"latency_ms", "bottleneck_ms", "images_per_s"}``.

    Raises
    ------
    EdgevitError
        Bad objective or stage count, or no split fits the nodes' memory.
    """
    if objective not in ("latency", "throughput"):
        raise EdgevitError(f"unknown objective '{objective}' (latency, throughput)")
    n = len(profile["units"])
    if stages is not None and not 1 <= stages <= min(n, len(slots)):
        raise EdgevitError(f"--stages must be between 1 and {min(n, len(slots))} (units: {n}, nodes: "
                           f"{len(slots)}), got {stages}")
    keys = list(dict.fromkeys(s.key for s in slots))
    missing = [k for k in keys if k not in profile["kinds"]]
    if missing:
        raise EdgevitError(f"the profile has no entry for node kind(s) {missing}: profile again with --tracker")
    capacity = [sum(s.key == k for s in slots) for k in keys]
    memory = [min(s.memory_mib for s in slots if s.key == k) for k in keys]
    # An FPGA kind runs exactly its accelerator part (cost.accelerator_kind): one fixed range of units.
    only = [tuple(profile["kinds"][k].get("only_units") or ()) for k in keys]

    def value(period: float, latency: float) -> tuple[float, float]:
        return (latency, period) if objective == "latency" else (period, latency)

    # best[(j, used)] = ((period, latency), previous state, choice): units 0..j-1 placed, `used` nodes per key.
    start = (0, (0,) * len(keys))
    best: dict = {start: ((0.0, 0.0), None, None)}
    for j in range(n):
        for used in itertools.product(*(range(c + 1) for c in capacity)):
            state = (j, used)
            if state not in best:
                continue
            (period, latency), _, _ = best[state]
            for k, key in enumerate(keys):
                if used[k] == capacity[k]:
                    continue
                after = used[:k] + (used[k] + 1,) + used[k + 1:]
                for end in range(j + 1, n + 1):
                    if only[k] and (j, end) != only[k]:
                        continue
                    c = cost.stage_cost(profile, key, j, end)
                    if cost.stage_memory_mib(c) > memory[k]:
                        continue
                    transfer = c["in_ms"] + (c["out_ms"] if end == n else 0.0)
                    # One image waits for both; a stream does not: the data plane's I/O threads move the next
                    # input while the node computes (two in flight per stage), so a stage's period is the
                    # longer of the two. Nodes sharing a machine's cores are bounded at infer time
                    # (pipeline_runner.shared_machine_period).
                    stage_period = max(c["compute_ms"], transfer)
                    new = (max(period, stage_period), latency + c["compute_ms"] + transfer)
                    target = (end, after)
                    if target not in best or value(*new) < value(*best[target][0]):
                        best[target] = (new, state, StageChoice(key, j, end, c))
    finals = [(state, entry) for state, entry in best.items() if state[0] == n
              and (stages is None or sum(state[1]) == stages)]
    if not finals:
        biggest = max(memory)
        raise EdgevitError(f"no split into {stages or 'any number of'} stage(s) fits these nodes' memory "
                           f"(largest budget {biggest:g} MiB) and their fixed parts (an FPGA node runs only its "
                           f"accelerator part): add nodes or raise memory_mib in the nodes file")
    state, entry = min(finals, key=lambda item: value(*item[1][0]))
    (period, latency) = entry[0]
    choices = []
    while entry[1] is not None:
        choices.append(entry[2])
        entry = best[entry[1]]
    return choices[::-1], {"latency_ms": latency, "bottleneck_ms": period, "images_per_s": 1e3 / period}


# ---- import ----------------------------------------------------------------------------------------------

def import_model(spec: str, input_shape: str | None = None):
    """What ``edgevit compile`` accepts (a registry name or an ONNX file)."""
    from ..frontend import load_model

    return load_model(spec, input_shape)


# ---- profile ---------------------------------------------------------------------------------------------

def unit_table(splitter: GraphSplitter, cuts) -> tuple[list[dict], int]:
    units = [{"start": u.start.position, "end": u.end.position, "macs": int(u.macs), "ops": int(u.ops),
              "out_bytes": int(u.end.bytes), "weight_bytes": int(u.weight_bytes),
              "inputs": list(u.start.tensors), "outputs": list(u.end.tensors)} for u in splitter.units(cuts)]
    return units, int(cuts[0].bytes)


def _sample_inputs(stage) -> list[np.ndarray]:
    """Seeded random tensors for a stage model's inputs (its value infos give shapes and types)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    arrays = []
    for value in stage.graph.input:
        ttype = value.type.tensor_type
        shape = [d.dim_value for d in ttype.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        arrays.append(rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype))
    return arrays


def _compile_stage(stage_path: Path, target: str, out: Path, name: str) -> Path:
    """Compile one stage's ONNX for ``target`` (reusing an artifact built from the same file and target)."""
    from ..compiler import compile_for_target
    from ..frontend import from_onnx_file
    from ..targets import get_target

    digest = hashlib.sha256(stage_path.read_bytes()).hexdigest()[:16]
    stamp = out.with_suffix(".source")
    if out.exists() and stamp.exists() and stamp.read_text() == f"{digest} {target}":
        return out
    model = from_onnx_file(stage_path)
    model.name = name
    compile_for_target(model, get_target(target), out, command=f"edgevit plan ({name})")
    stamp.write_text(f"{digest} {target}")
    return out


def measure_kind(splitter: GraphSplitter, cuts, units: list[dict], key: str, target: str, tracker,
                 folder: Path) -> dict:
    """Time every unit on a node of ``key`` through RPC (node-side compute), and the link into it.

    A node that reports it runs under emulation is not timed: the entry is an estimate, labelled so.
    """
    session = tracker.request(key, 600)
    try:
        if session.info.get("emulated"):
            entry = cost.estimated_kind(target, units)
            entry["source"] += f"; node '{key}' runs under qemu, whose timings mean nothing for a board"
            return entry
        times = []
        for index, (a, b) in enumerate(zip(cuts, cuts[1:])):
            stage = splitter.extract(a, b)
            path = save_stage(stage, folder / f"unit{index}.onnx")
            art = _compile_stage(path, target, folder / f"unit{index}-{target}.tar", f"unit{index}")
            _say(f"profiling unit {index + 1}/{len(units)} on '{key}'")
            digest = artifact_digest(art)
            session.ensure_artifact(art, digest)
            x = _sample_inputs(stage)
            runs = []
            for _ in range(PROFILE_RUNS):
                before = session.stats.compute_ms
                session.run(digest, x)
                runs.append(session.stats.compute_ms - before)
            times.append(float(np.median(runs[1:])))
        link_mb_s, message_ms = session.measure_link()
    finally:
        session.close()
    return {"target": target, "unit_ms": times, "link_mb_s": link_mb_s, "message_ms": message_ms,
            "source": f"measured on node '{key}' ({session.info.get('host')}:{session.info.get('port')}) "
                      f"through RPC, median of {PROFILE_RUNS - 1} runs"}


def make_profile(splitter: GraphSplitter, cuts, model_name: str, model_sha: str, slots: list[NodeSlot],
                 tracker, folder: Path, part=None, part_end: int = 0) -> dict:
    """Per node kind in ``slots``: measured through ``tracker`` when given, else estimated from MACs; the FPGA
    kind (``part``, an ``accelerator_part.AcceleratorPart``) from the HLS estimator."""
    units, input_bytes = unit_table(splitter, cuts)
    kinds = {}
    for key, target in node_targets(slots).items():
        if part is not None and key == part.key:
            kinds[key] = cost.accelerator_kind(target, units, part_end, part.estimate)
        elif tracker is None:
            kinds[key] = cost.estimated_kind(target, units)
        else:
            kinds[key] = measure_kind(splitter, cuts, units, key, target, tracker, folder)
    return {"format": cost.PROFILE_FORMAT, "model": model_name, "model_sha256": model_sha,
            "input_bytes": input_bytes, "units": units, "kinds": kinds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def node_targets(slots: list[NodeSlot]) -> dict:
    """Node key -> target, in the order the nodes file lists them."""
    return {s.key: s.target for s in slots}


# ---- plan ------------------------------------------------------------------------------------------------

def build_pipeline_plan(spec: str, slots: list[NodeSlot], tracker, out_dir: Path, objective: str = "latency",
                        profile_path: Path | None = None, stages: int | None = None, max_live: int = 1,
                        units: int = 12, input_shape: str | None = None) -> dict:
    """Plan, check and compile a pipeline; writes ``out_dir/plan.json``.

    Parameters
    ----------
    spec
        Zoo name, MoE task build, ONNX file, or a distributed demo model (``fashion-vit``).
    slots
        The nodes (``plan.load_nodes``).
    tracker
        A ``client.Tracker`` to measure units on the nodes, or None (then ``profile_path`` or MAC estimates).
    out_dir
        The plan folder: ``plan.json``, ``profile.json``, ``stages/*.onnx``, ``artifacts/*.tar``.
    profile_path
        A profile to read (if it exists and was made for this model and these units) or to write.
    stages, max_live, units
        Exact stage count (default: the objective's choice); most tensors a cut may send; how many units
        the graph is coarsened to before the DP.

    Returns
    -------
    dict
        The plan as written.
    """
    if max_live < 1:
        raise InputError(f"--max-live must be at least 1, got {max_live}")
    if units < 1:
        raise InputError(f"--units must be at least 1, got {units}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} exists and is not a folder: a pipeline plan is a folder (-o PLAN_DIR)")
    part = accelerator_part.find(slots)
    model = import_model(spec, input_shape)
    if part is not None and part.model not in (spec, model.name):
        raise InputError(f"the FPGA nodes' bundle runs '{part.model}', not '{spec}': plan that model, or make a "
                         f"bundle for this one (`edgevit hls {spec}`, then `edgevit bundle`)")
    onnx_model = model.load()
    serialized = onnx_model.SerializeToString()
    model_sha = hashlib.sha256(serialized).hexdigest()
    splitter = GraphSplitter(onnx_model)
    candidates = splitter.candidate_cuts(max_live)
    cuts = splitter.coarsen(candidates, units)
    part_end = 0
    if part is not None:
        cuts, part_end = accelerator_part.cut_index(part, candidates, cuts)
    _say(f"{model.name}: {len(splitter.nodes)} nodes, {len(candidates) - 2} cut candidates with <= {max_live} "
         f"live tensor(s); {len(cuts) - 1} units for the planner")
    if part is not None:
        _say(f"the FPGA kind '{part.key}' runs units 0-{part_end - 1} (its accelerator stops at "
             f"{part.stops_at or 'the output'}): {part.estimate['latency_ms']:.3g} ms estimated")
    (out_dir / "stages").mkdir(parents=True, exist_ok=True)
    (out_dir / "artifacts").mkdir(parents=True, exist_ok=True)

    profile = None
    profile_path = Path(profile_path) if profile_path else out_dir / "profile.json"
    if profile_path.exists():
        profile = cost.read_profile(profile_path)
        expected = [(c.position, d.position) for c, d in zip(cuts, cuts[1:])]
        if profile.get("model_sha256") != model_sha or [(u["start"], u["end"]) for u in profile["units"]] != expected:
            _say(f"{profile_path} was made for another model or other units: profiling again")
            profile = None
    if profile is None:
        profile = make_profile(splitter, cuts, model.name, model_sha, slots, tracker, out_dir / "profile-units",
                               part, part_end)
        profile_path.write_text(json.dumps(profile, indent=1))
    else:
        for key, target in node_targets(slots).items():
            if key not in profile["kinds"] and part is not None and key == part.key:
                profile["kinds"][key] = cost.accelerator_kind(target, profile["units"], part_end, part.estimate)
            elif key not in profile["kinds"]:
                profile["kinds"][key] = cost.estimated_kind(target, profile["units"])

    choices, prediction = choose_stages(profile, slots, objective, stages)
    stage_cuts = [cuts[c.first] for c in choices] + [cuts[-1]]
    stage_paths = [save_stage(splitter.extract(a, b), out_dir / "stages" / f"stage{i}.onnx")
                   for i, (a, b) in enumerate(zip(stage_cuts, stage_cuts[1:]))]
    check = verify_chain(model, stage_paths, splitter.outputs)
    _say(f"chained stages in onnxruntime match the whole model: max rel error {check['max_rel_error']:.2g}")
    on_fpga = part is not None and choices[0].key == part.key
    if on_fpga:
        check["fixed_point"] = accelerator_part.fixed_point_check(part, model, stage_paths[1:], splitter.outputs)
        _say(f"with the accelerator's fixed-point result (its golden model, bit-exact with the C-simulation): max "
             f"rel error {check['fixed_point']['max_rel_error']:.3g} vs onnxruntime, top-1 "
             f"{'agrees' if check['fixed_point']['top1_agree'] else 'DIFFERS'}")

    unused = {key: iter([s for s in slots if s.key == key]) for key in {s.key for s in slots}}
    entries = []
    for index, (choice, path) in enumerate(zip(choices, stage_paths)):
        slot = next(unused[choice.key])  # the DP uses each node once
        entry = {"name": f"stage{index}", "units": [choice.first, choice.end],
                 "nodes": [stage_cuts[index].position, stage_cuts[index + 1].position],
                 "inputs": list(stage_cuts[index].tensors), "outputs": list(stage_cuts[index + 1].tensors),
                 "slot": slot.name, "node_key": slot.key, "target": slot.target,
                 "onnx": str(path.relative_to(out_dir)),
                 "predicted": {k: round(v, 4) if isinstance(v, float) else v for k, v in choice.cost.items()},
                 "cost_source": profile["kinds"][choice.key]["source"]}
        if part is not None and choice.key == part.key:
            # The node runs the bundle flashed on it; the ONNX stage is its float reference.
            entry.update(sha256=part.digest, accelerator={"board": part.board, "bundle_sha256": part.digest,
                                                          "bundle": str(part.bundle), "model": part.model})
        else:
            _say(f"compiling stage {index + 1}/{len(choices)} (units {choice.first}-{choice.end - 1}) for "
                 f"{slot.target}")
            art = _compile_stage(path, slot.target, out_dir / "artifacts" / f"stage{index}-{slot.target}.tar",
                                 f"{model.name}-stage{index}")
            entry.update(artifact=str(art.relative_to(out_dir)), sha256=artifact_digest(art),
                         bytes=art.stat().st_size)
        entries.append(entry)
    n = len(profile["units"])
    one_node = {key: cost.stage_cost(profile, key, 0, n) for key, kind in profile["kinds"].items()
                if key in unused and kind.get("only_units", [0, n]) == [0, n]}
    plan = {"strategy": "pipeline", "model": model.name, "source": model.source, "model_sha256": model_sha,
            "objective": objective, "input": {"name": model.inputs[0].name, "shape": list(model.inputs[0].shape),
                                              "dtype": model.inputs[0].dtype},
            "inputs": [s.to_json() for s in model.inputs], "outputs": list(splitter.outputs),
            "whole_model": "model.onnx", "stages": entries, "profile": profile_path.name
            if profile_path.parent == out_dir else str(profile_path),
            "predicted": prediction, "chain_check": check,
            "verify_rtol": check["fixed_point"]["verify_rtol"] if on_fpga else CHAIN_RTOL,
            "one_node": {k: {"latency_ms": c["compute_ms"] + c["in_ms"] + c["out_ms"]} for k, c in one_node.items()}}
    onnx_path = out_dir / "model.onnx"
    onnx_path.write_bytes(serialized)
    write_plan(out_dir / "plan.json", plan)
    return plan


def verify_chain(model, stage_paths: list[Path], outputs: list[str]) -> dict:
    """Run the stages one after another and the whole model in onnxruntime on the same seeded input and compare
    the model's ``outputs`` (``reference.compare``: NaN/Inf, shapes, relative error, top-1).

    Raises
    ------
    VerificationError
        The chained result differs from the whole model's beyond ``CHAIN_RTOL`` (a wrong cut).
    """
    from ..reference import compare, random_inputs, run_onnxruntime

    inputs = random_inputs(model.inputs, 0)
    expected = run_onnxruntime(model.onnx_path, inputs)
    values = run_chain(stage_paths, {s.name: x for s, x in zip(model.inputs, inputs)})
    comparison = compare([values[name] for name in outputs], expected, CHAIN_RTOL)
    if not comparison.ok:
        raise VerificationError(f"the chained stages differ from the whole model ({comparison.summary()}): "
                                "the cuts are wrong; please report this model")
    return {"max_rel_error": comparison.max_rel_error, "rtol": CHAIN_RTOL, "engine": "onnxruntime"}
