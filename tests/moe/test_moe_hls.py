"""The FPGA path: MoE units in C-simulation bit for bit against the golden model, expert weight reads with and
without patch reordering, and the trained MoE-ViTs end to end against PyTorch."""

import argparse

import numpy as np
import pytest
import torch

from edgevit.hls import cli, codegen, csim, estimator, golden, layer_table, reference
from edgevit.hls.fixed import Fmt, quantize, to_float
from edgevit.hls.program import Layer, Program, calibrate
from edgevit.hls.torch_import import lower, to_accel_layout
from edgevit.moe import load_task_model
from edgevit.targets import get_target

RNG = np.random.default_rng(3)
N, D, H, E, K = 12, 10, 7, 5, 2
UNUSED = 3   # the gate never picks this expert


def _moe_program(reorder: int) -> Program:
    lanes = {"li": 3, "lo": 5}
    gate_b = RNG.normal(size=E)
    gate_b[UNUSED] = -100.0
    layers = [
        Layer("linear", "gate", ["input"], "logits", dict(lanes), {"w": RNG.normal(size=(E, D)), "b": gate_b}),
        Layer("moe_route", "route", ["logits"], "route", {"k": K}),
        Layer("moe_experts", "experts", ["input", "route"], "mix", {"k": K, "act": "gelu", "reorder": reorder, **lanes},
              {"w1": RNG.normal(size=(E, H, D)) * 0.4, "b1": RNG.normal(size=(E, H)),
               "w2": RNG.normal(size=(E, D, H)) * 0.4, "b2": RNG.normal(size=(E, D))}),
        Layer("add", "residual", ["mix", "input"], "out", {}),
    ]
    shapes = {"input": (1, N, D), "logits": (1, N, E), "route": (N, K, 2), "mix": (1, N, D), "out": (1, N, D)}
    return Program("input", shapes, layers)


def _simulate(prog, samples, out):
    project = codegen.write_project(prog, out, get_target("zcu102").require_fpga(), "zcu102", np.asarray(samples))
    _, probes = csim.simulate_project(project, probes=True)
    return probes


def test_moe_units_bit_exact_and_weight_reads_with_and_without_reordering(tmp_path):
    state = RNG.bit_generator.state
    samples = [RNG.normal(size=(1, N, D)), RNG.normal(size=(1, N, D)), np.sign(RNG.normal(size=(1, N, D))) * 50]
    runs = {}
    for reorder in (1, 0):
        RNG.bit_generator.state = state          # the same weights for both schedules
        prog = calibrate(_moe_program(reorder), samples[:1])
        runs[reorder] = prog, _simulate(prog, samples, tmp_path / f"reorder{reorder}")
    block = layer_table.expert_words(D, H)
    for reorder, (prog, probes) in runs.items():
        for x, probe in zip(samples, probes):
            env = prog.run_fixed(prog.quantize_input(x))
            for name in prog.shapes:
                assert (probe[name] == env[name].ravel()).all(), (reorder, name)
            count = golden.moe_active_experts(env["route"], E)
            assert count[UNUSED] == 0 and (count > 0).sum() >= 2
            expected = block * ((count > 0) if reorder else count)   # once per active expert / once per pair
            assert (probe["moe_reads"] == expected).all(), (reorder, probe["moe_reads"], expected)
    assert all((a["out"] == b["out"]).all() for a, b in zip(runs[0][1], runs[1][1]))
    # The error of the fixed-point MoE against float64 on the calibrated input is small.
    prog, probes = runs[1]
    xq = to_float(prog.quantize_input(samples[0]), prog.formats["input"])
    ref = prog.run_float(xq)["out"].ravel()
    err = np.abs(to_float(probes[0]["out"], prog.formats["out"]) - ref).max()
    print(f"MoE layer: max |error| vs float64 {err:.3g} (output peak {np.abs(ref).max():.3g})")
    assert err <= 0.02 * np.abs(ref).max()


