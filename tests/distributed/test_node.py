"""Node agent, tracker listing and remote runs, on x86 and on an aarch64 node under qemu."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgevit.errors import ArtifactError, ExecutionError, InputError


def _reference(artifact, x):
    from edgevit.reference import run_onnxruntime
    from edgevit.runtime.artifact import Artifact

    with Artifact.open(artifact) as art:
        return run_onnxruntime(art.reference, [x])[0]


def test_nodes_lists_keys_arch_memory_versions(shared_cluster):
    rows = {r["key"]: r for r in shared_cluster.client().nodes()}
    assert rows["x86"]["total"] == 2 and rows["rpi4"]["total"] == 1
    assert {s["arch"] for s in rows["x86"]["servers"]} == {"x86_64"}
    assert rows["rpi4"]["servers"][0]["arch"] == "aarch64"
    for server in rows["x86"]["servers"] + rows["rpi4"]["servers"]:
        assert server["memory"]["total_mib"] > 0
        assert server["versions"]["tvm"] and server["versions"]["edgevit"]


@pytest.mark.parametrize("key,fixture", [("x86", "tiny_host_artifact"), ("rpi4", "tiny_rpi4_artifact")])
def test_remote_run_matches_reference(shared_cluster, request, key, fixture):
    artifact = request.getfixturevalue(fixture)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    session = shared_cluster.client(timeout=120).request(key)
    try:
        assert session.info["arch"] == ("aarch64" if key == "rpi4" else "x86_64")
        meta = session.ensure_artifact(artifact)
        assert meta["outputs"][0]["shape"] == [1, 10]
        from edgevit.distributed.client import artifact_digest

        (y,) = session.run(artifact_digest(artifact), [x])
        np.testing.assert_allclose(y, _reference(artifact, x), rtol=1e-4, atol=1e-5)
        assert session.health()["ok"]
    finally:
        session.close()


def test_tampered_upload_is_refused(shared_cluster, tiny_host_artifact):
    data = bytearray(tiny_host_artifact.read_bytes())
    claimed = hashlib.sha256(data).hexdigest()
    data[len(data) // 2] ^= 0xFF  # what arrives is not what the host hashed
    session = shared_cluster.client().request("x86")
    try:
        session.data.call("put_file", {"name": f"{claimed}.tar"}, [np.frombuffer(bytes(data), np.uint8)])
        with pytest.raises(ArtifactError, match="sha256"):
            session._json("load", claimed)
        with pytest.raises(InputError, match="refusing upload"):
            session.data.call("put_file", {"name": "../evil.tar"}, [np.zeros(1, np.uint8)])
    finally:
        session.close()


def test_foreign_architecture_is_refused(shared_cluster, tiny_rpi4_artifact):
    session = shared_cluster.client().request("x86")
    try:
        with pytest.raises(ArtifactError, match="aarch64"):
            session.ensure_artifact(tiny_rpi4_artifact)
    finally:
        session.close()


def test_data_plane_refuses_a_member_without_the_clusters_keys(shared_cluster, tmp_path):
    from edgevit.distributed.dataplane import Client, Security, make_keys

    make_keys(tmp_path, ["intruder"])
    intruder = Security.curve(tmp_path, "intruder")
    session = shared_cluster.client().request("x86")
    try:
        with pytest.raises(InputError, match="not in this member's public"):
            Client(session.address, session.public_key, intruder)  # the node's key is not one it knows
        intruder.authorised = intruder.authorised | {session.public_key}  # trust it anyway: the node still refuses
        with Client(session.address, session.public_key, intruder, timeout=2.0) as client:
            with pytest.raises(ExecutionError, match="no reply"):
                client.call("echo", {}, [np.zeros(4, np.float32)])
        with pytest.raises(InputError, match="plain text"):
            Client(session.address, session.public_key, Security.plaintext())
        header, (back,) = session.data.call("echo", {}, [np.arange(4, dtype=np.float32)])
        assert back.tolist() == [0, 1, 2, 3]  # the host, a member, is still served
    finally:
        session.close()


def test_node_refuses_to_start_without_data_plane_security(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "edgevit.distributed.node", "--tracker", "127.0.0.1:1",
                           "--key", "x86"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == InputError.exit_code
    assert "--insecure-plaintext" in proc.stderr and "Traceback" not in proc.stderr
