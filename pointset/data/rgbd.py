"""RGBD frames -> 3-D point sets (pinhole back-projection, Open3D conventions).

A depth pixel ``d`` at row ``v``, column ``u`` becomes the camera-frame point

    z = d / depth_scale,   x = (u - cx) * z / fx,   y = (v - cy) * z / fy

(metres; x right, y down, z forward), with the pixel's colour as its feature. The
arithmetic follows Open3D's ``RGBDImage.create_from_color_and_depth`` +
``PointCloud.create_from_rgbd_image`` so that both keep the same pixels:

- depth is converted to float32 and divided by ``float32(depth_scale)`` in float32;
- a pixel is kept when that float32 depth ``z`` satisfies ``z > 0`` and ``z < depth_trunc``
  (the comparison made in double precision, as Open3D drops ``z >= depth_trunc``); so
  zero, negative, NaN and too-far depths are dropped;
- x and y are computed from ``z`` in float64 (float32 on devices without float64) and
  returned in the requested dtype.

Dataset conventions (:data:`RGBD_CONVENTIONS`, mirroring Open3D's
``create_from_{redwood,tum,sun,nyu}_format``):

========  ===========  ===========  =====================================================
name      depth_scale  depth_trunc  raw depth decoding
========  ===========  ===========  =====================================================
redwood   1000         4.0          uint16 millimetres
tum       5000         4.0          uint16, 5000 units per metre
sun       1000         7.0          uint16 with bits rotated: ``(d >> 3) | (d << 13)``
nyu       1000         7.0          Kinect disparity, see :func:`decode_nyu_depth`
========  ===========  ===========  =====================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .io import require_file
from .point_set import PointSet, batch_from_packed


class PinholeIntrinsics(NamedTuple):
    """Pinhole camera intrinsics in pixels: focal lengths and principal point.

    ``cx`` is along columns (u), ``cy`` along rows (v).
    """

    fx: float
    fy: float
    cx: float
    cy: float

    def matrix(self) -> Tensor:
        """The 3x3 intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (float64)."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=torch.float64,
        )

    @classmethod
    def from_any(cls, intrinsics: Any) -> PinholeIntrinsics:
        """Accept ``PinholeIntrinsics``, ``(fx, fy, cx, cy)``, a 3x3 matrix (array, tensor
        or nested list) or an ``open3d.camera.PinholeCameraIntrinsic``.

        Raises ``ValueError`` for other shapes, non-finite values, non-positive focal
        lengths, a non-zero skew or a bottom row other than ``[0, 0, 1]``.
        """
        if isinstance(intrinsics, PinholeIntrinsics):
            values = tuple(intrinsics)
        else:
            if hasattr(intrinsics, "intrinsic_matrix"):  # open3d PinholeCameraIntrinsic
                intrinsics = intrinsics.intrinsic_matrix
            if isinstance(intrinsics, Tensor):
                intrinsics = intrinsics.detach().cpu().numpy()
            try:
                arr = np.asarray(intrinsics, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"intrinsics must be (fx, fy, cx, cy) or a 3x3 matrix, got {intrinsics!r}"
                ) from exc
            if arr.shape == (4,):
                values = tuple(float(v) for v in arr)
            elif arr.shape == (3, 3):
                if not np.allclose(arr[2], [0.0, 0.0, 1.0]):
                    raise ValueError(
                        f"intrinsic matrix bottom row must be [0, 0, 1], got {arr[2].tolist()}"
                    )
                if arr[0, 1] != 0.0 or arr[1, 0] != 0.0:
                    raise ValueError(
                        f"intrinsic matrix must have zero skew, got K[0,1]={arr[0, 1]}, "
                        f"K[1,0]={arr[1, 0]}"
                    )
                values = (float(arr[0, 0]), float(arr[1, 1]), float(arr[0, 2]), float(arr[1, 2]))
            else:
                raise ValueError(
                    f"intrinsics must be (fx, fy, cx, cy) or a 3x3 matrix, got shape {arr.shape}"
                )
        fx, fy, cx, cy = values
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"intrinsics must be finite, got fx={fx}, fy={fy}, cx={cx}, cy={cy}")
        if fx <= 0 or fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
        return cls(fx, fy, cx, cy)


