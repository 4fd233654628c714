"""Tests for pointset/models/pointmlp.py against the official PointMLP / PointMLP-CoC code.

The fixtures were produced by the unchanged official model code (see the reference README):
logits, float64 logits, embedding output, pos-block outputs, FPS and kNN indices.
"""

from __future__ import annotations

import json

import pytest
import torch

from pointset.models.pointmlp import PointMLP, pointmlp_elite

FIXTURES = {"pointmlp_mini.pt": False, "pointmlp_coc_mini.pt": True}


def _load(shared_dir, name):
    path = shared_dir / "reference" / "fixtures" / name
    if not path.is_file():
        pytest.skip(f"fixture {name} is absent")
    fixture = torch.load(path, weights_only=True)
    model = PointMLP(**json.loads(fixture["config_json"]), coc=FIXTURES[name])
    model.load_state_dict(fixture["state_dict"], strict=True)
    return fixture, model.eval()


def _run_recording(model, x):
    """Logits plus the intermediates the fixtures store: the embedding and pos-block outputs
    (their ``forward_dense``, which the model calls, wrapped to record the output), and every
    stage's FPS / kNN indices and anchor positions as the model used them (the stage's
    ``grouper.sample`` and ``pre.forward_grouped`` wrapped to record their results)."""
    rec = {}

    def record(module, key):
        method = module.forward_dense

        def call(*args):
            rec[key] = method(*args)
            return rec[key]

        module.forward_dense = call  # an instance attribute shadows the method

    record(model.embedding, "embed")
    for s, pos in enumerate(model.pos_blocks_list):
        record(pos, f"pos{s}")
    indices, anchors = {}, {}
    stages = list(zip(model.local_grouper_list, model.pre_blocks_list))
    for s, (grouper, pre) in enumerate(stages):

        def sample(xyz, s=s, original=grouper.sample):
            indices[s] = original(xyz)
            return indices[s]

        def forward_grouped(*args, s=s, original=pre.forward_grouped):
            out = original(*args)
            anchors[s] = out[0]
            return out

        grouper.sample, pre.forward_grouped = sample, forward_grouped
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for module in [model.embedding, *model.pos_blocks_list]:
            del module.forward_dense
        for grouper, pre in stages:
            del grouper.sample, pre.forward_grouped
    for s in range(len(stages)):
        rec[f"group{s}"] = (indices[s], anchors[s])
    return logits, rec


@pytest.mark.parametrize("name", list(FIXTURES))
def test_float32_logits_and_intermediates_match_official(shared_dir, name):
    """Oracle: official fp32 outputs; indices exact, values at fp32 rounding (atol 5e-5)."""
    fixture, model = _load(shared_dir, name)
    logits, rec = _run_recording(model, fixture["input"])
    torch.testing.assert_close(logits, fixture["logits"], rtol=0, atol=5e-5)
    torch.testing.assert_close(rec["embed"], fixture["embed_output"], rtol=0, atol=1e-6)
    for s in range(2):
        (fps_idx, knn_idx), anchors = rec[f"group{s}"]
        assert torch.equal(fps_idx, fixture[f"fps_idx_stage{s}"])
        assert torch.equal(knn_idx.sort(dim=-1).values, fixture[f"knn_idx_stage{s}"])
        torch.testing.assert_close(anchors, fixture[f"anchor_xyz_stage{s}"], rtol=0, atol=0)
        torch.testing.assert_close(
            rec[f"pos{s}"], fixture["pos_block_outputs"][s], rtol=1e-5, atol=1e-4
        )


@pytest.mark.parametrize("name", list(FIXTURES))
def test_float64_logits_match_official_float64(shared_dir, name):
    """Oracle: the official model run in float64 (logits_fp64), atol 1e-10 (the agreement
    measured is about 1e-14)."""
    fixture, model = _load(shared_dir, name)
    with torch.no_grad():
        logits = model.double()(fixture["input"].double())
    torch.testing.assert_close(logits, fixture["logits_fp64"], rtol=0, atol=1e-10)


def _mini(**kwargs):
    config = dict(
        points=64,
        num_classes=5,
        embed_dim=8,
        res_expansion=1.0,
        dim_expansion=[2, 2],
        pre_blocks=[1, 1],
        pos_blocks=[1, 1],
        k_neighbors=[6, 6],
        reducers=[2, 2],
    )
    config.update(kwargs)
    return PointMLP(**config)


@pytest.mark.parametrize("coc", [False, True])
def test_one_sgd_step_changes_weights_with_finite_loss(coc):
    """Oracle: autograd + SGD; every trainable tensor that gets a gradient moves."""
    torch.manual_seed(0)
    model = _mini(coc=coc).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 3, 64), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    names = ["local_grouper_list.0.affine_alpha", "embedding.net.0.weight", "classifier.8.bias"]
    if coc:
        names += [
            "pre_blocks_list.0.operation.0.sim_alpha",
            "pre_blocks_list.1.operation.0.fc1.weight",
        ]
    for name in names:
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_extra_input_channels_feed_embedding_but_not_grouping():
    """Oracle: xyz-only grouping; rgb changes the logits but not the FPS/kNN indices."""
    torch.manual_seed(0)
    model = _mini(in_channels=6).eval()
    assert model.embedding.net[0].weight.shape == (8, 6, 1)
    xyz = torch.rand(2, 3, 64)
    a = torch.cat([xyz, torch.rand(2, 3, 64)], dim=1)
    b = torch.cat([xyz, torch.rand(2, 3, 64)], dim=1)
    logits_a, rec_a = _run_recording(model, a)
    logits_b, rec_b = _run_recording(model, b)
    for s in range(2):
        assert torch.equal(rec_a[f"group{s}"][0][0], rec_b[f"group{s}"][0][0])
        assert torch.equal(rec_a[f"group{s}"][0][1], rec_b[f"group{s}"][0][1])
    assert not torch.allclose(logits_a, logits_b)
    xyz_only, _ = _run_recording(_mini().eval(), xyz)
    assert xyz_only.shape == logits_a.shape == (2, 5)


def test_class_num_alias_and_factory_overrides():
    """Oracle: official keyword name class_num; factory kwargs override the config."""
    assert PointMLP(class_num=7, points=64, k_neighbors=[4] * 4).classifier[-1].out_features == 7
    elite = pointmlp_elite(num_classes=3, points=128, in_channels=6)
    assert elite.local_grouper_list[0].groups == 64 and elite.in_channels == 6
    with pytest.raises(ValueError, match="disagree"):
        PointMLP(num_classes=3, class_num=7)


def test_bad_input_raises_value_error():
    """Oracle: the input contract (ValueError naming the problem)."""
    model = _mini().eval()
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(2, 6, 64))
    with pytest.raises(ValueError, match=r"shape \[B, 3, N\]"):
        model(torch.rand(3, 64))
    with pytest.raises(ValueError, match="empty"):
        model(torch.rand(2, 3, 0))
    with pytest.raises(ValueError, match="groups=32"):
        model(torch.rand(2, 3, 20))
    with pytest.raises(ValueError, match="equal lengths"):
        PointMLP(pre_blocks=[1, 1], k_neighbors=[4, 4, 4])
    with pytest.raises(ValueError, match="in_channels"):
        PointMLP(in_channels=2)
