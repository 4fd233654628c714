"""Uniform point samples on the surfaces of simple solids (NumPy).

A solid is a list of :class:`Part`: a surface patch with its area and a sampler. Sampling a
solid spreads the points over its parts in proportion to their areas, so the density is
uniform over the whole surface. Coordinates are metres-free object units, ``y`` up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Sampler = Callable[[np.random.Generator, int], np.ndarray]

#: Index permutation that maps a local frame whose axis is ``y`` onto each world axis.
_AXIS_ORDER = {"x": [1, 0, 2], "y": [0, 1, 2], "z": [0, 2, 1]}


@dataclass(frozen=True)
class Part:
    """A surface patch: ``area`` and ``sample(rng, n) -> [n, 3]`` points on it."""

    area: float
    sample: Sampler


def _oriented(local: np.ndarray, center: Sequence[float], axis: str) -> np.ndarray:
    """Points built around the ``y`` axis -> rotated onto ``axis`` and moved to ``center``."""
    return local[:, _AXIS_ORDER[axis]] + np.asarray(center, dtype=np.float64)


def sample_parts(parts: Sequence[Part], n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` points spread over ``parts`` in proportion to their areas."""
    areas = np.array([p.area for p in parts], dtype=np.float64)
    counts = rng.multinomial(n, areas / areas.sum())
    chunks = [p.sample(rng, int(k)) for p, k in zip(parts, counts) if k > 0]
    return np.concatenate(chunks, 0)


def box(lo: Sequence[float], hi: Sequence[float]) -> list[Part]:
    """The six faces of the axis-aligned box ``[lo, hi]``."""
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    size = hi_a - lo_a
    parts = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (lo_a[axis], hi_a[axis]):

            def sample(rng, n, axis=axis, u=u, v=v, side=side):
                p = lo_a + rng.random((n, 3)) * size
                p[:, axis] = side
                return p

            parts.append(Part(float(size[u] * size[v]), sample))
    return parts


def triangle(a: Sequence[float], b: Sequence[float], c: Sequence[float]) -> list[Part]:
    """The triangle ``abc``."""
    a_, b_, c_ = (np.asarray(p, dtype=np.float64) for p in (a, b, c))
    area = 0.5 * float(np.linalg.norm(np.cross(b_ - a_, c_ - a_)))

    def sample(rng, n):
        r1, r2 = rng.random((2, n, 1))
        s = np.sqrt(r1)
        return (1 - s) * a_ + s * (1 - r2) * b_ + s * r2 * c_

    return [Part(area, sample)]


def sphere(
    center: Sequence[float], radius: float, radii: Sequence[float] = (1.0, 1.0, 1.0)
) -> list[Part]:
    """A sphere, optionally stretched per axis by ``radii`` into an ellipsoid (points are then
    uniform on the sphere before stretching, close to uniform on a mild ellipsoid)."""
    r = radius * np.asarray(radii, dtype=np.float64)
    a, b, c = r
    p = 1.6075  # Knud Thomsen's approximation of an ellipsoid's area
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def sample(rng, n):
        d = rng.normal(size=(n, 3))
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        return d * r + np.asarray(center, dtype=np.float64)

    return [Part(area, sample)]


def hemisphere(
    center: Sequence[float], radius: float, axis: str = "y", sign: float = 1.0
) -> list[Part]:
    """The half of a sphere on the ``sign`` side of ``center`` along ``axis``."""

    def sample(rng, n):
        d = rng.normal(size=(n, 3))
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        d[:, 1] = np.copysign(np.abs(d[:, 1]), sign)
        return _oriented(d * radius, center, axis)

    return [Part(2 * math.pi * radius**2, sample)]


def tube(center: Sequence[float], radius: float, height: float, axis: str = "y") -> list[Part]:
    """The side of a cylinder of ``height`` around ``axis`` (no caps), centred at ``center``."""

    def sample(rng, n):
        t = rng.random(n) * 2 * math.pi
        h = (rng.random(n) - 0.5) * height
        local = np.stack([radius * np.cos(t), h, radius * np.sin(t)], 1)
        return _oriented(local, center, axis)

    return [Part(2 * math.pi * radius * height, sample)]


def disc(center: Sequence[float], r_out: float, r_in: float = 0.0, axis: str = "y") -> list[Part]:
    """A disc (or an annulus when ``r_in > 0``) facing ``axis``."""

    def sample(rng, n):
        t = rng.random(n) * 2 * math.pi
        r = np.sqrt(r_in**2 + rng.random(n) * (r_out**2 - r_in**2))
        local = np.stack([r * np.cos(t), np.zeros(n), r * np.sin(t)], 1)
        return _oriented(local, center, axis)

    return [Part(math.pi * (r_out**2 - r_in**2), sample)]


def cone(base_center: Sequence[float], radius: float, height: float) -> list[Part]:
    """The side of an upright cone (apex up) on a base circle at ``base_center``."""
    slant = math.hypot(radius, height)

    def sample(rng, n):
        # Area grows linearly towards the base: distance from the apex ~ sqrt(U).
        s = np.sqrt(rng.random(n))
        t = rng.random(n) * 2 * math.pi
        local = np.stack([s * radius * np.cos(t), height * (1 - s), s * radius * np.sin(t)], 1)
        return local + np.asarray(base_center, dtype=np.float64)

    return [Part(math.pi * radius * slant, sample)]


def torus(center: Sequence[float], major: float, minor: float, axis: str = "y") -> list[Part]:
    """A torus around ``axis`` (rejection sampling makes the density uniform)."""

    def sample(rng, n):
        out = np.empty((0, 3))
        while len(out) < n:
            m = 2 * (n - len(out)) + 16
            u, v, keep = rng.random((3, m))
            u, v = u * 2 * math.pi, v * 2 * math.pi
            ring = major + minor * np.cos(v)
            ok = keep < ring / (major + minor)
            local = np.stack([ring * np.cos(u), minor * np.sin(v), ring * np.sin(u)], 1)[ok]
            out = np.concatenate([out, local], 0)
        return _oriented(out[:n], center, axis)

    return [Part(4 * math.pi**2 * major * minor, sample)]
