"""Training budgets: step count, schedule and scene size shared by every benchmarked method."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Union

from unic_lift_ns.cpu_recipe import (
    CPU_DENSIFY_GRAD_THRESH,
    CPU_LEARNING_RATES,
    CPU_SCHEDULE,
    PAPER_SCHEDULE,
    Schedule,
    scaled_step,
)

MODEL = "--pipeline.model."


def flag(field_path: str) -> str:
    """The `ns-train` flag of a config field path ('optimizers.triplet_projection.optimizer.lr')."""
    return "--" + field_path.replace("_", "-")


@dataclass(frozen=True)
class Frac:
    """A step-valued flag given as a fraction of the budget's step count."""

    value: float
    """Fraction of the step count."""

    def steps(self, total: int) -> int:
        return scaled_step(self.value, total)


FlagValue = Union[str, Frac]


@dataclass(frozen=True)
class Budget:
    """The same training budget for every method, and the scene size it is meant for."""

    name: str
    """Name used by --budget."""
    steps: int
    """Training steps (--max-num-iterations)."""
    resolution: int
    """Width and height of the generated views, in pixels."""
    num_views: int
    """Number of generated views (every 8th is an eval view)."""
    num_points: int
    """Points of the initial point cloud."""
    clustering_samples: int
    """Samples HDBSCAN clusters (Contrastive Lift's post-hoc clustering and the bits-vs-HDBSCAN row)."""
    clustering_min_size: int
    """HDBSCAN's minimum cluster size for those samples."""
    schedule: Schedule
    """When each phase of training starts, for every method (they share the UniC-Lift backbone)."""
    flags: Mapping[str, str] = field(default_factory=dict)
    """Other flags for every method."""
    method_flags: Mapping[str, Mapping[str, FlagValue]] = field(default_factory=dict)
    """Extra flags per `ns-train` method (its own losses and learning rates)."""

    def train_flags(self, method: str, steps: int) -> dict[str, str]:
        """Flag -> value for ``method`` trained for ``steps`` steps (schedule and fractions resolved); the
        schedule sets only the phases the method's model has (the baselines have no 3D-loss start)."""
        from nerfstudio.configs.method_configs import all_methods

        model = all_methods[method].pipeline.model
        scheduled = {
            flag(f"pipeline.model.{name}"): str(step)
            for name, step in self.schedule.at(steps).items()
            if hasattr(model, name)
        }
        merged = {**scheduled, **self.flags, **self.method_flags.get(method, {})}
        return {k: str(v.steps(steps)) if isinstance(v, Frac) else v for k, v in merged.items()}


CPU_CLUSTERING_SAMPLES, CPU_CLUSTERING_MIN_SIZE = 20_000, 20
"""HDBSCAN samples and minimum cluster size at the small budget (Contrastive Lift's 10^5 and 100, scaled)."""

CPU_SMALL = Budget(
    name="cpu-small", steps=300, resolution=80, num_views=32, num_points=5000, schedule=CPU_SCHEDULE,
    clustering_samples=CPU_CLUSTERING_SAMPLES, clustering_min_size=CPU_CLUSTERING_MIN_SIZE,
    flags={f"{MODEL}densify-grad-thresh": str(CPU_DENSIFY_GRAD_THRESH)},
    method_flags={
        "unic-lift": {flag(f"optimizers.{group}.optimizer.lr"): str(lr) for group, lr in CPU_LEARNING_RATES.items()},
        "contrastive-lift": {
            "--optimizers.embeddings.optimizer.lr": "0.01",
            f"{MODEL}cluster-num-samples": str(CPU_CLUSTERING_SAMPLES),
            f"{MODEL}cluster-min-size": str(CPU_CLUSTERING_MIN_SIZE),
        },
        "gaussian-clustering": {
            "--optimizers.embeddings.optimizer.lr": "0.02",
            f"{MODEL}contrastive-every": "2",
            f"{MODEL}spatial-every": "10",
            f"{MODEL}spatial-refresh-every": Frac(0.125),
            f"{MODEL}cluster-min-size": str(CPU_CLUSTERING_MIN_SIZE),
            f"{MODEL}semantic-guided-clustering": "True",
            f"{MODEL}cluster-min-opacity": "0.5",
        },
    },
)
"""`unic-lift-cpu`'s recipe (`make demo`: its schedule scaled to the step count, its densification threshold and,
for UniC-Lift, its learning rates) on small scenes. The baselines' embedding learning rates are raised too (as in
their CPU tests), the clustering baselines' losses apply more often, and HDBSCAN clusters 20k samples with its
minimum cluster size scaled to match (Contrastive Lift: 100 of 10^5). Gaussian clustering gets Contrastive
Lift's semantic guidance and clusters only Gaussians at least half opaque (see `gaussian-clustering-paper-labels`
for its paper's labels on the same training). Sized for 8 variants x {25, 50} objects in
about 30 min on a free 2-core CPU; ``--steps 400 --resolution 96 --views 40`` scores higher and takes about 1.5x
as long."""

CPU_RECIPE = replace(CPU_SMALL, name="cpu-recipe", steps=1000)
"""cpu-small's scenes and flags for the 1000 steps of `unic-lift-cpu` (the README recipe): the default. At
cpu-small's 300 steps few Gaussians' codes are confident yet (on 50 objects with hard noise under 1% pass the vote
gate) and HDBSCAN on the rendered maps beats every clustering-free decoding; after 1000 the best of them beats it
on all 12 rows of the 25/50/100-object, realistic/hard scenes, with and without semantic masks
(docs/BENCHMARKS.md). About 300-400 s per training on a free 2-core CPU."""

GPU_PAPER = Budget(
    name="gpu-paper", steps=30000, resolution=256, num_views=120, num_points=20000, schedule=PAPER_SCHEDULE,
    clustering_samples=100_000, clustering_min_size=100,
)
"""The paper's schedule (section 4, appendix B.2): 30k steps, densification and 3D loss switch at 15k; every
method keeps its own defaults otherwise (Contrastive Lift: HDBSCAN on 10^5 samples, minimum cluster size 100)."""

BUDGETS = {b.name: b for b in (CPU_SMALL, CPU_RECIPE, GPU_PAPER)}
"""Budgets by name."""
