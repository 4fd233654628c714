"""Upsample a backbone's stride-32 features to every point of an RGBD frame with JBUStack.

FeatUp's signature picture, on a point set:

1. render an RGBD frame of the demo scene (:mod:`pointset.datasets.render`) and turn it
   into a coloured 3-D point set, one point per pixel (:func:`pointset.from_rgbd`);
2. run a pointset backbone (CoC-Tiny, ``create_model("coc_tiny", features_only=True)``)
   on the image and take its last stage: one 320-channel token per 32x32 pixel cell;
3. place each token at the 3-D point of its cell's centre pixel and upsample the tokens to
   every point of the frame with the point path of :class:`pointset.nn.JBUStack`, guided
   by the points' (ImageNet-normalised) colours, as FeatUp guides with the image;
4. project the low-res tokens and the upsampled point features on the same 3 principal
   components (fitted on the tokens) and save the picture: the RGB frame, the low-res
   features (each cell in its token's colour) and the upsampled features, side by side.

Weights: the backbone and the upsampler are **untrained** here (random initialisation;
pointset ships no ImageNet or FeatUp weights for this pair). An untrained JBU is still a
colour-guided filter: its range kernel compares the projected colours of neighbours, so
the upsampled features follow the object outlines of the frame while the low-res ones are
blocky. Pass ``--checkpoint`` (a ``JBUStack(320)`` state dict, e.g. trained with FeatUp's
recipe on CoC features; FeatUp hub files with ``upsampler.`` keys load too) and
``--backbone-checkpoint`` for trained weights.

Run::

    python examples/upsample_features.py                       # writes jbu_features.png
    python examples/upsample_features.py --width 640 --height 480 --output big.png
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from pointset import from_rgbd
from pointset.datasets.render import demo_scene, render_rgbd
from pointset.models import create_model
from pointset.nn import JBUStack

MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])
STRIDE = 32


def load_upsampler(stack: JBUStack, path: str) -> None:
    """Load a ``JBUStack`` state dict, bare or as FeatUp's hub checkpoints store it."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if any(k.startswith("upsampler.") for k in state):
        state = {k[len("upsampler.") :]: v for k, v in state.items() if k.startswith("upsampler.")}
    stack.load_state_dict(state, strict=True)


def pca_colours(low: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Project features on the first 3 principal components of ``low [M, C]`` and map them
    to RGB in ``[0, 1]`` with the 2nd-98th percentiles of the low-res projection."""
    mean = low.mean(0)
    _, _, v = torch.linalg.svd(low - mean, full_matrices=False)
    basis = v[:3].T
    proj = [(f - mean) @ basis for f in (low, *others)]
    lo = torch.quantile(proj[0], 0.02, dim=0)
    hi = torch.quantile(proj[0], 0.98, dim=0)
    return [((p - lo) / (hi - lo).clamp_min(1e-9)).clamp(0, 1) for p in proj]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=448, help="frame width (pixels)")
    parser.add_argument("--height", type=int, default=320, help="frame height (pixels)")
    parser.add_argument("--checkpoint", help="trained JBUStack(320) weights")
    parser.add_argument("--backbone-checkpoint", help="trained coc_tiny weights")
    parser.add_argument("--output", type=Path, default=Path("jbu_features.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.width < 2 * STRIDE or args.height < 2 * STRIDE:
        parser.error(f"the frame must be at least {2 * STRIDE}x{2 * STRIDE} pixels")
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    color, depth, intrinsics = render_rgbd(demo_scene(), width=args.width, height=args.height)
    frame = from_rgbd(color, depth, intrinsics, depth_trunc=math.inf)  # every pixel a point
    image = torch.as_tensor(color).permute(2, 0, 1).float().div(255)
    normalised = (image - MEAN.view(3, 1, 1)) / STD.view(3, 1, 1)

    backbone = create_model("coc_tiny", features_only=True, checkpoint=args.backbone_checkpoint)
    with torch.no_grad():
        tokens = backbone.eval()(normalised.unsqueeze(0))[-1][0]  # [320, h, w]
    c, h, w = tokens.shape

    # each token sits at the 3-D point of its cell's centre pixel (clamped to the image)
    pixel_index = torch.full((args.height, args.width), -1, dtype=torch.long)
    pixel_index[frame.pixel[:, 0], frame.pixel[:, 1]] = torch.arange(frame.num_nodes)
    rows = (torch.arange(h) * STRIDE + STRIDE // 2).clamp(max=args.height - 1)
    cols = (torch.arange(w) * STRIDE + STRIDE // 2).clamp(max=args.width - 1)
    centre = pixel_index[rows.view(-1, 1), cols.view(1, -1)].reshape(-1)
    placed = centre >= 0  # cells whose centre pixel has a depth
    low, centre = tokens.permute(1, 2, 0).reshape(-1, c)[placed], centre[placed]

    stack = JBUStack(c).eval()
    if args.checkpoint:
        load_upsampler(stack, args.checkpoint)
    guidance = (frame.x - MEAN) / STD
    with torch.no_grad():
        high = stack(low, frame.pos[centre], guidance=guidance, pos_out=frame.pos)  # [N, 320]

    low_rgb, high_rgb = pca_colours(low, high)
    cell_rgb = torch.zeros(h * w, 3)
    cell_rgb[placed] = low_rgb
    low_img = cell_rgb.view(h, w, 3).repeat_interleave(STRIDE, 0).repeat_interleave(STRIDE, 1)
    low_img = low_img[: args.height, : args.width]
    high_img = torch.zeros(args.height, args.width, 3)
    high_img[frame.pixel[:, 0], frame.pixel[:, 1]] = high_rgb
    seconds = time.perf_counter() - start
    write_picture(args.output, color, low_img, high_img, (h, w), frame.num_nodes, args.checkpoint)
    print(
        f"{frame.num_nodes:,} points, {h}x{w} tokens of {c} channels -> {tuple(high.shape)} "
        f"in {seconds:.1f} s; picture: {args.output}"
    )
    return {"low": low, "high": high, "points": frame.num_nodes, "output": args.output}


def write_picture(path: Path, color, low_img, high_img, grid, points, checkpoint) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = "trained JBU" if checkpoint else "untrained JBU"
    panels = [
        ("RGB frame", color),
        (f"CoC-Tiny stride 32: {grid[0]}x{grid[1]} tokens (PCA)", low_img.numpy()),
        (f"JBUStack point path: {points:,} points (PCA, {weights})", high_img.numpy()),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 15 * color.shape[0] / color.shape[1] / 3 + 0.6))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
