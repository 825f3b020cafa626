"""Streaming a pipeline plan: inputs go from the host to the first stage's node, each stage's node sends its
output straight to the next stage's node, and the last stage's node sends the result to the host's sink.

The host keeps every input until its result arrives. When a stage's node fails (no progress for
``stall_timeout`` seconds and the node no longer answers, or it reports an error), its stage moves to another
node of the same key from the tracker, the route is rebuilt, and every unanswered input is sent again from
the first stage under a new *epoch*; a result from an older epoch, or for an input already answered, is
dropped and counted. So each input gets exactly one answer, or an error that says which stage failed.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, EdgevitError, ExecutionError
from .client import NodeSession, Tracker, TrackerUnreachableError


@dataclass
class StageNode:
    """A stage and the node session that runs it (None while none is connected)."""

    index: int
    spec: dict
    artifact: Path | None     # None: an FPGA node's stage (the bundle flashed on the node)
    session: NodeSession | None = None
    failures: int = 0
    replaced: list[str] = field(default_factory=list)


class PipelineRunner:
    """Runs a pipeline plan on the nodes of a tracker.

    Parameters
    ----------
    plan
        From ``plan.read_plan`` (artifact paths resolved).
    tracker
        Where the nodes are; its ``security`` is the host's data plane identity.
    bind
        The host address the last stage's node sends results to (the nodes must reach it).
    session_timeout, call_timeout, stall_timeout
        The node session lifetime the tracker grants; seconds per control call; seconds without any result
        before the host checks the stages' nodes.
    """

    def __init__(self, plan: dict, tracker: Tracker, bind: str = "127.0.0.1", session_timeout: float = 3600.0,
                 call_timeout: float = 30.0, stall_timeout: float = 10.0, max_attempts: int = 3):
        from .dataplane import Server

        if plan.get("strategy") != "pipeline":
            raise EdgevitError(f"plan strategy '{plan.get('strategy')}' is not a pipeline")
        self.plan, self.tracker = plan, tracker
        self.session_timeout, self.call_timeout, self.stall_timeout = session_timeout, call_timeout, stall_timeout
        self.max_attempts = max_attempts
        self.stages = [StageNode(i, st, Path(st["artifact"]) if "artifact" in st else None)
                       for i, st in enumerate(plan["stages"])]
        self.results: queue.Queue = queue.Queue()
        self.sink = Server(bind, tracker.security, self._on_result)
        self.feed = None  # data plane client to the first stage's node
        self.epoch = 0
        self.counters = {"resent": 0, "stale_results": 0, "duplicate_results": 0, "stage_errors": 0,
                         "nodes_replaced": 0}

    # ---- connections -----------------------------------------------------------------------------------
    def _on_result(self, op: str, header: dict, arrays: list) -> None:
        if op == "result":
            self.results.put((header, [np.array(a) for a in arrays]))
        return None

    def _connect(self, stage: StageNode, wait: float) -> None:
        """A session for ``stage`` on a free node of its key, with its artifact loaded."""
        key = stage.spec["node_key"]
        deadline = time.monotonic() + wait
        last = None
        while time.monotonic() < deadline:
            try:
                if self.tracker.free(key) > 0:
                    session = self.tracker.request(key, self.session_timeout, wait=min(10.0, wait))
                    if stage.artifact is None:
                        session.ensure_accelerator(stage.spec["sha256"])
                    else:
                        session.ensure_artifact(stage.artifact, stage.spec["sha256"])
                    stage.session = session
                    return
            except (TrackerUnreachableError, ArtifactError):
                raise  # waiting would not help: no tracker, or the plan's artifact is not what it says
            except EdgevitError as exc:
                last = exc
            time.sleep(0.3)
        reason = f" (last error: {last})" if last else ""
        raise ExecutionError(f"no '{key}' node for {stage.spec['name']} within {wait:g} s{reason}: start one with "
                             f"`edgevit node --tracker HOST:PORT --key {key} ...`")

    def _route(self) -> None:
        """Tell every stage's node where its results go, last stage first, then point the host's feed at the
        first stage."""
        from .dataplane import Client

        sink = (self.sink.address, self.sink.public_key)
        for stage in reversed(self.stages):
            nxt = self.stages[stage.index + 1].session if stage.index + 1 < len(self.stages) else None
            stage.session.route(stage.spec["sha256"], (nxt.address, nxt.public_key) if nxt else None, sink,
                                stage.index)
        first = self.stages[0].session
        if self.feed is not None:
            self.feed.close()
        self.feed = Client(first.address, first.public_key, self.tracker.security, self.call_timeout)

    def open(self, wait: float = 60.0) -> None:
        """Connect every stage to a node and route them (waiting up to ``wait`` s for nodes)."""
        for stage in self.stages:
            if stage.session is None:
                self._connect(stage, wait)
        self._route()

    def _alive(self, stage: StageNode) -> bool:
        if stage.session is None:
            return False
        try:
            stage.session.health(timeout=5.0)
            stage.session.data.call("echo", {}, [], timeout=5.0)
            return True
        except EdgevitError:
            return False

    def _recover(self, wait: float) -> list[str]:
        """Replace every stage whose node stopped answering; returns what was replaced."""
        replaced = []
        for stage in self.stages:
            if self._alive(stage):
                continue
            stage.failures += 1
            _drop_session(stage)
            self._connect(stage, wait)
            replaced.append(stage.spec["name"])
            self.counters["nodes_replaced"] += 1
        if replaced:
            self._route()
        return replaced

    # ---- streaming -------------------------------------------------------------------------------------
    def _send(self, seq: int, inputs: list[np.ndarray]) -> None:
        self.feed.send("feed", {"seq": seq, "epoch": self.epoch}, inputs)

    def stream(self, images: list[list[np.ndarray]], window: int | None = None, wait: float = 60.0,
               on_result=None) -> list[dict]:
        """Push inputs through the pipeline with at most ``window`` in flight (default: two per stage).

        Parameters
        ----------
        images
            Each item is the list of model inputs for one inference.
        on_result
            Called with each finished item's index (progress).

        Returns
        -------
        list of dict
            In input order: ``outputs`` (list of arrays) or ``error``, the end-to-end ``latency_ms`` (from
            its last send), ``attempts``, and the nodes' ``trace`` (per stage: compute ms, bytes, times).
        """
        window = window or 2 * len(self.stages)
        pending = list(range(len(images)))[::-1]  # a stack: pop() gives the next index
        in_flight: dict[int, float] = {}
        attempts = {i: 0 for i in range(len(images))}
        done: dict[int, dict] = {}
        last_progress = time.monotonic()
        while len(done) < len(images):
            while pending and len(in_flight) < window:
                seq = pending.pop()
                attempts[seq] += 1
                in_flight[seq] = time.perf_counter()
                self._send(seq, images[seq])
            try:
                header, outputs = self.results.get(timeout=0.2)
            except queue.Empty:
                if in_flight and time.monotonic() - last_progress > self.stall_timeout:
                    self._restart(in_flight, pending, attempts, done, wait)
                    last_progress = time.monotonic()
                continue
            seq = header.get("seq")
            if header.get("epoch") != self.epoch or seq not in in_flight:
                self.counters["stale_results" if header.get("epoch") != self.epoch else "duplicate_results"] += 1
                continue
            last_progress = time.monotonic()
            if "error" in header:
                self.counters["stage_errors"] += 1
                del in_flight[seq]
                if attempts[seq] >= self.max_attempts:
                    done[seq] = {"outputs": None, "error": f"stage{header.get('stage')}: {header['error']}",
                                 "attempts": attempts[seq], "latency_ms": None, "trace": header.get("trace", [])}
                else:
                    pending.append(seq)
                continue
            latency = (time.perf_counter() - in_flight.pop(seq)) * 1e3
            done[seq] = {"outputs": outputs, "error": None, "attempts": attempts[seq], "latency_ms": latency,
                         "trace": header.get("trace", [])}
            if on_result:
                on_result(seq)
        return [done[i] for i in range(len(images))]

    def _restart(self, in_flight: dict, pending: list, attempts: dict, done: dict, wait: float) -> None:
        """After a stall: replace dead nodes; if one was replaced, or the oldest input has waited three stall
        periods with every node alive (a message lost on the way), start a new epoch and send every unanswered
        input again. A slow stage whose nodes answer is left to finish."""
        replaced = self._recover(wait)
        oldest = (time.perf_counter() - min(in_flight.values())) if in_flight else 0.0
        if not replaced and oldest < 3 * self.stall_timeout:
            return
        why = f"node(s) of {', '.join(replaced)} replaced" if replaced else f"no result for {oldest:.0f} s"
        self.epoch += 1
        for seq in sorted(in_flight, reverse=True):
            if attempts[seq] >= self.max_attempts + len(replaced):
                done[seq] = {"outputs": None, "error": f"no result after {attempts[seq]} attempts ({why})",
                             "attempts": attempts[seq], "latency_ms": None, "trace": []}
            else:
                pending.append(seq)
                self.counters["resent"] += 1
        in_flight.clear()

    def run_stages(self, inputs: list[np.ndarray]) -> list[tuple[list, list]]:
        """Run one input through the stages one at a time over each node's ``run`` (the code its stream runs),
        each stage fed the previous node's outputs; returns every stage's inputs and outputs (``infer --verify``
        of an int8 plan checks each stage on them)."""
        runs = []
        for stage in self.stages:
            outputs = stage.session.run(stage.spec["sha256"], inputs)
            runs.append((inputs, outputs))
            inputs = outputs
        return runs

    def placement(self) -> list[dict]:
        """Where each stage's node runs: ``{"machine", "cpus"}``; nodes on loopback share this machine."""
        import os
        import socket

        out = []
        for stage in self.stages:
            info = stage.session.info if stage.session is not None else {}
            host = str(info.get("host", ""))
            here = host in LOOPBACK or host == socket.gethostname()
            out.append({"machine": "this machine" if here else host,
                        "cpus": os.cpu_count() if here else int(info.get("cpus") or 1)})
        return out

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        for stage in self.stages:
            _drop_session(stage)
        self.sink.close()


