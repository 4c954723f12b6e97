"""Contrastive Lift's instance losses (Bhalgat et al., NeurIPS 2023, Sec. 3): slow-fast contrastive loss (Eq. 4)
and concentration loss (Eq. 5), plus the random fast/slow pixel partition they share.

Pixels carry 2D segment ids from one view (ids are not consistent across views, so pairs never cross views);
ids ``<= 0`` are void and never sampled. Fast pixels with no same-segment pixel in the slow set have an
undefined term in both equations and are left out of the means. Empty inputs give a zero still connected to
the autograd graph, so callers can always add the result to the total loss.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def partition_pixels(
    segment_ids: Tensor, max_pixels: int, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Random disjoint pixel sets (Omega_1, Omega_2) of Eq. 4, drawn from at most ``max_pixels`` valid pixels.

    Args:
        segment_ids: [P] int64 segment id per pixel; ids ``<= 0`` are never drawn.
        max_pixels: bound on |Omega_1| + |Omega_2| (Contrastive Lift trains with batches of 2048 rays).
        generator: CPU generator for reproducible draws.

    Returns:
        (fast, slow) pixel indices into ``segment_ids``; ``fast`` gets the extra pixel of an odd count.
    """
    valid = torch.nonzero(segment_ids > 0).squeeze(-1)
    order = torch.randperm(valid.numel(), generator=generator)[:max_pixels].to(valid.device)
    chosen = valid[order]
    half = (chosen.numel() + 1) // 2
    return chosen[:half], chosen[half:]


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """[P1, P2] squared Euclidean distances; exact gradients also at zero distance (unlike ``cdist``)."""
    return (a.square().sum(-1, keepdim=True) + b.square().sum(-1) - 2.0 * a @ b.T).clamp(min=0.0)


def slow_fast_contrastive_loss(
    fast: Tensor, fast_ids: Tensor, slow: Tensor, slow_ids: Tensor, gamma: float = 1.0
) -> Tensor:
    """Slow-fast contrastive loss, Eq. 4.

    ``-mean_u log( sum_{u' same segment} exp(sim(theta_u, slow_u')) / sum_{u'} exp(sim(theta_u, slow_u')) )``
    with the RBF similarity ``sim(x, x'; gamma) = exp(-gamma ||x - x'||^2)``, u over the fast pixels Omega_1
    and u' over the slow pixels Omega_2.

    Args:
        fast: [P1, D] fast-field embeddings theta of Omega_1 (receive the gradient).
        fast_ids: [P1] their segment ids.
        slow: [P2, D] slow-field embeddings of Omega_2 (treated as constants).
        slow_ids: [P2] their segment ids.
        gamma: RBF kernel bandwidth gamma.
    """
    same = fast_ids.unsqueeze(1) == slow_ids.unsqueeze(0)
    anchored = same.any(dim=1)
    if not bool(anchored.any()):
        return fast.sum() * 0.0
    logits = torch.exp(-gamma * _squared_distances(fast[anchored], slow.detach()))
    same = same[anchored]
    positives = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - positives).mean()


def concentration_loss(fast: Tensor, fast_ids: Tensor, slow: Tensor, slow_ids: Tensor) -> Tensor:
    """Concentration loss, Eq. 5: mean over fast pixels of the squared distance between theta_u and the centroid
    of the slow embeddings of its segment in Omega_2 (same arguments as :func:`slow_fast_contrastive_loss`)."""
    if slow_ids.numel() == 0:
        return fast.sum() * 0.0
    segments, slow_index = torch.unique(slow_ids, return_inverse=True)
    sums = slow.new_zeros(segments.numel(), slow.shape[-1]).index_add_(0, slow_index, slow.detach())
    centroids = sums / torch.bincount(slow_index, minlength=segments.numel()).unsqueeze(-1).to(slow.dtype)
    position = torch.searchsorted(segments, fast_ids).clamp(max=segments.numel() - 1)
    anchored = segments[position] == fast_ids
    if not bool(anchored.any()):
        return fast.sum() * 0.0
    return (fast[anchored] - centroids[position[anchored]]).square().sum(-1).mean()
