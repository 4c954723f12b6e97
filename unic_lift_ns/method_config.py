"""nerfstudio method registration: `ns-train unic-lift` (entry point `nerfstudio.method_configs`).

Defaults follow the UniC-Lift paper (section 4, implementation details): 30k steps, d = 12, every lambda = 0.1,
margin 1, tau = 0.01, at most 3000 triplets, Adam with learning rate 1e-4 for the embeddings and the linear
layer, the 3D loss from step 15000 and the triplet loss once densification has stopped. Geometry and colour
use Splatfacto's optimiser settings.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from unic_lift_ns.checkpoints import allow_nerfstudio_checkpoints
from unic_lift_ns.data.datamanager import UniCLiftDataManagerConfig
from unic_lift_ns.model import UniCLiftModelConfig
from unic_lift_ns.pipeline import UniCLiftPipelineConfig
from unic_lift_ns.trainer import UniCLiftTrainerConfig

MAX_STEPS = 30000

allow_nerfstudio_checkpoints()  # ns-eval / ns-viewer / ns-export import this module before loading


def _adam(lr: float, scheduler=None) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": scheduler}


def unic_lift_trainer_config() -> UniCLiftTrainerConfig:
    """The full `unic-lift` trainer configuration. The live viewer listens on 127.0.0.1 only (it has no
    authentication); `--viewer.websocket-host 0.0.0.0` opens it to the network."""
    return UniCLiftTrainerConfig(
        method_name="unic-lift",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=MAX_STEPS,
        mixed_precision=False,
        pipeline=UniCLiftPipelineConfig(
            datamanager=UniCLiftDataManagerConfig(cache_images_type="uint8"),
            model=UniCLiftModelConfig(),
        ),
        optimizers={
            "means": _adam(1.6e-4, ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=MAX_STEPS)),
            "features_dc": _adam(0.0025),
            "features_rest": _adam(0.0025 / 20),
            "opacities": _adam(0.05),
            "scales": _adam(0.005),
            "quats": _adam(0.001),
            "embeddings": _adam(1e-4),
            "semantic_logits": _adam(0.0025),
            "triplet_projection": _adam(1e-4),
            "camera_opt": _adam(
                1e-4, ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=MAX_STEPS, warmup_steps=1000, lr_pre_warmup=0)
            ),
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15, websocket_host="127.0.0.1"),
        vis="viewer",
    )


unic_lift_method = MethodSpecification(
    config=unic_lift_trainer_config(),
    description="UniC-Lift (AAAI 2026): consistent 3D instance labels on Gaussian splats from inconsistent 2D masks.",
)
