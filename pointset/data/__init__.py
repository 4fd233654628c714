"""Point sets and conversions: images, RGBD frames, arrays, files, Open3D, pytorch3d."""

from .image import coc_input, from_image, grid_positions, to_image
from .interop import from_open3d, from_pytorch3d, to_open3d, to_pytorch3d
from .io import read, write
from .layout import from_dense, to_dense
from .point_set import PointSet, batch_from_packed
from .rgbd import (
    PRIMESENSE_DEFAULT,
    RGBD_CONVENTIONS,
    PinholeIntrinsics,
    RGBDConvention,
    decode_nyu_depth,
    decode_sun_depth,
    from_rgbd,
    from_rgbd_convention,
    from_rgbd_nyu,
    from_rgbd_redwood,
    from_rgbd_sun,
    from_rgbd_tum,
    read_pgm,
    read_rgbd,
)

__all__ = [
    "PRIMESENSE_DEFAULT",
    "RGBD_CONVENTIONS",
    "PinholeIntrinsics",
    "PointSet",
    "RGBDConvention",
    "batch_from_packed",
    "coc_input",
    "decode_nyu_depth",
    "decode_sun_depth",
    "from_dense",
    "from_image",
    "from_open3d",
    "from_pytorch3d",
    "from_rgbd",
    "from_rgbd_convention",
    "from_rgbd_nyu",
    "from_rgbd_redwood",
    "from_rgbd_sun",
    "from_rgbd_tum",
    "grid_positions",
    "read",
    "read_pgm",
    "read_rgbd",
    "to_dense",
    "to_image",
    "to_open3d",
    "to_pytorch3d",
    "write",
]
