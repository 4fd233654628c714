"""Context Cluster (CoC) image backbones, checkpoint-compatible with the official release.

`"Image as Set of Points" <https://arxiv.org/abs/2303.01494>`_ (Ma et al., ICLR 2023).
State-dict keys and parameter counts equal the official ``models/context_cluster.py``
models, so their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_mean_pool

from pointset.data.image import coc_input
from pointset.data.point_set import PointSet, batch_from_packed
from pointset.models._coc_points import pixel_lattice_input
from pointset.models._layers import DropPath, Mlp
from pointset.models.registry import Reported, register_model
from pointset.nn import CloudGroupNorm, ClusterPlan, ContextCluster, GridPointReducer

__all__ = [
    "CONFIGS",
    "ClusterBlock",
    "ContextClusterNet",
    "coc_medium",
    "coc_medium_v1",
    "coc_small",
    "coc_small_v1",
    "coc_tiny",
    "coc_tiny_plain",
    "coc_tiny_plain_v1",
    "coc_tiny_v1",
]


class ClusterBlock(nn.Module):
    """``x + ls1 * ContextCluster(GN(x))``, then ``x + ls2 * Mlp(GN(x))``.

    ``GN`` is ``GroupNorm(1, dim)`` (:class:`~pointset.nn.CloudGroupNorm`); ``ls1``/``ls2`` are per-channel layer scales
    (``layer_scale_1``/``layer_scale_2``, only with ``use_layer_scale``); the MLP runs
    channels-last. ``denominator`` (``"sim"`` or ``"count"``) is passed to the
    :class:`~pointset.nn.ContextCluster`.

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
        denominator: str = "sim",
    ) -> None:
        super().__init__()
        self.use_layer_scale = use_layer_scale
        if use_layer_scale:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.norm1 = CloudGroupNorm(dim)
        self.token_mixer = ContextCluster(
            dim,
            dim,
            heads=heads,
            head_dim=head_dim,
            proposal_w=proposal_w,
            proposal_h=proposal_h,
            fold_w=fold_w,
            fold_h=fold_h,
            denominator=denominator,
        )
        self.norm2 = CloudGroupNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward_points(
        self, x: Tensor, batch: Tensor, num_clouds: int, plan: ClusterPlan
    ) -> Tensor:
        """The block on packed points ``x [N, dim]`` (``batch [N]``) with the cluster plan
        of the stage; GroupNorm normalises each cloud over its points."""
        mixed = self.token_mixer(self.norm1(x, None, batch, num_clouds), plan=plan)
        if self.use_layer_scale:
            mixed = self.layer_scale_1 * mixed
        x = x + self.drop_path(mixed)
        fed = self.mlp(self.norm2(x, None, batch, num_clouds))
        if self.use_layer_scale:
            fed = self.layer_scale_2 * fed
        return x + self.drop_path(fed)

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.token_mixer.forward_dense(self.norm1.forward_dense(x))
        if self.use_layer_scale:
            mixed = self.layer_scale_1.view(-1, 1, 1) * mixed
        x = x + self.drop_path(mixed)
        fed = self.mlp(self.norm2.forward_dense(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
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
        denominator: normalisation of the cluster aggregation in every block, ``"sim"``
            (sum of similarities + 1, the official code since 2023-05-31 and its current
            checkpoints) or ``"count"`` (assigned points + 1, the code the first released
            checkpoints were trained with); see :class:`~pointset.nn.ContextCluster`.

    **Input sizes and padding.** The official model rejects images whose stage maps the
    fold regions do not divide (for the published configs: sides that are not a multiple of
    32, e.g. 240). Such images are padded instead; sizes the official model accepts (224,
    256, ...) are never padded, so their outputs are the official computation.

    * *Where:* at the bottom and the right, to :meth:`padded_size` (the smallest size whose
      every stage map the folds divide; 240 x 240 -> 256 x 256 for coc_tiny/small/medium,
      while coc_tiny_plain, without regions, takes any size unpadded).
    * *What value:* the 5-channel input is built at the real size first, so real pixels
      keep their exact position channels; padded pixels get colour 0 (the mean colour of
      a normalised image) and position channels that continue the image's own step
      (``i / (H - 1) - 0.5`` for rows ``i >= H``, likewise columns).
    * *Removal:* each stage output is cropped to the size the convolution arithmetic gives
      for the unpadded image (:meth:`stage_sizes`; 240 -> 60, 30, 15, 8) before its
      GroupNorm; the classifier pools only over the cropped last map, and ``fork_feat``
      returns the cropped maps.
    * *Effect:* the stem outputs of the cropped region see only real pixels, but the
      padded tokens take part in the later stages: they are pooled into the centers of
      the fold regions they fall in, can be assigned to those centers, and feed the 3x3
      reducers at the bottom/right border. Outputs at such sizes are therefore a
      well-defined extension of the official model, not something it computes.

    **Point sets.** :meth:`forward_points` (also reached by passing a
    :class:`~pointset.data.PointSet` to ``forward``) runs the same weights on pixels given
    as a point set, a whole image or any subset of its pixels, through the general path.

    Shapes:
        - **input:** ``[B, in_chans, H, W]`` (or a ``PointSet``, see :meth:`forward_points`)
        - **output:** ``[B, num_classes]``; with ``fork_feat`` a list of four
          ``[B, embed_dims[i], H_i, W_i]`` with ``(H_i, W_i) = stage_sizes(H, W)[i]``
          (``H / (4 * 2^i)`` for sides divisible by 32)
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
        denominator: str = "sim",
    ) -> None:
        super().__init__()
        if denominator not in ("sim", "count"):
            raise ValueError(f"denominator must be 'sim' or 'count', got {denominator!r}")
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
                        denominator=denominator,
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
                self.add_module(f"norm{i_layer}", CloudGroupNorm(embed_dims[i_emb]))
        else:
            self.norm = CloudGroupNorm(embed_dims[-1])
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

    # ------------------------------------------------------------------ image input
    def stage_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """``(H_i, W_i)`` of the four stage maps for a ``height x width`` image (the
        convolution arithmetic of the stem and reducers, before any padding)."""
        return [size for _, size in self._map_sizes(height, width)]

    def _map_sizes(self, height: int, width: int) -> List[Tuple[int, Tuple[int, int]]]:
        """``(network index, (H, W))`` of every stage map (``nn.Sequential`` entries)."""

        def through(conv: nn.Conv2d, h: int, w: int) -> Tuple[int, int]:
            (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
            return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

        h, w = through(self.patch_embed.proj, height, width)
        sizes = []
        for idx, module in enumerate(self.network):
            if isinstance(module, GridPointReducer):
                h, w = through(module.proj, h, w)
            else:
                sizes.append((idx, (h, w)))
        return sizes

    def _divisible(self, height: int, width: int) -> Tuple[bool, bool]:
        """Whether every stage's fold regions divide the rows / the columns."""
        rows_ok = cols_ok = True
        for idx, (h, w) in self._map_sizes(height, width):
            mixer = self.network[idx][0].token_mixer if len(self.network[idx]) else None
            if mixer is None:
                continue
            fw, fh = mixer.regions
            rows_ok &= h >= 1 and h % fw == 0
            cols_ok &= w >= 1 and w % fh == 0
        return rows_ok, cols_ok

    def padded_size(self, height: int, width: int) -> Tuple[int, int]:
        """The input size the image is padded to: the smallest ``(H', W') >= (height, width)``
        whose stage maps every fold region divides (``(height, width)`` itself when the
        official model accepts it; 240 -> 256 for the published configs)."""
        limit = 2 * max(height, width) + 64
        ph = next((h for h in range(height, limit) if self._divisible(h, width)[0]), None)
        pw = next((w for w in range(width, limit) if self._divisible(height, w)[1]), None)
        if ph is None or pw is None:
            raise ValueError(f"no padded size below {limit} fits the folds for {height}x{width}")
        return ph, pw

    def forward_embeddings(self, x: Tensor) -> Tensor:
        """``[B, in_chans, H, W]`` -> stem output ``[B, embed_dims[0], H_0', W_0']``.

        The image gets its two position channels (:func:`~pointset.data.image.coc_input`)
        and is padded at the bottom and right to :meth:`padded_size` when the official
        model would reject its size (see :class:`ContextClusterNet`).
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or x.size(1) != self.in_chans:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got shape {shape}")
        h, w = x.shape[-2:]
        if min(self.stage_sizes(h, w)[-1]) < 1:
            raise ValueError(f"the image ({h}x{w}) is too small for the stem and reducers")
        inp = coc_input(x)
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            inp = _pad_coc_input(inp, ph, pw)
        return self.patch_embed.forward_dense(inp)

    def forward_tokens(
        self, x: Tensor, sizes: Sequence[Tuple[int, int]] | None = None
    ) -> Union[Tensor, List[Tensor]]:
        """Run ``network``; with ``fork_feat`` return the normalised stage outputs, each
        cropped to ``sizes[i]`` (the unpadded stage sizes) first."""
        outs = []
        for idx, block in enumerate(self.network):
            x = block.forward_dense(x) if isinstance(block, GridPointReducer) else block(x)
            if self.fork_feat and idx in self.out_indices:
                if sizes is not None:
                    h, w = sizes[len(outs)]
                    x_out = x[..., :h, :w]
                else:
                    x_out = x
                outs.append(getattr(self, f"norm{idx}").forward_dense(x_out))
        return outs if self.fork_feat else x

    def forward(self, x: Union[Tensor, PointSet]) -> Union[Tensor, List[Tensor]]:
        """Logits ``[B, num_classes]`` (or the stage maps with ``fork_feat``) of images
        ``[B, in_chans, H, W]``; a :class:`~pointset.data.PointSet` goes to
        :meth:`forward_points`."""
        if isinstance(x, PointSet):
            return self.forward_points(x)
        sizes = self.stage_sizes(*x.shape[-2:]) if isinstance(x, Tensor) and x.dim() == 4 else None
        x = self.forward_tokens(self.forward_embeddings(x), sizes)
        if self.fork_feat:
            return x
        h, w = sizes[-1]
        return self.head(self.norm.forward_dense(x[..., :h, :w]).mean(dim=(-2, -1)))

    # ------------------------------------------------------------------ point-set input
    def forward_points(
        self,
        points: PointSet,
        image_size: Tuple[int, int] | None = None,
        plan: str = "auto",
    ) -> Union[Tensor, List[PointSet]]:
        """Run the network on a point set of pixels through the general (message-passing)
        path of :class:`~pointset.nn.ContextCluster`.

        The points are pixels: ``points.pixel`` (or ``points.pos`` holding integer pixel
        coordinates, as :func:`~pointset.data.from_image` gives without ``normalize``) is
        each point's ``(row, col)``. They may be a whole image or any subset (masked-out
        pixels, the valid pixels of an RGBD frame); clouds of a batch may differ in size.
        ``points.x`` holds ``in_chans`` colour channels (normalised like the images the
        model was trained on), or ``in_chans + 2`` channels that already end with the CoC
        position channels (``from_image(coc_input(img))``); otherwise the position channels
        are built from the pixel coordinates exactly as :func:`~pointset.data.coc_input`
        builds them.

        The stem and the reducers apply their convolution weights sparsely on the pixel
        lattice (absent pixels count as zeros; :class:`~pointset.nn.GridPointReducer`),
        GroupNorm normalises each cloud over its points (:class:`~pointset.nn.CloudGroupNorm`),
        and every Context Cluster stage builds one :class:`~pointset.nn.ClusterPlan` shared by
        its blocks (:meth:`~pointset.nn.ContextCluster.lattice_plan`):

        * ``"grid"``: :func:`~pointset.nn.grid_plan`, the official fold regions and pooled
          centers; needs whole images of one size that the folds divide. The result then
          equals :meth:`forward` on the image (to float32 rounding).
        * ``"fps"``: :func:`~pointset.nn.point_plan`, farthest-point-sampled centers (from
          index 0, deterministic) at the density of the grid path (its centers per image over
          the stage's lattice cells), each pooled from its ``center_k`` nearest points, each
          point compared with its nearest ``proposal_w * proposal_h`` centers.
        * ``"auto"`` (default): ``"grid"`` where it applies, else ``"fps"``.

        Args:
            points: the pixels, one or a batch of clouds.
            image_size: ``(H, W)`` of the source image, which sets the position channels;
                default: ``points.grid_size`` if recorded, else the largest pixel + 1.
            plan: ``"auto"``, ``"grid"`` or ``"fps"``.

        Returns:
            logits ``[B, num_classes]``; with ``fork_feat`` one
            :class:`~pointset.data.PointSet` per stage with normalised ``x [M_i, C_i]``,
            ``pos [M_i, 2]`` the ``(row, col)`` cell of the stage lattice (stride
            ``4 * 2^i`` pixels) and ``batch``.
        """
        if plan not in ("auto", "grid", "fps"):
            raise ValueError(f"plan must be 'auto', 'grid' or 'fps', got {plan!r}")
        x, cells, batch, size = pixel_lattice_input(points, self.in_chans, image_size)
        x, cells, batch, size = self.patch_embed(x, cells, batch, size)
        num_clouds = size.size(0)
        outs = []
        for idx, module in enumerate(self.network):
            if isinstance(module, GridPointReducer):
                x, cells, batch, size = module(x, cells, batch, size)
                continue
            if len(module):
                cluster_plan = module[0].token_mixer.lattice_plan(cells, batch, size, plan)
                for block in module:
                    x = block.forward_points(x, batch, num_clouds, cluster_plan)
            if self.fork_feat and idx in self.out_indices:
                normed = getattr(self, f"norm{idx}")(x, None, batch, num_clouds)
                sizes = torch.bincount(batch, minlength=num_clouds)
                outs.append(batch_from_packed(sizes, x=normed, pos=cells.to(x.dtype)))
        if self.fork_feat:
            return outs
        normed = self.norm(x, None, batch, num_clouds)
        return self.head(global_mean_pool(normed, batch, num_clouds))


def _pad_coc_input(inp: Tensor, height: int, width: int) -> Tensor:
    """Pad the CoC input ``[B, C + 2, H, W]`` at the bottom and right to ``height x width``:
    colour channels with zeros, position channels continued with the image's own step
    (``i / (H - 1) - 0.5`` for ``i >= H``), so real pixels keep their positions exactly."""
    b, c, h, w = inp.shape
    out = F.pad(inp, (0, width - w, 0, height - h))

    def axis(n: int, real: int) -> Tensor:
        if real == 1:
            return torch.zeros(n, device=inp.device, dtype=inp.dtype)
        ax = torch.arange(n, device=inp.device, dtype=torch.float32) / (real - 1.0) - 0.5
        return ax.to(inp.dtype)

    out[:, c - 2] = axis(height, h).view(height, 1)
    out[:, c - 1] = axis(width, w).view(1, width)
    return out


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


#: The two generations of official ImageNet-1K checkpoints. The first release (2023-03)
#: was trained with the aggregation divided by the number of assigned points + 1
#: (``denominator="count"``); on 2023-05-31 the official code switched to the sum of
#: similarities + 1 (``"sim"``) and the checkpoints were retrained and replaced
#: (2023-06-01). ``coc_<size>`` are the current checkpoints, ``coc_<size>_v1`` the first
#: release; each name carries the denominator its weights were trained with, so loading a
#: checkpoint into its name reproduces the accuracy published with it.
_CURRENT_URL = "https://github.com/ma-xu/Context-Cluster#2-pre-trained-context-cluster-models"
_V1_URLS = {
    "coc_tiny": "https://drive.google.com/drive/folders/1Q_6W3xKMX63aQOBaqiwX5y1fCj4hVOIA",
    "coc_tiny_plain": (
        "https://web.northeastern.edu/smilelab/xuma/ContextCluster/checkpoints/"
        "coc_tiny_plain/coc_tiny_plain.pth.tar"
    ),
    "coc_small": "https://drive.google.com/drive/folders/1WSmnbSgy1I1HOTTTAQgOKEzXSvd3Kmh-",
    "coc_medium": "https://drive.google.com/drive/folders/1sPxnEHb2AHDD9bCQh6MA0I_-7EBrvlT5",
}
#: name -> (parameters at 1000 classes, current top-1, first-release top-1, setting note)
_RELEASES: dict[str, tuple[int, float, float, str]] = {
    "coc_tiny": (5_570_584, 73.2, 71.8, ""),
    "coc_tiny_plain": (5_570_584, 73.8, 72.9, ", no region partition"),
    "coc_small": (14_657_024, 78.1, 77.5, ""),
    "coc_medium": (29_290_520, 81.2, 81.0, ""),
}
for _name in _RELEASES:
    CONFIGS[_name]["denominator"] = "sim"
    CONFIGS[f"{_name}_v1"] = dict(CONFIGS[_name], denominator="count")


def _cfg(name: str) -> dict[str, Any]:
    """Card fields of ``name`` (``coc_<size>`` or ``coc_<size>_v1``)."""
    base = name.removesuffix("_v1")
    params, top1, top1_v1, note = _RELEASES[base]
    v1 = name != base
    release = (
        "first release (2023-03), count denominator"
        if v1
        else "checkpoints of 2023-06-01, sim denominator"
    )
    return dict(
        config=CONFIGS[name],
        default_cfg=dict(
            num_classes=1000,
            input_size=(3, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            param_count=params,
            url=_V1_URLS[base] if v1 else _CURRENT_URL,
        ),
        reported=[
            Reported(
                "ImageNet-1K val",
                {"top1": top1_v1 if v1 else top1},
                f"224x224{note}; {release}",
                _SOURCE,
            )
        ],
    )


def _build(
    name: str, num_classes: int, features_only: bool, kwargs: dict[str, Any]
) -> ContextClusterNet:
    config = dict(CONFIGS[name])
    config.update(kwargs)
    if features_only:
        config["fork_feat"] = True
    return ContextClusterNet(num_classes=num_classes, **config)


@register_model(input="image", family="coc", paper=_PAPER, **_cfg("coc_tiny"))
def coc_tiny(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Tiny: 5,570,584 parameters (1000 classes), regions 8/4/2/1, 2x2 centers.

    ``features_only=True`` returns the four normalised stage maps instead of logits;
    ``kwargs`` override the config (e.g. ``denominator="count"``).
    """
    return _build("coc_tiny", num_classes, features_only, kwargs)


@register_model(input="image", family="coc", paper=_PAPER, **_cfg("coc_tiny_plain"))
def coc_tiny_plain(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Tiny without region partition: 5,570,584 parameters, centers 4x4, 4x4, 2x2, 2x2."""
    return _build("coc_tiny_plain", num_classes, features_only, kwargs)


@register_model(input="image", family="coc", paper=_PAPER, **_cfg("coc_small"))
def coc_small(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Small: 14,657,024 parameters (1000 classes)."""
    return _build("coc_small", num_classes, features_only, kwargs)


@register_model(input="image", family="coc", paper=_PAPER, **_cfg("coc_medium"))
def coc_medium(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
    """CoC-Medium: 29,290,520 parameters (1000 classes)."""
    return _build("coc_medium", num_classes, features_only, kwargs)


def _first_release(base: str):
    """Register ``<base>_v1``: the network of ``base`` with the count denominator, for the
    checkpoints of the first release."""
    name = f"{base}_v1"

    def factory(num_classes: int = 1000, features_only: bool = False, **kwargs: Any):
        return _build(name, num_classes, features_only, kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"{base} with ``denominator='count'``, for the first released checkpoints "
        f"(2023-03, {_RELEASES[base][2]} top-1)."
    )
    register_model(factory, input="image", family="coc", paper=_PAPER, name=name, **_cfg(name))
    return factory


coc_tiny_v1 = _first_release("coc_tiny")
coc_tiny_plain_v1 = _first_release("coc_tiny_plain")
coc_small_v1 = _first_release("coc_small")
coc_medium_v1 = _first_release("coc_medium")
