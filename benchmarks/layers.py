"""Layer benchmarks: forward+backward time and peak memory of pointset's clustering layers.

Two groups of cases, each computing one layer on one input in several ways:

``coc`` -- ``ContextCluster`` on a ``B x C x S x S`` feature map (default B=8, C=64,
56x56: the first stage of CoC-Small, 4 heads x 32 channels, 8x8 fold regions of 7x7 points,
2x2 centers per region with overlapping pooling windows):

- ``grid``: the dense path, ``layer.forward_dense(x)`` on ``[B, C, H, W]``.
- ``points + grid plan``: the message-passing path on the packed points with the plan that
  reproduces the grid path (built once outside the timing, as a stage reuses it).
- ``points + FPS plan``: the general path on the 2-D pixel positions, FPS centers (same
  count per image) and kNN pooling / candidates; the plan (FPS + 2 kNN) is built inside
  the timing.
- ``naive region loop``: the same math as a Python loop over (image, head, region), dense
  inside each region.

``aff`` -- ``ClusterAttention`` (C=64, 4 heads, clusters of 8, neighbourhood 48) on one
cloud of ``--points`` tokens (default 3,136 = the 56x56 lattice of AFF's first stage at
224x224, and 50,000 uniformly random 2-D points):

- ``chunked``: ``forward_dense``, whose neighbour products gather keys and values a chunk of
  queries at a time, forward and backward.
- ``materialised``: the same math with keys and values gathered for all queries at once
  (``[N, 48, C]`` tensors that autograd keeps for the backward pass).

The neighbourhood (balanced clustering + nearest cluster means) is built once outside the
timing, as a stage reuses it for all its blocks; its own time is a separate column.

``kmax`` -- ``KMaXDecoderLayer`` at the official widths (2048-channel pixels, 256-channel
centers, 128 clusters, 134 classes, 8 heads) on the stride-32 map of a 640x640 image
(20x20), ``--kmax-batch`` images (default 2), train mode (BatchNorm batch statistics):

- ``dense``: the official call, ``layer.forward_dense(pixel [B, 2048, 20, 20], query [B, 256, 128])``.
- ``packed + 5x5 window``: the same pixels as a packed point set ``[B * 400, 2048]`` with
  their (row, col) positions; the depthwise 5x5 window is built from the positions inside
  the timing (same numbers as ``dense``).
- ``packed, no window``: the packed call without positions (the depthwise conv reads only
  the center tap, as for 3-D clouds).

The kmax times come from one process that interleaves the variants round by round
(``--repeats`` rounds after a warm-up round) and reports the median and the min-max spread;
its memory column comes from separate fresh processes as for the other groups.
``jbu`` -- FeatUp's joint bilateral upsampler at FeatUp's use: 384 channels (ViT-S/DINO
features), a 14x14 source and a 224x224 RGB guidance (``--jbu-size`` changes the output
side; the source is 1/16 of it):

- ``step``: one ``JointBilateralUpsample`` 14x14 -> 224x224 (the cost of a step depends on
  its output size only, so this is also the last step of the stack).
- ``stack``: ``JBUStack`` 14 -> 28 -> 56 -> 112 -> 224 + the 1x1 fixup.
- variants ``tap by tap`` (pointset's grid path: 49 shifted multiply-adds and their own
  backward) and ``naive unfold`` (the same math with ``F.unfold`` of the reflect-padded
  features and range keys, ``[B, C*49, H, W]``, as a straightforward port would write it).
- ``points`` (step and stack): the point path on an RGBD frame rendered by
  ``pointset.datasets.render`` (demo scene, ``--jbu-frame`` 500x400 = 200,000 points, all
  kept), 3-D positions in metres; the source is the frame's points at the centres of its
  16x16 pixel cells (31x25 = 775 points); guidance = colours. Windows, interpolation
  weights and the pyramid are built inside the timing.

Method. Every (case, variant) is measured in two fresh ``spawn`` processes with
``--threads`` intra-op threads, one for time and one for memory:

- time: the median wall time of ``--repeats`` forward+backward passes (loss
  ``mean(out^2)``) after one warm-up pass, with the default allocator settings.
- memory: one measured pass after the warm-up, measured by the kernel. After the inputs,
  the layer, any precomputed structure and the warm-up pass, the process returns its free
  heap pages (``malloc_trim``), resets its resident-set high-water mark (writing ``5`` to ``/proc/self/clear_refs``) and reads its current RSS;
  the peak is ``VmHWM`` (``/proc/self/status``) after the passes minus that RSS, i.e. the
  extra memory the passes needed, allocator overhead included. This process runs with
  ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc returns freed large buffers to the system
  at once and the RSS follows the live tensors (the page faults this costs are why time is
  measured separately). Where ``clear_refs`` is not writable the growth of ``ru_maxrss`` is
  reported instead (a lower bound) and the table says so.

Usage (from the repository root)::

    python benchmarks/layers.py                          # both groups, 1 thread
    python benchmarks/layers.py --only aff --points 3136 --threads 2
    python benchmarks/layers.py --only jbu
    python benchmarks/layers.py --output benchmarks/results/layers.md
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

COC_VARIANTS = ("grid", "points + grid plan", "points + FPS plan", "naive region loop")
AFF_VARIANTS = ("chunked", "materialised")
KMAX_VARIANTS = ("dense", "packed + 5x5 window", "packed, no window")
JBU_CASES = (
    ("step", "tap by tap"),
    ("step", "naive unfold"),
    ("stack", "tap by tap"),
    ("stack", "naive unfold"),
    ("step", "points"),
    ("stack", "points"),
)


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Extra resident memory (MiB) used between :meth:`start` and :meth:`stop`."""

    def start(self) -> None:
        gc.collect()
        # hand free heap pages back, so that reusing them shows in the RSS again
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.exact = _status_kib("VmHWM") is not None
        except OSError:
            pass
        self.base = _status_kib("VmRSS") if self.exact else self._maxrss()

    @staticmethod
    def _maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    def stop(self) -> float:
        peak = _status_kib("VmHWM") if self.exact else self._maxrss()
        return max(0, peak - self.base) / 1024.0


