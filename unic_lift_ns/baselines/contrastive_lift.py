"""Contrastive Lift on 3D Gaussian splats: the "CL+3DGS" baseline of UniC-Lift (Table 5, appendix B.1).

Contrastive Lift (Bhalgat et al., NeurIPS 2023) with its neural field replaced by the UniC-Lift Gaussians: each
Gaussian carries a *fast* embedding theta (trained) and a *slow* one (an exponential moving average of the fast
one, momentum 0.9, appendix B.2); both are rendered like colour with detached geometry. Training uses the
slow-fast contrastive loss (Eq. 4) and the concentration loss (Eq. 5) instead of UniC-Lift's Eqs. 4-6. Labels
come from post-hoc clustering (Sec. 3 and appendix B.3): about 10^5 fast embeddings rendered from up to 100
training views are clustered with HDBSCAN, per predicted "thing" class when the semantic head is on, and every
pixel (or Gaussian) takes the label of its nearest cached centroid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor
from torch.nn import Parameter

from unic_lift_ns.baselines.contrastive_lift_losses import (
    concentration_loss,
    partition_pixels,
    slow_fast_contrastive_loss,
)
from unic_lift_ns.baselines.clustering_model import ClusteringModel, ClusteringModelConfig
from unic_lift_ns.clustering import ClassCentroids, fit_class_centroids
from unic_lift_ns.flag_ranges import ANY, AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Range
from unic_lift_ns.pipeline import SegmentationPipeline, SegmentationPipelineConfig


@dataclass
class ContrastiveLiftModelConfig(ClusteringModelConfig):
    """Contrastive Lift's instance field and losses on the segmentation backbone (Splatfacto)."""

    _target: Type = field(default_factory=lambda: ContrastiveLiftModel)
    embedding_dim: int = 3
    """Dimension D of the fast and slow embeddings (Contrastive Lift: 3 on Messy Rooms, 24 on ScanNet/Replica)."""
    slow_fast_loss_weight: float = 0.1
    """Weight of the slow-fast contrastive loss, Eq. 4 (appendix B.2: 0.1 for the instance losses)."""
    concentration_loss_weight: float = 0.1
    """Weight of the concentration loss, Eq. 5 (appendix B.2: 0.1 for the instance losses)."""
    rbf_gamma: float = 1.0
    """gamma of the RBF similarity exp(-gamma ||x - x'||^2) of Eq. 4 (no value in the paper; 1 = unit temperature)."""
    slow_momentum: float = 0.9
    """EMA momentum m of the slow embeddings: slow <- m slow + (1 - m) fast after every step (appendix B.2)."""
    max_pixels: int = 2048
    """Pixels drawn per step and split evenly into Omega_1 (fast) and Omega_2 (slow) (appendix B.2: 2048 rays)."""
    cluster_num_samples: int = 100_000
    """Rendered embeddings clustered after training (Sec. 3: 10^5)."""
    cluster_max_views: int = 100
    """Training views the clustered embeddings are drawn from (Sec. 3: 100 random viewpoints)."""
    cluster_min_samples: Optional[int] = None
    """HDBSCAN min_samples (core-distance neighbourhood); None = cluster_min_size."""
    cluster_seed: int = 0
    """Seed of the view and pixel draws of the clustering samples."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        "slow_fast_loss_weight": AT_LEAST_0, "concentration_loss_weight": AT_LEAST_0, "rbf_gamma": POSITIVE,
        "slow_momentum": UNIT, "max_pixels": Range(2), "cluster_num_samples": AT_LEAST_1,
        "cluster_max_views": AT_LEAST_1, "cluster_min_samples": AT_LEAST_1, "cluster_seed": ANY,
    }  # fmt: skip
    """Allowed values of Contrastive Lift's numeric fields (:mod:`unic_lift_ns.flag_ranges`)."""
    decoding_fields: ClassVar[Tuple[str, ...]] = ClusteringModelConfig.decoding_fields + (
        "cluster_num_samples", "cluster_max_views", "cluster_min_samples", "cluster_seed",
    )  # fmt: skip
    """The clustering's settings: what ``set_decoding`` may change (the clusters are then fitted again)."""


