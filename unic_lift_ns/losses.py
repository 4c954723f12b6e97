"""Segmentation losses of UniC-Lift (Sec. 3.3, Eqs. 4-7) and triplet mining (Sec. 3.3, appendix A.3).

Conventions shared by the image-space losses:

* pixels are flattened to ``P = H * W`` rows; ``segment_ids``/``segment_map`` hold the (possibly
  view-inconsistent) 2D instance ids, and ids ``<= 0`` are ignored (0 is the void label);
* every loss is a *mean* (over pixels, centroid pairs, triplets or Gaussian pairs) rather than the
  paper's sums, so the lambdas of Eq. 7 do not depend on image size, segment count, triplet count
  or the number of Gaussians;
* empty inputs (no valid pixels, no triplets, no pairs) give a zero that is still connected to the
  autograd graph, so callers can always add the result to the total loss and call ``backward``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

Triplets = Tuple[Tensor, Tensor, Tensor]


def cluster_contrastive_loss(embeddings: Tensor, segment_ids: Tensor) -> Tensor:
    """Cluster contrastive loss, Eq. 4: intra-segment spread minus inter-centroid spread.

    Args:
        embeddings: [P, d] rendered embeddings *after* the sigmoid, i.e. ``sigmoid(V)`` in [0, 1]^d
            (Appendix A.1: the contrastive loss acts in the sigmoid-constrained space). The caller
            applies the sigmoid once and reuses it for the triplet branch (Eq. 5).
        segment_ids: [P] int64 segment id per pixel; ids ``<= 0`` are ignored.

    Returns:
        Scalar ``intra - inter`` with ``intra`` the mean over valid pixels of
        ``||V(u) - m_Omega(u)||^2`` and ``inter`` the mean over ordered centroid pairs ``i != j`` of
        ``||m_i - m_j||^2`` (0 for a single segment). Both are invariant to image resolution.
    """
    valid = segment_ids > 0
    emb = embeddings[valid]
    _, inverse, counts = torch.unique(segment_ids[valid], return_inverse=True, return_counts=True)
    num_segments = counts.numel()

    sums = emb.new_zeros(num_segments, emb.shape[-1]).index_add_(0, inverse, emb)
    centroids = sums / counts.unsqueeze(-1).to(emb.dtype)
    intra = (emb - centroids[inverse]).square().sum(-1).sum() / max(emb.shape[0], 1)

    # mean_{i != j} ||m_i - m_j||^2 = 2 / (K - 1) * sum_i ||m_i - mean(m)||^2 (stable, O(K d)).
    centred = centroids - centroids.sum(0) / max(num_segments, 1)
    inter = 2.0 * centred.square().sum() / max(num_segments - 1, 1)
    return intra - inter


def _uniform(shape: Tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Float64 uniforms in [0, 1) drawn on the generator's device and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64).to(device)


def _subsample(candidates: Tensor, max_triplets: int, generator: Optional[torch.Generator]) -> Tensor:
    """At most ``max_triplets`` entries of ``candidates``, uniformly without replacement."""
    gen_device = generator.device if generator is not None else candidates.device
    perm = torch.randperm(candidates.numel(), generator=generator, device=gen_device)[:max_triplets]
    return candidates[perm.to(candidates.device)]


def _pick_random_true(mask: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Column index of a uniformly random ``True`` per row of ``mask`` [T, C] (rows must have one)."""
    scores = _uniform(tuple(mask.shape), generator, mask.device).masked_fill(~mask, -1.0)
    return scores.argmax(dim=1)


