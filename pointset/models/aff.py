"""AutoFocusFormer (AFF) image classifiers (official state-dict layout).

`"AutoFocusFormer: Image Segmentation off the Grid" <https://arxiv.org/abs/2304.12406>`_
(Ziwen et al., CVPR 2023). A convolutional stem turns the image into a lattice of tokens at
``pos = (col, row)``; four stages of cluster-attention blocks follow, the first three ending
in adaptive downsampling, which keeps a learned, non-uniform quarter of the tokens. The
positions stay in the stem's lattice units throughout, so every stage knows where its tokens
lie in the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from pointset.models._layers import DropPath, Mlp
from pointset.models.registry import Reported, register_model
from pointset.nn import AdaptiveDownsample, ClusterAttention
from pointset.ops import Neighbourhood, cluster_neighbourhood

__all__ = [
    "CONFIGS",
    "AFFBlock",
    "AFFPatchEmbed",
    "AFFStage",
    "AutoFocusFormer",
    "aff_base_22k",
    "aff_base_22kto1k",
    "aff_base_22kto1k_384",
    "aff_mini",
    "aff_mini_1_5th",
    "aff_small",
    "aff_small_1_5th",
    "aff_tiny",
    "aff_tiny_1_5th",
]

_COMMON: dict[str, Any] = dict(
    cluster_size=8, nbhd_size=[48, 48, 48, 49], alpha=4.0, ds_rate=0.25, reserve_on=True
)
_MINI: dict[str, Any] = dict(
    _COMMON,
    embed_dim=[32, 128, 256, 384],
    depths=[2, 2, 6, 2],
    num_heads=[2, 4, 8, 16],
    mlp_ratio=2.0,
    drop_path_rate=0.0,
    layer_scale=0.0,
)
_TINY: dict[str, Any] = dict(
    _COMMON,
    embed_dim=[64, 128, 256, 512],
    depths=[3, 4, 18, 5],
    num_heads=[2, 4, 8, 16],
    mlp_ratio=3.0,
    drop_path_rate=0.2,
    layer_scale=0.0,
)
_SMALL: dict[str, Any] = dict(
    _COMMON,
    embed_dim=[96, 192, 384, 768],
    depths=[3, 4, 18, 2],
    num_heads=[3, 6, 12, 24],
    mlp_ratio=3.0,
    drop_path_rate=0.3,
    layer_scale=1e-5,
)
_BASE: dict[str, Any] = dict(
    _COMMON,
    embed_dim=[128, 256, 512, 1024],
    depths=[3, 4, 18, 2],
    num_heads=[4, 8, 16, 32],
    mlp_ratio=3.0,
    drop_path_rate=0.2,
    layer_scale=1e-5,
)

#: Constructor arguments of the published models (``num_classes`` excluded), one per
#: official ``configs/<name>.yaml``, with the official ``config.py`` defaults for what a
#: file leaves out. The "_1_5th" configs keep a fifth of the tokens at each downsampling
#: (``ds_rate=0.2``); ``aff_base_22kto1k_384`` fine-tunes at 384x384 with clusters of 24
#: and neighbourhoods of 144. The input size of each is its card's ``input_size``.
CONFIGS: dict[str, dict[str, Any]] = {
    "aff_mini": _MINI,
    "aff_mini_1_5th": dict(_MINI, ds_rate=0.2),
    "aff_tiny": _TINY,
    "aff_tiny_1_5th": dict(_TINY, ds_rate=0.2),
    "aff_small": _SMALL,
    "aff_small_1_5th": dict(_SMALL, ds_rate=0.2),
    "aff_base_22k": _BASE,
    "aff_base_22kto1k": _BASE,
    "aff_base_22kto1k_384": dict(_BASE, cluster_size=24, nbhd_size=[144, 144, 144, 144]),
}


class AFFPatchEmbed(nn.Module):
    """Stem ``Conv3x3/2 -> BN -> GELU -> Conv3x3/2``, flattened in raster order, then LN.

    Returns ``(x [B, H*W, C], pos [B, H*W, 2], (H, W))`` with ``pos = (col, row)`` of the
    ``H x W`` token map (stride 4 of the image).
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 32, norm: bool = True) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(embed_dim // 2)
        self.act1 = nn.GELU()
        self.proj2 = nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, img: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        feat = self.proj2(self.act1(self.bn(self.proj1(img))))
        b, _, h, w = feat.shape
        x = feat.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        rows, cols = torch.meshgrid(
            torch.arange(h, device=img.device), torch.arange(w, device=img.device), indexing="ij"
        )
        pos = torch.stack([cols, rows], -1).view(1, h * w, 2).expand(b, -1, -1).to(x.dtype)
        return x, pos, (h, w)


class AFFBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN x)``, then ``x + mlp(LN x)``, with optional
    layer scale (``gamma1``, ``gamma2``) and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        cluster_size: int,
        nbhd_size: int,
        mlp_ratio: float = 2.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if layer_scale > 0:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        else:
            self.gamma1 = self.gamma2 = None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClusterAttention(
            dim, num_heads, cluster_size, nbhd_size, attn_dropout=attn_drop, dropout=drop
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, pos: Tensor, nbhd: Neighbourhood) -> Tensor:
        y = self.attn.forward_dense(self.norm1(x), pos, nbhd)
        x = x + self.drop_path(y if self.gamma1 is None else self.gamma1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma2 is None else self.gamma2 * y)


