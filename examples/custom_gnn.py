"""A custom PyG classifier mixing PyG's EdgeConv with pointset's Context Cluster and
cluster attention, trained on a small synthetic 3-D shape task.

The point is composition: ``torch_geometric.nn.EdgeConv`` runs on a kNN graph built by
:func:`pointset.ops.knn_graph` (PyG's own ``knn_graph`` needs pyg-lib), and the pointset
layers take the same packed ``(x, pos, batch)`` a PyG ``DataLoader`` produces:

    x --Linear--> EdgeConv(kNN graph) --> ContextCluster --> ClusterAttention
      --> [max | mean] pooling per cloud --> MLP --> 5 classes

The data: spheres, cubes, cylinders, cones and tori sampled on their surfaces with
64-128 points each (so every batch packs clouds of unequal size), random proportions, a
random 3-D rotation and Gaussian noise. Features are rotation invariant (distance to
the centroid); positions are the rotated coordinates.

Run::

    python examples/custom_gnn.py              # 300 steps, about a minute on a CPU
    python examples/custom_gnn.py --steps 20   # a quick smoke run
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import EdgeConv, global_max_pool, global_mean_pool

from pointset import PointSet
from pointset.nn import ClusterAttention, ContextCluster
from pointset.ops import knn_graph

CLASSES = ("sphere", "cube", "cylinder", "cone", "torus")


# ----------------------------------------------------------------------------- data
def _surface(label: int, n: int, g: torch.Generator) -> Tensor:
    """``n`` points ``[n, 3]`` uniformly on the surface of a shape of class ``label``."""
    u, v = torch.rand(n, generator=g), torch.rand(n, generator=g)
    if label == 0:  # sphere
        p = torch.randn(n, 3, generator=g)
        return p / p.norm(dim=1, keepdim=True)
    if label == 1:  # cube: a random face (axis, side), a random point on it
        face = torch.randint(0, 6, (n,), generator=g)
        side = torch.where(face % 2 == 0, 1.0, -1.0)
        coords = torch.stack([2 * u - 1, 2 * v - 1, side], 1)
        axes = (torch.arange(3) + (face // 2).view(-1, 1)) % 3
        return torch.empty(n, 3).scatter_(1, axes, coords)
    if label == 2:  # cylinder, radius 0.6, height 2 (side only)
        t = 2 * math.pi * u
        return torch.stack([0.6 * t.cos(), 0.6 * t.sin(), 2 * v - 1], 1)
    if label == 3:  # cone, base radius 1, height 2 (side only, uniform in area)
        t, h = 2 * math.pi * u, v.sqrt()
        return torch.stack([h * t.cos(), h * t.sin(), 1 - 2 * h], 1)
    # torus, radii 1 and 0.35 (rejection-free: tube angle uniform, a fair approximation)
    a, b = 2 * math.pi * u, 2 * math.pi * v
    r = 1 + 0.35 * b.cos()
    return torch.stack([r * a.cos(), r * a.sin(), 0.35 * b.sin()], 1)


def _rotation(g: torch.Generator) -> Tensor:
    """A random 3-D rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def make_shapes(count: int, seed: int) -> list[PointSet]:
    """``count`` labelled clouds of 64-128 points: ``x [n, 1]`` (distance to the centroid),
    ``pos [n, 3]`` (rotated, scaled, noisy surface points), ``y`` (class)."""
    g = torch.Generator().manual_seed(seed)
    clouds = []
    for i in range(count):
        label = i % len(CLASSES)
        n = int(torch.randint(64, 129, (1,), generator=g))
        pos = _surface(label, n, g) * (0.8 + 0.4 * torch.rand(3, generator=g))
        pos = pos @ _rotation(g).T + 0.02 * torch.randn(n, 3, generator=g)
        pos = pos - pos.mean(0)
        pos = pos / pos.norm(dim=1).max()
        x = pos.norm(dim=1, keepdim=True)
        clouds.append(PointSet(x=x, pos=pos, y=torch.tensor([label])))
    return clouds


# ----------------------------------------------------------------------------- model
class MixedGNN(nn.Module):
    """EdgeConv (PyG) + ContextCluster + ClusterAttention (pointset), residual, pooled."""

    def __init__(self, in_channels: int = 1, width: int = 32, classes: int = len(CLASSES)):
        super().__init__()
        self.embed = nn.Linear(in_channels + 3, width)
        edge_mlp = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())
        self.edge = EdgeConv(edge_mlp, aggr="max")
        self.cluster = ContextCluster(
            width, heads=2, head_dim=16, num_centers=8, center_k=16, candidates=3
        )
        self.attention = ClusterAttention(width, heads=2, cluster_size=8, nbhd_size=32, pos_dim=3)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.head = nn.Sequential(nn.Linear(2 * width, 64), nn.GELU(), nn.Linear(64, classes))

    def forward(self, x: Tensor, pos: Tensor, batch: Tensor) -> Tensor:
        h = self.embed(torch.cat([x, pos], dim=1))
        edge_index = knn_graph(pos, k=10, batch=batch)  # [2, N * 10], pointset's operator
        h = h + self.edge(self.norms[0](h), edge_index)
        h = h + self.cluster(self.norms[1](h), pos, batch)
        h = h + self.attention(self.norms[2](h), pos, batch)
        pooled = torch.cat([global_max_pool(h, batch), global_mean_pool(h, batch)], dim=1)
        return self.head(pooled)


@torch.no_grad()
def accuracy(model: nn.Module, clouds: list[PointSet], batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for data in DataLoader(clouds, batch_size=batch_size):
        correct += int((model(data.x, data.pos, data.batch).argmax(1) == data.y).sum())
    model.train()
    return correct / len(clouds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train", type=int, default=500, help="training clouds")
    parser.add_argument("--test", type=int, default=200, help="held-out clouds")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the tensors are small: 1 is best)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    train, test = make_shapes(args.train, args.seed), make_shapes(args.test, args.seed + 1)
    model = MixedGNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps)
    print(
        f"{len(train)} training / {len(test)} held-out clouds of 64-128 points, "
        f"{len(CLASSES)} classes (chance {1 / len(CLASSES):.0%}); "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )

    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    step, window = 0, []
    every = max(1, args.steps // 10)
    while step < args.steps:
        for data in loader:
            loss = F.cross_entropy(model(data.x, data.pos, data.batch), data.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            window.append(loss.item())
            step += 1
            if step % every == 0 or step == args.steps:
                print(f"step {step:4d}  loss {sum(window) / len(window):.3f}")
                window = []
            if step == args.steps:
                break

    result = {"train_acc": accuracy(model, train), "test_acc": accuracy(model, test)}
    result["seconds"] = time.perf_counter() - start
    print(
        f"train accuracy {result['train_acc']:.1%}, held-out accuracy {result['test_acc']:.1%} "
        f"({result['seconds']:.0f} s)"
    )
    return result


if __name__ == "__main__":
    main()
