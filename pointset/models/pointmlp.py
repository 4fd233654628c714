"""PointMLP, PointMLP-Elite and PointMLP-CoC classifiers (official state-dict layout)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from pointset.models.registry import Reported, register_model
from pointset.nn import ConvBNReLU1D, LocalGrouper, PosExtraction, PreExtraction
from pointset.nn.point_mlp_blocks import activation_layer

#: Constructor arguments of the published models (``num_classes`` excluded).
CONFIGS: dict[str, dict[str, Any]] = {
    "pointmlp": dict(
        points=1024,
        embed_dim=64,
        groups=1,
        res_expansion=1.0,
        activation="relu",
        bias=False,
        use_xyz=False,
        normalize="anchor",
        dim_expansion=[2, 2, 2, 2],
        pre_blocks=[2, 2, 2, 2],
        pos_blocks=[2, 2, 2, 2],
        k_neighbors=[24, 24, 24, 24],
        reducers=[2, 2, 2, 2],
    ),
    "pointmlp_elite": dict(
        points=1024,
        embed_dim=32,
        groups=1,
        res_expansion=0.25,
        activation="relu",
        bias=False,
        use_xyz=False,
        normalize="anchor",
        dim_expansion=[2, 2, 2, 1],
        pre_blocks=[1, 1, 2, 1],
        pos_blocks=[1, 1, 2, 1],
        k_neighbors=[24, 24, 24, 24],
        reducers=[2, 2, 2, 2],
    ),
}
CONFIGS["pointmlp_coc"] = dict(CONFIGS["pointmlp"], coc=True)
CONFIGS["rgbd_pointmlp_coc"] = dict(CONFIGS["pointmlp_coc"], in_channels=6)


def build_encoder(
    module: nn.Module,
    in_channels: int,
    points: int,
    embed_dim: int,
    groups: int,
    res_expansion: float,
    activation: str,
    bias: bool,
    use_xyz: bool,
    normalize: str | None,
    dim_expansion: Sequence[int],
    pre_blocks: Sequence[int],
    pos_blocks: Sequence[int],
    k_neighbors: Sequence[int],
    reducers: Sequence[int],
    coc: bool = False,
    **more_stage_lists: Sequence[int],
) -> list[int]:
    """Give ``module`` PointMLP's encoder under the official flat names (``embedding``,
    ``local_grouper_list``, ``pre_blocks_list``, ``pos_blocks_list``) and ``in_channels`` /
    ``stages``; shared by the classifier and the segmentation backbone.

    ``more_stage_lists`` are further per-stage lists whose lengths must match.

    Returns:
        the channels of each level, fine to coarse: ``[embed_dim, C_1, ..., C_S]``.
    """
    lengths = {
        "dim_expansion": len(dim_expansion),
        "pre_blocks": len(pre_blocks),
        "pos_blocks": len(pos_blocks),
        "k_neighbors": len(k_neighbors),
        "reducers": len(reducers),
        **{name: len(values) for name, values in more_stage_lists.items()},
    }
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per-stage lists must have equal lengths, got {lengths}")
    if in_channels < 3:
        raise ValueError(f"in_channels must be at least 3 (xyz first), got {in_channels}")
    module.in_channels = in_channels
    module.stages = len(pre_blocks)
    module.embedding = ConvBNReLU1D(in_channels, embed_dim, bias=bias, activation=activation)
    module.local_grouper_list = nn.ModuleList()
    module.pre_blocks_list = nn.ModuleList()
    module.pos_blocks_list = nn.ModuleList()
    channels, anchors = embed_dim, points
    levels = [channels]
    block = dict(groups=groups, res_expansion=res_expansion, bias=bias, activation=activation)
    for i in range(module.stages):
        out_channels = channels * dim_expansion[i]
        anchors = anchors // reducers[i]
        module.local_grouper_list.append(
            LocalGrouper(channels, anchors, k_neighbors[i], use_xyz, normalize)
        )
        module.pre_blocks_list.append(
            PreExtraction(channels, out_channels, pre_blocks[i], use_xyz=use_xyz, coc=coc, **block)
        )
        module.pos_blocks_list.append(PosExtraction(out_channels, pos_blocks[i], **block))
        channels = out_channels
        levels.append(channels)
    return levels


class PointMLP(nn.Module):
    r"""PointMLP point cloud classifier, and its PointMLP-CoC variant.

    From `"Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP
    Framework" <https://arxiv.org/abs/2202.07123>`_ (ICLR 2022); ``coc=True`` builds the
    PointMLP-CoC of `"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_, which
    puts a :class:`~pointset.nn.GroupContextCluster` before every pre-extraction block.

    A pointwise embedding is followed by stages of
    :class:`~pointset.nn.LocalGrouper` (``points // reducer`` anchors, kNN groups, geometric
    affine normalisation), :class:`~pointset.nn.PreExtraction` (shared MLP + max over each
    group) and :class:`~pointset.nn.PosExtraction`; a max over the anchors feeds the
    ``Linear(512) -> Linear(256) -> Linear(num_classes)`` head. Submodule names and shapes
    are the official ones, so official checkpoints load with ``strict=True``.

    Input layout: ``x [B, in_channels, N]`` with the **first three channels the xyz
    coordinates**. All ``in_channels`` channels (e.g. xyz + rgb for ``in_channels=6``) feed
    the embedding, while only xyz drives sampling and grouping. ``N`` may differ from
    ``points``; anchor counts follow ``points``, so every stage needs at least that many
    input points and ``k`` neighbours.

    Args:
        points (int): Nominal input size that sets the anchor counts. (default: ``1024``)
        num_classes (int, optional): Output classes; ``None`` means 40. (default: ``None``)
        embed_dim (int): Embedding channels. (default: ``64``)
        groups (int): Convolution groups in the residual blocks. (default: ``1``)
        res_expansion (float): Hidden width factor of the residual blocks. (default: ``1.0``)
        activation (str): Activation name. (default: ``"relu"``)
        bias (bool): Convolution biases. (default: ``False``)
        use_xyz (bool): Append xyz to grouped features. (default: ``False``)
        normalize (str or None): ``"anchor"``, ``"center"`` or ``None``. (default: ``"anchor"``)
        dim_expansion (list[int]): Channel factor per stage. (default: ``[2, 2, 2, 2]``)
        pre_blocks (list[int]): Residual blocks in each PreExtraction. (default: ``[2]*4``)
        pos_blocks (list[int]): Residual blocks in each PosExtraction. (default: ``[2]*4``)
        k_neighbors (list[int]): Group size per stage. (default: ``[24]*4``)
        reducers (list[int]): Anchor reduction per stage. (default: ``[2]*4``)
        in_channels (int): Input channels, at least 3 (xyz first). (default: ``3``)
        coc (bool): Build PointMLP-CoC. (default: ``False``)
        class_num (int, optional): The official name of ``num_classes``; accepted so that
            official configs can be passed as keyword arguments.

    The defaults are the published PointMLP configuration (the official ``Model`` class has
    other defaults that no published model uses).

    Sampling is deterministic: farthest point sampling starts at index 0 of every cloud,
    as the official CUDA kernel does (its extra rule of never picking points with
    ``|p|^2 <= 1e-3`` is not reproduced), and no custom CUDA operator is needed.

    Export (torch 2.13, CPU): ``torch.jit.trace`` fails, because the kNN operator
    (:func:`~pointset.ops.knn_dense`) computes index offsets with numpy from the input
    sizes, which tracing turns into tensors; ``torch.export.export`` fails for the same
    reason (``.numpy()`` on its fake tensors). ``torch.compile`` runs and reproduces the
    eager logits exactly when the operators use the native backend
    (``with pointset.ops.use_backend("native"):``), with the ``eager`` and ``aot_eager``
    backends, but the graph breaks about 50 times (data-dependent sizes in FPS / kNN,
    ``.item()`` calls) and the first call takes tens of seconds, so it brings no speed-up
    here; with the default CPU backends (numba kernels) dynamo fails inside the kernel
    wrappers. Inductor was not measured (compilation alone takes minutes on this CPU).

    Shapes:
        - **input:** :math:`(B, C_{in}, N)`
        - **output:** :math:`(B, \text{num\_classes})` logits
    """

    def __init__(
        self,
        points: int = 1024,
        num_classes: int | None = None,
        embed_dim: int = 64,
        groups: int = 1,
        res_expansion: float = 1.0,
        activation: str = "relu",
        bias: bool = False,
        use_xyz: bool = False,
        normalize: str | None = "anchor",
        dim_expansion: Sequence[int] = (2, 2, 2, 2),
        pre_blocks: Sequence[int] = (2, 2, 2, 2),
        pos_blocks: Sequence[int] = (2, 2, 2, 2),
        k_neighbors: Sequence[int] = (24, 24, 24, 24),
        reducers: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        coc: bool = False,
        class_num: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and class_num is not None and num_classes != class_num:
            raise ValueError(
                f"num_classes={num_classes} and class_num={class_num} disagree; pass one"
            )
        if num_classes is None:
            num_classes = 40 if class_num is None else class_num
        self.points = points
        self.num_classes = num_classes
        channels = build_encoder(
            self, in_channels, points, embed_dim, groups, res_expansion, activation, bias,
            use_xyz, normalize, dim_expansion, pre_blocks, pos_blocks, k_neighbors, reducers,
            coc=coc,
        )[-1]  # fmt: skip
        self.out_channels = channels
        self.classifier = nn.Sequential(
            nn.Linear(channels, 512),
            nn.BatchNorm1d(512),
            activation_layer(activation),
            nn.Dropout(0.5),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            activation_layer(activation),
            nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )

    def reset_parameters(self) -> None:
        """Re-initialise every layer (PyTorch defaults, identity affine, alpha 1, beta 0)."""

        def reset(module: nn.Module) -> None:
            for child in module.children():
                if hasattr(child, "reset_parameters"):
                    child.reset_parameters()
                else:
                    reset(child)

        reset(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Global feature ``[B, C_last]`` of ``x [B, in_channels, N]`` (before the head)."""
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, {self.in_channels}, N], got {shape}")
        if x.size(1) != self.in_channels:
            raise ValueError(
                f"x must have {self.in_channels} channels (xyz first), got {x.size(1)} "
                f"(input layout is [B, C, N])"
            )
        if x.size(0) == 0 or x.size(2) == 0:
            raise ValueError(f"x is empty (shape {tuple(x.shape)})")
        xyz = x[:, :3].transpose(1, 2)  # [B, N, 3]
        x = self.embedding.forward_dense(x)  # [B, E, N]
        for grouper, pre, pos in zip(
            self.local_grouper_list, self.pre_blocks_list, self.pos_blocks_list
        ):
            # grouper + pre, with pre's first product on points instead of group members
            xyz, x = pre.forward_grouped(grouper, xyz, x.transpose(1, 2))  # [B, S, 3], [B, C', S]
            x = pos.forward_dense(x)  # [B, C', S]
        return F.adaptive_max_pool1d(x, 1).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` of ``x [B, in_channels, N]``."""
        return self.classifier(self.forward_features(x))


def _build(name: str, num_classes: int, kwargs: dict[str, Any]) -> PointMLP:
    config = dict(CONFIGS[name])
    config.update(kwargs)
    return PointMLP(num_classes=num_classes, **config)


_POINTMLP_PAPER = (
    "Rethinking Network Design and Local Geometry in Point Cloud: A Simple Residual MLP "
    "Framework (Ma et al., ICLR 2022), https://arxiv.org/abs/2202.07123"
)
_COC_PAPER = "Image as Set of Points (Ma et al., ICLR 2023), https://arxiv.org/abs/2303.01494"
_SONN = "ScanObjectNN PB_T50_RS"
_MN40 = "ModelNet40"
_RELEASE = "official pointMLP README (released fixed-std checkpoint)"


def _cfg(params_40: int, reported: list[Reported]) -> dict[str, Any]:
    # ``param_count`` is at the factory default of 40 classes; the head's last Linear adds
    # 257 parameters per class (15 classes: 25 * 257 = 6,425 fewer).
    return dict(
        default_cfg=dict(num_classes=40, input_size=(3, 1024), param_count=params_40),
        reported=reported,
    )


@register_model(
    input="points",
    family="pointmlp",
    paper=_POINTMLP_PAPER,
    config=CONFIGS["pointmlp"],
    **_cfg(
        13_238_504,
        [
            Reported(
                _SONN,
                {"OA": 85.4, "OA_std": 0.3, "mAcc": 83.9, "mAcc_std": 0.5},
                "1,024 points, mean of runs",
                "PointMLP paper",
            ),
            Reported(_SONN, {"OA": 86.1, "mAcc": 84.4}, "no voting", _RELEASE),
            Reported(_MN40, {"OA": 94.1, "mAcc": 91.5}, "no voting", _RELEASE),
        ],
    ),
)
def pointmlp(num_classes: int = 40, **kwargs: Any) -> PointMLP:
    """PointMLP (13.2M parameters for 15 classes); ``kwargs`` override the config."""
    return _build("pointmlp", num_classes, kwargs)


@register_model(
    input="points",
    family="pointmlp",
    paper=_POINTMLP_PAPER,
    config=CONFIGS["pointmlp_elite"],
    **_cfg(
        716_232,
        [
            Reported(
                _SONN,
                {"OA": 83.8, "OA_std": 0.6, "mAcc": 81.8, "mAcc_std": 0.8},
                "1,024 points, mean of runs",
                "PointMLP paper",
            ),
            Reported(_SONN, {"OA": 84.1, "mAcc": 81.7}, "no voting", _RELEASE),
        ],
    ),
)
def pointmlp_elite(num_classes: int = 40, **kwargs: Any) -> PointMLP:
    """PointMLP-Elite (0.71M parameters for 15 classes); ``kwargs`` override the config."""
    return _build("pointmlp_elite", num_classes, kwargs)


@register_model(
    input="points",
    family="pointmlp",
    paper=_COC_PAPER,
    config=CONFIGS["pointmlp_coc"],
    **_cfg(
        15_333_240,
        [
            Reported(
                _SONN,
                {"OA": 86.2, "mAcc": 84.4},
                "1,024 points",
                "Context Cluster paper / official pointcloud README",
            )
        ],
    ),
)
def pointmlp_coc(num_classes: int = 40, **kwargs: Any) -> PointMLP:
    """PointMLP-CoC (15.3M parameters for 15 classes); ``kwargs`` override the config."""
    return _build("pointmlp_coc", num_classes, kwargs)


@register_model(
    input="points",
    family="pointmlp",
    paper=_COC_PAPER,
    config=CONFIGS["rgbd_pointmlp_coc"],
    default_cfg=dict(num_classes=40, input_size=(6, 1024), param_count=15_333_432),
)
def rgbd_pointmlp_coc(num_classes: int = 40, **kwargs: Any) -> PointMLP:
    """PointMLP-CoC on xyz + rgb (six input channels) for RGBD frames; feed it
    :func:`~pointset.models.rgbd.rgbd_input`. No published numbers: a configuration of this
    library."""
    return _build("rgbd_pointmlp_coc", num_classes, kwargs)
