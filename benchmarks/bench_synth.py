"""Scene generation time and 2D-segmenter baselines for several scene sizes.

    python benchmarks/bench_synth.py --sizes 25 50 100 --num-views 120 --resolution 256

Prints a Markdown table (for docs/BENCHMARKS.md) and writes it with the raw numbers as JSON.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Tuple

import tyro

from unic_lift_ns.eval.evaluate import TRACKED, UNTRACKED, evaluate_segmenter_baselines
from unic_lift_ns.synth.generate import SynthConfig, generate_scene


@dataclass
class BenchSynth:
    sizes: Tuple[int, ...] = (25, 50, 100)
    """Numbers of objects to generate."""
    num_views: int = 120
    """Views per scene."""
    resolution: int = 256
    """Image width and height."""
    noise: Literal["clean", "realistic", "hard"] = "realistic"
    """Segmenter preset."""
    seed: int = 0
    """Seed of every scene."""
    output_json: Path = Path("benchmarks/results/synth.json")
    """Where to write the raw numbers."""

    def main(self) -> None:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for n in self.sizes:
                start = time.perf_counter()
                scene = generate_scene(
                    SynthConfig(
                        output=Path(tmp) / f"scene_{n}",
                        num_objects=n,
                        num_views=self.num_views,
                        resolution=self.resolution,
                        noise=self.noise,
                        seed=self.seed,
                    )
                )
                seconds = time.perf_counter() - start
                base = evaluate_segmenter_baselines(scene)
                rows.append(
                    {
                        "objects": n,
                        "generation_s": round(seconds, 1),
                        "untracked": base[UNTRACKED].to_dict(),
                        "tracked": base[TRACKED].to_dict(),
                    }
                )
        print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), "
              f"{self.num_views} views, {self.resolution}x{self.resolution}, noise={self.noise}, seed={self.seed}")
        print("| objects | generation (s) | 2D untracked PQ^scene | 2D untracked PQ (frame) | 2D + tracking PQ^scene "
              "| #inst. untracked / tracked / GT |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            u, t = r["untracked"], r["tracked"]
            print(f"| {r['objects']} | {r['generation_s']} | {100 * u['pq_scene']:.1f} | {100 * u['pq_frame']:.1f} | "
                  f"{100 * t['pq_scene']:.1f} | {u['num_pred_instances']} / {t['num_pred_instances']} / "
                  f"{u['num_gt_instances']} |")
        self.output_json.parent.mkdir(parents=True, exist_ok=True)
        self.output_json.write_text(json.dumps({"config": {k: str(v) for k, v in vars(self).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    tyro.cli(BenchSynth).main()
