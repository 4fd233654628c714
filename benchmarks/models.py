"""Model zoo benchmark: parameters, inference throughput and one training step of every
registered model, beside the accuracy its paper reports.

For each classifier of ``pointset.models.list_models()`` (segmentation models are left out):

- **params**: ``sum(p.numel())`` at the class count of the reported accuracy (1000 for the
  ImageNet backbones, 15 for the ScanObjectNN point-cloud models).
- **forward throughput** in eval mode under ``torch.no_grad()``: images/s on random
  ``3 x 224 x 224`` images (CoC, AFF), clouds/s on random clouds of 1,024 points
  (PointMLP family; xyz + rgb for the RGBD classifier), at batch 1 and batch 32. One
  warm-up pass at batch 1, then the median of up to ``--repeats`` timed passes; a setting
  whose single pass takes longer than ``--budget`` seconds is timed once (the batch-32
  pass of the large image models), which the table marks with ``*``. The batch-1 passes
  serve as the warm-up of batch 32.
- **training step**: forward, cross-entropy on random labels, backward and an SGD
  (momentum 0.9) update at ``--train-batch`` samples, after one untimed warm-up step;
  median wall time of up to ``--train-repeats`` steps (same budget rule), and the peak
  memory of the timed steps.

Peak memory method. ``tracemalloc`` does not see PyTorch's CPU allocations, so the kernel is
asked instead: every measurement runs in a fresh ``spawn`` process started with
``MALLOC_MMAP_THRESHOLD_=131072`` (glibc then returns freed large buffers at once, so the
resident set follows the live tensors). After the warm-up step, when the model, its
gradients and the optimizer state exist, the process resets its resident-set high-water
mark (``5`` written to ``/proc/self/clear_refs``) and notes its current RSS; the peak is
``VmHWM`` after the timed steps minus that RSS: the memory the step itself needs
(activations kept for backward, gradients being written, temporary buffers, allocator
overhead), excluding the weights, gradients and optimizer state already resident. Where
``clear_refs`` is not writable, the growth of ``ru_maxrss`` is reported (a lower bound),
marked ``~``. (The meter is the one of ``benchmarks/layers.py``.)

Threads. The children run with ``OMP_WAIT_POLICY=PASSIVE`` unless the caller sets it:
with OpenMP's default spinning barriers, two intra-op threads on a two-core machine that
other processes also use waited for each other so long that single passes ran 10-40x
slower than with one thread (measured: CoC-Tiny at batch 1 took 3.5 s instead of 0.08 s).

Comparison with another revision (``--compare-ref REF``): the ``pointset`` package of git
revision ``REF`` is extracted (``git archive``) into a temporary directory, and every model
of ``--only`` is timed with that code and with the working tree's, in separate fresh
processes, alternating ``ref, current`` for every model in each of ``--runs`` rounds (so a
change of machine load hits both sides alike). A process builds the model from the same
seed, runs one untimed training step (forward, cross-entropy, backward, SGD step) at
``--train-batch`` clouds, then times ``--calls`` more (default 2), and likewise one untimed plus ``--calls`` timed
eval forwards under ``torch.no_grad()`` at the same batch; a round records the mean of its
timed calls. The table gives the median over the rounds, the min-max spread and the
speed-up ``ref / current``.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/models.py --threads 2 --output benchmarks/results/models.md
    python benchmarks/models.py --only coc_tiny pointmlp_elite --repeats 3
    OMP_NUM_THREADS=2 python benchmarks/models.py --compare-ref 2c97ca4 --runs 5 --calls 1 \
        --train-batch 2 --only pointmlp_elite pointmlp pointmlp_coc --threads 2 \
        --output benchmarks/results/pointmlp_vs_2c97ca4.md

(the PointMLP speed-up of the README; its tables are in ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layers import PeakMemory, machine_info  # noqa: E402  (the shared memory meter)

POINTS = 1024
IMAGE = 224
POINT_CLASSES = 15  # ScanObjectNN, the dataset of the reported PointMLP accuracies


# ----------------------------------------------------------------------------- inputs
def build(name: str):
    from pointset.models import create_model, model_card

    card = model_card(name)
    is_points = card.family == "pointmlp"
    model = create_model(name, num_classes=POINT_CLASSES if is_points else None)
    return model, card, is_points


def make_input(model, is_points: bool, batch: int) -> torch.Tensor:
    if is_points:
        return torch.rand(batch, model.in_channels, POINTS) * 2 - 1
    return torch.randn(batch, 3, IMAGE, IMAGE)


def timed(step, repeats: int, budget: float) -> tuple[float, bool]:
    """Median seconds of up to ``repeats`` calls, and whether the budget cut them short
    (a call took longer than ``budget`` seconds before ``repeats`` were done)."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if times[-1] > budget:
            break
    return statistics.median(times), len(times) < max(1, repeats)


