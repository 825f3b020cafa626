"""Pipeline split (PipeEdge-style): cut the ViT into consecutive stages, one node each, chosen by a dynamic
program over measured per-layer latencies, per-layer output sizes and link bandwidth.

Layers are the ViT's natural units: patch embedding, each transformer block, and the head. ``profile``
compiles every layer for each node kind's target, times it on a node of that kind through RPC (node-side
compute time), measures the host<->node tensor bandwidth, and writes an editable JSON profile. ``choose_cuts``
is the DP; ``PipelineRunner`` streams images through the stages (a thread per stage, so image i+1 is in
stage 1 while image i is in stage 2). Tensors travel through the host (TVM RPC is a star).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ExecutionError
from .client import Tracker, artifact_digest
from .infer import SlotPool, make_slots
from .plan import NodeSlot, write_plan


def layer_count(vit) -> int:
    return vit.depth + 2


def stage_module(full, vit, start: int, end: int):
    """A torch module running layers ``start..end-1`` of ``full`` (0 = embedding, 1..depth = blocks,
    depth + 1 = head)."""
    import torch

    class Stage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.full = full

        def forward(self, x):
            for i in range(start, end):
                if i == 0:
                    x = self.full.embed(x).flatten(2).transpose(1, 2) + self.full.pos
                elif i <= vit.depth:
                    x = self.full.blocks[i - 1](x)
                else:
                    x = self.full.head(self.full.norm(x).mean(1))
            return x

    return Stage().eval()


def layer_input_shape(vit, i: int) -> tuple[int, ...]:
    tokens = (vit.image // vit.patch) ** 2
    return (1, vit.channels, vit.image, vit.image) if i == 0 else (1, tokens, vit.dim)


def layer_output_bytes(vit, i: int) -> int:
    return 4 * (vit.classes if i == layer_count(vit) - 1 else int(np.prod(layer_input_shape(vit, i + 1))))


def compile_stage(full, vit, model: str, start: int, end: int, target: str, folder: Path) -> Path:
    from .planner import _compile_shape

    path = folder / f"layers{start}-{end}-{target}.tar"
    return _compile_shape(stage_module(full, vit, start, end), layer_input_shape(vit, start),
                          f"{model}-layers{start}-{end}", target, path)


def profile(full, vit, model: str, slots: list[NodeSlot], tracker: Tracker, folder: Path,
            repeat: int = 5) -> dict:
    """Per node kind: each layer's median node-side compute time (run through RPC), the host<->node
    bandwidth and per-call overhead; plus each layer's output size."""
    result = {"model": model, "layers": layer_count(vit), "input_bytes": 4 * int(np.prod(layer_input_shape(vit, 0))),
              "layer_out_bytes": [layer_output_bytes(vit, i) for i in range(layer_count(vit))], "keys": {}}
    for key, target in dict((s.key, s.target) for s in slots).items():
        arts = [compile_stage(full, vit, model, i, i + 1, target, folder) for i in range(layer_count(vit))]
        session = tracker.request(key, 600)
        try:
            times = []
            for i, art in enumerate(arts):
                digest = artifact_digest(art)
                session.ensure_artifact(art, digest)
                x = np.zeros(layer_input_shape(vit, i), np.float32)
                before = []
                for _ in range(repeat):
                    start = session.stats.compute_ms
                    session.run(digest, [x])
                    before.append(session.stats.compute_ms - start)
                times.append(float(np.median(before)))
            blob = np.zeros(1 << 18, np.float32)  # 1 MiB
            start = time.perf_counter()
            for _ in range(repeat):
                session.channel.put("bw", blob)
                session.channel.get("bw")
            seconds = (time.perf_counter() - start) / (2 * repeat)
            session.health()  # the first call also looks the function up
            start = time.perf_counter()
            for _ in range(repeat):
                session.health()
            rpc_ms = (time.perf_counter() - start) / repeat * 1e3
        finally:
            session.close()
        result["keys"][key] = {"target": target, "layer_ms": times, "bandwidth_mb_s": blob.nbytes / seconds / 1e6,
                               "rpc_ms": rpc_ms}
    return result


def _stage_cost(prof: dict, key: str, i: int, j: int) -> float:
    """ms for layers i..j-1 on a node of ``key``: compute, tensors in and out through the host, 3 calls."""
    k = prof["keys"][key]
    in_bytes = prof["input_bytes"] if i == 0 else prof["layer_out_bytes"][i - 1]
    transfer = (in_bytes + prof["layer_out_bytes"][j - 1]) / (k["bandwidth_mb_s"] * 1e6) * 1e3
    return sum(k["layer_ms"][i:j]) + transfer + 3 * k["rpc_ms"]


