"""A tracker and edgevit nodes on this machine: loopback, free ports, CURVE keys in a temporary folder.

What the distributed benchmarks in ``tools/`` run pipelines on (and what a user can try the distributed
commands on before they have boards). Every process is started in its own process group and killed, group and
all (a node's forked session processes included), by :meth:`LocalCluster.close`::

    with LocalCluster() as cluster:
        cluster.add_node("x86")
        cluster.add_node("rpi4", emulated=emulation.prepare("aarch64"))   # an aarch64 node under qemu
        main(["infer", plan_dir, "--tracker", cluster.address, *cluster.host_args, "--stream", "20"])
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import EdgevitError, ExecutionError
from ..settings import PACKAGE_PARENT

PROJECT_ROOT = PACKAGE_PARENT


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


class LocalProcess:
    """A process of the cluster (tracker or node) in a process group of its own."""

    def __init__(self, popen: subprocess.Popen, log: Path):
        self.popen, self.log = popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ready(self, timeout: float) -> dict:
        """Wait for a node's JSON ``ready`` line (``{"ready", "key", "host", "port", ...}``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ExecutionError(f"a local node exited with code {self.popen.returncode} (log: {self.log})")
            readable, _, _ = select.select([self.popen.stdout], [], [], 0.5)
            if readable:
                line = self.popen.stdout.readline()
                if line.startswith("{"):
                    return json.loads(line)
        raise ExecutionError(f"a local node was not ready after {timeout:g} s (log: {self.log})")

    def kill(self) -> None:
        """End the process and everything it started (a node's forked sessions)."""
        kill_group(self.popen)


class LocalCluster:
    """A tracker plus nodes (``add_node``), with keys for the host and ``members`` nodes."""

    def __init__(self, members: int = 16):
        from .dataplane import Security, make_keys

        self.folder = Path(tempfile.mkdtemp(prefix="edgevit-cluster-"))
        self.keys = self.folder / "keys"
        self.members = ["host"] + [f"node{i}" for i in range(members)]
        make_keys(self.keys, self.members)
        self.security = Security.curve(self.keys, "host")
        self.procs: list[LocalProcess] = []
        self.started = 0
        self.port = free_port()
        self.tracker = self._start_tracker()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def host_args(self) -> list[str]:
        """The CLI arguments that make ``edgevit plan|infer`` this cluster's host member."""
        return ["--keys", str(self.keys), "--member", "host"]

    def _start(self, command: list[str], env: dict | None = None) -> LocalProcess:
        log = self.folder / f"proc{len(self.procs)}.log"
        with open(log, "w") as err:
            popen = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                     env=env or {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                                     start_new_session=True)
        proc = LocalProcess(popen, log)
        self.procs.append(proc)
        return proc

    def _start_tracker(self, seconds: float = 60.0) -> LocalProcess:
        proc = self._start([sys.executable, "-m", "edgevit.distributed", "tracker", "--port", str(self.port)])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return proc
            except OSError:
                time.sleep(0.2)
        raise ExecutionError(f"the local tracker did not open port {self.port} within {seconds:g} s")

    def restart_tracker(self) -> None:
        """Kill the tracker and start a new one on the same port (the nodes register again by themselves)."""
        self.tracker.kill()
        self.procs.remove(self.tracker)
        self.tracker = self._start_tracker()

    def add_node(self, key: str, emulated=None, extra: tuple = (), wait: float = 60.0) -> LocalProcess:
        """Start a node of ``key`` (native, or under qemu with ``emulated``, an ``emulation.EmulatedPython``);
        ``extra`` are more ``edgevit node`` arguments (``--fpga BUNDLE ...``). Waits ``wait`` seconds (at least
        180 under qemu) for its ready line; 0 does not wait."""
        self.started += 1
        args = ["-m", "edgevit.distributed.node", "--tracker", self.address, "--key", key, "--port",
                str(free_port()), "--keys", str(self.keys), "--member", self.members[self.started], *map(str, extra)]
        if emulated is not None:
            proc = self._start(emulated.command(*args), emulated.environment())
        else:
            proc = self._start([sys.executable, *args])
        if wait:
            proc.ready(max(wait, 180.0) if emulated is not None else wait)
        return proc

    def client(self, timeout: float = 30.0):
        """A ``client.Tracker`` for this cluster, as its host member."""
        from .client import Tracker

        return Tracker("127.0.0.1", self.port, timeout, self.security)

    def wait_for(self, key: str, free: int, timeout: float = 60.0) -> None:
        """Wait until at least ``free`` nodes of ``key`` are free at the tracker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = {r["key"]: r for r in self.client(5).nodes()}
                if rows.get(key, {}).get("free", 0) >= free:
                    return
            except EdgevitError:
                pass
            time.sleep(0.3)
        raise ExecutionError(f"fewer than {free} free '{key}' nodes after {timeout:g} s (logs: {self.folder})")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