def _drop_session(stage: StageNode) -> None:
    """Close a stage's session, if any; a node that is already gone makes closing fail, which is fine."""
    if stage.session is not None:
        try:
            stage.session.close()
        except (OSError, EdgevitError):
            pass
        stage.session = None


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def shared_machine_period(plan: dict, placement: list[dict]) -> float | None:
    """The period the machine's cores allow when stage nodes share it with each other (and the host).

    Nodes on one machine compete for its cores: per image, the machine does the compute of every stage it
    hosts and, for each tensor that enters or leaves one of its nodes, the copy and encryption on the sending
    and the receiving side (on loopback a transfer is CPU work, its predicted time spent twice). The period
    is at least that work divided by the machine's cores. None when no two parties share a machine.
    ``placement`` gives each stage's node ``{"machine", "cpus"}`` (``PipelineRunner.placement``).
    """
    stages = plan["stages"]
    machines: dict[str, dict] = {}
    for st, where in zip(stages, placement):
        m = machines.setdefault(where["machine"], {"cpus": where["cpus"], "work": 0.0, "members": 0})
        m["members"] += 1
        m["work"] += st["predicted"]["compute_ms"] + 2 * st["predicted"]["in_ms"]
    last = placement[-1]["machine"] if placement else None
    if last in machines:
        machines[last]["work"] += 2 * stages[-1]["predicted"]["out_ms"]
    periods = [m["work"] / max(1, m["cpus"]) for m in machines.values() if m["members"] > 1]
    return max(periods) if periods else None


