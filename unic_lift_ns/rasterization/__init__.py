"""Gaussian rasterisation: gsplat's CUDA kernels on GPU, a pure-PyTorch implementation elsewhere."""

from __future__ import annotations

from typing import Any, Dict, Tuple

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
    tensors = [means, quats, scales, opacities, colors, viewmats, Ks]
    tensors += [v for v in kwargs.values() if isinstance(v, Tensor)]
    if all(t.is_cuda for t in tensors if t is not None):
        from gsplat.rendering import rasterization

        fn = rasterization
    else:
        fn = rasterize_torch
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)


__all__ = ["rasterize", "rasterize_torch"]
