"""The input contract shared by every layer of pointset.nn.

Oracle: the contract itself. A wrong channel count, positions of the wrong dimensionality
and an empty cloud (no points at all, or an empty cloud inside a packed batch) each raise a
``ValueError`` whose message names the problem, never a shape error from deep inside torch.
The per-layer test files check further, layer-specific cases.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

import pointset.nn as psnn
from pointset.nn import (
    AdaptiveDownsample,
    CloudGroupNorm,
    ClusterAttention,
    ContextCluster,
    ConvBNReLU1D,
    ConvBNReLURes1D,
    FeaturePropagation,
    GridPointReducer,
    GroupContextCluster,
    JBUStack,
    JointBilateralUpsample,
    LocalGrouper,
    PointReducer,
    PosExtraction,
    PreExtraction,
)

C, D = 6, 3


def _upsample(layer, x, pos, batch):
    """Upsamplers: each point gets a twin 0.01 away; the guidance is random RGB."""
    pos_out = pos
    if pos.dim() == 2 and pos.size(0):
        pos_out = torch.cat([pos, pos + 0.01], 1).view(-1, pos.size(1))
    guidance = torch.randn(pos_out.size(0) if pos_out.dim() else 0, 3)
    batch_out = None if batch is None else batch.repeat_interleave(2)
    return layer(x, pos, batch, guidance=guidance, pos_out=pos_out, batch_out=batch_out)


# layers taking packed point sets (x [N, C], pos [N, D], batch [N]); pos_dim None: any D,
# "unused": the layer does not read positions
POINT_LAYERS = {
    "JointBilateralUpsample": (lambda: JointBilateralUpsample(3, C), _upsample, None),
    "JBUStack": (lambda: JBUStack(C), _upsample, None),
    "ContextCluster": (
        lambda: ContextCluster(C, heads=2, head_dim=3, num_centers=3, center_k=3, candidates=2),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        None,
    ),
    "PointReducer": (
        lambda: PointReducer(C, 8, k=3, pos_dim=D),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        D,
    ),
    "ClusterAttention": (
        lambda: ClusterAttention(C, heads=2, cluster_size=4, nbhd_size=8, pos_dim=D),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        D,
    ),
    "AdaptiveDownsample": (
        lambda: AdaptiveDownsample(C, 8, pos_dim=D, cluster_size=4, nbhd_size=8),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        D,
    ),
    "LocalGrouper": (
        lambda: LocalGrouper(C, 3, 3, pos_dim=D),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        D,
    ),
    "CloudGroupNorm": (
        lambda: CloudGroupNorm(C),
        lambda layer, x, pos, batch: layer(x, pos, batch),
        "unused",
    ),
    # skip features x at every point, coarse features at every other point
    "FeaturePropagation": (
        lambda: FeaturePropagation(C + 4, 8),
        lambda layer, x, pos, batch: layer(
            x,
            pos,
            batch,
            x_coarse=torch.ones(pos[::2].shape[:1] + (4,)),
            pos_coarse=pos[::2],
            batch_coarse=None if batch is None else batch[::2],
        ),
        None,
    ),
}

# dense entries (forward_dense): (make, good input shape, bad-channel shape, empty shapes)
DENSE_LAYERS = {
    "GridPointReducer": (
        lambda: GridPointReducer(C, 8),
        (2, C, 8, 8),
        (2, C + 1, 8, 8),
        [(0, C, 8, 8), (2, C, 0, 8)],
    ),
    "GroupContextCluster": (
        lambda: GroupContextCluster(C, head_dim=4),
        (4, C, 5),
        (4, C + 1, 5),
        [(0, C, 5), (4, C, 0)],
    ),
    "ConvBNReLU1D": (lambda: ConvBNReLU1D(C, 8), (2, C, 5), (2, C + 1, 5), [(0, C, 5), (2, C, 0)]),
    "ConvBNReLURes1D": (lambda: ConvBNReLURes1D(C), (2, C, 5), (2, C + 1, 5), [(2, C, 0)]),
    "PosExtraction": (lambda: PosExtraction(C), (2, C, 5), (2, C + 1, 5), [(2, C, 0)]),
    "PreExtraction": (
        lambda: PreExtraction(C, 8, use_xyz=False),
        (2, 3, 4, 2 * C),
        (2, 3, 4, 2 * C + 1),
        [(2, 0, 4, 2 * C), (2, 3, 0, 2 * C)],
    ),
}

DATA_CONTAINERS = {"Downsampled", "PackedGroups", "KMeansStep"}

# layers whose inputs fit neither table (point features plus cluster centers); their own
# test files check the same contract (channels, batch sizes, empty clouds, NaN)
CENTER_LAYERS = {"KMeansCrossAttention", "KMaXPredictor", "KMaXDecoderLayer"}


def _exported_layers() -> set[str]:
    """Names in ``pointset.nn.__all__`` that are ``nn.Module`` subclasses."""
    return {
        name
        for name in psnn.__all__
        if isinstance(getattr(psnn, name), type)
        and issubclass(getattr(psnn, name), torch.nn.Module)
    }


def test_every_exported_layer_is_covered():
    layers = _exported_layers()
    assert not layers & DATA_CONTAINERS
    assert layers == set(POINT_LAYERS) | set(DENSE_LAYERS) | CENTER_LAYERS


def _clouds(sizes=(12, 10)):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return torch.randn(n, C, generator=g), torch.rand(n, D, generator=g), batch


@pytest.mark.parametrize("name", sorted(POINT_LAYERS))
def test_point_layer_rejects_bad_input(name):
    make, run, pos_dim = POINT_LAYERS[name]
    layer = make()
    x, pos, batch = _clouds()
    run(layer, x, pos, batch)  # the good input works
    with pytest.raises(ValueError, match="channel|shape"):
        run(layer, torch.randn(x.size(0), C + 1), pos, batch)
    if pos_dim != "unused":
        with pytest.raises(ValueError, match="pos"):
            run(layer, x, pos[:, 0], batch)  # [N] instead of [N, D]
        with pytest.raises(ValueError, match="pos"):
            run(layer, x, pos.unsqueeze(-1), batch)  # [N, D, 1]
    if pos_dim not in (None, "unused"):
        with pytest.raises(ValueError, match="coordinates|pos_dim"):
            run(layer, x, torch.rand(x.size(0), pos_dim + 1), batch)
    with pytest.raises(ValueError, match="empty"):
        run(layer, x[:0], pos[:0], None)
    gap = torch.where(batch == 1, 2, batch)  # cloud 1 has no points
    with pytest.raises(ValueError, match="empty"):
        run(layer, x, pos, gap)


@pytest.mark.parametrize("name", sorted(DENSE_LAYERS))
def test_dense_layer_rejects_bad_input(name):
    make, good, bad_channels, empties = DENSE_LAYERS[name]
    layer = make()
    layer.forward_dense(torch.randn(good))  # the good input works
    with pytest.raises(ValueError, match=re.escape(str(bad_channels))):  # names the shape
        layer.forward_dense(torch.randn(bad_channels))
    for shape in empties:
        with pytest.raises(ValueError, match="empty"):
            layer.forward_dense(torch.randn(shape))


def test_group_context_cluster_grouped_entry_rejects_bad_groups():
    layer = GroupContextCluster(C, head_dim=4)
    x = torch.randn(10, C)
    with pytest.raises(ValueError, match="channels|shape"):
        layer(torch.randn(10, C + 1), None, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 0"):
        layer(x, None, torch.full((10,), -1))
    with pytest.raises(ValueError, match="num_groups=2"):
        layer(x, None, torch.arange(10) % 3, num_groups=2)
    with pytest.raises(ValueError, match="empty"):
        layer(x[:0], None, torch.zeros(0, dtype=torch.long))


# integer constructor arguments: (layer factory taking the argument by keyword, its name)
INT_ARGUMENTS = [
    (lambda **kw: ContextCluster(**{"in_channels": C, **kw}), "heads"),
    (lambda **kw: ContextCluster(**{"in_channels": C, **kw}), "center_k"),
    (lambda **kw: ClusterAttention(**{"in_channels": C, "heads": 2, **kw}), "pos_dim"),
    (lambda **kw: AdaptiveDownsample(**{"in_channels": C, "out_channels": 8, **kw}), "pos_dim"),
    (lambda **kw: LocalGrouper(**{"in_channels": C, "groups": 3, "kneighbors": 3, **kw}), "groups"),
    (lambda **kw: PointReducer(**{"in_channels": C, "out_channels": 8, **kw}), "k"),
    (lambda **kw: GridPointReducer(**{"in_channels": C, **kw}), "out_channels"),
    (lambda **kw: FeaturePropagation(**{"in_channels": C, "out_channels": 8, **kw}), "k"),
    (lambda **kw: GroupContextCluster(**{"in_channels": C, **kw}), "heads"),
    (lambda **kw: JointBilateralUpsample(**{"guidance_dim": 3, "in_channels": C, **kw}), "radius"),
    (lambda **kw: ConvBNReLU1D(**{"in_channels": C, **kw}), "out_channels"),
    (lambda **kw: ConvBNReLURes1D(**{"in_channels": C, **kw}), "groups"),
    (lambda **kw: PosExtraction(**{"in_channels": C, **kw}), "in_channels"),
    (
        lambda **kw: psnn.KMaXPredictor(**{"in_channels": C, "query_channels": 8, **kw}),
        "num_classes",
    ),  # fmt: skip
    (lambda **kw: psnn.KMaXDecoderLayer(**{"in_channels": C, **kw}), "num_heads"),
]


@pytest.mark.parametrize("value", [True, 2.0, 0, -1], ids=["bool", "float", "zero", "negative"])
@pytest.mark.parametrize("make, name", INT_ARGUMENTS, ids=lambda v: v if isinstance(v, str) else "")
def test_integer_arguments_are_checked_by_one_helper(make, name, value):
    """Oracle: the wording of ``pointset._checks.check_positive_int``. ``True`` and ``2.0``
    pass ``int(value) >= 1`` but are not integers; 0 and -1 are not positive."""
    with pytest.raises(ValueError, match=rf"^{name} must be a positive int, got {value!r}$"):
        make(**{name: value})


# --------------------------------------------------------------------------- one forward
def _lattice_clouds():
    """Two clouds on pixel lattices: 12 cells of a 4x4 image, 10 cells of another."""
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    cells = torch.stack([rows.flatten(), cols.flatten()], 1)
    pos = torch.cat([cells[:12], cells[3:13]]).float()
    return pos, torch.tensor([0] * 12 + [1] * 10)


def _grouped_clouds(x, pos, batch):
    """PreExtraction's packed input: the groups LocalGrouper makes of the clouds."""
    groups = LocalGrouper(C, 3, 3, pos_dim=D)(x, pos, batch)
    return groups.x, groups.pos, groups.batch