def summarize(plan: dict, single: list[dict], streamed: list[dict], wall_s: float,
              placement: list[dict] | None = None) -> dict:
    """The report of an ``infer`` run: per stage and per link, measured next to predicted.

    ``single`` are items sent one at a time (latency), ``streamed`` the items of the throughput run.
    Per-link transfer is the time from one stage's send to the next stage's receipt, taken from the nodes'
    clocks (exact on one machine; on a LAN it includes the clocks' offset). With ``placement``, the
    throughput prediction also respects the cores of machines that several stage nodes share
    (:func:`shared_machine_period`).
    """
    ok = [r for r in single if r["error"] is None]
    stages = []
    for index, st in enumerate(plan["stages"]):
        compute = [t["compute_ms"] for r in ok for t in r["trace"] if t["stage"] == index]
        # The same stage while the pipeline is full: nodes that share a machine slow each other down.
        busy = [t["compute_ms"] for r in streamed if r["error"] is None for t in r.get("trace") or []
                if t["stage"] == index]
        stages.append({"stage": st["name"], "node": st["slot"], "target": st["target"],
                       "compute_ms": float(np.median(compute)) if compute else None,
                       "streaming_compute_ms": float(np.median(busy)) if busy else None,
                       "predicted_compute_ms": st["predicted"]["compute_ms"],
                       "bytes_in": st["predicted"]["in_bytes"]})
    links = []
    for index in range(len(plan["stages"]) + 1):
        name = ("host -> " if index == 0 else f"{plan['stages'][index - 1]['name']} -> ") + (
            plan["stages"][index]["name"] if index < len(plan["stages"]) else "host")
        samples = []
        for r in ok:
            trace = {t["stage"]: t for t in r["trace"]}
            if 0 < index < len(plan["stages"]) and index - 1 in trace and index in trace:
                samples.append((trace[index]["received"] - trace[index - 1]["sent"]) * 1e3)
        predicted = (plan["stages"][index]["predicted"]["in_ms"] if index < len(plan["stages"])
                     else plan["stages"][-1]["predicted"]["out_ms"])
        nbytes = (plan["stages"][index]["predicted"]["in_bytes"] if index < len(plan["stages"])
                  else plan["stages"][-1]["predicted"]["out_bytes"])
        links.append({"link": name, "bytes": nbytes, "transfer_ms": float(np.median(samples)) if samples else None,
                      "predicted_ms": predicted})
    latencies = [r["latency_ms"] for r in ok]
    failed = [r for r in streamed if r["error"] is not None]
    predicted_rate = plan["predicted"]["images_per_s"]
    shared = shared_machine_period(plan, placement) if placement else None
    if shared is not None:
        predicted_rate = min(predicted_rate, 1e3 / shared)
    return {"stages": stages, "links": links,
            "latency_ms": float(np.median(latencies)) if latencies else None,
            "predicted_latency_ms": plan["predicted"]["latency_ms"],
            "images_per_s": (len(streamed) - len(failed)) / wall_s if wall_s > 0 else None,
            "predicted_images_per_s": predicted_rate,
            "predicted_images_per_s_separate_machines": plan["predicted"]["images_per_s"],
            "shared_machine_period_ms": shared,
            "one_node_predicted": plan.get("one_node", {}),
            "failed": len(failed), "errors": [r["error"] for r in failed][:10]}
