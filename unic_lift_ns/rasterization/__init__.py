"""Gaussian rasterisation: gsplat's ``rasterization`` on its CUDA kernels, or a pure-PyTorch implementation.

:func:`rasterize` and :func:`rasterize_with_features` run gsplat's ``rasterization`` (the CUDA branch) when
every tensor is on CUDA, else :func:`rasterize_torch`. The CUDA branch reaches gsplat only through a
:class:`GsplatKernels` set, gsplat's own by default; :func:`use_kernels` picks another one and the CUDA branch
for any device (``use_kernels(reference_kernels())`` runs it on CPU, see :mod:`.reference_kernels`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

from .gsplat_kernels import GsplatKernels
from .torch_backend import rasterize_torch

# The kernels set by use_kernels, None outside it.
_kernels: Optional[GsplatKernels] = None


@contextmanager
def use_kernels(kernels: GsplatKernels) -> Iterator[GsplatKernels]:
    """Within the block, :func:`rasterize` and :func:`rasterize_with_features` take the CUDA branch with
    ``kernels`` whatever the device; the previous choice comes back on exit, even on an error."""
    global _kernels
    previous, _kernels = _kernels, kernels
    try:
        yield kernels
    finally:
        _kernels = previous


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, **kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict]:  # fmt: skip
    """``gsplat.rendering.rasterization`` when every tensor is on CUDA (or within :func:`use_kernels`), else
    :func:`rasterize_torch`.

    Takes the same arguments and returns ``(render_colors, render_alphas, info)``. gsplat loads its
    CUDA extension lazily, on the first kernel call, so CPU runs never build or load it.
    """
    kernels = _kernels_for(means, quats, scales, opacities, colors, viewmats, Ks, *kwargs.values())
    fn = rasterize_torch if kernels is None else kernels.rasterization()
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)


def rasterize_with_features(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, features: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, **kwargs: Any,
) -> Tuple[Tensor, Tensor, Tensor, Dict]:  # fmt: skip
    """:func:`rasterize` plus ``features`` [(C,) N, S] composited with the colours' projection, tile intersections
    and depth order; returns ``(render_colors, render_features [C, H, W, S], render_alphas, info)``.

    The features' gradients reach the features only (UniC-Lift Eq. 3 with detached geometry): on CPU they share the
    colours' compositing pass, whose backward leaves them out of the geometry gradients; in the CUDA branch gsplat's
    ``rasterize_to_pixels`` composites them from the colour pass's detached ``means2d``, ``conics`` and opacities
    and its ``isect_offsets`` and ``flatten_ids``, so projection, binning and the global sort run once.
    """
    kernels = _kernels_for(means, quats, scales, opacities, colors, features, viewmats, Ks, *kwargs.values())
    if kernels is None:
        render, alpha, info = rasterize_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, features=features, **kwargs
        )
        return render, info.pop("render_features"), alpha, info
    rasterization = kernels.rasterization()
    render, alpha, info = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    C, N = viewmats.shape[0], means.shape[0]
    features = features.expand(C, N, features.shape[-1])
    packed = info["gaussian_ids"] is not None
    if packed:
        features = features[info["camera_ids"], info["gaussian_ids"]]
    render_features, _ = kernels.rasterize_to_pixels(
        info["means2d"].detach(), info["conics"].detach(), features, info["opacities"].detach(), width, height,
        info["tile_size"], info["isect_offsets"], info["flatten_ids"], packed=packed,
    )  # fmt: skip
    return render, render_features, alpha, info


def _kernels_for(*values: Any) -> Optional[GsplatKernels]:
    """The kernels of :func:`use_kernels`, else gsplat's when every tensor among ``values`` is on CUDA, else None
    (the PyTorch rasteriser)."""
    if _kernels is not None:
        return _kernels
    if all(v.is_cuda for v in values if isinstance(v, torch.Tensor)):
        return GsplatKernels.gsplat()
    return None


__all__ = ["GsplatKernels", "rasterize", "rasterize_torch", "rasterize_with_features", "use_kernels"]
