import json
import tarfile

import pytest

from edgevit.errors import ArtifactError
from edgevit.runtime.artifact import Artifact, sha256_file, write_artifact


def _rewrite(src, dst, change):
    """Copy an artifact tar, passing each member's bytes through ``change(name, data)``."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = change(member.name, tin.extractfile(member).read())
            if data is None:
                continue
            member.size = len(data)
            import io

            tout.addfile(member, io.BytesIO(data))
    return dst


def test_round_trip_metadata(tiny_host_artifact):
    with Artifact.open(tiny_host_artifact) as art:
        meta = art.metadata
        assert meta["format"] == "edgevit-artifact"
        assert meta["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}]
        assert meta["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
        assert meta["target"]["name"] == "host" and meta["command"] == "pytest"
        assert set(meta["versions"]) >= {"edgevit", "tvm", "tvm_ffi"}
        for name, digest in meta["members"].items():
            assert sha256_file(art.dir / name) == digest
        directory = art.dir
    assert not directory.exists(), "the extracted folder is removed on close"


def test_tampered_library_is_refused(tiny_host_artifact, tmp_path):
    def flip(name, data):
        if name == "model.so":
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            return bytes(data)
        return data

    bad = _rewrite(tiny_host_artifact, tmp_path / "bad.tar", flip)
    with pytest.raises(ArtifactError, match="model.so.*sha256"):
        Artifact.open(bad)


def test_truncated_artifact_is_refused(tiny_host_artifact, tmp_path):
    data = tiny_host_artifact.read_bytes()
    bad = tmp_path / "truncated.tar"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        Artifact.open(bad)


def test_missing_member_and_extra_member_are_refused(tiny_host_artifact, tmp_path):
    no_ref = _rewrite(tiny_host_artifact, tmp_path / "noref.tar",
                      lambda n, d: None if n == "reference.onnx" else d)
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.open(no_ref)

    def add_member(name, data):
        if name == "metadata.json":
            meta = json.loads(data)
            meta["members"].pop("reference.onnx")
            meta["reference"] = None   # else the metadata names an unhashed member, refused before the scan
            return json.dumps(meta).encode()
        return data

    unlisted = _rewrite(tiny_host_artifact, tmp_path / "unlisted.tar", add_member)
    with pytest.raises(ArtifactError, match="does not list"):
        Artifact.open(unlisted)


def test_not_an_artifact(tmp_path):
    path = tmp_path / "x.tar"
    path.write_text("hello")
    with pytest.raises(ArtifactError):
        Artifact.open(path)
    with pytest.raises(ArtifactError, match="not found"):
        Artifact.open(tmp_path / "missing.tar")


def test_symlinked_member_is_stored_as_its_file(tiny_host_artifact, tmp_path):
    """A member given as a symlink (a linked QDQ file, say) is stored as the file it points to: the artifact
    opens, and its member is that file's bytes."""
    with Artifact.open(tiny_host_artifact) as art:
        meta = {k: v for k, v in art.metadata.items() if k not in ("format", "format_version", "members")}
        real = {name: tmp_path / "real" / name for name in art.metadata["members"]}
        for name, dst in real.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes((art.dir / name).read_bytes())
    links = {}
    for name, dst in real.items():
        links[name] = tmp_path / "links" / name
        links[name].parent.mkdir(parents=True, exist_ok=True)
        links[name].symlink_to(dst)
    out = tmp_path / "linked.tar"
    write_artifact(out, links, meta)
    with tarfile.open(out) as tar:
        assert all(m.isfile() for m in tar.getmembers())
    with Artifact.open(out) as art:
        for name, dst in real.items():
            assert (art.dir / name).read_bytes() == dst.read_bytes()