def _timed(step, repeats: int) -> tuple[float, float, bool]:
    """Median seconds of ``repeats`` calls after a warm-up, peak extra MiB, exactness."""
    step()  # warm-up: lazy imports, compiled kernels and caches stay out of the numbers
    meter = PeakMemory()
    meter.start()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), meter.stop(), meter.exact


# ----------------------------------------------------------------------------- CoC cases
def naive_region_loop(layer, x: torch.Tensor) -> torch.Tensor:
    """ContextCluster's grid math as a Python loop over images, heads and fold regions."""
    b_, _, h_, w_ = x.shape
    e, d = layer.heads, layer.head_dim
    f, v = layer.f(x), layer.v(x)
    fw, fh = layer.fold_w, layer.fold_h
    rh, rw = h_ // fw, w_ // fh
    size = (layer.proposal_w, layer.proposal_h)
    images = []
    for b in range(b_):
        heads = []
        for head in range(e):
            ch = slice(head * d, (head + 1) * d)
            rows = []
            for i in range(fw):
                cols = []
                for j in range(fh):
                    fr = f[b, ch, i * rh : (i + 1) * rh, j * rw : (j + 1) * rw]
                    vr = v[b, ch, i * rh : (i + 1) * rh, j * rw : (j + 1) * rw]
                    centers = F.adaptive_avg_pool2d(fr, size).flatten(1).T  # [M, d]
                    vcenters = F.adaptive_avg_pool2d(vr, size).flatten(1).T
                    points, values = fr.flatten(1).T, vr.flatten(1).T  # [n, d]
                    cos = F.normalize(centers, dim=-1) @ F.normalize(points, dim=-1).T
                    sim = torch.sigmoid(layer.sim_beta + layer.sim_alpha * cos)  # [M, n]
                    sim = sim * F.one_hot(sim.argmax(0), sim.size(0)).T.to(sim.dtype)
                    out = (sim @ values + vcenters) / (sim.sum(1, keepdim=True) + 1.0)
                    cols.append((sim.T @ out).T.reshape(d, rh, rw))
                rows.append(torch.cat(cols, dim=2))
            heads.append(torch.cat(rows, dim=1))
        images.append(torch.cat(heads, dim=0))
    return layer.proj(torch.stack(images))


