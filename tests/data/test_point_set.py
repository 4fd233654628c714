"""PointSet: validation, and batching through PyG (oracle: PyG's own collate/separate)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pointset.data import PointSet, batch_from_packed, from_image


def _cloud(n: int, c: int = 3, d: int = 3, seed: int = 0) -> PointSet:
    g = torch.Generator().manual_seed(seed)
    return PointSet(x=torch.rand(n, c, generator=g), pos=torch.rand(n, d, generator=g))


def test_attributes_and_counts():
    ps = _cloud(5)
    assert ps.num_points == 5 and ps.num_clouds == 1
    assert ps.grid_size is None and ps.pixel is None and not ps.is_grid
    assert ps.cloud_sizes().tolist() == [5]
    assert ps.validate()


def test_empty_construction_is_allowed_and_unvalidated():
    ps = PointSet()
    assert ps.pos is None and ps.x is None


def test_empty_cloud_is_valid():
    ps = PointSet(pos=torch.zeros(0, 3))
    assert ps.num_points == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pos=torch.tensor([[0.0, float("nan"), 0.0]])), "NaN"),
        (dict(pos=torch.tensor([[0.0, float("inf")]])), "NaN or inf"),
        (dict(x=torch.rand(3, 2), pos=torch.rand(4, 3)), "x has 3 rows but pos has 4"),
        (dict(pos=torch.rand(4)), r"shape \[N, D\]"),
        (dict(pos=torch.rand(4, 4)), "D = 2"),
        (dict(pos=torch.rand(4, 1)), "D = 2"),
        (dict(pos=torch.arange(6).view(3, 2)), "floating"),
        (dict(x=torch.rand(4)), "needs pos"),
        (dict(x=torch.rand(4), pos=torch.rand(4, 3)), r"\[N, C\]"),
        (dict(pos=torch.rand(6, 2), grid_size=(2, 2)), "2 x 2 = 4 points, but the cloud has 6"),
        (dict(pos=torch.rand(6, 2), grid_size=(2, 3, 1)), "grid_size"),
        (dict(pos=torch.rand(6, 2), grid_size=(0, 6)), ">= 1"),
        (dict(pos=torch.rand(3, 3), pixel=torch.zeros(3, 3, dtype=torch.long)), "pixel"),
        (dict(pos=torch.rand(3, 3), pixel=torch.zeros(3, 2)), "integer"),
        (dict(pos=torch.rand(3, 3), batch=torch.tensor([1, 0, 0])), "non-decreasing"),
        (dict(pos=torch.rand(3, 3), batch=torch.tensor([0, 0])), r"shape \[3\]"),
    ],
)
def test_invalid_construction_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PointSet(**kwargs)


def test_grid_record_with_batch_vector_checked_per_cloud():
    pos = torch.rand(10, 2)
    batch = torch.tensor([0] * 6 + [1] * 4)
    ps = PointSet(pos=pos, batch=batch, grid_size=[[2, 3], [2, 2]])
    assert ps.is_grid and ps.num_clouds == 2
    with pytest.raises(ValueError, match="cloud 1 is 1 x 2"):
        PointSet(pos=pos, batch=batch, grid_size=[[2, 3], [1, 2]])
    with pytest.raises(ValueError, match="1 rows but the point set has 2 clouds"):
        PointSet(pos=pos, batch=batch, grid_size=[[2, 3]])


def test_validate_catches_later_corruption():
    ps = _cloud(4)
    ps.pos = torch.full((4, 3), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        ps.validate()
    assert ps.validate(raise_on_error=False) is False


def test_batch_from_data_list_matches_pyg_separate():
    """Oracle: PyG's collate followed by separate gives back the inputs."""
    a = from_image(torch.rand(3, 2, 3))
    b = from_image(torch.rand(3, 4, 5))
    c = PointSet(x=torch.rand(7, 3), pos=torch.rand(7, 2), grid_size=(7, 1))
    batch = Batch.from_data_list([a, b, c])
    assert isinstance(batch, PointSet)
    assert batch.num_clouds == 3 and batch.num_points == 6 + 20 + 7
    assert batch.grid_size.tolist() == [[2, 3], [4, 5], [7, 1]]
    assert batch.is_grid
    assert batch.batch.tolist() == [0] * 6 + [1] * 20 + [2] * 7
    for orig, back in zip([a, b, c], batch.clouds()):
        assert isinstance(back, PointSet)
        assert torch.equal(orig.x, back.x) and torch.equal(orig.pos, back.pos)
        assert torch.equal(orig.grid_size, back.grid_size)
    # indexing and slicing go through PyG's separate; re-collating gives a valid batch
    assert torch.equal(batch[1].x, b.x)
    sub = Batch.from_data_list(batch[1:])
    assert sub.num_clouds == 2 and sub.grid_size.tolist() == [[4, 5], [7, 1]] and sub.is_grid
    picked = batch.index_select(torch.tensor([2, 0]))
    assert [p.num_points for p in picked] == [7, 6]


