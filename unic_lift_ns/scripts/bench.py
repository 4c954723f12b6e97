"""unic-lift-bench: train UniC-Lift, its ablations and the clustering baselines with one budget on generated
scenes, evaluate them on the same eval views and write one table (bench.md + bench.json).

Example, a quick CPU check on a tiny scene:

    unic-lift-bench --objects 4 --methods unic-lift no-triplet --steps 50 --resolution 48 --views 16
"""

from __future__ import annotations

import datetime
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from tqdm import tqdm

from unic_lift_ns.comparison.budgets import BUDGETS, Budget
from unic_lift_ns.comparison.variants import (
    UNIC_LIFT, VARIANTS, Variant, select_variants, trains_like_paper, training_groups
)
from unic_lift_ns.comparison.run import RunFailed, evaluate_logged, train_variant
from unic_lift_ns.comparison.scenes import prepare_scene
from unic_lift_ns.comparison.table import Row, write_tables
from unic_lift_ns.eval.evaluate import evaluate_segmenter_baselines
from unic_lift_ns.scripts.cli import run_cli
from unic_lift_ns.synth.generate import NoisePreset, SynthConfig

HDBSCAN_ROW = "UniC-Lift maps, HDBSCAN + nearest centroid"
"""Label of the row that decodes UniC-Lift's rendered maps by clustering instead of bits."""
HDBSCAN_SUFFIX = "+hdbscan"
"""That row's variant: the name of the first variant of its training, and this."""


