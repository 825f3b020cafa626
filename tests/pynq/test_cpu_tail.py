"""The part of a model after the accelerator: cut out of its ONNX graph on the host, run in numpy on the board."""

import json

import numpy as np
import pytest
from fake_bitstream import write_bit, write_hwh
from pynq_helpers import run_on_board

from edgevit.errors import InputError, ModelImportError
from edgevit.hls import project
from edgevit.hls.fixed import to_float
from edgevit.hls.torch_import import to_accel_layout
from edgevit.pynq import numpy_graph, simlib
from edgevit.pynq.bundle import make_bundle

SHAPE = (1, 1, 8, 8)


def _model(*extra):
    """The tiny MobileViT (seeded, untrained) with a max-pool the accelerator lacks before its MobileViT block."""
    import torch
    import torch.nn as nn

    from edgevit.zoo.tiny_mobilevit import build_tiny_mobilevit

    torch.manual_seed(1)
    m = build_tiny_mobilevit()
    return nn.Sequential(m[0], m[1], nn.MaxPool2d(3, 1, 1), m[2], m[3], *extra).eval()


def _project(model, path):
    from edgevit.datasets import digits

    xtr, _, xte, _ = digits()
    tests = [x[None] for x in xte[:8]]
    prog, out = project.generate(model, SHAPE, "pynq-z2", path, [x[None] for x in xtr[:32]], test_inputs=tests,
                                 meta={"model": "tiny_with_maxpool"})
    return prog, out, tests


@pytest.fixture(scope="module")
def tail_case(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    model = _model()
    prog, out, tests = _project(model, tmp_path_factory.mktemp("tail") / "prj")
    d = tmp_path_factory.mktemp("tail_vivado")
    bundle = tmp_path_factory.mktemp("tail_bundle") / "b"
    make_bundle(out, bundle, write_bit(d / "e.bit"), write_hwh(d / "e.hwh"), model=model, input_shape=SHAPE)
    return model, prog, out, tests, bundle


def _subgraph_session(model, cut):
    """onnxruntime on the model's own ONNX graph from ``cut`` to the output (independent of numpy_graph)."""
    import onnx.utils
    import onnxruntime as ort

    from edgevit.frontend import from_torch

    mp = from_torch(model, SHAPE, name="cpu_tail_source").load()
    sub = onnx.utils.Extractor(mp).extract_model([cut], [o.name for o in mp.graph.output])
    return ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])


def test_the_cut_is_where_the_accelerator_stops(tail_case):
    model, prog, _, _, bundle = tail_case
    assert [c.split(" ")[1] for c in prog.cpu_layers] == ["(MaxPool2d:", "(MobileVitBlock)", "(ClassifierHead)"]
    cfg = json.loads((bundle / "bundle.json").read_text())
    assert cfg["cpu_tail"] == "cpu_tail.json" and {"cpu_tail.json", "cpu_tail.npz"} <= set(cfg["files"])
    graph = json.loads((bundle / "cpu_tail.json").read_text())
    h, w, c = prog.shapes[prog.output]
    assert graph["input_shape"] == [1, c, h, w] and graph["transpose"] == [2, 0, 1]
    ops = {n["op"] for n in graph["nodes"]}
    assert {"MaxPool", "Conv", "LayerNormalization", "Softmax", "MatMul", "Gemm"} <= ops
    assert graph["check_relative_error"] < 1e-5


def test_board_runs_accelerator_then_cpu_part(tail_case, pynq_python, tmp_path):
    model, prog, out, tests, bundle = tail_case
    import torch

    samples = tmp_path / "samples.npy"
    np.save(samples, np.stack([to_accel_layout(x) for x in tests]))
    got = run_on_board(pynq_python, "predict", bundle, simlib.build(out), samples)["predicted"]
    graph = json.loads((bundle / "cpu_tail.json").read_text())
    sess = _subgraph_session(model, graph["input"])
    for x, y in zip(tests, got):
        raw = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output]      # the golden model
        acc = to_float(raw, prog.formats[prog.output]).transpose(2, 0, 1)[None].astype(np.float32)
        want = sess.run(None, {graph["input"]: acc})[0].ravel()
        assert np.abs(np.array(y) - want).max() <= 1e-5 * (1 + np.abs(want).max())
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy().ravel()
        assert np.abs(np.array(y) - ref).max() <= 0.02 * np.abs(ref).max()   # 16-bit accelerator part


def test_flash_reports_the_cpu_part(tail_case, tmp_path, monkeypatch, pynq_python, capsys):
    from edgevit import cli

    _, _, out, _, bundle = tail_case
    monkeypatch.setenv("EDGEVIT_PYNQ_SIM_LIB", str(simlib.build(out)))
    (tmp_path / "home").mkdir()
    code = cli.main(["flash", str(bundle), "--board", "pynq-z2", "--host", f"local:{tmp_path / 'home'}",
                     "--remote-python", pynq_python])
    text = capsys.readouterr().out
    assert code == 0 and "continues on the board's CPU" in text
    assert "8 inputs, 0 output words differ" in text and "CPU part included" in text


