"""Contrastive Lift's instance losses (Bhalgat et al., NeurIPS 2023, Sec. 3): slow-fast contrastive loss (Eq. 4)
and concentration loss (Eq. 5), plus the random fast/slow pixel partition they share.

Pixels carry 2D segment ids from one view (ids are not consistent across views, so pairs never cross views);
ids ``<= 0`` are void: drawn only when too few pixels are valid, and ignored by the losses. Fast pixels with no
same-segment pixel in the slow set have an undefined term in both equations and are left out of the means. Empty
inputs give a zero still connected to the autograd graph, so callers can always add the result to the total
loss. No shape depends on the masks, so the losses never wait for the device.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def partition_pixels(
    segment_ids: Tensor, max_pixels: int, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Random disjoint pixel sets (Omega_1, Omega_2) of Eq. 4: ``min(max_pixels, P)`` pixels, valid ones first.

    The pixels with the largest of uniform keys are drawn, void pixels (ids ``<= 0``) keyed below every valid
    one, so the sets hold void pixels only when fewer than ``max_pixels`` are valid; the losses ignore those. No
    shape depends on the mask, so drawing never waits for the device.

    Args:
        segment_ids: [P] int64 segment id per pixel.
        max_pixels: bound on |Omega_1| + |Omega_2| (Contrastive Lift trains with batches of 2048 rays).
        generator: CPU generator for reproducible draws.

    Returns:
        (fast, slow) pixel indices into ``segment_ids``, alternating in the draw's order (valid pixels split
        evenly); ``fast`` gets the extra pixel of an odd count.
    """
    keys = torch.rand(segment_ids.numel(), generator=generator).to(segment_ids.device)
    keys = torch.where(segment_ids > 0, keys, keys - 1.0)
    chosen = torch.topk(keys, min(max_pixels, keys.numel())).indices
    return chosen[0::2], chosen[1::2]


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
    if slow.shape[0] == 0:
        return fast.sum() * 0.0
    slow_valid = (slow_ids > 0).unsqueeze(0)
    same = _same_segment(fast_ids, slow_ids)
    anchored = same.any(dim=1, keepdim=True)
    logits = torch.exp(-gamma * _squared_distances(fast, slow.detach()))
    # rows without a positive compare all slow pixels with themselves: a finite 0, left out of the mean
    positives = torch.logsumexp(logits.masked_fill(~(same | ~anchored), float("-inf")), dim=1)
    everything = torch.logsumexp(logits.masked_fill(~(slow_valid | ~anchored), float("-inf")), dim=1)
    return _mean_over(everything - positives, anchored.squeeze(1))


def _same_segment(fast_ids: Tensor, slow_ids: Tensor) -> Tensor:
    """[P1, P2] bool: the fast pixel and the (valid) slow pixel belong to one segment."""
    return (fast_ids.unsqueeze(1) == slow_ids.unsqueeze(0)) & (slow_ids > 0).unsqueeze(0)


def _mean_over(values: Tensor, kept: Tensor) -> Tensor:
    """Mean of ``values`` where ``kept``; a zero in the graph where nothing is kept (no shape depends on it)."""
    return (values * kept).sum() / kept.sum().clamp(min=1)


def concentration_loss(fast: Tensor, fast_ids: Tensor, slow: Tensor, slow_ids: Tensor) -> Tensor:
    """Concentration loss, Eq. 5: mean over fast pixels of the squared distance between theta_u and the centroid
    of the slow embeddings of its segment in Omega_2 (same arguments as :func:`slow_fast_contrastive_loss`)."""
    same = _same_segment(fast_ids, slow_ids).to(slow.dtype)
    count = same.sum(dim=1, keepdim=True)
    centroids = same @ slow.detach() / count.clamp(min=1.0)
    return _mean_over((fast - centroids).square().sum(-1), count.squeeze(1) > 0)