def choose_cuts(prof: dict, slots: list[NodeSlot], objective: str = "latency") -> tuple[list[tuple], float]:
    """The DP: split layers 0..L-1 into consecutive stages on distinct slots (in the nodes file's order,
    any subset), minimising the sum of stage times (latency) or the slowest stage (throughput).

    Returns
    -------
    stages, value
        ``[(slot, first_layer, end_layer), ...]`` and the predicted latency or bottleneck in ms.
    """
    if objective not in ("latency", "throughput"):
        raise EdgevitError(f"unknown objective '{objective}' (latency, throughput)")
    combine = (lambda a, b: a + b) if objective == "latency" else max
    n, count = prof["layers"], len(slots)
    inf = float("inf")
    # best[j][s] = (value, how) for layers 0..j-1 on slots 0..s-1; how is None (j = 0), ("skip",) (slot s-1
    # unused) or ("use", i) (the last stage is layers i..j-1 on slot s-1).
    best = [[(0.0 if j == 0 else inf, None) for _ in range(count + 1)] for j in range(n + 1)]
    for s in range(1, count + 1):
        for j in range(1, n + 1):
            best[j][s] = (best[j][s - 1][0], ("skip",))
            for i in range(j):
                if best[i][s - 1][0] == inf:
                    continue
                value = combine(best[i][s - 1][0], _stage_cost(prof, slots[s - 1].key, i, j))
                if value < best[j][s][0]:
                    best[j][s] = (value, ("use", i))
    value = best[n][count][0]
    if value == inf:
        raise EdgevitError("no pipeline fits these nodes")
    stages, j, s = [], n, count
    while j > 0:
        how = best[j][s][1]
        if how[0] == "use":
            stages.append((slots[s - 1], how[1], j))
            j = how[1]
        s -= 1
    return stages[::-1], value


def build_pipeline_plan(model: str, slots: list[NodeSlot], tracker: Tracker | None, output: Path,
                        objective: str = "latency", profile_path: Path | None = None, configs=None) -> dict:
    """Profile (or read ``profile_path``), choose cuts, compile the stages, write the plan."""
    from . import classsplit as cs
    from .planner import model_configs

    vit, cfg = configs or model_configs(model)
    full = cs.train_full(vit, cfg)
    folder = output.parent / f"{output.stem}-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    if profile_path and Path(profile_path).exists():
        prof = json.loads(Path(profile_path).read_text())
    else:
        if tracker is None:
            raise EdgevitError("profiling the layers needs nodes: give --tracker HOST:PORT (or --profile FILE)")
        prof = profile(full, vit, model, slots, tracker, folder)
        Path(profile_path or output.with_suffix(".profile.json")).write_text(json.dumps(prof, indent=1))
    cuts, value = choose_cuts(prof, slots, objective)
    stages = []
    for index, (slot, i, j) in enumerate(cuts):
        art = compile_stage(full, vit, model, i, j, slot.target, folder)
        stages.append({"name": f"stage{index}", "layers": [i, j], "slot": slot.name, "node_key": slot.key,
                       "target": slot.target, "artifact": str(art.relative_to(output.parent)),
                       "sha256": artifact_digest(art), "bytes": art.stat().st_size,
                       "predicted_ms": _stage_cost(prof, slot.key, i, j)})
    plan = {"strategy": "pipeline", "model": model, "objective": objective,
            "input": {"shape": list(layer_input_shape(vit, 0)), "dtype": "float32"}, "classes": vit.classes,
            "stages": stages, "profile": prof,
            "predicted_latency_ms": sum(s["predicted_ms"] for s in stages),
            "predicted_bottleneck_ms": max(s["predicted_ms"] for s in stages)}
    write_plan(output, plan)
    return plan


class PipelineRunner:
    """Streams images through a pipeline plan's stages, one thread per stage."""

    def __init__(self, plan: dict, tracker: Tracker, session_timeout: float = 600.0):
        if plan.get("strategy") != "pipeline":
            raise EdgevitError(f"plan strategy '{plan.get('strategy')}' is not a pipeline")
        self.plan = plan
        self.slots = make_slots([(st["slot"], st["node_key"], st["sha256"], st["artifact"]) for st in plan["stages"]])
        self.pool = SlotPool(tracker, list(self.slots.values()), session_timeout)

    def open(self, wait: float = 60.0) -> None:
        self.pool.open(wait)

    def stream(self, images: list[np.ndarray], wait: float = 10.0) -> list[dict]:
        """Results in input order: ``{"logits", "prediction", "latency_ms", "error"}``; a stage that no node
        can run fails that image (``error`` says which), never silently."""
        queues = [queue.Queue() for _ in range(len(self.plan["stages"]) + 1)]
        started: dict[int, float] = {}

        def worker(k: int, stage: dict):
            slot = self.slots[stage["slot"]]
            while True:
                item = queues[k].get()
                if item is None:
                    queues[k + 1].put(None)
                    return
                index, x = item
                if isinstance(x, str):
                    queues[k + 1].put(item)
                    continue
                try:
                    (y,), _ = self.pool.run(slot, stage["sha256"], [x], wait=wait)
                    queues[k + 1].put((index, y))
                except EdgevitError as exc:
                    queues[k + 1].put((index, f"{stage['name']}: {exc}"))

        threads = [threading.Thread(target=worker, args=(k, st), daemon=True)
                   for k, st in enumerate(self.plan["stages"])]
        for t in threads:
            t.start()
        for index, image in enumerate(images):
            started[index] = time.perf_counter()
            queues[0].put((index, np.ascontiguousarray(image, np.float32)))
        queues[0].put(None)
        results: dict[int, dict] = {}
        while True:
            item = queues[-1].get(timeout=600)
            if item is None:
                break
            index, y = item
            latency = (time.perf_counter() - started[index]) * 1e3
            if index in results:
                raise ExecutionError(f"image {index} answered twice")  # never expected; never hidden
            results[index] = ({"logits": None, "prediction": None, "error": y, "latency_ms": latency}
                              if isinstance(y, str) else
                              {"logits": y, "prediction": int(y.argmax()), "error": None, "latency_ms": latency})
        return [results[i] for i in range(len(images))]

    def breakdown(self) -> list[dict]:
        return self.pool.breakdown()

    def close(self) -> None:
        self.pool.close()