def test_what_cannot_be_cut_is_refused(tail_case, tmp_path):
    import torch.nn as nn

    _, _, out, _, _ = tail_case
    with pytest.raises(InputError, match="no zoo model"):
        make_bundle(out, tmp_path / "b1")
    model = _model(nn.LogSoftmax(dim=1))
    _, out2, _ = _project(model, tmp_path / "prj2")
    with pytest.raises(ModelImportError, match="not implemented on the board: LogSoftmax"):
        make_bundle(out2, tmp_path / "b2", model=model, input_shape=SHAPE)
    with pytest.raises(NotImplementedError, match="NoSuchOp"):
        numpy_graph.check_ops({"nodes": [{"op": "NoSuchOp"}]})


def test_the_cut_ignores_near_copies_after_nearly_identity_blocks():
    from edgevit.pynq.cpu_tail import _find_cut

    acc = np.random.default_rng(0).standard_normal((7, 7, 8))
    nchw = acc.transpose(2, 0, 1)[None].astype(np.float32)
    values = {"before": nchw * 0.5, "out": nchw, "flat": nchw.reshape(1, 8, 49),
              "block": nchw * (1 + 2e-5),    # x + 1e-5 * f(x): a layer-scaled block of an untrained model
              "tokens": acc.reshape(1, 49, 8).astype(np.float32)}
    assert _find_cut(values, ["before", "out", "flat", "block"], acc) == ("flat", [2, 0, 1])
    assert _find_cut(values, ["before", "block", "tokens"], acc) == ("tokens", None)
    with pytest.raises(ModelImportError, match="no tensor"):
        _find_cut(values, ["before"], acc)


def test_a_project_without_sample_inputs_cannot_export_its_cpu_part(tail_case, tmp_path):
    import shutil

    model, _, out, _, _ = tail_case
    project = tmp_path / "prj"
    shutil.copytree(out, project)
    (project / "testdata" / "samples.npy").unlink()
    with pytest.raises(InputError, match="missing testdata/samples.npy"):
        make_bundle(project, tmp_path / "b", model=model, input_shape=SHAPE)


def test_bundle_of_an_onnx_project_takes_its_cpu_part(tmp_path, pynq_python):
    # `edgevit hls FILE.onnx` writes the CPU part itself (cpu_tail.json/.npz): the bundle carries that part (there
    # is no torch model to cut it from) and the board runs the accelerator, then it.
    import onnx
    import torch
    import torch.nn as nn

    from edgevit.frontend import from_torch

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Softmax(dim=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    mp = onnx.load(str(from_torch(model, (1, 3, 8, 8), "softmax_cnn").onnx_path))
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 3, 8, 8)) for _ in range(3)]
    result, out = project.generate_onnx(mp, "pynq-z2", tmp_path / "prj", samples, test_inputs=samples)
    assert result.unsupported[0] == "Softmax" and (out / "cpu_tail.json").is_file()
    bundle = tmp_path / "bundle"
    cfg = make_bundle(out, bundle, write_bit(tmp_path / "e.bit"), write_hwh(tmp_path / "e.hwh"))
    assert cfg["cpu_tail"] == "cpu_tail.json"
    for name in ("cpu_tail.json", "cpu_tail.npz"):
        assert (bundle / name).read_bytes() == (out / name).read_bytes()
    np.save(tmp_path / "samples.npy", np.stack([to_accel_layout(x) for x in samples]))
    got = run_on_board(pynq_python, "predict", bundle, simlib.build(out), tmp_path / "samples.npy")["predicted"]
    prog = result.program
    tail = json.loads((out / "cpu_tail.json").read_text())
    npz = np.load(out / "cpu_tail.npz")
    weights = {n: npz[f"w{k}"] for k, n in enumerate(tail["weights"])}
    for x, y in zip(samples, got):
        raw = prog.run_fixed(prog.quantize_input(to_accel_layout(x)))[prog.output]      # the golden model
        acc = to_float(raw, prog.formats[prog.output]).transpose(2, 0, 1)[None].astype(np.float32)
        want = numpy_graph.run(tail, weights, {tail["input"]: acc})[0].ravel()
        assert np.abs(np.array(y) - want).max() <= 1e-6 * (1 + np.abs(want).max())
        with torch.no_grad():
            ref = model(torch.from_numpy(x).float()).numpy().ravel()
        assert np.abs(np.array(y) - ref).max() <= 0.05 * np.abs(ref).max()   # 16-bit accelerator part
