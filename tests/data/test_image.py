"""Image conversions and the CoC input (oracles: numpy reference, the upstream
Context-Cluster position formula, and the image round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointset.data import PointSet, coc_input, from_image, grid_positions, to_image


def _upstream_coc_positions(h: int, w: int) -> torch.Tensor:
    """The position channels exactly as Context Clusters' forward builds them."""
    range_w = torch.arange(0, h, step=1) / (h - 1.0)  # upstream names the row axis img_w
    range_h = torch.arange(0, w, step=1) / (w - 1.0)
    fea_pos = torch.stack(torch.meshgrid(range_w, range_h, indexing="ij"), dim=-1).float()
    return (fea_pos - 0.5).permute(2, 0, 1)  # [2, H, W]


@pytest.mark.parametrize("h, w", [(4, 5), (7, 3), (64, 64), (2, 2)])
def test_coc_input_equals_upstream_formula_exactly(h, w):
    img = torch.randn(2, 3, h, w)
    out = coc_input(img)
    assert out.shape == (2, 5, h, w) and out.dtype == torch.float32
    assert torch.equal(out[:, :3], img)
    ref = _upstream_coc_positions(h, w)
    assert torch.equal(out[0, 3:], ref) and torch.equal(out[1, 3:], ref)
    # numpy float32 reference: row varies along H, col along W
    rows = np.arange(h, dtype=np.float32) / np.float32(h - 1) - np.float32(0.5)
    cols = np.arange(w, dtype=np.float32) / np.float32(w - 1) - np.float32(0.5)
    np.testing.assert_array_equal(out[0, 3].numpy(), np.repeat(rows[:, None], w, axis=1))
    np.testing.assert_array_equal(out[0, 4].numpy(), np.repeat(cols[None, :], h, axis=0))
    assert out[0, 3, 0, 0] == -0.5 and out[0, 3, -1, 0] == 0.5 and out[0, 4, 0, -1] == 0.5


@pytest.mark.parametrize("h, w", [(1, 5), (4, 1), (1, 1)])
def test_coc_input_unit_side_is_zero_not_nan(h, w):
    out = coc_input(torch.rand(3, h, w))
    assert out.shape == (5, h, w)
    assert bool(torch.isfinite(out).all())
    if h == 1:
        assert bool((out[3] == 0).all())
    if w == 1:
        assert bool((out[4] == 0).all())
    if w > 1:
        assert out[4, 0, 0] == -0.5 and out[4, 0, -1] == 0.5


def test_coc_input_uint8_and_float64():
    img = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    out = coc_input(img)
    assert torch.equal(out[:, :3], img.float() / 255)
    out64 = coc_input(torch.rand(1, 3, 4, 4, dtype=torch.float64))
    assert out64.dtype == torch.float64
    assert torch.equal(out64[0, 3:].float(), _upstream_coc_positions(4, 4))


def test_from_image_pixel_order_and_positions():
    """Oracle: numpy indexing, point r * W + c is pixel (r, c)."""
    img = torch.rand(4, 3, 5)  # C=4 channels
    ps = from_image(img)
    assert isinstance(ps, PointSet) and ps.batch is None
    assert ps.grid_size.tolist() == [[3, 5]] and ps.is_grid
    assert ps.x.shape == (15, 4) and ps.pos.shape == (15, 2)
    rr, cc = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    np.testing.assert_array_equal(ps.pos.numpy(), np.stack([rr.ravel(), cc.ravel()], 1))
    for r in range(3):
        for c in range(5):
            assert torch.equal(ps.x[r * 5 + c], img[:, r, c])


def test_from_image_normalize_matches_coc_channels():
    img = torch.rand(3, 6, 4)
    ps = from_image(img, normalize=True)
    coc = coc_input(img)
    assert torch.equal(ps.pos[:, 0], coc[3].reshape(-1))
    assert torch.equal(ps.pos[:, 1], coc[4].reshape(-1))
    assert ps.pos.min() == -0.5 and ps.pos.max() == 0.5


def test_batched_round_trip_and_dtype():
    img = torch.randint(0, 256, (3, 3, 4, 6), dtype=torch.uint8)
    ps = from_image(img)
    assert ps.num_clouds == 3 and ps.grid_size.tolist() == [[4, 6]] * 3 and ps.is_grid
    assert ps.batch.tolist() == sum(([i] * 24 for i in range(3)), [])
    back = to_image(ps)
    assert back.shape == (3, 3, 4, 6)
    assert torch.equal(back, img.float() / 255)
    single = torch.rand(2, 3, 3, dtype=torch.float64)
    ps1 = from_image(single)
    assert ps1.pos.dtype == torch.float64
    assert torch.equal(to_image(ps1), single)


def test_to_image_rejects_non_grid_and_mixed_sizes():
    with pytest.raises(ValueError, match="full-grid"):
        to_image(PointSet(x=torch.rand(4, 3), pos=torch.rand(4, 2)))
    from torch_geometric.data import Batch

    mixed = Batch.from_data_list([from_image(torch.rand(3, 2, 2)), from_image(torch.rand(3, 1, 4))])
    with pytest.raises(ValueError, match="different grid sizes"):
        to_image(mixed)


def test_grid_positions_shape():
    pos = grid_positions(2, 3)
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    with pytest.raises(ValueError, match="1 x 1"):
        grid_positions(0, 3)


@pytest.mark.parametrize(
    "img, message",
    [
        (torch.rand(3, 4), r"\[B, C, H, W\]"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.int32), "uint8 or floating"),
        (torch.zeros(1, 3, 0, 4), "empty"),
        (np.zeros((3, 4, 4)), "torch.Tensor"),
        # channels-last images used to become 64 channels on a 64x3 grid
        (torch.rand(64, 64, 3), r"looks channels-last \[H, W, C\].*img.permute\(2, 0, 1\)"),
        (torch.zeros(2, 32, 48, 4, dtype=torch.uint8), r"looks channels-last \[B, H, W, C\]"),
    ],
)
def test_bad_images_raise_value_error(img, message):
    with pytest.raises(ValueError, match=message):
        from_image(img)
    with pytest.raises(ValueError, match=message):
        coc_input(img)


def test_check_layout_false_keeps_a_feature_map_with_many_channels():
    """Oracle: the documented escape for a real [C, H, W] map that looks channels-last."""
    feat = torch.rand(64, 16, 3)
    points = from_image(feat, check_layout=False)
    assert points.x.shape == (48, 64) and points.grid_size.reshape(-1).tolist() == [16, 3]