def test_dataloader_collates_point_sets():
    """Oracle: PyG DataLoader batches; each batch splits back into the dataset items."""
    data = [_cloud(n, seed=n) for n in (3, 5, 2, 4, 6)]
    for p in data:
        p.pixel = torch.zeros(p.num_points, 2, dtype=torch.long)
        p.y = torch.tensor([p.num_points])
    loader = DataLoader(data, batch_size=2, shuffle=False)
    seen = []
    for batch in loader:
        assert isinstance(batch, PointSet)
        assert batch.batch.numel() == batch.pos.size(0) == batch.pixel.size(0)
        assert batch.y.numel() == batch.num_clouds
        seen.extend(batch.clouds())
    assert len(seen) == len(data)
    for a, b in zip(data, seen):
        assert torch.equal(a.pos, b.pos) and torch.equal(a.x, b.x)


def test_copy_and_device_move_keep_attributes():
    ps = from_image(torch.rand(3, 2, 2))
    for other in (copy.copy(ps), copy.deepcopy(ps), ps.to("cpu"), ps.clone()):
        assert isinstance(other, PointSet)
        assert torch.equal(other.grid_size, ps.grid_size) and other.is_grid


def test_clouds_of_manual_batch_vector_equals_pyg_batch():
    """Oracle: ``Batch.to_data_list`` of the same clouds."""
    parts = [from_image(torch.rand(2, 2, 3)), from_image(torch.rand(2, 1, 4))]
    ref = Batch.from_data_list(parts)
    manual = PointSet(x=ref.x, pos=ref.pos, batch=ref.batch, grid_size=ref.grid_size)
    assert manual.num_clouds == 2 and manual.is_grid
    for a, b in zip(manual.clouds(), ref.to_data_list()):
        assert torch.equal(a.x, b.x) and torch.equal(a.pos, b.pos)
        assert torch.equal(a.grid_size, b.grid_size)


def test_stale_grid_record_reads_not_grid():
    ps = from_image(torch.rand(3, 3, 3))
    sub = ps.subgraph(torch.arange(4))
    assert sub.num_points == 4 and not sub.is_grid


def test_batch_from_packed_matches_from_data_list():
    """Oracle: ``Batch.from_data_list`` of the explicitly split clouds."""
    x, pos = torch.rand(9, 2), torch.rand(9, 3)
    out = batch_from_packed([4, 0, 5], x=x, pos=pos)
    ref = Batch.from_data_list(
        [
            PointSet(x=x[:4], pos=pos[:4]),
            PointSet(x=x[4:4], pos=pos[4:4]),
            PointSet(x=x[4:], pos=pos[4:]),
        ]
    )
    assert out.num_clouds == 3
    assert torch.equal(out.batch, ref.batch) and torch.equal(out.ptr, ref.ptr)
    assert out.cloud_sizes().tolist() == [4, 0, 5]
