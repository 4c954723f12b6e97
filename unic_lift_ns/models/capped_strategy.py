"""gsplat's ``DefaultStrategy`` with a ceiling on the number of Gaussians (not in Splatfacto or the paper).

At each refinement the default strategy grows every Gaussian whose mean view-space gradient passes ``grow_grad2d``
(and, before ``refine_scale2d_stop_iter``, every one larger than ``grow_scale2d`` of the image). While the images
are downscaled (Splatfacto's resolution schedule) nearly every Gaussian passes, so the count doubles at every
refinement: the CPU recipe scaled to 10k steps densifies from step 1000 at a quarter of the resolution and reaches
about a million Gaussians by step 2000 (1.3-1.9 s per step on 2 cores). With a ceiling, a refinement that would
pass it grows only the Gaussians with the largest gradients, as many as there is room for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Tuple

import torch
from gsplat.strategy import DefaultStrategy


@dataclass
class CappedStrategy(DefaultStrategy):
    """``DefaultStrategy`` whose growth stops at ``max_gaussians`` (pruning is unchanged)."""

    max_gaussians: Optional[int] = None
    """Most Gaussians that growing leaves; None = no ceiling (gsplat's strategy)."""

    @classmethod
    def of(cls, strategy: DefaultStrategy, max_gaussians: Optional[int]) -> "CappedStrategy":
        """``strategy``'s settings with a ceiling."""
        return cls(**{f.name: getattr(strategy, f.name) for f in fields(strategy)}, max_gaussians=max_gaussians)

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state: Dict[str, Any], step: int) -> Tuple[int, int]:
        """Grow as gsplat does while that stays under the ceiling; otherwise only the ``max_gaussians - N``
        Gaussians with the largest mean gradients (no screen-size splits at that refinement)."""
        if self.max_gaussians is None:
            return super()._grow_gs(params, optimizers, state, step)
        room = self.max_gaussians - len(params["means"])
        grads = state["grad2d"] / state["count"].clamp_min(1)
        wanted = grads > self.grow_grad2d
        if step < self.refine_scale2d_stop_iter:
            wanted |= state["radii"] > self.grow_scale2d
        if int(wanted.sum()) <= room:
            return super()._grow_gs(params, optimizers, state, step)
        if room <= 0:
            return 0, 0
        # Each grown Gaussian adds one (a copy, or two halves for one): pass only those above the (room + 1)-th
        # largest gradient.
        bar = float(torch.topk(grads, room + 1).values[-1])
        own = self.grow_grad2d, self.grow_scale2d
        self.grow_grad2d, self.grow_scale2d = max(bar, self.grow_grad2d), float("inf")
        try:
            return super()._grow_gs(params, optimizers, state, step)
        finally:
            self.grow_grad2d, self.grow_scale2d = own
