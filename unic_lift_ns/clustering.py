"""Post-hoc clustering of rendered embeddings (Contrastive Lift, Sec. 3 "Rendering instance segmentation maps").

Contrastive Lift renders about 10^5 embeddings, clusters them with HDBSCAN, caches the cluster centroids and
labels every pixel of any view with its nearest centroid. These two steps are kept free of any model so the
benchmark can time them against UniC-Lift's direct Embedding-to-Label decoding on the same rendered maps.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from sklearn.cluster import HDBSCAN
from torch import Tensor

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
