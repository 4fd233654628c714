"""pointset: images, RGBD frames and 3D scans as point sets."""

__version__ = "0.1.0"
