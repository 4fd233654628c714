"""Tests for pointset/nn/grid_point_reducer.py.

Oracles: ``torch.nn.functional.conv2d`` with the layer's weights, on the image (dense path,
whole images) and on the image with the absent pixels set to zero (sparse lattice path),
and each cloud alone (packed batches).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pointset.nn import GridPointReducer


def _pixels(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[C, H, W]`` -> features ``[H * W, C]`` and cells ``[H * W, 2]`` in row-major order."""
    c, h, w = image.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return image.reshape(c, -1).t(), torch.stack([rows.flatten(), cols.flatten()], 1)


def test_dense_path_is_the_official_strided_conv():
    """Oracle: F.conv2d with kernel 3, stride 2, padding 1 (and the 4/4/0 stem)."""
    torch.manual_seed(0)
    for args, shape in (((8, 12, 3, 2, 1), (2, 8, 9, 9)), ((5, 16, 4, 4, 0), (2, 5, 16, 16))):
        layer = GridPointReducer(*args)
        assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
            "proj.weight": (args[1], args[0], args[2], args[2]),
            "proj.bias": (args[1],),
        }
        x = torch.randn(*shape)
        expected = F.conv2d(x, layer.proj.weight, layer.proj.bias, stride=args[3], padding=args[4])
        torch.testing.assert_close(layer.forward_dense(x), expected)


def test_whole_grids_equal_the_dense_path():
    """Oracle: the [B, C, H, W] path; grid records per cloud, two different sizes, given as
    lattice cells and as a grid record without cells."""
    layer = GridPointReducer(4, 6)
    a, b = torch.randn(2, 4, 8, 6), torch.randn(1, 4, 5, 5)
    rows = [a.permute(0, 2, 3, 1).reshape(-1, 4), b.permute(0, 2, 3, 1).reshape(-1, 4)]
    expected = torch.cat(
        [
            layer.forward_dense(a).permute(0, 2, 3, 1).reshape(-1, 6),
            layer.forward_dense(b).permute(0, 2, 3, 1).reshape(-1, 6),
        ]
    )
    grid = torch.tensor([[8, 6], [8, 6], [5, 5]])
    out, cells, batch, size = layer(torch.cat(rows), None, None, grid)
    torch.testing.assert_close(out, expected)
    assert size.tolist() == [[4, 3], [4, 3], [3, 3]]
    assert batch.tolist() == [0] * 12 + [1] * 12 + [2] * 9
    assert cells[:3].tolist() == [[0, 0], [0, 1], [0, 2]]

    cells_in = torch.cat([_pixels(a[0])[1], _pixels(a[1])[1], _pixels(b[0])[1]])
    batch_in = torch.repeat_interleave(torch.arange(3), grid.prod(1))
    again = layer(torch.cat(rows), cells_in, batch_in, grid)
    torch.testing.assert_close(again[0], out)
    assert torch.equal(again[1], cells) and torch.equal(again[2], batch)


@pytest.mark.parametrize("args", [(3, 2, 1), (4, 4, 0)])
def test_sparse_lattice_is_the_conv_of_the_zero_filled_image(args):
    """Oracle: F.conv2d of the image whose absent pixels are zero, read at the output cells
    whose stride block holds a present pixel; shuffled input order and each cloud alone
    give the same rows."""
    torch.manual_seed(1)
    kernel, stride, padding = args
    layer = GridPointReducer(3, 5, kernel, stride, padding)
    images = torch.randn(2, 3, 12, 12)
    feats, cells, batch = [], [], []
    expected = []
    for b in range(2):
        x, cell = _pixels(images[b])
        keep = torch.rand(x.size(0)) < 0.5
        keep[:3] = True
        filled = torch.zeros(3, 12, 12)
        filled[:, cell[keep, 0], cell[keep, 1]] = x[keep].t()
        dense = F.conv2d(filled[None], layer.proj.weight, layer.proj.bias, stride, padding)[0]
        blocks = torch.unique(cell[keep] // stride, dim=0)  # sorted row-major
        blocks = blocks[(blocks < torch.tensor(dense.shape[1:])).all(1)]
        expected.append(dense[:, blocks[:, 0], blocks[:, 1]].t())
        feats.append(x[keep])
        cells.append(cell[keep])
        batch.append(torch.full((int(keep.sum()),), b))
    with torch.no_grad():
        out, out_cells, out_batch, size = layer(
            torch.cat(feats), torch.cat(cells), torch.cat(batch), (12, 12)
        )
        alone = layer(feats[1], cells[1], None, (12, 12))[0]
        perm = torch.randperm(feats[0].size(0))
        shuffled = layer(feats[0][perm], cells[0][perm], None, (12, 12))[0]
    torch.testing.assert_close(out, torch.cat(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, expected[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(shuffled, expected[0], atol=1e-5, rtol=0)
    assert out_batch.tolist() == [0] * len(expected[0]) + [1] * len(expected[1])
    assert size.tolist() == [[(12 + 2 * padding - kernel) // stride + 1] * 2] * 2


def test_bad_input_raises_value_error():
    layer = GridPointReducer(3, 8)
    x, cells = _pixels(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        layer.forward_dense(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="whole"):
        layer(torch.randn(10, 3), None, None, (3, 3))
    with pytest.raises(ValueError, match="twice"):
        layer(x[:2], torch.tensor([[1, 1], [1, 1]]))
    with pytest.raises(ValueError, match="outside"):
        layer(x, cells, None, (3, 3))
    with pytest.raises(ValueError, match="integer"):
        layer(x, cells + 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        layer(x, cells - 1)
    with pytest.raises(ValueError, match="give pos"):
        layer(x)
    with pytest.raises(ValueError, match="padding"):
        GridPointReducer(3, 8, padding="same")