@dataclass
class BenchConfig:
    """Benchmark every selected method with the same budget on scenes of several object counts."""

    output_dir: Path = Path("outputs/bench")
    """Where bench.md, bench.json, scenes/ and runs/ (training outputs and logs) go."""
    objects: tuple[int, ...] = (25, 50, 100, 500)
    """Object counts of the generated scenes (Messy Rooms sizes)."""
    noise: tuple[NoisePreset, ...] = ("realistic", "hard")
    """Segmenter-noise presets of the generated scenes (unic-lift-synth --noise): one scene per object count and
    preset."""
    methods: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    """Variants to score: unic-lift, its decodings and ablations, contrastive-lift, gaussian-clustering (variants
    that differ only in their decoding share one training)."""
    budget: Literal["cpu-small", "cpu-recipe", "gpu-paper"] = "cpu-recipe"
    """Training budget (steps, schedule, scene size) shared by every method."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Training device (--machine.device-type of ns-train)."""
    steps: Optional[int] = None
    """Override the budget's step count (its schedule scales with it)."""
    resolution: Optional[int] = None
    """Override the budget's view size in pixels."""
    views: Optional[int] = None
    """Override the budget's number of views per scene."""
    points: Optional[int] = None
    """Override the budget's initial point count."""
    max_gaussians: Optional[int] = None
    """Ceiling on the Gaussians' growth of every training (--pipeline.model.max-gaussians): a CPU schedule scaled to
    many steps at low resolution otherwise densifies without bound. None: gsplat's densification unchanged."""
    seed: int = 0
    """Scene generation seed."""
    eval_interval: Optional[int] = None
    """Override the scenes' eval split (every n-th view held out; default 8): large scenes need more eval views
    for PQ^scene to see an object in several of them."""
    scenes_dir: Optional[Path] = None
    """Where scenes are generated, or reused when their settings match; default OUTPUT_DIR/scenes."""
    segmenter_baselines: bool = True
    """Add the scene's 2D segmenter rows (untracked and Hungarian-tracked)."""
    compare_clustering: bool = True
    """Also label the rendered maps of every UniC-Lift training (its rows are clustering-free decodings) with
    HDBSCAN + nearest centroid (the budget's sample count and minimum cluster size) and add that row beside its rows,
    to score and time both label assignments on the same maps."""

    def validate(self) -> list[Variant]:
        """Check the flags; returns the selected variants."""
        variants = select_variants(self.methods)
        counts = {"--objects": self.objects, "--steps": (self.steps,), "--resolution": (self.resolution,),
                  "--views": (self.views,), "--points": (self.points,),
                  "--eval-interval": (self.eval_interval,), "--max-gaussians": (self.max_gaussians,)}  # fmt: skip
        for flag, values in counts.items():
            bad = [v for v in values if v is not None and v < 1]
            if bad:
                raise ValueError(f"{flag} must be positive, got {bad[0]}")
        if not self.objects or not self.noise:
            raise ValueError(f"--{'objects' if not self.objects else 'noise'} needs at least one value")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        return variants

    def main(self) -> None:
        """Generate or reuse the scenes, train and evaluate every variant, write the table after every row."""
        variants = self.validate()
        budget = BUDGETS[self.budget]
        steps = self.steps or budget.steps
        scene_size = dict(resolution=self.resolution or budget.resolution, num_views=self.views or budget.num_views,
                          num_points=self.points or budget.num_points)  # fmt: skip
        if self.eval_interval is not None:
            scene_size["eval_interval"] = self.eval_interval
        scenes_dir = self.scenes_dir or self.output_dir / "scenes"
        meta = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} torch threads)",
            "budget": budget.name, "steps": steps, "device": self.device, "seed": self.seed, **scene_size,
            "max_gaussians": self.max_gaussians,
        }  # fmt: skip
        ceiling = "" if self.max_gaussians is None else f", at most {self.max_gaussians} Gaussians"
        header = (f"Budget {budget.name}: {steps} steps on {self.device}{ceiling}; scenes of "
                  f"{scene_size['num_views']} views at {scene_size['resolution']} px; "
                  "qualities in percent.")  # fmt: skip
        rows: list[Row] = []
        notes: list[str] = []

        def save() -> None:
            write_tables(self.output_dir, rows, meta, header, notes + [_memory_note(rows)])

        scene_keys = [(objects, noise) for objects in self.objects for noise in self.noise]
        for objects, noise in tqdm(scene_keys, desc="Scenes", unit="scene"):
            folder = scene_name(objects, noise)
            synth = SynthConfig(scenes_dir / folder, num_objects=objects, noise=noise, seed=self.seed, **scene_size)
            scene, reused = prepare_scene(synth)
            tqdm.write(f"{'Reusing' if reused else 'Generated'} {scene}")
            if self.segmenter_baselines:
                baselines = evaluate_segmenter_baselines(scene)
                rows += [Row(objects, name, noise=noise, result=result) for name, result in baselines.items()]
                save()
            for group in tqdm(training_groups(variants), desc=folder, unit="training", leave=False):
                rows += self.bench_training(group, budget, objects, noise, scene, steps, notes)
                save()
        CONSOLE.print(f"Saved {self.output_dir / 'bench.md'} and {self.output_dir / 'bench.json'}")
        failed = [row for row in rows if row.error is not None]
        if failed:
            raise RunFailed(f"{len(failed)} run(s) failed, first: {failed[0].error}")

    def bench_training(self, group: list[Variant], budget: Budget, objects: int, noise: str, scene: Path, steps: int,
                       notes: list[str]) -> list[Row]:  # fmt: skip
        """Train the variants of one training group once on one scene (the run is named after the first) and score
        each one's decoding: a row each, plus for UniC-Lift the HDBSCAN row on the same maps."""
        runs, experiment, first = self.output_dir / "runs", scene_name(objects, noise), group[0]
        compare = self.compare_clustering and first.method == UNIC_LIFT
        clustering = (budget.clustering_samples, budget.clustering_min_size) if compare else None
        try:
            extra = {} if self.max_gaussians is None else {"--pipeline.model.max-gaussians": str(self.max_gaussians)}
            run = train_variant(first, budget, steps, scene, runs, experiment, self.device, extra)
            log = runs / experiment / f"{first.name}.eval.log"
            own, clustered = evaluate_logged(run.config, scene, [v.decoding for v in group], clustering, log)
        except RunFailed as err:
            CONSOLE.print(f"[bold red]{err}")
            return [Row(objects, v.label, v.name, noise=noise, error=str(err)) for v in group]
        timing = dict(train_seconds=run.seconds, train_cpu_seconds=run.cpu_seconds, peak_memory=run.peak_memory,
                      peak_memory_kind=run.peak_memory_kind)  # fmt: skip
        rows = [
            Row(objects, v.label, v.name, scores.result, noise=noise, clustering_seconds=scores.clustering_seconds,
                label_seconds=scores.label_seconds, **timing)
            for v, scores in zip(group, own)
        ]  # fmt: skip
        if clustered is None:
            return rows
        names = [v.name for v in group]
        label = HDBSCAN_ROW if trains_like_paper(first.name) else f"{first.label}: maps, HDBSCAN + nearest centroid"
        rows.append(Row(objects, label, f"{first.name}{HDBSCAN_SUFFIX}", clustered.result, noise=noise,
                        clustering_seconds=clustered.clustering_seconds, label_seconds=clustered.label_seconds,
                        **timing))  # fmt: skip
        if UNIC_LIFT in names:
            bits = own[names.index(UNIC_LIFT)]
            notes.append(
                f"{experiment}, label assignment on the same {bits.result.num_views} rendered UniC-Lift maps: "
                f"bit decoding {bits.label_seconds:.3g} s vs HDBSCAN fit {clustered.clustering_seconds:.3g} s "
                f"+ nearest centroid {clustered.label_seconds:.3g} s."
            )
        return rows


def scene_name(objects: int, noise: str) -> str:
    """Folder (and run experiment) name of a bench scene: ``objects_25``, ``objects_25_hard``."""
    return f"objects_{objects}" if noise == "realistic" else f"objects_{objects}_{noise}"


def _memory_note(rows: list[Row]) -> str:
    """Which peak memory the table shows."""
    kinds = {row.peak_memory_kind for row in rows if row.peak_memory_kind is not None}
    names = {"cuda_max_allocated": "CUDA max allocated", "max_rss": "peak RSS of the ns-train process"}
    return "Peak mem.: " + (", ".join(names[k] for k in sorted(kinds)) or "-") + " during training."


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts; exit code 1 when a method failed (its row says so)."""
    try:
        run_cli("unic-lift-bench", BenchConfig, description=__doc__)
    except RunFailed as err:
        CONSOLE.print(f"[bold red]unic-lift-bench: {err}")
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
