"""The node agent: a TVM RPC server that registers with a tracker and serves edgevit's functions.

Board side: imports only ``edgevit.runtime`` (and the stdlib-only ``errors``/``settings``), the data plane
(pyzmq), ``tvm.runtime``, ``tvm.rpc`` and ``tvm_ffi`` -- never torch, onnx or ``tvm.relax`` -- so it runs with
``TVM_USE_RUNTIME_LIB=1`` on a board and under qemu here::

    python -m edgevit.distributed.node --tracker HOST:9190 --key rpi4 --keys KEYDIR --member pi1 [--host ADDR]
    python -m edgevit.distributed.node ... --key zcu102 --fpga BUNDLE [--simulate --fpga-python PY]

With ``--fpga BUNDLE`` the node also serves the bundle's accelerator part as a stage (named by the sha256 of
its ``bundle.json``; ``accelerator_stage.py``); ``--simulate`` runs the C-simulation in its place, off-board.

Control goes through TVM RPC: functions registered in the server (visible to every RPC session, each one a
forked process):

``edgevit.node.info()``          JSON: key, arch, CPUs, memory, versions, whether it runs under emulation.
``edgevit.node.health()``        JSON: alive, models loaded in this session, memory, data plane counters.
``edgevit.node.dataplane()``     JSON ``{address, public_key}`` of this session's data plane server.
``edgevit.node.has(sha256)``     whether the artifact with that whole-file sha256 is in the node's cache.
``edgevit.node.load(sha256)``    check the cached file's sha256, open and verify the artifact (every member's
                                 sha256, its architecture) and load it into the Relax VM.
``edgevit.node.route(sha256, next, next_key, sink, sink_key, stage)``  what streamed inputs run and where
                                 their results go (the next stage's node, or the host's sink).

Tensors go through the data plane (``dataplane.py``, ZeroMQ, CURVE unless the node was started with
``--insecure-plaintext``). Its operations on a node: ``put_file`` (an artifact, named ``<sha256>.tar``),
``run`` (request/reply: run a loaded model), ``feed`` (streamed: run the routed stage, send the result on
with the item's number and a timing trace), ``echo`` (link measurements).

Errors a user can fix come back as JSON ``{"error", "kind"}`` (an ``edgevit.errors`` class name).

Trust boundary: TVM RPC has no authentication or encryption, and any client that reaches the port can
upload and run code. Run nodes on a trusted LAN or behind an SSH tunnel. What edgevit adds: the node binds
only the address it is given (default 127.0.0.1), it loads nothing whose sha256 does not match what the
host asked for, and its tensors travel only to and from members whose CURVE keys it holds.
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

from ..errors import ArtifactError, EdgevitError, ExecutionError, InputError
from ..runtime import host_arch
from ..runtime.artifact import Artifact, sha256_file
from ..settings import cache_dir
from .keys_cli import add_security_arguments, security_from_args

INFO_KEY_PREFIX = "server-edgevit:"  # tracker entry carrying a node's description (shown by `edgevit nodes`)
_HASH = re.compile(r"^[0-9a-f]{64}$")


class NodeState:
    """What one node process knows; each RPC session (a fork) gets its own copy of ``models``, its own data
    plane server and its own route."""

    def __init__(self, key: str, host: str, cache: Path, security, run_delay: float = 0.0, accelerator=None):
        self.key, self.host, self.cache, self.run_delay = key, host, cache, run_delay
        self.accelerator = accelerator  # accelerator_stage.AcceleratorStage of an FPGA node, else None
        self.security = security
        self.started, self.pid, self.port = time.time(), os.getpid(), None
        self.models: dict[str, object] = {}
        self.dataplane = None
        # Where a streamed input goes: {"digest", "next": (address, key) | None, "sink": (address, key), "stage"}.
        self.route: dict | None = None

    def artifact_path(self, name: str) -> Path:
        """Where the artifact named ``<sha256>.tar`` lives; refuses any other name."""
        if not name.endswith(".tar") or not _HASH.match(name[:-4]):
            raise InputError(f"refusing upload '{name}': artifacts are named <sha256>.tar")
        return self.cache / name

    def info(self) -> dict:
        import tvm

        return {"key": self.key, "arch": host_arch(), "cpus": os.cpu_count(), "memory": _memory(),
                "versions": {"tvm": tvm.__version__, "python": platform.python_version(),
                             "edgevit": _edgevit_version()},
                "host": self.host, "port": self.port, "node_pid": self.pid, "session_pid": os.getpid(),
                "emulated": _emulated(), "dataplane_security": self.security.describe(),
                "fpga": self.accelerator.describe() if self.accelerator is not None else None}

    def health(self) -> dict:
        stats = self.dataplane.stats if self.dataplane is not None else {}
        return {"ok": True, "key": self.key, "uptime": time.time() - self.started,
                "loaded": sorted(self.models), "memory": _memory(),
                "dataplane": {k: (dict(v) if isinstance(v, dict) else v) for k, v in stats.items()}}

    def open_dataplane(self) -> dict:
        """Start this session's data plane server (once) and say where it is."""
        from .dataplane import Server

        if self.dataplane is None:
            self.dataplane = Server(self.host, self.security, self.handle)
        return {"address": self.dataplane.address, "public_key": self.dataplane.public_key}

    def has(self, digest: str) -> bool:
        if self.accelerator is not None and digest == self.accelerator.digest:
            return True
        path = self.cache / f"{digest}.tar"
        return bool(_HASH.match(digest)) and path.is_file()

    def load(self, digest: str) -> dict:
        from ..runtime.runner import check_arch
        from ..runtime.tvm_runtime import CompiledModel

        if digest in self.models:
            return self.models[digest][1]
        if self.accelerator is not None and digest == self.accelerator.digest:
            meta = self.accelerator.start()
            self.models[digest] = (self.accelerator, meta)
            return meta
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

    def set_route(self, digest: str, next_address: str, next_key: str, sink_address: str, sink_key: str,
                  stage: int) -> dict:
        """Make streamed inputs (``feed``) run ``digest`` and go on to the next stage's node, or, from the last
        stage (``next_address`` empty), to the host's sink. Peer keys must be in this node's public keys."""
        if digest not in self.models:
            self.load(digest)
        if next_address:
            self.security.check_peer(next_key or None)
        self.security.check_peer(sink_key or None)
        self.route = {"digest": digest, "next": (next_address, next_key or None) if next_address else None,
                      "sink": (sink_address, sink_key or None), "stage": int(stage)}
        return {"ok": True}

    def _run(self, digest: str, arrays: list) -> tuple[list, float]:
        from ..runtime.runner import check_inputs

        if digest not in self.models:
            raise ArtifactError(f"artifact {str(digest)[:12]} is not loaded on node '{self.key}'")
        model, meta = self.models[digest]
        check_inputs({"inputs": meta["inputs"]}, arrays)
        start = time.perf_counter()
        results = model(arrays)
        seconds = time.perf_counter() - start
        if self.run_delay:
            time.sleep(self.run_delay)
        return results, seconds

    def handle(self, op: str, header: dict, arrays: list):
        """The data plane handler (the data plane's loop thread): see the module docstring for the ops."""
        if op == "run":
            results, seconds = self._run(header.get("digest"), arrays)
            return {"seconds": seconds}, results
        if op == "feed":
            return self._feed(header, arrays)
        if op == "put_file":
            if len(arrays) != 1 or arrays[0].dtype != "uint8" or arrays[0].ndim != 1:
                raise InputError("put_file takes one uint8 vector")
            path = self.artifact_path(str(header.get("name")))
            tmp = path.with_name(path.name + ".partial")
            tmp.write_bytes(arrays[0].tobytes())
            tmp.replace(path)
            return {"ok": True}, []
        if op == "echo":
            return {"ok": True}, list(arrays)
        raise InputError(f"unknown data plane operation '{op}'")

    def _feed(self, header: dict, arrays: list) -> None:
        """Run this node's stage on a streamed input and pass the result on. A failure goes to the host's sink
        as an error for that item, so the host can retry it; nothing is dropped silently."""
        route = self.route
        if route is None:
            raise ExecutionError(f"node '{self.key}' has no stage routed to it")
        received = time.time()
        trace = list(header.get("trace", []))[:64]
        item = {"seq": header.get("seq"), "epoch": header.get("epoch")}
        try:
            results, seconds = self._run(route["digest"], arrays)
        except EdgevitError as exc:
            self.dataplane.send(*route["sink"], {"op": "result", **item, "error": str(exc), "kind": type(exc).__name__,
                                                 "stage": route["stage"], "trace": trace}, [])
            return None
        trace.append({"stage": route["stage"], "received": received, "compute_ms": seconds * 1e3,
                      "sent": time.time(), "bytes_in": int(sum(a.nbytes for a in arrays)),
                      "bytes_out": int(sum(r.nbytes for r in results))})
        destination, op = (route["next"], "feed") if route["next"] is not None else (route["sink"], "result")
        self.dataplane.send(*destination, {"op": op, **item, "trace": trace}, results)
        return None


