"""Datasets: ScanObjectNN, ModelNet40, the built-in synthetic shapes, digits as points and
RGBD folders (classification); ShapeNetPart, the built-in synthetic scenes and RGBD folders
with label images (segmentation). Each item is a :class:`~pointset.PointSet`; missing or
malformed files raise
:class:`DatasetError` with a one-line message that says how to get them.
"""

from . import render
from .base import PointCloudDataset, gather_points, sample_indices
from .digits import DigitsPoints
from .download import download
from .errors import DatasetError
from .modelnet40 import ModelNet40
from .rgbd_folder import RGBDFolder, RGBDFrame
from .rgbd_seg_folder import RGBDSegFolder
from .scanobjectnn import CLASS_NAMES as SCANOBJECTNN_CLASSES
from .scanobjectnn import VARIANTS as SCANOBJECTNN_VARIANTS
from .scanobjectnn import ScanObjectNN, scanobjectnn_files
from .shapenetpart import CATEGORIES as SHAPENETPART_CATEGORIES
from .shapenetpart import ShapeNetPart
from .synthetic_scenes import CLASS_NAMES as SYNTHETIC_SCENE_CLASSES
from .synthetic_scenes import SyntheticScenes, make_synthetic_scenes
from .synthetic_shapes import CLASS_NAMES as SYNTHETIC_CLASSES
from .synthetic_shapes import SyntheticShapes, make_synthetic_scanobjectnn

__all__ = [
    "SCANOBJECTNN_CLASSES",
    "SCANOBJECTNN_VARIANTS",
    "SHAPENETPART_CATEGORIES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_SCENE_CLASSES",
    "DatasetError",
    "DigitsPoints",
    "ModelNet40",
    "PointCloudDataset",
    "RGBDFolder",
    "RGBDFrame",
    "RGBDSegFolder",
    "ScanObjectNN",
    "ShapeNetPart",
    "SyntheticScenes",
    "SyntheticShapes",
    "download",
    "gather_points",
    "make_synthetic_scanobjectnn",
    "make_synthetic_scenes",
    "render",
    "sample_indices",
    "scanobjectnn_files",
]
