"""Pure-PyTorch (CPU-capable) drop-in for ``gsplat.rendering.rasterization`` (gsplat 1.4.0 semantics).

The stages are gsplat's: projection (:mod:`.projection`), spherical harmonics (gsplat's own
pure-PyTorch ``_spherical_harmonics``), tile intersection (:mod:`.intersection`) and compositing
(:mod:`.compositing`). Which pixels a Gaussian may touch follows gsplat exactly: only pixels inside
the ``tile_size`` tiles overlapping its ``radius`` square, and only where ``alpha >= 1/255``; pixel
blocks smaller than a tile (``BLOCK_SIZE``) only skip work that cannot contribute.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor
from typing_extensions import Literal

from .compositing import rasterize_to_pixels
from .intersection import isect_tiles
from .projection import fully_fused_projection

# Side of the pixel blocks Gaussians are binned into; used when it divides ``tile_size``.
BLOCK_SIZE = 8


def rasterize_torch(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,  # [N, 3], [N, 4], [N, 3], [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor, Ks: Tensor, width: int, height: int,  # [C, 4, 4], [C, 3, 3]
    near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0, eps2d: float = 0.3,
    sh_degree: Optional[int] = None, packed: bool = True, tile_size: int = 16, backgrounds: Optional[Tensor] = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB", sparse_grad: bool = False,
    absgrad: bool = False, rasterize_mode: Literal["classic", "antialiased"] = "classic", channel_chunk: int = 32,
    distributed: bool = False, camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Optional[Tensor] = None, features: Optional[Tensor] = None,  # features: [(C,) N, S]
) -> Tuple[Tensor, Tensor, Dict]:  # fmt: skip
    """Rasterise 3D Gaussians to C images; same arguments and outputs as gsplat 1.4.0's ``rasterization``.

    Returns ``render_colors`` [C, H, W, X] (X = D, 1 or D + 1 depending on ``render_mode``),
    ``render_alphas`` [C, H, W, 1] and ``info`` with gsplat's ``camera_ids``, ``gaussian_ids``
    (None unless ``packed``), ``radii``, ``means2d``, ``depths``, ``conics``, ``opacities`` ([C, N, ...]
    or [nnz, ...]), ``tile_width``, ``tile_height``, ``tiles_per_gauss``, ``width``, ``height``,
    ``tile_size`` and ``n_cameras`` (gsplat's intersection buffers are not produced).
    ``info["means2d"]`` is in the autograd graph, so ``retain_grad()`` gives d loss / d means2d; with
    ``absgrad`` it also gets ``.absgrad`` (sum over pixels of absolute per-pixel gradients) after
    backward. Only float32 pinhole cameras are supported; all channels are composited in one pass
    (``channel_chunk`` is ignored) and gradients are always dense (``sparse_grad`` is ignored).

    ``features`` (not in gsplat) are composited in the same pass, with the same weights, and returned as
    ``info["render_features"]`` [C, H, W, S]; their gradients reach the features only, never the geometry or
    ``means2d`` (nor so the densification statistics), exactly as a second pass with detached geometry would.
    """
    _check_modes(render_mode, rasterize_mode, camera_model, distributed)
    _check_shapes(means, quats, scales, opacities, colors, viewmats, Ks, sh_degree, covars)
    N, C = means.shape[0], viewmats.shape[0]
    device = means.device

    if covars is None:
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    proj = fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        radius_clip=radius_clip, calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    radii, means2d, depths, conics = proj.radii, proj.means2d, proj.depths, proj.conics
    opacities = opacities.expand(C, N)
    if proj.compensations is not None:
        opacities = opacities * proj.compensations

    colors = _view_colors(colors, means, viewmats, sh_degree)
    if features is not None:
        assert features.shape[:-1] in ((N,), (C, N)), features.shape
        features = features.expand(C, N, features.shape[-1])
    camera_ids = gaussian_ids = None
    if packed:  # [nnz, ...]: the (camera, Gaussian) pairs with a footprint
        camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)
        radii, means2d, depths, conics, opacities, colors = (
            v[camera_ids, gaussian_ids] for v in (radii, means2d, depths, conics, opacities, colors)
        )
        features = None if features is None else features[camera_ids, gaussian_ids]
    flat_cams = camera_ids if packed else torch.arange(C, device=device).repeat_interleave(N)
    info = dict(camera_ids=camera_ids, gaussian_ids=gaussian_ids, radii=radii, means2d=means2d, depths=depths,
                conics=conics, opacities=opacities)  # fmt: skip

    colors, backgrounds, geometry_channels = _channels(colors, depths, features, backgrounds, render_mode)

    block = BLOCK_SIZE if tile_size % BLOCK_SIZE == 0 else tile_size
    tiles_per_gauss, flatten_ids, block_counts = isect_tiles(
        means2d.reshape(-1, 2), radii.reshape(-1), depths.reshape(-1), conics.reshape(-1, 3),
        opacities.reshape(-1), flat_cams, C, tile_size, block, width, height,
    )  # fmt: skip
    info.update(tile_width=math.ceil(width / tile_size), tile_height=math.ceil(height / tile_size),
                tiles_per_gauss=tiles_per_gauss.reshape(radii.shape), width=width, height=height, tile_size=tile_size,
                n_cameras=C)  # fmt: skip

    render_colors, render_alphas = rasterize_to_pixels(
        means2d, conics, colors, opacities, width, height, block, flatten_ids, block_counts,
        backgrounds=backgrounds, absgrad=absgrad, geometry_channels=geometry_channels,
    )  # fmt: skip
    if features is not None:
        render_colors, info["render_features"] = render_colors.split([geometry_channels, features.shape[-1]], -1)
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    return render_colors, render_alphas, info


def _check_modes(render_mode: str, rasterize_mode: str, camera_model: str, distributed: bool) -> None:
    """Refuse the modes this rasteriser does not implement."""
    if distributed:
        raise NotImplementedError("distributed rasterisation needs gsplat on CUDA")
    if camera_model != "pinhole":
        raise NotImplementedError(f"camera_model={camera_model!r}: only 'pinhole' is implemented")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")


def _check_shapes(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    sh_degree: Optional[int], covars: Optional[Tensor],
) -> None:  # fmt: skip
    """Assert gsplat's argument shapes (N Gaussians, C cameras)."""
    N, C = means.shape[0], viewmats.shape[0]
    assert means.shape == (N, 3), means.shape
    assert opacities.shape == (N,), opacities.shape
    assert viewmats.shape == (C, 4, 4) and Ks.shape == (C, 3, 3), (viewmats.shape, Ks.shape)
    if covars is None:
        assert quats.shape == (N, 4) and scales.shape == (N, 3), (quats.shape, scales.shape)
    if sh_degree is None:
        assert colors.shape[:-1] in ((N,), (C, N)), colors.shape
    else:
        assert colors.shape[-1] == 3 and colors.shape[:-2] in ((N,), (C, N)), colors.shape
        assert (sh_degree + 1) ** 2 <= colors.shape[-2], (sh_degree, colors.shape)


def _view_colors(colors: Tensor, means: Tensor, viewmats: Tensor, sh_degree: Optional[int]) -> Tensor:
    """[C, N, D] colours per camera: the SH coefficients evaluated towards each camera, or the colours as given."""
    N, C = means.shape[0], viewmats.shape[0]
    if sh_degree is None:
        return colors.expand(C, N, colors.shape[-1])
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None] - campos[:, None]  # [C, N, 3]
    shs = colors.expand(C, N, -1, -1)  # [C, N, K, 3]
    # gsplat's rasterization shifts SH colours by 0.5 and clamps them at 0, like Inria's 3DGS
    return torch.clamp_min(_spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)


def _channels(
    colors: Tensor, depths: Tensor, features: Optional[Tensor], backgrounds: Optional[Tensor], render_mode: str
) -> Tuple[Tensor, Optional[Tensor], int]:
    """The channels composited in one pass, ``render_mode``'s colours and depth then the features, their
    backgrounds (0 for depth and features), and how many come before the features."""
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(backgrounds.shape[0], 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(backgrounds.shape[0], 1)
    geometry_channels = colors.shape[-1]
    if features is not None:
        colors = torch.cat([colors, features], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(backgrounds.shape[0], features.shape[-1])], -1)
    return colors, backgrounds, geometry_channels
