"""The node agent: a TVM RPC server that registers with a tracker and serves edgevit's functions.

Board side: imports only ``edgevit.runtime`` (and the stdlib-only ``errors``/``settings``/``channel``),
``tvm.runtime``, ``tvm.rpc`` and ``tvm_ffi`` -- never torch, onnx or ``tvm.relax`` -- so it runs with
``TVM_USE_RUNTIME_LIB=1`` on a board and under qemu here::

    python -m edgevit.distributed.node --tracker HOST:9190 --key rpi4 [--host ADDR] [--port 9090]

Functions registered in the server (visible to every RPC session, each one a forked process):

``edgevit.node.info()``          JSON: key, arch, CPUs, memory, versions.
``edgevit.node.health()``        JSON: alive, models loaded in this session, memory available.
``edgevit.node.channel()``       JSON ``{port, token}`` of this session's tensor channel (``channel.py``).
``edgevit.node.has(sha256)``     whether the artifact with that whole-file sha256 is in the node's cache.
``edgevit.node.load(sha256)``    check the cached file's sha256, open and verify the artifact (every member's
                                 sha256, its architecture) and load it into the Relax VM.
``edgevit.node.run(sha256, inputs, outputs)``  run a loaded model on channel tensors named ``inputs``
                                 (JSON list), store its results as ``outputs``; JSON timings.

Errors a user can fix come back as JSON ``{"error", "kind"}`` (an ``edgevit.errors`` class name).

Trust boundary: TVM RPC has no authentication or encryption, and any client that reaches the port can
upload and run code. Run nodes on a trusted LAN or behind an SSH tunnel. What edgevit adds: the node binds
only the address it is given (default 127.0.0.1), it loads nothing whose sha256 does not match what the
host asked for, and the tensor channel accepts one connection that presents a per-session random token.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

from ..errors import ArtifactError, EdgevitError
from ..runtime import host_arch
from ..runtime.artifact import Artifact, sha256_file
from ..settings import cache_dir
from .channel import ChannelServer

INFO_KEY_PREFIX = "server-edgevit:"  # tracker entry carrying a node's description (shown by `edgevit nodes`)
_HASH = re.compile(r"^[0-9a-f]{64}$")


class NodeState:
    """What one node process knows; each RPC session (a fork) gets its own copy of ``models`` and ``store``."""

    def __init__(self, key: str, host: str, cache: Path, run_delay: float = 0.0):
        self.key, self.host, self.cache, self.run_delay = key, host, cache, run_delay
        self.started, self.pid, self.port = time.time(), os.getpid(), None
        self.models: dict[str, object] = {}
        self.store: dict[str, object] = {}
        self.channel: ChannelServer | None = None

    def artifact_path(self, name: str) -> Path:
        """Where the artifact named ``<sha256>.tar`` lives; refuses any other name."""
        if not name.endswith(".tar") or not _HASH.match(name[:-4]):
            raise ValueError(f"refusing upload '{name}': artifacts are named <sha256>.tar")
        return self.cache / name

    def info(self) -> dict:
        import tvm

        return {"key": self.key, "arch": host_arch(), "cpus": os.cpu_count(), "memory": _memory(),
                "versions": {"tvm": tvm.__version__, "python": platform.python_version(),
                             "edgevit": _edgevit_version()},
                "host": self.host, "port": self.port, "node_pid": self.pid, "session_pid": os.getpid()}

    def health(self) -> dict:
        return {"ok": True, "key": self.key, "uptime": time.time() - self.started,
                "loaded": sorted(self.models), "memory": _memory()}

    def open_channel(self) -> dict:
        if self.channel is None:
            self.channel = ChannelServer(self.host, self.store, self.artifact_path)
        return self.channel.describe()

    def has(self, digest: str) -> bool:
        path = self.cache / f"{digest}.tar"
        return bool(_HASH.match(digest)) and path.is_file()

    def load(self, digest: str) -> dict:
        from ..runtime.runner import check_arch
        from ..runtime.tvm_runtime import CompiledModel

        if digest in self.models:
            return self.models[digest][1]
        path = self.artifact_path(f"{digest}.tar")
        if not path.is_file():
            raise ArtifactError(f"artifact {digest[:12]} is not on node '{self.key}': upload it first")
        actual = sha256_file(path)
        if actual != digest:
            path.unlink(missing_ok=True)
            raise ArtifactError(f"artifact {digest[:12]} on node '{self.key}' has sha256 {actual[:12]}: "
                                "refused and deleted; upload it again")
        artifact = Artifact.open(path)
        try:
            check_arch(artifact.metadata)
            model = CompiledModel(artifact.library)
        finally:
            artifact.close()
        meta = {k: artifact.metadata[k] for k in ("model", "inputs", "outputs", "target")}
        self.models[digest] = (model, meta)
        return meta

    def run(self, digest: str, inputs: list[str], outputs: list[str]) -> dict:
        from ..runtime.runner import check_inputs

        if digest not in self.models:
            self.load(digest)
        model, meta = self.models[digest]
        try:
            arrays = [self.store[name] for name in inputs]
        except KeyError as exc:
            raise ArtifactError(f"input tensor {exc} was not sent to node '{self.key}'") from None
        check_inputs({"inputs": meta["inputs"]}, arrays)
        start = time.perf_counter()
        results = model(arrays)
        seconds = time.perf_counter() - start
        if self.run_delay:
            time.sleep(self.run_delay)
        for name, value in zip(outputs, results):
            self.store[name] = value
        for name in inputs:
            self.store.pop(name, None)
        return {"seconds": seconds, "outputs": len(results)}


def _edgevit_version() -> str:
    from .. import __version__

    return __version__


def _memory() -> dict:
    """Total and available memory in MiB, from /proc/meminfo (no psutil needed on a board)."""
    fields = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0]) // 1024
    except (OSError, ValueError):
        return {}
    return {"total_mib": fields.get("MemTotal"), "available_mib": fields.get("MemAvailable")}


def _reply(fn, *args) -> str:
    try:
        return json.dumps(fn(*args))
    except EdgevitError as exc:
        return json.dumps({"error": str(exc), "kind": type(exc).__name__})


def register_functions(state: NodeState) -> None:
    """Register ``edgevit.node.*`` as TVM global functions (inherited by every forked RPC session)."""
    import tvm_ffi

    functions = {
        "info": lambda: _reply(state.info),
        "health": lambda: _reply(state.health),
        "channel": lambda: _reply(state.open_channel),
        "has": lambda digest: "1" if state.has(digest) else "0",
        "load": lambda digest: _reply(state.load, digest),
        "run": lambda digest, inputs, outputs: _reply(state.run, digest, json.loads(inputs), json.loads(outputs)),
    }
    for name, fn in functions.items():
        tvm_ffi.register_global_func(f"edgevit.node.{name}", fn, override=True)


def _publish_info(tracker: tuple[str, int], state: NodeState, port: int, stop: threading.Event) -> None:
    """Keep a tracker connection carrying this node's description (``UPDATE_INFO``), reconnecting after a
    tracker restart, so ``edgevit nodes`` can show arch, memory and versions without opening a session."""
    import socket
    import struct

    from tvm.rpc import base

    info = {"key": INFO_KEY_PREFIX + state.key, "addr": [state.host, port], "edgevit": state.info()}
    while not stop.is_set():
        try:
            with socket.create_connection(tracker, timeout=5) as conn:
                conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
                if struct.unpack("<i", base.recvall(conn, 4))[0] != base.RPC_TRACKER_MAGIC:
                    raise OSError("not a TVM tracker")
                base.sendjson(conn, [base.TrackerCode.UPDATE_INFO, info])
                base.recvjson(conn)
                while not stop.wait(2.0):
                    base.sendjson(conn, [base.TrackerCode.PING])
                    base.recvjson(conn)
        except (OSError, AssertionError, ValueError, struct.error):
            stop.wait(1.0)


def serve(tracker: tuple[str, int] | None, key: str, host: str = "127.0.0.1", port: int = 9090,
          port_end: int | None = None, cache: Path | None = None, run_delay: float = 0.0, silent: bool = True) -> None:
    """Run a node agent in this process until it is killed.

    The listening loop is TVM's own (``tvm.rpc.server.PopenRPCServerState``: tracker registration,
    re-registration after a tracker restart, one forked process per session), started in this process
    rather than through ``tvm.rpc.Server``'s extra ``sys.executable`` worker, which is what lets the same
    code run under qemu without a wrapper script.
    """
    from tvm.rpc.server import PopenRPCServerState

    cache = Path(cache) if cache else cache_dir("node", key)
    cache.mkdir(parents=True, exist_ok=True)
    if host in ("0.0.0.0", "::"):
        print(f"[edgevit] node '{key}' listens on all interfaces: TVM RPC has no authentication, keep it "
              "on a trusted network", file=sys.stderr, flush=True)
    state = NodeState(key, host, cache, run_delay)
    register_functions(state)
    try:
        server = PopenRPCServerState(host, port, port_end or port + 100, tracker_addr=tracker, key=key,
                                     custom_addr=host, silent=silent)
    except (ValueError, OSError) as exc:
        raise EdgevitError(f"node '{key}' cannot listen on {host}: {exc}") from None
    state.port = server.port  # sessions are forked after this, so they report it
    stop = threading.Event()
    if tracker:
        threading.Thread(target=_publish_info, args=(tracker, state, server.port, stop), daemon=True).start()
    print(json.dumps({"ready": True, "key": key, "host": host, "port": server.port, "pid": os.getpid(),
                      "arch": host_arch()}), flush=True)
    server.thread.join()
    stop.set()
    raise EdgevitError(f"node '{key}' stopped: its RPC listener ended (tracker unreachable for 60 s?)")


def parse_address(text: str, default_port: int = 9190) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``) -> ``(host, port)``."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    try:
        return host, int(port)
    except ValueError:
        raise EdgevitError(f"cannot read address '{text}': expected HOST:PORT, e.g. 127.0.0.1:9190") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracker", required=True, help="tracker address HOST:PORT")
    parser.add_argument("--key", required=True, help="device kind the node registers as (e.g. rpi4)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind and advertise (default 127.0.0.1; TVM RPC has no auth)")
    parser.add_argument("--port", type=int, default=9090, help="first port to try (default 9090)")
    parser.add_argument("--port-end", type=int, help="last port to try (default PORT + 100)")
    parser.add_argument("--cache", type=Path, help="artifact cache folder (default: edgevit's cache)")
    parser.add_argument("--run-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # fault-injection tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.distributed.node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(parse_address(args.tracker), args.key, args.host, args.port, args.port_end, args.cache,
              args.run_delay)
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
