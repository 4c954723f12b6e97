"""The training schedules of `unic-lift`: the paper's (30k steps) and the CPU recipe of `unic-lift-cpu` (`make demo`).

A schedule is a :class:`Schedule` of fractions of the run, scaled to a step count the way gsplat's ``adjust_steps``
scales its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

MAX_STEPS = 30000
"""Training steps of the paper's recipe (section 4)."""


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
