"""Tests for pointset/models/pointmlp.py and pointset/models/rgbd.py with the published
configurations: deterministic FPS, extra input channels, one training step per model,
export, and the RGBD classifier input.

Oracles: a plain farthest-point-sampling loop (start at index 0, first index on ties, as
the official CUDA kernel), autograd + SGD, and geometric invariants of the normalisation.
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

import pointset.ops as ops
from pointset import PointSet, from_rgbd
from pointset.models import create_model, model_card, rgbd_input

POINT_MODELS = ["pointmlp", "pointmlp_elite", "pointmlp_coc", "rgbd_pointmlp_coc"]


def vanilla_fps(xyz: torch.Tensor, num: int) -> torch.Tensor:
    """The official sampling rule on one cloud ``[N, 3]``: start at 0, distances to the
    selected set initialised to 1e10, next = first argmax."""
    chosen = [0]
    dist = torch.full((xyz.size(0),), 1e10, dtype=xyz.dtype)
    for _ in range(num - 1):
        d = ((xyz - xyz[chosen[-1]]) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        chosen.append(int(torch.argmax(dist)))
    return torch.tensor(chosen)


def test_fps_starts_at_index_0_and_equals_the_official_rule():
    torch.manual_seed(0)
    grouper = create_model("pointmlp_elite", num_classes=15).local_grouper_list[0]
    xyz = torch.rand(2, 1024, 3)
    fps_idx, _ = grouper.sample(xyz)
    assert fps_idx.shape == (2, 512) and fps_idx[:, 0].tolist() == [0, 0]
    for b in range(2):
        assert torch.equal(fps_idx[b].long(), vanilla_fps(xyz[b], 512))
    again, _ = grouper.sample(xyz.clone())
    assert torch.equal(again, fps_idx)  # deterministic
    rolled, _ = grouper.sample(xyz.roll(-7, dims=1))
    assert rolled[0, 0] == 0 and not torch.equal(rolled, fps_idx)  # starts at the new first


def test_extra_channels_change_only_the_embedding_weight():
    rgb = create_model("pointmlp_elite", num_classes=15, in_channels=6)
    xyz = create_model("pointmlp_elite", num_classes=15)
    a = {k: v.shape for k, v in rgb.state_dict().items()}
    b = {k: v.shape for k, v in xyz.state_dict().items()}
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == ["embedding.net.0.weight"]
    assert a["embedding.net.0.weight"] == (32, 6, 1)


def test_rgbd_classifier_is_pointmlp_coc_on_six_channels():
    model = create_model("rgbd_pointmlp_coc")
    coc = create_model("pointmlp_coc")
    assert model.in_channels == 6 and model.embedding.net[0].weight.shape == (64, 6, 1)
    params = sum(p.numel() for p in model.parameters())
    assert params == sum(p.numel() for p in coc.parameters()) + 3 * 64
    assert params == model_card("rgbd_pointmlp_coc").default_cfg["param_count"]


@pytest.mark.parametrize("name", POINT_MODELS)
def test_one_training_step_of_the_published_configuration(name):
    """Published widths and depths; 256 points (the anchor counts follow ``points``)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=15, points=256).train()
    channels = model.in_channels
    x, y = torch.rand(2, channels, 256), torch.tensor([3, 11])
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    with_grad = [k for k, p in after.items() if p.grad is not None and p.grad.abs().sum() > 0]
    assert set(with_grad) <= set(moved) and len(moved) > 0.9 * len(before)
    for name_ in (
        "embedding.net.0.weight",
        "local_grouper_list.3.affine_alpha",
        "classifier.8.bias",
    ):
        assert name_ in moved
    assert all(torch.isfinite(p).all() for p in model.parameters())


def frame(seed: int, hole: bool = False) -> PointSet:
    gen = torch.Generator().manual_seed(seed)
    color = torch.randint(0, 256, (24, 32, 3), dtype=torch.uint8, generator=gen)
    depth = torch.randint(800, 1600, (24, 32), generator=gen).to(torch.int32)
    if hole:
        depth[:, 8:] = 0
    return from_rgbd(color, depth)


def test_rgbd_input_normalises_samples_and_keeps_colour():
    points = frame(0)
    x = rgbd_input(points, num_points=256)
    assert x.shape == (1, 6, 256)
    xyz, rgb = x[0, :3].t(), x[0, 3:].t()
    assert xyz.norm(dim=1).max() <= 1 + 1e-6
    assert rgb.min() >= 0 and rgb.max() <= 1
    # the samples are farthest-point samples from the first point, with their own colours
    centred = points.pos - points.pos.mean(0)
    full = centred / centred.norm(dim=1).max()
    idx = ops.fps(points.pos, num=256)
    torch.testing.assert_close(xyz, full[idx])
    torch.testing.assert_close(rgb, points.x[idx])


def test_rgbd_input_small_clouds_repeat_and_batches_equal_each_cloud_alone():
    small = frame(1, hole=True)  # 24 * 8 = 192 valid pixels
    big = frame(2)
    both = rgbd_input(Batch.from_data_list([small, big]), num_points=256)
    alone = torch.cat([rgbd_input(small, 256), rgbd_input(big, 256)])
    torch.testing.assert_close(both, alone)
    n = small.num_points
    assert torch.equal(both[0, :, n:], both[0, :, : 256 - n])  # cyclic repetition
    unique = both[0, :3, :n]
    assert unique.mean(1).abs().max() < 1e-5 and unique.norm(dim=0).max() == pytest.approx(1)


def test_rgbd_end_to_end_and_errors():
    torch.manual_seed(0)
    model = create_model("rgbd_pointmlp_coc", num_classes=4, points=256).eval()
    with torch.no_grad():
        logits = model(rgbd_input(frame(3), num_points=256))
    assert logits.shape == (1, 4) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        rgbd_input(PointSet(x=torch.rand(5, 3), pos=torch.rand(5, 2)))
    with pytest.raises(ValueError, match="num_points"):
        rgbd_input(frame(3), num_points=0)
    assert rgbd_input(frame(3), 64, with_color=False).shape == (1, 3, 64)
