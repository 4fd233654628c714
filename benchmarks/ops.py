"""Benchmark pointset's FPS / kNN / radius operators against the libraries they wrap.

Prints the machine, the command, the load average and a markdown table: for each case,
pointset's automatic choice (and the backend it picked), then every installed library
called directly, each as the median wall time of ``--runs`` interleaved runs (the order of
the candidates rotates from run to run) with the min-max spread; the ratio of pointset's
time to the fastest library's (at most 1: pointset is at or ahead of every library); and a
lower bound on any implementation's time, from the distance evaluations and bytes of
output the answer needs at this machine's measured rates.

Fixed-start FPS rows list the libraries that honour the start point, plus fpsample's
QuickFPS from a random start (it cannot take a start), marked as such.

    python benchmarks/ops.py --threads 2          # full run (torch-cluster's 200k FPS: minutes)
    python benchmarks/ops.py --quick --threads 2  # skip the slowest cells (minutes each)
    python benchmarks/ops.py --device cuda        # the same rows on a GPU (benchmarks/ops_cuda.py)
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

import pointset.ops as ops
from pointset.ops.fps import quickfps_height

LIBRARIES = (
    ("torch_cluster", "torch-cluster CPU"),
    ("fpsample_vanilla", "fpsample vanilla"),
    ("fpsample_bucket", "fpsample QuickFPS"),
    ("scipy", "scipy"),
    ("open3d", "open3d"),
    ("pytorch3d", "pytorch3d"),
)


#: Threads every library may use where it takes a count (set by ``--threads``).
THREADS = torch.get_num_threads()


class Work(NamedTuple):
    """What any implementation must do for a case's answer: squared distances to evaluate
    and bytes of output to write."""

    evaluations: int
    bytes_out: int


class Case(NamedTuple):
    title: str
    ours: Callable[[], object]
    libs: dict[str, tuple[Callable[[], object], bool]]
    work: Work
    #: Libraries in this row that do not answer the same question (noted in the table).
    unlike: tuple[str, ...] = ()


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
        # QuickFPS cannot take a start point: from a random start in every row, so on the
        # fixed-start rows it is not like for like (marked in the table).
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
    # Certifying the second sample needs every point's distance to the first; the answer is
    # num * samples int64 indices.
    bound = Work(evaluations=num * size, bytes_out=num * samples * 8)
    title = f"FPS {clouds_txt} -> {samples:,} ({label})"
    return Case(title, ours, libs, bound, () if random_start else ("fpsample_bucket",))


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
            lambda: [spatial.cKDTree(p).query(p, k + 1, workers=THREADS) for p in parts],
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
    # Every edge needs its distance; the answer is a [2, E] int64 edge index.
    edges = num * size * k
    return Case(f"kNN graph {num} clouds x {size:,}, k={k}", ours, libs, Work(edges, edges * 16))


def knn_large_case():
    size, k = 200_000, 16
    pos, _ = clouds(1, size, 2)
    arr = pos.numpy()
    ours = lambda: ops.knn(pos, pos, k)  # noqa: E731
    libs = {}
    if tc is not None:
        libs["torch_cluster"] = (lambda: tc.knn(pos, pos, k), False)
    if spatial is not None:
        libs["scipy"] = (lambda: spatial.cKDTree(arr).query(arr, k, workers=THREADS), False)
    if o3d is not None:

        def run_o3d():
            index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(arr))
            index.knn_index()
            index.knn_search(o3d.core.Tensor(arr), k)

        libs["open3d"] = (run_o3d, False)
    if p3d_ops is not None:
        dense = pos.view(1, size, 3)
        # brute force: size^2 distances, minutes on 200,000 points (skipped by --quick)
        libs["pytorch3d"] = (lambda: p3d_ops.knn_points(dense, dense, K=k), size > 50_000)
    pairs = size * k
    return Case(f"kNN one cloud {size:,}, k={k}", ours, libs, Work(pairs, pairs * 16))


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
            lambda: [spatial.cKDTree(p).query_ball_point(p, r, workers=THREADS) for p in parts],
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
        libs["pytorch3d"] = (  # brute force, as for kNN
            lambda: p3d_ops.ball_query(dense, dense, K=max_num, radius=r),
            size > 50_000,
        )
    clouds_txt = f"{num} clouds x {size:,}" if num > 1 else f"one cloud {size:,}"
    edges = ours().size(1)  # every edge found needs its distance and 16 bytes of output
    return Case(f"radius {clouds_txt}, r={r}, max {max_num}", ours, libs, Work(edges, edges * 16))


# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# this machine's rates, for the lower bounds
# ---------------------------------------------------------------------------------------


def machine_rates(threads: int) -> tuple[float, float]:
    """``(distance evaluations per second, bytes written per second)`` on ``threads``.

    Distances: a compiled kernel that takes the squared distances of 32,768 3-D float32
    points (in cache) to 256 points each and keeps the running minimum (the inner loop of
    FPS; a kNN or radius candidate costs more), best of 20 calls on 1 and on ``threads``
    threads (the faster count counts: a bound must not be beaten). Bytes: a compiled parallel fill of a 256 MiB int64 array, best of five.
    """
    import numba

    @numba.njit(parallel=True)
    def stream(planes, qs, out):
        for i in numba.prange(out.shape[0]):
            x = planes[0, i]
            y = planes[1, i]
            z = planes[2, i]
            m = out[i]
            for j in range(qs.shape[0]):
                dx = x - qs[j, 0]
                dy = y - qs[j, 1]
                dz = z - qs[j, 2]
                m = min(m, dx * dx + dy * dy + dz * dz)
            out[i] = m

    @numba.njit(parallel=True)
    def fill(out):
        for i in numba.prange(out.shape[0]):
            out[i] = i

    n, reps = 32_768, 256
    rng = np.random.default_rng(0)
    planes = rng.random((3, n), dtype=np.float32)
    qs = rng.random((reps, 3), dtype=np.float32)
    mind = np.full(n, np.inf, dtype=np.float32)
    best = math.inf
    for count in sorted({1, max(1, min(threads, numba.config.NUMBA_NUM_THREADS))}):
        numba.set_num_threads(count)
        stream(planes, qs, mind)
        for _ in range(20):
            start = time.perf_counter()
            stream(planes, qs, mind)
            best = min(best, time.perf_counter() - start)
    evals_per_s = n * reps / best
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    big = np.empty(32 * 2**20, dtype=np.int64)
    fill(big)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        fill(big)
        best = min(best, time.perf_counter() - start)
    return evals_per_s, big.nbytes / best


def bound_ms(work: Work, rates: tuple[float, float]) -> float:
    """Lower bound in ms on a case's time at this machine's rates."""
    return (work.evaluations / rates[0] + work.bytes_out / rates[1]) * 1e3


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------


def measure_runs(
    fns: dict[str, Callable[[], object]], runs: int, budget: float
) -> dict[str, list[float]]:
    """Per function, its time in ms in each of ``runs`` interleaved runs.

    Every function gets one warm-up call (which also compiles and caches JIT kernels). One
    whose second call is slower than ``budget`` seconds keeps that call as its only run.
    In run ``r`` the others are called in the order rotated by ``r``, so that a change of
    machine load hits them alike; a run's time is the median of three calls for functions
    under 0.2 s, else of one.
    """
    first: dict[str, float] = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    times = {name: [t * 1e3] for name, t in first.items() if t > budget}
    active = [name for name in fns if name not in times]
    for name in active:
        times[name] = []
    for r in range(runs):
        for name in active[r % max(len(active), 1) :] + active[: r % max(len(active), 1)]:
            calls = []
            for _ in range(3 if first[name] < 0.2 else 1):
                start = time.perf_counter()
                fns[name]()
                calls.append(time.perf_counter() - start)
            times[name].append(statistics.median(calls) * 1e3)
    return times


def spread(values: list[float], digits: int = 1) -> str:
    """``median [min-max]``, or the single value of a one-run cell."""
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f} (1 run)"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


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
    parser.add_argument(
        "--quick",
        action="store_true",
        help="skip torch-cluster's 200k FPS and pytorch3d's 200k brute-force searches",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell (CUDA)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs per cell (CPU)")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="threads for torch, numba and scipy (open3d and fpsample pick their own)",
    )
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

    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    recorder = Recorder()
    load_before = os.getloadavg()
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
    rates = machine_rates(args.threads)

    print("\n".join(machine_info()))
    print(
        f"- measured rates ({args.threads} threads): {rates[0] / 1e9:.2f} G distance "
        f"evaluations/s, {rates[1] / 1e9:.1f} GB/s written"
    )
    print(f"- load average (1 min) at start: {load_before[0]:.2f}")
    print()
    header = (
        ["case", "pointset auto"]
        + [title for _, title in LIBRARIES]
        + ["pointset / fastest", "lower bound", "pointset / bound"]
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for case in cases:
        fns = {"pointset": case.ours}
        skipped = []
        for key, _ in LIBRARIES:
            if key in case.libs:
                fn, slow = case.libs[key]
                if slow and args.quick:
                    skipped.append(key)
                else:
                    fns[key] = fn
        times = measure_runs(fns, args.runs, args.budget)
        recorder.last = None
        case.ours()
        ours = times["pointset"]
        cells = [case.title, f"**{spread(ours)} ms** ({recorder.last})"]
        fastest = None
        for key, _ in LIBRARIES:
            if key not in times:
                cells.append("skipped (--quick)" if key in skipped else "-")
                continue
            mark = " (random start)" if key in case.unlike else ""
            cells.append(f"{spread(times[key])} ms{mark}")
            if fastest is None or statistics.median(times[key]) < statistics.median(times[fastest]):
                fastest = key
        if fastest is None:
            cells.append("-")
        else:
            other = times[fastest]
            if len(other) == len(ours):
                ratios = [a / b for a, b in zip(ours, other)]
            else:
                ratios = [statistics.median(ours) / statistics.median(other)]
            ratio = statistics.median(ours) / statistics.median(other)
            name = dict(LIBRARIES)[fastest]
            cells.append(
                f"**{ratio:.2f}** [{min(ratios):.2f}-{max(ratios):.2f}] vs {name}"
                + ("*" if fastest in case.unlike else "")
            )
        low = bound_ms(case.work, rates)
        cells.append(f"{low:.2f} ms")
        cells.append(f"{statistics.median(ours) / low:.0f}x")
        print("| " + " | ".join(cells) + " |", flush=True)
    load_after = os.getloadavg()
    print(
        f"\nTimes: ms, median [min-max] of {args.runs} interleaved runs. pointset / fastest: "
        "the ratio of the medians [min-max of the per-run ratios] to the fastest library of "
        "the row (at most 1: pointset at or ahead). * the fastest library answers an easier "
        "question (QuickFPS from a random start against pointset's fixed start). Lower "
        "bound: the distance evaluations and output bytes the answer needs (FPS: one "
        "distance per point, kNN / radius: one per edge; 8 bytes per sample, 16 per edge) "
        "at the measured rates. Load average (1 min) at the end: "
        f"{load_after[0]:.2f}."
    )


if __name__ == "__main__":
    main()
