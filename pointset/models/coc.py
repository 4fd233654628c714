"""Context Cluster (CoC) image backbones, checkpoint-compatible with the official release.

`"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_ (Ma et al., ICLR 2023).
State-dict keys and parameter counts equal the official ``models/context_cluster.py``
models, so their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Union

import torch
from torch import Tensor, nn

from pointset.data.image import coc_input
from pointset.models._layers import DropPath, Mlp
from pointset.models.registry import Reported, register_model
from pointset.nn.context_cluster import ContextCluster
from pointset.nn.point_reducer import GridPointReducer

__all__ = [
    "ClusterBlock",
    "CONFIGS",
    "ContextClusterNet",
    "coc_medium",
    "coc_small",
    "coc_tiny",
    "coc_tiny_plain",
]


class ClusterBlock(nn.Module):
    """``x + ls1 * ContextCluster(GN(x))``, then ``x + ls2 * Mlp(GN(x))``.

    ``GN`` is ``GroupNorm(1, dim)``; ``ls1``/``ls2`` are per-channel layer scales
    (``layer_scale_1``/``layer_scale_2``, only with ``use_layer_scale``); the MLP runs
    channels-last.

    Shapes:
        - **input / output:** ``[B, dim, H, W]``
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        act_layer: type = nn.GELU,
        drop: float = 0.0,
        drop_path: float = 0.0,
        use_layer_scale: bool = True,
        layer_scale_init_value: float = 1e-5,
        proposal_w: int = 2,
        proposal_h: int = 2,
        fold_w: int = 2,
        fold_h: int = 2,
        heads: int = 4,
        head_dim: int = 24,
    ) -> None:
        super().__init__()
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.norm1 = nn.GroupNorm(1, dim)
        self.token_mixer = ContextCluster(
            dim,
            dim,
            heads=heads,
            head_dim=head_dim,
            proposal_w=proposal_w,
            proposal_h=proposal_h,
            fold_w=fold_w,
            fold_h=fold_h,
        )
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.token_mixer(self.norm1(x))
        if self.use_layer_scale:
            mixed = self.layer_scale_1.view(-1, 1, 1) * mixed
        x = x + self.drop_path(mixed)
        fed = self.mlp(self.norm2(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.use_layer_scale:
            fed = self.layer_scale_2.view(-1, 1, 1) * fed
        return x + self.drop_path(fed)


class ContextClusterNet(nn.Module):
    """The Context Cluster image backbone (`"Image as Set of Points"
    <https://arxiv.org/abs/2303.01494>`_, ICLR 2023).

    The image gets two position channels (:func:`pointset.data.image.coc_input`), a stem
    :class:`~pointset.nn.GridPointReducer` (``patch_embed``) reduces it, and ``network`` runs
    the stages of :class:`ClusterBlock` with a reducer between stages (when ``downsamples[i]``
    or the width changes). The head is ``GroupNorm -> mean over H, W -> Linear``; with
    ``fork_feat`` the model instead returns the four stage outputs, each normalised by its own
    ``GroupNorm`` (``norm0``, ``norm2``, ``norm4``, ``norm6``).

    Args:
        layers: blocks per stage.
        embed_dims, mlp_ratios, downsamples: per-stage width, MLP expansion, reducer flag.
        proposal_w, proposal_h, fold_w, fold_h, heads, head_dim: per-stage
            :class:`~pointset.nn.ContextCluster` settings.
        num_classes: classifier outputs (0: no classifier, ``head`` is the identity).
        in_chans: image channels before the two position channels are added (default: 3).
        in_patch_size, in_stride, in_pad: stem reducer.
        down_patch_size, down_stride, down_pad: between-stage reducers.
        act_layer: MLP activation (default: ``nn.GELU``).
        drop_rate, drop_path_rate: dropout in the MLPs, stochastic depth (linear in depth).
        use_layer_scale, layer_scale_init_value: per-channel residual scales.
        fork_feat: return the normalised four stage outputs instead of logits.

    Shapes:
        - **input:** ``[B, in_chans, H, W]``
        - **output:** ``[B, num_classes]``; with ``fork_feat`` a list of four
          ``[B, embed_dims[i], H / (4 * 2^i), W / (4 * 2^i)]``
    """

    def __init__(
        self,
        layers: Sequence[int],
        embed_dims: Sequence[int],
        mlp_ratios: Sequence[float],
        downsamples: Sequence[bool],
        proposal_w: Sequence[int] = (2, 2, 2, 2),
        proposal_h: Sequence[int] = (2, 2, 2, 2),
        fold_w: Sequence[int] = (8, 4, 2, 1),
        fold_h: Sequence[int] = (8, 4, 2, 1),
        heads: Sequence[int] = (2, 4, 6, 8),
        head_dim: Sequence[int] = (16, 16, 32, 32),
        num_classes: int = 1000,
        down_patch_size: int = 3,
        down_pad: int = 1,
        in_patch_size: int = 4,
        in_stride: int = 4,
        in_pad: int = 0,
        fork_feat: bool = False,
        in_chans: int = 3,
        down_stride: int = 2,
        act_layer: type = nn.GELU,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_layer_scale: bool = True,
        layer_scale_init_value: float = 1e-5,
    ) -> None:
        super().__init__()
        stages = len(layers)
        for name, seq in (
            ("embed_dims", embed_dims),
            ("mlp_ratios", mlp_ratios),
            ("downsamples", downsamples),
            ("proposal_w", proposal_w),
            ("proposal_h", proposal_h),
            ("fold_w", fold_w),
            ("fold_h", fold_h),
            ("heads", heads),
            ("head_dim", head_dim),
        ):
            if len(seq) < stages:
                raise ValueError(f"{name} needs {stages} entries (one per stage), got {list(seq)}")
        self.num_classes = num_classes
        self.fork_feat = fork_feat
        self.in_chans = in_chans
        self.embed_dims = list(embed_dims)
        self.patch_embed = GridPointReducer(
            in_chans + 2, embed_dims[0], in_patch_size, in_stride, in_pad
        )

        total = sum(layers)
        network: List[nn.Module] = []
        for i in range(stages):
            blocks = []
            for j in range(layers[i]):
                rate = drop_path_rate * (j + sum(layers[:i])) / max(total - 1, 1)
                blocks.append(
                    ClusterBlock(
                        embed_dims[i],
                        mlp_ratio=mlp_ratios[i],
                        act_layer=act_layer,
                        drop=drop_rate,
                        drop_path=rate,
                        use_layer_scale=use_layer_scale,
                        layer_scale_init_value=layer_scale_init_value,
                        proposal_w=proposal_w[i],
                        proposal_h=proposal_h[i],
                        fold_w=fold_w[i],
                        fold_h=fold_h[i],
                        heads=heads[i],
                        head_dim=head_dim[i],
                    )
                )
            network.append(nn.Sequential(*blocks))
            if i == stages - 1:
                break
            if downsamples[i] or embed_dims[i] != embed_dims[i + 1]:
                network.append(
                    GridPointReducer(
                        embed_dims[i], embed_dims[i + 1], down_patch_size, down_stride, down_pad
                    )
                )
        self.network = nn.ModuleList(network)

        if fork_feat:
            self.out_indices = [0, 2, 4, 6]
            for i_emb, i_layer in enumerate(self.out_indices):
                self.add_module(f"norm{i_layer}", nn.GroupNorm(1, embed_dims[i_emb]))
        else:
            self.norm = nn.GroupNorm(1, embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        dim = self.embed_dims[-1]
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(self.head)

    def forward_embeddings(self, x: Tensor) -> Tensor:
        """``[B, in_chans, H, W]`` -> stem output ``[B, embed_dims[0], H', W']``."""
        if x.dim() != 4 or x.size(1) != self.in_chans:
            raise ValueError(
                f"expected images [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}"
            )
        return self.patch_embed(coc_input(x))

    def forward_tokens(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        """Run ``network``; with ``fork_feat`` return the normalised stage outputs."""
        outs = []
        for idx, block in enumerate(self.network):
            x = block(x)
            if self.fork_feat and idx in self.out_indices:
                outs.append(getattr(self, f"norm{idx}")(x))
        return outs if self.fork_feat else x

    def forward(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        x = self.forward_tokens(self.forward_embeddings(x))
        if self.fork_feat:
            return x
        return self.head(self.norm(x).mean(dim=(-2, -1)))


_PAPER = "Image as Set of Points (Ma et al., ICLR 2023), https://arxiv.org/abs/2303.01494"
_SOURCE = "official Context-Cluster README"
_COMMON: dict[str, Any] = dict(
    mlp_ratios=[8, 8, 4, 4],
    downsamples=[True, True, True, True],
    down_patch_size=3,
    down_pad=1,
)

#: Constructor arguments of the published models (``num_classes`` excluded), from the
#: official ``models/context_cluster.py``.
CONFIGS: dict[str, dict[str, Any]] = {
    "coc_tiny": dict(
        _COMMON,
        layers=[3, 4, 5, 2],
        embed_dims=[32, 64, 196, 320],
        heads=[4, 4, 8, 8],
        head_dim=[24, 24, 24, 24],
        proposal_w=[2, 2, 2, 2],
        proposal_h=[2, 2, 2, 2],
        fold_w=[8, 4, 2, 1],
        fold_h=[8, 4, 2, 1],
    ),
    "coc_tiny_plain": dict(
        _COMMON,
        layers=[3, 4, 5, 2],
        embed_dims=[32, 64, 196, 320],
        heads=[4, 4, 8, 8],
        head_dim=[24, 24, 24, 24],
        proposal_w=[4, 4, 2, 2],
        proposal_h=[4, 4, 2, 2],
        fold_w=[1, 1, 1, 1],
        fold_h=[1, 1, 1, 1],
    ),
    "coc_small": dict(
        _COMMON,
        layers=[2, 2, 6, 2],
        embed_dims=[64, 128, 320, 512],
        heads=[4, 4, 8, 8],
        head_dim=[32, 32, 32, 32],
        proposal_w=[2, 2, 2, 2],
        proposal_h=[2, 2, 2, 2],
        fold_w=[8, 4, 2, 1],
        fold_h=[8, 4, 2, 1],
    ),
    "coc_medium": dict(
        _COMMON,
        layers=[4, 4, 12, 4],
        embed_dims=[64, 128, 320, 512],
        heads=[6, 6, 12, 12],
        head_dim=[32, 32, 32, 32],
        proposal_w=[2, 2, 2, 2],
        proposal_h=[2, 2, 2, 2],
        fold_w=[8, 4, 2, 1],
        fold_h=[8, 4, 2, 1],
    ),
}


def _cfg(params: int, top1: float, note: str = "") -> dict[str, Any]:
    return dict(
        default_cfg=dict(
            num_classes=1000,
            input_size=(3, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            param_count=params,
        ),
        reported=[Reported("ImageNet-1K val", {"top1": top1}, "224x224" + note, _SOURCE)],
    )


def _build(
    name: str, num_classes: int, features_only: bool, kwargs: dict[str, Any]
) -> ContextClusterNet:
    config = dict(CONFIGS[name])
    config.update(kwargs)
    if features_only:
        config["fork_feat"] = True
    return ContextClusterNet(num_classes=num_classes, **config)


@register_model(family="coc", paper=_PAPER, config=CONFIGS["coc_tiny"], **_cfg(5_570_584, 71.8))
def coc_tiny(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Tiny: 5,570,584 parameters (1000 classes), regions 8/4/2/1, 2x2 centers.

    ``features_only=True`` returns the four normalised stage maps instead of logits;
    ``kwargs`` override the config.
    """
    return _build("coc_tiny", num_classes, features_only, kwargs)


@register_model(
    family="coc",
    paper=_PAPER,
    config=CONFIGS["coc_tiny_plain"],
    **_cfg(5_570_584, 72.9, ", no region partition"),
)
def coc_tiny_plain(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Tiny without region partition: 5,570,584 parameters, centers 4x4, 4x4, 2x2, 2x2."""
    return _build("coc_tiny_plain", num_classes, features_only, kwargs)


@register_model(family="coc", paper=_PAPER, config=CONFIGS["coc_small"], **_cfg(14_657_024, 77.5))
def coc_small(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Small: 14,657,024 parameters (1000 classes)."""
    return _build("coc_small", num_classes, features_only, kwargs)


@register_model(family="coc", paper=_PAPER, config=CONFIGS["coc_medium"], **_cfg(29_290_520, 81.0))
def coc_medium(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Medium: 29,290,520 parameters (1000 classes)."""
    return _build("coc_medium", num_classes, features_only, kwargs)
