"""The budget curve (issue #29): PQ^scene of every decoding and of HDBSCAN on the same rendered maps against the
number of training steps, from `unic-lift-bench` outputs at several --steps.

Each point is one bench run at the cpu-recipe budget (its schedule scaled to the steps), for example on the demo
scene (reused through --scenes-dir: a folder whose objects_25 links to assets/demo) and on the bench's 100-object
realistic scene:

    mkdir -p outputs/curve/demo_scenes && ln -s "$PWD/assets/demo" outputs/curve/demo_scenes/objects_25
    for steps in 1000 3000 10000; do
      unic-lift-bench --objects 25 --noise realistic --views 80 --resolution 160 --points 20000 \\
        --scenes-dir outputs/curve/demo_scenes --methods unic-lift unic-lift-votes unic-lift-nearest-code \\
        --no-segmenter-baselines --steps $steps --output-dir outputs/curve/demo_$steps
      unic-lift-bench --objects 100 --noise realistic --methods unic-lift unic-lift-votes unic-lift-nearest-code \\
        --no-segmenter-baselines --steps $steps --output-dir outputs/curve/s100_$steps
    done
    python benchmarks/budget_curve.py --benches outputs/curve/*/bench.json \\
        --points-file benchmarks/budget_curve_points.json --plot-path docs/budget_curve.png

Every measured point is kept in ``benchmarks/budget_curve_points.json`` (a bench's points replace the file's points
of the same scene, steps and method), so a point measured in one session and the outputs of another draw one curve.
It prints a Markdown table (scene, steps, method, PQ^scene, PSNR, #pred/#GT, training seconds) and draws one panel
per scene with one line per method.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tyro

from unic_lift_ns.comparison.variants import trains_like_paper
from unic_lift_ns.scripts.bench import HDBSCAN_ROW, HDBSCAN_SUFFIX


@dataclass(frozen=True)
class Point:
    """One method on one scene after one training budget."""

    scene: str
    steps: int
    method: str
    pq_scene: float
    psnr: Optional[float]
    instances: str
    train_seconds: Optional[float]
    max_gaussians: Optional[int] = None
    """The training's ceiling on the Gaussians (`unic-lift-bench --max-gaussians`); None: none."""

    @property
    def key(self) -> Tuple[str, int, str, Optional[int]]:
        """What one point of the curve is: a capped training is not the uncapped one."""
        return self.scene, self.steps, self.method, self.max_gaussians

    def label(self) -> str:
        """The method, and its ceiling if any."""
        return self.method if self.max_gaussians is None else f"{self.method} (at most {self.max_gaussians} Gaussians)"


def read_points(path: Path) -> List[Point]:
    """The scored rows of one bench.json (failed rows and 2D-segmenter rows are left out); a scene generated with
    another seed than 0 names its seed."""
    data = json.loads(path.read_text())
    points = []
    for row in data["rows"]:
        result = row.get("result")
        if result is None or row.get("variant") is None:
            continue
        scene = f"{row['objects']} objects, {row['noise']}, {data['num_views']} views of {data['resolution']} px"
        scene += f", seed {data['seed']}" if data.get("seed", 0) else ""  # seed 0: the names of earlier points
        instances = f"{result['num_pred_instances']}/{result['num_gt_instances']}"
        points.append(Point(scene, int(data["steps"]), method_name(row), 100 * result["pq_scene"], result.get("psnr"),
                            instances, row.get("train_seconds"), data.get("max_gaussians")))  # fmt: skip
    return points


def method_name(row: Dict[str, Any]) -> str:
    """A bench row's method; HDBSCAN on the maps of UniC-Lift's default training has one name (older benches named
    it after the first decoding of that training they ran; a variant no longer benchmarked keeps its row's name)."""
    first = row["variant"].removesuffix(HDBSCAN_SUFFIX)
    if first != row["variant"] and trains_like_paper(first):
        return HDBSCAN_ROW
    return row["method"]


