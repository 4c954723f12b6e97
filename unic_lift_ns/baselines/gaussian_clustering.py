"""Contrastive Gaussian Clustering (Silva et al. 2024, arXiv 2404.12784) on the UniC-Lift backbone.

Each Gaussian carries a learnable segmentation feature f (the backbone's per-Gaussian embedding, 16-d), alpha
blended like colour with detached geometry. Training adds, to the rendering loss, the contrastive clustering loss
L_CC on the rendered feature map every ``contrastive_every`` steps and the spatial-similarity regularisation on
sampled near/far Gaussians every ``spatial_every`` steps (Sec. 3.2). After training the Gaussians are clustered by
their features (HDBSCAN on the L2-normalised features; centroids = normalised cluster means); each Gaussian takes
its nearest centroid, a view is rendered by alpha blending the Gaussians' *clustered* features (their centroids,
as the paper renders novel-view masks), and each pixel takes the nearest centroid of its rendered feature
(cosine), so a pixel covered by the Gaussians of one cluster gets exactly that cluster's label. UniC-Lift's
cluster, triplet and 3D losses are off. Two options outside the paper (off by default): Contrastive Lift's semantic
guidance (cluster each predicted thing class apart, stuff takes its class label) and a minimum opacity for the
Gaussians that are clustered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor

from unic_lift_ns.baselines.gaussian_clustering_losses import (
    applies_at,
    contrastive_clustering_loss,
    sample_spatial_pairs,
    spatial_neighbours,
    spatial_similarity_loss,
)
from unic_lift_ns.baselines.clustering_model import ClusteringModel, ClusteringModelConfig
from unic_lift_ns.clustering import ClassCentroids, fit_class_centroids
from unic_lift_ns.flag_ranges import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Range


@dataclass
class GaussianClusteringModelConfig(ClusteringModelConfig):
    """Contrastive Gaussian Clustering: per-Gaussian features, L_CC, spatial-similarity regularisation, clustering."""

    _target: Type = field(default_factory=lambda: GaussianClusteringModel)
    embedding_dim: int = 16
    """Size of the per-Gaussian segmentation feature f."""
    contrastive_loss_weight: float = 1.0
    """Weight of the contrastive clustering loss L_CC."""
    contrastive_every: int = 50
    """Apply L_CC every this many steps (paper: 50); 0 disables it."""
    contrastive_alpha: float = 10.0
    """Smoothing constant alpha of the per-segment temperature phi_p of L_CC."""
    min_temperature: float = 0.05
    """Floor of phi_p, so that a segment whose features have collapsed (spread 0) keeps finite logits."""
    spatial_every: int = 100
    """Apply the spatial-similarity regularisation every this many steps (paper: 100); 0 disables it."""
    spatial_num_anchors: int = 1000
    """m: Gaussians sampled per application of the spatial regularisation."""
    spatial_num_near: int = 5
    """Near Gaussians per sampled Gaussian (its nearest neighbours)."""
    spatial_num_far: int = 5
    """Far Gaussians per sampled Gaussian (uniform draws outside its near ball)."""
    near_weight: float = 1.0
    """lambda_near: weight of the pull between near Gaussians (1 - cosine similarity)."""
    far_weight: float = 0.1
    """lambda_far: weight of the push between far Gaussians (cosine similarity)."""
    spatial_refresh_every: int = 1000
    """Rebuild the KD-tree neighbours every this many steps (and whenever densification changes the Gaussians)."""
    cluster_max_samples: int = 20000
    """HDBSCAN clusters at most this many Gaussians' features (a fixed random subset); all are then assigned."""
    cluster_min_size: int = 50
    cluster_min_opacity: float = 0.0
    """Only Gaussians at least this opaque are clustered (all are then assigned); 0 = all of them (paper). Nearly
    transparent Gaussians get little gradient and keep features near their random start."""
    semantic_guided_clustering: bool = False  # the paper clusters all Gaussians together

    flag_ranges: ClassVar[Dict[str, Range]] = {
        "contrastive_loss_weight": AT_LEAST_0, "contrastive_every": AT_LEAST_0, "contrastive_alpha": POSITIVE,
        "min_temperature": POSITIVE, "spatial_every": AT_LEAST_0, "spatial_num_anchors": AT_LEAST_1,
        "spatial_num_near": AT_LEAST_1, "spatial_num_far": AT_LEAST_1, "near_weight": AT_LEAST_0,
        "far_weight": AT_LEAST_0, "spatial_refresh_every": AT_LEAST_1, "cluster_max_samples": AT_LEAST_1,
        "cluster_min_opacity": UNIT,
    }  # fmt: skip
    """Allowed values of Gaussian clustering's numeric fields (:mod:`unic_lift_ns.flag_ranges`)."""
    decoding_fields: ClassVar[Tuple[str, ...]] = ClusteringModelConfig.decoding_fields + (
        "cluster_max_samples", "cluster_min_opacity",
    )  # fmt: skip
    """The clustering's settings: what ``set_decoding`` may change (the clusters follow them)."""


