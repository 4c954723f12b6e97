"""Initial point cloud for Splatfacto, back-projected from rendered depth (the role COLMAP points play)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unic_lift_ns.synth.cameras import Intrinsics


def backproject(
    depth: np.ndarray, rgb: np.ndarray, c2w: np.ndarray, intrinsics: Intrinsics, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample up to `num_points` pixels with finite depth and lift them to world space.

    Returns points [P, 3] (float64) and colours [P, 3] in [0, 1].
    """
    valid = np.flatnonzero(np.isfinite(depth.ravel()))
    pick = rng.choice(valid, size=min(num_points, valid.size), replace=False)
    v, u = np.divmod(pick, depth.shape[1])
    z = depth.ravel()[pick].astype(np.float64)
    # OpenGL camera frame: x right, y up, looking along -z.
    cam = np.stack(
        [
            (u + 0.5 - intrinsics.cx) / intrinsics.focal * z,
            -(v + 0.5 - intrinsics.cy) / intrinsics.focal * z,
            -z,
        ],
        axis=-1,
    )
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return world, rgb.reshape(-1, 3)[pick].astype(np.float64) / 255.0


def write_ply(path: Path, points: Sequence[np.ndarray], colors: Sequence[np.ndarray]) -> None:
    """Write a coloured point cloud with open3d (nerfstudio reads it back with open3d)."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud()
    pcd.points = o3d.utility.Vector3dVector(np.concatenate(points))
    pcd.colors = o3d.utility.Vector3dVector(np.concatenate(colors))
    if not o3d.io.write_point_cloud(str(path), pcd):
        raise OSError(f"could not write the point cloud {path}")
