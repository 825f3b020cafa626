"""The host's view of a cluster: TVM's tracker for discovery, one TVM RPC session per node in use, and the
tensor channel beside each session.

Every call here has a timeout. TVM RPC calls block in C++ and cannot be interrupted, so each one runs in a
daemon thread the caller waits on; a call that times out abandons its session (the node's session process
is ended by the session timeout the host asked for when it requested the node).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgevitError, ExecutionError, errors_by_name
from ..runtime.artifact import sha256_file
from .channel import ChannelClient
from .node import INFO_KEY_PREFIX


def call_with_timeout(fn, *args, timeout: float, what: str):
    """Run ``fn(*args)`` in a daemon thread; raise ``ExecutionError`` after ``timeout`` seconds or if it
    raises (TVM's errors are wrapped, edgevit's pass through)."""
    result: queue.Queue = queue.Queue(1)

    def target():
        try:
            result.put((True, fn(*args)))
        except BaseException as exc:  # handed to the caller's thread
            result.put((False, exc))

    threading.Thread(target=target, daemon=True, name=f"edgevit-{what}").start()
    try:
        ok, value = result.get(timeout=timeout)
    except queue.Empty:
        raise ExecutionError(f"{what} timed out after {timeout:g} s") from None
    if ok:
        return value
    if isinstance(value, EdgevitError):
        raise value
    message = str(value).strip().splitlines()
    raise ExecutionError(f"{what} failed: {type(value).__name__}: {message[-1] if message else ''}") from None


def artifact_digest(path: Path) -> str:
    """The sha256 of a whole artifact file: its name on nodes and what a node checks before loading."""
    return sha256_file(path)


def _decode(reply: str, what: str) -> dict:
    data = json.loads(reply)
    if isinstance(data, dict) and "error" in data:
        raise errors_by_name(data["kind"])(f"{what}: {data['error']}")
    return data


@dataclass
class Tracker:
    """A TVM RPC tracker at ``host:port``."""

    host: str
    port: int
    timeout: float = 20.0

    def _session(self):
        from tvm import rpc

        return call_with_timeout(rpc.connect_tracker, self.host, self.port, timeout=self.timeout,
                                 what=f"connecting to the tracker {self.host}:{self.port}")

    def summary(self) -> dict:
        session = self._session()
        try:
            return call_with_timeout(session.summary, timeout=self.timeout, what="tracker summary")
        finally:
            session.close()

    def nodes(self) -> list[dict]:
        """Per key: total/free/busy/queued servers and, per server, what the node published (arch, memory,
        versions)."""
        summary = self.summary()
        described = {tuple(s["addr"]): s.get("edgevit", {}) for s in summary["server_info"]
                     if s.get("key", "").startswith(INFO_KEY_PREFIX)}
        rows: dict[str, dict] = {}
        for server in summary["server_info"]:
            key = server.get("key", "")
            if not key.startswith("server:"):
                continue
            name = key.split(":", 1)[1]
            row = rows.setdefault(name, {"key": name, "total": 0, "servers": []})
            row["total"] += 1
            row["servers"].append({"addr": list(server["addr"]), **described.get(tuple(server["addr"]), {})})
        for name, queue_info in summary["queue_info"].items():
            row = rows.setdefault(name, {"key": name, "total": 0, "servers": []})
            row["free"], row["queued"] = queue_info["free"], queue_info["pending"]
        for row in rows.values():
            row.setdefault("free", 0)
            row.setdefault("queued", 0)
            row["busy"] = max(0, row["total"] - row["free"])
        return sorted(rows.values(), key=lambda r: r["key"])

    def free(self, key: str) -> int:
        """How many nodes of ``key`` are free right now."""
        return self.summary()["queue_info"].get(key, {}).get("free", 0)

    def request(self, key: str, session_timeout: float = 600.0, wait: float | None = None) -> "NodeSession":
        """A session on a free node of kind ``key``, waiting at most ``wait`` seconds (default ``timeout``)
        for one. A request that times out is withdrawn (its tracker connection is closed)."""
        tracker = self._session()
        try:
            rpc_session = call_with_timeout(tracker.request, key, 1, session_timeout, 1,
                                            timeout=self.timeout if wait is None else wait,
                                            what=f"requesting a '{key}' node")
        finally:
            tracker.close()
        return NodeSession(rpc_session, key, self.timeout)


@dataclass
class CallStats:
    """What one node spent on the calls made through a session."""

    compute_ms: float = 0.0
    transfer_ms: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0


class NodeSession:
    """One RPC session on a node, with its tensor channel. Not thread-safe: one caller at a time."""

    def __init__(self, rpc_session, key: str, timeout: float = 20.0):
        self.rpc, self.key, self.timeout = rpc_session, key, timeout
        self._functions: dict[str, object] = {}
        self.stats = CallStats()
        self._counter = 0
        self.loaded: dict[str, dict] = {}
        self.info = self._json("info")
        channel = self._json("channel")
        self.channel = ChannelClient(channel["host"], channel["port"], channel["token"], timeout)

    def _call(self, name: str, *args, timeout: float | None = None):
        if name not in self._functions:
            self._functions[name] = self.rpc.get_function(f"edgevit.node.{name}")
        return call_with_timeout(self._functions[name], *args, timeout=timeout or self.timeout,
                                 what=f"edgevit.node.{name} on '{self.key}'")

    def _json(self, name: str, *args, timeout: float | None = None) -> dict:
        return _decode(self._call(name, *args, timeout=timeout), f"node '{self.key}'")

    def health(self) -> dict:
        return self._json("health")

    def ensure_artifact(self, path: Path, digest: str | None = None) -> dict:
        """Upload the artifact unless the node has it, then have the node verify and load it."""
        digest = digest or artifact_digest(path)
        if self._call("has", digest) != "1":
            self.channel.put_file(f"{digest}.tar", Path(path).read_bytes())
        self.loaded[digest] = self._json("load", digest, timeout=max(self.timeout, 120.0))
        return self.loaded[digest]

    def run(self, digest: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Send the inputs, run an artifact loaded by ``ensure_artifact``, fetch its outputs; adds to ``stats``."""
        self._counter += 1
        names = [f"in{self._counter}_{i}" for i in range(len(inputs))]
        outs = [f"out{self._counter}_{i}" for i in range(len(self.loaded[digest]["outputs"]))]
        start = time.perf_counter()
        sent0, recv0 = self.channel.bytes_sent, self.channel.bytes_received
        for name, x in zip(names, inputs):
            self.channel.put(name, x)
        sent = time.perf_counter()
        result = self._json("run", digest, json.dumps(names), json.dumps(outs))
        ran = time.perf_counter()
        outputs = [self.channel.get(name) for name in outs]
        self.channel.drop(outs)
        done = time.perf_counter()
        compute = result["seconds"] * 1e3
        self.stats.compute_ms += compute
        self.stats.transfer_ms += (sent - start + done - ran) * 1e3 + max(0.0, (ran - sent) * 1e3 - compute)
        self.stats.bytes_sent += self.channel.bytes_sent - sent0
        self.stats.bytes_received += self.channel.bytes_received - recv0
        self.stats.calls += 1
        return outputs

    def measure_link(self, repeat: int = 5) -> tuple[float, float]:
        """The link into this node: (MB/s for a 1 MiB tensor each way, ms of one small message round trip)."""
        blob, tiny = np.zeros(1 << 18, np.float32), np.zeros(1, np.float32)
        self.channel.put("link-probe", tiny)
        start = time.perf_counter()
        for _ in range(repeat):
            self.channel.put("link-probe", tiny)
        message_ms = (time.perf_counter() - start) / repeat * 1e3
        start = time.perf_counter()
        for _ in range(repeat):
            self.channel.put("link-probe", blob)
            self.channel.get("link-probe")
        seconds = max((time.perf_counter() - start) / (2 * repeat) - message_ms / 2e3, 1e-9)
        self.channel.drop(["link-probe"])
        return blob.nbytes / seconds / 1e6, message_ms / 2

    def close(self) -> None:
        """End the session. A call still blocked in TVM (after a timeout) would make releasing the session
        wait for it, so the RPC socket is shut down first: the blocked call then fails at once."""
        self.channel.close()
        self._shutdown_rpc_socket()
        self.rpc = None
        self._functions.clear()

    def _shutdown_rpc_socket(self) -> None:
        import os
        import socket

        import psutil

        peer = (self.info.get("host"), self.info.get("port"))
        for conn in psutil.Process().net_connections(kind="tcp"):
            if conn.raddr and (conn.raddr.ip, conn.raddr.port) == peer and conn.fd >= 0:
                try:
                    with socket.socket(fileno=os.dup(conn.fd)) as sock:
                        sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
