"""pointset: images, RGBD frames and 3D scans as point sets.

The top level holds the point set and its conversions; operators live in
:mod:`pointset.ops`, layers in :mod:`pointset.nn`, published models in
:mod:`pointset.models`.
"""

from .data import (
    PointSet,
    coc_input,
    from_dense,
    from_image,
    from_open3d,
    from_pytorch3d,
    from_rgbd,
    read,
    to_dense,
    to_image,
    to_open3d,
    to_pytorch3d,
    write,
)

__version__ = "0.1.0"

__all__ = [
    "PointSet",
    "__version__",
    "coc_input",
    "from_dense",
    "from_image",
    "from_open3d",
    "from_pytorch3d",
    "from_rgbd",
    "read",
    "to_dense",
    "to_image",
    "to_open3d",
    "to_pytorch3d",
    "write",
]