class AFFStage(nn.Module):
    """One AFF stage: neighbourhoods from balanced clusters (shared by all blocks and the
    downsampling), ``depth`` blocks, then optional adaptive downsampling whose importance
    head ``prob_net`` lives here, as in the official checkpoints."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        cluster_size: int,
        nbhd_size: int,
        mlp_ratio: float,
        alpha: float,
        ds_rate: float,
        reserve_on: bool,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        layer_scale: float,
    ) -> None:
        super().__init__()
        self.cluster_size = cluster_size
        self.nbhd_size = nbhd_size
        self.blocks = nn.ModuleList(
            AFFBlock(
                dim,
                num_heads,
                cluster_size,
                nbhd_size,
                mlp_ratio,
                drop,
                attn_drop,
                drop_path[i],
                layer_scale,
            )
            for i in range(depth)
        )
        if out_dim is None:
            self.downsample = self.prob_net = None
        else:
            self.downsample = AdaptiveDownsample(
                dim,
                out_dim,
                ratio=ds_rate,
                alpha=alpha,
                reserve=reserve_on,
                score_net=False,
                cluster_size=cluster_size,
                nbhd_size=nbhd_size,
            )
            self.prob_net = nn.Linear(dim, 1)

    def forward(
        self, pos: Tensor, x: Tensor, grid: tuple[int, int], stride: int
    ) -> tuple[Tensor, Tensor]:
        """``pos [B, N, 2]``, ``x [B, N, C]`` -> the stage output ``(pos, x)``.

        ``grid = (H, W)`` is the stem's token map (positions lie in it) and ``stride`` the
        lattice stride of this stage's tokens (2, 4, 8, ...); the first stage (stride 2) is
        still the full lattice and uses the fixed grid prior.
        """
        h, w = grid
        nbhd = cluster_neighbourhood(pos, self.cluster_size, self.nbhd_size, extent=(w, h))
        for block in self.blocks:
            x = block(x, pos, nbhd)
        if self.downsample is None:
            return pos, x
        importance = torch.sigmoid(self.prob_net(x))
        out = self.downsample.forward_dense(
            x, pos, nbhd, importance, stride=stride, adaptive_prior=stride != 2
        )
        return out.pos, out.x


class AutoFocusFormer(nn.Module):
    r"""AutoFocusFormer classifier: stem, four :class:`AFFStage`\ s, ``LN -> mean -> Linear``.

    Arguments and parameter names follow the official ``AutoFocusFormer`` (without
    ``img_size``: relative positions are not limited to a lookup table here), so official
    checkpoints load with ``strict=True``.

    Args:
        in_chans (int): image channels (default: 3).
        num_classes (int): classes; 0 gives pooled features (default: 1000).
        embed_dim (list[int]): channels per stage.
        cluster_size (int): tokens per cluster (default: 8).
        nbhd_size (list[int]): neighbourhood size per stage; a stage with no more tokens
            attends globally.
        alpha (float): importance weight in the downsampling ranking (default: 4.0).
        ds_rate (float): fraction of tokens kept by each downsampling (default: 0.25).
        reserve_on (bool): keep the reserved coarse-grid tokens (default: ``True``).
        depths (list[int]): blocks per stage.
        num_heads (list[int]): attention heads per stage.
        mlp_ratio (float): MLP hidden width over channels (default: 2.0).
        drop_rate, attn_drop_rate, drop_path_rate (float): dropout rates (stochastic depth
            grows linearly over the blocks up to ``drop_path_rate``).
        patch_norm (bool): LayerNorm after the stem (default: ``True``).
        layer_scale (float): initial layer-scale value; 0 disables it (default: 0).

    Shapes:
        - **input:** ``img [B, in_chans, H, W]``
        - **output:** ``[B, num_classes]``
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (32, 128, 256, 384),
        cluster_size: int = 8,
        nbhd_size: Sequence[int] = (48, 48, 48, 49),
        alpha: float = 4.0,
        ds_rate: float = 0.25,
        reserve_on: bool = True,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        mlp_ratio: float = 2.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        patch_norm: bool = True,
        layer_scale: float = 0.0,
    ) -> None:
        super().__init__()
        stages = len(depths)
        for name, values in (
            ("embed_dim", embed_dim),
            ("nbhd_size", nbhd_size),
            ("num_heads", num_heads),
        ):
            if len(values) != stages:
                raise ValueError(f"{name} needs one entry per stage ({stages}), got {list(values)}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = int(embed_dim[-1])
        self.patch_embed = AFFPatchEmbed(in_chans, int(embed_dim[0]), patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i in range(stages):
            start = sum(depths[:i])
            self.layers.append(
                AFFStage(
                    int(embed_dim[i]),
                    int(embed_dim[i + 1]) if i < stages - 1 else None,
                    depths[i],
                    num_heads[i],
                    cluster_size,
                    nbhd_size[i],
                    mlp_ratio,
                    alpha,
                    ds_rate,
                    reserve_on,
                    drop_rate,
                    attn_drop_rate,
                    rates[start : start + depths[i]],
                    layer_scale,
                )
            )
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_stages(self, img: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(pos, x)`` after every stage (``pos [B, N_i, 2]`` in stem-token units)."""
        if img.dim() != 4 or img.size(1) != self.in_chans:
            raise ValueError(
                f"img must have shape [B, {self.in_chans}, H, W], got {tuple(img.shape)}"
            )
        x, pos, grid = self.patch_embed(img)
        x = self.pos_drop(x)
        outputs = []
        for i, layer in enumerate(self.layers):
            pos, x = layer(pos, x, grid, stride=2 ** (i + 1))
            outputs.append((pos, x))
        return outputs

    def forward_features(self, img: Tensor) -> Tensor:
        """Pooled features ``[B, num_features]``."""
        _, x = self.forward_stages(img)[-1]
        return self.norm(x).mean(1)

    def forward(self, img: Tensor) -> Tensor:
        return self.head(self.forward_features(img))


def _build(name: str, num_classes: int, kwargs: dict[str, Any]) -> AutoFocusFormer:
    config = dict(CONFIGS[name])
    config.update(kwargs)
    return AutoFocusFormer(num_classes=num_classes, **config)


_PAPER = (
    "AutoFocusFormer: Image Segmentation off the Grid (Ziwen et al., CVPR 2023), "
    "https://arxiv.org/abs/2304.12406"
)
_SOURCE = "official AutoFocusFormer README"
_WEIGHTS = "https://docs-assets.developer.apple.com/ml-research/models/aff/classification/"
_IN1K = "ImageNet-1K val"

#: name -> (classes, input side, parameters at those classes, weights file or None,
#: (top-1, top-5) on ImageNet-1K val or None, setting). Numbers and files from the
#: official README; ImageNet-22K training uses its 10,450-class subset (official
#: ``data/build.py``). ``aff_base_22kto1k`` (224x224 fine-tuning) has no released weights
#: or published number.
_RELEASES: dict[str, tuple[int, int, int, str | None, tuple[float, float] | None, str]] = {
    "aff_mini": (1000, 224, 6_754_451, "aff_mini.pth", (78.2, 93.6), "224x224"),
    "aff_mini_1_5th": (1000, 224, 6_754_451, "aff_mini_1_5th.pth", (77.5, 93.3), "224x224"),
    "aff_tiny": (1000, 224, 27_020_367, "aff_tiny.pth", (83.0, 96.3), "224x224"),
    "aff_tiny_1_5th": (1000, 224, 27_020_367, "aff_tiny_1_5th.pth", (82.4, 95.9), "224x224"),
    "aff_small": (1000, 224, 42_612_961, "aff_small.pth", (83.5, 96.6), "224x224"),
    "aff_small_1_5th": (1000, 224, 42_612_961, "aff_small_1_5th.pth", (83.4, 96.5), "224x224"),
    "aff_base_22k": (10450, 224, 85_027_325, "aff_base_22k.pth", None, ""),
    "aff_base_22kto1k": (1000, 224, 75_341_075, None, None, ""),
    "aff_base_22kto1k_384": (
        1000,
        384,
        75_341_075,
        "aff_base_22kto1k_384.pth",
        (86.2, 98.0),
        "384x384, ImageNet-22K pretraining",
    ),
}


def _cfg(name: str) -> dict[str, Any]:
    classes, side, params, file, accuracy, setting = _RELEASES[name]
    default_cfg = dict(
        num_classes=classes,
        input_size=(3, side, side),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        param_count=params,
    )
    if file is not None:
        default_cfg["url"] = _WEIGHTS + file
    reported = []
    if accuracy is not None:
        top1, top5 = accuracy
        reported.append(Reported(_IN1K, {"top1": top1, "top5": top5}, setting, _SOURCE))
    return dict(config=CONFIGS[name], default_cfg=default_cfg, reported=reported)


def _register(name: str, summary: str):
    """Register the official config ``name`` with its card."""
    classes = _RELEASES[name][0]

    def factory(num_classes: int = classes, **kwargs: Any) -> AutoFocusFormer:
        return _build(name, num_classes, kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{summary} (official ``configs/{name}.yaml``); ``kwargs`` override it."
    register_model(factory, input="image", family="aff", paper=_PAPER, name=name, **_cfg(name))
    return factory


aff_mini = _register("aff_mini", "AFF-Mini, 6.75M parameters")
aff_mini_1_5th = _register("aff_mini_1_5th", "AFF-Mini-1/5: AFF-Mini keeping 1/5 per downsampling")
aff_tiny = _register("aff_tiny", "AFF-Tiny, 27.0M parameters")
aff_tiny_1_5th = _register("aff_tiny_1_5th", "AFF-Tiny-1/5: AFF-Tiny keeping 1/5 per downsampling")
aff_small = _register("aff_small", "AFF-Small, 42.6M parameters")
aff_small_1_5th = _register(
    "aff_small_1_5th", "AFF-Small-1/5: AFF-Small keeping 1/5 per downsampling"
)
aff_base_22k = _register("aff_base_22k", "AFF-Base trained on ImageNet-22K (10,450 classes)")
aff_base_22kto1k = _register(
    "aff_base_22kto1k", "AFF-Base fine-tuned from ImageNet-22K to ImageNet-1K at 224x224"
)
aff_base_22kto1k_384 = _register(
    "aff_base_22kto1k_384",
    "AFF-Base fine-tuned from ImageNet-22K to ImageNet-1K at 384x384, clusters of 24",
)
