"""Inward-facing cameras on a dome-shaped shell (Messy Rooms, `002_*` section 4).

Views are ordered along a smooth trajectory (a turn around the scene while the elevation oscillates),
so consecutive frames overlap like a video; this is what the "2D segmenter + tracking" baseline needs.
Camera distance and focal length both scale with sqrt(N/25), so each image shows about the same number
of objects whatever the scene size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (principal point at the image centre)."""

    width: int
    height: int
    focal: float

    @property
    def cx(self) -> float:
        return self.width / 2.0

    @property
    def cy(self) -> float:
        return self.height / 2.0

    @property
    def fov_y_degrees(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.focal)))


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL/nerfstudio camera-to-world matrix (x right, y up, camera looks along -z)."""
    back = eye - target
    back = back / np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    right = right / np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w


def dome_trajectory(
    num_views: int,
    radius: float,
    wander: float,
    rng: np.random.Generator,
    elevation_range=(35.0, 65.0),
    turns: float = 1.0,
    elevation_cycles: float = 1.5,
) -> np.ndarray:
    """`num_views` camera-to-world matrices [M, 4, 4] on a dome shell of the given radius.

    The look-at point wanders smoothly within `wander` metres of the floor centre (callers give larger
    scenes, whose cameras are magnified, a larger wander), with a little per-view jitter.
    """
    t = np.arange(num_views) / max(num_views, 1)
    azimuth = 2.0 * math.pi * turns * t + rng.uniform(0, 2 * math.pi)
    lo, hi = elevation_range
    elevation = np.radians(lo + (hi - lo) * 0.5 * (1.0 - np.cos(2.0 * math.pi * elevation_cycles * t)))
    dist = radius * (1.0 + 0.05 * rng.uniform(-1, 1, num_views))
    jitter = 0.05 * wander
    targets = np.stack(
        [
            wander * np.sin(2.0 * math.pi * 1.5 * t) + jitter * rng.normal(size=num_views),
            wander * np.cos(2.0 * math.pi * 2.5 * t) + jitter * rng.normal(size=num_views),
            np.zeros(num_views),
        ],
        axis=-1,
    )
    eyes = np.stack(
        [
            dist * np.cos(elevation) * np.cos(azimuth),
            dist * np.cos(elevation) * np.sin(azimuth),
            dist * np.sin(elevation),
        ],
        axis=-1,
    )
    eyes[:, :2] += targets[:, :2]
    return np.stack([look_at(e, g) for e, g in zip(eyes, targets)])
