"""Gaussian rasterisation: gsplat's CUDA kernels on GPU, a pure-PyTorch implementation elsewhere."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import Tensor

from .torch_backend import rasterize_torch


def rasterize(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, **kwargs: Any,
) -> Tuple[Tensor, Tensor, Dict]:  # fmt: skip
    """``gsplat.rendering.rasterization`` when every tensor is on CUDA, else :func:`rasterize_torch`.

    Takes the same arguments and returns ``(render_colors, render_alphas, info)``. gsplat loads its
    CUDA extension lazily, on the first kernel call, so CPU runs never build or load it.
    """
    if _on_cuda(means, quats, scales, opacities, colors, viewmats, Ks, *kwargs.values()):
        from gsplat.rendering import rasterization

        fn = rasterization
    else:
        fn = rasterize_torch
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)


def rasterize_with_features(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, features: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, **kwargs: Any,
) -> Tuple[Tensor, Tensor, Tensor, Dict]:  # fmt: skip
    """:func:`rasterize` plus ``features`` [(C,) N, S] composited with the colours' projection, tile intersections
    and depth order; returns ``(render_colors, render_features [C, H, W, S], render_alphas, info)``.

    The features' gradients reach the features only (UniC-Lift Eq. 3 with detached geometry): on CPU they share the
    colours' compositing pass, whose backward leaves them out of the geometry gradients; on CUDA gsplat's
    ``rasterize_to_pixels`` composites them from the colour pass's detached ``means2d``, ``conics`` and opacities
    and its ``isect_offsets`` and ``flatten_ids``, so projection, binning and the global sort run once.
    """
    if not _on_cuda(means, quats, scales, opacities, colors, features, viewmats, Ks, *kwargs.values()):
        render, alpha, info = rasterize_torch(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, features=features, **kwargs
        )
        return render, info.pop("render_features"), alpha, info
    from gsplat import rasterize_to_pixels
    from gsplat.rendering import rasterization

    render, alpha, info = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
    C, N = viewmats.shape[0], means.shape[0]
    features = features.expand(C, N, features.shape[-1])
    packed = info["gaussian_ids"] is not None
    if packed:
        features = features[info["camera_ids"], info["gaussian_ids"]]
    render_features, _ = rasterize_to_pixels(
        info["means2d"].detach(), info["conics"].detach(), features, info["opacities"].detach(), width, height,
        info["tile_size"], info["isect_offsets"], info["flatten_ids"], packed=packed,
    )  # fmt: skip
    return render, render_features, alpha, info


def _on_cuda(*values: Any) -> bool:
    """Whether every tensor among ``values`` is on CUDA (gsplat's kernels), else the PyTorch rasteriser runs."""
    return all(v.is_cuda for v in values if isinstance(v, torch.Tensor))


__all__ = ["rasterize", "rasterize_torch", "rasterize_with_features"]
