"""Post-hoc clustering of rendered embeddings (Contrastive Lift, Sec. 3 "Rendering instance segmentation maps").

Contrastive Lift renders about 10^5 embeddings, clusters them with HDBSCAN, caches the cluster centroids and
labels every pixel of any view with its nearest centroid. These two steps are kept free of any model so the
benchmark can time them against UniC-Lift's direct Embedding-to-Label decoding on the same rendered maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from unic_lift_ns.errors import InputError

ArrayLike = Union[np.ndarray, Tensor]


def fit_centroids(
    samples: ArrayLike, min_cluster_size: int = 100, min_samples: Optional[int] = None
) -> Tensor:
    """Cluster ``samples`` [M, D] with HDBSCAN and return the mean of each cluster, [C, D] float32 (CPU).

    Noise points (HDBSCAN label -1) are ignored; C = 0 when HDBSCAN finds no cluster (or M is 0).

    Args:
        samples: [M, D] embeddings, numpy or torch on any device.
        min_cluster_size: HDBSCAN's minimum cluster size, in samples (Contrastive Lift, appendix B.3).
        min_samples: HDBSCAN's neighbourhood size for core distances; None = ``min_cluster_size``.
    """
    data = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
    if data.ndim != 2:
        raise ValueError(f"fit_centroids needs [M, D] samples, got shape {data.shape}")
    data = data.astype(np.float64, copy=False)
    if data.shape[0] < max(min_cluster_size, min_samples or 0, 2):
        return torch.zeros(0, data.shape[1])
    from sklearn.cluster import HDBSCAN  # here: scikit-learn takes 1-2 s to import, and every ns-train imports us

    labels = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True).fit_predict(data)
    kept = labels >= 0
    if not kept.any():
        return torch.zeros(0, data.shape[1])
    ids = torch.from_numpy(labels[kept])
    points = torch.from_numpy(data[kept])
    sums = torch.zeros(int(ids.max()) + 1, data.shape[1], dtype=torch.float64).index_add_(0, ids, points)
    counts = torch.bincount(ids).unsqueeze(-1)
    return (sums / counts).float()


def centroids_or_mean(centroids: Tensor, samples: Tensor) -> Tensor:
    """``centroids``, or the mean of ``samples`` [M, D] as the single centroid when HDBSCAN found no cluster (all
    noise: one instance)."""
    return centroids if centroids.shape[0] > 0 else samples.mean(dim=0, keepdim=True).cpu()


def assign_nearest(embeddings: Tensor, centroids: ArrayLike, chunk_size: int = 1 << 16) -> Tensor:
    """Index of the nearest centroid (Euclidean) of every embedding: [..., D] -> [...] int64.

    Runs on ``embeddings``' device in chunks of ``chunk_size`` rows, so memory stays bounded for any image size.
    """
    centres = torch.as_tensor(centroids, dtype=embeddings.dtype, device=embeddings.device)
    if centres.dim() != 2 or centres.shape[0] == 0:
        raise ValueError(f"Need a non-empty [C, D] centroid matrix, got shape {tuple(centres.shape)}")
    if centres.shape[1] != embeddings.shape[-1]:
        raise ValueError(f"Centroids have dimension {centres.shape[1]}, embeddings {embeddings.shape[-1]}")
    flat = embeddings.reshape(-1, embeddings.shape[-1])
    nearest = [torch.cdist(rows, centres).argmin(dim=-1) for rows in flat.split(chunk_size)]
    return torch.cat(nearest).reshape(embeddings.shape[:-1])


def guided_thing_classes(config: Any, head_trained: bool = True) -> Optional[list[int]]:
    """The semantic classes a model ``config`` (with ``semantic_guided_clustering``, ``num_semantic_classes`` and
    ``stuff_classes``) clusters separately: those that are not stuff. None without guidance, without semantic head,
    or when the head never saw a semantic mask (``head_trained`` False: every class would be 0). Refuses a stuff
    class the head does not have, or no thing class (the flag ``--pipeline.model.stuff-classes`` is named)."""
    classes, stuff = config.num_semantic_classes, config.stuff_classes
    if not config.semantic_guided_clustering or classes <= 0:
        return None
    unknown = [c for c in stuff if not 0 <= c < classes]
    if unknown:
        raise InputError(f"--pipeline.model.stuff-classes {unknown}: not among {classes} classes")
    things = [c for c in range(classes) if c not in stuff]
    if not things:
        raise InputError("Semantic-guided clustering needs a thing class outside --pipeline.model.stuff-classes")
    return things if head_trained else None


@dataclass(frozen=True)
class ClassCentroids:
    """Cluster centroids fitted per predicted thing class (Contrastive Lift, appendix B.3, steps 2-4).

    Stuff class k of ``stuff_classes`` takes label k; the centroids of all groups follow, in group order. Without
    semantic guidance there is one group (class None) and no stuff label.
    """

    centroids: Tensor
    """[C, D] centroids of every group, concatenated."""
    groups: Tuple[Tuple[Optional[int], int, int], ...]
    """(thing class, or None for all samples; first row; end row) of each group's centroids."""
    stuff_classes: Tuple[int, ...] = ()
    """Stuff classes, whose members take their class's label instead of a centroid's."""

    def assign(self, embeddings: Tensor, classes: Optional[Tensor] = None) -> Tensor:
        """Labels [...] of embeddings [..., D] with predicted classes [...]: stuff ones their stuff label, thing ones
        the nearest centroid of their own class; without ``classes`` (or guidance) the nearest over all groups."""
        offset = len(self.stuff_classes)
        centroids = self.centroids.to(embeddings.device)
        if classes is None or not self.stuff_classes:
            return assign_nearest(embeddings, centroids) + offset
        labels = torch.zeros(classes.shape, dtype=torch.long, device=embeddings.device)
        for index, stuff in enumerate(self.stuff_classes):
            labels[classes == stuff] = index
        for group, first, end in self.groups:
            members = classes == group
            labels[members] = assign_nearest(embeddings[members], centroids[first:end]) + offset + first
        return labels


def fit_class_centroids(
    samples: Tensor,
    classes: Optional[Tensor],
    stuff_classes: Sequence[int],
    things: Optional[Sequence[int]],
    min_cluster_size: int,
    min_samples: Optional[int] = None,
) -> ClassCentroids:
    """HDBSCAN centroids of ``samples`` [M, D] per thing class of ``classes`` [M] (``things``), or of all samples
    when ``things`` is None. A group in which HDBSCAN finds no cluster (or which has no sample) becomes one
    instance, the mean of its members (of all samples when it has none)."""
    centroids, groups, first = [], [], 0
    for group in things if things is not None else [None]:
        members = samples if group is None or classes is None else samples[classes == group]
        found = fit_centroids(members, min_cluster_size, min_samples)
        found = centroids_or_mean(found, members if members.shape[0] > 0 else samples)
        centroids.append(found)
        groups.append((group, first, first + found.shape[0]))
        first += found.shape[0]
    stuff = tuple(stuff_classes) if things is not None else ()
    return ClassCentroids(torch.cat(centroids), tuple(groups), stuff)
