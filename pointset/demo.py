"""``pointset demo``: an end-to-end tour on data rendered on the spot (no download).

1. Render an RGBD frame of a small scene and convert it to a 3-D point set.
2. Convert the colour image to an image point set and to the CoC 5-channel input.
3. Sample (farthest point sampling), group (kNN and ball query), voxel-downsample and
   cluster (k-means) both point sets with the automatically chosen backends.
4. Print a summary and write a PNG with the frame, the sampled 3-D points and the
   clusters mapped back onto the image.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - start) * 1e3


def run_demo(out: str | Path = "pointset_demo.png", seed: int = 0) -> dict:
    """Run the demo, print a summary and write the PNG to ``out``; return the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import ops
    from .data import coc_input, from_image, from_rgbd
    from .datasets.render import demo_scene, render_rgbd

    torch.manual_seed(seed)
    color, depth, intrinsics = render_rgbd(demo_scene(), width=320, height=240, noise_std=0.002)
    cloud = from_rgbd(color, depth, intrinsics, depth_scale=1000.0, depth_trunc=3.0)
    image = torch.from_numpy(color).permute(2, 0, 1).float().div(255)
    pixels = from_image(image)
    coc = coc_input(image[None])

    summary: dict = {"rgbd_points": cloud.num_nodes, "image_points": pixels.num_nodes}
    print(
        f"RGBD frame {depth.shape[1]}x{depth.shape[0]} -> {cloud.num_nodes} points "
        f"(pos {tuple(cloud.pos.shape)}, colour {tuple(cloud.x.shape)}; "
        f"{depth.size - cloud.num_nodes} pixels beyond 3.0 m dropped)"
    )
    print(
        f"image {tuple(image.shape)} -> {pixels.num_nodes} points on a "
        f"{tuple(pixels.grid_size[0].tolist())} grid; CoC input {tuple(coc.shape)}"
    )

    num_samples = 1024
    idx, ms = _timed(ops.fps, cloud.pos, num=num_samples)
    anchors = cloud.pos[idx]
    print(f"fps: {cloud.num_nodes} -> {num_samples} anchors in {ms:.1f} ms")
    edges, ms = _timed(ops.knn, cloud.pos, anchors, 16)
    spread = (cloud.pos[edges[1]] - anchors[edges[0]]).norm(dim=1).view(-1, 16)
    print(
        f"knn: 16 neighbours of each anchor in {ms:.1f} ms; "
        f"median group radius {spread[:, -1].median() * 100:.1f} cm"
    )
    (ball, mask), ms = _timed(ops.ball_query, cloud.pos, anchors, 0.05, 32)
    print(
        f"ball_query r=5 cm: {mask.sum(1).float().mean():.1f} of 32 slots filled "
        f"on average in {ms:.1f} ms"
    )
    cluster, ms = _timed(ops.voxel_grid, cloud.pos, 0.05)
    print(f"voxel_grid 5 cm: {int(torch.unique(cluster).numel())} occupied voxels in {ms:.1f} ms")
    features = torch.cat([cloud.pos, cloud.x], dim=1)
    (assign, centers, _), ms = _timed(ops.kmeans, features, 8, iters=20)
    print(
        f"kmeans: 8 clusters over xyz+rgb in {ms:.1f} ms; sizes "
        f"{torch.bincount(assign, minlength=8).tolist()}"
    )
    img_idx, ms = _timed(ops.fps, pixels.pos, num=256)
    print(f"image fps: {pixels.num_nodes} pixels -> 256 in {ms:.1f} ms")

    summary.update(anchors=num_samples, clusters=int(centers.size(0)))
    label_map = torch.full(depth.shape, -1, dtype=torch.long)
    label_map[cloud.pixel[:, 0], cloud.pixel[:, 1]] = assign

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    axes[0].imshow(color)
    axes[0].set_title("rendered colour")
    axes[1].imshow(depth, cmap="viridis")
    axes[1].set_title("depth (mm)")
    axes[2].imshow(label_map.numpy(), cmap="tab10", interpolation="nearest")
    axes[2].set_title("k-means clusters (xyz+rgb) on the image")
    rows, cols = pixels.pos[img_idx].T.numpy()
    axes[2].scatter(cols, rows, s=3, c="white")
    for ax in axes[:3]:
        ax.axis("off")
    axes[3].remove()
    ax3 = fig.add_subplot(1, 4, 4, projection="3d")
    p = anchors.numpy()
    ax3.scatter(p[:, 0], p[:, 2], -p[:, 1], s=2, c=cloud.x[idx].numpy())
    ax3.set_title(f"{num_samples} FPS anchors (camera frame)")
    ax3.set_xlabel("x")
    ax3.set_ylabel("z")
    ax3.set_zlabel("-y")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return summary
