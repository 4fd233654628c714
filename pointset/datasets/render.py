"""Render small synthetic RGBD frames with a pinhole camera (numpy ray casting).

Used where no captured frame is at hand: the demo, examples, tests and the built-in
segmentation scenes. Scenes are a floor, a back wall (optionally side walls) and a few
solids (spheres, axis-aligned boxes and upright cylinders / cones) in world coordinates with
the camera's axis convention (x right, y down, z forward, metres), shaded with a fixed light.
The camera sits at the origin looking along +z unless a ``pose`` moves it. Each solid may
carry a class ``label``; :func:`render_rgbd` then also returns a per-pixel label image.
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
    label: int = -1


@dataclass(frozen=True)
class Box:
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[float, float, float]
    label: int = -1


@dataclass(frozen=True)
class Frustum:
    """An upright truncated cone around the vertical line ``(x, z) = axis_xz``, from
    ``y_top`` to ``y_bottom`` (``y`` points down, so ``y_top < y_bottom``) with radii
    ``r_top`` and ``r_bottom``: a cylinder when they are equal, a cone when ``r_top = 0``.
    Both caps are closed."""

    axis_xz: tuple[float, float]
    y_top: float
    y_bottom: float
    r_top: float
    r_bottom: float
    color: tuple[float, float, float]
    label: int = -1


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


def _hit_disc(
    o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """A horizontal disc (normal along y) of ``radius`` at ``center``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (center[1] - o[:, 1]) / d[:, 1]
    t = np.where(np.isfinite(t) & (t > 1e-6), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    inside = (p[:, 0] - center[0]) ** 2 + (p[:, 2] - center[2]) ** 2 <= radius**2
    t = np.where(inside, t, np.inf)
    n = np.zeros_like(d)
    n[:, 1] = -np.sign(d[:, 1])
    return t, n


def _hit_frustum(o: np.ndarray, d: np.ndarray, f: Frustum) -> tuple[np.ndarray, np.ndarray]:
    """Side and caps of an upright frustum: the side solves
    ``(x - ax)^2 + (z - az)^2 = r(y)^2`` with ``r`` linear in ``y``."""
    ax, az = f.axis_xz
    s = (f.r_top - f.r_bottom) / (f.y_bottom - f.y_top)  # radius gained per unit upwards
    px, pz = o[:, 0] - ax, o[:, 2] - az
    q = f.r_bottom + s * (f.y_bottom - o[:, 1])
    w = -s * d[:, 1]
    a = d[:, 0] ** 2 + d[:, 2] ** 2 - w**2
    b = px * d[:, 0] + pz * d[:, 2] - q * w
    c = px**2 + pz**2 - q**2
    best = np.full(len(d), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.maximum(b * b - a * c, 0.0))
        for sign in (-1.0, 1.0):
            t = (-b + sign * root) / a
            y = o[:, 1] + t * d[:, 1]
            ok = (b * b - a * c >= 0) & (t > 1e-6) & (y >= f.y_top) & (y <= f.y_bottom)
            ok &= q + w * t >= 0  # the real cone, not its mirror image above the apex
            best = np.where(ok & (t < best), t, best)
    p = o + np.where(np.isfinite(best), best, 0.0)[:, None] * d
    r = f.r_bottom + s * (f.y_bottom - p[:, 1])
    n = np.stack([p[:, 0] - ax, r * s, p[:, 2] - az], -1)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    n = np.where(((n * d).sum(-1) > 0)[:, None], -n, n)
    normal = n
    for y, radius in ((f.y_top, f.r_top), (f.y_bottom, f.r_bottom)):
        if radius > 0:
            t_cap, n_cap = _hit_disc(o, d, np.array([ax, y, az]), radius)
            closer = t_cap < best
            best = np.where(closer, t_cap, best)
            normal = np.where(closer[:, None], n_cap, normal)
    return best, normal


def _hit(o: np.ndarray, d: np.ndarray, solid: Sphere | Box | Frustum) -> tuple[np.ndarray, ...]:
    if isinstance(solid, Sphere):
        return _hit_sphere(o, d, solid)
    if isinstance(solid, Box):
        return _hit_box(o, d, solid)
    return _hit_frustum(o, d, solid)


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
    pose: tuple[np.ndarray, np.ndarray] | None = None,
    side_walls: tuple[float, float] | None = None,
    floor_label: int = -1,
    wall_label: int = -1,
    floor_tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    wall_tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    return_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """Ray-cast a scene into a colour image and a depth map (and a label image).

    Args:
        solids: the objects in front of the floor (plane ``y = floor_y``) and back wall
            (plane ``z = wall_z``), in world coordinates.
        width, height: image size in pixels.
        intrinsics: ``(fx, fy, cx, cy)``; defaults to the PrimeSense intrinsics scaled to
            the image size.
        depth_scale: depth units per metre of the returned uint16 depth (1000 = mm).
        noise_std: standard deviation of Gaussian depth noise in metres.
        pose: ``(R [3, 3], t [3])`` camera-to-world rotation and camera position; world
            point ``= R @ camera point + t``. ``None``: the camera frame is the world frame.
        side_walls: ``(x_left, x_right)`` adds the walls ``x = x_left`` and
            ``x = x_right``; ``None`` leaves the sides open.
        floor_label, wall_label: label-image values of the floor and of the walls.
        floor_tint, wall_tint: per-channel factors on the floor and wall colours.
        return_labels: also return the label image.

    Returns:
        ``color [H, W, 3]`` uint8, ``depth [H, W]`` uint16 (0 = no measurement, e.g. beyond
        the wall), with ``return_labels`` the label image ``[H, W]`` int64 (each pixel the
        ``label`` of the surface it sees, ``-1`` where it sees none), and the intrinsics.
        Depth is measured along the camera's optical axis.
    """
    if intrinsics is None:
        s = width / 640.0
        fx, fy, cx, cy = PRIMESENSE_640x480
        intrinsics = (fx * s, fy * s, (width - 1) / 2.0, (height - 1) / 2.0)
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1).reshape(-1, 3)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    depth_along_axis = d[:, 2].copy()
    o = np.zeros_like(d)
    if pose is not None:
        rot, origin = np.asarray(pose[0], np.float64), np.asarray(pose[1], np.float64)
        d = d @ rot.T
        o = o + origin

    best_t = np.full(len(d), np.inf)
    normal = np.zeros_like(d)
    albedo = np.zeros_like(d)
    label = np.full(len(d), -1, dtype=np.int64)

    def take(t: np.ndarray, n: np.ndarray, col: np.ndarray, lab: int) -> None:
        closer = t < best_t
        best_t[closer] = t[closer]
        normal[closer] = n[closer]
        albedo[closer] = col[closer] if col.ndim == 2 else col
        label[closer] = lab

    def plane(axis: int, value: float) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter to the plane ``coordinate[axis] = value`` (from the side of ``o``)
        and the hit points."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - o[:, axis]) / d[:, axis]
        t = np.where(np.isfinite(t) & (t > 1e-6), t, np.inf)
        return t, o + np.where(np.isfinite(t), t, 0)[:, None] * d

    t_floor, hit_floor = plane(1, floor_y)
    checker = ((np.floor(hit_floor[:, 0] * 4) + np.floor(hit_floor[:, 2] * 4)) % 2)[:, None]
    floor_col = (0.45 + 0.25 * checker * np.ones((1, 3))) * np.asarray(floor_tint)
    take(t_floor, np.tile([0.0, -1.0, 0.0], (len(d), 1)), floor_col, floor_label)
    walls = [(2, wall_z, 0)] + ([(0, x, 2) for x in side_walls] if side_walls else [])
    for axis, value, across in walls:
        t_wall, hit_wall = plane(axis, value)
        wall_col = np.stack(
            [
                0.55 + 0.1 * np.tanh(hit_wall[:, across]),
                0.6 * np.ones(len(d)),
                0.7 * np.ones(len(d)),
            ],
            -1,
        ) * np.asarray(wall_tint)
        n_wall = np.zeros((len(d), 3))
        n_wall[:, axis] = -np.sign(value - o[:, axis])
        take(t_wall, n_wall, wall_col, wall_label)
    for solid in solids:
        t, n = _hit(o, d, solid)
        take(t, n, np.asarray(solid.color, dtype=np.float64), solid.label)

    light = np.array([-0.4, -1.0, -0.6])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip((normal * light).sum(-1), 0, 1)
    rgb = np.clip(albedo * shade[:, None], 0, 1)
    z = best_t * depth_along_axis
    if noise_std > 0:
        z = z + np.random.default_rng(seed).normal(0.0, noise_std, size=z.shape)
    valid = np.isfinite(z) & (z > 0)
    depth = np.where(valid, np.round(np.where(valid, z, 0) * depth_scale), 0)
    depth = np.clip(depth, 0, 65535).astype(np.uint16).reshape(height, width)
    color = (rgb.reshape(height, width, 3) * 255 + 0.5).astype(np.uint8)
    if return_labels:
        labels = np.where(np.isfinite(best_t), label, -1).reshape(height, width)
        return color, depth, labels, (fx, fy, cx, cy)
    return color, depth, (fx, fy, cx, cy)


def demo_scene() -> list[Sphere | Box]:
    """A fixed tabletop-like scene: two spheres and two boxes."""
    return [
        Sphere((-0.35, 0.25, 1.6), 0.3, (0.85, 0.2, 0.2)),
        Sphere((0.45, 0.35, 2.1), 0.25, (0.2, 0.7, 0.3)),
        Box((-0.05, 0.1, 2.3), (0.35, 0.6, 2.7), (0.25, 0.35, 0.85)),
        Box((-1.2, 0.2, 2.4), (-0.8, 0.6, 2.8), (0.9, 0.75, 0.2)),
    ]