def measure_coc(variant: str, args: argparse.Namespace) -> dict:
    from pointset.nn import ContextCluster, grid_plan

    torch.manual_seed(0)
    b, c, s = args.batch, args.channels, args.size
    layer = ContextCluster(
        c, heads=4, head_dim=32, proposal_w=2, proposal_h=2, fold_w=8, fold_h=8, center_k=9
    )
    image = torch.randn(b, c, s, s)
    packed = image.permute(0, 2, 3, 1).reshape(-1, c).contiguous()
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1).float().repeat(b, 1)
    pos = pos + 1e-3 * torch.rand_like(pos)  # break the exact distance ties of the pixel grid
    batch = torch.arange(b).repeat_interleave(s * s)
    plan = grid_plan(b, s, s, 2, 2, 8, 8)

    def step():
        if variant == "grid":
            x = image.clone().requires_grad_()
            out = layer.forward_dense(x)
        elif variant == "points + grid plan":
            x = packed.clone().requires_grad_()
            out = layer(x, plan=plan)
        elif variant == "points + FPS plan":
            x = packed.clone().requires_grad_()
            out = layer(x, pos, batch)
        else:
            x = image.clone().requires_grad_()
            out = naive_region_loop(layer, x)
        out.square().mean().backward()
        layer.zero_grad(set_to_none=True)

    seconds, mib, exact = _timed(step, args.repeats)
    return {"variant": variant, "seconds": seconds, "mib": mib, "exact": exact}


# ----------------------------------------------------------------------------- AFF cases
def materialised_attention(layer, x, pos, nbhd):
    """ClusterAttention's math with whole gathered key/value tensors (autograd keeps them)."""
    from pointset.nn._aff_geometry import neighbour_offsets, rel_pos_features
    from pointset.ops.cluster_neighbourhood import gather_tokens

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


def _aff_positions(points: int) -> tuple[torch.Tensor, tuple | None, str]:
    side = math.isqrt(points)
    if side * side == points:
        rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        pos = torch.stack([cols, rows], -1).view(1, points, 2).float()
        return pos, (side, side), f"{side}x{side} lattice"
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, points, 2, generator=g) * 224, None, "uniform in 224x224"


def measure_aff(points: int, variant: str, args: argparse.Namespace) -> dict:
    from pointset.nn import ClusterAttention
    from pointset.nn.cluster_attention import cluster_neighbourhood

    torch.manual_seed(0)
    layer = ClusterAttention(args.aff_channels, heads=args.heads)
    pos, extent, layout = _aff_positions(points)
    x0 = torch.randn(1, points, args.aff_channels)
    start = time.perf_counter()
    nbhd = cluster_neighbourhood(pos, 8, 48, extent=extent)
    nbhd_seconds = time.perf_counter() - start

    def step():
        x = x0.clone().requires_grad_()
        if variant == "chunked":
            out = layer.forward_dense(x, pos, nbhd)
        else:
            out = materialised_attention(layer, x, pos, nbhd)
        out.square().mean().backward()
        layer.zero_grad(set_to_none=True)

    seconds, mib, exact = _timed(step, args.repeats)
    return {
        "points": points,
        "layout": layout,
        "variant": variant,
        "nbhd_seconds": nbhd_seconds,
        "seconds": seconds,
        "mib": mib,
        "exact": exact,
    }


