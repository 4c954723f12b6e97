"""Projection stage (gsplat's ``fully_fused_projection``): 3D Gaussians to pinhole screen space by EWA splatting.

The camera transform and the Jacobian-projected covariance (3DGS eq. 5) are gsplat's own pure-PyTorch
reference (``_world_to_cam``, ``_persp_proj``). Blur, conics, radius and culling follow gsplat 1.4.0's
CUDA kernel, which that reference does not reproduce: the kernel keeps depths equal to the near or far
plane and culls a non-positive blurred determinant and ``radius <= radius_clip``. Culled entries are
kept finite here, so that they cannot turn gradients into NaN.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from gsplat.cuda._torch_impl import _persp_proj, _world_to_cam
from torch import Tensor


class Projection(NamedTuple):
    """Per-(camera, Gaussian) screen-space quantities; entries with ``radii == 0`` are culled."""

    radii: Tensor  # [C, N] int32
    means2d: Tensor  # [C, N, 2]
    depths: Tensor  # [C, N]
    conics: Tensor  # [C, N, 3] upper triangle of the inverse blurred 2D covariance
    compensations: Optional[Tensor]  # [C, N], only for the antialiased mode


def fully_fused_projection(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Projection:
    """Differentiable pinhole projection with gsplat's blur, clamping and culling rules.

    Gaussians are culled (radius 0) when their depth is outside ``[near_plane, far_plane]``, the
    blurred 2D covariance is degenerate, the radius is ``<= radius_clip`` or the
    ``radius``-square around the projected mean misses the image.
    """
    means_c, covars_c = _world_to_cam(means, covars, viewmats)  # [C, N, 3], [C, N, 3, 3]
    z = means_c[..., 2]
    depth_ok = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))  # culled entries are projected from depth 1
    means_c = torch.cat([means_c[..., :2], z_safe[..., None]], dim=-1)
    means2d, cov2d = _persp_proj(means_c, covars_c, Ks, width, height)  # [C, N, 2], [C, N, 2, 2]

    c00, c01, c11 = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = c00 * c11 - c01 * c01
    c00, c11 = c00 + eps2d, c11 + eps2d
    det = c00 * c11 - c01 * c01
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)
    compensations = None
    if calc_compensations:
        # sqrt(det / det_blurred); the floor keeps the gradient finite for degenerate covariances
        compensations = torch.sqrt(torch.clamp(det_orig / det_safe, min=1e-12))

    with torch.no_grad():
        b = 0.5 * (c00 + c11)
        v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        u, v = means2d.unbind(-1)
        keep = depth_ok & det_ok & (radius > radius_clip)
        keep &= (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        radii = torch.where(keep, radius, torch.zeros_like(radius)).int()
    return Projection(radii, means2d, z, conics, compensations)
