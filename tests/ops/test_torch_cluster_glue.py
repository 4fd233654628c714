"""The torch-cluster glue of ``pointset.ops`` against stand-ins of its CUDA kernels.

No GPU is available to the test suite, so the CUDA kernels' documented failure modes are
reproduced by small fake kernels written here (the behaviour of torch-cluster's
``fps_cuda`` / ``knn_cuda``: FPS distances start at 5e4 instead of infinity; kNN keeps
``-1`` for neighbours whose squared distance is not below 1e10, and an empty cloud in the
middle of a batch makes it index out of range). Each test first shows that the fake kernel
really gets the case wrong on its own (so the test can fail), then that the glue around it
gives the native backend's answer (oracle: ``backend="native"`` and the brute-force FPS
loop of ``test_fps``). The same glue also runs torch-cluster's real CPU kernels in the
other op test files.
"""

from __future__ import annotations

import importlib
import math
import sys
import types

import pytest
import torch
from test_fps import fps_oracle

from pointset import ops
from pointset.ops import _backend
from pointset.ops._clouds import Clouds

fps_module = importlib.import_module("pointset.ops.fps")
knn_module = importlib.import_module("pointset.ops.knn")


def fake_fps(src, batch, ratio, random_start=False, batch_size=None):
    """torch-cluster's CUDA FPS loop: distances start at 5e4, ties to the lowest index."""
    out = []
    ptr = 0
    for b in range(int(batch_size)):
        n = int((batch == b).sum())
        if n == 0:
            raise IndexError("empty cloud")
        pts = src[ptr : ptr + n]
        num = math.ceil(float(ratio[b]) * n)
        dist = torch.full((n,), 5e4, dtype=src.dtype)
        pick = [0]
        for _ in range(num - 1):
            d = (pts - pts[pick[-1]]).square().sum(1)
            dist = torch.minimum(dist, d)
            pick.append(int((dist == dist.max()).nonzero()[0, 0]))
        out += [ptr + i for i in pick]
        ptr += n
    return torch.tensor(out, dtype=torch.long)


def fake_knn(x, y, k, batch_x, batch_y, batch_size=None):
    """torch-cluster's CUDA kNN: best distances start at 1e10, so a neighbour at squared
    distance >= 1e10 comes back as -1; an empty cloud of ``x`` raises IndexError."""
    rows, cols = [], []
    for b in range(int(batch_size)):
        if not bool((batch_x == b).any()):
            raise IndexError("empty cloud")
    for i in range(y.size(0)):
        members = (batch_x == batch_y[i]).nonzero().view(-1)
        d = (x[members] - y[i]).square().sum(1)
        order = sorted(range(members.numel()), key=lambda j: (float(d[j]), j))[:k]
        for j in order:
            rows.append(i)
            cols.append(int(members[j]) if float(d[j]) < 1e10 else -1)
    return torch.tensor(rows), torch.tensor(cols)


@pytest.fixture
def fake_torch_cluster(monkeypatch):
    module = types.ModuleType("torch_cluster")
    module.fps = fake_fps
    module.knn = fake_knn
    monkeypatch.setitem(sys.modules, "torch_cluster", module)
    _backend._import_error.cache_clear()
    yield module
    _backend._import_error.cache_clear()


def test_fps_glue_scales_coordinates_below_the_start_distance(fake_torch_cluster):
    """Clouds spanning 1e3 units (squared extent above 5e4), with an empty middle cloud:
    the fake kernel alone picks wrong samples; through the glue (power-of-two scaling,
    empty clouds left out) the samples are the brute-force loop's."""
    gen = torch.Generator().manual_seed(0)
    pad = torch.rand(3, 60, 3, generator=gen, dtype=torch.float64) * 1e3
    counts, samples = [60, 0, 45], [20, 0, 15]
    alone = fake_fps(pad[0], torch.zeros(60, dtype=torch.long), torch.tensor([1 / 3]), False, 1)
    assert alone.tolist() != fps_oracle(pad[0], 20)
    clouds = Clouds.from_lengths(counts)
    out = fps_module._fps_torch_cluster(clouds.unpad(pad), clouds, samples, None)
    assert out[0].tolist() == fps_oracle(pad[0], 20)
    assert out[2, :15].tolist() == fps_oracle(pad[2, :45], 15)
    assert out[1].abs().sum() == 0


def test_scale_below_is_a_power_of_two():
    """The scale factor is an exact power of two and brings the squared extent under
    half the start distance (hand-computed: extent^2 = 3 * 1e8)."""
    pad = torch.tensor([[[0.0, 0.0, 0.0], [1e4, 1e4, 1e4]]], dtype=torch.float64)
    scaled = fps_module.scale_below(pad, Clouds.from_lengths([2]))
    factor = float(scaled[0, 1, 0] / pad[0, 1, 0])
    assert math.log2(factor) == round(math.log2(factor))
    assert float(scaled[0, 1].square().sum()) < 2.5e4
    small = torch.rand(1, 5, 3)
    assert fps_module.scale_below(small, Clouds.from_lengths([5])) is small


def test_knn_glue_passes_empty_clouds_and_rejects_missing_neighbours(fake_torch_cluster):
    """An empty middle cloud is left out of the kernel's batch (native's answer); a -1
    neighbour raises instead of indexing another cloud."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(50, 3, generator=gen)
    bx = torch.tensor([0] * 20 + [2] * 30)
    y = torch.rand(12, 3, generator=gen)
    by = torch.tensor([0] * 5 + [2] * 7)
    with pytest.raises(IndexError):
        fake_knn(x, y, 3, bx, by, batch_size=3)
    got = ops.knn(x, y, 3, bx, by, backend="torch_cluster")
    assert torch.equal(got, ops.knn(x, y, 3, bx, by, backend="native"))
    far = torch.cat([x[:20], x[:1] + 2e5])
    with pytest.raises(RuntimeError, match="col = -1"):
        ops.knn(far, y[:5], 21, backend="torch_cluster")


def test_knn_glue_refuses_k_above_100_on_cuda():
    """torch-cluster's CUDA kNN asserts k <= 100: the glue refuses with a ValueError that
    names the limit; CPU kernels have no such limit."""
    with pytest.raises(ValueError, match="at most 100 neighbours on CUDA, got k=101"):
        knn_module.check_torch_cluster_k(torch.device("cuda"), 101)
    knn_module.check_torch_cluster_k(torch.device("cuda"), 100)
    knn_module.check_torch_cluster_k(torch.device("cpu"), 500)


def test_auto_never_picks_torch_cluster_on_cuda():
    """The CUDA order is triton, pytorch3d, native for fps / knn / radius."""
    cuda = torch.device("cuda")
    radius_module = importlib.import_module("pointset.ops.radius")
    for rule in (
        fps_module.auto(cuda, torch.float32, False),
        knn_module.auto(cuda, 3),
        radius_module.auto(cuda, None, None, 3),
    ):
        assert rule == ("triton", "pytorch3d", "native")
