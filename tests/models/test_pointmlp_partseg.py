"""Tests for pointset/models/pointmlp_seg.py: the official PointMLP part-segmentation network
(against the fixture made by the unchanged official code, see the reference README), the
shared backbone and the per-point baseline."""

from __future__ import annotations

import json

import pytest
import torch

from pointset.models import create_model, model_card
from pointset.models.pointmlp_seg import PointMLPPartSeg, PointMLPSegBackbone, SegFeatures

FIXTURE = "pointmlp_partseg_mini.pt"


def _load(shared_dir):
    path = shared_dir / "reference" / "fixtures" / FIXTURE
    if not path.is_file():
        pytest.skip(f"fixture {FIXTURE} is absent")
    fixture = torch.load(path, weights_only=True)
    model = create_model("pointmlp_partseg", **json.loads(fixture["config_json"]))
    model.load_state_dict(fixture["state_dict"], strict=True)
    return fixture, model.eval()


def test_float64_log_probs_match_official_float64(shared_dir):
    """Oracle: the official model run in float64 (log_probs_fp64), atol 1e-8."""
    fixture, model = _load(shared_dir)
    with torch.no_grad():
        out = model.double()(
            fixture["input_xyz"].double(),
            fixture["input_normals"].double(),
            fixture["cls_label"].double(),
        )
    torch.testing.assert_close(out, fixture["log_probs_fp64"], rtol=0, atol=1e-8)


def test_float32_log_probs_and_fps_indices_match_official(shared_dir):
    """Oracle: official fp32 log-probabilities (atol 1e-3, the README's tolerance) and the
    FPS indices of every stage (exact)."""
    fixture, model = _load(shared_dir)
    xyz, normals = fixture["input_xyz"], fixture["input_normals"]
    with torch.no_grad():
        out = model(xyz, normals, fixture["cls_label"])
        feats = model.forward_features(torch.cat([xyz, normals], dim=1))
    assert out.shape == (2, 256, 50)
    torch.testing.assert_close(out, fixture["log_probs"], rtol=0, atol=1e-3)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(2, 256))
    for s, grouper in enumerate(model.local_grouper_list):
        stage_xyz = feats.encoder[s][0].transpose(1, 2)
        fps_idx, _ = grouper.sample(stage_xyz)
        assert torch.equal(fps_idx, fixture[f"fps_idx_stage{s}"])
        anchors = torch.gather(stage_xyz, 1, fps_idx.unsqueeze(-1).expand(-1, -1, 3))
        assert torch.equal(feats.encoder[s + 1][0], anchors.transpose(1, 2))
    # integer category ids are the same input as their one-hot rows
    with torch.no_grad():
        ids = model(xyz, normals, fixture["cls_label"].argmax(-1))
    assert fixture["cls_label"].argmax(-1).tolist() == [3, 11]
    assert torch.equal(ids, out)


def test_fixture_config_builds_through_the_constructor_and_card(shared_dir):
    """Oracle: the fixture's official keyword arguments and parameter count (50,750)."""
    fixture, model = _load(shared_dir)
    direct = PointMLPPartSeg(**json.loads(fixture["config_json"]))
    assert sum(p.numel() for p in direct.parameters()) == 50_750
    assert list(direct.state_dict()) == list(fixture["state_dict"])
    card = model_card("pointmlp_partseg")
    assert card.default_cfg["task"] == "segmentation"
    assert card.default_cfg["call"] == "partseg"
    assert card.input_size == (6, 2048) and card.num_classes == 50
    assert card.reported[0].metrics == {"instance_mIoU": 86.1, "class_mIoU": 84.6}
    assert "arxiv.org/abs/2202.07123" in card.paper


def test_backbone_is_the_partseg_encoder_decoder(shared_dir):
    """Oracle: the partseg model's own forward_features; a stand-alone backbone loaded with
    the partseg weights (strict, its keys are a subset) gives the same features."""
    fixture, model = _load(shared_dir)
    cfg = {
        k: v
        for k, v in json.loads(fixture["config_json"]).items()
        if k not in ("num_classes", "gmp_dim", "cls_dim")
    }
    backbone = PointMLPSegBackbone(in_channels=6, **cfg)
    keys = set(backbone.state_dict())
    backbone.load_state_dict({k: v for k, v in fixture["state_dict"].items() if k in keys})
    points = torch.cat([fixture["input_xyz"], fixture["input_normals"]], dim=1)
    with torch.no_grad():
        a = backbone.eval()(points)
        b = model.forward_features(points)
    assert isinstance(a, SegFeatures)
    assert [tuple(f.shape) for _, f in a.encoder] == [(2, 16, 256), (2, 32, 64), (2, 64, 16)]
    assert [tuple(p.shape) for p, _ in a.encoder] == [(2, 3, 256), (2, 3, 64), (2, 3, 16)]
    assert [tuple(f.shape) for _, f in a.decoder] == [(2, 32, 64), (2, 16, 256)]
    assert torch.equal(a.decoder[-1][0], fixture["input_xyz"])
    for (pa, fa), (pb, fb) in zip(a.encoder + a.decoder, b.encoder + b.decoder):
        assert torch.equal(pa, pb) and torch.equal(fa, fb)
    assert backbone.encoder_channels == [16, 32, 64] and backbone.decoder_channels == [32, 16]