#: Open3D's ``PrimeSenseDefault`` (640 x 480 Kinect / Xtion): fx = fy = 525, cx = 319.5,
#: cy = 239.5.
PRIMESENSE_DEFAULT = PinholeIntrinsics(525.0, 525.0, 319.5, 239.5)


def _as_tensor(value: Any, name: str, device: torch.device | None) -> Tensor:
    """numpy / array-like / tensor -> tensor (uint16 arrays widened to int32)."""
    if isinstance(value, Tensor):
        if device is not None and value.device != device:
            raise ValueError(f"{name} is on {value.device} but depth is on {device}")
        if value.dtype == torch.uint16:
            value = value.to(torch.int32)
        return value
    arr = np.asarray(value)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.uint16 or arr.dtype == np.uint32:
        arr = arr.astype(np.int64 if arr.dtype == np.uint32 else np.int32)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, copy=True, order="C")
    try:
        out = torch.from_numpy(arr)
    except TypeError as exc:
        raise ValueError(f"{name} has unsupported dtype {arr.dtype}") from exc
    return out.to(device) if device is not None else out


def _float32_at_least(value: float) -> float:
    """The smallest float32 that is >= ``value`` (as a Python float)."""
    with np.errstate(over="ignore"):
        f = np.float32(value)
    if float(f) < value:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def from_rgbd(
    color: Any,
    depth: Any,
    intrinsics: Any = PRIMESENSE_DEFAULT,
    depth_scale: float = 1000.0,
    depth_trunc: float = 3.0,
    dtype: torch.dtype = torch.float32,
) -> PointSet:
    """Back-project an RGBD frame (or a stack of frames) to a coloured 3-D point set.

    Args:
        color: ``[H, W, 3]`` (or ``[B, H, W, 3]``) uint8 colours, or floats in ``[0, 1]``;
            a 4th (alpha) channel is dropped, ``[H, W]`` grey gives one channel. numpy
            array or tensor.
        depth: ``[H, W]`` (or ``[B, H, W]``) raw depth, any integer (e.g. uint16) or float
            dtype, numpy array or tensor; divided by ``depth_scale`` to get metres.
        intrinsics: see :meth:`PinholeIntrinsics.from_any`; default PrimeSense.
        depth_scale: depth units per metre (1000 for millimetres; 1 for metric floats).
        depth_trunc: depths at or beyond this (metres) are dropped; ``math.inf`` keeps all.
        dtype: floating dtype of ``pos`` and ``x``.

    Returns:
        ``PointSet`` with ``pos [N, 3]`` camera-frame metres, ``x [N, 3]`` colours in
        ``[0, 1]`` and ``pixel [N, 2]`` long ``(row, col)``, valid pixels in row-major
        order. A stack gives a PyG ``Batch`` of ``B`` clouds. Tensors live on the depth's
        device.

    Raises:
        ValueError: wrong shapes or dtypes, floating colours outside ``[0, 1]`` (0-255
            colours must come as uint8), colour and depth of different sizes (both sizes
            are named), bad intrinsics, non-positive ``depth_scale``/``depth_trunc``.
    """
    depth_t = _as_tensor(depth, "depth", None)
    device = depth_t.device
    color_t = _as_tensor(color, "color", device)
    if depth_t.dim() not in (2, 3):
        raise ValueError(f"depth must have shape [H, W] or [B, H, W], got {tuple(depth_t.shape)}")
    if depth_t.dtype == torch.bool or depth_t.is_complex():
        raise ValueError(f"depth must be an integer or floating array, got dtype {depth_t.dtype}")
    batched = depth_t.dim() == 3
    if color_t.dim() == depth_t.dim():  # grey
        color_t = color_t.unsqueeze(-1)
    if color_t.dim() != depth_t.dim() + 1 or color_t.size(-1) not in (1, 3, 4):
        want = "[B, H, W, 3]" if batched else "[H, W, 3]"
        raise ValueError(
            f"color must have shape {want} (or 1/4 channels) to go with depth "
            f"{tuple(depth_t.shape)}, got {tuple(color_t.shape)}"
        )
    if color_t.shape[:-1] != depth_t.shape:
        raise ValueError(
            f"color and depth sizes differ: color is {tuple(color_t.shape[:-1])} (H, W) "
            f"but depth is {tuple(depth_t.shape)}"
        )
    if color_t.dtype != torch.uint8 and not color_t.is_floating_point():
        raise ValueError(f"color must be uint8 or floating in [0, 1], got dtype {color_t.dtype}")
    if color_t.is_floating_point() and color_t.numel():
        lo, hi = float(color_t.min()), float(color_t.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            raise ValueError(
                f"floating color must lie in [0, 1], got range [{lo}, {hi}]"
                + (" (0-255 colours: pass them as uint8 or divide by 255)" if hi > 1 else "")
            )
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be floating, got {dtype}")
    k = PinholeIntrinsics.from_any(intrinsics)
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(f"depth_scale must be a positive finite number, got {depth_scale}")
    if not depth_trunc > 0:
        raise ValueError(f"depth_trunc must be positive (math.inf for none), got {depth_trunc}")

    scale = torch.tensor(depth_scale, dtype=torch.float32, device=device)
    z32 = depth_t.to(torch.float32) / scale
    valid = (z32 > 0) & (z32 < _float32_at_least(depth_trunc))
    index = valid.nonzero()  # [N, 2] (row, col) or [N, 3] (frame, row, col), row-major
    wd = _work_dtype(device)
    z = z32[valid].to(wd)
    rows, cols = index[:, -2], index[:, -1]
    px = (cols.to(wd) - k.cx) * z / k.fx
    py = (rows.to(wd) - k.cy) * z / k.fy
    pos = torch.stack((px, py, z), dim=1).to(dtype)
    rgb = color_t[valid][:, :3]
    rgb = rgb.to(wd) / 255.0 if rgb.dtype == torch.uint8 else rgb.to(wd)
    rgb = rgb.to(dtype)
    pixel = index[:, -2:].contiguous()
    if not batched:
        return PointSet(x=rgb, pos=pos, pixel=pixel)
    sizes = torch.bincount(index[:, 0], minlength=depth_t.size(0))
    return batch_from_packed(sizes, x=rgb, pos=pos, pixel=pixel)


# -- dataset conventions ---------------------------------------------------------------


def _integer_depth(depth: Any, convention: str) -> Tensor:
    d = _as_tensor(depth, "depth", None)
    if d.is_floating_point() or d.dtype == torch.bool or d.is_complex():
        raise ValueError(f"{convention} depth must be the raw uint16 image, got dtype {d.dtype}")
    d = d.to(torch.int32)
    if d.numel() and (int(d.min()) < 0 or int(d.max()) > 0xFFFF):
        raise ValueError(
            f"{convention} depth must hold 16-bit values, got range "
            f"[{int(d.min())}, {int(d.max())}]"
        )
    return d


def decode_sun_depth(depth: Any) -> Tensor:
    """SUN3D raw depth -> millimetres: rotate the 16 bits right by 3, ``(d >> 3) | (d << 13)``.

    ``depth``: ``[..., H, W]`` uint16 (any integer dtype with 16-bit values). Returns int32.
    """
    d = _integer_depth(depth, "sun")
    return ((d >> 3) | (d << 13)) & 0xFFFF


def decode_nyu_depth(depth: Any) -> Tensor:
    """NYU Depth v2 raw frame -> millimetres, as Open3D's ``create_from_nyu_format``.

    ``depth`` is the 16-bit image as read big-endian from the dataset's PGM files (what
    :func:`read_pgm` and Open3D's NYU example return). The samples are byte-swapped, read
    as Kinect disparity ``k``, and converted with ``351.3 / (1092.5 - k)`` metres, rounded
    to millimetres; non-positive results become 0 (invalid). Values above 65535 mm (only
    disparities >= 1088, far beyond the 7 m truncation) saturate. Returns int32.
    """
    d = _integer_depth(depth, "nyu")
    k = ((d & 0xFF) << 8) | (d >> 8)
    metres = 351.3 / (1092.5 - k.to(_work_dtype(k.device)))
    mm = torch.floor(metres * 1000.0 + 0.5).clamp(max=65535.0)
    return torch.where(metres > 0, mm, torch.zeros_like(mm)).to(torch.int32)


@dataclass(frozen=True)
class RGBDConvention:
    """How a dataset stores depth: units per metre, truncation, raw-value decoding."""

    name: str
    depth_scale: float
    depth_trunc: float
    decode: Callable[[Any], Any] | None = None


#: The dataset conventions of Open3D's ``RGBDImage.create_from_*_format``.
RGBD_CONVENTIONS: dict[str, RGBDConvention] = {
    "redwood": RGBDConvention("redwood", 1000.0, 4.0),
    "tum": RGBDConvention("tum", 5000.0, 4.0),
    "sun": RGBDConvention("sun", 1000.0, 7.0, decode_sun_depth),
    "nyu": RGBDConvention("nyu", 1000.0, 7.0, decode_nyu_depth),
}


def from_rgbd_convention(
    color: Any,
    depth: Any,
    convention: str,
    intrinsics: Any = PRIMESENSE_DEFAULT,
    dtype: torch.dtype = torch.float32,
) -> PointSet:
    """:func:`from_rgbd` with a dataset's depth decoding, scale and truncation.

    ``convention`` is a key of :data:`RGBD_CONVENTIONS`: ``"redwood"``, ``"tum"``,
    ``"sun"`` or ``"nyu"``; ``depth`` is the raw depth image as stored by that dataset.
    """
    if convention not in RGBD_CONVENTIONS:
        raise ValueError(
            f"unknown RGBD convention {convention!r}; valid: {', '.join(RGBD_CONVENTIONS)}"
        )
    conv = RGBD_CONVENTIONS[convention]
    if conv.decode is not None:
        device = depth.device if isinstance(depth, Tensor) else None
        depth = conv.decode(depth)
        if device is not None:
            depth = depth.to(device)
    return from_rgbd(color, depth, intrinsics, conv.depth_scale, conv.depth_trunc, dtype)


def from_rgbd_redwood(color: Any, depth: Any, intrinsics: Any = PRIMESENSE_DEFAULT) -> PointSet:
    """Redwood frame: uint16 millimetres, truncated at 4 m."""
    return from_rgbd_convention(color, depth, "redwood", intrinsics)


def from_rgbd_tum(color: Any, depth: Any, intrinsics: Any = PRIMESENSE_DEFAULT) -> PointSet:
    """TUM RGB-D frame: uint16 at 5000 units per metre, truncated at 4 m."""
    return from_rgbd_convention(color, depth, "tum", intrinsics)


def from_rgbd_sun(color: Any, depth: Any, intrinsics: Any = PRIMESENSE_DEFAULT) -> PointSet:
    """SUN3D frame: bit-rotated uint16 millimetres, truncated at 7 m."""
    return from_rgbd_convention(color, depth, "sun", intrinsics)


def from_rgbd_nyu(color: Any, depth: Any, intrinsics: Any = PRIMESENSE_DEFAULT) -> PointSet:
    """NYU Depth v2 frame: raw disparity PGM (see :func:`decode_nyu_depth`), 7 m."""
    return from_rgbd_convention(color, depth, "nyu", intrinsics)


# -- files -----------------------------------------------------------------------------


def read_pgm(path: str | os.PathLike) -> np.ndarray:
    """Read a binary (P5) PGM: ``[H, W]`` uint8, or uint16 read big-endian (the PGM rule)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    fields: list[bytes] = []
    i = 0
    while len(fields) < 4:
        while i < len(data) and data[i : i + 1].isspace():
            i += 1
        if i < len(data) and data[i : i + 1] == b"#":
            while i < len(data) and data[i : i + 1] not in (b"\n", b"\r"):
                i += 1
            continue
        start = i
        while i < len(data) and not data[i : i + 1].isspace():
            i += 1
        if start == i:
            raise ValueError(f"{path}: truncated PGM header")
        fields.append(data[start:i])
    i += 1  # the single whitespace after maxval
    if fields[0] != b"P5":
        raise ValueError(f"{path}: not a binary PGM (magic {fields[0][:8]!r}, expected b'P5')")
    try:
        width, height, maxval = (int(v) for v in fields[1:])
    except ValueError as exc:
        raise ValueError(f"{path}: bad PGM header {fields!r}") from exc
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
    need = width * height * dtype.itemsize
    if len(data) - i < need:
        raise ValueError(
            f"{path}: truncated PGM: {width}x{height} needs {need} bytes, {len(data) - i} present"
        )
    img = np.frombuffer(data, dtype=dtype, count=width * height, offset=i)
    return img.reshape(height, width).astype(dtype.newbyteorder("="))


def _read_image(path: str, what: str, mode: str | None = None) -> np.ndarray:
    """Pixels of the image file ``path`` (converted to ``mode``); an unreadable file raises
    a ``ValueError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except UnidentifiedImageError:
        size = os.path.getsize(path)
        why = "is empty" if size == 0 else "is not an image file Pillow can read"
        raise ValueError(f"{what} image {path} {why}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or damaged data
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{what} image {path} is damaged: {detail}") from None


def read_color(path: str | os.PathLike) -> np.ndarray:
    """The pixels of a colour image file as uint8 ``[H, W, 3]`` RGB.

    Any format Pillow reads, converted to RGB. Raises ``FileNotFoundError`` /
    ``IsADirectoryError`` when ``path`` is not a file and ``ValueError`` naming the file when
    it is empty or damaged.
    """
    path = require_file(path, "colour image")
    return _read_image(path, "color", "RGB")


#: Pillow modes that hold depth: 16-bit (PNG), 32-bit integer and 32-bit float images.
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """The raw samples of a depth image file as ``[H, W]`` (no scale applied).

    A 16-bit PNG (or another 16-bit, 32-bit integer or float single-channel image Pillow
    reads) or a binary PGM (NYU, via :func:`read_pgm`). 8-bit and palette images are
    rejected with ``ValueError``, since they cannot hold depth; a missing file raises
    ``FileNotFoundError``.
    """
    path = require_file(path, "depth image")
    if path.lower().endswith((".pgm", ".pnm")):
        return read_pgm(path)
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
    except Exception:  # unreadable: _read_image below names the damage
        mode = None
    if mode is not None and mode not in _DEPTH_MODES:
        hint = " (8-bit values cannot hold depth)" if mode in ("L", "P", "1", "LA", "PA") else ""
        raise ValueError(
            f"{path}: depth must be a 16-bit (or 32-bit integer / float) single-channel "
            f"image, got Pillow mode {mode!r}{hint}"
        )
    arr = _read_image(path, "depth")
    if arr.ndim != 2:
        raise ValueError(f"{path}: depth image must have one channel, got shape {arr.shape}")
    return arr


def read_rgbd(
    color_path: str | os.PathLike,
    depth_path: str | os.PathLike,
    convention: str = "redwood",
    intrinsics: Any = None,
    dtype: torch.dtype = torch.float32,
) -> PointSet:
    """Read a colour image and a depth image and back-project them.

    Colour: any format Pillow reads (converted to RGB). Depth: a 16-bit PNG (or another
    16-bit, 32-bit integer or float single-channel image Pillow reads) or a binary PGM
    (NYU); 8-bit and palette images are rejected with ``ValueError``, since they cannot
    hold depth. ``convention`` as in
    :func:`from_rgbd_convention`; ``intrinsics=None`` means :data:`PRIMESENSE_DEFAULT`.
    """
    color_path = require_file(color_path, "colour image")
    depth_path = require_file(depth_path, "depth image")
    color = read_color(color_path)
    depth = read_depth(depth_path)
    if color.shape[:2] != depth.shape:
        raise ValueError(
            f"color {color_path} is {color.shape[:2]} (H, W) but depth {depth_path} is {depth.shape}"
        )
    k = PRIMESENSE_DEFAULT if intrinsics is None else intrinsics
    return from_rgbd_convention(color, depth, convention, k, dtype)