class GaussianClusteringModel(ClusteringModel):
    """The segmentation backbone with the losses and the clustering-based labels of Contrastive Gaussian Clustering."""

    config: GaussianClusteringModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.clustering_seconds = 0.0  # wall time of the latest (lazy) fit of the clustering, for the bench
        self._centroids: Optional[ClassCentroids] = None
        self._centroids_key: Optional[Tuple] = None
        self._spatial_generator = torch.Generator()
        self._spatial_generator.manual_seed(0)

    # ------------------------------------------------------------------------------------------ labels

    def centroids(self) -> ClassCentroids:
        """Unit-norm cluster centroids of the Gaussians' normalised features (per predicted thing class with semantic
        guidance), fitted once per training step and clustering setting (lazily: the first time labels are
        needed) and cached; the fit time goes to ``clustering_seconds``.

        A group in which HDBSCAN finds no cluster (all noise) becomes one instance, its mean feature.
        """
        cfg = self.config
        things = self.thing_classes
        key = (self.step, self.num_points, cfg.cluster_max_samples, cfg.cluster_min_size, cfg.cluster_min_opacity,
               things)  # fmt: skip
        if self._centroids is None or self._centroids_key != key:
            start = time.perf_counter()
            features = F.normalize(self.embeddings.detach(), dim=-1)
            classes = self.semantic_logits.detach().argmax(dim=-1) if things is not None else None
            opaque = torch.sigmoid(self.opacities.detach()).reshape(-1) >= cfg.cluster_min_opacity
            candidates = opaque.nonzero().squeeze(-1) if bool(opaque.any()) else torch.arange(opaque.numel())
            order = torch.randperm(candidates.numel(), generator=torch.Generator().manual_seed(0))
            subset = candidates[order[: cfg.cluster_max_samples].to(candidates.device)].to(features.device)
            fitted = fit_class_centroids(
                features[subset],
                None if classes is None else classes[subset],
                cfg.stuff_classes,
                things,
                cfg.cluster_min_size,
            )
            self._centroids = replace(fitted, centroids=F.normalize(fitted.centroids.to(features), dim=-1))
            self._centroids_key = key
            self.clustering_seconds = time.perf_counter() - start
        return self._centroids

    def decode_instances(self, maps: Dict[str, Tensor]) -> Tensor:
        """[..., D] features -> [...] int64 label of the nearest centroid (cosine similarity); with semantic
        guidance and semantic logits in ``maps``, stuff takes its stuff label and things the nearest centroid of
        their own class."""
        classes = maps["semantic_logits"].argmax(dim=-1) if "semantic_logits" in maps else None
        return self.centroids().assign(F.normalize(maps["embedding"], dim=-1), classes)

    def segmentation_features(self, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """In evaluation the rendered feature is the alpha blend of the Gaussians' clustered features (centroids;
        0 for the stuff Gaussians of semantic guidance, so that they do not tint the things they border)."""
        features = super().segmentation_features(params)
        if not self.training:
            clusters = self.centroids()
            labels = self.decode_instances(features) - len(clusters.stuff_classes)
            centroid = clusters.centroids.to(labels.device)[labels.clamp(min=0)]
            features["embedding"] = torch.where(labels[:, None] >= 0, centroid, torch.zeros_like(centroid))
        return features

    # ------------------------------------------------------------------------------------------ losses

    def rendered_loss_weights(self) -> List[float]:
        """The semantic loss's weight and, on the steps L_CC is scheduled for, its weight: the other steps skip the
        segmentation render."""
        cfg = self.config
        scheduled = applies_at(self.step, cfg.contrastive_every)
        return super().rendered_loss_weights() + [cfg.contrastive_loss_weight if scheduled else 0.0]

    def instance_losses(
        self, outputs: Dict[str, Tensor], segments: Tensor, semantics: Optional[Tensor]
    ) -> Dict[str, Tensor]:
        """L_CC on the rendered features, on the steps it is scheduled for (the semantic classes are not used)."""
        cfg = self.config
        if cfg.contrastive_loss_weight <= 0 or not applies_at(self.step, cfg.contrastive_every):
            return {}
        features = outputs["embedding"].reshape(-1, cfg.embedding_dim)
        loss = contrastive_clustering_loss(
            features, segments, cfg.contrastive_alpha, cfg.min_temperature, self.num_segments
        )
        return {"contrastive_loss": cfg.contrastive_loss_weight * loss}

    def gaussian_losses(self) -> Dict[str, Tensor]:
        """The spatial-similarity regularisation on its scheduled steps, over cached KD-tree neighbours."""
        cfg = self.config
        if not applies_at(self.step, cfg.spatial_every) or (cfg.near_weight <= 0 and cfg.far_weight <= 0):
            return {}
        means = self.means.detach()
        near, radius = self.gaussian_cache(
            "spatial_neighbours", lambda: spatial_neighbours(means, cfg.spatial_num_near), cfg.spatial_refresh_every
        )
        anchors, near, far, far_valid = sample_spatial_pairs(
            means, near, radius, cfg.spatial_num_anchors, cfg.spatial_num_far, self._spatial_generator
        )
        loss = spatial_similarity_loss(self.embeddings, anchors, near, far, far_valid, cfg.near_weight, cfg.far_weight)
        return {"spatial_loss": loss}
