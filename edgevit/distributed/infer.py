"""Running plans on nodes: sessions that recover, failover to another node of the same key, and the
class-split runner (sub-models concurrently on their nodes, then the fusion head).

Failure rules: every call has a timeout; a failed call closes its session and is retried on another node of
the same key (then on a fresh session from the tracker); if no node can run a sub-model the answer is marked
``degraded`` and lists what is missing. Each request gets exactly one answer.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, EdgevitError, ExecutionError
from .client import CallStats, NodeSession, Tracker, TrackerUnreachableError
from .plan import fuse, fusion_of


class Slot:
    """A node in use by the host: a session that can be lost and re-requested from the tracker."""

    def __init__(self, name: str, key: str, artifacts: dict[str, Path]):
        self.name, self.key, self.artifacts = name, key, artifacts  # sha256 -> artifact file
        self.session: NodeSession | None = None
        self.lock = threading.Lock()
        self.failures = 0
        self.stats = CallStats()  # shared with every session of this slot, so it survives reconnects
        self._next_attempt = 0.0

    def connect(self, tracker: Tracker, session_timeout: float, wait: float = 2.0) -> bool:
        """Make sure there is a live session with every artifact loaded; False if no node of the key became
        free within ``wait`` seconds. Call with ``lock`` held."""
        if self.session is not None:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        try:
            # Only ask when a node is free: TVM's tracker keeps a withdrawn request queued, and a queued
            # request whose client has gone swallows the next node that registers.
            if tracker.free(self.key) == 0:
                self._next_attempt = time.monotonic() + 0.5
                return False
            session = tracker.request(self.key, session_timeout, wait)
            for digest, path in self.artifacts.items():
                session.ensure_artifact(path, digest)
        except (TrackerUnreachableError, ArtifactError):
            raise  # no other node would do better: the tracker is down or the plan's artifact changed
        except EdgevitError:
            self._next_attempt = time.monotonic() + 1.0
            return False
        session.stats = self.stats
        self.session = session
        return True

    def run(self, digest: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run on this slot's session (lock held by the caller); a failure drops the session and re-raises."""
        session = self.session
        if session is None:
            raise ExecutionError(f"no session on '{self.name}'")
        try:
            out = session.run(digest, inputs)
        except EdgevitError:
            self.drop()
            raise
        return out

    def drop(self) -> None:
        self.failures += 1
        if self.session is not None:
            try:
                self.session.close()
            except OSError:
                pass
        self.session = None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class SlotPool:
    """Slots grouped by key, with failover: ``run`` tries the preferred slot, then every other slot of the
    same key, reconnecting dead ones through the tracker."""

    def __init__(self, tracker: Tracker, slots: list[Slot], session_timeout: float = 600.0):
        self.tracker, self.slots, self.session_timeout = tracker, slots, session_timeout
        self.retries = 0  # failed attempts that were tried again elsewhere

    def open(self, wait: float = 60.0) -> None:
        """Connect every slot (waiting up to ``wait`` s for nodes to register)."""
        deadline = time.monotonic() + wait
        for slot in self.slots:
            while True:
                with slot.lock:
                    if slot.connect(self.tracker, self.session_timeout, wait=5.0):
                        break
                if time.monotonic() > deadline:
                    raise ExecutionError(f"no '{slot.key}' node for {slot.name} within {wait:g} s: start one with "
                                         f"`edgevit node --tracker HOST:PORT --key {slot.key}`")
                time.sleep(0.5)

    def run(self, preferred: Slot, digest: str, inputs: list[np.ndarray],
            wait: float = 0.0) -> tuple[list[np.ndarray], Slot]:
        """Run ``digest`` on ``preferred`` or, failing that, on another slot of its key; while no node of
        the key can take it, keep trying for up to ``wait`` seconds (nodes being restarted).

        Raises
        ------
        ExecutionError
            No slot of that key could run it in time (the caller marks the answer degraded).
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._run_once(preferred, digest, inputs)
            except ExecutionError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.2)

    def _run_once(self, preferred: Slot, digest: str, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], Slot]:
        candidates = [preferred] + [s for s in self.slots if s is not preferred and s.key == preferred.key
                                    and digest in s.artifacts]
        errors = []
        for slot in candidates:
            with slot.lock:
                if not slot.connect(self.tracker, self.session_timeout):
                    errors.append(f"{slot.name}: no node")
                    continue
                try:
                    return slot.run(digest, inputs), slot
                except EdgevitError as exc:
                    errors.append(f"{slot.name}: {exc}")
                    self.retries += 1
        raise ExecutionError(f"no '{preferred.key}' node could run {digest[:12]}: " + "; ".join(errors))

    def breakdown(self) -> list[dict]:
        """Per slot: calls, compute and transfer ms, bytes each way, failures (totals over the run)."""
        return [{"slot": s.name, "key": s.key, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                  for k, v in asdict(s.stats).items()}, "failures": s.failures}
                for s in self.slots]

    def close(self) -> None:
        for slot in self.slots:
            slot.close()


def make_slots(entries: list[tuple[str, str, str, Path]]) -> dict[str, Slot]:
    """Slots from ``(slot name, node key, artifact sha256, artifact path)`` entries of a plan.

    Every slot of a key can take over any artifact of that key, so it loads them all.
    """
    per_key: dict[str, dict[str, Path]] = {}
    keys: dict[str, str] = {}
    for name, key, digest, path in entries:
        per_key.setdefault(key, {})[digest] = Path(path)
        keys[name] = key
    return {name: Slot(name, key, dict(per_key[key])) for name, key in keys.items()}


@dataclass
class Answer:
    """One inference result. ``degraded`` answers list the sub-models whose output is missing."""

    logits: np.ndarray | None
    prediction: int | None
    degraded: bool = False
    missing: list[str] = field(default_factory=list)
    latency_ms: float = 0.0


class ClassSplitRunner:
    """Runs a class-split plan: each input goes to all sub-models at once (one thread per node slot), the
    fusion head combines their outputs. A sub-model that no node can run leaves the answer degraded."""

    def __init__(self, plan: dict, tracker: Tracker, session_timeout: float = 600.0):
        if plan.get("strategy") != "class":
            raise EdgevitError(f"plan strategy '{plan.get('strategy')}' is not a class split")
        self.plan = plan
        self.weight, self.bias = fusion_of(plan)
        self.slots = make_slots([(sub["slot"], sub["node_key"], sub["sha256"], sub["artifact"])
                                 for sub in plan["submodels"]])
        self.groups: dict[str, list[dict]] = {}  # slot -> its sub-models, in plan order
        for sub in plan["submodels"]:
            self.groups.setdefault(sub["slot"], []).append(sub)
        self.pool = SlotPool(tracker, list(self.slots.values()), session_timeout)
        self.executor = ThreadPoolExecutor(max_workers=max(1, len(self.slots)), thread_name_prefix="edgevit-slot")

    def open(self, wait: float = 60.0) -> None:
        self.pool.open(wait)

    def _run_slot(self, slot: Slot, subs: list[dict], x: np.ndarray) -> dict[str, np.ndarray | str]:
        results: dict[str, np.ndarray | str] = {}
        for sub in subs:
            try:
                (out,), _ = self.pool.run(slot, sub["sha256"], [x])
            except EdgevitError as exc:
                results[sub["name"]] = str(exc)
                continue
            if out.shape != (1, sub["outputs"]) or not np.all(np.isfinite(out)):
                results[sub["name"]] = f"bad output {out.dtype}{list(out.shape)}"
            else:
                results[sub["name"]] = out
        return results

    def infer(self, x: np.ndarray) -> Answer:
        start = time.perf_counter()
        futures = [self.executor.submit(self._run_slot, self.slots[name], subs, x)
                   for name, subs in self.groups.items()]
        results: dict[str, np.ndarray | str] = {}
        for future in futures:
            results.update(future.result())
        missing = [name for name, value in results.items() if isinstance(value, str)]
        parts = []
        for sub in self.plan["submodels"]:
            value = results[sub["name"]]
            parts.append(value if not isinstance(value, str) else np.zeros((1, sub["outputs"]), np.float32))
        logits = fuse(parts, self.weight, self.bias)
        latency = (time.perf_counter() - start) * 1e3
        return Answer(logits, int(logits.argmax()), bool(missing), missing, latency)

    def breakdown(self) -> list[dict]:
        return self.pool.breakdown()

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.pool.close()
