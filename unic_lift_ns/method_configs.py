"""nerfstudio method registrations (entry points `nerfstudio.method_configs`): `ns-train unic-lift`, `unic-lift-cpu`,
`contrastive-lift` and `gaussian-clustering`, all built on one trainer configuration of the segmentation backbone.

UniC-Lift's defaults follow its paper (section 4, implementation details): 30k steps, d = 12, every lambda = 0.1,
margin 1, tau = 0.01, at most 3000 triplets, Adam with learning rate 1e-4 for the embeddings and the linear layer,
the 3D loss from step 15000 and the triplet loss once densification has stopped. Geometry and colour use
Splatfacto's optimiser settings in every method. `unic-lift-cpu` is the same method on the CPU with a short schedule
(:mod:`unic_lift_ns.cpu_recipe`). Each baseline swaps in its own model and embedding optimiser.
"""

from __future__ import annotations

from typing import Optional

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from unic_lift_ns.baselines.contrastive_lift import ContrastiveLiftModelConfig, ContrastiveLiftPipelineConfig
from unic_lift_ns.baselines.gaussian_clustering import GaussianClusteringModelConfig
from unic_lift_ns.checkpoints import allow_nerfstudio_checkpoints
from unic_lift_ns.cpu_recipe import (
    CPU_DENSIFY_GRAD_THRESH,
    CPU_LEARNING_RATES,
    CPU_NO_PERIODIC,
    CPU_SCHEDULE,
    CPU_STEPS,
    MAX_STEPS,
)
from unic_lift_ns.data.datamanager import SegmentationDataManagerConfig
from unic_lift_ns.models.backbone import SegmentationSplatModelConfig
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig
from unic_lift_ns.pipeline import SegmentationPipelineConfig
from unic_lift_ns.trainer import SegmentationTrainerConfig

allow_nerfstudio_checkpoints()  # ns-eval / ns-viewer / ns-export import this module before loading


def _adam(lr: float, scheduler=None) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def segmentation_trainer_config(
    method_name: str,
    model: SegmentationSplatModelConfig,
    embedding_lr: float,
    pipeline: Optional[SegmentationPipelineConfig] = None,
) -> SegmentationTrainerConfig:
    """The trainer configuration every method shares: the segmentation pipeline with ``model``, Splatfacto's
    optimisers for geometry and colour, Adam at ``embedding_lr`` for the per-Gaussian embeddings and the semantic
    head's, 30k steps. The live viewer listens on 127.0.0.1 only (it has no authentication);
    `--viewer.websocket-host 0.0.0.0` opens it to the network."""
    pipeline = pipeline or SegmentationPipelineConfig()
    pipeline.datamanager, pipeline.model = SegmentationDataManagerConfig(cache_images_type="uint8"), model
    return SegmentationTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=MAX_STEPS,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers={
            "means": _adam(1.6e-4, ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=MAX_STEPS)),
            "features_dc": _adam(0.0025),
            "features_rest": _adam(0.0025 / 20),
            "opacities": _adam(0.05),
            "scales": _adam(0.005),
            "quats": _adam(0.001),
            "embeddings": _adam(embedding_lr),
            "semantic_logits": _adam(0.0025),
            "camera_opt": _adam(
                1e-4, ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=MAX_STEPS, warmup_steps=1000, lr_pre_warmup=0)
            ),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, websocket_host="127.0.0.1"),
        vis="viewer",
    )


def unic_lift_trainer_config() -> SegmentationTrainerConfig:
    """`unic-lift`: the paper's recipe, with Adam at 1e-4 for the embeddings and the linear layer W."""
    config = segmentation_trainer_config("unic-lift", UniCLiftModelConfig(), embedding_lr=1e-4)
    config.optimizers["triplet_projection"] = _adam(1e-4)
    return config


def unic_lift_cpu_trainer_config(steps: int = CPU_STEPS) -> SegmentationTrainerConfig:
    """`unic-lift-cpu`: `unic-lift` on the CPU for ``steps`` steps with CPU_SCHEDULE scaled to them, the CPU
    learning rates and densification threshold, nearest-code decoding and no periodic eval or checkpoint.
    Refinement every 100 steps, the opacity resets and the learning-rate decays keep the paper's step counts, as
    `make demo` always did. (`--max-num-iterations` alone does not rescale the schedule.)"""
    config = unic_lift_trainer_config()
    config.method_name = "unic-lift-cpu"
    config.max_num_iterations = steps
    config.machine.device_type = "cpu"
    config.steps_per_eval_image = config.steps_per_eval_all_images = config.steps_per_save = CPU_NO_PERIODIC
    model = config.pipeline.model
    for name, step in CPU_SCHEDULE.at(steps).items():
        setattr(model, name, step)
    model.densify_grad_thresh = CPU_DENSIFY_GRAD_THRESH
    model.instance_decoding = "nearest-code"
    for group, lr in CPU_LEARNING_RATES.items():
        config.optimizers[group]["optimizer"].lr = lr
    return config


def gaussian_clustering_trainer_config() -> SegmentationTrainerConfig:
    """`gaussian-clustering`: Contrastive Gaussian Clustering's losses and labels on the segmentation backbone.

    The 16-d features learn with Adam at 3DGS's colour learning rate (0.0025). They are rendered every step
    together with the semantic logits, so between two L_CC steps they get zero gradients and Adam's momentum
    keeps moving them, as in a 3DGS implementation that renders the features every step.
    """
    return segmentation_trainer_config("gaussian-clustering", GaussianClusteringModelConfig(), embedding_lr=0.0025)


def contrastive_lift_trainer_config() -> SegmentationTrainerConfig:
    """`contrastive-lift`: Contrastive Lift's slow-fast losses and HDBSCAN labels on the segmentation backbone.

    The fast embeddings learn with Adam at 3DGS's colour learning rate (0.0025): unlike UniC-Lift's sigmoid-decoded
    bits, the slow-fast RBF losses need them to travel distances of order 1. The slow ones have an Adam entry with
    learning rate 0 only so that gsplat's densification keeps them aligned: they never get a gradient and move by
    the EMA alone.
    """
    config = segmentation_trainer_config(
        "contrastive-lift", ContrastiveLiftModelConfig(), embedding_lr=0.0025, pipeline=ContrastiveLiftPipelineConfig()
    )
    config.optimizers["slow_embeddings"] = _adam(0.0)
    return config


unic_lift_method = MethodSpecification(
    config=unic_lift_trainer_config(),
    description="UniC-Lift (AAAI 2026): consistent 3D instance labels on Gaussian splats from inconsistent 2D masks.",
)
unic_lift_cpu_method = MethodSpecification(
    config=unic_lift_cpu_trainer_config(),
    description="UniC-Lift on the CPU: a 1000-step schedule of the paper's recipe (the `make demo` run).",
)
gaussian_clustering_method = MethodSpecification(
    config=gaussian_clustering_trainer_config(),
    description="Contrastive Gaussian Clustering (Silva et al. 2024) on the UniC-Lift backbone (baseline).",
)
contrastive_lift_method = MethodSpecification(
    config=contrastive_lift_trainer_config(),
    description="Contrastive Lift (Bhalgat et al. 2023) on the UniC-Lift backbone, the CL+3DGS baseline.",
)
