"""gsplat's five CUDA entry points on any device, for running the CUDA branch of rasterisation without a GPU.

Projection, tile intersection and spherical harmonics are gsplat's own pure-PyTorch references
(``gsplat.cuda._torch_impl``) behind the signatures of ``gsplat.cuda._wrapper``, with the packed layout,
``radius_clip`` and SH ``masks`` that those references lack. Compositing is :mod:`.compositing` with one
pixel block per tile (gsplat's reference compositing needs its CUDA kernels and nerfacc). Use with
:func:`unic_lift_ns.rasterization.use_kernels`. Gradients are dense (no ``sparse_grad``); the intersection
reference loops over the Gaussians in Python, so this is for small scenes.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_offset_encode,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)
from torch import Tensor
from typing_extensions import Literal

from . import compositing
from .gsplat_kernels import GsplatKernels

# Entries of gsplat's flattened upper-triangular covariance [xx, xy, xz, yy, yz, zz] for a row-major 3x3 matrix.
_TRIU_TO_FULL = [0, 1, 2, 1, 3, 4, 2, 4, 5]


def fully_fused_projection(
    means: Tensor,  # [N, 3]
    covars: Optional[Tensor],  # [N, 6] or None
    quats: Optional[Tensor],  # [N, 4] or None
    scales: Optional[Tensor],  # [N, 3] or None
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    packed: bool = False,
    sparse_grad: bool = False,
    calc_compensations: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
) -> Tuple[Optional[Tensor], ...]:
    """``(radii, means2d, depths, conics, compensations)`` [C, N, ...], or with ``packed`` the entries of radius
    > 0 as [nnz, ...] preceded by their ``camera_ids`` and ``gaussian_ids`` [nnz]."""
    if sparse_grad:
        raise NotImplementedError("sparse_grad needs gsplat's CUDA kernels")
    if covars is None:
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    else:
        covars = covars[:, _TRIU_TO_FULL].reshape(-1, 3, 3)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=calc_compensations, camera_model=camera_model,
    )  # fmt: skip
    radii = radii.masked_fill(radii <= radius_clip, 0)
    if not packed:
        return radii, means2d, depths, conics, compensations
    camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)
    outputs = (radii, means2d, depths, conics, compensations)
    return camera_ids, gaussian_ids, *(None if x is None else x[camera_ids, gaussian_ids] for x in outputs)


@torch.no_grad()
def isect_tiles(
    means2d: Tensor,  # [C, N, 2] or [nnz, 2]
    radii: Tensor,  # [C, N] or [nnz]
    depths: Tensor,  # [C, N] or [nnz]
    tile_size: int,
    tile_width: int,
    tile_height: int,
    sort: bool = True,
    packed: bool = False,
    n_cameras: Optional[int] = None,
    camera_ids: Optional[Tensor] = None,
    gaussian_ids: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(tiles_per_gauss, isect_ids, flatten_ids)``; ``flatten_ids`` index the [C * N] or [nnz] entries."""
    if not packed:
        return _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=sort)
    # packed entries are scattered onto [C, N] for the reference, and its flatten ids mapped back to them
    nnz = len(gaussian_ids)
    N = int(gaussian_ids.max()) + 1 if nnz else 0
    rows = camera_ids.long() * N + gaussian_ids.long()

    def dense(x: Tensor) -> Tensor:
        return x.new_zeros((n_cameras * N,) + x.shape[1:]).index_copy_(0, rows, x).view(n_cameras, N, *x.shape[1:])

    tiles_per_gauss, isect_ids, flatten_ids = _isect_tiles(
        dense(means2d), dense(radii), dense(depths), tile_size, tile_width, tile_height, sort=sort
    )
    packed_index = torch.zeros(n_cameras * N, dtype=torch.int32, device=rows.device)
    packed_index[rows] = torch.arange(nnz, dtype=torch.int32, device=rows.device)
    return tiles_per_gauss.flatten()[rows], isect_ids, packed_index[flatten_ids.long()]


@torch.no_grad()
def isect_offset_encode(isect_ids: Tensor, n_cameras: int, tile_width: int, tile_height: int) -> Tensor:
    """Start of each tile's intersections in the sorted ``isect_ids``, [C, tile_height, tile_width]."""
    return _isect_offset_encode(isect_ids, n_cameras, tile_width, tile_height)


def rasterize_to_pixels(
    means2d: Tensor,  # [C, N, 2] or [nnz, 2]
    conics: Tensor,  # [C, N, 3] or [nnz, 3]
    colors: Tensor,  # [C, N, channels] or [nnz, channels]
    opacities: Tensor,  # [C, N] or [nnz]
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [C, tile_height, tile_width]
    flatten_ids: Tensor,  # [n_isects]
    backgrounds: Optional[Tensor] = None,  # [C, channels]
    masks: Optional[Tensor] = None,  # [C, tile_height, tile_width]
    packed: bool = False,
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor]:
    """``(render_colors [C, H, W, channels], render_alphas [C, H, W, 1])`` by :func:`.compositing.rasterize_to_pixels`.

    ``flatten_ids`` index the flattened leading dimensions of ``means2d`` packed or not, so ``packed`` changes
    nothing here. Tiles outside ``masks`` are left to the background, like gsplat's kernel; with ``absgrad``,
    backward gives ``means2d.absgrad``.
    """
    offsets = isect_offsets.flatten().long()
    counts = torch.diff(offsets, append=offsets.new_tensor([len(flatten_ids)]))
    flatten_ids = flatten_ids.long()
    if masks is not None:
        keep = masks.flatten()
        flatten_ids = flatten_ids[keep.repeat_interleave(counts)]
        counts = counts * keep
    return compositing.rasterize_to_pixels(
        means2d, conics, colors, opacities, image_width, image_height, tile_size, flatten_ids, counts,
        backgrounds=backgrounds, absgrad=absgrad,
    )  # fmt: skip


def spherical_harmonics(
    degrees_to_use: int,
    dirs: Tensor,  # [..., 3]
    coeffs: Tensor,  # [..., K, 3]
    masks: Optional[Tensor] = None,  # [...]
) -> Tensor:
    """SH colours [..., 3] of degree ``degrees_to_use``; zero where ``masks`` is False."""
    colors = _spherical_harmonics(degrees_to_use, dirs, coeffs)
    return colors if masks is None else torch.where(masks[..., None], colors, torch.zeros_like(colors))


def reference_kernels() -> GsplatKernels:
    """The kernels of this module, for :func:`unic_lift_ns.rasterization.use_kernels`."""
    return GsplatKernels(
        fully_fused_projection=fully_fused_projection,
        isect_tiles=isect_tiles,
        isect_offset_encode=isect_offset_encode,
        rasterize_to_pixels=rasterize_to_pixels,
        spherical_harmonics=spherical_harmonics,
    )