def _edgevit_version() -> str:
    from .. import __version__

    return __version__


def _emulated() -> bool:
    """Whether this process runs under user-mode emulation (qemu): an ARM Python whose /proc/cpuinfo describes
    the x86 host (qemu-user passes the host's file through). Such a node is never timed for a plan."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return host_arch() != "x86_64" and "vendor_id" in cpuinfo  # x86's cpuinfo has it, ARM's has not


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
        "dataplane": lambda: _reply(state.open_dataplane),
        "has": lambda digest: "1" if state.has(digest) else "0",
        "load": lambda digest: _reply(state.load, digest),
        "route": lambda digest, next_address, next_key, sink_address, sink_key, stage: _reply(
            state.set_route, digest, next_address, next_key, sink_address, sink_key, stage),
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
          port_end: int | None = None, cache: Path | None = None, run_delay: float = 0.0, silent: bool = True,
          security=None, accelerator=None) -> None:
    """Run a node agent in this process until it is killed.

    The listening loop is ``rpc_listener.GuardedListener``: TVM's protocol, tracker registration and
    re-registration and one forked session process at a time, with every handshake read by a thread of its
    own under a timeout, so no client can end or block the node (issue 20). It runs in this process rather
    than through ``tvm.rpc.Server``'s extra ``sys.executable`` worker, which is what lets the same code run
    under qemu without a wrapper script.
    """
    from .rpc_listener import GuardedListener

    cache = Path(cache) if cache else cache_dir("node", key)
    cache.mkdir(parents=True, exist_ok=True)
    if host in ("0.0.0.0", "::"):
        print(f"[edgevit] node '{key}' listens on all interfaces: TVM RPC has no authentication, keep it "
              "on a trusted network", file=sys.stderr, flush=True)
    if security is None:
        raise InputError("a node needs data plane security: keys (--keys DIR --member NAME) or, explicitly, "
                         "--insecure-plaintext")
    state = NodeState(key, host, cache, security, run_delay, accelerator)
    register_functions(state)
    try:
        listener = GuardedListener(host, port, port_end or port + 100, key, tracker, silent)
    except OSError as exc:
        raise EdgevitError(f"node '{key}' cannot listen on {host}: {exc}") from None
    state.port = listener.port  # sessions are forked after this, so they report it
    stop = threading.Event()
    if tracker:
        threading.Thread(target=_publish_info, args=(tracker, state, listener.port, stop), daemon=True).start()
    print(json.dumps({"ready": True, "key": key, "host": host, "port": listener.port, "pid": os.getpid(),
                      "arch": host_arch()}), flush=True)
    try:
        listener.serve_forever()  # ends only by raising: the tracker unreachable for too long
    finally:
        stop.set()
        listener.close()


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
    parser.add_argument("--fpga", type=Path, metavar="BUNDLE",
                        help="also serve this PYNQ bundle's accelerator part as a pipeline stage (an FPGA node)")
    parser.add_argument("--simulate", action="store_true",
                        help="with --fpga: run the bundle's g++ C-simulation instead of the programmable logic "
                             "(off-board stand-in, labelled so in the node's description)")
    parser.add_argument("--fpga-python", metavar="PY",
                        help="with --fpga: the Python that has pynq (default: this one; off-board, the venv of "
                             "tools/setup_pynq_env.sh)")
    add_security_arguments(parser, "this node's member name in the key folder (default: its --key)")


def accelerator_from_args(args):
    """The ``--fpga`` stage of a node's arguments, or None; refuses ``--simulate``/``--fpga-python`` alone."""
    if args.fpga is None:
        if args.simulate or args.fpga_python:
            raise InputError("--simulate and --fpga-python apply only with --fpga BUNDLE")
        return None
    from .accelerator_stage import AcceleratorStage

    if not Path(args.fpga, "bundle.json").is_file():
        raise InputError(f"--fpga {args.fpga}: not a bundle folder (no bundle.json); make one with `edgevit bundle`")
    return AcceleratorStage(args.fpga, args.fpga_python, args.simulate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.distributed.node", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        serve(parse_address(args.tracker), args.key, args.host, args.port, args.port_end, args.cache,
              args.run_delay, security=security_from_args(args, args.key), accelerator=accelerator_from_args(args))
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