class ContrastiveLiftModel(ClusteringModel):
    """Fast and slow per-Gaussian embeddings, slow-fast losses and HDBSCAN + nearest-centroid labels."""

    config: ContrastiveLiftModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        # Per Gaussian like the fast embedding, so gsplat's strategy duplicates, splits and prunes it alongside;
        # never differentiated (rendered detached) and moved only by the EMA.
        self.gauss_params["slow_embeddings"] = Parameter(self.embeddings.detach().clone(), requires_grad=False)
        self._pixel_generator = torch.Generator().manual_seed(0)
        self.clustering_seconds: Optional[float] = None
        """Wall time of the last :meth:`fit_clusters` (rendering the samples + HDBSCAN), None before any."""
        self._centroids: Optional[ClassCentroids] = None
        self._sampling = False

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Load the Gaussians and forget centroids fitted to other weights."""
        self.decoding_changed()
        return super().load_state_dict(dict, **kwargs)

    def decoding_changed(self) -> None:
        """Forget the fitted centroids (other clustering settings, or other weights)."""
        self._centroids = None

    # ------------------------------------------------------------------------------------------ training

    def rendered_loss_weights(self) -> List[float]:
        """The semantic loss's weight and those of the slow-fast (Eq. 4) and concentration (Eq. 5) losses."""
        cfg = self.config
        return super().rendered_loss_weights() + [cfg.slow_fast_loss_weight, cfg.concentration_loss_weight]

    def segmentation_features(self, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The fast embedding theta and semantic logits, plus the slow embedding in training (Eq. 4)."""
        features = super().segmentation_features(params)
        if self.training:
            features["slow_embedding"] = params["slow_embeddings"].detach()
        return features

    def instance_losses(
        self, outputs: Dict[str, Tensor], segments: Tensor, semantics: Optional[Tensor]
    ) -> Dict[str, Tensor]:
        """Slow-fast contrastive loss (Eq. 4) and concentration loss (Eq. 5) on one random pixel partition; every
        segment is alike, so the semantic classes are not used."""
        cfg = self.config
        fast_pixels, slow_pixels = partition_pixels(segments, cfg.max_pixels, self._pixel_generator)
        fast = outputs["embedding"].reshape(-1, cfg.embedding_dim)[fast_pixels]
        slow = outputs["slow_embedding"].reshape(-1, cfg.embedding_dim)[slow_pixels]
        args = (fast, segments[fast_pixels], slow, segments[slow_pixels])
        return {
            "slow_fast_loss": cfg.slow_fast_loss_weight * slow_fast_contrastive_loss(*args, gamma=cfg.rbf_gamma),
            "concentration_loss": cfg.concentration_loss_weight * concentration_loss(*args),
        }

    @torch.no_grad()
    def update_slow_embeddings(self) -> None:
        """Appendix B.2: slow <- m slow + (1 - m) fast, per Gaussian."""
        m = self.config.slow_momentum
        self.gauss_params["slow_embeddings"].mul_(m).add_(self.embeddings.detach(), alpha=1.0 - m)

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Splatfacto's callbacks (densification after the optimiser step), then the EMA of the slow field."""
        after_step = [TrainingCallbackLocation.AFTER_TRAIN_ITERATION]
        ema = TrainingCallback(after_step, lambda step: self.update_slow_embeddings())
        return super().get_training_callbacks(attributes) + [ema]

    # ---------------------------------------------------------------------------------------- clustering

    @torch.no_grad()
    def fit_clusters(self) -> None:
        """Render the clustering samples, run HDBSCAN per group and cache the centroids (appendix B.3).

        Groups are the predicted thing classes with semantic guidance, else all pixels. A group in which HDBSCAN
        finds no cluster (or which has no sample) becomes a single instance. Sets :attr:`clustering_seconds`.
        """
        start = time.perf_counter()
        embeddings, classes = self._clustering_samples()
        cfg = self.config
        self._centroids = fit_class_centroids(
            embeddings, classes, cfg.stuff_classes, self.thing_classes, cfg.cluster_min_size, cfg.cluster_min_samples
        )
        self.clustering_seconds = time.perf_counter() - start

    def _clustering_samples(self) -> Tuple[Tensor, Optional[Tensor]]:
        """About ``cluster_num_samples`` rendered fast embeddings [M, D] (and semantic classes [M]) drawn evenly
        from up to ``cluster_max_views`` random views of :attr:`train_cameras`."""
        cfg = self.config
        cameras = self.train_cameras
        if cameras is None:
            raise RuntimeError("No views to cluster: the model's metadata has no 'train_cameras' (the datamanager's)")
        generator = torch.Generator().manual_seed(cfg.cluster_seed)
        views = torch.randperm(len(cameras), generator=generator)[: cfg.cluster_max_views].tolist()
        per_view = -(-cfg.cluster_num_samples // len(views))
        embeddings, classes, guided = [], [], self.thing_classes is not None
        was_training, self._sampling = self.training, True
        self.eval()
        try:
            for view in views:
                outputs = self.get_outputs_for_camera(cameras[view : view + 1])
                flat = outputs["embedding"].reshape(-1, cfg.embedding_dim)
                pick = torch.randperm(flat.shape[0], generator=generator)[:per_view].to(flat.device)
                embeddings.append(flat[pick])
                if guided:
                    classes.append(outputs["semantic_label"].reshape(-1)[pick].long())
        finally:
            self._sampling = False
            self.train(was_training)
        return torch.cat(embeddings), torch.cat(classes) if classes else None

    def decode_instances(self, maps: Dict[str, Tensor]) -> Tensor:
        """Nearest-centroid labels [...] of the embeddings [..., D]; clusters are fitted on first use. With semantic
        guidance and semantic logits in ``maps`` (appendix B.3, step 4), stuff pixels (or Gaussians) get their stuff
        label and thing ones the nearest centroid of their own class; otherwise the nearest over all groups."""
        embedding = maps["embedding"]
        if self._sampling:  # rendering the clustering samples themselves: nothing to decode yet
            return torch.zeros(embedding.shape[:-1], dtype=torch.long, device=embedding.device)
        if self._centroids is None:
            self.fit_clusters()
        assert self._centroids is not None
        classes = maps["semantic_logits"].argmax(dim=-1) if "semantic_logits" in maps else None
        return self._centroids.assign(embedding, classes)


@dataclass
class ContrastiveLiftPipelineConfig(SegmentationPipelineConfig):
    """The segmentation pipeline, refitting Contrastive Lift's clusters before every full evaluation."""

    _target: Type = field(default_factory=lambda: ContrastiveLiftPipeline)


class ContrastiveLiftPipeline(SegmentationPipeline):
    """Refits the clusters before every full evaluation."""

    config: ContrastiveLiftPipelineConfig

    def get_average_eval_image_metrics(self, *args, **kwargs) -> Dict[str, float]:
        """Refit the clusters on the current embeddings, then render and score every eval view; also reports the
        clustering time (``clustering_seconds``), which the paper adds to the training time."""
        self.model.fit_clusters()
        metrics = super().get_average_eval_image_metrics(*args, **kwargs)
        metrics["clustering_seconds"] = float(self.model.clustering_seconds)
        return metrics
