"""The ``pointset`` command.

Subcommands:

- ``train CONFIG [--set key=value ...] [--resume]``: train from a YAML config;
- ``eval CONFIG --checkpoint PATH``: evaluate a checkpoint on the config's test split;
- ``segment COLOR DEPTH | SCAN --config C --checkpoint K --out OUT``: label every point of
  an RGBD frame or a point file with a trained segmentation model;
- ``download DATASET --root DIR``: fetch and verify a public dataset;
- ``convert INPUT OUTPUT``: RGBD frame / image / point file -> point-set file;
- ``viz INPUT``: cluster-assignment map of Context Cluster clustering, as a PNG;
- ``bench [NAME]``: run the benchmark scripts of a source checkout;
- ``info``: versions and usable operator backends;
- ``demo``: an end-to-end tour of the conversions and operators.

Each has ``--help``. Bad input ends with a one-line ``pointset <command>: error: ...``
message and exit code 2; ``--debug`` shows the traceback instead. ``train`` and ``eval``
run with passive OpenMP waiting unless ``OMP_WAIT_POLICY`` is set (see ``main``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# -- train / eval ----------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine import Trainer, load_config

    cfg = load_config(args.config, args.set)
    Trainer(cfg, resume=args.resume, overwrite=args.overwrite).fit()
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .engine import Trainer, load_config

    cfg = load_config(args.config, args.set)
    out = args.out
    if out is None:
        out = os.path.join(cfg.output_dir, f"eval_{args.split}_confusion_matrix.png")
    Trainer(cfg).evaluate(args.checkpoint, split=args.split, out_png=out)
    return 0


# -- segment ---------------------------------------------------------------------------


def _read_frame(color_path: str, depth_path: str):
    """Colour ``[H, W, 3]`` uint8 and raw depth ``[H, W]`` of an RGBD pair."""
    import numpy as np
    from PIL import Image

    from .data import read_pgm

    for p in (color_path, depth_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"input {p} does not exist")
    with Image.open(color_path) as im:
        color = np.asarray(im.convert("RGB"))
    if depth_path.lower().endswith((".pgm", ".pnm")):
        depth = read_pgm(depth_path)
    else:
        with Image.open(depth_path) as im:
            depth = np.asarray(im)
    if depth.ndim != 2:
        raise ValueError(f"depth image {depth_path} must have one channel, got shape {depth.shape}")
    return color, depth


def _cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import read, write
    from .data import PointSet, from_rgbd
    from .engine import load_config
    from .engine.build import load_classifier
    from .engine.plots import colorize_labels, save_label_image, save_segmentation
    from .engine.segmentation import dataset_camera, model_call, scaled_intrinsics, segment_points

    if not args.out.lower().endswith((".ply", ".png")):
        raise ValueError(f"--out must end in .ply or .png, got {args.out!r}")
    cfg = load_config(args.config, args.set)
    model, meta = load_classifier(args.checkpoint)
    if meta.get("task") != "segmentation":
        raise ValueError(f"checkpoint {args.checkpoint} is not a segmentation model's")
    names = list(meta.get("class_names") or range(meta["num_classes"]))
    names = [str(n) for n in names]
    color = None
    if args.depth is not None:
        color, depth = _read_frame(args.input, args.depth)
        h, w = depth.shape
        k = args.intrinsics or scaled_intrinsics(dataset_camera(cfg.data), w, h)
        cloud = from_rgbd(color, depth, k, args.depth_scale, args.depth_trunc)
        what = f"RGBD frame {w}x{h}"
    else:
        if args.intrinsics is not None:
            raise ValueError("--intrinsics needs an RGBD pair (COLOR DEPTH)")
        cloud = read(args.input, dtype=torch.float32)
        what = "point file"
    if cloud.num_points == 0:
        raise ValueError(f"{args.input} gives no points (no valid depth?)")
    in_channels = int(meta.get("model_options", {}).get("in_channels", 3))
    feats = [cloud.pos.float()]
    if in_channels > 3:
        if cloud.x is None or cloud.x.size(1) != in_channels - 3:
            have = 0 if cloud.x is None else cloud.x.size(1)
            raise ValueError(
                f"the model takes xyz + {in_channels - 3} feature channels (colours); "
                f"{args.input} has {have}"
            )
        feats.append(cloud.x.float())
    points = torch.cat(feats, 1)
    g = torch.Generator().manual_seed(args.seed)
    keep = None
    if points.size(0) > args.max_points:
        keep = torch.randperm(points.size(0), generator=g)[: args.max_points]
        points = points[keep]
    labels = segment_points(
        model, points, cfg.data.num_points, model_call(meta["model"]), generator=g
    )
    colors = torch.from_numpy(colorize_labels(labels.numpy(), len(names))).float()
    if args.out.lower().endswith(".ply"):
        write(args.out, PointSet(pos=points[:, :3], x=colors))
    elif color is not None:
        image = np.full(color.shape[:2], -1, dtype=np.int64)
        pixel = cloud.pixel if keep is None else cloud.pixel[keep]
        image[pixel[:, 0].numpy(), pixel[:, 1].numpy()] = labels.numpy()
        save_label_image(image, args.out, names, color=color, title=f"{meta['model']} prediction")
    else:
        save_segmentation(points[:, :3], labels, labels, args.out, names, titles=[args.input])
    counts = torch.bincount(labels, minlength=len(names))
    print(f"{what} {args.input}: {labels.numel()} points -> {args.out}")
    width = max(len(n) for n in names)
    for name, c in zip(names, counts.tolist()):
        if c:
            print(f"  {name:<{width}}  {c:>8}  {100 * c / labels.numel():6.2f}%")
    return 0


# -- download --------------------------------------------------------------------------


def _cmd_download(args: argparse.Namespace) -> int:
    from .datasets.download import download

    path = download(args.dataset, args.root, url=args.url, force=args.force, sha256=args.sha256)
    print(f"{args.dataset} is ready in {path} (use data.root: {args.root})")
    return 0


# -- convert ---------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _intrinsics(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"--intrinsics must be four numbers fx,fy,cx,cy, got {text!r}")
    return values  # type: ignore[return-value]


def _cmd_convert(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import read, write
    from .data import from_image, read_rgbd
    from .data.io import require_file

    src = require_file(args.input, "input")
    if args.depth is not None:
        points = read_rgbd(src, args.depth, args.convention, _intrinsics(args.intrinsics))
        what = f"RGBD frame ({args.convention})"
    elif src.lower().endswith(_IMAGE_SUFFIXES):
        if args.intrinsics is not None:
            raise ValueError("--intrinsics needs --depth (an RGBD pair)")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(src) as im:
                arr = np.asarray(im.convert("RGB"))
        except UnidentifiedImageError:
            raise ValueError(f"input {src} is not an image Pillow can read") from None
        points = from_image(torch.from_numpy(arr.copy()).permute(2, 0, 1), normalize=args.normalize)
        what = "image"
    else:
        points = read(src)
        what = "point file"
    write(args.output, points, x_as=args.x_as, binary=not args.ascii, compress=args.compress)
    print(f"{what} {src} -> {args.output}: {points.num_nodes} points")
    return 0


# -- viz -------------------------------------------------------------------------------


def _viz_model(args: argparse.Namespace):
    """The CoC image model of ``--checkpoint`` (trained weights) or ``--model`` (random)."""
    import torch

    from .engine.build import create, load_classifier
    from .models import model_card

    if args.checkpoint is not None:
        model, meta = load_classifier(args.checkpoint)
        if meta.get("input") != "image":
            raise ValueError(
                f"checkpoint {args.checkpoint} is not an image model ({meta['model']})"
            )
        size = meta.get("config", {}).get("data", {}).get("image_size")
        return model, args.size or size or 224
    name = args.model or "coc_tiny"
    if model_card(name).input != "image":
        raise ValueError(f"--model must be a Context Cluster image model, got {name!r}")
    torch.manual_seed(args.seed)
    return create(name, num_classes=1000).eval(), args.size or 224


def _cmd_viz(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import read
    from .data.io import require_file
    from .engine.data import normalize_image
    from .viz import save_cluster_map

    src = require_file(args.input, "input")
    if src.lower().endswith(_IMAGE_SUFFIXES):
        from PIL import Image, UnidentifiedImageError

        model, size = _viz_model(args)
        try:
            with Image.open(src) as im:
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except UnidentifiedImageError:
            raise ValueError(f"input {src} is not an image Pillow can read") from None
        image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
        target, data = model, normalize_image(image)
        what = f"{args.checkpoint or args.model or 'coc_tiny'} at {size}x{size}"
    else:
        if args.model is not None or args.checkpoint is not None:
            raise ValueError(
                "a point file is drawn with one ContextCluster layer over its features; "
                "--model and --checkpoint apply to images"
            )
        from .nn import ContextCluster

        data = read(src)
        if data.pos is None or data.pos.dim() != 2:
            raise ValueError(f"{src} holds no point positions")
        g = torch.Generator().manual_seed(args.seed)
        if data.num_nodes > args.max_points:
            keep = torch.randperm(data.num_nodes, generator=g)[: args.max_points].sort().values
            data = _take(data, keep)
        feats = data.x if data.x is not None and data.x.dim() == 2 else data.pos
        data.x = feats.float()
        torch.manual_seed(args.seed)
        target = ContextCluster(data.x.size(1), heads=1, num_centers=args.centers)
        what = f"one ContextCluster layer, {args.centers} centers"
    out = save_cluster_map(
        target, data, args.out, stage=args.stage, block=args.block, head=args.head
    )
    print(f"cluster map of {src} ({what}) -> {out}")
    return 0


def _take(points, index):
    """The points ``index`` of a single cloud (every per-point attribute indexed)."""
    from .data import PointSet

    n = points.num_nodes
    return PointSet(
        **{
            k: v[index] if hasattr(v, "dim") and v.dim() >= 1 and v.size(0) == n else v
            for k, v in points.items()
            if k != "grid_size"
        }
    )


# -- bench -----------------------------------------------------------------------------


def _benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "benchmarks"


def _cmd_bench(args: argparse.Namespace) -> int:
    folder = _benchmarks_dir()
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        print(
            "the benchmark scripts live in the benchmarks/ folder of a source checkout of "
            "pointset; this installation has none (looked in "
            f"{folder})"
        )
        return 0
    names = {p.stem: p for p in scripts}
    if args.name is None:
        print(f"benchmarks in {folder}:")
        for name, path in names.items():
            print(f"  {name:<14} {_first_doc_line(path)}")
        print("run one with `pointset bench NAME [-- ARGS]`, e.g. `pointset bench ops -- --quick`")
        return 0
    if args.name not in names:
        raise ValueError(f"unknown benchmark {args.name!r}; valid: {', '.join(names)}")
    extra = [a for a in args.args if a != "--"]
    cmd = [sys.executable, str(names[args.name]), *extra]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=folder.parent)


def _first_doc_line(path: Path) -> str:
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (SyntaxError, OSError, ValueError):
        doc = None
    return (doc or "").strip().split("\n")[0]


# -- info / demo -----------------------------------------------------------------------


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import format_info

    print(format_info())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


# -- parser ----------------------------------------------------------------------------


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set train.epochs=1 (value parsed as YAML; "
        "repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pointset`` command."""
    parser = argparse.ArgumentParser(
        prog="pointset",
        description="Images, RGBD frames and 3D scans as point sets.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train the model of a YAML config (sections model, data, train; "
        "output_dir, seed). Writes best/last checkpoints, metrics.jsonl and PNG plots into "
        "output_dir. Multi-process: torchrun --nproc_per_node=N -m pointset.cli train CONFIG.",
    )
    train.add_argument("config", help="YAML config file, e.g. configs/demo/pointmlp_elite.yaml")
    _add_set(train)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in output_dir from its last checkpoint",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="start over even if output_dir holds a run"
    )
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a config's test split",
        description="Evaluate checkpoint weights on the dataset of a config; prints OA and "
        "mAcc (segmentation: mIoU, OA and per-class IoU) and writes a confusion-matrix PNG.",
    )
    ev.add_argument("config", help="YAML config the checkpoint was trained with")
    ev.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint (.safetensors, .json or prefix like runs/x/best)",
    )
    ev.add_argument("--split", default="test", choices=("train", "test"), help="split to evaluate")
    ev.add_argument("--out", default=None, help="confusion-matrix PNG (default: in output_dir)")
    _add_set(ev)
    ev.set_defaults(func=_cmd_eval)

    seg = sub.add_parser(
        "segment",
        help="label every point of an RGBD frame or a point file with a segmentation model",
        description="Back-project COLOR + DEPTH (or read a point file), run a trained "
        "segmentation checkpoint over all points (in chunks of the config's data.num_points) "
        "and write a cloud coloured by class (.ply) or a picture (.png); prints the class "
        "histogram.",
    )
    seg.add_argument("input", help="colour image of an RGBD pair, or a point file (.ply ...)")
    seg.add_argument("depth", nargs="?", help="depth image of the RGBD pair (16-bit PNG or PGM)")
    seg.add_argument("--config", required=True, help="YAML config the checkpoint was trained with")
    seg.add_argument("--checkpoint", required=True, help="checkpoint (e.g. runs/x/best)")
    seg.add_argument("--out", required=True, help="OUT.ply (coloured cloud) or OUT.png")
    seg.add_argument(
        "--intrinsics",
        type=float,
        nargs=4,
        metavar=("FX", "FY", "CX", "CY"),
        help="pinhole intrinsics (default: the dataset's camera scaled to the frame size, "
        "else PrimeSense)",
    )
    seg.add_argument(
        "--depth-scale", type=float, default=1000.0, help="depth units per metre (default 1000)"
    )
    seg.add_argument(
        "--depth-trunc", type=float, default=6.0, help="drop depths beyond this many metres"
    )
    seg.add_argument(
        "--max-points", type=int, default=200_000, help="random subset of larger inputs"
    )
    seg.add_argument("--seed", type=int, default=0, help="seed of the chunking order")
    _add_set(seg)
    seg.set_defaults(func=_cmd_segment)

    dl = sub.add_parser(
        "download",
        help="download and verify a public dataset",
        description="Download a dataset archive (resuming a partial download), verify it and "
        "unpack it atomically under --root.",
    )
    dl.add_argument(
        "dataset",
        help="scanobjectnn (PB_T50_RS), scanobjectnn_full (all variants), modelnet40, "
        "shapenetpart (normals release) or shapenetpart_h5 (PointNet's hdf5 release)",
    )
    dl.add_argument("--root", required=True, help="data root, e.g. data/scanobjectnn")
    dl.add_argument("--url", help="a mirror of the same archive")
    dl.add_argument(
        "--force", action="store_true", help="download again from scratch even if installed"
    )
    dl.add_argument("--sha256", help="hex SHA-256 the archive must have (pins it)")
    dl.set_defaults(func=_cmd_download)

    conv = sub.add_parser(
        "convert",
        help="convert an RGBD frame, an image or a point file to a point-set file",
        description="INPUT is a colour image with --depth (RGBD frame -> 3D points), an image "
        "(one point per pixel) or a point file (.ply .pcd .las .laz .xyz .npy .npz .h5). The OUTPUT "
        "format follows its suffix.",
    )
    conv.add_argument("input", help="colour image, image or point file")
    conv.add_argument(
        "output", help="point-set file to write (.ply .pcd .las .laz .xyz .npy .npz .h5)"
    )
    conv.add_argument("--depth", help="depth image of an RGBD pair (16-bit PNG or PGM)")
    conv.add_argument(
        "--intrinsics",
        metavar="FX,FY,CX,CY",
        help="pinhole intrinsics (default: PrimeSense 640x480)",
    )
    conv.add_argument(
        "--convention",
        default="redwood",
        choices=("redwood", "tum", "sun", "nyu"),
        help="depth encoding, scale and truncation of the RGBD dataset (default: redwood)",
    )
    conv.add_argument(
        "--normalize", action="store_true", help="image positions in [-0.5, 0.5] (CoC convention)"
    )
    conv.add_argument(
        "--x-as",
        default="auto",
        choices=("auto", "color", "feature", "none"),
        help="how features are stored in .ply/.pcd/.las/.laz (default: auto)",
    )
    conv.add_argument("--ascii", action="store_true", help="ASCII instead of binary .ply/.pcd")
    conv.add_argument(
        "--compress", action="store_true", help="LZF-compressed .pcd (DATA binary_compressed)"
    )
    conv.set_defaults(func=_cmd_convert)

    viz = sub.add_parser(
        "viz",
        help="PNG of Context Cluster cluster assignments over an image or a point cloud",
        description="Colour every point by the cluster center it is assigned to. An image goes "
        "through a CoC model (--checkpoint: a trained checkpoint; else --model, randomly "
        "initialised) and one of its ContextCluster token mixers is drawn (--stage, --block, "
        "--head). A point file goes through one ContextCluster layer over its colours (or "
        "positions), with FPS centers.",
    )
    viz.add_argument(
        "input", help="image file, or point file (.ply .pcd .las .laz .xyz .npy .npz .h5)"
    )
    viz.add_argument("--out", default="cluster_map.png", help="PNG to write")
    viz.add_argument("--model", help="CoC model name for images (default: coc_tiny)")
    viz.add_argument("--checkpoint", help="trained image-model checkpoint (runs/x/best)")
    viz.add_argument("--size", type=int, help="image side fed to the model (default: 224)")
    viz.add_argument("--stage", type=int, default=0, help="stage of the drawn layer")
    viz.add_argument("--block", type=int, default=0, help="block of the drawn layer")
    viz.add_argument("--head", type=int, default=0, help="head of the drawn layer")
    viz.add_argument("--centers", type=int, default=16, help="FPS centers for point files")
    viz.add_argument(
        "--max-points", type=int, default=20000, help="random subset of larger point files"
    )
    viz.add_argument("--seed", type=int, default=0, help="seed of random weights and subsets")
    viz.set_defaults(func=_cmd_viz)

    bench = sub.add_parser(
        "bench",
        help="list or run the benchmark scripts of a source checkout",
        description="Without NAME, list the scripts in the checkout's benchmarks/ folder; with "
        "NAME, run benchmarks/NAME.py with the arguments after --.",
    )
    bench.add_argument("name", nargs="?", help="benchmark to run, e.g. ops")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script (after --)")
    bench.set_defaults(func=_cmd_bench)

    info = sub.add_parser("info", help="print versions and which operator backends are usable")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="convert a rendered RGBD frame and an image to point sets, sample and group "
        "them, print a summary and write a PNG",
    )
    demo.add_argument("--out", default="pointset_demo.png", help="PNG to write")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
    elif isinstance(exc, FileNotFoundError) and not any(
        w in text for w in ("exist", "missing", "not found")
    ):
        text = f"no such file: {text}"
    return " ".join(text.split()) or type(exc).__name__


