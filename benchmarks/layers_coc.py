"""Benchmark the Context Cluster layer: dense grid path vs point path vs a naive region loop.

All variants compute the same layer on the same feature map (default: B=8, C=64, 56x56,
the first stage of CoC-Small: 4 heads x 32 channels, 8x8 regions of 7x7 points, 2x2
centers per region, overlapping pooling windows):

- ``grid``: the dense path (``layer(x)`` on ``[B, C, H, W]``).
- ``points+grid plan``: the message-passing path on the packed points, given the plan that
  reproduces the grid path (plan built once, outside the timing, as a stage would reuse it).
- ``points+FPS plan``: the general path, FPS centers and kNN pooling / candidates on the
  2-D pixel positions (same number of centers per image); the plan (FPS + 2 kNN) is built
  inside the timing.
- ``naive region loop``: the same math written as a Python loop over (image, head, region),
  dense inside each region.

Each variant runs in a fresh process with ``--threads`` intra-op threads (default 1, which
gives stable numbers on a busy machine). Time is the median of ``--repeats`` forward+backward
passes after one warm-up. Peak memory is the growth of the process's peak resident set
size (``resource.getrusage(...).ru_maxrss``) from just before the first pass to the end:
CPU-only, no allocator hooks needed; it includes allocator overhead and is a coarse upper
bound of the extra memory the pass needs (Linux reports it in KiB).

Usage::

    python benchmarks/layers_coc.py [--batch 8] [--channels 64] [--size 56] [--repeats 3]
                                    [--threads 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

VARIANTS = ("grid", "points+grid plan", "points+FPS plan", "naive region loop")


def _naive_region_loop(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's math as a Python loop over images, heads and fold regions."""
    b_, _, h_, w_ = x.shape
    e, d = layer.heads, layer.head_dim
    f, v = layer.f(x), layer.v(x)
    fw, fh = layer.fold_w, layer.fold_h
    rh, rw = h_ // fw, w_ // fh
    rows = []
    for b in range(b_):
        heads = []
        for head in range(e):
            ch = slice(head * d, (head + 1) * d)
            grid_rows = []
            for i in range(fw):
                cols = []
                for j in range(fh):
                    fr = f[b, ch, i * rh : (i + 1) * rh, j * rw : (j + 1) * rw]
                    vr = v[b, ch, i * rh : (i + 1) * rh, j * rw : (j + 1) * rw]
                    size = (layer.proposal_w, layer.proposal_h)
                    centers = F.adaptive_avg_pool2d(fr, size).flatten(1).T  # [M, d]
                    vcenters = F.adaptive_avg_pool2d(vr, size).flatten(1).T
                    points, values = fr.flatten(1).T, vr.flatten(1).T  # [n, d]
                    cos = F.normalize(centers, dim=-1) @ F.normalize(points, dim=-1).T
                    sim = torch.sigmoid(layer.sim_beta + layer.sim_alpha * cos)  # [M, n]
                    mask = F.one_hot(sim.argmax(0), sim.size(0)).T.to(sim.dtype)
                    sim = sim * mask
                    out = (sim @ values + vcenters) / (sim.sum(1, keepdim=True) + 1.0)
                    cols.append((sim.T @ out).T.reshape(d, rh, rw))
                grid_rows.append(torch.cat(cols, dim=2))
            heads.append(torch.cat(grid_rows, dim=1))
        rows.append(torch.cat(heads, dim=0))
    return layer.proj(torch.stack(rows))


def _run(variant: str, args: argparse.Namespace, queue) -> None:
    try:
        queue.put(_measure(variant, args))
    except Exception as exc:  # report in the parent instead of hanging it
        queue.put(f"{type(exc).__name__}: {exc}")


def _measure(variant: str, args: argparse.Namespace) -> tuple[float, float]:
    from pointset.nn._regions import grid_plan
    from pointset.nn.context_cluster import ContextCluster

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, c, s = args.batch, args.channels, args.size
    layer = ContextCluster(
        c, heads=4, head_dim=32, proposal_w=2, proposal_h=2, fold_w=8, fold_h=8, center_k=9
    )
    image = torch.randn(b, c, s, s)
    packed = image.permute(0, 2, 3, 1).reshape(-1, c).contiguous()
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).float().repeat(b, 1)
    pos = pos + 1e-3 * torch.rand_like(pos)  # break exact distance ties of the pixel grid
    batch = torch.arange(b).repeat_interleave(s * s)
    plan = grid_plan(b, s, s, 2, 2, 8, 8)

    def step():
        if variant == "grid":
            x = image.clone().requires_grad_()
            out = layer(x)
        elif variant == "points+grid plan":
            x = packed.clone().requires_grad_()
            out = layer(x, plan=plan)
        elif variant == "points+FPS plan":
            x = packed.clone().requires_grad_()
            out = layer(x, pos, batch)
        else:
            x = image.clone().requires_grad_()
            out = _naive_region_loop(layer, x)
        out.square().mean().backward()
        layer.zero_grad(set_to_none=True)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return statistics.median(times), peak / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()
    if args.size % 8:
        parser.error(f"--size must be divisible by the 8x8 regions, got {args.size}")

    ctx = mp.get_context("spawn")
    results = {}
    for variant in args.variants:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(variant, args, queue))
        proc.start()
        results[variant] = queue.get()
        proc.join()
        if isinstance(results[variant], str):
            raise SystemExit(f"{variant} failed: {results[variant]}")

    print(
        f"ContextCluster forward+backward, B={args.batch}, C={args.channels}, "
        f"{args.size}x{args.size}, heads 4x32, regions 8x8, centers 2x2; torch "
        f"{torch.__version__}, {args.threads} thread(s), {platform.processor() or 'cpu'}"
    )
    print()
    print("| variant | time (ms) | peak RSS growth (MiB) |")
    print("| --- | ---: | ---: |")
    for variant, (seconds, mib) in results.items():
        print(f"| {variant} | {seconds * 1e3:.1f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
