"""Render RGB, metric depth and per-pixel instance IDs with pybullet's CPU renderer (ER_TINY_RENDERER)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from unic_lift_ns.synth.cameras import Intrinsics
from unic_lift_ns.synth.physics import PlacedObject, load_floor, load_object

LIGHT_DIRECTION = (0.4, 0.6, 1.0)


@dataclass
class RenderedView:
    rgb: np.ndarray
    """[H, W, 3] uint8."""
    depth: np.ndarray
    """[H, W] float32 distance along the optical axis in metres; +inf where the ray hits nothing."""
    instances: np.ndarray
    """[H, W] uint16 ground-truth instance IDs: 0 = background (floor and sky), k = object k."""


class SceneRenderer:
    """Holds a pybullet client with the settled scene loaded (no simulation) and renders views of it."""

    def __init__(self, objects: Sequence[PlacedObject], near: float, far: float) -> None:
        import pybullet as p

        self._p = p
        self.near, self.far = near, far
        self.client = p.connect(p.DIRECT)
        load_floor(self.client)
        self._body_to_instance: Dict[int, int] = {}
        for obj in objects:
            self._body_to_instance[load_object(self.client, obj)] = obj.instance_id
        lut_size = max(self._body_to_instance, default=0) + 2
        self._lut = np.zeros(lut_size, dtype=np.uint16)  # index body+1 (sky is -1, floor maps to 0)
        for body, inst in self._body_to_instance.items():
            self._lut[body + 1] = inst

    def render(self, c2w: np.ndarray, intrinsics: Intrinsics) -> RenderedView:
        p = self._p
        w, h = intrinsics.width, intrinsics.height
        view = np.linalg.inv(c2w).T.reshape(-1).tolist()  # column-major world-to-camera
        proj = p.computeProjectionMatrixFOV(intrinsics.fov_y_degrees, w / h, self.near, self.far)
        _, _, rgba, zbuf, seg = p.getCameraImage(
            w,
            h,
            viewMatrix=view,
            projectionMatrix=proj,
            renderer=p.ER_TINY_RENDERER,
            shadow=1,
            lightDirection=list(LIGHT_DIRECTION),
            physicsClientId=self.client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[..., :3].copy()
        seg = np.asarray(seg, dtype=np.int64).reshape(h, w)
        zbuf = np.asarray(zbuf, dtype=np.float64).reshape(h, w)
        depth = self.far * self.near / (self.far - (self.far - self.near) * zbuf)
        depth[seg < 0] = np.inf
        instances = self._lut[np.clip(seg + 1, 0, len(self._lut) - 1)]
        return RenderedView(rgb=rgb, depth=depth.astype(np.float32), instances=instances)

    def close(self) -> None:
        self._p.disconnect(self.client)

    def __enter__(self) -> "SceneRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
