"""Export speed: per-instance 3DGS PLYs, point clouds, the combined PLY and instances.json of a large scene.

    python benchmarks/bench_export.py --num-gaussians 1000000 --num-instances 100

Synthetic Gaussians (SH degree 3, random parameters, instance sizes drawn from a Dirichlet) are built directly,
without training. Prints one Markdown table row (for docs/BENCHMARKS.md) and compares with the per-vertex loop of
nerfstudio 1.1.5's ``ExportGaussianSplat.write_ply`` on a smaller count.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from nerfstudio.scripts.exporter import ExportGaussianSplat

from unic_lift_ns.export.instances import COMBINED_PLY, export_instances
from unic_lift_ns.export.ply import Splats, write_ply


def synthetic_scene(num_gaussians: int, num_instances: int, seed: int) -> tuple[Splats, np.ndarray]:
    """Random SH-degree-3 Gaussians and labels 0..num_instances-1 of uneven sizes (every label used)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    splats = Splats(normal(num_gaussians, 3), normal(num_gaussians, 3) - 4, normal(num_gaussians, 4),
                    normal(num_gaussians, 3), 0.1 * normal(num_gaussians, 15, 3), normal(num_gaussians))  # fmt: skip
    sizes = rng.dirichlet(np.ones(num_instances)) * (num_gaussians - num_instances)
    counts = np.floor(sizes).astype(np.int64) + 1
    counts[0] += num_gaussians - counts.sum()
    labels = rng.permutation(np.repeat(np.arange(num_instances), counts))
    return splats, labels


@dataclass
class BenchExport:
    num_gaussians: int = 1_000_000
    """Gaussians in the synthetic scene."""
    num_instances: int = 100
    """Instances in the synthetic scene."""
    loop_gaussians: int = 20_000
    """Gaussians written with ns-export's per-vertex loop, for comparison (0 = skip)."""
    seed: int = 0
    """Seed of the synthetic scene."""

    def main(self) -> None:
        splats, labels = synthetic_scene(self.num_gaussians, self.num_instances, self.seed)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            export_instances(splats, labels, list(range(self.num_instances)), Path(tmp), progress=False)
            total = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
            start = time.perf_counter()
            write_ply(Path(tmp) / "again.ply", splats.vertices(instance=labels))
            combined = time.perf_counter() - start
            assert (Path(tmp) / COMBINED_PLY).stat().st_size == (Path(tmp) / "again.ply").stat().st_size
            loop = self.time_ns_export_loop(splats, Path(tmp) / "loop.ply") if self.loop_gaussians else None
        print(f"machine: {platform.node()} ({platform.machine()}), seed={self.seed}")
        print("| Gaussians | instances | all files (s) | written (MB) | combined PLY alone (s) | ns-export loop |")
        print("|---|---|---|---|---|---|")
        loop_cell = "-" if loop is None else f"{loop:.1f} s for {self.loop_gaussians} Gaussians"
        cells = [self.num_gaussians, self.num_instances, f"{total:.1f}", f"{size_mb:.0f}", f"{combined:.1f}", loop_cell]
        print("| " + " | ".join(map(str, cells)) + " |")

    def time_ns_export_loop(self, splats: Splats, path: Path) -> float:
        """Seconds nerfstudio's ``ExportGaussianSplat.write_ply`` takes for the first ``loop_gaussians``."""
        vertices = splats.subset(np.arange(min(self.loop_gaussians, len(splats)))).vertices()
        columns = OrderedDict((name, np.ascontiguousarray(vertices[name])) for name in vertices.dtype.names)
        start = time.perf_counter()
        ExportGaussianSplat.write_ply(str(path), vertices.shape[0], columns)
        return time.perf_counter() - start


if __name__ == "__main__":
    tyro.cli(BenchExport).main()
