"""Benchmark pointset's FPS / kNN / radius operators against the libraries they wrap.

Prints the machine, the command and a markdown table: for each case, pointset's automatic
choice (and the backend it picked), then every installed library called directly, as
median milliseconds and as a ratio to pointset's time (below 1 means the library was
faster). Fixed-start FPS rows only list libraries that honour a given start point.

    python benchmarks/ops.py            # full run (torch-cluster's CPU FPS on 200k: ~2 min)
    python benchmarks/ops.py --quick    # skip torch-cluster's slowest rows
    python benchmarks/ops.py --device cuda  # the same rows on a GPU (benchmarks/ops_cuda.py)
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

import pointset.ops as ops
from pointset.ops.fps import quickfps_height

LIBRARIES = (
    ("torch_cluster", "torch-cluster CPU"),
    ("fpsample_vanilla", "fpsample vanilla"),
    ("fpsample_bucket", "fpsample bucket"),
    ("scipy", "scipy"),
    ("open3d", "open3d"),
    ("pytorch3d", "pytorch3d"),
)


def _try_import(name: str):
    try:
        return importlib.import_module(name)
    except Exception:
        return None


tc = _try_import("torch_cluster")
fpsample = _try_import("fpsample")
o3d = _try_import("open3d")
p3d_ops = _try_import("pytorch3d.ops")
spatial = _try_import("scipy.spatial")


def measure(fns: dict[str, Callable[[], object]], repeats: int, budget: float) -> dict[str, float]:
    """Median wall time in ms of each function.

    Every function gets one warm-up call (which also compiles and caches JIT kernels); a
    function whose second call is slower than ``budget`` seconds is timed by that call
    alone. The rest are timed in interleaved rounds, so that a change of machine load hits
    all of them alike.
    """
    times: dict[str, list[float]] = {}
    active = []
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        times[name] = [first]
        if first <= budget:
            active.append(name)
            times[name] = []
    for _ in range(repeats):
        for name in active:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


class Recorder:
    """Records which backend pointset's dispatch ran, by wrapping the ops' tables."""

    def __init__(self) -> None:
        self.last: str | None = None
        for name in ("fps", "knn", "radius"):
            module = sys.modules.get(f"pointset.ops.{name}")
            if module is None or not hasattr(module, "_IMPLS"):
                continue
            for backend, impl in list(module._IMPLS.items()):
                module._IMPLS[backend] = self._wrap(backend, impl)

    def _wrap(self, backend, impl):
        def run(*args, **kwargs):
            self.last = backend
            return impl(*args, **kwargs)

        return run


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------


def clouds(num: int, size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(num * size, 3, generator=gen)
    batch = torch.arange(num).repeat_interleave(size)
    return pos, batch


def per_cloud(pos: torch.Tensor, num: int, size: int) -> list[np.ndarray]:
    arr = pos.numpy()
    return [arr[b * size : (b + 1) * size] for b in range(num)]


def fps_case(num, size, samples, random_start, slow_tc):
    pos, batch = clouds(num, size)
    b = None if num == 1 else batch
    parts = per_cloud(pos, num, size)
    parts64 = [p.astype(np.float64) for p in parts]
    ours = lambda: ops.fps(pos, b, num=samples, random_start=random_start)  # noqa: E731
    libs = {}
    if tc is not None:
        ratio = (samples - 0.5) / size  # exactly `samples` after its ceil(ratio * n)
        libs["torch_cluster"] = (
            lambda: tc.fps(pos, b, ratio=ratio, random_start=random_start),
            slow_tc,
        )
    if fpsample is not None:
        start = (lambda n: None) if random_start else (lambda n: 0)
        libs["fpsample_vanilla"] = (
            lambda: [fpsample.fps_sampling(p, samples, start_idx=start(len(p))) for p in parts],
            False,
        )
        if random_start:
            height = quickfps_height(size)
            libs["fpsample_bucket"] = (
                lambda: [fpsample.bucket_fps_kdline_sampling(p, samples, height) for p in parts],
                False,
            )
    if o3d is not None:

        def run_o3d():
            for p in parts64:
                cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
                start = int(np.random.randint(len(p))) if random_start else 0
                cloud.farthest_point_down_sample(samples, start)

        libs["open3d"] = (run_o3d, False)
    if p3d_ops is not None:
        dense = pos.view(num, size, 3)
        libs["pytorch3d"] = (
            lambda: p3d_ops.sample_farthest_points(
                dense, K=samples, random_start_point=random_start
            ),
            False,
        )
    label = "random start" if random_start else "fixed start"
    clouds_txt = f"{num} clouds x {size:,}" if num > 1 else f"one cloud {size:,}"
    return f"FPS {clouds_txt} -> {samples:,} ({label})", ours, libs


def knn_small_case():
    num, size, k = 32, 1024, 24
    pos, batch = clouds(num, size, 1)
    parts = per_cloud(pos, num, size)
    ours = lambda: ops.knn_graph(pos, k, batch)  # noqa: E731
    libs = {}
    if tc is not None:
        libs["torch_cluster"] = (lambda: tc.knn_graph(pos, k, batch), False)
    if spatial is not None:
        libs["scipy"] = (
            lambda: [spatial.cKDTree(p).query(p, k + 1, workers=-1) for p in parts],
            False,
        )
    if o3d is not None:

        def run_o3d():
            for p in parts:
                index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(p))
                index.knn_index()
                index.knn_search(o3d.core.Tensor(p), k + 1)

        libs["open3d"] = (run_o3d, False)
    if p3d_ops is not None:
        dense = pos.view(num, size, 3)
        libs["pytorch3d"] = (lambda: p3d_ops.knn_points(dense, dense, K=k + 1), False)
    return f"kNN graph {num} clouds x {size:,}, k={k}", ours, libs


def knn_large_case():
    size, k = 200_000, 16
    pos, _ = clouds(1, size, 2)
    arr = pos.numpy()
    ours = lambda: ops.knn(pos, pos, k)  # noqa: E731
    libs = {}
    if tc is not None:
        libs["torch_cluster"] = (lambda: tc.knn(pos, pos, k), False)
    if spatial is not None:
        libs["scipy"] = (lambda: spatial.cKDTree(arr).query(arr, k, workers=-1), False)
    if o3d is not None:

        def run_o3d():
            index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(arr))
            index.knn_index()
            index.knn_search(o3d.core.Tensor(arr), k)

        libs["open3d"] = (run_o3d, False)
    if p3d_ops is not None:
        dense = pos.view(1, size, 3)
        libs["pytorch3d"] = (lambda: p3d_ops.knn_points(dense, dense, K=k), False)
    return f"kNN one cloud {size:,}, k={k}", ours, libs


def radius_case(num, size, r, max_num):
    if not hasattr(ops, "radius"):
        return None
    pos, batch = clouds(num, size, 3)
    b = None if num == 1 else batch
    parts = per_cloud(pos, num, size)
    ours = lambda: ops.radius(pos, pos, r, b, b, max_num_neighbors=max_num)  # noqa: E731
    libs = {}
    if tc is not None:
        libs["torch_cluster"] = (
            lambda: tc.radius(pos, pos, r, b, b, max_num_neighbors=max_num),
            False,
        )
    if spatial is not None:
        libs["scipy"] = (
            lambda: [spatial.cKDTree(p).query_ball_point(p, r, workers=-1) for p in parts],
            False,
        )
    if o3d is not None:

        def run_o3d():
            for p in parts:
                index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(p))
                index.hybrid_index(r)
                index.hybrid_search(o3d.core.Tensor(p), r, max_num)

        libs["open3d"] = (run_o3d, False)
    if p3d_ops is not None:
        dense = pos.view(num, size, 3)
        libs["pytorch3d"] = (lambda: p3d_ops.ball_query(dense, dense, K=max_num, radius=r), False)
    clouds_txt = f"{num} clouds x {size:,}" if num > 1 else f"one cloud {size:,}"
    return f"radius {clouds_txt}, r={r}, max {max_num}", ours, libs


# ---------------------------------------------------------------------------------------


def machine_info() -> list[str]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"torch": torch.__version__, "numpy": np.__version__}
    for name, module in (
        ("scipy", _try_import("scipy")),
        ("fpsample", fpsample),
        ("torch-cluster", tc),
        ("open3d", o3d),
        ("pytorch3d", _try_import("pytorch3d")),
    ):
        versions[name] = getattr(module, "__version__", "?") if module else "not installed"
    lines = [
        f"- CPU: {model}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}",
        f"- Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- command: `python {' '.join(sys.argv)}`",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip torch-cluster's slowest rows")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell (median)")
    parser.add_argument(
        "--budget", type=float, default=3.0, help="a call slower than this (s) runs once"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: triton vs torch-cluster vs pytorch3d vs native on a GPU",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import ops_cuda

        reason = ops_cuda.cuda_unavailable_reason()
        if reason is not None:
            parser.error(reason)
        ops_cuda.run(measure, Recorder(), args.repeats, args.budget)
        return

    recorder = Recorder()
    cases = [
        fps_case(32, 1024, 512, False, False),
        fps_case(32, 1024, 512, True, False),
        fps_case(1, 200_000, 4096, False, True),
        fps_case(1, 200_000, 4096, True, True),
        knn_small_case(),
        knn_large_case(),
        radius_case(32, 1024, 0.1, 32),
        # 200,000 uniform points in the unit cube: r = 0.028 gives ~16 neighbours per point.
        radius_case(1, 200_000, 0.028, 32),
    ]
    if cases[-1] is None:
        print("(pointset.ops.radius is not available: radius rows skipped)\n")
    cases = [c for c in cases if c is not None]

    print("\n".join(machine_info()))
    print()
    header = ["case", "pointset auto"] + [title for _, title in LIBRARIES]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for title, ours, libs in cases:
        fns = {"pointset": ours}
        skipped = []
        for key, _ in LIBRARIES:
            if key in libs:
                fn, slow = libs[key]
                if slow and args.quick:
                    skipped.append(key)
                else:
                    fns[key] = fn
        ms = measure(fns, args.repeats, args.budget)
        recorder.last = None
        ours()
        cells = [title, f"**{ms['pointset']:.1f} ms** ({recorder.last})"]
        for key, _ in LIBRARIES:
            if key in ms:
                cells.append(f"{ms[key]:.1f} ms ({ms[key] / ms['pointset']:.2f}x)")
            else:
                cells.append("skipped (--quick)" if key in skipped else "-")
        print("| " + " | ".join(cells) + " |", flush=True)
    print(
        "\nTimes: median ms; (x) = library time / pointset auto time, above 1 means pointset "
        "is faster. Fixed-start FPS rows list only libraries that honour the start point."
    )


if __name__ == "__main__":
    main()
