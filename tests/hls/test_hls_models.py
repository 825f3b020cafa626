"""End to end through generated projects: the tiny MobileViT on digits, mobilevit_xxs's MobileViT block and zoo
stages at their models' ZCU102 lane plans."""

import numpy as np
import pytest
import torch

from edgevit.hls import csim, estimator, project
from edgevit.hls.fixed import to_float
from edgevit.datasets import digits
from edgevit.zoo.tiny_mobilevit import trained_tiny_mobilevit
from edgevit.targets import get_target


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return trained_tiny_mobilevit()


def test_tiny_mobilevit_csim_matches_float(tiny, tmp_path):
    xtr, _, xte, yte = digits()
    prog, out = project.generate(tiny, (1, 1, 8, 8), "pynq-z2", tmp_path / "tiny", [x[None] for x in xtr[:200]],
                                 test_inputs=[x[None] for x in xte])
    assert prog.cpu_layers == []
    result = project.run_csim(out)             # raises on any golden-model mismatch
    assert result["mismatches"] == 0
    outputs, _ = csim.simulate_project(out)
    pred = np.array([np.argmax(o) for o in outputs])
    with torch.no_grad():
        ref = tiny(torch.from_numpy(xte)).argmax(1).numpy()
    acc_float, acc_csim, agree = (ref == yte).mean(), (pred == yte).mean(), (pred == ref).mean()
    print(f"tiny MobileViT on digits ({len(yte)} test images): float {100 * acc_float:.2f} %, "
          f"C-sim {100 * acc_csim:.2f} %, agreement {100 * agree:.2f} %, "
          f"max logit error {result['max_abs_error_vs_float']:.3g}")
    assert acc_float >= 0.95
    assert agree >= 0.99 and acc_float - acc_csim <= 0.005
    assert estimator.report(prog, get_target("pynq-z2").require_fpga())["fits"]


def test_mobilevit_xxs_block_error(tmp_path):
    from edgevit import zoo

    block = zoo.build("mobilevit_xxs").stages[2][1]       # MobileViT block: 48 ch, 32x32, 2 transformer layers
    _block_matches_torch_and_golden(block, (1, 48, 32, 32), tmp_path, "mobilevit_xxs MobileViT block")


@pytest.mark.parametrize("name,stage,shape,lanes", [
    ("efficientformer_l1", 2, (1, 96, 28, 28), (8, 224, 1, 1)),   # 3x3 s2 downsample (K 864), 6 pool mixer blocks
    ("swiftformer_xs", 3, (1, 112, 14, 14), (12, 112, 16, 1)),    # 220 channels: rows start anywhere in a beat
    ("mobilevitv2_050", 2, (1, 64, 16, 16), (12, 128, 8, 1)),     # MobileVitV2Block: GroupNorm, separable attention
])
def test_zoo_stage_at_its_zcu102_plan_is_bit_exact(name, stage, shape, lanes, tmp_path):
    # the lanes the ZCU102 plan of the whole model takes (results/hls_dsp.md): weight rows in pairs over LO = 224
    # or 112, the L2 norms and pool mixers LNL = 8 words a cycle
    from edgevit import zoo
    from edgevit.hls import codegen
    from edgevit.hls.program import calibrate
    from edgevit.hls.torch_import import lower, to_accel_layout

    x = to_accel_layout(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    prog = lower(zoo.build(name).stages[stage].eval(), shape)
    assert prog.cpu_layers == []
    calibrate(prog, [x])
    estimator.apply_lanes(prog, estimator.Lanes(*lanes))
    out = codegen.write_project(prog, tmp_path / "prj", get_target("zcu102").require_fpga(), "zcu102",
                                np.asarray([x]))
    _, probes = csim.simulate_project(out, probes=True)
    env = prog.run_fixed(prog.quantize_input(x))
    assert all((probes[0][t] == env[t].ravel()).all() for t in prog.shapes)


def test_mobilevitv2_runs_its_transformer_layers_on_the_accelerator():
    # every MobileVitV2Block (GroupNorm with one group, separable self-attention, unfold/fold) is lowered: the
    # whole model runs on the accelerator, and the program's float64 model gives torch's logits
    from edgevit import zoo
    from edgevit.hls.torch_import import lower, to_accel_layout

    torch.set_num_threads(1)
    model = zoo.build("mobilevitv2_050").eval()
    shape = zoo.get_entry("mobilevitv2_050").input_shape
    prog = lower(model, shape)
    assert prog.cpu_layers == []
    kinds = [layer.kind for layer in prog.layers]
    assert kinds.count("separable_attention") == 9 and kinds.count("global_norm") == 21   # 2 + 4 + 3 blocks
    assert {layer.source.rsplit(".attn", 1)[0] for layer in prog.layers if layer.kind == "separable_attention"} \
        == {f"stages.{s}.1.transformer.{k}" for s, depth in ((2, 2), (3, 4), (4, 3)) for k in range(depth)}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = prog.run_float(to_accel_layout(x))[prog.output].ravel()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy().ravel()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_mobilevitv2_block_error(tmp_path):
    from edgevit import zoo

    torch.manual_seed(0)
    block = zoo.build("mobilevitv2_050").stages[3][1].eval()   # 192 -> 96 ch, 4 linear transformer layers
    for norm in (m for m in block.modules() if isinstance(m, torch.nn.GroupNorm)):   # non-trivial affines
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.3, 0.3)
    _block_matches_torch_and_golden(block, (1, 192, 8, 8), tmp_path, "mobilevitv2_050 MobileVitV2Block")


