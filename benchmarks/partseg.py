"""PointMLP part segmentation: the encoder with and without ``PreExtraction.forward_grouped``.

Both ways compute the same encoder of ``pointmlp_partseg`` (same weights, same inputs):

- ``grouped``: every stage builds the grouped tensor ``[B, S, k, 2C]`` with
  ``LocalGrouper.forward_dense`` and runs ``PreExtraction.forward_dense`` on it;
- ``forward_grouped``: every stage runs ``PreExtraction.forward_grouped(grouper, ...)``,
  the model's own path, which applies the transfer product to points and anchors and
  gathers its output.

One process, the two ways alternating in each of ``--runs`` rounds after one untimed
warm-up of each: a training step (forward, NLL loss on random part labels, backward, SGD
with momentum) and an eval forward under ``torch.no_grad()``. The table gives the median,
the min-max spread and the speed-up.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/partseg.py --threads 2 --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from pointset.models import create_model
from pointset.models.pointmlp_seg import PointMLPSegBackbone, SegFeatures


def grouped_features(self: PointMLPSegBackbone, points: torch.Tensor) -> SegFeatures:
    """``PointMLPSegBackbone.forward_features`` with the grouped tensor built per stage."""
    self.check_points(points)
    xyz = points[:, :3].transpose(1, 2)
    x = self.embedding.forward_dense(points)
    levels = [(xyz, x)]
    for grouper, pre, pos in zip(
        self.local_grouper_list, self.pre_blocks_list, self.pos_blocks_list
    ):
        xyz, grouped = grouper.forward_dense(xyz, x.transpose(1, 2))  # [B, S, k, 2C (+3)]
        x = pos.forward_dense(pre.forward_dense(grouped))
        levels.append((xyz, x))
    decoded = []
    for i, step in enumerate(self.decode_list):
        fine_xyz, skip = levels[-2 - i]
        x = step.forward_dense(fine_xyz, levels[-1 - i][0], skip, x)
        decoded.append((fine_xyz, x))
    return SegFeatures(
        encoder=[(p.transpose(1, 2), f) for p, f in levels],
        decoder=[(p.transpose(1, 2), f) for p, f in decoded],
    )


@contextlib.contextmanager
def way(name: str) -> Iterator[None]:
    """Run the model's encoder the ``name`` way inside the block."""
    own = PointMLPSegBackbone.forward_features
    if name == "grouped":
        PointMLPSegBackbone.forward_features = grouped_features
    try:
        yield
    finally:
        PointMLPSegBackbone.forward_features = own


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("pointmlp_partseg")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xyz = torch.rand(args.batch, 3, args.points)
    normals = F.normalize(torch.randn(args.batch, 3, args.points), dim=1)
    category = torch.randint(0, 16, (args.batch,))
    labels = torch.randint(0, model.num_classes, (args.batch, args.points))

    def train() -> None:
        model.train()
        log_probs = model(xyz, normals, category)
        loss = F.nll_loss(log_probs.reshape(-1, log_probs.size(-1)), labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            model(xyz, normals, category)

    ways = ("grouped", "forward_grouped")
    times: dict[tuple[str, str], list[float]] = {
        (w, s): [] for w in ways for s in ("train", "eval")
    }
    for r in range(args.runs + 1):
        for name in ways:
            with way(name):
                for step, fn in (("train", train), ("eval", evaluate)):
                    start = time.perf_counter()
                    fn()
                    if r:  # round 0 is the warm-up
                        times[name, step].append(time.perf_counter() - start)

    def cell(name: str, step: str) -> tuple[float, str]:
        values = times[name, step]
        median = statistics.median(values)
        return median, f"{median * 1e3:,.0f} ms [{min(values) * 1e3:,.0f}-{max(values) * 1e3:,.0f}]"

    lines = [
        f"pointmlp_partseg, {args.batch} clouds x {args.points:,} points, {args.threads} "
        f"thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}; "
        f"median [min-max] of {args.runs} interleaved rounds",
        "",
        "| step | grouped tensor | forward_grouped | speed-up |",
        "|---|---|---|---|",
    ]
    for step in ("train", "eval"):
        (old, old_text), (new, new_text) = cell("grouped", step), cell("forward_grouped", step)
        lines.append(f"| {step} | {old_text} | {new_text} | {old / new:.2f}x |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