# ----------------------------------------------------------------------------- measurements
def measure_forward(name: str, args: argparse.Namespace) -> dict:
    model, _, is_points = build(name)
    model.eval()
    out = {}
    with torch.no_grad():
        x1 = make_input(model, is_points, 1)
        model(x1)  # warm-up (kernels, numba caches, allocator)
        for batch in (1, 32):
            x = x1 if batch == 1 else make_input(model, is_points, batch)
            seconds, capped = timed(lambda x=x: model(x), args.repeats, args.budget)
            out[f"fwd{batch}"] = batch / seconds
            out[f"fwd{batch}_capped"] = capped
    return out


def measure_train(name: str, args: argparse.Namespace) -> dict:
    model, _, is_points = build(name)
    model.train()
    classes = model.num_classes
    x = make_input(model, is_points, args.train_batch)
    y = torch.randint(0, classes, (args.train_batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    step()  # warm-up: gradients and momentum buffers now exist
    meter = PeakMemory()
    meter.start()
    seconds, capped = timed(step, args.train_repeats, args.budget)
    return {
        "train_s": seconds,
        "train_capped": capped,
        "train_mib": meter.stop(),
        "mem_exact": meter.exact,
        "params": sum(p.numel() for p in model.parameters()),
    }


def _child(kind: str, name: str, args: argparse.Namespace, queue) -> None:
    try:
        torch.set_num_threads(args.threads)
        fn = measure_forward if kind == "forward" else measure_train
        queue.put(fn(name, args))
    except Exception as exc:  # report in the parent instead of hanging it
        queue.put(f"{type(exc).__name__}: {exc}")


def run_isolated(kind: str, name: str, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process (own allocator state and peak RSS)."""
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"  # read by glibc when the child starts
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP in the child
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, str):
        return {"error": result}
    return result


# ----------------------------------------------------------------------------- comparison
def export_package(ref: str, into: Path) -> Path:
    """Extract the ``pointset`` package of git revision ``ref`` into ``into``."""
    root = Path(__file__).resolve().parent.parent
    archive = into / "ref.tar"
    with archive.open("wb") as handle:
        subprocess.run(["git", "archive", ref, "pointset"], cwd=root, stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def measure_pair(name: str, args: argparse.Namespace) -> dict:
    """Seconds of one training step and one eval forward (mean of ``--calls`` timed calls)."""
    import pointset

    torch.manual_seed(0)
    model, _, is_points = build(name)
    x = make_input(model, is_points, args.train_batch)
    y = torch.randint(0, model.num_classes, (args.train_batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def mean_time(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(args.calls):
            fn()
        return (time.perf_counter() - start) / args.calls

    model.train()
    train = mean_time(step)
    model.eval()
    with torch.no_grad():
        evaluate = mean_time(lambda: model(x))
    return {"train_s": train, "eval_s": evaluate, "source": pointset.__file__}


def _pair_child(source: str | None, name: str, args: argparse.Namespace, queue) -> None:
    try:
        if source is not None:  # the reference revision's package shadows the working tree
            sys.path.insert(0, source)
        torch.set_num_threads(args.threads)
        queue.put(measure_pair(name, args))
    except Exception as exc:  # report in the parent instead of hanging it
        queue.put(f"{type(exc).__name__}: {exc}")


def run_pair(source: str | None, name: str, args: argparse.Namespace) -> dict:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_pair_child, args=(source, name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if isinstance(result, str):
        raise RuntimeError(f"{name} ({source or 'working tree'}): {result}")
    return result


def compare(names: list[str], args: argparse.Namespace) -> str:
    """Markdown table of ``ref`` against the working tree (see the module docstring)."""
    root = Path(__file__).resolve().parent.parent
    times: dict[tuple[str, str], list[dict]] = {}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = str(export_package(args.compare_ref, Path(tmp)))
        for r in range(args.runs):
            for name in names:
                for side, source in (("ref", ref_dir), ("new", str(root))):
                    row = run_pair(source, name, args)
                    if not row["source"].startswith(source):
                        raise RuntimeError(f"{side} run imported {row['source']}")
                    times.setdefault((name, side), []).append(row)
                    print(
                        f"round {r + 1} {name} {side}: train {row['train_s']:.3f} s, "
                        f"eval {row['eval_s']:.3f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    load_end = os.getloadavg()[0]

    def cell(rows: list[dict], key: str) -> tuple[float, str]:
        values = [row[key] for row in rows]
        med = statistics.median(values)
        return med, f"{med:.3f} ({min(values):.3f}-{max(values):.3f})"

    b = args.train_batch
    lines = [
        f"| model | train {args.compare_ref} (s) | train new (s) | train speed-up "
        f"| eval {args.compare_ref} (s) | eval new (s) | eval speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        ref_train, ref_train_text = cell(times[(name, "ref")], "train_s")
        new_train, new_train_text = cell(times[(name, "new")], "train_s")
        ref_eval, ref_eval_text = cell(times[(name, "ref")], "eval_s")
        new_eval, new_eval_text = cell(times[(name, "new")], "eval_s")
        lines.append(
            f"| {name} | {ref_train_text} | {new_train_text} | {ref_train / new_train:.2f}x "
            f"| {ref_eval_text} | {new_eval_text} | {ref_eval / new_eval:.2f}x |"
        )
    command = "python benchmarks/models.py " + " ".join(sys.argv[1:])
    header = [
        f"# {args.compare_ref} against the working tree on CPU",
        "",
        f"Machine: {machine_info()}; torch {torch.__version__}; {args.threads} intra-op "
        f"thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end.",
        f"Command: `{command.strip()}`",
        "",
        f"Batch {b} x {POINTS} random points; train = forward + cross-entropy + backward + SGD "
        f"step, eval = forward under no_grad; median of {args.runs} interleaved rounds "
        "(min-max in brackets), speed-up = median ref / median new.",
        "",
        "",
    ]
    return "\n".join(header) + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- table
def reported(card) -> tuple[str, str]:
    """``("71.8 top-1", "ImageNet-1K val, 224x224")`` from the first published result."""
    if not card.reported:
        return "-", "no published result"
    result = card.reported[0]
    metrics = [m for m in result.metrics if not m.endswith("_std")]
    text = " / ".join(f"{result.format(m)} {m}" for m in metrics)
    where = result.dataset + (f", {result.setting}" if result.setting else "")
    return text, where


def rate(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    mark = "*" if row[f"{key}_capped"] else ""
    return f"{row[key]:.3g}{mark}"


def table(rows: list[tuple[str, object, dict]], args: argparse.Namespace) -> str:
    lines = [
        f"| model | params (M) | fwd b=1 (/s) | fwd b=32 (/s) | train step b={args.train_batch} (s) "
        "| train peak (MiB) | reported accuracy (%) | reported on |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, card, row in rows:
        acc, where = reported(card)
        if "error" in row:
            lines.append(f"| {name} | error: {row['error']} | | | | | {acc} | {where} |")
            continue
        mem = row.get("train_mib")
        mem_text = "-" if mem is None else f"{'' if row['mem_exact'] else '~'}{mem:.0f}"
        train = row.get("train_s")
        train_text = "-" if train is None else f"{train:.2f}" + ("*" if row["train_capped"] else "")
        params = row.get("params")
        lines.append(
            f"| {name} | {params / 1e6:.2f} | {rate(row, 'fwd1')} | {rate(row, 'fwd32')} "
            f"| {train_text} | {mem_text} | {acc} | {where} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="model names (default: all registered)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training steps")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds; slower: 1 run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--compare-ref", help="git revision to time against the working tree")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds of --compare-ref")
    parser.add_argument("--calls", type=int, default=2, help="timed calls per --compare-ref round")
    args = parser.parse_args(argv)

    if args.compare_ref is not None:
        if not args.only:
            parser.error("--compare-ref needs --only MODEL [MODEL ...]")
        text = compare(args.only, args)
        print(text)
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text)
        return text

    from pointset.models import list_models, model_card

    # classifiers only: segmentation models (task "segmentation") take other inputs and labels
    names = args.only or [
        n for n in list_models() if model_card(n).default_cfg.get("task") != "segmentation"
    ]
    load_start = os.getloadavg()[0]
    rows = []
    for name in names:
        card = model_card(name)
        start = time.perf_counter()
        row = run_isolated("train", name, args)
        if "error" not in row:
            row.update(run_isolated("forward", name, args))
        rows.append((name, card, row))
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    command = "python benchmarks/models.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [
        "# Model zoo on CPU",
        "",
        f"Machine: {machine_info()}; torch {torch.__version__}; {args.threads} intra-op "
        f"thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        f"1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        "end (other work shared the machine).",
        f"Command: `{command.strip()}`",
        "",
        f"Inputs: random 3x{IMAGE}x{IMAGE} images (CoC, AFF; images/s) or random clouds of "
        f"{POINTS} points (PointMLP family; clouds/s), float32. `*`: fewer timed runs than "
        f"asked (a single run took longer than {args.budget:g} s; usually timed once). Train peak: extra resident memory of one "
        "training step beyond the weights, gradients and optimizer state (see the script's "
        "docstring). Reported accuracy: the first published result of the model card "
        "(ImageNet-1K top-1; ScanObjectNN PB_T50_RS OA / mAcc, mean ± std over runs where "
        "published), not reproduced here.",
        "",
        "",
    ]
    text = "\n".join(header) + table(rows, args) + "\n"
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return text


if __name__ == "__main__":
    main()
