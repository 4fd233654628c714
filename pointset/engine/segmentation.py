"""``task: segmentation``: per-point class labels, trained and evaluated by the trainer.

Data: a segmentation dataset is held as a :class:`SegSplit`, ``points [M, N, C]`` (xyz
first, then per-point features such as rgb or normals) and ``labels [M, N]`` int64
(``-1`` = ignored), plus for part segmentation the shape ``category [M]`` and the part
classes of each category. Loaders are in :data:`SEG_DATASETS` (``data.name``).

Models follow the segmentation protocol of :mod:`pointset.models` (the card's
``default_cfg`` has ``task: segmentation`` and ``call``):

- ``call: points``: ``model(points [B, C, N])`` returns logits ``[B, N, K]`` or a dict with
  ``"logits"``. A model with a ``loss(output, labels)`` method is trained with it; other
  models with cross-entropy over the non-ignored points (``train.label_smoothing`` is
  torch's, spread over all ``K`` classes).
- ``call: partseg``: ``model(xyz [B, 3, N], normals [B, 3, N], category [B, 16] one-hot)``
  returns log-probabilities ``[B, N, K]``; trained with NLL. At evaluation the scores of
  parts outside the shape's category are masked before the argmax.

Metrics come from the summed per-point confusion matrix (per-class IoU, mIoU, overall
accuracy; ignored points excluded). Datasets with categories may also supply
``shape_iou(pred [B, N], labels [B, N], category [B]) -> [B]`` (the mIoU of each shape);
the trainer then adds ``instance_miou`` (mean over shapes) and ``class_miou`` (mean over
categories of the mean over their shapes). At every evaluation ``predictions.png`` shows
the first test clouds coloured by ground truth and by prediction.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed as D
from .metrics import class_ious, mean_iou, overall_accuracy, segmentation_confusion
from .tasks import fmt_pct, model_task

if TYPE_CHECKING:  # loaders take a config; the config lists the loaders
    from .config import Config, DataConfig

#: Clouds drawn in ``predictions.png``.
PICTURE_CLOUDS = 3


class SegInputs(NamedTuple):
    """A batch: ``points [B, N, C]`` and the shape ``category [B]`` (``None`` without)."""

    points: Tensor
    category: Tensor | None


@dataclass
class SegSplit:
    """One segmentation split held in memory.

    Attributes:
        points: ``[M, N, C]`` float32, xyz in the first three channels.
        labels: ``[M, N]`` int64 class per point, ``-1`` = ignored.
        class_names: names in label order.
        category: ``[M]`` int64 shape category (part segmentation), else ``None``.
        category_parts: per category, the label ids of its parts (evaluation masking).
        shape_iou: optional per-shape mIoU function (see the module docstring).
        intrinsics: ``(fx, fy, cx, cy)`` and ``frame_size`` ``(W, H)`` of the camera the
            clouds were captured with, when there is one.
    """

    points: Tensor
    labels: Tensor
    class_names: Sequence[str]
    category: Tensor | None = None
    category_parts: Sequence[Sequence[int]] | None = None
    shape_iou: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    frame_size: tuple[int, int] | None = None
    kind: str = field(default="points")

    def __post_init__(self) -> None:
        if self.points.dim() != 3 or self.points.size(-1) < 3:
            raise ValueError(f"points must be [M, N, C >= 3], got {tuple(self.points.shape)}")
        if self.labels.shape != self.points.shape[:2]:
            raise ValueError(
                f"labels must be {tuple(self.points.shape[:2])}, got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.points.size(0)

    @property
    def in_channels(self) -> int:
        return self.points.size(-1)

    def batch(self, index: Tensor, device: torch.device) -> tuple[SegInputs, Tensor]:
        """Inputs and labels of samples ``index [B]`` on ``device``."""
        cat = None if self.category is None else self.category[index].to(device)
        return SegInputs(self.points[index].to(device), cat), self.labels[index].to(device)

    def subset(self, index: Tensor) -> SegSplit:
        """The samples ``index [M']`` as a split of their own."""
        cat = None if self.category is None else self.category[index]
        return dataclasses.replace(
            self, points=self.points[index], labels=self.labels[index], category=cat
        )

    def part_mask(self, device: torch.device) -> Tensor | None:
        """``[num_categories, K]`` bool: which labels belong to each category."""
        if self.category_parts is None:
            return None
        mask = torch.zeros(len(self.category_parts), len(self.class_names), dtype=torch.bool)
        for c, parts in enumerate(self.category_parts):
            mask[c, list(parts)] = True
        return mask.to(device)


# -- datasets --------------------------------------------------------------------------


def _synthetic_scenes(cfg: DataConfig, split: str) -> SegSplit:
    from pointset.datasets.synthetic_scenes import FRAME_SIZE, SyntheticScenes

    ds = SyntheticScenes(cfg.root, split, num_points=cfg.num_points, **cfg.options)
    return SegSplit(
        ds.points, ds.labels, ds.class_names, intrinsics=ds.intrinsics, frame_size=FRAME_SIZE
    )


def _rgbd_seg_folder(cfg: DataConfig, split: str) -> SegSplit:
    from pointset.datasets.rgbd_seg_folder import RGBDSegFolder

    ds = RGBDSegFolder(os.path.join(cfg.root, split), num_points=cfg.num_points, **cfg.options)
    return SegSplit(ds.points, ds.labels, ds.class_names)


def _shapenetpart(cfg: DataConfig, split: str) -> SegSplit:
    """ShapeNetPart: the trainer's ``train`` split is the official ``trainval``. Each
    shape's points are drawn once (epoch 0 of the dataset's seeded draw) and held."""
    from pointset.datasets.shapenetpart import PART_OFFSETS, PARTS_PER_CATEGORY, ShapeNetPart

    from .metrics import shapenet_part_ious

    name = "trainval" if split == "train" else split
    ds = ShapeNetPart(cfg.root, name, num_points=cfg.num_points, **cfg.options)
    items = [ds[i] for i in range(len(ds))]
    points = torch.stack([it["points"].transpose(0, 1) for it in items]).contiguous()
    parts = [range(o, o + n) for o, n in zip(PART_OFFSETS, PARTS_PER_CATEGORY)]
    return SegSplit(
        points,
        torch.stack([it["labels"] for it in items]),
        ds.class_names,
        category=torch.stack([it["category"] for it in items]).long(),
        category_parts=[list(p) for p in parts],
        shape_iou=shapenet_part_ious,
    )


#: ``data.name`` -> loader of one split of a segmentation dataset.
SEG_DATASETS: dict[str, Callable[[DataConfig, str], SegSplit]] = {
    "synthetic_scenes": _synthetic_scenes,
    "rgbd_seg_folder": _rgbd_seg_folder,
    "shapenetpart": _shapenetpart,
}


def load_seg_split(cfg: DataConfig, split: str) -> SegSplit:
    """Split ``"train"`` or ``"test"`` of the segmentation dataset described by ``cfg``."""
    if cfg.name not in SEG_DATASETS:
        raise ValueError(
            f"dataset {cfg.name!r} has no per-point labels; segmentation datasets: "
            f"{', '.join(SEG_DATASETS)}"
        )
    try:
        return SEG_DATASETS[cfg.name](cfg, split)
    except TypeError as exc:  # an option the dataset does not take
        raise ValueError(f"data.options {cfg.options} do not fit {cfg.name}: {exc}") from None


# -- model calls -----------------------------------------------------------------------


#: Augmentations usable in ``data.augment`` for segmentation (labels move with points).
def _augmentations() -> dict[str, Any]:
    from pointset.data import transforms as T

    return {
        "scale_translate": T.RandomScaleTranslate(),
        "scale": T.RandomScaleTranslate(scale=(0.8, 1.25), shift=(0.0, 0.0)),
        "shuffle": T.Shuffle(),
        "rotate_up": T.RandomRotate(axis=1),
        "rotate_so3": T.RandomRotateSO3(),
        "jitter": T.Jitter(),
        "dropout": T.PointDropout(),
    }


def model_call(name: str) -> str:
    """``"points"`` or ``"partseg"``: how the registered segmentation model is called."""
    from pointset.models import model_card

    return model_card(name).default_cfg.get("call", "points")


def forward(model: nn.Module, call: str, inputs: SegInputs, num_categories: int = 16) -> Any:
    """Run ``model`` on a batch in its calling convention; returns its raw output."""
    x = inputs.points.transpose(1, 2).contiguous()  # [B, C, N]
    if call == "partseg":
        if inputs.category is None or x.size(1) < 6:
            raise ValueError("a partseg model needs xyz + normals and a shape category")
        onehot = F.one_hot(inputs.category, num_categories).to(x.dtype)
        return model(x[:, :3], x[:, 3:6], onehot)
    return model(x)


def logits_of(output: Any) -> Tensor:
    """``[B, N, K]`` per-point scores of a model output (tensor or dict with ``logits``)."""
    if isinstance(output, dict):
        if "logits" not in output:
            raise ValueError(
                f"a segmentation model's dict output needs 'logits', got {list(output)}"
            )
        return output["logits"]
    return output


def masked_prediction(logits: Tensor, category: Tensor | None, mask: Tensor | None) -> Tensor:
    """Argmax over classes ``[B, N]``, restricted to each shape's parts when ``mask``
    (``[num_categories, K]``) is given."""
    if mask is not None and category is not None:
        allowed = mask[category].unsqueeze(1)  # [B, 1, K]
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.argmax(-1)


def _base(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class SegmentationTask:
    """Per-point classification: see the module docstring."""

    name = "segmentation"
    best_metrics = ("miou", "oa")
    best_label = "mIoU"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.call = "points"

    def load_split(self, data: DataConfig, split: str) -> SegSplit:
        return load_seg_split(data, split)

    def check(self, model_name: str, split: SegSplit) -> None:
        if model_task(model_name) != self.name:
            raise ValueError(
                f"model {model_name!r} is a {model_task(model_name)} model but the config's "
                f"task is segmentation"
            )
        self.call = model_call(model_name)
        if self.call not in ("points", "partseg"):
            raise ValueError(f"model {model_name!r} has an unknown call {self.call!r}")
        if self.call == "partseg" and split.category is None:
            raise ValueError(f"model {model_name!r} needs shape categories; dataset has none")
        table = _augmentations()
        for name in self.cfg.data.augment:
            if name not in table:
                raise ValueError(
                    f"unknown segmentation augmentation {name!r} in data.augment; valid: "
                    f"{', '.join(table)}"
                )

    def model_options(self, split: SegSplit) -> dict[str, Any]:
        return {} if self.call == "partseg" else {"in_channels": split.in_channels}

    def _augment(self, points: Tensor, labels: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        table = _augmentations()
        for name in self.cfg.data.augment:
            points, labels = table[name].with_labels(points, labels, g)
        return points, labels

    def loss(self, model: nn.Module, output: Any, y: Tensor) -> Tensor:
        if self.call == "partseg":
            logp = logits_of(output)
            return F.nll_loss(logp.reshape(-1, logp.size(-1)), y.reshape(-1), ignore_index=-1)
        own = getattr(_base(model), "loss", None)
        if callable(own):
            loss, _parts = own(output, y)
            return loss
        logits = logits_of(output)
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            y.reshape(-1),
            ignore_index=-1,
            label_smoothing=self.cfg.train.label_smoothing,
        )

    def train_step(
        self, model: nn.Module, split: SegSplit, x: SegInputs, y: Tensor, g: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        points, y = self._augment(x.points, y, g)
        output = forward(model, self.call, SegInputs(points, x.category))
        loss = self.loss(model, output, y)
        with torch.no_grad():
            keep = y != -1
            correct = (logits_of(output).argmax(-1) == y)[keep].sum()
        return loss, correct, keep.sum()

    def eval_batch(
        self, model: nn.Module, split: SegSplit, x: SegInputs, y: Tensor, num_classes: int
    ) -> tuple[Tensor, Tensor]:
        output = forward(model, self.call, x)
        loss = self.loss(model, output, y)
        pred = masked_prediction(logits_of(output), x.category, split.part_mask(y.device))
        if split.shape_iou is not None:
            ious = split.shape_iou(pred, y, x.category)
            self._shape_sums += _category_sums(ious, x.category, self._shape_sums.size(0))
        return loss, segmentation_confusion(pred, y, num_classes)

    def begin_eval(self, split: SegSplit, device: torch.device) -> None:
        """Reset the per-category shape-IoU sums (``[categories, 2]``: sum, count)."""
        n = len(split.category_parts) if split.category_parts is not None else 1
        self._shape_sums = torch.zeros(n, 2, dtype=torch.float64, device=device)

    def end_eval(self) -> dict[str, Any]:
        """Shape metrics from the sums of all processes (empty without ``shape_iou``)."""
        sums = D.all_reduce_sum(self._shape_sums).cpu()
        if not sums[:, 1].sum():
            return {}
        seen = sums[:, 1] > 0
        return {
            "instance_miou": float(sums[:, 0].sum() / sums[:, 1].sum()),
            "class_miou": float((sums[seen, 0] / sums[seen, 1]).mean()),
        }

    def metrics(self, cm: Tensor) -> dict[str, Any]:
        iou = [None if v != v else v for v in class_ious(cm).tolist()]  # NaN: class absent
        return {"miou": mean_iou(cm), "oa": overall_accuracy(cm), "iou": iou}

    def split_record(self, result: dict[str, Any], split: str) -> dict[str, Any]:
        keys = ("miou", "oa", "loss", "iou", "instance_miou", "class_miou")
        return {f"{split}_{key}": result[key] for key in keys if key in result}

    def summary(self, result: dict[str, Any], class_names: list[str]) -> str:
        head = f"mIoU {fmt_pct(result['miou'])}  OA {fmt_pct(result['oa'])}"
        for key, label in (("instance_miou", "instance mIoU"), ("class_miou", "class mIoU")):
            if key in result:
                head += f"  {label} {fmt_pct(result[key])}"
        width = max((len(n) for n in class_names), default=0)
        rows = [
            f"  {name:<{width}}  IoU {fmt_pct(iou)}"
            for name, iou in zip(class_names, result["iou"])
        ]
        return "\n".join([head, *rows])

    def epoch_summary(self, record: dict[str, Any], split: str) -> str:
        return (
            f"train acc {fmt_pct(record['train_acc'])}  {split} mIoU "
            f"{fmt_pct(record.get(f'{split}_miou'))}  OA {fmt_pct(record.get(f'{split}_oa'))}"
        )

    @torch.no_grad()
    def save_pictures(self, model: nn.Module, split: SegSplit, folder: str, title: str) -> None:
        """``folder/predictions.png``: the first test clouds, ground truth beside prediction."""
        from .plots import save_segmentation

        if len(split) == 0:
            return
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        idx = torch.arange(min(PICTURE_CLOUDS, len(split)))
        x, y = split.batch(idx, device)
        output = forward(model, self.call, x)
        pred = masked_prediction(logits_of(output), x.category, split.part_mask(device))
        model.train(was_training)
        save_segmentation(
            x.points[..., :3].cpu(), pred.cpu(), y.cpu(), os.path.join(folder, "predictions.png"),
            list(split.class_names), titles=[f"{title} #{int(i)}" for i in idx],
        )  # fmt: skip


def _category_sums(values: Tensor, category: Tensor, n: int) -> Tensor:
    """``[n, 2]``: per category the sum of ``values [B]`` and the count of its shapes."""
    out = torch.zeros(n, 2, dtype=torch.float64, device=values.device)
    out[:, 0].index_add_(0, category, values.double())
    out[:, 1].index_add_(0, category, torch.ones_like(values, dtype=torch.float64))
    return out


# -- inference on whole clouds ---------------------------------------------------------


@torch.no_grad()
def segment_points(
    model: nn.Module,
    points: Tensor,
    num_points: int,
    call: str = "points",
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Label every point of a cloud of any size with a model trained on ``num_points``.

    The points are put in a random order and cut into chunks of ``num_points`` (the last
    one topped up with points repeated from the start of the order); every chunk is one
    model input, so each point is predicted once, in the company of a uniform sample of
    the cloud like the training samples.

    Args:
        model: a ``call: points`` segmentation model in eval mode.
        points: ``[P, C]`` xyz then features, as the model was trained on.
        num_points: points per model input.
        call: the model's calling convention (only ``"points"`` works without categories).
        batch_size: chunks per forward pass.
        generator: drives the random order.

    Returns:
        ``[P]`` int64 predicted classes.
    """
    if call != "points":
        raise ValueError(f"whole-cloud segmentation needs a call='points' model, got {call!r}")
    if points.dim() != 2 or points.size(0) == 0:
        raise ValueError(f"points must be a non-empty [P, C] tensor, got {tuple(points.shape)}")
    p = points.size(0)
    device = next(model.parameters()).device
    order = torch.randperm(p, generator=generator)
    pad = (-p) % num_points
    if pad:
        order = torch.cat([order, order[torch.arange(pad) % p]])
    chunks = points[order].reshape(-1, num_points, points.size(1))
    preds = []
    for batch in chunks.split(batch_size):
        out = forward(model, call, SegInputs(batch.to(device), None))
        preds.append(logits_of(out).argmax(-1).cpu())
    pred = torch.cat(preds).reshape(-1)
    labels = torch.empty(p, dtype=torch.long)
    labels[order[:p]] = pred[:p]
    return labels


def dataset_camera(
    cfg: DataConfig,
) -> tuple[tuple[float, float, float, float], tuple[int, int]] | None:
    """Intrinsics ``(fx, fy, cx, cy)`` and frame size ``(W, H)`` of a segmentation dataset's
    frames, when all of them share one camera (the built-in scenes); else ``None``."""
    if cfg.name == "synthetic_scenes":
        from pointset.datasets.synthetic_scenes import FRAME_SIZE, INTRINSICS

        return INTRINSICS, FRAME_SIZE
    return None


def scaled_intrinsics(
    camera: tuple[tuple[float, float, float, float], tuple[int, int]] | None,
    width: int,
    height: int,
) -> tuple[float, float, float, float]:
    """``camera``'s intrinsics for a frame of ``width x height`` (the same field of view);
    without a camera, the PrimeSense intrinsics scaled to the frame."""
    if camera is None:
        from pointset.data import PRIMESENSE_DEFAULT

        (fx, fy, cx, cy), (w0, h0) = tuple(PRIMESENSE_DEFAULT), (640, 480)
    else:
        (fx, fy, cx, cy), (w0, h0) = camera
    sx, sy = width / w0, height / h0
    return (fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)
