"""Losses of Contrastive Gaussian Clustering (Silva et al. 2024, arXiv 2404.12784, Sec. 3.2).

* ``contrastive_clustering_loss``: L_CC on a rendered feature map, a prototype contrastive loss where every mask
  segment p is a prototype (its normalised mean feature f̄_p) with its own concentration (temperature) φ_p;
* ``spatial_neighbours`` / ``sample_spatial_pairs`` / ``spatial_similarity_loss``: the spatial-similarity
  regularisation, which pulls the features of nearby Gaussians together and pushes those of far Gaussians apart.

Features are compared by cosine similarity (dot products of L2-normalised vectors), so the loss does not depend
on the feature norm, which alpha blending scales with the accumulated opacity. Ids ``<= 0`` in masks are void.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from unic_lift_ns.data.label_maps import segment_slots


def applies_at(step: int, every: int) -> bool:
    """Whether a loss scheduled "every ``every`` iterations" is on at ``step`` (steps 0, every, 2 every, ...).

    ``every <= 0`` switches the loss off.
    """
    return every > 0 and step % every == 0


def contrastive_clustering_loss(
    features: Tensor,
    segment_ids: Tensor,
    alpha: float = 10.0,
    min_temperature: float = 0.05,
    num_segments: Optional[int] = None,
) -> Tensor:
    """Contrastive clustering loss L_CC (Sec. 3.2) on rendered features.

    ``L_CC = -1/N_k sum_p 1/|f_p| sum_q log( exp(f_pq . f̄_p / φ_p) / sum_s exp(f_pq . f̄_s / φ_s) )`` with
    ``φ_p = sum_q ||f_pq - f̄_p||_2 / (|f_p| log(|f_p| + alpha))``: a segment's temperature is its mean spread,
    shrunk for large segments. ``f_pq`` and ``f̄_p`` (the mean of a segment's normalised features) are
    L2-normalised. The temperatures are concentration estimates, not optimised (detached), and floored at
    ``min_temperature`` so that a collapsed segment (spread 0) gives finite logits.

    Args:
        features: [P, D] rendered features of the pixels (any norm).
        segment_ids: [P] int64 mask segment ids; ids ``<= 0`` are ignored.
        alpha: smoothing constant alpha of φ_p.
        min_temperature: lower bound of φ_p.
        num_segments: the largest id ``segment_ids`` can hold (the datamanager numbers each view's segments
            1..K): the segments are summed into fixed slots, so the loss never waits for the device; None = any
            ids, numbered here (one sync).

    Returns:
        Scalar L_CC (0 with fewer than two segments); a zero connected to the graph without valid pixels.
    """
    slot, num_segments = segment_slots(segment_ids, num_segments)  # slot 0: void, never a prototype
    valid = slot > 0
    f = F.normalize(features, dim=-1)
    weight = valid.to(f.dtype)
    slots = num_segments + 1
    sizes = f.new_zeros(slots).index_add_(0, slot, weight)
    present = (sizes > 0) & (torch.arange(slots, device=slot.device) > 0)
    sizes = sizes.clamp(min=1.0)
    means = f.new_zeros(slots, f.shape[-1]).index_add_(0, slot, f * weight[:, None]) / sizes[:, None]
    prototypes = F.normalize(means, dim=-1)
    with torch.no_grad():
        spread = f.new_zeros(slots).index_add_(0, slot, (f - prototypes[slot]).norm(dim=-1) * weight)
        phi = (spread / (sizes * torch.log(sizes + alpha))).clamp(min=min_temperature)
    logits = (f @ prototypes.T / phi).masked_fill(~present, torch.finfo(f.dtype).min)  # absent: probability 0
    log_prob = torch.log_softmax(logits, dim=-1).gather(1, slot[:, None]).squeeze(1)
    per_segment = f.new_zeros(slots).index_add_(0, slot, torch.where(valid, -log_prob, 0.0)) / sizes
    return per_segment.sum() / present.sum().clamp(min=1)


def spatial_neighbours(means: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` nearest other Gaussians of every Gaussian, from a KD-tree (scipy, on CPU).

    Meant to be rebuilt periodically, not every step.

    Args:
        means: [N, 3] Gaussian centres.
        k: number of near Gaussians per Gaussian.

    Returns:
        ``(near, radius)``: [N, k'] int64 neighbour indices, ``k' = min(k, N - 1)``, and [N] the distance to
        the farthest of them, on ``means.device``.
    """
    points = means.detach().cpu().double().numpy()
    num_points = points.shape[0]
    k = min(k, num_points - 1)
    if k <= 0:
        return torch.zeros(num_points, 0, dtype=torch.long, device=means.device), means.new_zeros(num_points)
    distance, index = cKDTree(points).query(points, k=k + 1)
    # Drop each point itself (the first hit, or any hit among duplicated points) and keep k others.
    others = index != np.arange(num_points)[:, None]
    others &= np.cumsum(others, axis=1) <= k
    near = index[others].reshape(num_points, k)
    radius = distance[others].reshape(num_points, k)[:, -1]
    return torch.from_numpy(near).long().to(means.device), torch.from_numpy(radius).to(means)


def sample_spatial_pairs(
    means: Tensor,
    near: Tensor,
    radius: Tensor,
    num_anchors: int,
    num_far: int,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Anchors with their near and far Gaussians for the spatial-similarity regularisation.

    ``num_anchors`` Gaussians are drawn uniformly without replacement; their near Gaussians are the ``k`` nearest
    from :func:`spatial_neighbours`; ``num_far`` far Gaussians per anchor are drawn uniformly among all Gaussians,
    and a draw counts only when it lies outside the anchor's near ball (farther than its k-th neighbour).

    Args:
        means: [N, 3] Gaussian centres (the ones the neighbours were computed for).
        near, radius: output of :func:`spatial_neighbours`.
        num_anchors: m, the number of sampled Gaussians.
        num_far: far Gaussians drawn per anchor.
        generator: CPU torch.Generator for reproducible draws.

    Returns:
        ``(anchors [m], near [m, k], far [m, num_far], far_valid [m, num_far] bool)``.
    """
    num_points = means.shape[0]
    anchors = torch.randperm(num_points, generator=generator)[:num_anchors].to(means.device)
    far = torch.randint(num_points, (anchors.numel(), num_far), generator=generator).to(means.device)
    distance = (means[far] - means[anchors][:, None]).norm(dim=-1)
    return anchors, near[anchors], far, distance > radius[anchors][:, None]


def spatial_similarity_loss(
    features: Tensor,
    anchors: Tensor,
    near: Tensor,
    far: Tensor,
    far_valid: Tensor,
    near_weight: float,
    far_weight: float,
) -> Tensor:
    """Spatial-similarity regularisation (Sec. 3.2) on per-Gaussian features.

    ``lambda_near * mean_(j, i near j) (1 - cos(f_j, f_i)) + lambda_far * mean_(j, i far from j) cos(f_j, f_i)``:
    adjacent Gaussians are pulled towards the same feature, far ones away from it.

    Args:
        features: [N, D] per-Gaussian features.
        anchors: [m] anchor indices; near: [m, k] and far: [m, k_far] indices; far_valid: [m, k_far] bool.
        near_weight, far_weight: lambda_near and lambda_far.

    Returns:
        Scalar; each mean is 0 (in the graph) when it has no pair.
    """
    f = F.normalize(features, dim=-1)
    anchor = f[anchors][:, None]
    near_cos = (anchor * f[near]).sum(-1)
    far_cos = (anchor * f[far]).sum(-1) * far_valid
    near_term = (1.0 - near_cos).sum() / max(near_cos.numel(), 1)
    far_term = far_cos.sum() / far_valid.sum().clamp(min=1)
    return near_weight * near_term + far_weight * far_term

