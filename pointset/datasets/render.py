"""Render small synthetic RGBD frames with a pinhole camera (numpy ray casting).

Used where no captured frame is at hand: the demo, examples and tests. Scenes are a floor,
a back wall and a few solids (spheres and axis-aligned boxes) in the camera frame
(x right, y down, z forward, metres), shaded with a fixed light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: PrimeSense / Kinect v1 default pinhole intrinsics at 640x480: (fx, fy, cx, cy).
PRIMESENSE_640x480 = (525.0, 525.0, 319.5, 239.5)


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]


def _hit_sphere(o: np.ndarray, d: np.ndarray, s: Sphere) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter ``t [P]`` (inf on miss) and unit normals ``[P, 3]`` for rays o + t d."""
    oc = o - np.asarray(s.center)
    b = (d * oc).sum(-1)
    c = (oc * oc).sum(-1) - s.radius**2
    disc = b * b - c
    t = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    t = np.where(t > 1e-6, t, np.inf)
    n = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - np.asarray(s.center)
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return t, n


def _hit_box(o: np.ndarray, d: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Slab test for an axis-aligned box; returns ``t [P]`` and face normals ``[P, 3]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0 = (np.asarray(box.lo) - o) * inv
        t1 = (np.asarray(box.hi) - o) * inv
    tmin = np.minimum(t0, t1)
    tmax = np.maximum(t0, t1)
    t_near = np.nanmax(tmin, axis=-1)
    t_far = np.nanmin(tmax, axis=-1)
    hit = (t_near <= t_far) & (t_near > 1e-6)
    t = np.where(hit, t_near, np.inf)
    axis = np.nanargmax(tmin, axis=-1)
    n = np.zeros_like(d)
    n[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, n


def render_rgbd(
    solids: list[Sphere | Box],
    width: int = 320,
    height: int = 240,
    intrinsics: tuple[float, float, float, float] | None = None,
    floor_y: float = 0.6,
    wall_z: float = 3.5,
    depth_scale: float = 1000.0,
    noise_std: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Ray-cast a scene into a colour image and a depth map.

    Args:
        solids: the objects in front of the floor (plane ``y = floor_y``) and back wall
            (plane ``z = wall_z``).
        width, height: image size in pixels.
        intrinsics: ``(fx, fy, cx, cy)``; defaults to the PrimeSense intrinsics scaled to
            the image size.
        depth_scale: depth units per metre of the returned uint16 depth (1000 = mm).
        noise_std: standard deviation of Gaussian depth noise in metres.

    Returns:
        ``color [H, W, 3]`` uint8, ``depth [H, W]`` uint16 (0 = no measurement, e.g. beyond
        the wall) and the intrinsics used.
    """
    if intrinsics is None:
        s = width / 640.0
        fx, fy, cx, cy = PRIMESENSE_640x480
        intrinsics = (fx * s, fy * s, (width - 1) / 2.0, (height - 1) / 2.0)
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.zeros_like(d)

    best_t = np.full(len(d), np.inf)
    normal = np.zeros_like(d)
    albedo = np.zeros_like(d)

    def take(t: np.ndarray, n: np.ndarray, col: np.ndarray) -> None:
        closer = t < best_t
        best_t[closer] = t[closer]
        normal[closer] = n[closer]
        albedo[closer] = col[closer] if col.ndim == 2 else col

    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 1] > 1e-6, floor_y / d[:, 1], np.inf)
        t_wall = np.where(d[:, 2] > 1e-6, wall_z / d[:, 2], np.inf)
    hit_floor = o + np.where(np.isfinite(t_floor), t_floor, 0)[:, None] * d
    checker = ((np.floor(hit_floor[:, 0] * 4) + np.floor(hit_floor[:, 2] * 4)) % 2)[:, None]
    floor_col = 0.45 + 0.25 * checker * np.ones((1, 3))
    take(t_floor, np.tile([0.0, -1.0, 0.0], (len(d), 1)), floor_col)
    hit_wall = o + np.where(np.isfinite(t_wall), t_wall, 0)[:, None] * d
    wall_col = np.stack(
        [0.55 + 0.1 * np.tanh(hit_wall[:, 0]), 0.6 * np.ones(len(d)), 0.7 * np.ones(len(d))], -1
    )
    take(t_wall, np.tile([0.0, 0.0, -1.0], (len(d), 1)), wall_col)
    for solid in solids:
        t, n = _hit_sphere(o, d, solid) if isinstance(solid, Sphere) else _hit_box(o, d, solid)
        take(t, n, np.asarray(solid.color, dtype=np.float64))

    light = np.array([-0.4, -1.0, -0.6])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip((normal * light).sum(-1), 0, 1)
    rgb = np.clip(albedo * shade[:, None], 0, 1)
    z = best_t * d[:, 2]
    if noise_std > 0:
        z = z + np.random.default_rng(seed).normal(0.0, noise_std, size=z.shape)
    valid = np.isfinite(z) & (z > 0)
    depth = np.where(valid, np.round(np.where(valid, z, 0) * depth_scale), 0)
    depth = np.clip(depth, 0, 65535).astype(np.uint16).reshape(height, width)
    color = (rgb.reshape(height, width, 3) * 255 + 0.5).astype(np.uint8)
    return color, depth, (fx, fy, cx, cy)


def demo_scene() -> list[Sphere | Box]:
    """A fixed tabletop-like scene: two spheres and two boxes."""
    return [
        Sphere((-0.35, 0.25, 1.6), 0.3, (0.85, 0.2, 0.2)),
        Sphere((0.45, 0.35, 2.1), 0.25, (0.2, 0.7, 0.3)),
        Box((-0.05, 0.1, 2.3), (0.35, 0.6, 2.7), (0.25, 0.35, 0.85)),
        Box((-1.2, 0.2, 2.4), (-0.8, 0.6, 2.8), (0.9, 0.75, 0.2)),
    ]
