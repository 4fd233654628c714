"""examples/rgbd_segment.py on a rendered scene with a checkpoint trained here for one
epoch (tiny test model). Oracle: the script's contract: a .ply with one point per valid
pixel, a PNG, a histogram that counts every point, and the accuracy against the rendered
labels recomputed from the written cloud's colours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "rgbd_segment.py"
sys.path.insert(0, str(REPO / "tests" / "engine"))

import seg_testmodel  # noqa: E402,F401  (registers test_point_seg)


def test_rendered_frame_to_cloud_and_png(tmp_path):
    from pointset import read
    from pointset.engine import Trainer, load_config

    threads = torch.get_num_threads()
    try:
        cfg = load_config(
            REPO / "configs" / "tests" / "tiny_seg.yaml",
            [
                f"data.root={tmp_path / 'scenes'}",
                f"output_dir={tmp_path / 'run'}",
                "train.epochs=1",
            ],
        )
        Trainer(cfg, log=lambda s: None).fit()
    finally:
        torch.set_num_threads(threads)
    spec = importlib.util.spec_from_file_location("rgbd_segment_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "seg"
    result = example.main(["--checkpoint", str(tmp_path / "run" / "best"), "--out", str(out)])
    cloud = read(f"{out}.ply")
    assert cloud.num_points == result["points"] == int(result["histogram"].sum())
    assert Path(f"{out}.png").stat().st_size > 1000
    assert 0.0 <= result["accuracy"] <= 1.0
