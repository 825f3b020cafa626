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

from ..errors import ArtifactError, EdgevitError, ExecutionError, errors_by_name
from ..runtime.artifact import sha256_file
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


class TrackerUnreachableError(ExecutionError):
    """The tracker does not answer (so no node can be found, whatever nodes exist)."""


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
    security: object = None  # the host's data plane Security (dataplane.Security)

    def _session(self):
        from tvm import rpc

        try:
            return call_with_timeout(rpc.connect_tracker, self.host, self.port, timeout=self.timeout,
                                     what=f"connecting to the tracker {self.host}:{self.port}")
        except ExecutionError as exc:
            raise TrackerUnreachableError(f"the tracker {self.host}:{self.port} does not answer ({exc}): is "
                                          "`edgevit tracker` running there?") from None

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
        if self.security is None:
            raise EdgevitError("the host needs data plane security to use nodes: --keys DIR (or "
                               "--insecure-plaintext)")
        return NodeSession(rpc_session, key, self.security, self.timeout)


@dataclass
class CallStats:
    """What one node spent on the calls made through a session."""

    compute_ms: float = 0.0
    transfer_ms: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0


class NodeSession:
    """One RPC session on a node (control) with a data plane client to its server (tensors). Not thread-safe:
    one caller at a time."""

    def __init__(self, rpc_session, key: str, security, timeout: float = 20.0):
        from .dataplane import Client

        self.rpc, self.key, self.timeout = rpc_session, key, timeout
        self._functions: dict[str, object] = {}
        self.stats = CallStats()
        self.loaded: dict[str, dict] = {}
        self.info = self._json("info")
        where = self._json("dataplane")
        self.address, self.public_key = where["address"], where["public_key"]
        self.data = Client(self.address, self.public_key, security, timeout)

    def _call(self, name: str, *args, timeout: float | None = None):
        if name not in self._functions:
            self._functions[name] = call_with_timeout(self.rpc.get_function, f"edgevit.node.{name}",
                                                      timeout=timeout or self.timeout,
                                                      what=f"looking up edgevit.node.{name} on '{self.key}'")
        return call_with_timeout(self._functions[name], *args, timeout=timeout or self.timeout,
                                 what=f"edgevit.node.{name} on '{self.key}'")

    def _json(self, name: str, *args, timeout: float | None = None) -> dict:
        return _decode(self._call(name, *args, timeout=timeout), f"node '{self.key}'")

    def health(self, timeout: float | None = None) -> dict:
        return self._json("health", timeout=timeout)

    def ensure_artifact(self, path: Path, digest: str | None = None) -> dict:
        """Upload the artifact (data plane) unless the node has it, then have the node verify and load it.

        Raises
        ------
        ArtifactError
            The file is missing or is not the one the plan names (``digest``): changed since planning.
        """
        try:
            actual = artifact_digest(path)
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {path}: {exc}") from None
        if digest is not None and actual != digest:
            raise ArtifactError(f"artifact {path} has sha256 {actual[:12]}, not the {digest[:12]} the plan names: "
                                "it changed since planning (make the plan again)")
        digest = actual
        if self._call("has", digest) != "1":
            blob = np.frombuffer(Path(path).read_bytes(), np.uint8)
            self.data.call("put_file", {"name": f"{digest}.tar"}, [blob], timeout=max(self.timeout, 120.0))
        self.loaded[digest] = self._json("load", digest, timeout=max(self.timeout, 120.0))
        return self.loaded[digest]

    def ensure_accelerator(self, digest: str) -> dict:
        """Have an FPGA node start the accelerator of the bundle ``digest`` (nothing is uploaded: the bundle is
        flashed on the board, ``edgevit node --fpga BUNDLE``).

        Raises
        ------
        ArtifactError
            The node runs no bundle, or another one.
        """
        if self._call("has", digest) != "1":
            fpga = self.info.get("fpga") or {}
            running = f"runs bundle {fpga['bundle_sha256'][:12]}" if fpga else "runs no bundle (no --fpga)"
            raise ArtifactError(f"node '{self.key}' {running}, but the plan's stage needs bundle {digest[:12]}: "
                                "start the node with --fpga and the bundle the plan was made with")
        self.loaded[digest] = self._json("load", digest, timeout=max(self.timeout, 300.0))
        return self.loaded[digest]

    def run(self, digest: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run an artifact loaded by ``ensure_artifact`` on ``inputs`` (one data plane round trip); adds to
        ``stats``."""
        sent0, received0 = self.data.bytes_sent, self.data.bytes_received
        start = time.perf_counter()
        header, outputs = self.data.call("run", {"digest": digest}, [np.ascontiguousarray(x) for x in inputs])
        wall = (time.perf_counter() - start) * 1e3
        compute = float(header["seconds"]) * 1e3
        self.stats.compute_ms += compute
        self.stats.transfer_ms += max(0.0, wall - compute)
        self.stats.bytes_sent += self.data.bytes_sent - sent0
        self.stats.bytes_received += self.data.bytes_received - received0
        self.stats.calls += 1
        return [np.array(o) for o in outputs]  # writable copies: received arrays are views of the message

    def route(self, digest: str, next_hop: tuple[str, str | None] | None, sink: tuple[str, str | None],
              stage: int) -> None:
        """Make this node run ``digest`` on streamed inputs and send results to ``next_hop`` (another node's
        data plane) or, for the last stage, to ``sink`` (the host's)."""
        next_address, next_key = next_hop or ("", None)
        self._json("route", digest, next_address, next_key or "", sink[0], sink[1] or "", stage,
                   timeout=max(self.timeout, 120.0))

    def measure_link(self, repeat: int = 5) -> tuple[float, float]:
        """The link into this node: (MB/s for a 1 MiB tensor each way, ms of one small message one way)."""
        blob, tiny = np.zeros(1 << 18, np.float32), np.zeros(1, np.float32)
        self.data.call("echo", {}, [tiny])
        start = time.perf_counter()
        for _ in range(repeat):
            self.data.call("echo", {}, [tiny])
        message_ms = (time.perf_counter() - start) / repeat * 1e3 / 2
        start = time.perf_counter()
        for _ in range(repeat):
            self.data.call("echo", {}, [blob])
        seconds = max((time.perf_counter() - start) / (2 * repeat) - message_ms / 1e3, 1e-9)
        return blob.nbytes / seconds / 1e6, message_ms

    def close(self) -> None:
        """End the session. A call still blocked in TVM (after a timeout) would make releasing the session
        wait for it, so the RPC socket is shut down first: the blocked call then fails at once."""
        self.data.close()
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