# every exported layer: (make, inputs (x, pos, batch) from the clouds, extra arguments)
_SAME = None
ONE_FORWARD = {
    "AdaptiveDownsample": (
        lambda: AdaptiveDownsample(C, 8, pos_dim=D, cluster_size=4, nbhd_size=8),
        _SAME,
        {},
    ),
    "ClusterAttention": (
        lambda: ClusterAttention(C, heads=2, cluster_size=4, nbhd_size=8, pos_dim=D),
        _SAME,
        {},
    ),
    "CloudGroupNorm": (lambda: CloudGroupNorm(C), _SAME, {}),
    "ContextCluster": (
        lambda: ContextCluster(C, heads=2, head_dim=3, num_centers=3, center_k=3, candidates=2),
        _SAME,
        {},
    ),
    "ConvBNReLU1D": (lambda: ConvBNReLU1D(C, 8), _SAME, {}),
    "ConvBNReLURes1D": (lambda: ConvBNReLURes1D(C), _SAME, {}),
    "FeaturePropagation": (
        lambda: FeaturePropagation(C + 4, 8),
        _SAME,
        {
            "x_coarse": lambda x, pos, batch: torch.randn(11, 4),
            "pos_coarse": lambda x, pos, batch: pos[::2],
            "batch_coarse": lambda x, pos, batch: batch[::2],
        },
    ),
    "GridPointReducer": (
        lambda: GridPointReducer(C, 8),
        lambda x, pos, batch: (x, *_lattice_clouds()),
        {},
    ),
    "GroupContextCluster": (lambda: GroupContextCluster(C, head_dim=4), _SAME, {}),
    "JBUStack": (
        lambda: JBUStack(C),
        _SAME,
        {
            "guidance": lambda x, pos, batch: torch.randn(44, 3),
            "pos_out": lambda x, pos, batch: torch.cat([pos, pos + 0.01], 1).view(-1, D),
            "batch_out": lambda x, pos, batch: batch.repeat_interleave(2),
        },
    ),
    "JointBilateralUpsample": (
        lambda: JointBilateralUpsample(3, C),
        _SAME,
        {
            "guidance": lambda x, pos, batch: torch.randn(44, 3),
            "pos_out": lambda x, pos, batch: torch.cat([pos, pos + 0.01], 1).view(-1, D),
            "batch_out": lambda x, pos, batch: batch.repeat_interleave(2),
        },
    ),
    "KMaXDecoderLayer": (
        lambda: psnn.KMaXDecoderLayer(
            3, C, 8, base_filters=4, num_heads=2, pixel_head_dim=8, embed_dim=4, ffn_dim=8
        ),
        lambda x, pos, batch: (x, *_lattice_clouds()),
        {"query_feature": lambda x, pos, batch: torch.randn(2, 8, 5)},
    ),
    "KMaXPredictor": (
        lambda: psnn.KMaXPredictor(C, 8, num_classes=3, pixel_head_dim=8, embed_dim=4),
        lambda x, pos, batch: (x, *_lattice_clouds()),
        {"query": lambda x, pos, batch: torch.randn(2, 8, 5)},
    ),
    "KMeansCrossAttention": (
        lambda: psnn.KMeansCrossAttention(),
        _SAME,
        {
            "centers": lambda x, pos, batch: torch.randn(2, 5, C),
            "value": lambda x, pos, batch: torch.randn(x.size(0), 4),
        },
    ),
    "LocalGrouper": (lambda: LocalGrouper(C, 3, 3, pos_dim=D), _SAME, {}),
    "PointReducer": (lambda: PointReducer(C, 8, k=3, pos_dim=D), _SAME, {}),
    "PosExtraction": (lambda: PosExtraction(C), _SAME, {}),
    "PreExtraction": (lambda: PreExtraction(C, 8, use_xyz=False), _grouped_clouds, {}),
}


