"""Open3D / pytorch3d conversions (oracles: Open3D's arrays and the round trip)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from pointset.data import PointSet, from_image, from_open3d, from_pytorch3d, to_open3d, to_pytorch3d


def _cloud(n: int = 40, channels: int = 3) -> PointSet:
    g = torch.Generator().manual_seed(n)
    return PointSet(
        pos=torch.randn(n, 3, generator=g),
        x=torch.rand(n, channels, generator=g),
        normal=torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1),
    )


def test_open3d_round_trip_with_colours_and_normals():
    o3d = pytest.importorskip("open3d")
    ps = _cloud()
    pcd = to_open3d(ps)
    assert isinstance(pcd, o3d.geometry.PointCloud)
    np.testing.assert_array_equal(np.asarray(pcd.points), ps.pos.double().numpy())
    np.testing.assert_array_equal(np.asarray(pcd.colors), ps.x.double().numpy())
    np.testing.assert_array_equal(np.asarray(pcd.normals), ps.normal.double().numpy())
    back = from_open3d(pcd)
    for key in ("pos", "x", "normal"):
        assert torch.equal(back[key], ps[key]), key


def test_from_open3d_geometry_only_and_dtype():
    o3d = pytest.importorskip("open3d")
    pts = np.random.default_rng(0).normal(size=(25, 3))
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    ps = from_open3d(pcd, dtype=torch.float64)
    assert ps.x is None and "normal" not in ps
    np.testing.assert_array_equal(ps.pos.numpy(), pts)
    with pytest.raises(ValueError, match="PointCloud"):
        from_open3d(np.zeros((3, 3)))


def test_to_open3d_feature_handling():
    pytest.importorskip("open3d")
    feats = _cloud(channels=5)
    assert not to_open3d(feats).has_colors()  # auto: features are not colours
    with pytest.raises(ValueError, match="x_as='color'"):
        to_open3d(feats, x_as="color")
    with pytest.raises(ValueError, match="cannot hold features"):
        to_open3d(feats, x_as="feature")
    with pytest.raises(ValueError, match="holds one cloud, got 2"):
        to_open3d(from_image(torch.rand(2, 3, 2, 2)))
    with pytest.raises(ValueError, match=r"pos \[N, 3\]"):
        to_open3d(from_image(torch.rand(3, 2, 2)))


def test_missing_package_gives_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch3d", None)
    monkeypatch.setitem(sys.modules, "pytorch3d.structures", None)
    with pytest.raises(ImportError, match="needs the 'pytorch3d' package"):
        to_pytorch3d(_cloud())
    monkeypatch.setitem(sys.modules, "open3d", None)
    with pytest.raises(ImportError, match="needs the 'open3d' package"):
        to_open3d(_cloud())


class _FakePointclouds:
    """Duck-typed stand-in exposing the list accessors of pytorch3d's Pointclouds."""

    def __init__(self, points, features=None, normals=None):
        self._p, self._f, self._n = points, features, normals

    def points_list(self):
        return self._p

    def features_list(self):
        return self._f

    def normals_list(self):
        return self._n


def test_from_pytorch3d_lists_to_batch():
    """Oracle: the per-cloud lists come back from ``clouds()``."""
    pts = [torch.rand(4, 3), torch.rand(0, 3), torch.rand(6, 3)]
    feats = [torch.rand(4, 2), torch.rand(0, 2), torch.rand(6, 2)]
    ps = from_pytorch3d(_FakePointclouds(pts, feats))
    assert ps.num_clouds == 3 and ps.cloud_sizes().tolist() == [4, 0, 6]
    for cloud, p, f in zip(ps.clouds(), pts, feats):
        assert torch.equal(cloud.pos, p) and torch.equal(cloud.x, f)
    with pytest.raises(ValueError, match="Pointclouds"):
        from_pytorch3d([torch.rand(3, 3)])


def test_pytorch3d_round_trip():
    pytest.importorskip("pytorch3d")
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([_cloud(10), _cloud(7)])
    pc = to_pytorch3d(batch)
    assert [p.shape[0] for p in pc.points_list()] == [10, 7]
    back = from_pytorch3d(pc)
    for key in ("pos", "x", "normal"):
        assert torch.equal(back[key], batch[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_pytorch3d_round_trip_every_dtype_and_an_empty_cloud(dtype):
    """Real Pointclouds in every floating dtype, an empty cloud in the middle: the lists,
    their padded form and the way back equal the input (oracle: the input tensors)."""
    pytest.importorskip("pytorch3d")
    from torch_geometric.data import Batch

    clouds = [_cloud(10), _cloud(4), _cloud(7)]
    clouds[1] = PointSet(pos=torch.zeros(0, 3), x=torch.zeros(0, 3), normal=torch.zeros(0, 3))
    batch = Batch.from_data_list(clouds)
    for key in ("pos", "x", "normal"):
        batch[key] = batch[key].to(dtype)
    pc = to_pytorch3d(batch)
    assert [p.shape[0] for p in pc.points_list()] == [10, 0, 7]
    padded = pc.points_padded()
    assert padded.dtype == dtype and padded.shape == (3, 10, 3)
    assert torch.equal(padded[2, :7], batch.pos[10:17]) and bool((padded[1] == 0).all())
    back = from_pytorch3d(pc)
    assert back.cloud_sizes().tolist() == [10, 0, 7]
    for key in ("pos", "x", "normal"):
        assert back[key].dtype == dtype and torch.equal(back[key], batch[key]), key
