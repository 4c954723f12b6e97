"""The five CUDA entry points of gsplat 1.4.0's ``rasterization``, as one swappable set.

``gsplat.rendering.rasterization`` reaches its kernels through module globals. :meth:`GsplatKernels.rasterization`
gives that function running on a chosen set instead: gsplat's own object for gsplat's kernels, else a copy of it
whose globals name the chosen ones, so gsplat's modules are never modified.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Callable


@dataclass(frozen=True)
class GsplatKernels:
    """Callables with the signatures of the functions of the same names in ``gsplat.cuda._wrapper``."""

    fully_fused_projection: Callable
    isect_tiles: Callable
    isect_offset_encode: Callable
    rasterize_to_pixels: Callable
    spherical_harmonics: Callable

    @classmethod
    def gsplat(cls) -> GsplatKernels:
        """gsplat's CUDA kernels; its extension is loaded on their first call, not here."""
        from gsplat.cuda import _wrapper

        return cls(**{f.name: getattr(_wrapper, f.name) for f in fields(cls)})

    def rasterization(self) -> Callable:
        """``gsplat.rendering.rasterization`` calling these kernels."""
        return _rasterization(self)


@lru_cache(maxsize=None)
def _rasterization(kernels: GsplatKernels) -> Callable:
    from gsplat.rendering import rasterization

    if kernels == GsplatKernels.gsplat():
        return rasterization
    rebound = {f.name: getattr(kernels, f.name) for f in fields(kernels)}
    fn = types.FunctionType(
        rasterization.__code__,
        {**rasterization.__globals__, **rebound},
        rasterization.__name__,
        rasterization.__defaults__,
        rasterization.__closure__,
    )
    fn.__kwdefaults__, fn.__doc__ = rasterization.__kwdefaults__, rasterization.__doc__
    return fn