# ----------------------------------------------------------------------------- kMaX cases
def kmax_steps(args: argparse.Namespace) -> dict:
    """One forward+backward closure per kMaX variant, sharing the layer and the inputs."""
    from pointset.data import grid_positions
    from pointset.nn import KMaXDecoderLayer

    torch.manual_seed(0)
    b, side, clusters = args.kmax_batch, 20, 128
    layer = KMaXDecoderLayer(134, 2048, 256, 128, 8, 2, 1, 2, drop_path_prob=0.0).train()
    pixel = torch.randn(b, 2048, side, side)
    query = torch.randn(b, 256, clusters)
    packed = pixel.flatten(2).transpose(1, 2).reshape(-1, 2048).contiguous()
    pos = grid_positions(side, side).repeat(b, 1)
    batch = torch.arange(b).repeat_interleave(side * side)

    def make(variant):
        def step():
            q = query.clone().requires_grad_()
            if variant == "dense":
                x = pixel.clone().requires_grad_()
                out, pred = layer.forward_dense(x, q)
            else:
                x = packed.clone().requires_grad_()
                window = variant == "packed + 5x5 window"
                out, pred = layer(x, pos if window else None, batch, query_feature=q)
            loss = out.square().mean() + pred["mask_logits"].square().mean()
            (loss + pred["class_logits"].square().mean()).backward()
            layer.zero_grad(set_to_none=True)

        return step

    return {v: make(v) for v in KMAX_VARIANTS}


def measure_kmax_times(args: argparse.Namespace) -> dict:
    """Interleaved rounds over the variants: median and spread (seconds) per variant."""
    steps = kmax_steps(args)
    for step in steps.values():
        step()  # warm-up round
    times = {v: [] for v in steps}
    for _ in range(args.repeats):
        for v, step in steps.items():
            start = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - start)
    return {"times": times}


def measure_kmax_memory(variant: str, args: argparse.Namespace) -> dict:
    step = kmax_steps(args)[variant]
    _, mib, exact = _timed(step, 1)
    return {"variant": variant, "mib": mib, "exact": exact}


