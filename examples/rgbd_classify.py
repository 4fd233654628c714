"""Classify the object in front of an RGBD camera with a trained point-cloud classifier.

Steps:

1. get an RGBD frame: ``--color``/``--depth`` files; else the Redwood frame of the
   reference data folder when it is present (``$POINTSET_SHARED``, default: the ``shared``
   folder beside the checkout); else a frame rendered here from a synthetic scene (a ball
   on a floor in front of a wall);
2. back-project it to a coloured 3-D point set (:func:`pointset.data.read_rgbd` /
   :func:`pointset.from_rgbd`);
3. keep the points near the object in the middle of the image, turn the camera frame
   (``y`` down, ``z`` forward) into the object frame of the training data (``y`` up),
   centre and scale them into the unit sphere and take ``num_points`` of them by farthest
   point sampling, as the classifier was trained;
4. run the checkpoint (default: the best checkpoint of the demo run) and print the top-5
   classes.

The demo classifier learnt from synthetic shapes sampled over their whole surface; a camera
sees one side of an object plus the floor around it, so its scores on RGBD frames are a
demonstration of the pipeline, not a benchmark (on the rendered ball it ranks "sphere"
first).

Run (after ``pointset train configs/demo/pointmlp_elite.yaml``)::

    python examples/rgbd_classify.py
    python examples/rgbd_classify.py --color color.png --depth depth.png --convention tum
    python examples/rgbd_classify.py --render          # always use the rendered frame
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from pointset import PointSet, from_rgbd
from pointset.data import read_rgbd
from pointset.data.transforms import Subsample
from pointset.datasets.render import Sphere, render_rgbd
from pointset.engine.build import load_classifier
from pointset.engine.data import model_input

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "runs" / "demo" / "pointmlp_elite" / "best"


def reference_frame() -> tuple[Path, Path] | None:
    """The Redwood colour/depth pair of the reference data folder, if it is there."""
    shared = Path(os.environ.get("POINTSET_SHARED", REPO.parent / "shared"))
    folder = shared / "data" / "rgbd" / "redwood"
    color, depth = folder / "color" / "00000.jpg", folder / "depth" / "00000.png"
    return (color, depth) if color.is_file() and depth.is_file() else None


def rendered_frame() -> PointSet:
    """A 320x240 frame of a ball (radius 0.25 m) on the floor 1.5 m in front of the camera."""
    ball = Sphere((0.0, 0.0, 1.5), 0.25, (0.8, 0.2, 0.2))
    color, depth, intrinsics = render_rgbd([ball], width=320, height=240, floor_y=0.25)
    return from_rgbd(color, depth, intrinsics, depth_scale=1000.0, depth_trunc=3.0)


def central_object(points: PointSet, radius: float) -> PointSet:
    """Points within ``radius`` metres of the median 3-D point of the central pixels.

    Uses ``pixel [N, 2]`` (row, col) from the RGBD conversion to find the middle fifth of
    the image.
    """
    pix = points.pixel.float()
    rows, cols = pix[:, 0], pix[:, 1]
    h, w = rows.max() + 1, cols.max() + 1
    middle = ((rows - h / 2).abs() < h / 10) & ((cols - w / 2).abs() < w / 10)
    if not bool(middle.any()):
        raise ValueError("no valid depth in the middle of the image")
    center = points.pos[middle].median(dim=0).values
    keep = (points.pos - center).norm(dim=1) < radius
    return PointSet(pos=points.pos[keep], x=points.x[keep])


def to_object_frame(pos: torch.Tensor) -> torch.Tensor:
    """Camera frame (x right, y down, z forward) -> y up, unit sphere, bounding box
    centred (the normalisation of the training shapes). ``pos: [N, 3]``."""
    pos = pos * torch.tensor([1.0, -1.0, -1.0])  # a 180 degree turn about x: y up
    pos = pos - (pos.amin(0) + pos.amax(0)) / 2
    return pos / pos.norm(dim=1).max().clamp_min(1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="trainer checkpoint")
    parser.add_argument("--color", help="colour image of an RGBD pair")
    parser.add_argument("--depth", help="depth image of an RGBD pair")
    parser.add_argument("--convention", default="redwood", help="redwood, tum, sun or nyu")
    parser.add_argument("--render", action="store_true", help="use the rendered frame")
    parser.add_argument("--radius", type=float, default=0.35, help="object crop radius (m)")
    args = parser.parse_args()

    if not Path(str(args.checkpoint) + ".json").is_file() and not Path(args.checkpoint).is_file():
        raise SystemExit(
            f"no checkpoint at {args.checkpoint}; train one first with "
            "`pointset train configs/demo/pointmlp_elite.yaml` or pass --checkpoint"
        )
    model, meta = load_classifier(args.checkpoint)
    if meta.get("input") != "points":
        raise SystemExit(f"{args.checkpoint} is not a point-cloud classifier")
    num_points = meta["config"]["data"]["num_points"]

    if args.color and args.depth:
        source = f"{args.color} + {args.depth} ({args.convention})"
        frame = read_rgbd(args.color, args.depth, args.convention)
    elif not args.render and (ref := reference_frame()) is not None:
        source = f"Redwood frame {ref[0].name} + {ref[1].name}"
        frame = read_rgbd(*ref, convention="redwood")
    else:
        source = "rendered frame (a ball on a floor)"
        frame = rendered_frame()
    obj = central_object(frame, args.radius)
    print(f"{source}: {frame.num_nodes} points, {obj.num_nodes} near the centre object")
    if obj.num_nodes < num_points:
        raise SystemExit(f"only {obj.num_nodes} object points; the model needs {num_points}")

    cloud = PointSet(pos=to_object_frame(obj.pos.float()))
    cloud = Subsample(num_points, method="fps")(cloud)
    with torch.no_grad():
        logits = model(model_input(cloud.pos.unsqueeze(0), "points"))
    prob = logits.softmax(dim=1)[0]
    top = prob.topk(min(5, prob.numel()))
    names = meta.get("class_names") or [str(i) for i in range(prob.numel())]
    print(f"top-5 of {meta['model']} ({args.checkpoint}):")
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {names[i]:<12} {100 * p:5.1f}%")


if __name__ == "__main__":
    main()
