"""pointset.engine.data and .distributed: epoch batches, shards, seeded augmentation."""

from __future__ import annotations

import pytest
import torch

from pointset.engine.data import augment, check_augment, epoch_batches, model_input, random_shift
from pointset.engine.distributed import shard_batch
from pointset.engine.seeding import derive_seed, generator


def test_epoch_batches_is_a_seeded_permutation():
    a = epoch_batches(10, 4, True, generator(0, "order", 3))
    b = epoch_batches(10, 4, True, generator(0, "order", 3))
    c = epoch_batches(10, 4, True, generator(0, "order", 4))
    assert [t.tolist() for t in a] == [t.tolist() for t in b]
    assert [t.tolist() for t in a] != [t.tolist() for t in c]
    assert [len(t) for t in a] == [4, 4]  # last incomplete batch dropped
    assert len(set(torch.cat(a).tolist())) == 8


def test_last_batch_is_padded_to_the_process_count():
    batches = epoch_batches(10, 4, False, None, multiple_of=4)
    assert [len(t) for t in batches] == [4, 4, 4]
    assert batches[-1].tolist() == [8, 9, 0, 1]  # topped up from the start, as DistributedSampler


def test_shards_partition_the_global_batch():
    idx = torch.arange(8)
    parts = [shard_batch(idx, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(parts), idx)
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        shard_batch(idx, 0, 3)


def test_augmentation_depends_only_on_the_generator():
    x = torch.rand(4, 32, 3)
    names = ["scale_translate", "shuffle", "rotate_up", "jitter"]
    a = augment(x, "points", names, generator(1, "augment", 0, 0))
    b = augment(x, "points", names, generator(1, "augment", 0, 0))
    assert torch.equal(a, b) and not torch.equal(a, x)
    img = torch.rand(3, 3, 16, 16)
    s = random_shift(img, generator(0))
    assert s.shape == img.shape


def test_unknown_augmentation():
    with pytest.raises(
        ValueError,
        match="unknown points augmentation 'flip' in data.augment; valid: scale_translate",
    ):
        check_augment("points", ["flip"])


def test_model_input_layout():
    assert model_input(torch.zeros(2, 5, 3), "points").shape == (2, 3, 5)
    assert model_input(torch.zeros(2, 3, 4, 4), "image").shape == (2, 3, 4, 4)


def test_derive_seed_is_stable():
    assert derive_seed(0, "order", 1) == derive_seed(0, "order", 1) != derive_seed(0, "order", 2)
    assert 0 <= derive_seed(123) < 2**63


def test_rgbd_folder_splits(tmp_path):
    import json

    from PIL import Image

    from pointset.datasets.render import Box, Sphere, render_rgbd
    from pointset.engine.config import DataConfig
    from pointset.engine.data import load_split

    scenes = {
        "ball": [Sphere((0, 0, 1.5), 0.3, (1, 0, 0))],
        "box": [Box((-0.3, -0.3, 1.2), (0.3, 0.3, 1.8), (0, 0, 1))],
    }
    for split in ("train", "test"):
        folder = tmp_path / split
        folder.mkdir()
        frames = []
        for i, (label, solids) in enumerate(scenes.items()):
            color, depth, k = render_rgbd(solids, width=40, height=30)
            Image.fromarray(color).save(folder / f"c{i}.png")
            Image.fromarray(depth).save(folder / f"d{i}.png")
            frames.append(
                {"color": f"c{i}.png", "depth": f"d{i}.png", "label": label, "intrinsics": list(k)}
            )
        (folder / "frames.json").write_text(json.dumps({"classes": list(scenes), "frames": frames}))
    cfg = DataConfig(name="rgbd_folder", root=str(tmp_path), num_points=32)
    split = load_split(cfg, "test")
    assert split.inputs.shape == (2, 32, 3) and split.labels.tolist() == [0, 1]
    assert list(split.class_names) == ["ball", "box"] and split.kind == "points"
