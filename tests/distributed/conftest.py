"""A local cluster for the distributed tests (``edgevit.distributed.local_cluster``): a TVM tracker and edgevit
nodes on random free loopback ports with CURVE keys, one of them an aarch64 node under qemu. Every process is
started in its own process group and killed (group and all, forked session processes included) at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevit.distributed.local_cluster import LocalCluster, LocalProcess, free_port  # noqa: F401 (free_port: tests)

ROOT = Path(__file__).resolve().parents[2]


class Cluster(LocalCluster):
    """``LocalCluster`` with the tests' options: a node's artifact cache, an injected run delay."""

    def __init__(self):
        super().__init__(members=12)

    @property
    def tracker_port(self) -> int:
        return self.port

    @property
    def host_keys(self) -> list[str]:
        return self.host_args

    def add_node(self, key: str, emulated=None, run_delay: float = 0.0, cache: Path | None = None,
                 wait: bool = True, extra: tuple = ()) -> LocalProcess:
        options = [*(["--run-delay", str(run_delay)] if run_delay else []),
                   *(["--cache", str(cache)] if cache else []), *extra]
        return super().add_node(key, emulated, tuple(options), wait=60.0 if wait else 0)


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
