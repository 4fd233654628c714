"""Tests of pointset/viz.py (cluster maps of Context Cluster layers as PNG files).

Oracles: the PNG signature and the decoded image size; the layer's own recorded assignment
(one center id per point, every point covered, ids from the layer's regions); the model's
logits, which drawing must not change.
"""

from __future__ import annotations

import pytest
import torch

from pointset.data.image import from_image
from pointset.data.point_set import PointSet
from pointset.models.coc import ContextClusterNet
from pointset.nn import ContextCluster
from pointset.viz import cluster_map, save_cluster_map

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_coc() -> ContextClusterNet:
    torch.manual_seed(0)
    return ContextClusterNet(
        [1, 2],
        embed_dims=[8, 16],
        mlp_ratios=[2, 2],
        downsamples=[True, True],
        proposal_w=[2, 2],
        proposal_h=[2, 2],
        fold_w=[2, 1],
        fold_h=[2, 1],
        heads=[2, 2],
        head_dim=[4, 4],
        num_classes=5,
    )


def _read_png(path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG
    return imread(path)


def test_image_cluster_map_covers_every_cell_and_leaves_the_model_alone(tmp_path):
    model = tiny_coc().train()
    image = torch.rand(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        logits = model(image)
    model.train()
    result = cluster_map(model, image, stage=0, block=0)
    # stage 0 runs on the 8x8 map of the stride-4 stem: 2x2 regions of 2x2 centers
    assert result.grid == (8, 8)
    assert result.assignment.shape == (64,)
    assert set(result.assignment.tolist()) <= set(range(16))
    assert len(set(result.assignment.tolist())) > 1
    # each cell's center lies in its own fold region (centers 4r .. 4r + 3)
    rows, cols = torch.arange(8).repeat_interleave(8), torch.arange(8).repeat(8)
    region = (rows // 4) * 2 + cols // 4
    assert torch.equal(result.assignment // 4, region)
    assert model.training
    mixer = model.network[0][0].token_mixer
    assert "forward" not in vars(mixer) and "forward_dense" not in vars(mixer)  # undone
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(image), logits, rtol=0, atol=0)

    path = save_cluster_map(model, image[0], tmp_path / "map.png", stage=1, block=1)
    assert path == tmp_path / "map.png"
    assert _read_png(path).ndim == 3


def test_grid_point_set_input_equals_image_input():
    model = tiny_coc()
    image = torch.rand(1, 3, 16, 24)
    a = cluster_map(model, image, stage=1, block=0)
    b = cluster_map(model, from_image(image), stage=1, block=0)
    assert a.grid == b.grid == (2, 3)
    assert torch.equal(a.assignment, b.assignment)


@pytest.mark.parametrize("dim", [2, 3])
def test_point_cloud_scatter_with_a_layer(tmp_path, dim):
    torch.manual_seed(1)
    layer = ContextCluster(4, heads=2, head_dim=3, num_centers=6, center_k=5, candidates=3)
    sizes = [50, 30]
    points = PointSet(
        x=torch.randn(80, 4),
        pos=torch.rand(80, dim),
        batch=torch.repeat_interleave(torch.arange(2), torch.tensor(sizes)),
    )
    result = cluster_map(layer, points, head=1)
    assert result.assignment.shape == (50,)  # the first cloud
    assert result.centers.shape == (6, dim)
    assert set(result.assignment.tolist()) <= set(range(6))  # cloud 0's centers
    path = save_cluster_map(layer, points, tmp_path / "cloud" / "map.png")
    assert _read_png(path).shape[-1] in (3, 4)


def test_grid_point_set_with_a_layer_uses_the_grid_path():
    """Oracle: the layer's own record on the image tensor (grid path)."""
    torch.manual_seed(2)
    layer = ContextCluster(3, heads=2, head_dim=4)  # 2x2 folds of 2x2 centers
    image = torch.rand(1, 3, 8, 8)
    result = cluster_map(layer, from_image(image), head=1)
    with torch.no_grad():
        _, assignment = layer.forward_dense(image, return_assignment=True)
    assert torch.equal(result.assignment, assignment[:, 1])
    assert result.centers is None and result.pos.shape == (64, 2)
    assert result.pos[:2].tolist() == [[0.0, 0.0], [1.0, 0.0]]  # (col, -row)


def test_bad_arguments_raise_value_error(tmp_path):
    model = tiny_coc()
    image = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="stage"):
        cluster_map(model, image, stage=2)
    with pytest.raises(ValueError, match="block"):
        cluster_map(model, image, stage=0, block=1)
    with pytest.raises(ValueError, match="head"):
        cluster_map(model, image, head=2)
    with pytest.raises(ValueError, match="ContextCluster layer"):
        cluster_map(model, PointSet(x=torch.rand(10, 3), pos=torch.rand(10, 3)))
    with pytest.raises(ValueError, match="ContextClusterNet"):
        cluster_map(torch.nn.Linear(2, 2), image)
    layer = ContextCluster(4, num_centers=2, center_k=2, candidates=1)
    with pytest.raises(ValueError, match="PointSet"):
        cluster_map(layer, image)
    with pytest.raises(ValueError, match="stage 0"):
        cluster_map(layer, PointSet(x=torch.rand(10, 4), pos=torch.rand(10, 2)), stage=1)
