"""The MoE-ViT model (models/moe_vit.py): routing by gather/scatter, per-task builds, and the trained presets."""

import pytest
import torch

from edgevit.errors import UnknownNameError
from edgevit.moe import model_module, parse_name, task_build_summary
from edgevit.moe.train import accuracy

mv = model_module()


def _dense_moe(moe, x, task):
    """Every expert on every patch, masked by the gate: the slow formulation dispatch must equal."""
    idx, weights = moe.route(x, task)
    out = torch.zeros_like(x)
    for e, expert in enumerate(moe.experts):
        w = (weights * (idx == e)).sum(-1, keepdim=True)
        out = out + w * expert(x)
    return out


def test_dispatch_equals_dense_masked_experts():
    torch.manual_seed(1)
    model = mv.build("moe_vit_tiny").eval()
    moe = model.moe_layers()[0]
    with torch.no_grad():
        moe.gate_b[0, 1] = -1e4      # expert 1 gets no patch at all: an empty gather must work
        x = torch.randn(3, 16, 32)
        for task in (0, 1):
            idx, _ = moe.route(x, task)
            assert set(idx.unique().tolist()) <= set(mv.PRESETS["moe_vit_tiny"].task_experts[task])
            torch.testing.assert_close(moe(x, task), _dense_moe(moe, x, task), rtol=1e-6, atol=1e-6)
        assert not (moe.route(x, 0)[0] == 1).any()


@pytest.mark.parametrize("preset", ["moe_vit_tiny", "moe_vit_tiny_static"])
def test_task_build_keeps_only_reachable_experts_and_matches(trained, digits, preset):
    model = trained[preset]
    x = torch.from_numpy(digits[2][:64])
    for task, moe_rows in enumerate(task_build_summary(preset, model)):
        view = model.for_task(task).eval()
        with torch.no_grad():
            torch.testing.assert_close(view(x), model(x, task), rtol=1e-5, atol=1e-5)
        for full, local, ids in zip(model.moe_layers(), view.moe_layers(), moe_rows["experts"]):
            assert local.expert_ids == ids and len(local.experts) == len(ids)
            assert all(a is full.experts[e] for a, e in zip(local.experts, ids))
            if preset == "moe_vit_tiny_static":   # task-static: the task's top-k, whatever the patch
                assert len(ids) == model.cfg.top_k
                assert ids == sorted(torch.topk(full.gate_b[task], model.cfg.top_k).indices.tolist())
            else:
                assert ids == list(model.cfg.task_experts[task])
        assert moe_rows["params"] < moe_rows["params_all_tasks"]


def test_trained_accuracy_per_task(trained, digits):
    _, _, xte, lte = digits
    for preset, model in trained.items():
        acc = accuracy(model, xte, lte)
        print(f"{preset}: digit {100 * acc[0]:.2f} %, parity {100 * acc[1]:.2f} % ({len(xte)} test images)")
        assert acc[0] >= 0.94 and acc[1] >= 0.95


def test_names():
    assert str(parse_name("moe_vit_tiny")) == "moe_vit_tiny:digit"
    assert parse_name("moe_vit_tiny_static:parity").task == 1
    with pytest.raises(UnknownNameError, match="tasks: digit, parity"):
        parse_name("moe_vit_tiny:colour")
    with pytest.raises(UnknownNameError, match="presets"):
        parse_name("moe_vit_huge")
    assert mv.PRESETS["moe_vit_tiny"].num_patches == 16


def test_configurable_size():
    # A Fashion-MNIST-sized variant: 28x28 images, 7x7 patches of 4x4, 8 experts, top-3, all shared.
    model = mv.build("moe_vit_tiny", image_size=28, patch_size=4, dim=48, depth=6, heads=3, num_experts=8,
                     top_k=3, task_experts=None).eval()
    assert len(model.moe_layers()) == 3 and all(len(m.experts) == 8 for m in model.moe_layers())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert model(x, 0).shape == (2, 10) and model(x, 1).shape == (2, 2)
        torch.testing.assert_close(model.for_task(1)(x), model(x, 1))
    with pytest.raises(ValueError, match="top_k"):
        mv.build("moe_vit_tiny", top_k=5)


def test_models_listing_shows_each_task_build(trained):
    from edgevit.moe.models import format_task_builds, task_build_rows

    rows = task_build_rows()
    assert [r["name"] for r in rows] == ["moe_vit_tiny:digit", "moe_vit_tiny:parity", "moe_vit_tiny_static:digit",
                                         "moe_vit_tiny_static:parity"]
    text = format_task_builds(rows)
    assert "4/6 4/6" in text and "2/6 2/6" in text and "task-static" in text and f"{rows[0]['params']:,}" in text
