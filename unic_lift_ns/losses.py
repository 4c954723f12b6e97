"""Segmentation losses of UniC-Lift (Sec. 3.3, Eqs. 4-7) and triplet mining (Sec. 3.3, appendix A.3), plus the
semantic cross-entropy that the backbone trains for every method.

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
import sys
from typing import Literal, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from unic_lift_ns.data.label_maps import segment_slots

def cluster_contrastive_loss(
    embeddings: Tensor,
    segment_ids: Tensor,
    balance: Literal["mean", "sum"] = "mean",
    pinned: Optional[Tensor] = None,
    num_segments: Optional[int] = None,
) -> Tensor:
    """Cluster contrastive loss, Eq. 4: intra-segment spread minus inter-centroid spread.

    With ``num_segments`` the segments are summed into that many fixed slots: no shape depends on the data, so the
    loss never waits for the device (no ``unique``, no boolean indexing).

    Args:
        embeddings: [P, d] rendered embeddings *after* the sigmoid, i.e. ``sigmoid(V)`` in [0, 1]^d
            (Appendix A.1: the contrastive loss acts in the sigmoid-constrained space). The caller
            applies the sigmoid once and reuses it for the triplet branch (Eq. 5).
        segment_ids: [P] int64 segment id per pixel; ids ``<= 0`` are ignored.
        balance: 'mean': ``intra`` is the mean over valid pixels of ``||V(u) - m_Omega(u)||^2`` and ``inter``
            the mean over ordered centroid pairs ``i != j`` of ``||m_i - m_j||^2`` (0 for a single segment);
            'sum': Eq. 4's two sums, both divided by the number of valid pixels, i.e. the paper's balance of
            the terms (its inter term then weighs ``K (K - 1) / P`` as much as with 'mean').
        pinned: optional [P] bool, pixels whose segment's centroid is fixed at the code-0 corner (the stuff
            segment, see :func:`stuff_pixels`) instead of their mean; those segments are one pinned centroid
            in the inter term.
        num_segments: the largest id ``segment_ids`` can hold (the datamanager numbers each view's segments
            1..K, see :func:`~unic_lift_ns.data.label_maps.number_segments`); None = any ids, numbered here (one sync).

    Returns:
        Scalar ``intra - inter``, invariant to image resolution.
    """
    slot, num_segments = segment_slots(segment_ids, num_segments)  # slot 0: void, never a segment
    valid = slot > 0
    if pinned is not None:  # pinned pixels form one extra segment whose centroid is the origin
        slot = torch.where(pinned & valid, torch.full_like(slot, num_segments + 1), slot)
    weight = valid.to(embeddings.dtype)
    slots = num_segments + 2
    sums = embeddings.new_zeros(slots, embeddings.shape[-1]).index_add_(0, slot, embeddings * weight[:, None])
    counts = embeddings.new_zeros(slots).index_add_(0, slot, weight)
    present = counts > 0
    present[0] = False
    centroids = sums / counts.clamp(min=1.0).unsqueeze(-1)
    if pinned is not None:  # the pinned centroid is the origin, not a mean
        centroids = centroids * (torch.arange(slots, device=slot.device) <= num_segments).unsqueeze(-1)
    num_pixels = weight.sum().clamp(min=1.0)
    intra = ((embeddings - centroids[slot]).square().sum(-1) * weight).sum() / num_pixels

    # sum_{i != j} ||m_i - m_j||^2 = 2 K * sum_i ||m_i - mean(m)||^2 (stable, O(K d)).
    kept = present.to(embeddings.dtype)
    found = kept.sum()
    mean = (centroids * kept[:, None]).sum(0) / found.clamp(min=1.0)
    spread = 2.0 * ((centroids - mean).square().sum(-1) * kept).sum()
    inter = spread * found / num_pixels if balance == "sum" else spread / (found - 1.0).clamp(min=1.0)
    return intra - inter


def stuff_pixels(
    segment_ids: Tensor, semantics: Tensor, stuff_class: int = 0, num_segments: Optional[int] = None
) -> Tensor:
    """[P] bool: the pixels of segments that are mostly of semantic class ``stuff_class`` (Messy Rooms: the
    background), for the pinned centroid of :func:`cluster_contrastive_loss`.

    Args:
        segment_ids: [P] int64 instance-mask segment ids; ids ``<= 0`` are never stuff.
        semantics: [P] int64 semantic-mask classes (other values, e.g. 255 = unlabelled, count as not stuff).
        num_segments: as in :func:`cluster_contrastive_loss` (None: any ids, one sync).
    """
    slot, num_segments = segment_slots(segment_ids, num_segments)
    valid = slot > 0
    is_stuff = (semantics == stuff_class) & valid
    stuff = torch.zeros(num_segments + 1, device=slot.device).index_add_(0, slot, is_stuff.float())
    size = torch.zeros(num_segments + 1, device=slot.device).index_add_(0, slot, valid.float())
    return valid & (stuff[slot] > 0.5 * size[slot])


def code_push_loss(embeddings: Tensor, segment_ids: Tensor) -> Tensor:
    """Mean over masked pixels and bits of ``0.5 - |sigmoid(V) - 0.5|`` (not in the paper): pushes rendered codes
    off the cube's centre, where Eq. 4 leaves a segment seen in every view (the floor), since its inter-centroid
    term has no gradient on a centroid at the centroids' mean. Unlike a squared distance, the absolute value's
    gradient does not vanish near the centre.

    Args:
        embeddings: [P, d] rendered embeddings after the sigmoid, in [0, 1]^d.
        segment_ids: [P] int64 segment id per pixel; ids ``<= 0`` are ignored.

    Returns:
        Scalar in [0, 0.5]; 0 (in the graph) without a masked pixel.
    """
    weight = (segment_ids > 0).to(embeddings.dtype)
    push = (0.5 - (embeddings - 0.5).abs()).mean(-1)
    return (push * weight).sum() / weight.sum().clamp(min=1.0)


class Triplets(NamedTuple):
    """[T] flat pixel indices of Eq. 5's anchors, positives and negatives, and which of the T are triplets: the
    samplers return a fixed T so that no shape depends on the masks (no device sync); entries with ``valid`` False
    hold indices of no meaning."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor
    valid: Tensor

    def compact(self) -> "Triplets":
        """The valid triplets only (one device sync)."""
        return Triplets(*(t[self.valid] for t in self[:3]), self.valid[self.valid])