def test_every_exported_layer_has_one_forward_signature():
    """Oracle: ``inspect.signature``; ``forward`` of every ``nn.Module`` exported by
    ``pointset.nn`` starts with PyG's ``(x, pos, batch)``, and the table below covers them."""
    layers = _exported_layers()
    assert set(ONE_FORWARD) == layers
    for name in layers:
        params = list(inspect.signature(getattr(psnn, name).forward).parameters)
        assert params[1:4] == ["x", "pos", "batch"], f"{name}.forward{params}"


@pytest.mark.parametrize("name", sorted(ONE_FORWARD))
def test_every_exported_layer_answers_forward_x_pos_batch(name):
    """Oracle: the call itself. ``layer(x, pos, batch, **extra)`` on two tiny packed clouds
    runs and returns finite tensors whose leading size is one per point, group or cloud."""
    make, inputs, extra = ONE_FORWARD[name]
    torch.manual_seed(0)
    x, pos, batch = _clouds()
    if inputs is not None:
        x, pos, batch = inputs(x, pos, batch)
    kwargs = {key: value(x, pos, batch) for key, value in extra.items()}
    with torch.no_grad():
        out = make()(x, pos, batch, **kwargs)
    first = out[0] if isinstance(out, tuple) else out
    if isinstance(first, dict):
        first = first["mask_logits"]
    assert isinstance(first, torch.Tensor) and bool(torch.isfinite(first).all())
    assert first.size(0) <= x.size(0) or name == "JBUStack" or name.startswith("JointBilateral")