def boundary_triplets(
    segment_map: Tensor,
    max_triplets: int = 3000,
    generator: Optional[torch.Generator] = None,
    radius: int = 2,
) -> Triplets:
    """Boundary hard mining of triplets for Eq. 5 (Sec. 3.3, appendix A.3).

    Anchors are valid pixels with a 4-neighbour of a *different valid* segment and a 4-neighbour of
    the same segment; they are drawn uniformly without replacement (at most ``max_triplets``). The
    positive is a random other pixel of the anchor's segment and the negative a random pixel of a
    different valid segment, both inside the ``(2 * radius + 1)^2`` window around the anchor, so all
    three lie at the boundary. Ids ``<= 0`` are never used.

    Args:
        segment_map: [H, W] int64 segment ids.
        max_triplets: maximum number of triplets (paper: 3000).
        generator: torch.Generator for reproducible sampling (its device is used for drawing).
        radius: Chebyshev radius (>= 1) of the window where positives and negatives are drawn.

    Returns:
        ``(anchor, positive, negative)`` flat pixel indices into ``segment_map.flatten()``, each [T].
    """
    assert radius >= 1, "radius must be >= 1 so that the 4-neighbours are inside the window"
    height, width = segment_map.shape
    labels = torch.where(segment_map > 0, segment_map, torch.zeros_like(segment_map))

    padded = labels.new_zeros(height + 2, width + 2)
    padded[1:-1, 1:-1] = labels
    neighbours = torch.stack(
        [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    )  # [4, H, W]
    has_other = ((neighbours != labels) & (neighbours > 0)).any(0)
    has_same = (neighbours == labels).any(0)
    is_anchor = (labels > 0) & has_other & has_same
    anchor = _subsample(is_anchor.flatten().nonzero().squeeze(1), max_triplets, generator)

    steps = torch.arange(-radius, radius + 1, device=labels.device)
    off_y, off_x = torch.meshgrid(steps, steps, indexing="ij")
    not_centre = (off_y != 0) | (off_x != 0)
    off_y, off_x = off_y[not_centre], off_x[not_centre]  # [C]

    ys = (anchor // width).unsqueeze(1) + off_y  # [T, C]
    xs = (anchor % width).unsqueeze(1) + off_x
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    window = ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)
    window_labels = labels.flatten()[window].masked_fill(~inside, 0)
    anchor_labels = labels.flatten()[anchor].unsqueeze(1)

    rows = torch.arange(anchor.numel(), device=labels.device)
    positive = window[rows, _pick_random_true(window_labels == anchor_labels, generator)]
    negative_mask = (window_labels != anchor_labels) & (window_labels > 0)
    negative = window[rows, _pick_random_true(negative_mask, generator)]
    return anchor, positive, negative


def random_triplets(
    segment_map: Tensor,
    max_triplets: int = 3000,
    generator: Optional[torch.Generator] = None,
) -> Triplets:
    """Random triplets for Eq. 5, the "boundary vs random triplets" ablation (appendix A.3).

    Anchors are valid pixels drawn uniformly without replacement (at most ``max_triplets``) among
    those whose segment has another pixel and with at least two valid segments present. The positive
    is a uniformly random *other* pixel of the anchor's segment, the negative a uniformly random
    pixel of any other valid segment. Ids ``<= 0`` are never used.

    Args:
        segment_map: [H, W] int64 segment ids.
        max_triplets: maximum number of triplets.
        generator: torch.Generator for reproducible sampling (its device is used for drawing).

    Returns:
        ``(anchor, positive, negative)`` flat pixel indices into ``segment_map.flatten()``, each [T].
    """
    flat = segment_map.flatten()
    pixels = (flat > 0).nonzero().squeeze(1)
    _, inverse, counts = torch.unique(flat[pixels], return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    pixels, segment = pixels[order], inverse[order]  # pixels grouped by segment, [n]
    starts = counts.cumsum(0) - counts
    num_valid = pixels.numel()

    size = counts[segment]
    candidates = ((size >= 2) & (size < num_valid)).nonzero().squeeze(1)
    anchor_pos = _subsample(candidates, max_triplets, generator)
    size, start = counts[segment[anchor_pos]], starts[segment[anchor_pos]]

    draws = _uniform((2, anchor_pos.numel()), generator, flat.device)
    # Positive: rank in [0, size - 2] within the segment, skipping the anchor itself.
    pos_rank = torch.minimum((draws[0] * (size - 1)).long(), size - 2)
    positive_pos = start + pos_rank
    positive_pos = positive_pos + (positive_pos >= anchor_pos).long()
    # Negative: rank in [0, n - size - 1] among the other segments, skipping the anchor's block.
    neg_rank = torch.minimum((draws[1] * (num_valid - size)).long(), num_valid - size - 1)
    negative_pos = neg_rank + size * (neg_rank >= start).long()
    return pixels[anchor_pos], pixels[positive_pos], pixels[negative_pos]


def triplet_loss(z: Tensor, anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Triplet loss, Eq. 5, on projected embeddings ``z = W sigmoid(V)``.

    Args:
        z: [P, d] projected pixel embeddings (the caller applies the linear layer ``W``).
        anchor, positive, negative: [T] flat pixel indices into ``z``.
        margin: the margin delta (paper: 1).

    Returns:
        Mean over triplets of ``max(0, ||a - p||^2 - ||a - n||^2 + delta)``. The paper writes a sum;
        the mean keeps lambda_triplet independent of the triplet count. 0 (in the graph) if T = 0.
    """
    a, p, n = z[anchor], z[positive], z[negative]
    hinge = F.relu((a - p).square().sum(-1) - (a - n).square().sum(-1) + margin)
    return hinge.sum() / max(anchor.numel(), 1)


def neighbour_pairs(means: Tensor, tau: float, max_neighbours: int) -> Tensor:
    """Directed 3D neighbourhood pairs of Eq. 6: ``(i, j)``, ``i != j``, ``||mu_i - mu_j||^2 <= tau``.

    ``tau`` is a *squared* distance (paper: 1e-2). Each Gaussian keeps at most its ``max_neighbours``
    nearest neighbours. The KD-tree search runs on CPU (scipy) and is meant to be recomputed
    periodically, not every step.

    Args:
        means: [N, 3] Gaussian centres (not differentiated).
        tau: squared-distance threshold.
        max_neighbours: maximum neighbours per Gaussian.

    Returns:
        [M, 2] int64 pairs on ``means.device`` (both ``(i, j)`` and ``(j, i)`` appear when mutual).
    """
    points = means.detach().cpu().double().numpy()
    num_points = points.shape[0]
    if num_points == 0 or max_neighbours <= 0:
        return torch.zeros(0, 2, dtype=torch.long, device=means.device)
    # cKDTree's bound is strict; widen it by one ulp and apply the inclusive test exactly below.
    bound = np.nextafter(math.sqrt(tau), np.inf)
    _, nbr = cKDTree(points).query(points, k=min(max_neighbours + 1, num_points), distance_upper_bound=bound)
    nbr = nbr.reshape(num_points, -1)
    src = np.broadcast_to(np.arange(num_points)[:, None], nbr.shape)
    keep = (nbr < num_points) & (nbr != src)
    keep &= np.cumsum(keep, axis=1) <= max_neighbours  # self may be missing among duplicate points
    i, j = src[keep], nbr[keep]
    close = np.square(points[i] - points[j]).sum(-1) <= tau
    pairs = np.stack([i[close], j[close]], axis=1)
    return torch.from_numpy(pairs).long().to(means.device)


def neighbourhood_loss(embeddings: Tensor, pairs: Tensor) -> Tensor:
    """3D neighbourhood regularisation, Eq. 6, as a mean over pairs of ``||v_i - v_j||^2``.

    Args:
        embeddings: [N, d] raw per-Gaussian embeddings ``v`` (no sigmoid, as in Eq. 6).
        pairs: [M, 2] int64 pairs from :func:`neighbour_pairs`.

    Returns:
        Scalar mean over pairs (the paper sums; the mean keeps lambda_3D independent of N and of
        the neighbourhood size). 0 (in the graph) when M = 0.
    """
    diff = embeddings[pairs[:, 0]] - embeddings[pairs[:, 1]]
    return diff.square().sum(-1).sum() / max(pairs.shape[0], 1)


def semantic_loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy for the optional semantic head (Sec. 4, PQ^scene evaluation).

    Args:
        logits: [P, C] class logits.
        target: [P] int64 class ids; ``ignore_index`` pixels are skipped.
        ignore_index: id of unlabelled pixels.

    Returns:
        Mean cross-entropy over labelled pixels; 0 (in the graph) when none is labelled.
    """
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp(min=1)