def _uniform(shape: Tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Float64 uniforms in [0, 1) drawn on the generator's device and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64).to(device)


def _subsample(candidates: Tensor, max_triplets: int, generator: Optional[torch.Generator]) -> Tensor:
    """At most ``max_triplets`` entries of ``candidates``, uniformly without replacement."""
    gen_device = generator.device if generator is not None else candidates.device
    perm = torch.randperm(candidates.numel(), generator=generator, device=gen_device)[:max_triplets]
    return candidates[perm.to(candidates.device)]


def _draw_anchors(valid: Tensor, max_triplets: int, generator: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
    """At most ``max_triplets`` of the pixels where ``valid`` [P], uniformly without replacement, as a fixed
    ``min(max_triplets, P)`` draws (the largest of P uniform keys) and whether each is a valid pixel."""
    keys = torch.where(valid, _uniform(tuple(valid.shape), generator, valid.device), -1.0)
    taken, anchor = torch.topk(keys, min(max_triplets, valid.numel()))
    return anchor, taken >= 0


class _Groups(NamedTuple):
    """Items sorted by (group, item) with each group's count and start: a table to draw from by group, built and
    read without device syncs."""

    keys: Tensor  # [L] sorted ``group * span + item``; entries past the last group's hold no item
    counts: Tensor  # [G]
    starts: Tensor  # [G]
    span: int

    @classmethod
    def build(cls, group: Tensor, item: Tensor, keep: Tensor, num_groups: int, span: int) -> "_Groups":
        """Groups of the ``item`` (in [0, span)) where ``keep``, by ``group`` (in [0, num_groups)); all three of
        one shape. Keys are int32 where they fit (half the sort's time on CPU)."""
        absent = num_groups * span
        dtype = torch.int32 if absent < 2**31 else torch.int64
        key = torch.where(keep, group.to(dtype) * span + item.to(dtype), absent).reshape(-1).sort().values
        owner, kept = torch.where(keep, group, 0).reshape(-1), keep.reshape(-1).long()
        counts = torch.zeros(num_groups, dtype=torch.long, device=key.device).index_add_(0, owner, kept)
        return cls(key, counts, counts.cumsum(0) - counts, span)

    def draw(self, wanted: Tensor, generator: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
        """For each group id in ``wanted``, a uniformly random item of that group, and whether the group has one."""
        count = self.counts[wanted]
        rank = (_uniform(tuple(wanted.shape), generator, wanted.device) * count).long()
        index = self.starts[wanted] + torch.minimum(rank, (count - 1).clamp(min=0))
        return self.keys[index.clamp(max=self.keys.numel() - 1)].long() % self.span, count > 0


def boundary_triplets(
    segment_map: Tensor,
    max_triplets: int = 3000,
    generator: Optional[torch.Generator] = None,
    radius: int = 2,
    num_segments: Optional[int] = None,
) -> Triplets:
    """Triplets for Eq. 5 with positives and negatives hard-mined at segment boundaries (Sec. 3.3, A.3).

    As in the paper, the anchor ``u1`` is any pixel of a segment ``Omega_i``; the positive ``u2`` is a pixel of
    ``Omega_i`` on its boundary and the negative ``u3`` a pixel of another segment ``Omega_j`` next to
    ``Omega_i`` (within ``radius`` pixels). Boundary pixels are where rendered embeddings mix neighbouring
    objects, so these triplets pull them towards their own segment and away from the neighbour. Anchors are
    drawn uniformly without replacement (at most ``max_triplets``), positives and negatives uniformly among the
    distinct pixels that qualify; ids ``<= 0`` are never used. Anchors whose segment has no neighbour are not
    triplets. Every shape is fixed by the map's size (no device sync).

    Args:
        segment_map: [H, W] int64 segment ids.
        max_triplets: maximum number of triplets (paper: 3000).
        generator: torch.Generator for reproducible sampling (its device is used for drawing).
        radius: Chebyshev width (>= 1) of the boundary band.
        num_segments: as in :func:`cluster_contrastive_loss` (None: any ids, one sync).

    Returns:
        ``min(max_triplets, H * W)`` candidate triplets of flat pixel indices into ``segment_map.flatten()``.
    """
    assert radius >= 1, "radius must be >= 1"
    labels, num_segments = segment_slots(segment_map, num_segments)
    labels = labels.to(torch.int32)  # faster sorts
    flat, (height, width) = labels.flatten(), labels.shape
    pixel = torch.arange(flat.numel(), device=flat.device)
    # For every shift, the label `near` seen at each pixel from `radius` away: where it is another valid segment,
    # the pixel is a negative of segment `near`, and a positive (a boundary pixel) of its own segment.
    near_of_shift = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                near = labels.new_zeros(labels.shape)
                near[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = labels[
                    max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
                ]
                near_of_shift.append(near.flatten())
    near = torch.stack(near_of_shift).sort(dim=0).values  # [shifts, P], each pixel's labels around it in order
    meets = (near > 0) & (flat > 0) & (near != flat)
    first = torch.ones_like(meets)
    first[1:] = near[1:] != near[:-1]  # a segment near a pixel is one negative, from however many shifts
    groups = num_segments + 1
    negatives = _Groups.build(near, pixel.expand_as(near), meets & first, groups, flat.numel())
    positives = _Groups.build(flat, pixel, meets.any(0), groups, flat.numel())

    anchor, valid = _draw_anchors(flat > 0, max_triplets, generator)
    negative, has_negative = negatives.draw(flat[anchor], generator)
    positive, has_positive = positives.draw(flat[anchor], generator)
    return Triplets(anchor, positive, negative, valid & has_negative & has_positive)


def random_triplets(
    segment_map: Tensor,
    max_triplets: int = 3000,
    generator: Optional[torch.Generator] = None,
) -> Triplets:
    """Random triplets for Eq. 5, the "boundary vs random triplets" ablation (appendix A.3).

    Anchors are valid pixels drawn uniformly without replacement (at most ``max_triplets``) among
    those whose segment has another pixel and with at least two valid segments present. The positive
    is a uniformly random *other* pixel of the anchor's segment, the negative a uniformly random
    pixel of any other valid segment. Ids ``<= 0`` are never used. Unlike :func:`boundary_triplets`, the
    number of triplets depends on the map (device syncs).

    Args:
        segment_map: [H, W] int64 segment ids.
        max_triplets: maximum number of triplets.
        generator: torch.Generator for reproducible sampling (its device is used for drawing).

    Returns:
        The triplets of flat pixel indices into ``segment_map.flatten()``, all valid.
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
    anchor = pixels[anchor_pos]
    return Triplets(anchor, pixels[positive_pos], pixels[negative_pos], torch.ones_like(anchor, dtype=torch.bool))


def triplet_loss(z: Tensor, triplets: Triplets, margin: float = 1.0) -> Tensor:
    """Triplet loss, Eq. 5, on projected embeddings ``z = W sigmoid(V)``.

    Args:
        z: [P, d] projected pixel embeddings (the caller applies the linear layer ``W``).
        triplets: flat pixel indices into ``z``; only the valid ones count.
        margin: the margin delta (paper: 1).

    Returns:
        Mean over the valid triplets of ``max(0, ||a - p||^2 - ||a - n||^2 + delta)``. The paper writes a sum;
        the mean keeps lambda_triplet independent of the triplet count. 0 (in the graph) without a valid one.
    """
    a, p, n = z[triplets.anchor], z[triplets.positive], z[triplets.negative]
    hinge = F.relu((a - p).square().sum(-1) - (a - n).square().sum(-1) + margin)
    weight = triplets.valid.to(hinge.dtype)
    return (hinge * weight).sum() / weight.sum().clamp(min=1.0)


def neighbour_pairs(means: Tensor, tau: float, max_neighbours: int) -> Tensor:
    """Directed 3D neighbourhood pairs of Eq. 6: ``(i, j)``, ``i != j``, ``||mu_i - mu_j||^2 <= tau``.

    ``tau`` is a *squared* distance (paper: 1e-2). Each Gaussian keeps at most its ``max_neighbours``
    nearest neighbours. The KD-tree search runs on CPU (scipy) on every core and is meant to be recomputed when
    the Gaussians change (densification), not every step. For speed (1.6 s instead of 12 s at 1M centres on two
    cores, ``benchmarks/neighbour_scale.py``) the tree splits at midpoints and shrinks its boxes to the points, and
    the queries run in the tree's leaf order, so that consecutive queries walk the same nodes.

    Args:
        means: [N, 3] Gaussian centres (not differentiated).
        tau: squared-distance threshold, inclusive up to float64 rounding.
        max_neighbours: maximum neighbours per Gaussian.

    Returns:
        [M, 2] int32 pairs on ``means.device`` (both ``(i, j)`` and ``(j, i)`` appear when mutual), grouped by
        ``i``.
    """
    points = means.detach().cpu().double().numpy()
    num_points = points.shape[0]
    if num_points == 0 or max_neighbours <= 0:
        return torch.zeros(0, 2, dtype=torch.int32, device=means.device)
    assert num_points < 2**31 and sys.byteorder == "little", "int32 pairs of (i, j) packed in little-endian int64"
    tree = cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=True)
    order = tree.indices.astype(np.int32)
    # The query's bound is strict: widen it by one ulp to keep centres exactly sqrt(tau) apart.
    _, nbr = tree.query(
        points[order], k=min(max_neighbours + 1, num_points), distance_upper_bound=np.nextafter(math.sqrt(tau), np.inf),
        workers=-1,
    )  # fmt: skip
    src, nbr = torch.from_numpy(order)[:, None], torch.from_numpy(nbr.reshape(num_points, -1))
    not_self = nbr != src
    keep = not_self & (nbr < num_points)  # missing neighbours read num_points
    # Self is missing from a row only among more than max_neighbours duplicates: keep max_neighbours of them.
    keep[:, -1] &= ~not_self.all(dim=1)
    # Each (i, j) as one little-endian int64 (j high, i low), so that one gather compacts both ends.
    packed = nbr.bitwise_left_shift_(32).bitwise_or_(src).view(-1)
    return packed[keep.view(-1).nonzero().squeeze(1)].view(torch.int32).view(-1, 2).to(means.device)


def neighbourhood_loss(
    embeddings: Tensor, pairs: Tensor, num_samples: Optional[int] = None, generator: Optional[torch.Generator] = None
) -> Tensor:
    """3D neighbourhood regularisation, Eq. 6, as a mean over pairs of ``||v_i - v_j||^2``.

    With ``num_samples`` < M the mean runs over ``num_samples`` pairs drawn uniformly with replacement: an
    unbiased estimate of the mean over all pairs (and of its gradient) at O(num_samples) cost instead of O(M).

    Args:
        embeddings: [N, d] raw per-Gaussian embeddings ``v`` (no sigmoid, as in Eq. 6).
        pairs: [M, 2] int32 or int64 pairs from :func:`neighbour_pairs`.
        num_samples: pairs per call; None or 0 = all M pairs (the paper's sum, normalised).
        generator: torch.Generator for the draws (its device is used for drawing).

    Returns:
        Scalar mean over (sampled) pairs (the paper sums; the mean keeps lambda_3D independent of N and of the
        neighbourhood size). 0 (in the graph) when M = 0.
    """
    if num_samples and num_samples < pairs.shape[0]:
        gen_device = generator.device if generator is not None else pairs.device
        drawn = torch.randint(pairs.shape[0], (num_samples,), generator=generator, device=gen_device)
        pairs = pairs[drawn.to(pairs.device)]
    # One gather of every i, then every j (int64: index_select's backward on CPU is twice as slow with int32).
    ends = embeddings.index_select(0, pairs.t().reshape(-1).long())
    first, second = ends.view(2, pairs.shape[0], embeddings.shape[-1]).unbind(0)
    return (first - second).square().sum() / max(pairs.shape[0], 1)


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
