"""nerfstudio method registration of the baselines (entry points `nerfstudio.method_configs`).

Each baseline reuses the `unic-lift` trainer configuration (`unic_lift_trainer_config`), swaps in its own
model (on the segmentation backbone) and per-Gaussian optimiser entries, and drops UniC-Lift's linear layer W.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from unic_lift_ns.baselines.contrastive_lift import ContrastiveLiftModelConfig, ContrastiveLiftPipelineConfig
from unic_lift_ns.baselines.gaussian_clustering import GaussianClusteringModelConfig
from unic_lift_ns.unic_lift_methods import unic_lift_trainer_config


def gaussian_clustering_trainer_config() -> TrainerConfig:
    """`gaussian-clustering`: Contrastive Gaussian Clustering's losses and labels on the UniC-Lift backbone.

    The 16-d features learn with Adam at 3DGS's colour learning rate (0.0025). They are rendered every step
    together with the semantic logits, so between two L_CC steps they get zero gradients and Adam's momentum
    keeps moving them, as in a 3DGS implementation that renders the features every step.
    """
    config = unic_lift_trainer_config()
    config.method_name = "gaussian-clustering"
    del config.optimizers["triplet_projection"]  # UniC-Lift's linear layer W
    config.pipeline.model = GaussianClusteringModelConfig()
    config.optimizers["embeddings"] = {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None}
    return config


gaussian_clustering_method = MethodSpecification(
    config=gaussian_clustering_trainer_config(),
    description="Contrastive Gaussian Clustering (Silva et al. 2024) on the UniC-Lift backbone (baseline).",
)


def contrastive_lift_trainer_config() -> TrainerConfig:
    """`contrastive-lift`: Contrastive Lift's slow-fast losses and HDBSCAN labels on the UniC-Lift backbone.

    The fast embeddings learn with Adam at 3DGS's colour learning rate (0.0025): unlike UniC-Lift's sigmoid-decoded
    bits, the slow-fast RBF losses need them to travel distances of order 1. The slow ones have an Adam entry with
    learning rate 0 only so that gsplat's densification keeps them aligned: they never get a gradient and move by
    the EMA alone.
    """
    config = unic_lift_trainer_config()
    config.method_name = "contrastive-lift"
    del config.optimizers["triplet_projection"]  # UniC-Lift's linear layer W
    config.pipeline = ContrastiveLiftPipelineConfig(
        datamanager=config.pipeline.datamanager, model=ContrastiveLiftModelConfig()
    )
    config.optimizers["embeddings"] = {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None}
    config.optimizers["slow_embeddings"] = {"optimizer": AdamOptimizerConfig(lr=0.0, eps=1e-15), "scheduler": None}
    return config


contrastive_lift_method = MethodSpecification(
    config=contrastive_lift_trainer_config(),
    description="Contrastive Lift (Bhalgat et al. 2023) on the UniC-Lift backbone, the CL+3DGS baseline.",
)
