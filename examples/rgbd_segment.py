"""Segment an RGBD frame with a trained point-set segmenter: a coloured cloud and a picture.

Steps:

1. get an RGBD frame: ``--color``/``--depth`` files (with ``--depth-scale`` and optional
   ``--intrinsics``); else a new scene rendered by the built-in scene generator
   (:func:`pointset.datasets.synthetic_scenes.render_scene`, ``--scene-seed``), which
   also gives the true label image;
2. back-project it to a coloured 3-D point set (:func:`pointset.from_rgbd`), xyz + rgb per
   pixel with depth, as the training scenes were made;
3. label every point with the checkpoint (default: the best checkpoint of the demo run,
   ``pointset train configs/demo/segmentation.yaml``) in chunks of the training size
   (:func:`pointset.engine.segmentation.segment_points`);
4. write ``OUT.ply`` (the cloud coloured by class) and ``OUT.png`` (colour image beside the
   predicted label image; for a rendered scene the true labels and the pixel accuracy
   too), and print the class histogram.

Run::

    python examples/rgbd_segment.py
    python examples/rgbd_segment.py --color color.png --depth depth.png --depth-scale 5000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pointset import PointSet, from_rgbd, write
from pointset.engine.build import load_classifier
from pointset.engine.plots import colorize_labels, save_label_image
from pointset.engine.segmentation import model_call, scaled_intrinsics, segment_points

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "runs" / "demo" / "segmentation" / "best"


def load_frame(args: argparse.Namespace):
    """``color [H, W, 3]`` uint8, raw ``depth [H, W]``, intrinsics, depth scale and truncation,
    and the true label image (``None`` for files)."""
    from pointset.datasets import synthetic_scenes as S

    if args.color is None:
        frame = S.render_scene(np.random.default_rng([args.scene_seed, 99]))
        return frame.color, frame.depth, frame.intrinsics, S.DEPTH_SCALE, S.DEPTH_TRUNC, frame.label
    from PIL import Image

    with Image.open(args.color) as im:
        color = np.asarray(im.convert("RGB"))
    with Image.open(args.depth) as im:
        depth = np.asarray(im)
    h, w = depth.shape
    k = args.intrinsics or scaled_intrinsics((S.INTRINSICS, S.FRAME_SIZE), w, h)
    return color, depth, k, args.depth_scale, args.depth_trunc, None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--color", help="colour image (with --depth)")
    parser.add_argument("--depth", help="depth image (16-bit PNG)")
    parser.add_argument("--depth-scale", type=float, default=1000.0)
    parser.add_argument("--depth-trunc", type=float, default=6.0)
    parser.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"))
    parser.add_argument("--scene-seed", type=int, default=0, help="rendered scene to segment")
    parser.add_argument("--out", default="rgbd_segment", help="output prefix (.ply and .png)")
    args = parser.parse_args(argv)
    if (args.color is None) != (args.depth is None):
        parser.error("--color and --depth go together")

    model, meta = load_classifier(args.checkpoint)
    names = [str(n) for n in meta["class_names"]]
    num_points = int(meta["config"]["data"]["num_points"])
    color, depth, k, scale, trunc, truth = load_frame(args)
    cloud = from_rgbd(color, depth, k, scale, trunc)
    points = torch.cat([cloud.pos, cloud.x], 1)
    labels = segment_points(
        model,
        points,
        num_points,
        model_call(meta["model"]),
        generator=torch.Generator().manual_seed(0),
    )

    colors = torch.from_numpy(colorize_labels(labels.numpy(), len(names))).float()
    write(f"{args.out}.ply", PointSet(pos=cloud.pos, x=colors))
    image = np.full(depth.shape, -1, dtype=np.int64)
    image[cloud.pixel[:, 0].numpy(), cloud.pixel[:, 1].numpy()] = labels.numpy()
    result = {
        "points": int(labels.numel()),
        "histogram": torch.bincount(labels, minlength=len(names)),
    }
    title = "prediction"
    if truth is not None:
        true = torch.from_numpy(truth[cloud.pixel[:, 0].numpy(), cloud.pixel[:, 1].numpy()])
        result["accuracy"] = float((true == labels).float().mean())
        title = f"prediction ({100 * result['accuracy']:.1f}% of pixels correct)"
    save_label_image(image, f"{args.out}.png", names, color=color, title=title)
    print(f"{result['points']} points -> {args.out}.ply, {args.out}.png")
    for name, c in zip(names, result["histogram"].tolist()):
        if c:
            print(f"  {name:<10} {c:>7}  {100 * c / result['points']:5.1f}%")
    if "accuracy" in result:
        print(f"pixel accuracy against the rendered labels: {100 * result['accuracy']:.1f}%")
    return result


if __name__ == "__main__":
    main()
