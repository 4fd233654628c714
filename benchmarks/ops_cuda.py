"""The rows of ``benchmarks/ops.py`` on a CUDA device (``python benchmarks/ops.py --device cuda``).

Each row times, on the same CUDA tensors: pointset's automatic choice (and the backend it
picked), pointset forced to ``triton`` and to ``native``, and the libraries called
directly (torch-cluster's and pytorch3d's CUDA kernels) where installed. Every call is
followed by ``torch.cuda.synchronize()`` so the time covers the kernels, not the launch.
The cases and sizes are those of the CPU table. Run by ``ops.py``; this module is not a
script of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

import pointset.ops as ops

COLUMNS = (
    ("triton", "pointset triton"),
    ("native", "pointset native"),
    ("torch_cluster", "torch-cluster CUDA"),
    ("pytorch3d", "pytorch3d CUDA"),
)


def _try_import(name: str):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA rows cannot run here, or ``None``."""
    if not torch.cuda.is_available():
        return "--device cuda needs a CUDA device, but torch.cuda.is_available() is False"
    return None


def _synced(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _clouds(num: int, size: int, seed: int, device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(num * size, 3, generator=gen).to(device)
    batch = torch.arange(num, device=device).repeat_interleave(size)
    return pos, batch


def cases(device: torch.device) -> list[tuple[str, Callable, dict[str, Callable]]]:
    """``(title, pointset auto, {column: fn})`` for every row of the CPU table."""
    tc = _try_import("torch_cluster")
    p3d = _try_import("pytorch3d.ops")
    rows = []

    def with_backends(op: Callable[[str | None], object]) -> tuple[Callable, dict]:
        fns = {name: (lambda name=name: op(name)) for name in ("triton", "native")}
        fns = {k: v for k, v in fns.items() if k == "native" or ops.is_available(k)}
        return (lambda: op(None)), fns

    for num, size, samples in ((32, 1024, 512), (1, 200_000, 4096)):
        for random_start in (False, True):
            pos, batch = _clouds(num, size, 0, device)
            b = None if num == 1 else batch

            def op(backend, pos=pos, b=b, samples=samples, random_start=random_start):
                return ops.fps(pos, b, num=samples, random_start=random_start, backend=backend)

            ours, fns = with_backends(op)
            if tc is not None:
                ratio = (samples - 0.5) / size
                fns["torch_cluster"] = lambda pos=pos, b=b, ratio=ratio, rs=random_start: tc.fps(
                    pos, b, ratio=ratio, random_start=rs
                )
            if p3d is not None:
                dense = pos.view(num, size, 3)
                fns["pytorch3d"] = lambda d=dense, s=samples, rs=random_start: (
                    p3d.sample_farthest_points(d, K=s, random_start_point=rs)
                )
            label = "random start" if random_start else "fixed start"
            where = f"{num} clouds x {size:,}" if num > 1 else f"one cloud {size:,}"
            rows.append((f"FPS {where} -> {samples:,} ({label})", ours, fns))

    for num, size, k, graph in ((32, 1024, 24, True), (1, 200_000, 16, False)):
        pos, batch = _clouds(num, size, 1 if graph else 2, device)
        b = None if num == 1 else batch

        def op(backend, pos=pos, b=b, k=k, graph=graph):
            if graph:
                return ops.knn_graph(pos, k, b, backend=backend)
            return ops.knn(pos, pos, k, backend=backend)

        ours, fns = with_backends(op)
        if tc is not None and k + int(graph) <= 100:
            if graph:
                fns["torch_cluster"] = lambda pos=pos, b=b, k=k: tc.knn_graph(pos, k, b)
            else:
                fns["torch_cluster"] = lambda pos=pos, k=k: tc.knn(pos, pos, k)
        if p3d is not None:
            dense = pos.view(num, size, 3)
            fns["pytorch3d"] = lambda d=dense, kk=k + int(graph): p3d.knn_points(d, d, K=kk)
        where = f"graph {num} clouds x {size:,}" if graph else f"one cloud {size:,}"
        rows.append((f"kNN {where}, k={k}", ours, fns))

    for num, size, r in ((32, 1024, 0.1), (1, 200_000, 0.028)):
        pos, batch = _clouds(num, size, 3, device)
        b = None if num == 1 else batch

        def op(backend, pos=pos, b=b, r=r):
            return ops.radius(pos, pos, r, b, b, max_num_neighbors=32, backend=backend)

        ours, fns = with_backends(op)
        if tc is not None:
            fns["torch_cluster"] = lambda pos=pos, b=b, r=r: tc.radius(
                pos, pos, r, b, b, max_num_neighbors=32
            )
        if p3d is not None:
            dense = pos.view(num, size, 3)
            fns["pytorch3d"] = lambda d=dense, r=r: p3d.ball_query(d, d, K=32, radius=r)
        where = f"{num} clouds x {size:,}" if num > 1 else f"one cloud {size:,}"
        rows.append((f"radius {where}, r={r}, max 32", ours, fns))
    return rows


def run(measure: Callable, recorder, repeats: int, budget: float) -> None:
    """Print the CUDA table (``measure`` and ``recorder`` are those of ``ops.py``)."""
    device = torch.device("cuda")
    print(f"- GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print()
    header = ["case", "pointset auto"] + [title for _, title in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for title, ours, libs in cases(device):
        fns = {"pointset": _synced(ours)}
        fns.update({key: _synced(fn) for key, fn in libs.items()})
        ms = measure(fns, repeats, budget)
        recorder.last = None
        ours()
        cells = [title, f"**{ms['pointset']:.2f} ms** ({recorder.last})"]
        for key, _ in COLUMNS:
            if key in ms:
                cells.append(f"{ms[key]:.2f} ms ({ms[key] / ms['pointset']:.2f}x)")
            else:
                cells.append("-")
        print("| " + " | ".join(cells) + " |", flush=True)
    print("\nTimes: median ms after torch.cuda.synchronize(); (x) = column / pointset auto.")
