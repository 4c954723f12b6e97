"""nerfstudio method registration: `ns-train unic-lift` (entry point `nerfstudio.method_configs`).

Defaults follow the UniC-Lift paper (section 4, implementation details): 30k steps, d = 12, every lambda = 0.1,
margin 1, tau = 0.01, at most 3000 triplets, Adam with learning rate 1e-4 for the embeddings and the linear
layer, the 3D loss from step 15000 and the triplet loss once densification has stopped. Geometry and colour
use Splatfacto's optimiser settings.

`ns-train unic-lift-cpu` is the same method on the CPU with a short schedule (`make demo`): the schedule is a
`Schedule` of fractions of the run, scaled to a step count the way gsplat's `adjust_steps` scales its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from unic_lift_ns.checkpoints import allow_nerfstudio_checkpoints
from unic_lift_ns.data.datamanager import UniCLiftDataManagerConfig
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig
from unic_lift_ns.pipeline import SegmentationPipelineConfig
from unic_lift_ns.trainer import UniCLiftTrainerConfig

MAX_STEPS = 30000

allow_nerfstudio_checkpoints()  # ns-eval / ns-viewer / ns-export import this module before loading


def scaled_step(fraction: float, steps: int) -> int:
    """``fraction`` of a run of ``steps`` steps, rounded, at least step 1."""
    return max(1, round(fraction * steps))


@dataclass(frozen=True)
class Schedule:
    """When the phases of training start or repeat, as fractions of the run; field names are the model's."""

    warmup_length: float
    """Densification starts."""
    resolution_schedule: float
    """The training resolution doubles every this much of the run (full resolution after num_downscales)."""
    stop_split_at: float
    """Densification stops and the triplet loss starts."""
    sh_degree_interval: float
    """The spherical-harmonics degree rises every this much of the run."""
    neighbour_loss_start: float
    """The 3D neighbourhood loss (Eq. 6) starts."""

    @classmethod
    def of(cls, model: UniCLiftModelConfig, steps: int) -> Schedule:
        """The schedule of ``model``'s step fields in a run of ``steps`` steps."""
        return cls(**{f.name: getattr(model, f.name) / steps for f in fields(cls)})

    def at(self, steps: int) -> dict[str, int]:
        """Model field -> step for a run of ``steps`` steps."""
        return {f.name: scaled_step(getattr(self, f.name), steps) for f in fields(self)}


PAPER_SCHEDULE = Schedule.of(UniCLiftModelConfig(), MAX_STEPS)
"""The paper's schedule (the model's defaults over 30k steps): densification and the 3D loss switch at half."""

CPU_STEPS = 1000
"""Training steps of `unic-lift-cpu` (`make demo`: about 7 minutes on 2 cores)."""
CPU_SCHEDULE = Schedule(
    warmup_length=0.1, resolution_schedule=0.2, stop_split_at=0.5, sh_degree_interval=0.2, neighbour_loss_start=0.5
)
"""The CPU schedule: the paper's switch at half the run, with a warm-up, resolution steps and SH steps that take a
larger share of a short run than the paper's (1000 steps: densification from 100, full resolution from 400, full
SH degree from 600, where the paper's proportions give 17, 200 and 100)."""
CPU_DENSIFY_GRAD_THRESH = 0.003
"""Densification gradient threshold on the CPU: above Splatfacto's 0.0008, it grows fewer Gaussians to step through."""
CPU_LEARNING_RATES = {"embeddings": 0.01, "triplet_projection": 0.001}
"""Adam learning rates of the embeddings and the linear layer W on the CPU (the paper's 1e-4 is for 30k steps)."""
CPU_NO_PERIODIC = 100_000
"""Step interval of `unic-lift-cpu`'s periodic eval and checkpoints: past its run (the last step is saved)."""


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
        pipeline=SegmentationPipelineConfig(
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


def unic_lift_cpu_trainer_config(steps: int = CPU_STEPS) -> UniCLiftTrainerConfig:
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


unic_lift_method = MethodSpecification(
    config=unic_lift_trainer_config(),
    description="UniC-Lift (AAAI 2026): consistent 3D instance labels on Gaussian splats from inconsistent 2D masks.",
)

unic_lift_cpu_method = MethodSpecification(
    config=unic_lift_cpu_trainer_config(),
    description="UniC-Lift on the CPU: a 1000-step schedule of the paper's recipe (the `make demo` run).",
)