# ----------------------------------------------------------------------------- JBU cases
def naive_jbu_step(up, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """FeatUp's JBU step written with full unfolds (``[B, C*49, H, W]`` features)."""
    b, _, hh, ww = guidance.shape
    r, d = up.radius, up.diameter
    keys = up.range_proj(guidance)
    win = F.unfold(F.pad(keys, [r] * 4, mode="reflect"), d).view(b, -1, d * d, hh, ww)
    temp = up.range_temp.exp().clamp(1e-4, 1e4)
    rng = torch.softmax(temp * (win * keys.unsqueeze(2)).sum(1), 1)
    t = torch.linspace(-1, 1, d, dtype=source.dtype)
    spatial = torch.exp(-(t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) / (2 * up.sigma_spatial**2))
    comb = rng * spatial.view(1, -1, 1, 1)
    comb = comb / comb.sum(1, keepdim=True).clamp(min=1e-7)
    kernel = comb + 0.1 * up.fixup_proj(torch.cat([comb, guidance], 1))
    hr = F.interpolate(source, (hh, ww), mode="bicubic", align_corners=False)
    feats = F.unfold(F.pad(hr, [r] * 4, mode="reflect"), d).view(b, -1, d * d, hh, ww)
    return (feats * kernel.unsqueeze(1)).sum(2)


def naive_jbu_stack(stack, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    y = source
    for up in stack.steps:
        h, w = y.shape[-2:]
        y = naive_jbu_step(up, y, F.adaptive_avg_pool2d(guidance, (2 * h, 2 * w)))
    return y + 0.1 * stack.fixup_proj(y)


def rgbd_frame(width: int, height: int, cell: int = 16):
    """A rendered RGBD frame as points (all pixels kept) and its cell-centre source points."""
    from pointset.data import from_rgbd
    from pointset.datasets.render import demo_scene, render_rgbd

    color, depth, intr = render_rgbd(demo_scene(), width=width, height=height)
    frame = from_rgbd(color, depth, intr, depth_trunc=math.inf)
    centre = (frame.pixel % cell == cell // 2).all(1)
    return frame, centre


def measure_jbu(kind: str, variant: str, args: argparse.Namespace) -> dict:
    from pointset.nn import JBUStack, JointBilateralUpsample

    torch.manual_seed(0)
    c, out = args.jbu_channels, args.jbu_size
    layer = JBUStack(c) if kind == "stack" else JointBilateralUpsample(3, c)
    layer.eval()  # FeatUp's inference use: no dropout
    if variant == "points":
        frame, centre = rgbd_frame(*args.jbu_frame)
        pos_out, guid0 = frame.pos, frame.x
        pos = pos_out[centre]
        x0 = torch.randn(pos.size(0), c)
        size = f"{pos.size(0):,} -> {pos_out.size(0):,} points"
    else:
        x0, guid0 = torch.randn(1, c, out // 16, out // 16), torch.randn(1, 3, out, out)
        size = f"{out // 16}x{out // 16} -> {out}x{out}"

    def step():
        x = x0.clone().requires_grad_()
        guidance = guid0.clone().requires_grad_()
        if variant == "points":
            y = layer(x, pos, guidance=guidance, pos_out=pos_out)
        elif variant == "tap by tap":
            y = layer.forward_dense(x, guidance)
        elif kind == "stack":
            y = naive_jbu_stack(layer, x, guidance)
        else:
            y = naive_jbu_step(layer, x, guidance)
        y.square().mean().backward()
        layer.zero_grad(set_to_none=True)

    runs: list[float] = []

    def recorded():
        start = time.perf_counter()
        step()
        runs.append(time.perf_counter() - start)

    seconds, mib, exact = _timed(recorded, args.repeats)
    spread = (min(runs[1:]), max(runs[1:])) if len(runs) > 1 else (seconds, seconds)
    return {"kind": kind, "variant": variant, "size": size, "seconds": seconds, "mib": mib,
            "exact": exact, "spread": spread}  # fmt: skip


# ----------------------------------------------------------------------------- driver
def _measure(kind: str, params: tuple, args: argparse.Namespace) -> dict:
    if kind == "coc":
        return measure_coc(*params, args)
    if kind == "aff":
        return measure_aff(*params, args)
    if kind == "jbu":
        return measure_jbu(*params, args)
    if kind == "kmax-times":
        return measure_kmax_times(args)
    return measure_kmax_memory(*params, args)


def _child(kind: str, params: tuple, args: argparse.Namespace, queue) -> None:
    try:
        torch.set_num_threads(args.threads)
        result = _measure(kind, params, args)
        result["threads"] = torch.get_num_threads()
        queue.put(result)
    except Exception as exc:  # report in the parent instead of hanging it
        queue.put(f"{type(exc).__name__}: {exc}")


def _spawn(kind: str, params: tuple, args: argparse.Namespace, env: dict) -> dict:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # read by glibc when the child starts
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(kind, params, args, queue))
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result = queue.get()
    proc.join()
    if isinstance(result, str):
        raise SystemExit(f"{kind} {params} failed: {result}")
    return result


def run_isolated(kind: str, params: tuple, args: argparse.Namespace) -> dict:
    """Time in one fresh process, peak memory in another (see the module docstring)."""
    timed = _spawn(kind, params, args, {})
    memory = _spawn(
        kind, params, argparse.Namespace(**{**vars(args), "repeats": 1}),
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
    )  # fmt: skip
    return {**timed, "mib": memory["mib"], "exact": memory["exact"]}


def machine_info() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("coc", "aff", "kmax", "jbu"), help="run one group only")
    parser.add_argument("--batch", type=int, default=8, help="coc: images")
    parser.add_argument("--channels", type=int, default=64, help="coc: channels")
    parser.add_argument("--size", type=int, default=56, help="coc: map side (multiple of 8)")
    parser.add_argument("--points", type=int, nargs="+", default=[3136, 50000], help="aff")
    parser.add_argument("--aff-channels", type=int, default=64, help="aff: channels")
    parser.add_argument("--heads", type=int, default=4, help="aff: heads")
    parser.add_argument("--kmax-batch", type=int, default=2, help="kmax: images")
    parser.add_argument("--jbu-channels", type=int, default=384, help="jbu: channels")
    parser.add_argument("--jbu-size", type=int, default=224, help="jbu: output side (16x)")
    parser.add_argument(
        "--jbu-frame", type=int, nargs=2, default=[500, 400], help="jbu: RGBD width height"
    )
    parser.add_argument(
        "--jbu-cases", nargs="+", help="jbu: cases as KIND:VARIANT, e.g. 'step:tap by tap'"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if args.size % 8:
        parser.error(f"--size must be divisible by the 8x8 regions, got {args.size}")
    if args.jbu_size % 16:
        parser.error(
            f"--jbu-size must be divisible by 16 (the stack's factor), got {args.jbu_size}"
        )

    load_before = os.getloadavg()
    only = args.only
    coc = [run_isolated("coc", (v,), args) for v in COC_VARIANTS] if only in (None, "coc") else []
    aff = []
    if only in (None, "aff"):
        aff = [run_isolated("aff", (p, v), args) for p in args.points for v in AFF_VARIANTS]
    kmax = []
    if only in (None, "kmax"):
        times = _spawn("kmax-times", (), args, {})
        one = argparse.Namespace(**{**vars(args), "repeats": 1})
        for v in KMAX_VARIANTS:
            memory = _spawn("kmax-memory", (v,), one, {"MALLOC_MMAP_THRESHOLD_": "131072"})
            runs = times["times"][v]
            kmax.append({**memory, "seconds": statistics.median(runs), "low": min(runs),
                         "high": max(runs), "threads": times["threads"]})  # fmt: skip

    jbu = []
    if only in (None, "jbu"):
        cases = JBU_CASES
        if args.jbu_cases:
            cases = [tuple(c.split(":", 1)) for c in args.jbu_cases]
        jbu = [run_isolated("jbu", case, args) for case in cases]

    results = coc + aff + kmax + jbu
    exact = all(r["exact"] for r in results)
    memory = "peak extra RSS (MiB)" if exact else "ru_maxrss growth, lower bound (MiB)"
    command = "python benchmarks/layers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Layer benchmarks",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {machine_info()}",
        "- load average (1/5/15 min) before / after: "
        + " / ".join(", ".join(f"{v:.1f}" for v in la) for la in (load_before, os.getloadavg())),
        f"- torch {torch.__version__}, {results[0]['threads']} intra-op thread(s), CPU, float32",
        f"- time: median of {args.repeats} forward+backward passes after one warm-up; memory: "
        "extra resident memory of one pass after the warm-up, in a separate fresh process "
        "(see the docstring of benchmarks/layers.py)",
    ]
    if coc:
        lines += [
            "",
            f"## ContextCluster: B={args.batch}, C={args.channels}, {args.size}x{args.size}, "
            "4 heads x 32, 8x8 regions, 2x2 centers",
            "",
            f"| variant | fwd+bwd (ms) | {memory} |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {r['variant']} | {r['seconds'] * 1e3:.1f} | {r['mib']:.0f} |" for r in coc]
    if aff:
        lines += [
            "",
            f"## ClusterAttention: C={args.aff_channels}, {args.heads} heads, cluster 8, "
            "neighbourhood 48",
            "",
            f"| points | variant | neighbourhood (ms) | fwd+bwd (ms) | {memory} |",
            "| ---: | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['points']:,} ({r['layout']}) | {r['variant']} | {r['nbhd_seconds'] * 1e3:.0f} "
            f"| {r['seconds'] * 1e3:.0f} | {r['mib']:.0f} |"
            for r in aff
        ]
    if kmax:
        lines += [
            "",
            f"## KMaXDecoderLayer: official widths, B={args.kmax_batch}, 2048 x 20x20 pixels "
            "(stride 32 of 640x640), 128 clusters, train mode",
            "",
            f"| variant | fwd+bwd (ms), median of {args.repeats} interleaved | spread (ms) | {memory} |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['variant']} | {r['seconds'] * 1e3:.1f} | {r['low'] * 1e3:.1f}-{r['high'] * 1e3:.1f} "
            f"| {r['mib']:.0f} |"
            for r in kmax
        ]
    if jbu:
        lines += [
            "",
            f"## FeatUp JBU: C={args.jbu_channels}, eval mode, forward+backward",
            "",
            f"| module | variant | size | fwd+bwd (ms) | min-max (ms) | {memory} |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['kind']} | {r['variant']} | {r['size']} | {r['seconds'] * 1e3:.0f} "
            f"| {r['spread'][0] * 1e3:.0f}-{r['spread'][1] * 1e3:.0f} | {r['mib']:.0f} |"
            for r in jbu
        ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