#: Commands that run long multi-threaded CPU work.
_COMPUTE_COMMANDS = ("train", "eval", "segment")


def _reexec_with_passive_openmp(argv: Sequence[str]) -> None:
    """Run the command again in this process with ``OMP_WAIT_POLICY=PASSIVE`` (once).

    PyTorch's OpenMP threads busy-wait between parallel regions by default. When the cores
    are shared with other work, a waiting thread keeps a core spinning while the thread it
    waits for is descheduled, and a training step gets many times slower (measured here: a
    PointMLP step went from 1 s to 7.5 s under a load of 6 on 2 cores; with passive waiting
    it stayed at 1 s). The policy is read once when the OpenMP runtime loads, which happens
    when ``pointset`` imports torch, so the command re-executes itself (same process id,
    same arguments). An explicit ``OMP_WAIT_POLICY`` in the environment is respected.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        os.execve(sys.executable, [sys.executable, "-m", "pointset.cli", *argv], env)
    except OSError:
        return  # keep going with the default policy


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code.

    Called without ``argv`` (as the ``pointset`` command), ``train`` and ``eval`` first
    re-execute themselves with passive OpenMP waiting (see
    :func:`_reexec_with_passive_openmp`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command in _COMPUTE_COMMANDS:
        _reexec_with_passive_openmp(sys.argv[1:])
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, ImportError) as exc:
        if args.debug:
            raise
        print(f"pointset {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"pointset {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