def _small(**kwargs):
    config = dict(
        points=64,
        embed_dim=8,
        dim_expansion=[2, 2],
        pre_blocks=[1, 1],
        pos_blocks=[1, 1],
        k_neighbors=[6, 6],
        reducers=[4, 2],
        de_dims=[16, 8],
        de_blocks=[1, 1],
    )
    config.update(kwargs)
    return config


def test_pointmlp_seg_baseline_shapes_and_one_sgd_step():
    """Oracle: the documented output layout; autograd + SGD move the weights."""
    torch.manual_seed(0)
    model = create_model("pointmlp_seg", num_classes=5, **_small(in_channels=6, head_dim=16))
    card = model_card("pointmlp_seg")
    assert card.default_cfg["call"] == "points" and card.default_cfg["task"] == "segmentation"
    points, labels = torch.rand(3, 6, 64), torch.randint(-1, 5, (3, 64))
    logits = model(points)
    assert logits.shape == (3, 64, 5)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-1)
    before = model.backbone.embedding.net[0].weight.detach().clone()
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, model.backbone.embedding.net[0].weight)
    assert all(p.grad is not None for p in model.parameters())


def test_partseg_one_nll_step_reaches_every_parameter():
    """Oracle: autograd; the official loss (NLL of the log-probabilities) gives every
    parameter a finite gradient (encoder, decoder, global context, category token, head)."""
    torch.manual_seed(0)
    model = PointMLPPartSeg(**_small()).train()
    xyz, normals = torch.rand(3, 3, 64), torch.nn.functional.normalize(torch.randn(3, 3, 64))
    category = torch.tensor([0, 4, 15])
    labels = torch.stack([torch.randint(s, s + n, (64,)) for s, n in [(0, 4), (12, 4), (47, 3)]])
    out = model(xyz, normals, category)
    loss = torch.nn.functional.nll_loss(out.reshape(-1, 50), labels.reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.cls_map[0].net[0].weight.grad.abs().sum() > 0
    assert model.gmp_map_list[0].net[0].weight.grad.abs().sum() > 0


def test_published_parameter_counts():
    """Oracle: the official count (16,755,594 at 50 parts) and the cards' param_count."""
    with torch.device("meta"):
        partseg = create_model("pointmlp_partseg")
        seg = create_model("pointmlp_seg")
    assert sum(p.numel() for p in partseg.parameters()) == 16_755_594
    assert model_card("pointmlp_partseg").default_cfg["param_count"] == 16_755_594
    assert (
        sum(p.numel() for p in seg.parameters())
        == model_card("pointmlp_seg").default_cfg["param_count"]
    )


def test_bad_input_raises_value_error():
    """Oracle: the input contract (ValueError naming the problem and the value)."""
    model = PointMLPPartSeg(**_small()).eval()
    xyz, normals = torch.rand(2, 3, 64), torch.rand(2, 3, 64)
    with pytest.raises(ValueError, match=r"category id 16 is outside \[0, 15\]"):
        model(xyz, normals, torch.tensor([0, 16]))
    with pytest.raises(ValueError, match=r"one-hot \[2, 16\]"):
        model(xyz, normals, torch.zeros(2, 15))
    with pytest.raises(ValueError, match=r"both have shape \[B, 3, N\]"):
        model(xyz, normals[:, :, :32], torch.tensor([0, 1]))
    backbone = PointMLPSegBackbone(in_channels=4, **_small())
    with pytest.raises(ValueError, match="4 channels"):
        backbone(torch.rand(2, 6, 64))
    with pytest.raises(ValueError, match="equal lengths"):
        PointMLPSegBackbone(**_small(de_dims=[16]))
    with pytest.raises(ValueError, match="in_channels=6"):
        PointMLPPartSeg(in_channels=3)
