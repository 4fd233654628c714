"""Benchmark AFF cluster attention: chunked gather kernels vs a materialised gather.

One cloud of tokens with ``--channels`` channels (default 64, 4 heads), cluster size 8 and
neighbourhood 48 (6 nearest clusters), at each ``--points`` size (default: 3,136 tokens =
the 56x56 first stage of AFF at 224x224, on the lattice; 50,000 uniformly random 2-D points):

- ``chunked``: :meth:`ClusterAttention.forward_dense`, whose neighbour products gather keys
  and values a chunk of queries at a time, forward and backward.
- ``materialised``: the same math with keys and values gathered for all queries at once
  (``[N, 48, C]`` tensors that autograd keeps for the backward pass).

The neighbourhood (balanced clustering + nearest cluster means) is built once outside the
timed pass, as a stage reuses it for all its blocks; its own time is reported separately.
Each (size, variant) runs in a fresh process. Time is the median of ``--repeats``
forward+backward passes after one warm-up. Peak memory is the growth of the process's peak
resident set size (``resource.getrusage(...).ru_maxrss``) from just before the first pass
to the end (CPU; on CUDA, ``torch.cuda.max_memory_allocated``).

Usage::

    python benchmarks/layers_aff.py [--points 3136 50000] [--channels 64] [--repeats 3]
        [--device cpu] [--threads 0]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch

VARIANTS = ("chunked", "materialised")


def _materialised(layer, x, pos, nbhd):
    """ClusterAttention's math with whole gathered key/value tensors (autograd keeps them)."""
    from pointset.nn._aff_geometry import gather_tokens, neighbour_offsets, rel_pos_features

    b, n, c = x.shape
    q, k, v = layer._qkv(x)
    with torch.no_grad():
        feats = rel_pos_features(neighbour_offsets(pos, nbhd))
    bias = layer.pos_embed(feats).permute(0, 1, 3, 2)
    kg, vg = gather_tokens(k, nbhd.index), gather_tokens(v, nbhd.index)  # [B, N, M, H, C/H]
    logits = torch.einsum("bnhc,bnmhc->bnhm", q, kg) + bias
    if nbhd.mask is not None:
        logits = logits - 100.0 * (~nbhd.mask).unsqueeze(2).to(logits.dtype)
    blank = (q * layer.blank_k.view(layer.heads, -1)).sum(-1, keepdim=True)
    attn = torch.softmax(torch.cat([logits, blank], -1), -1)
    out = torch.einsum("bnhm,bnmhc->bnhc", attn[..., :-1], vg)
    out = out + attn[..., -1:] * layer.blank_v.view(layer.heads, -1)
    return layer.proj(out.reshape(b, n, c))


def _positions(points: int, device: torch.device) -> tuple[torch.Tensor, tuple | None]:
    side = math.isqrt(points)
    if side * side == points:
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        pos = torch.stack([cols, rows], -1).view(1, points, 2).float()
        return pos.to(device), (side, side)
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, points, 2, generator=g) * 224).to(device), None


def _run(points: int, variant: str, args: argparse.Namespace, queue) -> None:
    from pointset.nn.cluster_attention import ClusterAttention, cluster_neighbourhood

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = ClusterAttention(args.channels, heads=args.heads).to(device)
    pos, extent = _positions(points, device)
    x0 = torch.randn(1, points, args.channels, device=device)

    start = time.perf_counter()
    nbhd = cluster_neighbourhood(pos, 8, 48, extent=extent)
    nbhd_time = time.perf_counter() - start

    def step():
        x = x0.clone().requires_grad_()
        if variant == "chunked":
            out = layer.forward_dense(x, pos, nbhd)
        else:
            out = _materialised(layer, x, pos, nbhd)
        out.square().mean().backward()
        layer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
    queue.put((nbhd_time, statistics.median(times), peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[3136, 50000])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    rows = []
    for points in args.points:
        for variant in args.variants:
            queue = ctx.Queue()
            proc = ctx.Process(target=_run, args=(points, variant, args, queue))
            proc.start()
            rows.append((points, variant, *queue.get()))
            proc.join()

    memory = "peak CUDA memory" if args.device.startswith("cuda") else "peak RSS growth"
    print(
        f"ClusterAttention forward+backward, C={args.channels}, {args.heads} heads, cluster 8, "
        f"neighbourhood 48; torch {torch.__version__}, {args.device}, "
        f"{args.threads or torch.get_num_threads()} threads, {platform.processor() or 'cpu'}"
    )
    print()
    print(f"| points | variant | neighbourhood (ms) | fwd+bwd (ms) | {memory} (MiB) |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for points, variant, nbhd_time, seconds, mib in rows:
        print(
            f"| {points:,} | {variant} | {nbhd_time * 1e3:.0f} | {seconds * 1e3:.0f} | {mib:.0f} |"
        )


if __name__ == "__main__":
    main()
