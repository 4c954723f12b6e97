"""Training budgets: step count, schedule and scene size shared by every benchmarked method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union


@dataclass(frozen=True)
class Frac:
    """A step-valued flag given as a fraction of the budget's step count."""

    value: float
    """Fraction of the step count."""

    def steps(self, total: int) -> int:
        return max(1, round(self.value * total))


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
    flags: Mapping[str, FlagValue] = field(default_factory=dict)
    """Flags for every method (Splatfacto's schedule)."""
    method_flags: Mapping[str, Mapping[str, FlagValue]] = field(default_factory=dict)
    """Extra flags per `ns-train` method (its own losses and learning rates)."""

    def train_flags(self, method: str, steps: int) -> dict[str, str]:
        """Flag -> value for ``method`` trained for ``steps`` steps (fractions resolved)."""
        merged = {**self.flags, **self.method_flags.get(method, {})}
        return {k: str(v.steps(steps)) if isinstance(v, Frac) else v for k, v in merged.items()}


MODEL = "--pipeline.model."

CPU_CLUSTERING_SAMPLES, CPU_CLUSTERING_MIN_SIZE = 20_000, 20
"""HDBSCAN samples and minimum cluster size at the small budget (Contrastive Lift's 10^5 and 100, scaled)."""

CPU_SMALL = Budget(
    name="cpu-small",
    steps=300,
    resolution=80,
    num_views=32,
    num_points=5000,
    clustering_samples=CPU_CLUSTERING_SAMPLES,
    clustering_min_size=CPU_CLUSTERING_MIN_SIZE,
    flags={
        f"{MODEL}warmup-length": Frac(0.1),
        f"{MODEL}resolution-schedule": Frac(0.2),
        f"{MODEL}stop-split-at": Frac(0.5),
        f"{MODEL}sh-degree-interval": Frac(0.2),
        f"{MODEL}densify-grad-thresh": "0.003",
    },
    method_flags={
        "unic-lift": {
            f"{MODEL}neighbour-loss-start": Frac(0.5),
            "--optimizers.embeddings.optimizer.lr": "0.01",
            "--optimizers.triplet-projection.optimizer.lr": "0.001",
        },
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
        },
    },
)
"""A short CPU schedule (the `make demo` recipe scaled to its step count) on small scenes. Embedding learning
rates are raised for every method (as in `make demo` and the baselines' CPU tests), the clustering baselines'
losses apply more often, and HDBSCAN clusters 20k samples with its minimum cluster size scaled to match
(Contrastive Lift: 100 of 10^5). Sized for 8 variants x {25, 50} objects in about 30 min on a free 2-core CPU;
``--steps 400 --resolution 96 --views 40`` scores higher and takes about 1.5x as long."""

GPU_PAPER = Budget(
    name="gpu-paper",
    steps=30000,
    resolution=256,
    num_views=120,
    num_points=20000,
    clustering_samples=100_000,
    clustering_min_size=100,
    flags={
        f"{MODEL}warmup-length": Frac(500 / 30000),
        f"{MODEL}resolution-schedule": Frac(3000 / 30000),
        f"{MODEL}stop-split-at": Frac(15000 / 30000),
        f"{MODEL}sh-degree-interval": Frac(1000 / 30000),
    },
    method_flags={"unic-lift": {f"{MODEL}neighbour-loss-start": Frac(15000 / 30000)}},
)
"""The paper's schedule (section 4, appendix B.2): 30k steps, densification and 3D loss switch at 15k; every
method keeps its own defaults otherwise (Contrastive Lift: HDBSCAN on 10^5 samples, minimum cluster size 100)."""

BUDGETS = {b.name: b for b in (CPU_SMALL, GPU_PAPER)}
"""Budgets by name."""
