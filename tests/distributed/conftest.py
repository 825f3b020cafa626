"""A local cluster for the distributed tests: a TVM tracker and edgevit nodes on random free loopback ports,
one of them an aarch64 node under qemu. Every process is started in its own process group and killed (group
and all, forked session processes included) by a finalizer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess in its own process group; ``kill`` ends the group (a node and its session forks)."""

    def __init__(self, command: list[str], env: dict | None = None, cwd: Path = ROOT):
        self.command = command
        self.popen = subprocess.Popen(command, cwd=cwd, env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
                                      stdout=subprocess.PIPE, stderr=None, text=True,
                                      start_new_session=True)

    def ready(self, timeout: float) -> dict:
        """Wait for the node's JSON ``ready`` line."""
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.popen.returncode}")
            r, _, _ = select.select([self.popen.stdout], [], [], 0.5)
            if r:
                line = self.popen.stdout.readline()
                if line.startswith("{"):
                    return json.loads(line)
        raise RuntimeError(f"{self.command} not ready after {timeout} s")

    def kill(self) -> None:
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)


MEMBERS = ["host"] + [f"node{i}" for i in range(12)]


class Cluster:
    """A tracker plus nodes; ``add_node`` starts one (x86 or, with ``emulated``, aarch64 under qemu). The data
    plane uses CURVE: keys for the host and up to 12 nodes are made in a temporary folder."""

    def __init__(self):
        import tempfile

        from edgevit.distributed.dataplane import Security, make_keys

        self._keys = tempfile.TemporaryDirectory(prefix="edgevit-keys-")
        self.keys = Path(self._keys.name)
        make_keys(self.keys, MEMBERS)
        self.security = Security.curve(self.keys, "host")
        self.nodes_started = 0
        self.tracker_port = free_port()
        self.procs: list[Proc] = []
        self.tracker = self._start_tracker()

    def _start_tracker(self) -> Proc:
        proc = Proc([sys.executable, "-m", "edgevit.distributed", "tracker", "--port", str(self.tracker_port)])
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tracker_port), timeout=1).close()
                return proc
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("tracker did not start")

    def restart_tracker(self) -> None:
        self.tracker.kill()
        self.procs.remove(self.tracker)
        self.tracker = self._start_tracker()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.tracker_port}"

    def add_node(self, key: str, emulated=None, run_delay: float = 0.0, cache: Path | None = None,
                 wait: bool = True, extra: tuple = ()) -> Proc:
        self.nodes_started += 1
        args = ["-m", "edgevit.distributed.node", "--tracker", self.address, "--key", key,
                "--port", str(free_port()), "--keys", str(self.keys), "--member", MEMBERS[self.nodes_started],
                *map(str, extra)]
        if run_delay:
            args += ["--run-delay", str(run_delay)]
        if cache:
            args += ["--cache", str(cache)]
        if emulated is not None:
            proc = Proc(emulated.command(*args), env=emulated.environment())
        else:
            proc = Proc([sys.executable, *args])
        self.procs.append(proc)
        if wait:
            proc.ready(180 if emulated else 60)
        return proc

    def client(self, timeout: float = 30.0):
        from edgevit.distributed.client import Tracker

        return Tracker("127.0.0.1", self.tracker_port, timeout, self.security)

    @property
    def host_keys(self) -> list[str]:
        """The CLI arguments that make ``edgevit plan|infer`` the cluster's host member."""
        return ["--keys", str(self.keys), "--member", "host"]

    def wait_for(self, key: str, free: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = {r["key"]: r for r in self.client(5).nodes()}
                if rows.get(key, {}).get("free", 0) >= free:
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"fewer than {free} free '{key}' nodes after {timeout} s")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        self._keys.cleanup()


@pytest.fixture
def cluster():
    """A fresh tracker (nodes are added by the test); everything is killed afterwards."""
    c = Cluster()
    yield c
    c.close()


@pytest.fixture(scope="session")
def aarch64_python():
    from edgevit import emulation

    return emulation.prepare("aarch64")


@pytest.fixture(scope="session")
def shared_cluster(aarch64_python, tmp_path_factory):
    """Two x86 nodes (key x86) and one aarch64 node under qemu (key rpi4), shared by the tests that only
    read from it."""
    c = Cluster()
    try:
        qemu = c.add_node("rpi4", emulated=aarch64_python, cache=tmp_path_factory.mktemp("rpi4-cache"), wait=False)
        for i in range(2):
            c.add_node("x86", cache=tmp_path_factory.mktemp(f"x86-cache{i}"))
        qemu.ready(180)
        c.wait_for("x86", 2)
        c.wait_for("rpi4", 1, timeout=120)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def tiny_plan(tmp_path_factory) -> Path:
    """A class-split plan of the tiny Fashion-MNIST ViT: 3 sub-models for 2 x86 nodes and 1 rpi4 node."""
    from edgevit.distributed.plan import load_nodes
    from edgevit.distributed.planner import build_class_plan

    folder = tmp_path_factory.mktemp("plan")
    (folder / "nodes.yaml").write_text("nodes:\n  - {key: x86, count: 2, target: host, memory_mib: 64}\n"
                                       "  - {key: rpi4, count: 1, target: rpi4, memory_mib: 64}\n")
    build_class_plan("fashion-vit-tiny", load_nodes(folder / "nodes.yaml"), 3, folder / "plan.json")
    return folder / "plan.json"