def _mixer_module(mixer):
    from timm.models.efficientformer import MetaBlock2d, Pooling
    from timm.models.swiftformer import Block, EfficientAdditiveAttention

    torch.manual_seed(0)
    if mixer == "efficientformer_pooling":
        return Pooling(3)
    if mixer == "efficientformer_metablock2d":    # pool mixer with fused layer scale and residual, BN-folded MLP
        module = MetaBlock2d(32, layer_scale_init_value=0.5)
    elif mixer == "swiftformer_additive_attention":
        return EfficientAdditiveAttention(32, 32)
    else:
        module = Block(32, layer_scale_init_value=0.5)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):   # non-trivial BN statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return module


@pytest.mark.parametrize("mixer", ["efficientformer_pooling", "efficientformer_metablock2d",
                                   "swiftformer_additive_attention", "swiftformer_block"])
def test_token_mixer_modules_against_torch(mixer, tmp_path):
    module = _mixer_module(mixer).eval()
    shape = (1, 32, 7, 7)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    test = [rng.standard_normal(shape).astype(np.float32)]
    prog, out = project.generate(module, shape, "zcu102", tmp_path / mixer, calib, test_inputs=test)
    assert prog.cpu_layers == []
    outputs, _ = csim.simulate_project(out)
    with torch.no_grad():
        ref = module(torch.from_numpy(test[0]))[0].permute(1, 2, 0).numpy().ravel()
    err = float(np.abs(to_float(outputs[0], prog.formats[prog.output]) - ref).max())
    print(f"{mixer}: max abs error vs torch {err:.3g} (output peak {np.abs(ref).max():.3g})")
    assert err <= 0.01 * np.abs(ref).max()
    golden = prog.run_fixed(prog.quantize_input(project.to_accel_layout(test[0])))[prog.output].ravel()
    assert (outputs[0] == golden).all()


def test_unsupported_layers_are_left_to_the_cpu():
    from timm.layers import ConvNormAct

    from edgevit.hls.torch_import import lower

    model = torch.nn.Sequential(ConvNormAct(3, 8, 3), torch.nn.MaxPool2d(2), ConvNormAct(8, 8, 1)).eval()
    prog = lower(model, (1, 3, 8, 8))
    assert [layer.kind for layer in prog.layers] == ["im2col", "linear"]
    assert prog.cpu_layers[0].startswith("1 (MaxPool2d") and prog.cpu_layers[1].startswith("2 (ConvNormAct")


def _block_matches_torch_and_golden(block, shape, tmp_path, label: str) -> None:
    """One zoo block on the accelerator, whole: C-simulated within 2 % of its peak from torch, and bit for bit
    the golden model."""
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    test = [rng.standard_normal(shape).astype(np.float32)]
    prog, out = project.generate(block, shape, "zcu102", tmp_path / "block", calib, test_inputs=test)
    assert prog.cpu_layers == []
    outputs, _ = csim.simulate_project(out)
    got = to_float(outputs[0], prog.formats[prog.output])
    with torch.no_grad():
        ref = block(torch.from_numpy(test[0]))[0].permute(1, 2, 0).numpy().ravel()
    err = np.abs(got - ref)
    print(f"{label}: max abs error {err.max():.3g}, mean {err.mean():.3g}, output peak {np.abs(ref).max():.3g}, "
          f"format {prog.formats[prog.output]}")
    assert err.max() <= 0.02 * np.abs(ref).max()
    golden = prog.run_fixed(prog.quantize_input(project.to_accel_layout(test[0])))[prog.output].ravel()
    assert (outputs[0] == golden).all()
