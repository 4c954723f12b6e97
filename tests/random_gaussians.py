"""Random Gaussians in front of cameras that shift sideways, for the rasterisation tests."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

Scene = Tuple[Dict[str, Tensor], Tensor, Tensor]


def random_scene(
    N: int, C: int, width: int, height: int, seed: int, D: int = 3, sh_degree: Optional[int] = None,
    log_scale: float = -3.0,
) -> Scene:  # fmt: skip
    """``(params, viewmats [C, 4, 4], Ks [C, 3, 3])``: N Gaussians at depths 2-5 inside the view, scales around
    ``exp(log_scale)``, colours [N, D] or SH coefficients [N, 16, 3] with ``sh_degree``."""
    g = torch.Generator().manual_seed(seed)
    depth = 2.0 + 3.0 * torch.rand(N, generator=g)
    xy = (torch.rand(N, 2, generator=g) * 2 - 1) * depth[:, None] * 0.6
    params = {
        "means": torch.cat([xy, depth[:, None]], -1),
        "quats": torch.randn(N, 4, generator=g),
        "scales": torch.exp(torch.randn(N, 3, generator=g) * 0.5 + log_scale),
        "opacities": torch.sigmoid(torch.randn(N, generator=g)),
        "colors": torch.rand(N, D, generator=g) if sh_degree is None else torch.randn(N, 16, 3, generator=g) * 0.3,
    }
    viewmats = torch.eye(4).repeat(C, 1, 1)
    viewmats[:, 0, 3] = torch.linspace(-0.1, 0.1, C)
    viewmats[:, 1, 3] = torch.linspace(0.05, -0.05, C)
    f = 0.8 * max(width, height)
    Ks = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]).repeat(C, 1, 1)
    return params, viewmats, Ks
