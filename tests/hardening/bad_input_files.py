"""The bad files the hardening cases feed edgevit: made once per session from the tiny model and its artifact."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from tiny_onnx_models import tiny_cnn_onnx

VALID_TARGET = {"name": "mytarget", "description": "a board", "cpu": {
    "arch": "detect", "tvm": {"kind": "llvm", "mcpu": "detect"}, "memory_mib": 1024}}


def to_toml(data: dict) -> str:
    """A small TOML writer for target dicts (tables of scalars, lists and inline tables)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    top = [f'"{k}" = {value(v)}' for k, v in data.items() if not isinstance(v, dict)]
    tables = [f'[{k}]\n' + "\n".join(f'"{kk}" = {value(vv)}' for kk, vv in v.items())
              for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def rewrite_artifact(src: Path, dst: Path, metadata=None, extra=(), drop=()) -> Path:
    """Copy an artifact with its metadata replaced (a dict, or raw bytes), ``extra`` TarInfo members added
    (``(info, bytes)``) and members in ``drop`` left out."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            if member.name in drop:
                continue
            data = tin.extractfile(member).read()
            if member.name == "metadata.json" and metadata is not None:
                data = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
            member.size = len(data)
            tout.addfile(member, io.BytesIO(data))
        for info, data in extra:
            info.size = len(data) if info.isreg() else 0
            tout.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dst


def artifact_metadata(artifact: Path) -> dict:
    with tarfile.open(artifact) as tar:
        return json.loads(tar.extractfile("metadata.json").read())


def _model(nodes, inputs, outputs, path: Path, inits=()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def build_workspace(root: Path, tiny_onnx: Path, artifact: Path) -> dict:
    """Every file the static cases name, keyed by placeholder (``{onnx}``, ``{art}``...)."""
    root.mkdir(parents=True, exist_ok=True)
    ws = {"tmp": root, "onnx": tiny_onnx, "art": artifact}
    secret = root / "secret.bin"
    secret.write_bytes(b"not for edgevit")
    ws["secret"] = secret
    V = helper.make_tensor_value_info
    ws["dyn"] = tiny_cnn_onnx(root / "dyn.onnx", batch="N")
    ws["nms"] = _model([helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms")],
                       [V("boxes", TensorProto.FLOAT, [1, 10, 4]), V("scores", TensorProto.FLOAT, [1, 1, 10])],
                       [V("sel", TensorProto.INT64, [None, 3])], root / "nms.onnx")
    ws["bf16"] = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                        [V("x", TensorProto.BFLOAT16, [1, 4])], [V("y", TensorProto.FLOAT, [1, 4])],
                        root / "bf16.onnx")
    ws["text_onnx"] = root / "text.onnx"
    ws["text_onnx"].write_text("ir_version: 8\n")
    ws["empty_onnx"] = root / "empty.onnx"
    ws["empty_onnx"].write_bytes(b"")
    ws["garbage_onnx"] = root / "garbage.onnx"
    ws["garbage_onnx"].write_bytes(b"\x00garbage\xff" * 50)
    ws["dir_onnx"] = root / "folder.onnx"
    ws["dir_onnx"].mkdir()
    ws["outdir"] = root / "outdir"
    ws["outdir"].mkdir()

    # external data: the tiny model with its weights beside it, and broken variants
    ext = root / "ext"
    ext.mkdir()
    model = onnx.load(str(tiny_onnx))
    onnx.save(model, str(ext / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    ws["ext"] = ext / "ext.onnx"
    for name, location in (("ext_missing", "missing.data"), ("ext_climb", "../secret.bin"),
                           ("ext_absolute", str(secret)), ("ext_link", "link.data"), ("ext_short", "ext.data")):
        m = onnx.load(str(ext / "ext.onnx"), load_external_data=False)
        for tensor in m.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
                if entry.key == "length" and name == "ext_short":
                    entry.value = str(10 ** 9)
        onnx.save(m, str(ext / f"{name}.onnx"))
        ws[name] = ext / f"{name}.onnx"
    os.symlink(secret, ext / "link.data")

    # input tensors
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    for name, array in (("x_npy", x), ("x_int64", x.astype(np.int64)), ("x_float64", x.astype(np.float64)),
                        ("x_shape", x[:, :, :8]), ("x_scalar", np.float32(1)), ("x_strings", np.array(["a", "b"]))):
        np.save(root / f"{name}.npy", array)
        ws[name] = root / f"{name}.npy"
    np.savez(root / "x.npz", x)
    ws["x_npz"] = root / "x.npz"
    np.save(root / "x_object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    ws["x_object"] = root / "x_object.npy"
    ws["x_text"] = root / "x_text.npy"
    ws["x_text"].write_text("1 2 3")

    # artifacts
    meta = artifact_metadata(artifact)
    ws["meta"] = meta
    art = root / "artifacts"
    art.mkdir()
    ws["art_garbage"] = art / "garbage.tar"
    ws["art_garbage"].write_bytes(os.urandom(3000))
    ws["art_empty"] = art / "empty.tar"
    ws["art_empty"].write_bytes(b"")
    data = artifact.read_bytes()
    ws["art_half"] = art / "half.tar"
    ws["art_half"].write_bytes(data[: len(data) // 2])
    ws["art_nometa"] = rewrite_artifact(artifact, art / "nometa.tar", drop={"metadata.json"})
    ws["art_notjson"] = rewrite_artifact(artifact, art / "notjson.tar", b"{not json")
    ws["art_deepjson"] = rewrite_artifact(artifact, art / "deep.tar", b"[" * 100000 + b"]" * 100000)
    ws["art_list"] = rewrite_artifact(artifact, art / "list.tar", b"[1, 2]")
    sha = meta["members"]["model.so"]
    edits = {
        "members_absolute": {**meta, "members": {**meta["members"], str(secret): sha}},
        "members_climb": {**meta, "members": {**meta["members"], "../secret.bin": sha}},
        "library_absolute": {**meta, "library": str(secret)},
        "library_unhashed": {**meta, "library": "other.so"},
        "reference_climb": {**meta, "reference": "../reference.onnx"},
        "version_future": {**meta, "format_version": 99},
        "huge_input": {**meta, "inputs": [{**meta["inputs"][0], "shape": [100000, 100000, 1000]}]},
        "smaller_input": {**meta, "inputs": [{**meta["inputs"][0], "shape": [1, 3, 8, 8]}]},
    }
    for name, edited in edits.items():
        ws[f"art_{name}"] = rewrite_artifact(artifact, art / f"{name}.tar", edited)
    payload = b"x"
    for name, info in (("symlink", _member("evil", tarfile.SYMTYPE, str(secret))),
                       ("hardlink", _member("evil", tarfile.LNKTYPE, "model.so")),
                       ("device", _member("evil", tarfile.CHRTYPE)),
                       ("directory", _member("evil", tarfile.DIRTYPE)),
                       ("absolute", _member(str(root / "written-by-tar"))),
                       ("climb", _member("../written-by-tar")),
                       ("duplicate", _member("model.so")),
                       ("unlisted", _member("unlisted.txt"))):
        ws[f"art_{name}_member"] = rewrite_artifact(artifact, art / f"{name}_member.tar", extra=[(info, payload)])

    # target files
    targets = root / "targets"
    targets.mkdir()
    (targets / "good.toml").write_text(to_toml(VALID_TARGET))
    ws["target_good"] = targets / "good.toml"
    ws["target_garbage"] = targets / "garbage.toml"
    ws["target_garbage"].write_text("name = \n[cpu")
    ws["target_binary"] = targets / "binary.toml"
    ws["target_binary"].write_bytes(b"\xff\xfe\x00name")
    ws["targets"] = targets

    # bundles (flash)
    bundles = root / "bundles"
    bundles.mkdir()
    good_cfg = {"format": "edgevit-pynq-bundle", "version": 1, "board": "pynq-z2", "bitstream": None, "hwh": None,
                "model": "m", "selftest": {"count": 1}, "files": {}}
    for name, cfg in (("climb", {**good_cfg, "files": {"../secret.bin": "0" * 64}}),
                      ("absolute", {**good_cfg, "files": {str(secret): "0" * 64}}),
                      ("bit_absolute", {**good_cfg, "bitstream": str(secret), "hwh": str(secret)}),
                      ("list", [1, 2]), ("no_selftest", {k: v for k, v in good_cfg.items() if k != "selftest"}),
                      ("count_string", {**good_cfg, "selftest": {"count": "many"}})):
        (bundles / name).mkdir()
        (bundles / name / "bundle.json").write_text(json.dumps(cfg))
        ws[f"bundle_{name}"] = bundles / name
    (bundles / "garbage").mkdir()
    (bundles / "garbage" / "bundle.json").write_text("{{{")
    ws["bundle_garbage"] = bundles / "garbage"

    # an HLS "project" whose program.json is broken
    project = root / "hls_broken"
    project.mkdir()
    (project / "program.json").write_text('{"layers": 5}')
    ws["hls_broken"] = project
    return ws