def test_route_weights_match_softmax_of_top_k():
    fl = Fmt(16, 6)
    logits = RNG.normal(size=(64, 6)) * 3
    raw = quantize(logits, fl)
    route = golden.moe_route(raw, fl, 2)
    ref = reference.moe_route(to_float(raw, fl), 2)
    assert (route[..., 0] == ref[..., 0]).all()
    assert np.abs(to_float(route[..., 1], golden.GATE_FMT) - ref[..., 1]).max() < 2e-3
    ties = golden.moe_route(np.zeros((1, 4), np.int64), fl, 3)    # equal logits: the lower ids, equal weights
    assert ties[0, :, 0].tolist() == [0, 1, 2] and len(set(ties[0, :, 1].tolist())) == 1


def _hls(argv):
    parser = argparse.ArgumentParser(prog="edgevit")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("spec", ["moe_vit_tiny:digit", "moe_vit_tiny:parity"])
def test_trained_task_build_csim_against_pytorch(spec, tmp_path, trained, digits, capsys):
    out = tmp_path / spec.replace(":", "_")
    assert _hls(["hls", spec, "--board", "zcu102", "-o", str(out)]) == 0
    assert "with patch reordering" in capsys.readouterr().out
    prog, _ = codegen.load_program(out)
    assert prog.cpu_layers == []
    assert [l.kind for l in prog.layers].count("moe_experts") == 2
    outputs, probes = csim.simulate_project(out, probes=True)
    gold = np.fromfile(out / "testdata" / "golden.bin", "<i2").reshape(len(outputs), -1)
    assert all((o == g).all() for o, g in zip(outputs, gold))        # every test image, bit for bit
    _, _, xte, lte = digits
    task = 1 if spec.endswith("parity") else 0
    envs = [prog.run_fixed(prog.quantize_input(to_accel_layout(x[None]))) for x in xte]
    for probe, env in zip(probes[:10], envs):                         # every tensor of the first images
        assert all((probe[name] == env[name].ravel()).all() for name in prog.shapes)
    # With reordering, each active expert's block is read exactly once per image, the others never.
    moe = [l for l in prog.layers if l.kind == "moe_experts"]
    for probe, env in zip(probes, envs):
        expected = np.concatenate([
            layer_table.expert_words(*l.params["w1"].shape[2:0:-1])
            * (golden.moe_active_experts(env[l.inputs[1]], l.params["w1"].shape[0]) > 0) for l in moe])
        assert (probe["moe_reads"] == expected).all()
    traffic = estimator.moe_weight_traffic(prog, envs)
    measured = np.mean([2 * probe["moe_reads"].sum() for probe in probes])
    assert traffic["reordered"] == pytest.approx(measured)
    assert traffic["reordered"] <= traffic["all_experts"] < traffic["per_patch"]
    with torch.no_grad():
        ref = load_task_model(spec)(torch.from_numpy(xte)).argmax(1).numpy()
    pred = np.array([np.argmax(o) for o in outputs])
    agree, acc_csim, acc_torch = (pred == ref).mean(), (pred == lte[task]).mean(), (ref == lte[task]).mean()
    print(f"{spec}: C-sim top-1 agreement with PyTorch {100 * agree:.2f} %, accuracy C-sim {100 * acc_csim:.2f} %, "
          f"PyTorch {100 * acc_torch:.2f} %; expert weights per image {traffic['reordered'] / 1024:.1f} KiB "
          f"reordered, {traffic['per_patch'] / 1024:.1f} KiB per patch, {traffic['all_experts'] / 1024:.1f} KiB all")
    assert agree >= 0.99


def test_task_static_build_csim(tmp_path, trained, digits):
    model = load_task_model("moe_vit_tiny_static:parity")
    prog = lower(model, model.input_shape)
    xtr, _, xte, _ = digits
    calibrate(prog, [to_accel_layout(x[None]) for x in xtr[:100]])
    estimator.apply_lanes(prog, estimator.choose_lanes(prog, get_target("pynq-z2").require_fpga()))
    tests = [to_accel_layout(x[None]) for x in xte[:20]]
    probes = _simulate(prog, tests, tmp_path / "static")
    for x, probe in zip(tests, probes):
        env = prog.run_fixed(prog.quantize_input(x))
        assert all((probe[name] == env[name].ravel()).all() for name in prog.shapes)
        assert all((golden.moe_active_experts(env[l.output], 2) == 16).all()   # both experts, every patch
                   for l in prog.layers if l.kind == "moe_route")
    assert estimator.report(prog, get_target("pynq-z2").require_fpga())["fits"]