def table(points: List[Point]) -> str:
    lines = ["| scene | steps | method | PQ^scene | PSNR | #pred/#GT | train (s) |", "|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p.scene, p.steps, p.label())):
        psnr = "-" if p.psnr is None else f"{p.psnr:.2f}"
        seconds = "-" if p.train_seconds is None else f"{p.train_seconds:.0f}"
        lines.append(f"| {p.scene} | {p.steps} | {p.label()} | {p.pq_scene:.1f} | {psnr} | {p.instances} | {seconds} |")
    return "\n".join(lines)


def plot(points: List[Point], path: Path) -> None:
    """One panel per scene: PQ^scene against steps (log scale), one line per method; a capped training's points
    continue its method's line dashed, with hollow squares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = sorted({p.scene for p in points})
    methods = sorted({p.method for p in points})
    palette = plt.get_cmap("tab20")
    colours = {method: palette(i % 20) for i, method in enumerate(methods)}  # one per method
    figure, axes = plt.subplots(1, len(scenes), figsize=(6.5 * len(scenes), 4.5 + 0.2 * len(methods)), squeeze=False)
    for axis, scene in zip(axes[0], scenes):
        lines: Dict[Tuple[str, bool], List[Tuple[int, float]]] = defaultdict(list)  # (method, capped) -> points
        for p in points:
            if p.scene == scene:
                lines[p.method, p.max_gaussians is not None].append((p.steps, p.pq_scene))
        for (method, capped), values in sorted(lines.items()):
            steps, quality = zip(*sorted(values))
            if not capped:
                axis.plot(steps, quality, marker="o", color=colours[method])
                continue
            start = [v for v in lines.get((method, False), []) if v[0] < steps[0]]  # on from its last uncapped point
            joined = sorted(values + ([max(start)] if start else []))
            axis.plot(*zip(*joined), linestyle="--", color=colours[method])
            axis.plot(steps, quality, marker="s", linestyle="none", markerfacecolor="white", color=colours[method])
        axis.set_xscale("log")
        axis.set_xlabel("training steps (cpu-recipe schedule scaled)")
        axis.set_ylabel("PQ^scene (%)")
        axis.set_title(scene, fontsize=10)
        axis.grid(True, alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", color=colours[m]) for m in methods]
    labels = list(methods)
    if any(p.max_gaussians is not None for p in points):
        handles.append(plt.Line2D([], [], marker="s", linestyle="--", markerfacecolor="none", color="grey"))
        labels.append("dashed, hollow squares: a training with a ceiling on the Gaussians (--max-gaussians)")
    figure.legend(handles, labels, loc="lower center", fontsize=8, ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0.045 * len(methods) / 2 + 0.02, 1, 1))
    figure.savefig(path, dpi=120)


def merge_points(recorded: List[Point], new: List[Point]) -> List[Point]:
    """``recorded`` with each point of ``new`` added, replacing a recorded point of the same :attr:`Point.key`."""
    points = {p.key: p for p in recorded}
    points.update({p.key: p for p in new})
    return sorted(points.values(), key=lambda p: (p.scene, p.steps, p.label()))


def main(benches: List[Path], points_file: Optional[Path] = None, plot_path: Optional[Path] = None) -> None:
    """Table of every bench.json in ``benches``, with the points recorded in ``points_file`` (which is then updated
    with the benches' points); with ``plot_path``, the curve as a PNG."""
    points = [point for bench in benches for point in read_points(bench)]
    if points_file is not None:
        recorded = [Point(**p) for p in json.loads(points_file.read_text())] if points_file.exists() else []
        points = merge_points(recorded, points)
        points_file.write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")
    print(table(points))
    if plot_path is not None:
        plot(points, plot_path)
        print(f"\nSaved {plot_path}")


if __name__ == "__main__":
    tyro.cli(main)