@pytest.mark.parametrize("name", sorted(POINT_LAYERS))
def test_each_input_is_checked_once(name, check_counter):
    """A layer checks its positions and batch vectors once at its entry and then calls the
    operators through ``pointset.ops.prechecked``: no tensor goes through ``check_points``
    or ``check_batch`` twice in one forward. Oracle: call spies on the two checks."""
    make, call, pos_dim = POINT_LAYERS[name]
    gen = torch.Generator().manual_seed(0)
    d = D if pos_dim in (None, "unused") else pos_dim
    pos = torch.rand(24, d, generator=gen)
    x = torch.randn(24, C, generator=gen)
    batch = torch.tensor([0] * 12 + [1] * 12)
    layer = make().eval()
    with torch.no_grad():
        call(layer, x, pos, batch)
    seen: dict = {}
    for check, tensor in check_counter.checked:
        if isinstance(tensor, torch.Tensor):
            key = (check, tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
            seen[key] = seen.get(key, 0) + 1
    repeated = {k[0] + str(k[2]): n for k, n in seen.items() if n > 1}
    assert not repeated, f"{name} checks the same tensor more than once: {repeated}"


def _two_images():
    """``(x [48, C], pos [48, 2], batch [48], generator)``: two 4 x 6 pixel lattices."""
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    pos = torch.stack([ys, xs], -1).view(-1, 2).repeat(2, 1)
    batch = torch.arange(2).repeat_interleave(24)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(48, C, generator=gen), pos, batch, gen


def test_kmax_decoder_layer_checks_each_input_once(check_counter):
    """The kMaX layer's point path checks ``batch`` once on entry and ``pos`` once in its
    5x5 window, then runs the k-means step and the radius search without checking them
    again. Oracle: call spies on ``check_points`` / ``check_batch``."""
    layer = psnn.KMaXDecoderLayer(
        num_classes=5, in_channels=C, query_channels=8, base_filters=4, num_heads=2
    ).eval()
    x, pos, batch, gen = _two_images()
    with torch.no_grad():
        layer(x, pos, batch, query_feature=torch.randn(2, 8, 5, generator=gen))
    assert check_counter == {"check_points": 1, "check_batch": 1}


def test_kmax_predictor_checks_each_input_once(check_counter):
    """The kMaX predictor's packed path checks ``batch`` once on entry and ``pos`` once in
    its 5x5 window. Oracle: call spies on ``check_points`` / ``check_batch``."""
    predictor = psnn.KMaXPredictor(C, 8, num_classes=3, pixel_head_dim=8, embed_dim=4).eval()
    x, pos, batch, gen = _two_images()
    with torch.no_grad():
        predictor(x, pos, batch, query=torch.randn(2, 8, 5, generator=gen))
    assert check_counter == {"check_points": 1, "check_batch": 1}


@pytest.mark.parametrize(
    "case, message",
    [
        ("unsorted", "sorted in non-decreasing order"),
        ("pos rows", "pos has 47 points but x has 48"),
        ("float batch", "integer tensor"),
    ],
)
def test_kmax_predictor_names_a_bad_batch_or_pos(case, message):
    """Oracle: the error text. A shuffled or float ``batch`` and a ``pos`` with one row
    fewer than ``x`` are refused before any product runs, with or without positions."""
    predictor = psnn.KMaXPredictor(C, 8, num_classes=3, pixel_head_dim=8, embed_dim=4).eval()
    x, pos, batch, _ = _two_images()
    if case == "unsorted":
        batch = batch.flip(0)
    elif case == "pos rows":
        pos = pos[:-1]
    else:
        batch = batch.float()
    for p in [pos] if case == "pos rows" else [pos, None]:
        with pytest.raises(ValueError, match=message):
            predictor(x, p, batch, query=torch.randn(2, 8, 5))
