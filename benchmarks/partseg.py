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

    OMP_NUM_THREADS=2 python benchmarks/partseg.py --threads 2 --runs 9
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
from pointset.nn import LocalGrouper, PreExtraction


def grouped_way(
    self: PreExtraction, grouper: LocalGrouper, xyz: torch.Tensor, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``PreExtraction.forward_grouped`` the direct way: build the grouped tensor
    ``[B, S, k, 2C]`` with ``LocalGrouper.forward_dense``, then ``forward_dense`` on it."""
    new_xyz, grouped = grouper.forward_dense(xyz, points)
    return new_xyz, self.forward_dense(grouped)


@contextlib.contextmanager
def way(name: str) -> Iterator[None]:
    """Run every encoder stage the ``name`` way inside the block."""
    own = PreExtraction.forward_grouped
    if name == "grouped":
        PreExtraction.forward_grouped = grouped_way
    try:
        yield
    finally:
        PreExtraction.forward_grouped = own


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
